"""One-qubit noise channels for the teleportation channel particles.

Each model has one strength ``p`` in [0, 1]; ``p = 0`` is the identity and ``p = 1`` destroys
what the model attacks:

``depolarizing``
    ``rho -> (1 - p) rho + p I/2``. Kraus: ``sqrt(1 - 3p/4) I``, ``sqrt(p/4) X, Y, Z``.
``dephasing``
    Off-diagonal elements multiplied by ``1 - p`` (phase damping); ``p = 1`` removes every
    coherence. Kraus: ``sqrt(1 - p/2) I``, ``sqrt(p/2) Z``.
``amplitude-damping``
    Energy relaxation ``|1> -> |0>`` with probability ``gamma = p``. Kraus:
    ``[[1, 0], [0, sqrt(1 - gamma)]]``, ``[[0, sqrt(gamma)], [0, 0]]``.

Noise acts independently on every chosen particle, once, between the preparation of the
entangled channel and the measurements (it models the distribution of the particles).

References
----------
M. A. Nielsen and I. L. Chuang, *Quantum Computation and Quantum Information* (2010), §8.3.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypedDict, overload

import numpy as np
from numpy.typing import NDArray

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.teleport.density import DensityMatrix
from qkdtwin.teleport.gates import I2, X, Y, Z
from qkdtwin.teleport.qubits import Qubit
from qkdtwin.teleport.states import StateVector

__all__ = [
    "NOISE_MODELS",
    "NoiseModel",
    "amplitude_damping_kraus",
    "apply_noise",
    "dephasing_kraus",
    "depolarizing_kraus",
    "parse_noise",
]

#: Names accepted by :class:`NoiseModel` and ``--noise MODEL:P``.
NOISE_MODELS: tuple[str, ...] = ("amplitude-damping", "dephasing", "depolarizing")

_ALIASES = {
    "amplitude-damping": "amplitude-damping",
    "amplitude_damping": "amplitude-damping",
    "ad": "amplitude-damping",
    "dephasing": "dephasing",
    "phase-damping": "dephasing",
    "depolarizing": "depolarizing",
    "depolarising": "depolarizing",
}


def depolarizing_kraus(p: float) -> tuple[NDArray[np.complex128], ...]:
    """Kraus operators of ``rho -> (1 - p) rho + p I/2``.

    Raises
    ------
    ConfigError
        If ``p`` is not in [0, 1].

    Examples
    --------
    >>> ks = depolarizing_kraus(1.0)
    >>> rho = np.array([[1, 0], [0, 0]])
    >>> sum(k @ rho @ k.conj().T for k in ks).real.round(12).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    """
    p = v.probability("p", p)
    return (
        math.sqrt(1 - 0.75 * p) * I2,
        math.sqrt(p / 4) * X,
        math.sqrt(p / 4) * Y,
        math.sqrt(p / 4) * Z,
    )


def dephasing_kraus(p: float) -> tuple[NDArray[np.complex128], ...]:
    """Kraus operators that multiply the coherences by ``1 - p``.

    Raises
    ------
    ConfigError
        If ``p`` is not in [0, 1].

    Examples
    --------
    >>> ks = dephasing_kraus(0.5)
    >>> rho = np.full((2, 2), 0.5)
    >>> sum(k @ rho @ k.conj().T for k in ks).real.round(12).tolist()
    [[0.5, 0.25], [0.25, 0.5]]
    """
    p = v.probability("p", p)
    return (math.sqrt(1 - p / 2) * I2, math.sqrt(p / 2) * Z)


def amplitude_damping_kraus(gamma: float) -> tuple[NDArray[np.complex128], ...]:
    """Kraus operators of amplitude damping with decay probability ``gamma``.

    Raises
    ------
    ConfigError
        If ``gamma`` is not in [0, 1].

    Examples
    --------
    >>> ks = amplitude_damping_kraus(1.0)
    >>> rho = np.array([[0, 0], [0, 1]])
    >>> sum(k @ rho @ k.conj().T for k in ks).real.tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    """
    g = v.probability("gamma", gamma)
    k0 = np.array([[1, 0], [0, math.sqrt(1 - g)]], dtype=np.complex128)
    k1 = np.array([[0, math.sqrt(g)], [0, 0]], dtype=np.complex128)
    return (k0, k1)


class NoiseDict(TypedDict):
    """JSON-ready form of a :class:`NoiseModel` (:meth:`NoiseModel.to_dict`)."""

    model: str
    strength: float


@dataclass(frozen=True)
class NoiseModel:
    """A named one-qubit noise channel of strength ``strength`` in [0, 1].

    Parameters
    ----------
    name
        One of :data:`NOISE_MODELS` (aliases ``ad``, ``amplitude_damping``,
        ``phase-damping``, ``depolarising`` are accepted and normalised).
    strength
        ``p`` (or ``gamma`` for amplitude damping).

    Raises
    ------
    UnknownNameError
        If the name is unknown.
    ConfigError
        If the strength is not in [0, 1].

    Examples
    --------
    >>> NoiseModel("ad", 0.1)
    NoiseModel(name='amplitude-damping', strength=0.1)
    """

    name: str
    strength: float

    def __post_init__(self) -> None:
        key = str(self.name).strip().lower()
        if key not in _ALIASES:
            raise UnknownNameError(
                f"unknown noise model {self.name!r}; choose one of {', '.join(NOISE_MODELS)}",
                field="noise",
                value=self.name,
                allowed=", ".join(NOISE_MODELS),
            )
        object.__setattr__(self, "name", _ALIASES[key])
        object.__setattr__(self, "strength", v.probability("noise strength", self.strength))

    def kraus(self) -> tuple[NDArray[np.complex128], ...]:
        """Return the Kraus operators of this channel."""
        if self.name == "depolarizing":
            return depolarizing_kraus(self.strength)
        if self.name == "dephasing":
            return dephasing_kraus(self.strength)
        return amplitude_damping_kraus(self.strength)

    def describe(self) -> str:
        """``MODEL:P`` as typed on the command line."""
        return f"{self.name}:{self.strength:g}"

    def to_dict(self) -> NoiseDict:
        """JSON-ready form."""
        return {"model": self.name, "strength": self.strength}


def parse_noise(spec: str | None) -> NoiseModel | None:
    """Parse ``MODEL:P`` (``depolarizing:0.1``); ``None``, ``""`` and ``"none"`` mean no noise.

    Raises
    ------
    ConfigError
        If the text is not ``MODEL:P`` or ``P`` is not a number in [0, 1].
    UnknownNameError
        If the model is unknown.

    Examples
    --------
    >>> parse_noise("dephasing:0.2")
    NoiseModel(name='dephasing', strength=0.2)
    >>> parse_noise("none") is None
    True
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    name, sep, value = spec.strip().partition(":")
    if not sep or not name.strip() or not value.strip():
        raise ConfigError(
            f"noise must be written MODEL:P (e.g. depolarizing:0.1), got {spec!r}",
            field="noise",
            value=spec,
            allowed="MODEL:P",
        )
    try:
        p = float(value)
    except ValueError:
        raise ConfigError(
            f"noise strength must be a number in [0, 1], got {value!r}",
            field="noise",
            value=spec,
            allowed="[0, 1]",
        ) from None
    return NoiseModel(name.strip(), p)


@overload
def apply_noise(
    state: DensityMatrix,
    model: NoiseModel | None,
    qubits: Iterable[Qubit],
    rng: np.random.Generator | None = None,
) -> DensityMatrix: ...


@overload
def apply_noise(
    state: StateVector,
    model: NoiseModel | None,
    qubits: Iterable[Qubit],
    rng: np.random.Generator | None = None,
) -> StateVector: ...


def apply_noise(
    state: StateVector | DensityMatrix,
    model: NoiseModel | None,
    qubits: Iterable[Qubit],
    rng: np.random.Generator | None = None,
) -> StateVector | DensityMatrix:
    """Apply ``model`` independently to each of ``qubits``.

    A :class:`DensityMatrix` gets the exact channel; a :class:`StateVector` one sampled
    trajectory (``rng`` required), whose average over ``rng`` is the exact channel.

    Raises
    ------
    ConfigError
        If a state vector is given without ``rng``.

    Examples
    --------
    >>> rho = StateVector.from_label("+").to_density_matrix()
    >>> apply_noise(rho, NoiseModel("dephasing", 1.0), ["0"]).matrix.real.round(12).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    """
    qs = list(qubits)
    if model is None or model.strength == 0.0:
        return state
    kraus = model.kraus()
    if isinstance(state, DensityMatrix):
        for q in qs:
            state = state.apply_kraus(kraus, q)
        return state
    if rng is None:
        raise ConfigError("noise on a state vector is sampled: pass rng", field="rng")
    for q in qs:
        state = state.apply_kraus(kraus, q, rng)
    return state
