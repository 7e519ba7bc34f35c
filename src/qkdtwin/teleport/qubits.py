"""Qubit bookkeeping shared by the two state classes of the teleport engine.

This module holds what :class:`~qkdtwin.teleport.states.StateVector` and
:class:`~qkdtwin.teleport.density.DensityMatrix` have in common: their base class
:class:`QubitState` (a tensor with one axis per qubit, or two for a density matrix, plus a
unique string label per qubit: resolving labels and positions, reordering, the size limits),
the result type :class:`MeasurementBranch` of an enumerated measurement, and the private
helpers both use: label validation, tensor contraction of a gate with some axes, and the
decoding of outcome integers into bits.

Conventions
-----------
Qubits carry string labels (``"A"``, ``"5"``) so a protocol can be written with the particle
names of its paper; a qubit may also be addressed by its integer position, and a string of
one-character labels (``"A5"``) that is not itself a label is read as that sequence of labels.
Measurement outcomes of a group of k qubits are integers ``0 .. 2**k - 1`` whose binary
digits are the outcomes of the listed qubits, the first qubit being the most significant bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self, TypeAlias, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from qkdtwin.errors import ConfigError
from qkdtwin.teleport.gates import ComplexArray

if TYPE_CHECKING:
    from qkdtwin.teleport.density import DensityMatrix
    from qkdtwin.teleport.states import StateVector

__all__ = [
    "MAX_DENSITY_QUBITS",
    "MAX_STATE_QUBITS",
    "MeasurementBranch",
    "Qubit",
    "QubitState",
]

Qubit: TypeAlias = str | int

#: Largest state vector accepted (2**24 amplitudes = 256 MiB).
MAX_STATE_QUBITS = 24
#: Largest density matrix accepted (4**12 entries = 256 MiB).
MAX_DENSITY_QUBITS = 12

_NORM_TOL = 1e-8


def _n_qubits_of(size: int, what: str) -> int:
    n = size.bit_length() - 1
    if size < 2 or (1 << n) != size:
        raise ConfigError(f"{what} must have 2**n entries with n >= 1, got {size}", field=what)
    return n


def _check_labels(labels: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if labels is None:
        return tuple(str(i) for i in range(n))
    out = tuple(str(x) for x in labels)
    if len(out) != n:
        raise ConfigError(f"{n} qubits need {n} labels, got {len(out)}", field="labels", value=out)
    if len(set(out)) != n:
        raise ConfigError(f"qubit labels must be unique, got {out}", field="labels", value=out)
    return out


def _resolve(labels: tuple[str, ...], qubits: Qubit | Iterable[Qubit]) -> tuple[int, ...]:
    """Positions of ``qubits`` (labels or integer positions); rejects repeats."""
    items: list[Qubit] = [qubits] if isinstance(qubits, str | int) else list(qubits)
    out = []
    for q in items:
        if isinstance(q, bool):
            raise ConfigError(f"qubit must be a label or a position, got {q!r}", field="qubits")
        if isinstance(q, int):
            if not 0 <= q < len(labels):
                raise ConfigError(
                    f"qubit position {q} out of range for {len(labels)} qubits",
                    field="qubits",
                    value=q,
                    allowed=f"[0, {len(labels) - 1}]",
                )
            out.append(q)
        elif q in labels:
            out.append(labels.index(q))
        else:
            raise ConfigError(
                f"no qubit labelled {q!r} (labels: {', '.join(labels)})", field="qubits", value=q
            )
    if not out:
        raise ConfigError("at least one qubit is needed", field="qubits")
    if len(set(out)) != len(out):
        raise ConfigError(f"qubits must be distinct, got {items}", field="qubits", value=items)
    return tuple(out)


def _gate_tensor(gate: ArrayLike, k: int) -> ComplexArray:
    g = np.asarray(gate, dtype=np.complex128)
    d = 1 << k
    if g.shape != (d, d):
        raise ConfigError(
            f"a gate on {k} qubit(s) must be {d}x{d}, got shape {g.shape}", field="gate"
        )
    return g.reshape((2,) * (2 * k))


def _contract(tensor: ComplexArray, g: ComplexArray, axes: Sequence[int]) -> ComplexArray:
    """Apply the gate tensor ``g`` (shape ``(2,)*2k``) to ``axes`` of ``tensor``."""
    k = len(axes)
    out = np.tensordot(g, tensor, axes=(tuple(range(k, 2 * k)), tuple(axes)))
    return np.moveaxis(out, tuple(range(k)), tuple(axes))


def _split(qubits: Qubit | Iterable[Qubit], labels: tuple[str, ...]) -> Qubit | Iterable[Qubit]:
    """Read ``"A5"`` as ``["A", "5"]`` when it is not a label but each character is."""
    if (
        isinstance(qubits, str)
        and qubits not in labels
        and len(qubits) > 1
        and all(c in labels for c in qubits)
    ):
        return list(qubits)
    return qubits


def _bits(outcome: int, k: int) -> tuple[int, ...]:
    if not 0 <= outcome < (1 << k):
        raise ConfigError(
            f"outcome {outcome} out of range for {k} qubit(s)",
            field="outcome",
            value=outcome,
            allowed=f"[0, {(1 << k) - 1}]",
        )
    return tuple((outcome >> (k - 1 - i)) & 1 for i in range(k))


@dataclass(frozen=True)
class MeasurementBranch:
    """One outcome of an enumerated measurement.

    Attributes
    ----------
    outcome
        The outcome as an integer (first measured qubit = most significant bit).
    probability
        Its Born probability.
    state
        The normalised post-measurement state (:class:`StateVector` or
        :class:`DensityMatrix`), without the measured qubits when they were discarded.
    """

    outcome: int
    probability: float
    state: StateVector | DensityMatrix


def _size_and_names(labels: int | Sequence[str]) -> tuple[int, Sequence[str] | None]:
    """Read a qubit count or a sequence of labels as ``(n, labels or None)``."""
    names = None if isinstance(labels, int) else labels
    n = labels if isinstance(labels, int) else len(labels)
    return n, names


class QubitState:
    """Base class of :class:`StateVector` and :class:`DensityMatrix`: labelled qubit axes.

    A state is a complex tensor with :attr:`_RANK` axes of size 2 per qubit (1 for a state
    vector; 2 for a density matrix: the row axes, then the column axes in the same order) and
    one unique label per qubit, in axis order. The base class resolves labels and positions,
    reorders the qubits and joins the labels of a tensor product; applying gates and
    measuring are the subclasses' own.
    """

    __slots__ = ("_labels", "_tensor")

    #: Tensor axes per qubit.
    _RANK: ClassVar[int] = 1
    #: What the size-limit message calls this kind of state.
    _KIND: ClassVar[str] = "states"
    #: Largest number of qubits accepted.
    _MAX_QUBITS: ClassVar[int] = MAX_STATE_QUBITS

    _labels: tuple[str, ...]
    _tensor: ComplexArray

    @classmethod
    def _wrap(cls, tensor: ComplexArray, labels: tuple[str, ...]) -> Self:
        obj = cls.__new__(cls)
        obj._tensor = tensor
        obj._labels = labels
        return obj

    # ----------------------------------------------------------------- properties
    @property
    def n_qubits(self) -> int:
        """Number of qubits."""
        return self._tensor.ndim // self._RANK

    @property
    def labels(self) -> tuple[str, ...]:
        """Qubit labels, in tensor-axis order."""
        return self._labels

    def index(self, qubits: Qubit | Iterable[Qubit]) -> tuple[int, ...]:
        """Tensor-axis positions of the given qubits (labels or positions).

        For a density matrix these are the row axes; column axis ``n + i`` goes with row
        axis ``i``.
        """
        return _resolve(self._labels, qubits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_qubits={self.n_qubits}, labels={self._labels})"

    # ----------------------------------------------------------------- qubit bookkeeping
    def _targets(self, qubits: Qubit | Iterable[Qubit]) -> tuple[int, ...]:
        """Axis positions of ``qubits``, reading ``"A5"`` as ``["A", "5"]`` where needed."""
        return self.index(_split(qubits, self._labels))

    def _selection(self, qubits: Qubit | Iterable[Qubit] | None) -> Qubit | Iterable[Qubit]:
        """``qubits`` as given to :meth:`index` (``None``: every qubit in label order)."""
        return self._labels if qubits is None else _split(qubits, self._labels)

    def _joined_labels(self, other: QubitState) -> tuple[str, ...]:
        """Labels of ``self ⊗ other``: concatenated, unique and within the size limit."""
        n = self.n_qubits + other.n_qubits
        labels = _check_labels(self._labels + other._labels, n)
        if n > self._MAX_QUBITS:
            raise ConfigError(
                f"{self._KIND} are limited to {self._MAX_QUBITS} qubits",
                field="labels",
                value=n,
            )
        return labels

    def reorder(self, labels: Sequence[str | int]) -> Self:
        """Return the same state with its qubits in the order ``labels`` (each once)."""
        idx = _resolve(self._labels, labels)
        n = self.n_qubits
        if len(idx) != n:
            raise ConfigError(
                "reorder needs every qubit exactly once", field="labels", value=list(labels)
            )
        axes = tuple(r * n + i for r in range(self._RANK) for i in idx)
        return self._wrap(np.transpose(self._tensor, axes), tuple(self._labels[i] for i in idx))


_S = TypeVar("_S", bound=QubitState)


def _aligned(labels: tuple[str, ...], other: _S) -> _S:
    """``other`` with its qubits put in the order ``labels`` (same set of qubits required)."""
    if other.labels == labels:
        return other
    if sorted(other.labels) != sorted(labels):
        raise ConfigError(
            f"states act on different qubits: {labels} vs {other.labels}", field="labels"
        )
    return other.reorder(labels)
