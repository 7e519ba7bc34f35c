"""Noise channels: completeness, known actions, parsing."""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.teleport.noise import (
    NOISE_MODELS,
    NoiseModel,
    amplitude_damping_kraus,
    apply_noise,
    dephasing_kraus,
    depolarizing_kraus,
    parse_noise,
)
from qkdtwin.teleport.statevector import StateVector, random_state


@pytest.mark.parametrize("make", [depolarizing_kraus, dephasing_kraus, amplitude_damping_kraus])
@pytest.mark.parametrize("p", [0.0, 0.2, 1.0])
def test_kraus_sets_are_trace_preserving(make, p):
    ks = make(p)
    assert np.allclose(sum(k.conj().T @ k for k in ks), np.eye(2))


def _act(ks, rho):
    return sum(k @ rho @ k.conj().T for k in ks)


def test_channel_actions_on_bloch_vector():
    rho = np.array([[0.7, 0.2 - 0.1j], [0.2 + 0.1j, 0.3]])
    p = 0.3
    assert np.allclose(_act(depolarizing_kraus(p), rho), (1 - p) * rho + p * np.eye(2) / 2)
    deph = _act(dephasing_kraus(p), rho)
    assert np.allclose(np.diag(deph), np.diag(rho))
    assert deph[0, 1] == pytest.approx((1 - p) * rho[0, 1])
    ad = _act(amplitude_damping_kraus(p), rho)
    assert ad[1, 1] == pytest.approx((1 - p) * rho[1, 1])
    assert ad[0, 1] == pytest.approx(np.sqrt(1 - p) * rho[0, 1])


def test_apply_noise_density_matrix_and_trajectories_agree():
    rng = np.random.default_rng(3)
    psi = random_state(2, rng)
    model = NoiseModel("depolarizing", 0.4)
    exact = apply_noise(psi.to_density_matrix(), model, ["0", "1"]).matrix
    n = 3000
    acc = np.zeros((4, 4), complex)
    for _ in range(n):
        v = apply_noise(psi, model, ["0", "1"], rng).amplitudes
        acc += np.outer(v, v.conj())
    assert np.max(np.abs(acc / n - exact)) < 0.05
    assert apply_noise(psi, None, ["0"]) is psi
    with pytest.raises(ConfigError):
        apply_noise(psi, model, ["0"])  # a state vector needs rng


def test_parse_noise():
    assert parse_noise("depolarizing:0.1") == NoiseModel("depolarizing", 0.1)
    assert parse_noise("AD:0.5").name == "amplitude-damping"
    assert parse_noise(None) is None
    assert parse_noise("none") is None
    assert set(NOISE_MODELS) == {"amplitude-damping", "dephasing", "depolarizing"}
    with pytest.raises(UnknownNameError):
        parse_noise("bitflip:0.1")
    for bad in ("depolarizing", "depolarizing:", ":0.1", "depolarizing:x"):
        with pytest.raises(ConfigError):
            parse_noise(bad)
    for bad in ("depolarizing:1.5", "dephasing:-0.1", "depolarizing:nan"):
        with pytest.raises(ConfigError):
            parse_noise(bad)
    assert NoiseModel("dephasing", 0.25).describe() == "dephasing:0.25"


def test_zero_strength_is_identity():
    psi = StateVector.from_label("+1")
    rho = psi.to_density_matrix()
    out = apply_noise(rho, NoiseModel("amplitude-damping", 0.0), ["0", "1"])
    assert np.allclose(out.matrix, rho.matrix)
