"""Gate matrices and measurement bases of the teleport engine.

This module holds the fixed one- and two-qubit gates (:data:`X`, :data:`H`, :data:`CNOT`, ...),
the rotations :func:`rx`, :func:`ry`, :func:`rz`, :func:`controlled`, and the measurement
bases: :data:`BASES`, :data:`BELL_NAMES` and :func:`basis_unitary`. Every gate is a read-only
``complex128`` matrix in the basis ``|0...0>, ..., |1...1>``, first qubit most significant.

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

References
----------
M. A. Nielsen and I. L. Chuang, *Quantum Computation and Quantum Information*, Cambridge
University Press (2010), ch. 4.
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin.errors import ConfigError, UnknownNameError

__all__ = [
    "BASES",
    "BELL_NAMES",
    "CNOT",
    "CZ",
    "I2",
    "SDG",
    "SWAP",
    "Basis",
    "ComplexArray",
    "H",
    "S",
    "T",
    "X",
    "Y",
    "Z",
    "basis_unitary",
    "controlled",
    "rx",
    "ry",
    "rz",
]

Basis: TypeAlias = Literal["z", "x", "y", "bell", "ghz"]
ComplexArray: TypeAlias = NDArray[np.complex128]

#: Measurement bases understood by :meth:`~qkdtwin.teleport.states.StateVector.measure` and friends.
BASES: tuple[str, ...] = ("z", "x", "y", "bell", "ghz")
#: Names of the Bell-basis outcomes 0..3 (``2x + y`` for ``|beta_xy>``).
BELL_NAMES: tuple[str, ...] = ("Phi+", "Psi+", "Phi-", "Psi-")

_SQ2 = 1.0 / math.sqrt(2.0)

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
