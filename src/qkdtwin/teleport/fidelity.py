"""Fidelity measures of the teleport engine: states, Choi states and channels.

This module holds :func:`state_fidelity` (Uhlmann fidelity of two states, pure or mixed),
:func:`choi_matrix` (the normalised Choi state of a linear map), :func:`process_fidelity` and
:func:`average_gate_fidelity` of a channel against a target unitary or channel, and the
averages of the input-output fidelity of a channel over Haar-random pure inputs
(:func:`haar_average_fidelity`) and over products of Haar-random qubits
(:func:`product_average_fidelity`). Fidelities use the squared convention, ``F = |<a|b>|^2``
for two pure states.

References
----------
M. A. Nielsen and I. L. Chuang, *Quantum Computation and Quantum Information*, Cambridge
University Press (2010), ch. 9; R. Jozsa, J. Mod. Opt. 41, 2315 (1994).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from qkdtwin.errors import ConfigError
from qkdtwin.teleport.density import DensityMatrix
from qkdtwin.teleport.gates import ComplexArray
from qkdtwin.teleport.qubits import _aligned
from qkdtwin.teleport.states import StateVector

__all__ = [
    "average_gate_fidelity",
    "choi_matrix",
    "haar_average_fidelity",
    "process_fidelity",
    "product_average_fidelity",
    "state_fidelity",
]


def state_fidelity(a: StateVector | DensityMatrix, b: StateVector | DensityMatrix) -> float:
    """Uhlmann fidelity ``F = (tr sqrt(sqrt(a) b sqrt(a)))^2`` (squared convention).

    For a pure ``a`` this is ``<a|b|a>``, for two pure states ``|<a|b>|^2``. ``b``'s qubits are
    matched to ``a``'s labels.

    Raises
    ------
    ConfigError
        If the two states act on different qubits.

    Examples
    --------
    >>> round(state_fidelity(StateVector.from_label("0"), StateVector.from_label("+")), 12)
    0.5

    References
    ----------
    R. Jozsa, J. Mod. Opt. 41, 2315 (1994).
    """
    if isinstance(a, StateVector) and isinstance(b, StateVector):
        return float(min(1.0, abs(a.inner(b)) ** 2))
    if isinstance(a, DensityMatrix) and isinstance(b, DensityMatrix):
        return _uhlmann(a.matrix, _aligned(a.labels, b).matrix)
    pure, mixed = (a, b) if isinstance(a, StateVector) else (b, a)
    if not isinstance(pure, StateVector) or not isinstance(mixed, DensityMatrix):
        raise ConfigError(
            "state_fidelity takes StateVector or DensityMatrix objects", field="state"
        )
    v = pure.amplitudes
    rho = _aligned(pure.labels, mixed).matrix
    return float(np.clip(np.vdot(v, rho @ v).real, 0.0, 1.0))


def _uhlmann(a: ComplexArray, b: ComplexArray) -> float:
    # Eigenvalues below 1e-12 are rounding noise of a rank-deficient matrix: their square roots
    # (~1e-8) would otherwise bias the fidelity of pure or low-rank states.
    w, v = np.linalg.eigh((a + a.conj().T) / 2)
    w = np.where(w > 1e-12, w, 0.0)
    sq = (v * np.sqrt(w)) @ v.conj().T
    m = sq @ b @ sq
    ev = np.linalg.eigvalsh((m + m.conj().T) / 2)
    ev = np.where(ev > 1e-12, ev, 0.0)
    return float(np.clip(np.sum(np.sqrt(ev)) ** 2, 0.0, 1.0))


def choi_matrix(channel: Callable[[ComplexArray], ComplexArray], dim: int) -> ComplexArray:
    """Normalised Choi state ``J = (1/d) sum_ij |i><j| ⊗ channel(|i><j|)`` of a linear map.

    Parameters
    ----------
    channel
        Linear map from ``dim x dim`` operators to ``d_out x d_out`` operators; it is called
        with every matrix unit ``|i><j|``.
    dim
        Input dimension ``d``.

    Returns
    -------
    ndarray of complex, shape (d * d_out, d * d_out)
        Trace 1 for a trace-preserving channel; the input factor comes first.

    Examples
    --------
    >>> J = choi_matrix(lambda r: r, 2)
    >>> bool(np.isclose(process_fidelity(J, np.eye(2)), 1.0))
    True
    """
    if dim < 1:
        raise ConfigError("channel input dimension must be >= 1", field="dim", value=dim)
    blocks: list[list[ComplexArray]] = []
    for i in range(dim):
        row = []
        for j in range(dim):
            e = np.zeros((dim, dim), dtype=np.complex128)
            e[i, j] = 1.0
            row.append(np.asarray(channel(e), dtype=np.complex128))
        blocks.append(row)
    return np.asarray(np.block(blocks) / dim, dtype=np.complex128)


def process_fidelity(choi: ArrayLike, target: ArrayLike) -> float:
    """Process (entanglement) fidelity of a channel with a target unitary or channel.

    With a target unitary ``U`` this is ``<Phi_U| J |Phi_U>``, ``|Phi_U> = (I ⊗ U)|Phi>``; with
    a target Choi state it is the Uhlmann fidelity of the two Choi states.

    Parameters
    ----------
    choi
        Normalised Choi state (:func:`choi_matrix`), input factor first.
    target
        A ``d x d`` unitary, or a ``d^2 x d^2`` Choi state.

    Examples
    --------
    >>> from qkdtwin.teleport.gates import Z
    >>> J = choi_matrix(lambda r: (r + Z @ r @ Z) / 2, 2)  # full dephasing
    >>> round(process_fidelity(J, np.eye(2)), 12)
    0.5
    """
    j = np.asarray(choi, dtype=np.complex128)
    t = np.asarray(target, dtype=np.complex128)
    if t.shape == j.shape and t.shape[0] > 1:
        return _uhlmann(j, t)
    d = t.shape[0] if t.ndim == 2 else 0
    if t.shape != (d, d) or j.shape != (d * d, d * d):
        raise ConfigError(
            f"target of shape {t.shape} does not fit a Choi state of shape {j.shape}",
            field="target",
        )
    # |Phi_U> = (1/sqrt d) sum_i |i> ⊗ U|i>: coefficient [i, k] = U[k, i]
    phi = t.T.reshape(-1) / math.sqrt(d)
    return float(np.clip(np.vdot(phi, j @ phi).real, 0.0, 1.0))


def average_gate_fidelity(choi: ArrayLike, target: ArrayLike) -> float:
    """Haar-average state fidelity of a channel with a target unitary: ``(d F_pro + 1)/(d + 1)``.

    References
    ----------
    M. Horodecki, P. Horodecki, R. Horodecki, PRA 60, 1888 (1999); M. A. Nielsen,
    Phys. Lett. A 303, 249 (2002).

    Examples
    --------
    >>> from qkdtwin.teleport.gates import Z
    >>> J = choi_matrix(lambda r: (r + Z @ r @ Z) / 2, 2)
    >>> round(average_gate_fidelity(J, np.eye(2)), 12)  # (2 * 0.5 + 1) / 3
    0.666666666667
    """
    d = np.asarray(target).shape[0]
    return float((d * process_fidelity(choi, target) + 1.0) / (d + 1.0))


def haar_average_fidelity(choi: ArrayLike) -> float:
    """Average of ``<psi|channel(psi)|psi>`` over Haar-random pure inputs (target identity)."""
    j = np.asarray(choi)
    d = math.isqrt(j.shape[0])
    return average_gate_fidelity(j, np.eye(d))


def product_average_fidelity(choi: ArrayLike, n_qubits: int) -> float:
    """Average of ``<psi|channel(psi)|psi>`` over products of independent Haar qubit states.

    Uses ``E[|a><a| ⊗ |a><a|] = (I + SWAP)/6`` for a Haar qubit, partially transposed:
    ``E[conj(a) ⊗ a] = (I + |Phi~><Phi~|)/6`` with ``|Phi~> = |00> + |11>`` (unnormalised).

    Parameters
    ----------
    choi
        Normalised Choi state of an ``n``-qubit to ``n``-qubit channel, input factor first.
    n_qubits
        Number of qubits ``n``.
    """
    n = n_qubits
    d = 1 << n
    j = np.asarray(choi, dtype=np.complex128)
    if j.shape != (d * d, d * d):
        raise ConfigError(
            f"a Choi state of {n} qubit(s) is {d * d}x{d * d}, got {j.shape}", field="choi"
        )
    one = ((np.eye(4) + np.outer([1, 0, 0, 1], [1, 0, 0, 1])) / 6.0).reshape(2, 2, 2, 2)
    # W = ⊗_q one_q with axes [in_q, out_q, in'_q, out'_q]; reorder to (ins, outs; ins', outs')
    w = one
    for _ in range(n - 1):
        w = np.multiply.outer(w, one)
    order = (
        [4 * q for q in range(n)]
        + [4 * q + 1 for q in range(n)]
        + [4 * q + 2 for q in range(n)]
        + [4 * q + 3 for q in range(n)]
    )
    wm = np.transpose(w, order).reshape(d * d, d * d)
    return float(d * np.real(np.trace(j @ wm)))
