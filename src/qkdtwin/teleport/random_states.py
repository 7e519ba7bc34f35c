"""Random states and unitaries of the teleport engine, drawn from the Haar measure.

This module holds :func:`random_unitary` (a Haar-random unitary), :func:`random_state` (a
Haar-random pure state of n qubits) and :func:`random_product_state` (a product of independent
Haar-random qubits). Every draw takes an explicit ``numpy.random.Generator``, so a seeded
generator gives the same states on every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.teleport.gates import ComplexArray
from qkdtwin.teleport.qubits import MAX_STATE_QUBITS
from qkdtwin.teleport.states import StateVector

__all__ = ["random_product_state", "random_state", "random_unitary"]


def random_unitary(dim: int, rng: np.random.Generator) -> ComplexArray:
    """Draw a Haar-random ``dim x dim`` unitary (QR of a Ginibre matrix, phases fixed).

    References
    ----------
    F. Mezzadri, Notices of the AMS 54, 592 (2007).
    """
    if dim < 1:
        raise ConfigError("dimension must be >= 1", field="dim", value=dim)
    z = (rng.standard_normal((dim, dim)) + 1j * rng.standard_normal((dim, dim))) / math.sqrt(2)
    q, r = np.linalg.qr(z)
    ph = np.diag(r) / np.abs(np.diag(r))
    return np.asarray(q * ph, dtype=np.complex128)


def random_state(
    n_qubits: int, rng: np.random.Generator, labels: Sequence[str] | None = None
) -> StateVector:
    """Draw a Haar-random pure state of ``n_qubits`` (normalised complex Gaussian).

    Examples
    --------
    >>> random_state(2, np.random.default_rng(0), ["A", "B"]).labels
    ('A', 'B')
    """
    if not 1 <= n_qubits <= MAX_STATE_QUBITS:
        raise ConfigError(
            f"n_qubits must be in [1, {MAX_STATE_QUBITS}], got {n_qubits}",
            field="n_qubits",
            value=n_qubits,
        )
    d = 1 << n_qubits
    v = rng.standard_normal(d) + 1j * rng.standard_normal(d)
    return StateVector(v, labels, normalize=True)


def random_product_state(
    n_qubits: int, rng: np.random.Generator, labels: Sequence[str] | None = None
) -> StateVector:
    """Draw a product of independent Haar-random one-qubit states."""
    if not 1 <= n_qubits <= MAX_STATE_QUBITS:
        raise ConfigError(
            f"n_qubits must be in [1, {MAX_STATE_QUBITS}], got {n_qubits}",
            field="n_qubits",
            value=n_qubits,
        )
    vec = np.ones(1, dtype=np.complex128)
    for _ in range(n_qubits):
        v = rng.standard_normal(2) + 1j * rng.standard_normal(2)
        vec = np.kron(vec, v / np.linalg.norm(v))
    return StateVector(vec, labels, normalize=True)
