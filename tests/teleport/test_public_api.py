"""Pin the public API of qkdtwin.teleport."""

from __future__ import annotations

import qkdtwin.teleport
from qkdtwin.teleport import controlled, decoy, noise, plots, statevector


def _key(s):
    # ruff's RUF022 (isort style): CONSTANTS, then CamelCase (incl. one-letter gates), then rest
    if s.isupper() and len(s) > 1:
        return (0, s)
    return (1, s) if s[0].isupper() else (2, s)


def test_exports_sorted_and_present():
    for mod in (qkdtwin.teleport, controlled, decoy, noise, plots, statevector):
        assert mod.__all__ == sorted(mod.__all__, key=_key), mod.__name__
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)


def test_core_names():
    assert set(qkdtwin.teleport.__all__) >= {
        "StateVector",
        "DensityMatrix",
        "state_fidelity",
        "process_fidelity",
        "choi_matrix",
        "derive_corrections",
        "teleport",
        "run_trials",
        "expected_fidelity",
        "no_controller_fidelity",
        "charlie_reduced_state",
        "NoiseModel",
        "parse_noise",
        "simulate_detection",
        "detection_probability",
        "paper_detection_probability",
        "unnoticed_probability",
        "paper_unnoticed_probability",
        "ParticleInterceptResend",
        "EntangleMeasure",
    }
