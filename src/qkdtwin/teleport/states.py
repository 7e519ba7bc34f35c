"""Pure states of the teleport engine: :class:`StateVector`.

A pure state of n qubits is kept as ``2**n`` complex amplitudes in a tensor of shape
``(2,) * n``, one named axis per qubit (see :mod:`qkdtwin.teleport.qubits` for the labels and
the outcome convention, :mod:`qkdtwin.teleport.gates` for the measurement bases). A k-qubit
gate is applied by contracting its ``(2,) * 2k`` tensor with the k target axes
(``numpy.tensordot``) and moving the axes back, so the cost is ``O(2**n * 4**k)`` and no
``2**n x 2**n`` operator is ever built; state vectors up to about 24 qubits (256 MiB) fit in
memory.

Noise channels given as Kraus operators (see :mod:`qkdtwin.teleport.noise`) are sampled on a
state vector, one quantum trajectory at a time, with :meth:`StateVector.apply_kraus`; the
average of the trajectories is the exact result of
:meth:`~qkdtwin.teleport.density.DensityMatrix.apply_kraus`.

References
----------
M. A. Nielsen and I. L. Chuang, *Quantum Computation and Quantum Information*, Cambridge
University Press (2010): gates (ch. 4), measurement (ch. 2), Kraus operators (ch. 8).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin.errors import ConfigError, SimulationError, UnknownNameError
from qkdtwin.teleport.density import DensityMatrix
from qkdtwin.teleport.gates import _SQ2, BELL_NAMES, Basis, ComplexArray, _rotation, basis_unitary
from qkdtwin.teleport.qubits import (
    _NORM_TOL,
    MAX_DENSITY_QUBITS,
    MAX_STATE_QUBITS,
    MeasurementBranch,
    Qubit,
    QubitState,
    _aligned,
    _bits,
    _check_labels,
    _contract,
    _gate_tensor,
    _n_qubits_of,
    _size_and_names,
    _split,
)

__all__ = ["StateVector"]


class StateVector(QubitState):
    """A normalised pure state of ``n`` labelled qubits.

    Parameters
    ----------
    amplitudes
        ``2**n`` complex amplitudes in the computational basis, first qubit most significant
        (any shape with that many entries).
    labels
        One unique name per qubit; default ``"0" .. "n-1"``.
    normalize
        Divide by the norm instead of rejecting an unnormalised vector.

    Raises
    ------
    ConfigError
        If the size is not a power of two, the vector is zero or (without ``normalize``) not
        of unit norm, or the labels do not fit.

    Examples
    --------
    >>> from qkdtwin.teleport.gates import CNOT, H
    >>> psi = StateVector.from_label("00", labels=("a", "b")).apply(H, "a").apply(CNOT, "ab")
    >>> psi.probabilities(("a", "b"), "bell").round(3).tolist()
    [1.0, 0.0, 0.0, 0.0]
    """

    __slots__ = ()
    _RANK = 1
    _KIND = "state vectors"
    _MAX_QUBITS = MAX_STATE_QUBITS

    def __init__(
        self,
        amplitudes: ArrayLike,
        labels: Sequence[str] | None = None,
        *,
        normalize: bool = False,
    ) -> None:
        a = np.array(amplitudes, dtype=np.complex128).reshape(-1)
        n = _n_qubits_of(a.size, "amplitudes")
        if n > MAX_STATE_QUBITS:
            raise ConfigError(
                f"state vectors are limited to {MAX_STATE_QUBITS} qubits, got {n}",
                field="amplitudes",
                value=n,
                allowed=f"<= {MAX_STATE_QUBITS}",
            )
        norm = float(np.linalg.norm(a))
        if not math.isfinite(norm) or norm == 0.0:
            raise ConfigError(
                "a state vector needs finite, not all zero amplitudes", field="amplitudes"
            )
        if normalize:
            a = a / norm
        elif abs(norm - 1.0) > _NORM_TOL:
            raise ConfigError(
                f"state vector has norm {norm:.12g}, not 1",
                field="amplitudes",
                value=norm,
                allowed="norm 1 (or normalize=True)",
            )
        self._tensor = a.reshape((2,) * n)
        self._labels = _check_labels(labels, n)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_label(cls, text: str, labels: Sequence[str] | None = None) -> StateVector:
        """Product state from one character per qubit: ``0 1 + - r l`` (``r``/``l`` = ``|±i>``).

        Raises
        ------
        ConfigError
            If a character is not one of ``01+-rl`` or the text is empty.

        Examples
        --------
        >>> StateVector.from_label("+0").amplitudes.round(3).tolist()
        [(0.707+0j), 0j, (0.707+0j), 0j]
        """
        one = {
            "0": (1, 0),
            "1": (0, 1),
            "+": (_SQ2, _SQ2),
            "-": (_SQ2, -_SQ2),
            "r": (_SQ2, 1j * _SQ2),
            "l": (_SQ2, -1j * _SQ2),
        }
        if not text or any(c not in one for c in text):
            raise ConfigError(
                f"state label must use the characters 01+-rl, got {text!r}",
                field="label",
                value=text,
                allowed="01+-rl",
            )
        vec: ComplexArray = np.ones(1, dtype=np.complex128)
        for c in text:
            vec = np.asarray(np.kron(vec, one[c]), dtype=np.complex128)
        return cls(vec, labels)

    @classmethod
    def zero(cls, labels: int | Sequence[str]) -> StateVector:
        """``|0...0>`` on ``labels`` (or on that many default-labelled qubits).

        Examples
        --------
        >>> StateVector.zero(3).n_qubits
        3
        """
        n, names = _size_and_names(labels)
        if n < 1:
            raise ConfigError("a state needs at least one qubit", field="labels", value=n)
        vec = np.zeros(1 << n, dtype=np.complex128)
        vec[0] = 1.0
        return cls(vec, names)

    @classmethod
    def ghz(cls, labels: int | Sequence[str], sign: int = 1) -> StateVector:
        """``(|0...0> + sign |1...1>)/sqrt 2`` on ``labels``; a Bell state ``Phi±`` for 2.

        Examples
        --------
        >>> StateVector.ghz(5).probabilities().nonzero()[0].tolist()
        [0, 31]
        """
        n, names = _size_and_names(labels)
        if n < 2:
            raise ConfigError("a GHZ state needs at least 2 qubits", field="labels", value=n)
        if sign not in (1, -1):
            raise ConfigError(f"sign must be +1 or -1, got {sign!r}", field="sign", value=sign)
        vec = np.zeros(1 << n, dtype=np.complex128)
        vec[0] = _SQ2
        vec[-1] = sign * _SQ2
        return cls(vec, names)

    @classmethod
    def bell(cls, name: str = "Phi+", labels: Sequence[str] | None = None) -> StateVector:
        """One of the four Bell states, by name (:data:`BELL_NAMES`).

        Raises
        ------
        UnknownNameError
            If ``name`` is not a Bell-state name.

        Examples
        --------
        >>> StateVector.bell("Psi-").amplitudes.round(3).tolist()
        [0j, (0.707+0j), (-0.707+0j), 0j]
        """
        if name not in BELL_NAMES:
            raise UnknownNameError(
                f"unknown Bell state {name!r}; choose one of {', '.join(BELL_NAMES)}",
                field="name",
                value=name,
                allowed=", ".join(BELL_NAMES),
            )
        m = BELL_NAMES.index(name)
        return cls(basis_unitary("bell", 2)[:, m], labels)

    # ----------------------------------------------------------------- properties
    @property
    def amplitudes(self) -> ComplexArray:
        """A copy of the ``2**n`` amplitudes, first qubit most significant."""
        return self._tensor.reshape(-1).copy()

    @property
    def tensor(self) -> ComplexArray:
        """A read-only view of the amplitude tensor, shape ``(2,) * n``."""
        view = self._tensor.view()
        view.flags.writeable = False
        return view

    # ----------------------------------------------------------------- operations
    def tensor_product(self, other: StateVector) -> StateVector:
        """``self ⊗ other``; labels are concatenated and must stay unique.

        Examples
        --------
        >>> StateVector.from_label("0", ["a"]).tensor_product(StateVector.zero(["b"])).labels
        ('a', 'b')
        """
        labels = self._joined_labels(other)
        return StateVector._wrap(np.multiply.outer(self._tensor, other._tensor), labels)

    def apply(self, gate: ArrayLike, qubits: Qubit | Iterable[Qubit]) -> StateVector:
        """Apply a k-qubit unitary to ``qubits`` (in the order of the gate's tensor factors).

        Parameters
        ----------
        gate
            ``2**k x 2**k`` unitary; its first factor acts on the first listed qubit.
        qubits
            Labels or positions of the k target qubits (a string of one-character labels is
            read as a sequence of labels).

        Returns
        -------
        StateVector
            A new state; ``self`` is unchanged.

        Raises
        ------
        ConfigError
            If the gate's size does not match the number of qubits or a qubit is unknown.

        Examples
        --------
        >>> from qkdtwin.teleport.gates import X
        >>> StateVector.zero(2).apply(X, 1).amplitudes.real.tolist()
        [0.0, 1.0, 0.0, 0.0]
        """
        axes = self._targets(qubits)
        g = _gate_tensor(gate, len(axes))
        return StateVector._wrap(_contract(self._tensor, g, axes), self._labels)

    def apply_kraus(
        self,
        kraus: Sequence[ArrayLike],
        qubits: Qubit | Iterable[Qubit],
        rng: np.random.Generator,
    ) -> StateVector:
        """Sample one Kraus operator ``K_i`` with probability ``||K_i psi||^2`` (a trajectory).

        Averaged over ``rng``, ``|psi'><psi'|`` equals ``sum_i K_i |psi><psi| K_i^dagger``
        (:meth:`DensityMatrix.apply_kraus`).

        Raises
        ------
        SimulationError
            If the operators do not form a trace-preserving channel on this state.
        """
        axes = self._targets(qubits)
        outs = [_contract(self._tensor, _gate_tensor(k, len(axes)), axes) for k in kraus]
        weights = np.array([float(np.vdot(o, o).real) for o in outs])
        total = weights.sum()
        if abs(total - 1.0) > 1e-8:
            raise SimulationError(f"Kraus operators are not trace preserving (sum {total:.6g})")
        i = int(rng.choice(len(outs), p=weights / total))
        return StateVector._wrap(outs[i] / math.sqrt(weights[i]), self._labels)

    def inner(self, other: StateVector) -> complex:
        """``<self|other>``, with ``other``'s qubits matched to ``self``'s labels."""
        o = _aligned(self._labels, other)
        return complex(np.vdot(self._tensor, o._tensor))

    # ----------------------------------------------------------------- measurement
    def _rotated(self, axes: tuple[int, ...], basis: Basis | str) -> ComplexArray:
        t = self._tensor
        for g, rel in _rotation(basis, len(axes)):
            t = _contract(t, g, [axes[r] for r in rel])
        return t

    def probabilities(
        self, qubits: Qubit | Iterable[Qubit] | None = None, basis: Basis | str = "z"
    ) -> NDArray[np.float64]:
        """Born probabilities of the ``2**k`` outcomes of measuring ``qubits`` in ``basis``.

        ``qubits=None`` measures every qubit in label order.

        Examples
        --------
        >>> StateVector.from_label("+").probabilities(basis="x").round(12).tolist()
        [1.0, 0.0]
        """
        axes = self.index(self._selection(qubits))
        t = np.moveaxis(self._rotated(axes, basis), axes, tuple(range(len(axes))))
        p = np.sum(np.abs(t.reshape(1 << len(axes), -1)) ** 2, axis=1)
        return np.asarray(p, dtype=np.float64)

    def project(
        self,
        qubits: Qubit | Iterable[Qubit],
        outcome: int,
        basis: Basis | str = "z",
        *,
        discard: bool = True,
    ) -> tuple[float, StateVector]:
        """Project ``qubits`` on the basis state of ``outcome``; return its probability and state.

        Parameters
        ----------
        qubits, basis
            What to measure and in which basis (see :mod:`qkdtwin.teleport.gates`).
        outcome
            The outcome index (first listed qubit = most significant bit).
        discard
            Drop the measured qubits from the returned state (default); otherwise, or when
            every qubit is measured, leave them in the measured basis state.

        Returns
        -------
        probability : float
        state : StateVector
            Normalised post-measurement state.

        Raises
        ------
        SimulationError
            If the outcome has zero probability.
        """
        axes = self._targets(qubits)
        k = len(axes)
        bits = _bits(outcome, k)
        t = self._rotated(axes, basis)
        index: list[int | slice] = [slice(None)] * t.ndim
        for a, b in zip(axes, bits, strict=True):
            index[a] = b
        piece = t[tuple(index)]
        p = float(np.vdot(piece, piece).real)
        if p <= 1e-300:
            raise SimulationError(f"outcome {outcome} has probability zero")
        if discard and piece.ndim > 0:
            rest = tuple(lab for i, lab in enumerate(self._labels) if i not in axes)
            return p, StateVector._wrap(piece / math.sqrt(p), rest)
        full = np.zeros_like(t)
        full[tuple(index)] = piece / math.sqrt(p)
        for g, rel in _rotation(basis, k):
            # undo the rotation: the inverse of each (self-contained) factor
            inv = np.asarray(g).reshape(1 << len(rel), 1 << len(rel)).conj().T
            full = _contract(full, inv.reshape(g.shape), [axes[r] for r in rel])
        return p, StateVector._wrap(full, self._labels)

    def branches(
        self,
        qubits: Qubit | Iterable[Qubit],
        basis: Basis | str = "z",
        *,
        discard: bool = True,
        atol: float = 1e-12,
    ) -> list[MeasurementBranch]:
        """Enumerate every outcome with probability above ``atol`` and its post-state.

        Examples
        --------
        >>> [b.outcome for b in StateVector.ghz(3).branches([0, 1], "z")]
        [0, 3]
        """
        q = _split(qubits, self._labels)
        probs = self.probabilities(q, basis)
        out = []
        for m in np.flatnonzero(probs > atol):
            p, st = self.project(q, int(m), basis, discard=discard)
            out.append(MeasurementBranch(int(m), p, st))
        return out

    def measure(
        self,
        qubits: Qubit | Iterable[Qubit],
        rng: np.random.Generator,
        basis: Basis | str = "z",
        *,
        discard: bool = True,
    ) -> tuple[int, StateVector]:
        """Sample a projective measurement; return the outcome and the post-measurement state.

        Examples
        --------
        >>> rng = np.random.default_rng(1)
        >>> m, rest = StateVector.bell("Phi+", ["a", "b"]).measure("a", rng)
        >>> rest.probabilities().round(12).tolist() == ([1.0, 0.0] if m == 0 else [0.0, 1.0])
        True
        """
        q = _split(qubits, self._labels)
        probs = self.probabilities(q, basis)
        m = int(rng.choice(probs.size, p=probs / probs.sum()))
        _, st = self.project(q, m, basis, discard=discard)
        return m, st

    # ----------------------------------------------------------------- mixed states
    def to_density_matrix(self) -> DensityMatrix:
        """``|psi><psi|`` as a :class:`DensityMatrix`."""
        return DensityMatrix._wrap(
            np.multiply.outer(self._tensor, self._tensor.conj()), self._labels
        )

    def reduced_density_matrix(self, keep: Qubit | Iterable[Qubit]) -> DensityMatrix:
        """Partial trace over every qubit not in ``keep``; the result follows ``keep``'s order.

        Examples
        --------
        >>> rho = StateVector.bell("Phi+").reduced_density_matrix([0])
        >>> rho.matrix.real.round(3).tolist()
        [[0.5, 0.0], [0.0, 0.5]]
        """
        idx = self._targets(keep)
        if len(idx) > MAX_DENSITY_QUBITS:
            raise ConfigError(
                f"density matrices are limited to {MAX_DENSITY_QUBITS} qubits",
                field="keep",
                value=len(idx),
            )
        rest = tuple(i for i in range(self.n_qubits) if i not in idx)
        m = np.transpose(self._tensor, idx + rest).reshape(1 << len(idx), -1)
        rho = (m @ m.conj().T).reshape((2,) * (2 * len(idx)))
        return DensityMatrix._wrap(rho, tuple(self._labels[i] for i in idx))
