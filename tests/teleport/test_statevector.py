"""The state-vector / density-matrix engine against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm, sqrtm

from qkdtwin.errors import ConfigError, SimulationError, UnknownNameError
from qkdtwin.teleport.statevector import (
    BELL_NAMES,
    CNOT,
    CZ,
    I2,
    SWAP,
    DensityMatrix,
    H,
    S,
    StateVector,
    T,
    X,
    Y,
    Z,
    average_gate_fidelity,
    basis_unitary,
    choi_matrix,
    controlled,
    haar_average_fidelity,
    process_fidelity,
    product_average_fidelity,
    random_product_state,
    random_state,
    random_unitary,
    rx,
    ry,
    rz,
    state_fidelity,
)


# ----------------------------------------------------------------------- gates
def test_pauli_and_clifford_matrices():
    assert np.allclose(X @ X, I2)
    assert np.allclose(Y @ Y, I2)
    assert np.allclose(Z @ Z, I2)
    assert np.allclose(X @ Y, 1j * Z)  # Pauli algebra
    assert np.allclose(H @ Z @ H, X)
    assert np.allclose(S @ S, Z)
    assert np.allclose(T @ T, S)
    assert np.allclose(H, np.array([[1, 1], [1, -1]]) / math.sqrt(2))


@pytest.mark.parametrize(("gen", "fn"), [(X, rx), (Y, ry), (Z, rz)])
def test_rotations_are_exponentials(gen, fn):
    for theta in (0.0, 0.3, math.pi / 2, 2.5):
        assert np.allclose(fn(theta), expm(-0.5j * theta * gen))


def test_two_qubit_gates_truth_tables():
    basis = np.eye(4)
    # CNOT (control first): |10> -> |11>, |11> -> |10>
    assert np.allclose(CNOT @ basis[2], basis[3])
    assert np.allclose(CNOT @ basis[3], basis[2])
    assert np.allclose(CNOT @ basis[1], basis[1])
    assert np.allclose(CZ, np.kron(np.diag([1, 0]), I2) + np.kron(np.diag([0, 1]), Z))
    assert np.allclose(SWAP @ basis[1], basis[2])
    assert np.allclose(controlled(Z), CZ)


def _kron_reference(state, gate, positions, n):
    """Full 2^n x 2^n operator built by permuting qubits (independent of tensordot)."""
    k = len(positions)
    rest = [i for i in range(n) if i not in positions]
    perm = list(positions) + rest
    t = state.reshape((2,) * n).transpose(perm).reshape(-1)
    t = np.kron(gate, np.eye(1 << (n - k))) @ t
    return t.reshape((2,) * n).transpose(np.argsort(perm)).reshape(-1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 6), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_apply_matches_full_operator(n, data, seed):
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, 2))
    positions = data.draw(st.permutations(range(n)))[:k]
    psi = random_state(n, rng)
    u = random_unitary(1 << k, rng)
    got = psi.apply(u, positions).amplitudes
    assert np.allclose(got, _kron_reference(psi.amplitudes, u, positions, n))
    rho = psi.to_density_matrix().apply(u, positions)
    assert np.allclose(rho.matrix, np.outer(got, got.conj()))


def test_twenty_qubit_state_vector():
    psi = StateVector.zero(20).apply(H, 0)
    for q in range(1, 20):
        psi = psi.apply(CNOT, [0, q])
    p = psi.probabilities()
    assert p[0] == pytest.approx(0.5)
    assert p[-1] == pytest.approx(0.5)
    assert psi.probabilities([3, 17]).tolist() == pytest.approx([0.5, 0, 0, 0.5])


# ----------------------------------------------------------------------- preparation
@pytest.mark.parametrize("name", BELL_NAMES)
def test_bell_states_from_circuit(name):
    # |beta_xy> = CNOT (H ⊗ I) |x y>
    m = BELL_NAMES.index(name)
    x, y = m >> 1, m & 1
    circuit = StateVector.from_label(f"{x}{y}").apply(H, 0).apply(CNOT, [0, 1])
    assert np.allclose(circuit.amplitudes, StateVector.bell(name).amplitudes)


def test_ghz_from_circuit():
    labels = ["1", "2", "3", "5", "6"]
    psi = StateVector.zero(labels).apply(H, "1")
    for q in labels[1:]:
        psi = psi.apply(CNOT, ["1", q])
    assert np.allclose(psi.amplitudes, StateVector.ghz(labels).amplitudes)
    assert psi.labels == tuple(labels)


def test_from_label_and_errors():
    assert np.allclose(
        StateVector.from_label("r").amplitudes, [1 / math.sqrt(2), 1j / math.sqrt(2)]
    )
    with pytest.raises(ConfigError):
        StateVector.from_label("0x")
    with pytest.raises(ConfigError):
        StateVector([1, 0, 0])
    with pytest.raises(ConfigError):
        StateVector([1, 1])  # not normalised
    with pytest.raises(ConfigError):
        StateVector([1, 0], ["a", "b"])
    with pytest.raises(ConfigError):
        StateVector([1, 0, 0, 0], ["a", "a"])
    with pytest.raises(UnknownNameError):
        StateVector.bell("Chi+")
    with pytest.raises(ConfigError):
        StateVector.zero(2).apply(CNOT, [0])
    with pytest.raises(ConfigError):
        StateVector.zero(2).apply(X, "q")
    with pytest.raises(ConfigError):
        StateVector.zero(2).apply(CNOT, [1, 1])
    with pytest.raises(UnknownNameError):
        StateVector.zero(2).probabilities([0], "w")
    with pytest.raises(ConfigError):
        basis_unitary("bell", 3)


# ----------------------------------------------------------------------- measurement
def test_measurement_probabilities_are_born_overlaps():
    rng = np.random.default_rng(4)
    psi = random_state(3, rng, ["a", "b", "c"])
    full = psi.amplitudes.reshape(2, 2, 2)
    for m, name in enumerate(BELL_NAMES):
        bell = StateVector.bell(name).amplitudes.reshape(2, 2)
        # project (b, c) on the Bell state: amplitude of a, then its norm
        amp = np.einsum("abc,bc->a", full, bell.conj())
        assert psi.probabilities(["b", "c"], "bell")[m] == pytest.approx(np.vdot(amp, amp).real)
    plus = np.array([1, 1]) / math.sqrt(2)
    amp = np.einsum("abc,a->bc", full, plus)
    assert psi.probabilities(["a"], "x")[0] == pytest.approx(np.vdot(amp, amp).real)
    yplus = np.array([1, 1j]) / math.sqrt(2)
    amp = np.einsum("abc,a->bc", full, yplus.conj())
    assert psi.probabilities(["a"], "y")[0] == pytest.approx(np.vdot(amp, amp).real)


def test_ghz_basis_is_orthonormal_and_contains_bell():
    for k in (2, 3, 4):
        v = basis_unitary("ghz", k)
        assert np.allclose(v.conj().T @ v, np.eye(1 << k))
    assert np.allclose(basis_unitary("ghz", 2), basis_unitary("bell", 2))


def test_project_keeps_or_discards_measured_qubits():
    rng = np.random.default_rng(8)
    psi = random_state(3, rng, ["a", "b", "c"])
    p, kept = psi.project(["a", "b"], 1, "bell", discard=False)
    assert kept.probabilities(["a", "b"], "bell")[1] == pytest.approx(1.0)
    p2, rest = psi.project(["a", "b"], 1, "bell")
    assert p == pytest.approx(p2)
    assert rest.labels == ("c",)
    # the kept state is |beta_1> ⊗ rest
    expect = np.kron(StateVector.bell("Psi+").amplitudes, rest.amplitudes)
    assert abs(np.vdot(expect, kept.amplitudes)) == pytest.approx(1.0)
    with pytest.raises(SimulationError):
        StateVector.from_label("00").project([0], 1)


def test_sampled_outcomes_follow_probabilities():
    rng = np.random.default_rng(12)
    psi = random_state(2, rng)
    p = psi.probabilities(None, "bell")
    n = 4000
    counts = np.bincount([psi.measure([0, 1], rng, "bell")[0] for _ in range(n)], minlength=4)
    sd = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) < 5 * sd + 1)


def test_enumerated_branches_sum_to_one_and_recompose():
    rng = np.random.default_rng(2)
    psi = random_state(4, rng)
    branches = psi.branches([1, 3], "x")
    assert sum(b.probability for b in branches) == pytest.approx(1.0)
    ref = psi.to_density_matrix().branches([1, 3], "x")
    for b in branches:
        match = next(r for r in ref if r.outcome == b.outcome)
        assert match.probability == pytest.approx(b.probability)
        assert state_fidelity(b.state, match.state) == pytest.approx(1.0)


# ----------------------------------------------------------------------- partial trace
def test_partial_trace_against_explicit_sum():
    rng = np.random.default_rng(3)
    psi = random_state(3, rng)
    rho = psi.to_density_matrix().matrix.reshape(2, 2, 2, 2, 2, 2)
    ref = np.einsum("abcdbf->acdf", rho).reshape(4, 4)  # trace qubit 1
    assert np.allclose(psi.reduced_density_matrix([0, 2]).matrix, ref)
    assert np.allclose(psi.to_density_matrix().partial_trace([0, 2]).matrix, ref)
    # order of `keep` is respected: (2, 0) is the swapped operator
    assert np.allclose(psi.reduced_density_matrix([2, 0]).matrix, SWAP @ ref @ SWAP)


def test_bell_reduced_state_is_maximally_mixed():
    for name in BELL_NAMES:
        r = StateVector.bell(name).reduced_density_matrix([1]).matrix
        assert np.allclose(r, np.eye(2) / 2)


# ----------------------------------------------------------------------- fidelity
def test_fidelity_references():
    zero, plus = StateVector.from_label("0"), StateVector.from_label("+")
    assert state_fidelity(zero, plus) == pytest.approx(0.5)
    mixed = DensityMatrix(np.eye(2) / 2)
    assert state_fidelity(zero, mixed) == pytest.approx(0.5)
    assert state_fidelity(mixed, zero) == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    a = DensityMatrix(_random_rho(rng, 4))
    b = DensityMatrix(_random_rho(rng, 4))
    sa = sqrtm(a.matrix)
    ref = np.real(np.trace(sqrtm(sa @ b.matrix @ sa))) ** 2
    assert state_fidelity(a, b) == pytest.approx(ref, abs=1e-9)
    assert state_fidelity(a, a) == pytest.approx(1.0, abs=1e-9)


def test_fidelity_matches_labels():
    rng = np.random.default_rng(6)
    psi = random_state(2, rng, ["a", "b"])
    assert state_fidelity(psi, psi.reorder(["b", "a"])) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        state_fidelity(psi, random_state(2, rng, ["a", "c"]))


def _random_rho(rng, d):
    g = rng.standard_normal((d, d)) + 1j * rng.standard_normal((d, d))
    r = g @ g.conj().T
    return r / np.trace(r)


def test_density_matrix_validation():
    with pytest.raises(ConfigError):
        DensityMatrix(np.diag([0.6, 0.6]))
    with pytest.raises(ConfigError):
        DensityMatrix(np.array([[0.5, 1], [0, 0.5]]))
    with pytest.raises(ConfigError):
        DensityMatrix(np.diag([1.5, -0.5]))
    assert DensityMatrix(np.array([[0, 1], [0, 0]]), validate=False).trace() == 0


def test_process_fidelity_of_known_channels():
    u = random_unitary(2, np.random.default_rng(1))
    j = choi_matrix(lambda r: u @ r @ u.conj().T, 2)
    assert process_fidelity(j, u) == pytest.approx(1.0)
    assert process_fidelity(j, j) == pytest.approx(1.0)
    p = 0.3
    depol = choi_matrix(lambda r: (1 - p) * r + p * np.trace(r) * np.eye(2) / 2, 2)
    assert process_fidelity(depol, np.eye(2)) == pytest.approx(1 - 3 * p / 4)
    assert average_gate_fidelity(depol, np.eye(2)) == pytest.approx(1 - p / 2)
    with pytest.raises(ConfigError):
        process_fidelity(depol, np.eye(3))


def test_average_fidelities_against_monte_carlo():
    rng = np.random.default_rng(9)
    z1 = np.kron(Z, I2)

    def deph(r):
        return 0.7 * r + 0.3 * z1 @ r @ z1

    j = choi_matrix(deph, 4)
    n = 3000
    haar = [_f(random_state(2, rng).amplitudes, deph) for _ in range(n)]
    prod = [_f(random_product_state(2, rng).amplitudes, deph) for _ in range(n)]
    assert abs(np.mean(haar) - haar_average_fidelity(j)) < 5 * np.std(haar) / math.sqrt(n)
    assert abs(np.mean(prod) - product_average_fidelity(j, 2)) < 5 * np.std(prod) / math.sqrt(n)


def _f(v, channel):
    return float(np.vdot(v, channel(np.outer(v, v.conj())) @ v).real)


def test_trajectories_average_to_kraus_channel():
    rng = np.random.default_rng(10)
    g = 0.4
    kraus = [np.array([[1, 0], [0, math.sqrt(1 - g)]]), np.array([[0, math.sqrt(g)], [0, 0]])]
    psi = random_state(2, rng)
    exact = psi.to_density_matrix().apply_kraus(kraus, 1).matrix
    n = 4000
    acc = np.zeros((4, 4), complex)
    for _ in range(n):
        v = psi.apply_kraus(kraus, 1, rng).amplitudes
        acc += np.outer(v, v.conj())
    assert np.max(np.abs(acc / n - exact)) < 0.04
    with pytest.raises(SimulationError):
        psi.apply_kraus([np.eye(2) * 0.5], 0, rng)


def test_random_unitary_is_unitary_and_haar_moments():
    rng = np.random.default_rng(0)
    u = random_unitary(4, rng)
    assert np.allclose(u @ u.conj().T, np.eye(4))
    # Haar: E|U_00|^2 = 1/d
    vals = [abs(random_unitary(4, rng)[0, 0]) ** 2 for _ in range(2000)]
    assert abs(np.mean(vals) - 0.25) < 5 * np.std(vals) / math.sqrt(2000)
