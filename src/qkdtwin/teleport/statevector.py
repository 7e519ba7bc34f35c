"""A small, exact state-vector and density-matrix engine for a few qubits (re-exports).

This module used to hold the whole engine; it now only re-exports it, so that every name
importable from ``qkdtwin.teleport.statevector`` still is. The code lives in:

* :mod:`qkdtwin.teleport.gates` — gate matrices (:data:`X`, :data:`H`, :data:`CNOT`, ...),
  rotations (:func:`rx`, :func:`ry`, :func:`rz`, :func:`controlled`), the measurement bases
  (:data:`BASES`, :data:`BELL_NAMES`, :func:`basis_unitary`) and the ``Basis`` and
  ``ComplexArray`` types;
* :mod:`qkdtwin.teleport.qubits` — the base class :class:`~qkdtwin.teleport.qubits.QubitState`
  of the two state classes (labelled qubit axes), :class:`MeasurementBranch`, the ``Qubit``
  type and the size limits :data:`MAX_STATE_QUBITS`, :data:`MAX_DENSITY_QUBITS`;
* :mod:`qkdtwin.teleport.states` — pure states, :class:`StateVector`;
* :mod:`qkdtwin.teleport.density` — mixed states, :class:`DensityMatrix`;
* :mod:`qkdtwin.teleport.fidelity` — :func:`state_fidelity`, :func:`choi_matrix`,
  :func:`process_fidelity`, :func:`average_gate_fidelity`, :func:`haar_average_fidelity`,
  :func:`product_average_fidelity`;
* :mod:`qkdtwin.teleport.random_states` — :func:`random_unitary`, :func:`random_state`,
  :func:`random_product_state` (Haar measure).

Pure states are :class:`StateVector` objects: ``2**n`` complex amplitudes kept as a tensor of
shape ``(2,) * n`` with one named axis per qubit. Mixed states are :class:`DensityMatrix`
objects: a tensor of shape ``(2,) * 2n`` (row axes, then column axes). A k-qubit gate is
applied by contracting its ``(2,) * 2k`` tensor with the k target axes, so no ``2**n x 2**n``
operator is ever built.

Examples
--------
>>> from qkdtwin.teleport.statevector import CNOT, H, StateVector
>>> psi = StateVector.zero(["a", "b"]).apply(H, "a").apply(CNOT, "ab")
>>> psi.probabilities(basis="bell").round(3).tolist()
[1.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from qkdtwin.teleport.density import DensityMatrix
from qkdtwin.teleport.fidelity import (
    average_gate_fidelity,
    choi_matrix,
    haar_average_fidelity,
    process_fidelity,
    product_average_fidelity,
    state_fidelity,
)
from qkdtwin.teleport.gates import (
    BASES,
    BELL_NAMES,
    CNOT,
    CZ,
    I2,
    SDG,
    SWAP,
    Basis,
    H,
    S,
    T,
    X,
    Y,
    Z,
    basis_unitary,
    controlled,
    rx,
    ry,
    rz,
)
from qkdtwin.teleport.gates import ComplexArray as ComplexArray  # re-export, not in __all__
from qkdtwin.teleport.qubits import (
    MAX_DENSITY_QUBITS,
    MAX_STATE_QUBITS,
    MeasurementBranch,
    Qubit,
)
from qkdtwin.teleport.random_states import random_product_state, random_state, random_unitary
from qkdtwin.teleport.states import StateVector

__all__ = [
    "BASES",
    "BELL_NAMES",
    "CNOT",
    "CZ",
    "I2",
    "MAX_DENSITY_QUBITS",
    "MAX_STATE_QUBITS",
    "SDG",
    "SWAP",
    "Basis",
    "DensityMatrix",
    "H",
    "MeasurementBranch",
    "Qubit",
    "S",
    "StateVector",
    "T",
    "X",
    "Y",
    "Z",
    "average_gate_fidelity",
    "basis_unitary",
    "choi_matrix",
    "controlled",
    "haar_average_fidelity",
    "process_fidelity",
    "product_average_fidelity",
    "random_product_state",
    "random_state",
    "random_unitary",
    "rx",
    "ry",
    "rz",
    "state_fidelity",
]
