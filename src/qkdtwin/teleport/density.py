"""Mixed states of the teleport engine: :class:`DensityMatrix`.

A density matrix of n qubits is kept as a tensor of shape ``(2,) * 2n`` (the row axes, then
the column axes, one named qubit each; see :mod:`qkdtwin.teleport.qubits`). A k-qubit gate
``U`` is applied as ``U rho U^dagger`` by contracting its tensor with the k row axes and its
conjugate with the k column axes, at a cost of ``O(4**n * 4**k)``; density matrices up to about
12 qubits (256 MiB) fit in memory. Noise channels given as Kraus operators (see
:mod:`qkdtwin.teleport.noise`) are applied exactly with :meth:`DensityMatrix.apply_kraus`.
Measurements (in the bases of :mod:`qkdtwin.teleport.gates`) are enumerated as unnormalised
outcome blocks (:meth:`DensityMatrix.outcome_blocks`) or sampled.

References
----------
M. A. Nielsen and I. L. Chuang, *Quantum Computation and Quantum Information*, Cambridge
University Press (2010): partial trace and measurement (ch. 2), Kraus operators (ch. 8).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin.errors import ConfigError, SimulationError
from qkdtwin.teleport.gates import Basis, ComplexArray, _rotation
from qkdtwin.teleport.qubits import (
    _NORM_TOL,
    MAX_DENSITY_QUBITS,
    MeasurementBranch,
    Qubit,
    QubitState,
    _check_labels,
    _contract,
    _gate_tensor,
    _n_qubits_of,
    _size_and_names,
    _split,
)

__all__ = ["DensityMatrix"]


class DensityMatrix(QubitState):
    """A density matrix (or, unvalidated, any operator) on ``n`` labelled qubits.

    Parameters
    ----------
    matrix
        ``2**n x 2**n`` complex matrix (first qubit most significant).
    labels
        One unique name per qubit; default ``"0" .. "n-1"``.
    validate
        Check that the matrix is Hermitian, of unit trace and positive semidefinite (within
        ``1e-8``). Switch off to push arbitrary operators (e.g. ``|i><j|``) through a linear
        channel, as :func:`~qkdtwin.teleport.fidelity.choi_matrix` does.

    Raises
    ------
    ConfigError
        If the shape is wrong or validation fails.

    Examples
    --------
    >>> rho = DensityMatrix(np.eye(2) / 2)
    >>> round(rho.purity(), 12)
    0.5
    """

    __slots__ = ()
    _RANK = 2
    _KIND = "density matrices"
    _MAX_QUBITS = MAX_DENSITY_QUBITS

    def __init__(
        self, matrix: ArrayLike, labels: Sequence[str] | None = None, *, validate: bool = True
    ) -> None:
        m = np.array(matrix, dtype=np.complex128)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ConfigError(
                f"a density matrix must be square, got shape {m.shape}", field="matrix"
            )
        n = _n_qubits_of(m.shape[0], "matrix")
        if n > MAX_DENSITY_QUBITS:
            raise ConfigError(
                f"density matrices are limited to {MAX_DENSITY_QUBITS} qubits",
                field="matrix",
                value=n,
                allowed=f"<= {MAX_DENSITY_QUBITS}",
            )
        if validate:
            if not np.all(np.isfinite(m)):
                raise ConfigError("density matrix entries must be finite", field="matrix")
            if not np.allclose(m, m.conj().T, atol=_NORM_TOL):
                raise ConfigError("density matrix is not Hermitian", field="matrix")
            tr = float(np.trace(m).real)
            if abs(tr - 1.0) > _NORM_TOL:
                raise ConfigError(
                    f"density matrix has trace {tr:.12g}, not 1",
                    field="matrix",
                    value=tr,
                    allowed="1",
                )
            if float(np.linalg.eigvalsh(m).min()) < -_NORM_TOL:
                raise ConfigError("density matrix has a negative eigenvalue", field="matrix")
        self._tensor = m.reshape((2,) * (2 * n))
        self._labels = _check_labels(labels, n)

    @classmethod
    def maximally_mixed(cls, labels: int | Sequence[str]) -> DensityMatrix:
        """``I / 2**n`` on ``labels``."""
        n, names = _size_and_names(labels)
        return cls(np.eye(1 << n) / (1 << n), names)

    # ----------------------------------------------------------------- properties
    @property
    def matrix(self) -> ComplexArray:
        """A copy as a ``2**n x 2**n`` matrix."""
        d = 1 << self.n_qubits
        return self._tensor.reshape(d, d).copy()

    def trace(self) -> complex:
        """Return the trace (1 for a state; anything for an unvalidated operator)."""
        d = 1 << self.n_qubits
        return complex(np.trace(self._tensor.reshape(d, d)))

    def purity(self) -> float:
        """``tr rho^2``."""
        m = self._tensor.reshape(1 << self.n_qubits, -1)
        return float(np.vdot(m.conj().T, m).real)

    # ----------------------------------------------------------------- operations
    def tensor_product(self, other: DensityMatrix) -> DensityMatrix:
        """``self ⊗ other``; labels are concatenated and must stay unique."""
        labels = self._joined_labels(other)
        n, k = self.n_qubits, other.n_qubits
        t = np.multiply.outer(self._tensor, other._tensor)
        order = (
            *range(n),
            *range(2 * n, 2 * n + k),
            *range(n, 2 * n),
            *range(2 * n + k, 2 * n + 2 * k),
        )
        return DensityMatrix._wrap(np.transpose(t, order), labels)

    def _conjugate_by(self, g: ComplexArray, axes: tuple[int, ...]) -> ComplexArray:
        n = self.n_qubits
        t = _contract(self._tensor, g, axes)
        return _contract(t, g.conj(), tuple(n + a for a in axes))

    def apply(self, gate: ArrayLike, qubits: Qubit | Iterable[Qubit]) -> DensityMatrix:
        """``U rho U^dagger`` for a k-qubit unitary on ``qubits`` (see :meth:`StateVector.apply`).

        Examples
        --------
        >>> from qkdtwin.teleport.gates import X
        >>> DensityMatrix(np.diag([1.0, 0.0])).apply(X, 0).matrix.real.tolist()
        [[0.0, 0.0], [0.0, 1.0]]
        """
        axes = self._targets(qubits)
        return DensityMatrix._wrap(
            self._conjugate_by(_gate_tensor(gate, len(axes)), axes), self._labels
        )

    def apply_kraus(
        self, kraus: Sequence[ArrayLike], qubits: Qubit | Iterable[Qubit]
    ) -> DensityMatrix:
        """``sum_i K_i rho K_i^dagger`` with the Kraus operators acting on ``qubits``.

        Raises
        ------
        ConfigError
            If an operator's size does not match the qubits.
        """
        axes = self._targets(qubits)
        acc = np.zeros_like(self._tensor)
        for k in kraus:
            acc += self._conjugate_by(_gate_tensor(k, len(axes)), axes)
        return DensityMatrix._wrap(acc, self._labels)

    def partial_trace(self, keep: Qubit | Iterable[Qubit]) -> DensityMatrix:
        """Trace out every qubit not in ``keep``; the result follows ``keep``'s order.

        Examples
        --------
        >>> from qkdtwin.teleport.states import StateVector
        >>> rho = StateVector.ghz(3).to_density_matrix().partial_trace([0, 2])
        >>> np.diag(rho.matrix).real.round(3).tolist()
        [0.5, 0.0, 0.0, 0.5]
        """
        idx = self._targets(keep)
        n = self.n_qubits
        rest = tuple(i for i in range(n) if i not in idx)
        k = len(idx)
        t = np.transpose(
            self._tensor, idx + rest + tuple(n + i for i in idx) + tuple(n + i for i in rest)
        )
        t = t.reshape(1 << k, 1 << (n - k), 1 << k, 1 << (n - k))
        out = np.einsum("ajbj->ab", t).reshape((2,) * (2 * k))
        return DensityMatrix._wrap(out, tuple(self._labels[i] for i in idx))

    def expectation(self, operator: ArrayLike, qubits: Qubit | Iterable[Qubit]) -> complex:
        """``tr(rho O)`` for an operator ``O`` on ``qubits``."""
        reduced = self.partial_trace(qubits)
        d = 1 << reduced.n_qubits
        op = np.asarray(operator, dtype=np.complex128)
        if op.shape != (d, d):
            raise ConfigError(f"operator must be {d}x{d}, got shape {op.shape}", field="operator")
        return complex(np.trace(reduced._tensor.reshape(d, d) @ op))

    # ----------------------------------------------------------------- measurement
    def outcome_blocks(
        self, qubits: Qubit | Iterable[Qubit], basis: Basis | str = "z"
    ) -> tuple[ComplexArray, tuple[str, ...]]:
        """Unnormalised post-measurement operators of every outcome, measured qubits discarded.

        Block ``m`` is ``<m| rho |m>`` (the partial matrix element on the measured qubits in
        ``basis``); its trace is the probability of ``m``. Being linear in ``rho``, this works
        for arbitrary operators too.

        Returns
        -------
        blocks : ndarray of complex, shape (2**k, d, d)
            With ``d = 2**(n - k)``; ``d = 1`` when every qubit is measured.
        rest : tuple of str
            Labels of the remaining qubits, in their original order.
        """
        axes = self._targets(qubits)
        n, k = self.n_qubits, len(axes)
        t = self._tensor
        for g, rel in _rotation(basis, k):
            sel = tuple(axes[r] for r in rel)
            t = _contract(t, g, sel)
            t = _contract(t, g.conj(), tuple(n + a for a in sel))
        rest = tuple(i for i in range(n) if i not in axes)
        t = np.transpose(t, axes + rest + tuple(n + a for a in axes) + tuple(n + i for i in rest))
        d = 1 << (n - k)
        t = t.reshape(1 << k, d, 1 << k, d)
        blocks = np.einsum("aiaj->aij", t)
        return blocks, tuple(self._labels[i] for i in rest)

    def probabilities(
        self, qubits: Qubit | Iterable[Qubit] | None = None, basis: Basis | str = "z"
    ) -> NDArray[np.float64]:
        """Born probabilities of the outcomes of measuring ``qubits`` in ``basis``."""
        q = self._selection(qubits)
        blocks, _ = self.outcome_blocks(q, basis)
        return np.asarray(np.einsum("aii->a", blocks).real, dtype=np.float64)

    def branches(
        self, qubits: Qubit | Iterable[Qubit], basis: Basis | str = "z", *, atol: float = 1e-12
    ) -> list[MeasurementBranch]:
        """Every outcome with probability above ``atol`` and its normalised post-state.

        The measured qubits are discarded; at least one qubit must remain.

        Raises
        ------
        SimulationError
            If every qubit is measured.
        """
        q = _split(qubits, self._labels)
        blocks, rest = self.outcome_blocks(q, basis)
        if not rest:
            raise SimulationError("discarding every qubit would leave no state")
        out = []
        for m, b in enumerate(blocks):
            p = float(np.trace(b).real)
            if p > atol:
                t = (b / p).reshape((2,) * (2 * len(rest)))
                out.append(MeasurementBranch(m, p, DensityMatrix._wrap(t, rest)))
        return out

    def measure(
        self,
        qubits: Qubit | Iterable[Qubit],
        rng: np.random.Generator,
        basis: Basis | str = "z",
    ) -> tuple[int, DensityMatrix]:
        """Sample a projective measurement; return the outcome and the remaining qubits' state."""
        branches = self.branches(qubits, basis)
        p = np.array([b.probability for b in branches])
        i = int(rng.choice(len(branches), p=p / p.sum()))
        return branches[i].outcome, cast(DensityMatrix, branches[i].state)
