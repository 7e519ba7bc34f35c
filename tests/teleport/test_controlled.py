"""The controlled teleportation scheme: derived corrections, fidelities, controller, noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdtwin.errors import ConfigError, SimulationError, UnknownNameError
from qkdtwin.teleport.controlled import (
    CHANNEL_PARTICLES,
    CHARLIE_PARTICLES,
    LOCAL_GATES,
    NO_CONTROLLER_FIDELITY_HAAR,
    NO_CONTROLLER_FIDELITY_PRODUCT,
    channel_state,
    charlie_outcome_name,
    charlie_reduced_state,
    derive_corrections,
    expected_fidelity,
    no_controller_fidelity,
    noise_sweep,
    protocol_choi,
    protocol_output,
    run_trials,
    teleport,
    teleport_branch,
)
from qkdtwin.teleport.noise import NoiseModel
from qkdtwin.teleport.statevector import (
    BELL_NAMES,
    CNOT,
    H,
    StateVector,
    X,
    Z,
    choi_matrix,
    random_product_state,
    random_state,
    state_fidelity,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "teleport.md"


def _same_up_to_phase(a, b):
    return abs(abs(np.trace(np.asarray(a).conj().T @ np.asarray(b))) - a.shape[0]) < 1e-9


# ----------------------------------------------------------------------- channel
def test_channel_state_is_ghz5_times_bell():
    ch = channel_state()
    # independent construction with gates: H on 1, CNOT 1->2,3,5,6; H on 4, CNOT 4->7
    ref = StateVector.zero(list(CHANNEL_PARTICLES)).apply(H, "1").apply(H, "4")
    for q in ("2", "3", "5", "6"):
        ref = ref.apply(CNOT, ["1", q])
    ref = ref.apply(CNOT, ["4", "7"])
    assert state_fidelity(ch, ref) == pytest.approx(1.0)


# ----------------------------------------------------------------------- the table
def test_table_has_every_branch_with_equal_probability():
    table = derive_corrections("x")
    assert len(table.rows) == 4 * 4 * 8
    assert all(r.probability == pytest.approx(1 / 128) for r in table.rows)
    assert len({(r.alice_a5, r.alice_b7, r.charlie) for r in table.rows}) == 128
    assert all(
        r.on_2 in ("I", "X", "Y", "Z") and r.on_4 in ("I", "X", "Y", "Z") for r in table.rows
    )


def test_table_agrees_with_textbook_teleportation():
    # Independent reference: Bennett et al. 1993 for the Bell pair (B -> 4), and the GHZ
    # analysis for (A -> 2): X^y Z^(x xor parity of Charlie's X outcomes).
    table = derive_corrections("x")
    for r in table.rows:
        x4, y4 = r.alice_b7 >> 1, r.alice_b7 & 1
        expect4 = np.linalg.matrix_power(Z, x4) @ np.linalg.matrix_power(X, y4)
        assert _same_up_to_phase(LOCAL_GATES[r.on_4], expect4)
        x2, y2 = r.alice_a5 >> 1, r.alice_a5 & 1
        parity = bin(r.charlie).count("1") & 1
        expect2 = np.linalg.matrix_power(Z, x2 ^ parity) @ np.linalg.matrix_power(X, y2)
        assert _same_up_to_phase(LOCAL_GATES[r.on_2], expect2)


@pytest.mark.parametrize("basis", ["x", "y", "ghz"])
@pytest.mark.parametrize("kind", ["product", "entangled"])
def test_fidelity_one_on_every_branch(basis, kind):
    rng = np.random.default_rng(17)
    table = derive_corrections(basis)
    draw = random_product_state if kind == "product" else random_state
    for _ in range(2):
        msg = draw(2, rng)
        total = 0.0
        for r in table.rows:
            p, bob = teleport_branch(msg, r.alice_a5, r.alice_b7, r.charlie, charlie_basis=basis)
            assert p == pytest.approx(r.probability)
            assert np.allclose(bob.amplitudes, msg.amplitudes, atol=1e-9)
            total += p
        assert total == pytest.approx(1.0)


def test_y_basis_needs_clifford_and_ghz_basis_has_two_outcomes():
    y = derive_corrections("y")
    assert any(r.on_2 not in ("I", "X", "Y", "Z") for r in y.rows)  # S-type corrections
    g = derive_corrections("ghz")
    assert len(g.rows) == 32
    assert {r.charlie for r in g.rows} == {0, 4}
    assert charlie_outcome_name(4, "ghz") == "-000"
    assert charlie_outcome_name(0, "y") == "rrr"


def test_branch_probabilities_do_not_depend_on_the_message():
    rng = np.random.default_rng(2)
    for _ in range(3):
        full = random_state(2, rng, ["A", "B"]).tensor_product(channel_state())
        assert full.probabilities(["A", "5"], "bell") == pytest.approx([0.25] * 4)
        assert full.probabilities(["B", "7"], "bell") == pytest.approx([0.25] * 4)


def test_unknown_basis_and_bad_message():
    with pytest.raises(UnknownNameError):
        derive_corrections("z")
    with pytest.raises(ConfigError):
        teleport(StateVector.zero(3), np.random.default_rng(0))
    with pytest.raises(ConfigError):
        derive_corrections("x").lookup(0, 0, 99)
    with pytest.raises(ConfigError):
        teleport(
            StateVector.zero(2),
            np.random.default_rng(0),
            noise=NoiseModel("dephasing", 0.1),
            noisy_particles=["A"],
        )


# ----------------------------------------------------------------------- sampled runs
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_teleportation_is_perfect(seed):
    rng = np.random.default_rng(seed)
    msg = random_state(2, rng)
    res = teleport(msg, rng)
    assert res.fidelity == pytest.approx(1.0)
    assert res.charlie is not None
    assert 0 <= res.charlie < 8


def test_run_trials_noise_free():
    run = run_trials(200, np.random.default_rng(0))
    d = run.to_dict()
    assert d["trials"] == 200
    assert d["fidelity_min"] == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        run_trials(0, np.random.default_rng(0))
    with pytest.raises(UnknownNameError):
        run_trials(1, np.random.default_rng(0), inputs="gaussian")


# ----------------------------------------------------------------------- the controller
def test_no_controller_fidelity_analytic_per_state():
    rng = np.random.default_rng(5)
    for _ in range(5):
        msg = random_state(2, rng)
        p = np.sum(np.abs(msg.amplitudes.reshape(2, 2)) ** 2, axis=1)
        f = no_controller_fidelity(msg)
        assert f == pytest.approx(p[0] ** 2 + p[1] ** 2)
        # sampled run (state vector) and exact channel (density matrix) agree exactly
        assert teleport(msg, rng, controller=False).fidelity == pytest.approx(f)
        rho = protocol_output(msg, controller=False)
        assert state_fidelity(msg, _dm(rho)) == pytest.approx(f)


def _dm(matrix):
    from qkdtwin.teleport.statevector import DensityMatrix

    return DensityMatrix(matrix)


def test_no_controller_average_matches_three_fifths():
    rng = np.random.default_rng(21)
    run = run_trials(1000, rng, controller=False)
    assert abs(run.mean - NO_CONTROLLER_FIDELITY_HAAR) < 5 * run.stderr
    prod = run_trials(1000, rng, controller=False, inputs="product")
    assert abs(prod.mean - NO_CONTROLLER_FIDELITY_PRODUCT) < 5 * prod.stderr
    assert expected_fidelity(controller=False) == pytest.approx(0.6)
    assert expected_fidelity(controller=False, inputs="product") == pytest.approx(2 / 3)
    assert expected_fidelity() == pytest.approx(1.0)


def test_without_controller_the_correction_uses_alice_bits_only():
    table = derive_corrections("x")
    assert len(table.without_controller) == 16
    for (a5, b7), (c2, c4) in table.without_controller.items():
        assert c4 == table.lookup(a5, b7, 0).on_4
        assert c2 == ("X" if a5 & 1 else "I")


def test_charlie_alone_learns_nothing():
    rng = np.random.default_rng(6)
    ghz_mix = np.zeros((8, 8))
    ghz_mix[0, 0] = ghz_mix[7, 7] = 0.5
    for _ in range(3):
        rho = charlie_reduced_state(random_state(2, rng))
        assert np.allclose(rho.matrix, ghz_mix)


def test_charlie_with_alice_bits_sees_populations_of_a():
    rng = np.random.default_rng(7)
    msg = random_state(2, rng)
    p = np.sum(np.abs(msg.amplitudes.reshape(2, 2)) ** 2, axis=1)
    for a5 in range(4):
        flip = a5 & 1  # Psi outcomes flip the GHZ branches
        rho = charlie_reduced_state(msg, alice_outcome=(a5, 2)).matrix
        assert rho[0, 0].real == pytest.approx(p[flip])
        assert rho[7, 7].real == pytest.approx(p[1 - flip])
        assert np.allclose(rho - np.diag(np.diag(rho)), 0)  # no coherence: no phase info


def test_dishonest_charlie_measuring_z_leaves_bob_dephased():
    rng = np.random.default_rng(8)
    msg = random_state(2, rng, ["A", "B"])
    table = derive_corrections("x")
    full = msg.tensor_product(channel_state())
    _, s = full.project(["A", "5"], 1, "bell")
    _, s = s.project(["B", "7"], 3, "bell")
    fid = 0.0
    for b in s.branches(list(CHARLIE_PARTICLES), "z"):
        bob = b.state.reorder(["2", "4"]).apply(table.lookup(1, 3, 0).matrix(), ["2", "4"])
        fid += b.probability * state_fidelity(StateVector(msg.amplitudes, ["2", "4"]), bob)
    assert fid == pytest.approx(no_controller_fidelity(msg))
    with pytest.raises(SimulationError):
        _ = [teleport_branch(msg, 0, 0, c, charlie_basis="ghz") for c in range(8)]


# ----------------------------------------------------------------------- noise
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"controller": False, "noise": NoiseModel("depolarizing", 0.2)},
        {"noise": NoiseModel("amplitude-damping", 0.3)},
        {"charlie_basis": "y", "noise": NoiseModel("dephasing", 0.1)},
        {
            "charlie_basis": "ghz",
            "noise": NoiseModel("amplitude-damping", 0.3),
            "noisy_particles": ["1", "3"],
        },
    ],
)
def test_fast_choi_equals_density_matrix_engine(kw):
    fast = protocol_choi(**kw)
    engine = choi_matrix(lambda r: protocol_output(r, **kw), 4)
    assert np.allclose(fast, engine, atol=1e-12)
    assert np.trace(fast).real == pytest.approx(1.0)  # trace preserving, ghz noise included


def test_ghz_basis_with_noise_uses_the_sign_bit():
    table = derive_corrections("ghz")
    assert table.correction(2, 1, 5) == table.correction(2, 1, 4)
    with pytest.raises(ConfigError):
        derive_corrections("x").correction(0, 0, 8)
    rng = np.random.default_rng(4)
    noise = NoiseModel("depolarizing", 0.5)
    res = [teleport(random_state(2, rng), rng, noise=noise, charlie_basis="ghz") for _ in range(40)]
    assert any(r.charlie not in (0, 4) for r in res)


def test_noise_free_channel_output_is_the_message():
    rng = np.random.default_rng(9)
    msg = random_state(2, rng)
    out = protocol_output(msg)
    assert np.allclose(out, np.outer(msg.amplitudes, msg.amplitudes.conj()))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_depolarizing_particle_4_analytic(p):
    # Pauli-covariant noise on 4 acts as the same channel on Bob's output qubit: F = 1 - 3p/5
    f = expected_fidelity(noise=NoiseModel("depolarizing", p), noisy_particles=["4"])
    assert f == pytest.approx(1 - 3 * p / 5)


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_dephasing_all_particles_analytic(p):
    # Z errors on the 5 GHZ particles dephase message qubit A with coherence (1-p)^5, those on
    # the Bell pair dephase B with (1-p)^2; F_avg = (4 F_pro + 1)/5.
    la, lb = (1 - p) ** 5, (1 - p) ** 2
    f_pro = (1 + la) / 2 * (1 + lb) / 2
    assert expected_fidelity(noise=NoiseModel("dephasing", p)) == pytest.approx((4 * f_pro + 1) / 5)


@pytest.mark.parametrize("model", ["amplitude-damping", "depolarizing"])
def test_trajectories_match_density_matrix(model):
    rng = np.random.default_rng(10)
    msg = random_state(2, rng)
    noise = NoiseModel(model, 0.25)
    exact = state_fidelity(msg, _dm(protocol_output(msg, noise=noise)))
    n = 1000
    f = np.array([teleport(msg, rng, noise=noise).fidelity for _ in range(n)])
    assert abs(f.mean() - exact) < 5 * f.std() / math.sqrt(n) + 1e-3
    assert exact < 0.95


def test_noisy_run_matches_exact_haar_average():
    rng = np.random.default_rng(11)
    noise = NoiseModel("amplitude-damping", 0.2)
    run = run_trials(600, rng, noise=noise)
    assert abs(run.mean - expected_fidelity(noise=noise)) < 5 * run.stderr


def test_noise_sweep_is_monotone_and_ends_at_random_guess():
    curves = noise_sweep([0.0, 0.5, 1.0], ["depolarizing"])
    f = [pt["fidelity"] for pt in curves[0]["points"]]
    assert f[0] == pytest.approx(1.0)
    assert f[0] > f[1] > f[2]
    assert f[2] == pytest.approx(0.25)  # fully depolarised: Bob's state is I/4


# ----------------------------------------------------------------------- docs
def test_docs_contain_the_generated_table():
    text = DOCS.read_text(encoding="utf-8")
    assert derive_corrections("x").to_markdown() in text
    for name in BELL_NAMES:
        assert name in text
