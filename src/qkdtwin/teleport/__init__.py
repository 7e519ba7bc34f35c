"""Controlled two-qubit teleportation of the seed paper, and its decoy-photon check.

Three layers, lowest first:

* a small exact engine: :class:`StateVector` (:mod:`~qkdtwin.teleport.states`) and
  :class:`DensityMatrix` (:mod:`~qkdtwin.teleport.density`) over labelled qubits (their
  common base in :mod:`~qkdtwin.teleport.qubits`), gates (:mod:`~qkdtwin.teleport.gates`)
  applied by tensor contraction, measurements in the Z, X, Y, Bell and GHZ bases (sampled or
  enumerated), partial trace, state and process fidelity (:mod:`~qkdtwin.teleport.fidelity`)
  and Haar-random states (:mod:`~qkdtwin.teleport.random_states`); all of it is also
  importable from :mod:`~qkdtwin.teleport.statevector`, its former single module;
  :mod:`~qkdtwin.teleport.noise` adds Kraus noise channels.
* :mod:`~qkdtwin.teleport.controlled` — the scheme: GHZ5 on particles 1, 2, 3, 5, 6 and a
  Bell pair on 4, 7; Bob's corrections derived by simulation (:func:`derive_corrections`),
  sampled runs (:func:`teleport`, :func:`run_trials`) and the exact channel
  (:func:`expected_fidelity`), with and without the controller.
* :mod:`~qkdtwin.teleport.decoy` — the decoy-photon eavesdropping check: Monte Carlo and
  analytic detection probabilities, and the paper's formulas for comparison.

Examples
--------
>>> import numpy as np
>>> from qkdtwin.teleport import random_state, teleport
>>> rng = np.random.default_rng(1)
>>> round(teleport(random_state(2, rng), rng).fidelity, 9)
1.0
>>> from qkdtwin.teleport import detection_probability
>>> round(detection_probability(10), 4)  # 1 - (3/4)^10
0.9437
"""

from __future__ import annotations

from qkdtwin.teleport.controlled import (
    ALICE_PARTICLES,
    BOB_PARTICLES,
    CHANNEL_PARTICLES,
    CHARLIE_BASES,
    CHARLIE_PARTICLES,
    LOCAL_GATES,
    NO_CONTROLLER_FIDELITY_HAAR,
    NO_CONTROLLER_FIDELITY_PRODUCT,
    Correction,
    CorrectionTable,
    FidelityRun,
    TeleportResult,
    channel_state,
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
from qkdtwin.teleport.decoy import (
    DECOY_STATES,
    DetectionEstimate,
    EntangleMeasure,
    ParticleInterceptResend,
    detection_curve,
    detection_probability,
    error_probability,
    paper_detection_probability,
    paper_unnoticed_probability,
    parse_eve_attack,
    simulate_detection,
    simulate_unnoticed,
    unnoticed_probability,
)
from qkdtwin.teleport.density import DensityMatrix
from qkdtwin.teleport.fidelity import (
    average_gate_fidelity,
    choi_matrix,
    process_fidelity,
    state_fidelity,
)
from qkdtwin.teleport.gates import BELL_NAMES, CNOT, CZ, SWAP, H, S, X, Y, Z, basis_unitary
from qkdtwin.teleport.noise import NOISE_MODELS, NoiseModel, apply_noise, parse_noise
from qkdtwin.teleport.random_states import random_product_state, random_state, random_unitary
from qkdtwin.teleport.states import StateVector

__all__ = [
    "ALICE_PARTICLES",
    "BELL_NAMES",
    "BOB_PARTICLES",
    "CHANNEL_PARTICLES",
    "CHARLIE_BASES",
    "CHARLIE_PARTICLES",
    "CNOT",
    "CZ",
    "DECOY_STATES",
    "LOCAL_GATES",
    "NOISE_MODELS",
    "NO_CONTROLLER_FIDELITY_HAAR",
    "NO_CONTROLLER_FIDELITY_PRODUCT",
    "SWAP",
    "Correction",
    "CorrectionTable",
    "DensityMatrix",
    "DetectionEstimate",
    "EntangleMeasure",
    "FidelityRun",
    "H",
    "NoiseModel",
    "ParticleInterceptResend",
    "S",
    "StateVector",
    "TeleportResult",
    "X",
    "Y",
    "Z",
    "apply_noise",
    "average_gate_fidelity",
    "basis_unitary",
    "channel_state",
    "charlie_reduced_state",
    "choi_matrix",
    "derive_corrections",
    "detection_curve",
    "detection_probability",
    "error_probability",
    "expected_fidelity",
    "no_controller_fidelity",
    "noise_sweep",
    "paper_detection_probability",
    "paper_unnoticed_probability",
    "parse_eve_attack",
    "parse_noise",
    "process_fidelity",
    "protocol_choi",
    "protocol_output",
    "random_product_state",
    "random_state",
    "random_unitary",
    "run_trials",
    "simulate_detection",
    "simulate_unnoticed",
    "state_fidelity",
    "teleport",
    "teleport_branch",
    "unnoticed_probability",
]


def __getattr__(name: str) -> object:
    """``InterceptResend``: the old name of :class:`ParticleInterceptResend`, deprecated.

    It clashed with :class:`qkdtwin.qkd.InterceptResend` (the link engine's attack on
    photons); the teleportation scheme's attack on decoy particles is now
    ``ParticleInterceptResend``.
    """
    if name == "InterceptResend":
        import warnings

        warnings.warn(
            "qkdtwin.teleport.InterceptResend is deprecated: use ParticleInterceptResend",
            DeprecationWarning,
            stacklevel=2,
        )
        return ParticleInterceptResend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
