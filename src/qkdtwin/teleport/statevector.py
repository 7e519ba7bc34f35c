"""A small, exact state-vector and density-matrix engine for a few qubits.

Pure states are :class:`StateVector` objects: ``2**n`` complex amplitudes kept as a tensor of
shape ``(2,) * n`` with one named axis per qubit. Mixed states are :class:`DensityMatrix`
objects: a tensor of shape ``(2,) * 2n`` (row axes, then column axes). A k-qubit gate is
applied by contracting its ``(2,) * 2k`` tensor with the k target axes (``numpy.tensordot``)
and moving the axes back, so the cost is ``O(2**n * 4**k)`` for a state vector and
``O(4**n * 4**k)`` for a density matrix; no ``2**n x 2**n`` operator is ever built. State
vectors up to about 24 qubits (256 MiB) and density matrices up to about 12 qubits fit in
memory.

Qubits carry string labels (``"A"``, ``"5"``) so a protocol can be written with the particle
names of its paper; a qubit may also be addressed by its integer position. Measurement
outcomes of a group of k qubits are integers ``0 .. 2**k - 1`` whose binary digits are the
outcomes of the listed qubits, the first qubit being the most significant bit.

Measurement bases
-----------------
``"z"``
    ``|0>, |1>`` on each qubit.
``"x"``
    ``|+>, |->`` on each qubit (outcome bit 0 is ``|+>``).
``"y"``
    ``|+i>, |-i>`` on each qubit (outcome bit 0 is ``|+i> = (|0> + i|1>)/sqrt 2``).
``"bell"``
    The Bell basis of two qubits, ``|beta_xy> = (|0 y> + (-1)**x |1 (1-y)>)/sqrt 2``
    (Nielsen & Chuang eq. 1.32), outcome ``2x + y``: 0 ``Phi+``, 1 ``Psi+``, 2 ``Phi-``,
    3 ``Psi-``.
``"ghz"``
    The GHZ basis of k >= 2 qubits, ``(|0 j> + (-1)**s |1 ~j>)/sqrt 2`` for the sign bit ``s``
    and the (k-1)-bit string ``j`` (``~j`` its complement), outcome ``s j`` read as a binary
    number. For k = 2 it is the Bell basis.

Noise channels are given as Kraus operators (see :mod:`qkdtwin.teleport.noise`): applied
exactly to a density matrix with :meth:`DensityMatrix.apply_kraus`, or sampled on a state
vector (one quantum trajectory) with :meth:`StateVector.apply_kraus`; the average of the
trajectories is the density-matrix result.

References
----------
M. A. Nielsen and I. L. Chuang, *Quantum Computation and Quantum Information*, Cambridge
University Press (2010): gates (ch. 4), measurement and partial trace (ch. 2), fidelity and
Kraus operators (ch. 8, 9).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin.errors import ConfigError, SimulationError, UnknownNameError

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

Basis: TypeAlias = Literal["z", "x", "y", "bell", "ghz"]
Qubit: TypeAlias = str | int
ComplexArray: TypeAlias = NDArray[np.complex128]

#: Measurement bases understood by :meth:`StateVector.measure` and friends.
BASES: tuple[str, ...] = ("z", "x", "y", "bell", "ghz")
#: Names of the Bell-basis outcomes 0..3 (``2x + y`` for ``|beta_xy>``).
BELL_NAMES: tuple[str, ...] = ("Phi+", "Psi+", "Phi-", "Psi-")
#: Largest state vector accepted (2**24 amplitudes = 256 MiB).
MAX_STATE_QUBITS = 24
#: Largest density matrix accepted (4**12 entries = 256 MiB).
MAX_DENSITY_QUBITS = 12

_SQ2 = 1.0 / math.sqrt(2.0)
_NORM_TOL = 1e-8

I2: ComplexArray = np.eye(2, dtype=np.complex128)
X: ComplexArray = np.array([[0, 1], [1, 0]], dtype=np.complex128)
Y: ComplexArray = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
Z: ComplexArray = np.array([[1, 0], [0, -1]], dtype=np.complex128)
H: ComplexArray = np.array([[1, 1], [1, -1]], dtype=np.complex128) * _SQ2
S: ComplexArray = np.array([[1, 0], [0, 1j]], dtype=np.complex128)
SDG: ComplexArray = np.array([[1, 0], [0, -1j]], dtype=np.complex128)
T: ComplexArray = np.array([[1, 0], [0, np.exp(1j * np.pi / 4)]], dtype=np.complex128)
#: CNOT with the first qubit as control, in the basis ``|00>, |01>, |10>, |11>``.
CNOT: ComplexArray = np.array(
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=np.complex128
)
CZ: ComplexArray = np.diag([1, 1, 1, -1]).astype(np.complex128)
SWAP: ComplexArray = np.array(
    [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.complex128
)

for _g in (I2, X, Y, Z, H, S, SDG, T, CNOT, CZ, SWAP):
    _g.flags.writeable = False


def rx(theta: float) -> ComplexArray:
    """Rotation ``exp(-i theta X / 2)`` about the x axis of the Bloch sphere.

    Examples
    --------
    >>> bool(np.allclose(rx(np.pi), -1j * X))
    True
    """
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array([[c, -1j * s], [-1j * s, c]], dtype=np.complex128)


def ry(theta: float) -> ComplexArray:
    """Rotation ``exp(-i theta Y / 2)`` about the y axis (real matrix).

    Examples
    --------
    >>> bool(np.allclose(ry(np.pi / 2) @ [1, 0], [2**-0.5, 2**-0.5]))
    True
    """
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array([[c, -s], [s, c]], dtype=np.complex128)


def rz(theta: float) -> ComplexArray:
    """Rotation ``exp(-i theta Z / 2)`` about the z axis.

    Examples
    --------
    >>> bool(np.allclose(rz(np.pi / 2), np.exp(-1j * np.pi / 4) * S))
    True
    """
    return np.diag([np.exp(-0.5j * theta), np.exp(0.5j * theta)]).astype(np.complex128)


def controlled(u: ArrayLike) -> ComplexArray:
    """Return the controlled version of a one-qubit gate ``u``, control first.

    Examples
    --------
    >>> bool(np.allclose(controlled(X), CNOT))
    True
    """
    m = np.asarray(u, dtype=np.complex128)
    if m.shape != (2, 2):
        raise ConfigError(f"controlled() needs a 2x2 matrix, got shape {m.shape}", field="u")
    out = np.eye(4, dtype=np.complex128)
    out[2:, 2:] = m
    return out


# --------------------------------------------------------------------------- helpers
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


def basis_unitary(basis: Basis | str, k: int) -> ComplexArray:
    """Return the ``2**k x 2**k`` unitary whose column ``m`` is the basis state ``m``.

    Measuring in ``basis`` is applying its conjugate transpose and measuring in Z.

    Parameters
    ----------
    basis
        One of :data:`BASES`.
    k
        Number of qubits measured together (2 for ``"bell"``, >= 2 for ``"ghz"``).

    Returns
    -------
    ndarray of complex, shape (2**k, 2**k)

    Raises
    ------
    UnknownNameError
        If the basis is not one of :data:`BASES`.
    ConfigError
        If ``k`` does not suit the basis.

    Examples
    --------
    >>> V = basis_unitary("bell", 2)
    >>> bool(np.allclose(V[:, 0], [2**-0.5, 0, 0, 2**-0.5]))  # Phi+
    True
    """
    if basis not in BASES:
        raise UnknownNameError(
            f"unknown measurement basis {basis!r}; choose one of {', '.join(BASES)}",
            field="basis",
            value=basis,
            allowed=", ".join(BASES),
        )
    if k < 1:
        raise ConfigError("a measurement needs at least one qubit", field="qubits")
    if basis in ("z", "x", "y"):
        one = {"z": I2, "x": H, "y": S @ H}[basis]
        out: ComplexArray = np.ones((1, 1), dtype=np.complex128)
        for _ in range(k):
            out = np.asarray(np.kron(out, one), dtype=np.complex128)
        return out
    if basis == "bell" and k != 2:
        raise ConfigError(
            f"the Bell basis needs exactly 2 qubits, got {k}", field="qubits", value=k, allowed="2"
        )
    if k < 2:
        raise ConfigError(
            "the GHZ basis needs at least 2 qubits", field="qubits", value=k, allowed=">= 2"
        )
    d = 1 << k
    half = d >> 1
    out = np.zeros((d, d), dtype=np.complex128)
    for m in range(d):
        sign = -1.0 if m & half else 1.0
        j = m & (half - 1)
        out[j, m] = _SQ2
        out[half | ((half - 1) ^ j), m] = sign * _SQ2
    return out


def _rotation(basis: Basis | str, k: int) -> list[tuple[ComplexArray, tuple[int, ...]]]:
    """Gates (as tensors, with relative axes) that take ``basis`` to the computational one.

    Product bases rotate qubit by qubit (no ``2**k`` matrix is built); the entangled bases
    use one k-qubit gate.
    """
    if basis not in BASES:
        basis_unitary(basis, k)  # raises UnknownNameError
    if basis == "z":
        return []
    if basis in ("x", "y"):
        one = basis_unitary(basis, 1).conj().T
        return [(one, (i,)) for i in range(k)]
    v = basis_unitary(basis, k).conj().T
    return [(v.reshape((2,) * (2 * k)), tuple(range(k)))]


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


# --------------------------------------------------------------------------- state vector
class StateVector:
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
    >>> psi = StateVector.from_label("00", labels=("a", "b")).apply(H, "a").apply(CNOT, "ab")
    >>> psi.probabilities(("a", "b"), "bell").round(3).tolist()
    [1.0, 0.0, 0.0, 0.0]
    """

    __slots__ = ("_labels", "_tensor")

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

    @classmethod
    def _wrap(cls, tensor: ComplexArray, labels: tuple[str, ...]) -> StateVector:
        obj = cls.__new__(cls)
        obj._tensor = tensor
        obj._labels = labels
        return obj

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
        names = None if isinstance(labels, int) else labels
        n = labels if isinstance(labels, int) else len(labels)
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
        names = None if isinstance(labels, int) else labels
        n = labels if isinstance(labels, int) else len(labels)
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
    def n_qubits(self) -> int:
        """Number of qubits."""
        return self._tensor.ndim

    @property
    def labels(self) -> tuple[str, ...]:
        """Qubit labels, in tensor-axis order."""
        return self._labels

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

    def index(self, qubits: Qubit | Iterable[Qubit]) -> tuple[int, ...]:
        """Tensor-axis positions of the given qubits (labels or positions)."""
        return _resolve(self._labels, qubits)

    def __repr__(self) -> str:
        return f"StateVector(n_qubits={self.n_qubits}, labels={self._labels})"

    # ----------------------------------------------------------------- operations
    def tensor_product(self, other: StateVector) -> StateVector:
        """``self ⊗ other``; labels are concatenated and must stay unique.

        Examples
        --------
        >>> StateVector.from_label("0", ["a"]).tensor_product(StateVector.zero(["b"])).labels
        ('a', 'b')
        """
        labels = _check_labels(self._labels + other._labels, self.n_qubits + other.n_qubits)
        if len(labels) > MAX_STATE_QUBITS:
            raise ConfigError(
                f"state vectors are limited to {MAX_STATE_QUBITS} qubits",
                field="labels",
                value=len(labels),
            )
        return StateVector._wrap(np.multiply.outer(self._tensor, other._tensor), labels)

    def reorder(self, labels: Sequence[str | int]) -> StateVector:
        """Return the same state with its qubits in the order ``labels`` (each once)."""
        idx = _resolve(self._labels, labels)
        if len(idx) != self.n_qubits:
            raise ConfigError(
                "reorder needs every qubit exactly once", field="labels", value=list(labels)
            )
        return StateVector._wrap(
            np.transpose(self._tensor, idx), tuple(self._labels[i] for i in idx)
        )

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
        >>> StateVector.zero(2).apply(X, 1).amplitudes.real.tolist()
        [0.0, 1.0, 0.0, 0.0]
        """
        axes = self.index(_split(qubits, self._labels))
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
        axes = self.index(_split(qubits, self._labels))
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
        axes = self.index(self._labels if qubits is None else _split(qubits, self._labels))
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
            What to measure and in which basis (see the module docstring).
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
        axes = self.index(_split(qubits, self._labels))
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
        idx = self.index(_split(keep, self._labels))
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


@overload
def _aligned(labels: tuple[str, ...], other: StateVector) -> StateVector: ...


@overload
def _aligned(labels: tuple[str, ...], other: DensityMatrix) -> DensityMatrix: ...


def _aligned(
    labels: tuple[str, ...], other: StateVector | DensityMatrix
) -> StateVector | DensityMatrix:
    """``other`` with its qubits put in the order ``labels`` (same set of qubits required)."""
    if other.labels == labels:
        return other
    if sorted(other.labels) != sorted(labels):
        raise ConfigError(
            f"states act on different qubits: {labels} vs {other.labels}", field="labels"
        )
    return other.reorder(labels)


# --------------------------------------------------------------------------- density matrix
class DensityMatrix:
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
        channel, as :func:`choi_matrix` does.

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

    __slots__ = ("_labels", "_tensor")

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
    def _wrap(cls, tensor: ComplexArray, labels: tuple[str, ...]) -> DensityMatrix:
        obj = cls.__new__(cls)
        obj._tensor = tensor
        obj._labels = labels
        return obj

    @classmethod
    def maximally_mixed(cls, labels: int | Sequence[str]) -> DensityMatrix:
        """``I / 2**n`` on ``labels``."""
        names = None if isinstance(labels, int) else labels
        n = labels if isinstance(labels, int) else len(labels)
        return cls(np.eye(1 << n) / (1 << n), names)

    # ----------------------------------------------------------------- properties
    @property
    def n_qubits(self) -> int:
        """Number of qubits."""
        return self._tensor.ndim // 2

    @property
    def labels(self) -> tuple[str, ...]:
        """Qubit labels, in tensor-axis order."""
        return self._labels

    @property
    def matrix(self) -> ComplexArray:
        """A copy as a ``2**n x 2**n`` matrix."""
        d = 1 << self.n_qubits
        return self._tensor.reshape(d, d).copy()

    def index(self, qubits: Qubit | Iterable[Qubit]) -> tuple[int, ...]:
        """Row-axis positions of the given qubits (labels or positions)."""
        return _resolve(self._labels, qubits)

    def __repr__(self) -> str:
        return f"DensityMatrix(n_qubits={self.n_qubits}, labels={self._labels})"

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
        n, k = self.n_qubits, other.n_qubits
        labels = _check_labels(self._labels + other._labels, n + k)
        if n + k > MAX_DENSITY_QUBITS:
            raise ConfigError(
                f"density matrices are limited to {MAX_DENSITY_QUBITS} qubits",
                field="labels",
                value=n + k,
            )
        t = np.multiply.outer(self._tensor, other._tensor)
        order = (
            *range(n),
            *range(2 * n, 2 * n + k),
            *range(n, 2 * n),
            *range(2 * n + k, 2 * n + 2 * k),
        )
        return DensityMatrix._wrap(np.transpose(t, order), labels)

    def reorder(self, labels: Sequence[str | int]) -> DensityMatrix:
        """Return the same state with its qubits in the order ``labels`` (each once)."""
        idx = _resolve(self._labels, labels)
        n = self.n_qubits
        if len(idx) != n:
            raise ConfigError(
                "reorder needs every qubit exactly once", field="labels", value=list(labels)
            )
        t = np.transpose(self._tensor, idx + tuple(n + i for i in idx))
        return DensityMatrix._wrap(t, tuple(self._labels[i] for i in idx))

    def _conjugate_by(self, g: ComplexArray, axes: tuple[int, ...]) -> ComplexArray:
        n = self.n_qubits
        t = _contract(self._tensor, g, axes)
        return _contract(t, g.conj(), tuple(n + a for a in axes))

    def apply(self, gate: ArrayLike, qubits: Qubit | Iterable[Qubit]) -> DensityMatrix:
        """``U rho U^dagger`` for a k-qubit unitary on ``qubits`` (see :meth:`StateVector.apply`).

        Examples
        --------
        >>> DensityMatrix(np.diag([1.0, 0.0])).apply(X, 0).matrix.real.tolist()
        [[0.0, 0.0], [0.0, 1.0]]
        """
        axes = self.index(_split(qubits, self._labels))
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
        axes = self.index(_split(qubits, self._labels))
        acc = np.zeros_like(self._tensor)
        for k in kraus:
            acc += self._conjugate_by(_gate_tensor(k, len(axes)), axes)
        return DensityMatrix._wrap(acc, self._labels)

    def partial_trace(self, keep: Qubit | Iterable[Qubit]) -> DensityMatrix:
        """Trace out every qubit not in ``keep``; the result follows ``keep``'s order.

        Examples
        --------
        >>> rho = StateVector.ghz(3).to_density_matrix().partial_trace([0, 2])
        >>> np.diag(rho.matrix).real.round(3).tolist()
        [0.5, 0.0, 0.0, 0.5]
        """
        idx = self.index(_split(keep, self._labels))
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
        axes = self.index(_split(qubits, self._labels))
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
        q = self._labels if qubits is None else _split(qubits, self._labels)
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


# --------------------------------------------------------------------------- fidelities
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
    >>> J = choi_matrix(lambda r: (r + Z @ r @ Z) / 2, 2)
    >>> round(average_gate_fidelity(J, np.eye(2)), 12)  # (2 * 0.5 + 1) / 3
    0.666666666667
    """
    d = np.asarray(target).shape[0]
    return (d * process_fidelity(choi, target) + 1.0) / (d + 1.0)


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


# --------------------------------------------------------------------------- random states
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
