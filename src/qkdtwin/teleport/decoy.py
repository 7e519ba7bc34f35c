"""Decoy-photon eavesdropping check of the teleportation channel, simulated and analytic.

Before the channel particles travel, Alice inserts ``S`` decoy photons, each drawn uniformly
from ``{|0>, |1>, |+>, |->}``, at random positions of the sequence. After the receiver
confirms receipt, Alice announces positions and bases; the receiver measures every decoy in
its basis and they compare. Any mismatch reveals an eavesdropper (an ideal channel is
assumed, so honest errors do not occur).

Attacks on each particle Eve touches:

* :class:`ParticleInterceptResend` — Eve measures in Z or X (at random by default) and resends the
  eigenstate she found. A decoy is disturbed when her basis is wrong (1/2) *and* the
  resent state then gives the other result (1/2): error probability ``e = 1/4`` per attacked
  decoy. With a fixed basis the error is again ``1/4`` on average (1/2 on the decoys of the
  other basis, 0 on the rest).
* :class:`EntangleMeasure` — Eve couples an ancilla ``|0>_E`` with
  ``|0>|0>_E -> |0>|0>_E``, ``|1>|0>_E -> |1>(cos θ|0> + sin θ|1>)_E`` (a controlled
  ``RY(2θ)``, ``θ = strength · π/2``; ``strength = 1`` is a CNOT copy) and measures the
  ancilla in Z. Z decoys pass untouched; an X decoy flips with probability
  ``(1 - cos θ)/2``, so ``e = (1 - cos θ)/4`` while Eve guesses a Z-decoy bit with
  probability ``(1 + sin^2 θ)/2`` (information against disturbance).

Analytic results (``f`` is the fraction of particles Eve attacks):

* one decoy passes with probability ``1 - f e``; all ``S`` pass with ``(1 - f e)^S``, so Eve
  is detected with ``P_det(S) = 1 - (1 - f e)^S``; for full intercept-resend
  ``1 - (3/4)^S``;
* if Eve attacks ``n`` of the ``M + S`` particles of the sequence (she cannot tell decoys from
  channel particles), the number ``K`` of attacked decoys is hypergeometric and the attack
  goes unnoticed with ``E[(1 - e)^K]``; if every attacked particle is checked
  (``K = n``) this is ``(1 - e)^n = 0.75^n``.

The paper states ``1 - (25%)^S`` for the detection probability and ``0.75^N`` for an
``N``-bit attack: the second is right (as the probability that ``N`` checked particles all
pass), the first is not — ``25 %`` is the probability that one attacked decoy *reveals*
Eve, not that it lets her pass; see ``docs/teleport.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.teleport.gates import basis_unitary, controlled, ry
from qkdtwin.teleport.states import StateVector

__all__ = [
    "ATTACKS",
    "DECOY_STATES",
    "Attack",
    "DetectionEstimate",
    "EntangleMeasure",
    "ParticleInterceptResend",
    "decoy_round",
    "detection_curve",
    "detection_probability",
    "error_probability",
    "eve_guess_probability",
    "outcome_table",
    "paper_detection_probability",
    "paper_unnoticed_probability",
    "parse_eve_attack",
    "simulate_detection",
    "simulate_unnoticed",
    "unnoticed_probability",
]

#: The decoy states, in the order used by :func:`outcome_table`: basis and bit of each.
DECOY_STATES: tuple[str, ...] = ("0", "1", "+", "-")
_DECOY_BASIS = ("z", "z", "x", "x")
_DECOY_BIT = (0, 1, 0, 1)
#: Attack names accepted by :func:`parse_eve_attack`.
ATTACKS: tuple[str, ...] = ("entangle-measure", "intercept-resend")
_CHUNK = 1 << 20  # decoys sampled per chunk: bounded memory whatever trials * S


@dataclass(frozen=True)
class ParticleInterceptResend:
    """Measure each attacked particle in Z or X and resend the eigenstate found.

    Parameters
    ----------
    basis
        ``"random"`` (Z or X with probability 1/2 each), ``"z"`` or ``"x"``.
    fraction
        Probability that Eve attacks a given particle, in [0, 1].
    """

    basis: str = "random"
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.basis not in ("random", "z", "x"):
            raise UnknownNameError(
                f"intercept-resend basis must be random, z or x, got {self.basis!r}",
                field="basis",
                value=self.basis,
                allowed="random, z, x",
            )
        object.__setattr__(self, "fraction", v.probability("attack fraction", self.fraction))

    def settings(self) -> tuple[tuple[float, str], ...]:
        """Eve's basis choices and their probabilities."""
        if self.basis == "random":
            return ((0.5, "z"), (0.5, "x"))
        return ((1.0, self.basis),)

    def describe(self) -> str:
        """``intercept-resend:BASIS`` as typed on the command line."""
        return f"intercept-resend:{self.basis}"


@dataclass(frozen=True)
class EntangleMeasure:
    """Entangle an ancilla with each attacked particle and measure the ancilla in Z.

    Parameters
    ----------
    strength
        Interaction strength ``s`` in [0, 1]; the coupling angle is ``θ = s π/2``
        (``s = 1``: a CNOT onto the ancilla).
    fraction
        Probability that Eve attacks a given particle, in [0, 1].
    """

    strength: float = 1.0
    fraction: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", v.probability("attack strength", self.strength))
        object.__setattr__(self, "fraction", v.probability("attack fraction", self.fraction))

    @property
    def theta(self) -> float:
        """Coupling angle ``θ = strength · π/2`` (radians)."""
        return self.strength * math.pi / 2

    def settings(self) -> tuple[tuple[float, str], ...]:
        """One setting: the ancilla is always measured in Z."""
        return ((1.0, "z"),)

    def describe(self) -> str:
        """``entangle-measure:STRENGTH`` as typed on the command line."""
        return f"entangle-measure:{self.strength:g}"


Attack = ParticleInterceptResend | EntangleMeasure


def parse_eve_attack(spec: str | None, fraction: float = 1.0) -> Attack:
    """Parse ``intercept-resend[:random|z|x]`` or ``entangle-measure[:STRENGTH]``.

    Raises
    ------
    UnknownNameError
        If the attack or the basis is unknown.
    ConfigError
        If the strength or fraction is not a number in [0, 1].

    Examples
    --------
    >>> parse_eve_attack("intercept-resend")
    ParticleInterceptResend(basis='random', fraction=1.0)
    >>> parse_eve_attack("entangle-measure:0.5").theta == np.pi / 4
    True
    """
    text = (spec or "intercept-resend").strip().lower()
    name, _, arg = text.partition(":")
    if name in ("intercept-resend", "ir"):
        return ParticleInterceptResend(arg or "random", fraction)
    if name in ("entangle-measure", "em"):
        if not arg:
            return EntangleMeasure(1.0, fraction)
        try:
            s = float(arg)
        except ValueError:
            raise ConfigError(
                f"entangle-measure strength must be a number in [0, 1], got {arg!r}",
                field="attack",
                value=spec,
                allowed="[0, 1]",
            ) from None
        return EntangleMeasure(s, fraction)
    raise UnknownNameError(
        f"unknown attack {spec!r}; choose one of {', '.join(ATTACKS)}",
        field="attack",
        value=spec,
        allowed=", ".join(ATTACKS),
    )


def _decoy(d: int, label: str = "d") -> StateVector:
    return StateVector.from_label(DECOY_STATES[d], [label])


@functools.lru_cache(maxsize=64)
def outcome_table(attack: Attack) -> NDArray[np.float64]:
    """Exact joint probabilities ``P(e, r | decoy d, Eve's setting s)`` from the engine.

    ``e`` is Eve's measurement result, ``r = 1`` when the receiver's result in the decoy's
    basis differs from the decoy's bit. Computed by enumerating the measurement branches of
    :class:`~qkdtwin.teleport.states.StateVector` (Born rule, no sampling).

    Returns
    -------
    ndarray, shape (4, n_settings, 2, 2)
        Indexed ``[d, s, e, r]`` with ``d`` in :data:`DECOY_STATES` order; sums to 1 over
        ``(e, r)``.

    Examples
    --------
    >>> t = outcome_table(ParticleInterceptResend())
    >>> round(float(t[2, 0].sum(axis=0)[1]), 12)  # |+> measured by Eve in Z: error 1/2
    0.5
    """
    settings = attack.settings()
    out = np.zeros((4, len(settings), 2, 2))
    for d in range(4):
        basis, bit = _DECOY_BASIS[d], _DECOY_BIT[d]
        for si, (_, eve_basis) in enumerate(settings):
            if isinstance(attack, ParticleInterceptResend):
                for eb in _decoy(d).branches(["d"], eve_basis, discard=False):
                    resent = StateVector(basis_unitary(eve_basis, 1)[:, eb.outcome], ["d"])
                    pr = resent.probabilities(["d"], basis)
                    out[d, si, eb.outcome, 0] += eb.probability * pr[bit]
                    out[d, si, eb.outcome, 1] += eb.probability * pr[1 - bit]
            else:
                joint = _decoy(d).tensor_product(StateVector.zero(["E"]))
                joint = joint.apply(controlled(ry(2 * attack.theta)), ["d", "E"])
                for rb in joint.branches(["d"], basis):
                    pe = rb.state.probabilities(["E"], "z")
                    r = int(rb.outcome != bit)
                    out[d, si, :, r] += rb.probability * pe
    out.flags.writeable = False
    return out


def decoy_round(decoy: int, attack: Attack | None, rng: np.random.Generator) -> tuple[int, int]:
    """One decoy through Eve and the receiver, every measurement sampled by the engine.

    Returns
    -------
    eve_result, error : int
        Eve's result (``-1`` when she did not attack) and 1 if the receiver's result
        differs from the decoy's bit.

    Raises
    ------
    ConfigError
        If ``decoy`` is not 0..3.

    Examples
    --------
    >>> decoy_round(2, None, np.random.default_rng(0))
    (-1, 0)
    """
    if decoy not in range(4):
        raise ConfigError(
            f"decoy must be 0..3 ({', '.join(DECOY_STATES)}), got {decoy!r}",
            field="decoy",
            value=decoy,
        )
    basis, bit = _DECOY_BASIS[decoy], _DECOY_BIT[decoy]
    state = _decoy(decoy)
    if attack is None or rng.random() >= attack.fraction:
        m, _ = state.measure(["d"], rng, basis, discard=False)
        return -1, int(m != bit)
    probs = [p for p, _ in attack.settings()]
    eve_basis = attack.settings()[int(rng.choice(len(probs), p=probs))][1]
    if isinstance(attack, ParticleInterceptResend):
        e, _ = state.measure(["d"], rng, eve_basis, discard=False)
        resent = StateVector(basis_unitary(eve_basis, 1)[:, e], ["d"])
        m, _ = resent.measure(["d"], rng, basis, discard=False)
        return e, int(m != bit)
    joint = state.tensor_product(StateVector.zero(["E"]))
    joint = joint.apply(controlled(ry(2 * attack.theta)), ["d", "E"])
    m, rest = joint.measure(["d"], rng, basis)
    e, _ = rest.measure(["E"], rng, "z", discard=False)
    return e, int(m != bit)


def error_probability(attack: Attack) -> float:
    """Return the analytic probability that one decoy shows an error.

    ``f/4`` for intercept-resend (any basis choice), ``f (1 - cos θ)/4`` for
    entangle-and-measure.

    Examples
    --------
    >>> error_probability(ParticleInterceptResend())
    0.25
    """
    if isinstance(attack, ParticleInterceptResend):
        return attack.fraction / 4.0
    return attack.fraction * (1.0 - math.cos(attack.theta)) / 4.0


def eve_guess_probability(attack: Attack) -> float:
    """Analytic probability that Eve's result equals the bit of an attacked decoy.

    Intercept-resend: ``1/2 · 1 + 1/2 · 1/2 = 3/4`` (random basis; also 3/4 for a fixed
    basis). Entangle-and-measure: ``(1 + sin^2 θ)/4 + 1/4`` — Z decoys are guessed with
    ``(1 + sin^2 θ)/2``, X decoys with 1/2.

    Examples
    --------
    >>> eve_guess_probability(ParticleInterceptResend())
    0.75
    """
    if isinstance(attack, ParticleInterceptResend):
        return 0.75
    return (1.0 + math.sin(attack.theta) ** 2) / 4.0 + 0.25


def _check_count(name: str, n: int, low: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < low:
        raise ConfigError(
            f"{name} must be a whole number >= {low}, got {n!r}",
            field=name,
            value=n,
            allowed=f">= {low}",
        )
    return int(n)


def detection_probability(decoys: int, attack: Attack | None = None) -> float:
    """Analytic probability that Eve is detected with ``decoys`` decoys: ``1 - (1 - f e)^S``.

    Examples
    --------
    >>> round(detection_probability(4), 6)  # 1 - (3/4)^4
    0.683594
    """
    s = _check_count("decoys", decoys, 0)
    return 1.0 - (1.0 - error_probability(attack or ParticleInterceptResend())) ** s


def paper_detection_probability(decoys: int) -> float:
    """Return the paper's claim ``1 - (25%)^S`` (kept for comparison; it is not right).

    Examples
    --------
    >>> paper_detection_probability(1)
    0.75
    """
    s = _check_count("decoys", decoys, 0)
    return 1.0 - 0.25**s


def paper_unnoticed_probability(bits: int) -> float:
    """Return the paper's ``0.75^N``: an intercept-resend on ``N`` checked bits passes.

    Examples
    --------
    >>> paper_unnoticed_probability(2)
    0.5625
    """
    n = _check_count("bits", bits, 0)
    return 0.75**n


def unnoticed_probability(
    attacked: int, *, message: int, decoys: int, attack: Attack | None = None
) -> float:
    """Analytic probability that Eve attacking ``attacked`` random positions goes unnoticed.

    The sequence has ``message`` channel particles and ``decoys`` decoys in random order;
    Eve attacks ``attacked`` positions chosen uniformly (she cannot tell decoys apart). The
    number ``K`` of attacked decoys is hypergeometric, and the attack passes with
    ``sum_k P(K = k) (1 - e)^k`` (``e`` from :func:`error_probability` with ``fraction = 1``).

    Raises
    ------
    ConfigError
        If a count is negative or ``attacked > message + decoys``.

    Examples
    --------
    >>> round(unnoticed_probability(10, message=0, decoys=10), 6)  # all attacked are checked
    0.056314
    """
    n = _check_count("attacked", attacked, 0)
    m = _check_count("message", message, 0)
    s = _check_count("decoys", decoys, 0)
    if n > m + s:
        raise ConfigError(
            f"attacked ({n}) exceeds the sequence length ({m + s})",
            field="attacked",
            value=n,
            allowed=f"<= {m + s}",
        )
    a = attack or ParticleInterceptResend()
    e = error_probability(_full(a))
    k = np.arange(0, min(n, s) + 1)
    pk = stats.hypergeom.pmf(k, m + s, s, n)
    return float(np.sum(pk * (1.0 - e) ** k))


def _full(attack: Attack) -> Attack:
    if isinstance(attack, ParticleInterceptResend):
        return ParticleInterceptResend(attack.basis, 1.0)
    return EntangleMeasure(attack.strength, 1.0)


class DetectionPoint(TypedDict):
    """JSON-ready form of a :class:`DetectionEstimate` (:meth:`DetectionEstimate.to_dict`).

    ``paper`` only when asked for; ``eve_guess_rate`` only when some decoy was attacked.
    """

    decoys: int
    detection_probability: float
    stderr: float
    analytic: float
    trials: int
    paper: NotRequired[float]
    eve_guess_rate: NotRequired[float]


@dataclass(frozen=True)
class DetectionEstimate:
    """Monte Carlo estimate of a detection (or unnoticed) probability.

    Attributes
    ----------
    decoys
        Number of decoys ``S``.
    trials
        Number of simulated rounds.
    detected
        Rounds in which at least one decoy showed an error.
    analytic
        The analytic detection probability for comparison.
    eve_guess_rate
        Fraction of attacked decoys whose bit Eve's result matches (``nan`` if none).
    """

    decoys: int
    trials: int
    detected: int
    analytic: float
    eve_guess_rate: float

    @property
    def probability(self) -> float:
        """Estimated detection probability ``detected / trials``."""
        return self.detected / self.trials

    @property
    def stderr(self) -> float:
        """Binomial standard error of :attr:`probability`."""
        p = self.probability
        return math.sqrt(p * (1 - p) / self.trials)

    def to_dict(self, *, paper: bool = True) -> DetectionPoint:
        """JSON-ready point: ``decoys, detection_probability, stderr, analytic, paper``."""
        out: DetectionPoint = {
            "decoys": self.decoys,
            "detection_probability": self.probability,
            "stderr": self.stderr,
            "analytic": self.analytic,
            "trials": self.trials,
        }
        if paper:
            out["paper"] = paper_detection_probability(self.decoys)
        if math.isfinite(self.eve_guess_rate):
            out["eve_guess_rate"] = self.eve_guess_rate
        return out


def _sample_errors(
    attack: Attack, attacked_mask: NDArray[np.bool_], rng: np.random.Generator
) -> tuple[NDArray[np.bool_], int, int]:
    """Errors of decoys (shape of ``attacked_mask``), and Eve's (correct guesses, attacks)."""
    table = outcome_table(attack)
    settings = attack.settings()
    shape = attacked_mask.shape
    d = rng.integers(0, 4, size=shape)
    s = rng.choice(len(settings), size=shape, p=[p for p, _ in settings])
    cdf = np.cumsum(table.reshape(4, len(settings), 4), axis=-1)[d, s]
    u = rng.random(shape)
    idx = np.minimum((u[..., None] >= cdf).sum(axis=-1), 3)
    eve, err = idx >> 1, (idx & 1).astype(bool)
    err &= attacked_mask
    bits = np.asarray(_DECOY_BIT)[d]
    guessed = int(np.count_nonzero((eve == bits) & attacked_mask))
    return err, guessed, int(np.count_nonzero(attacked_mask))


def simulate_detection(
    decoys: int, trials: int, rng: np.random.Generator, attack: Attack | None = None
) -> DetectionEstimate:
    """Monte Carlo of the decoy check: how often ``decoys`` decoys reveal Eve.

    Each round draws ``decoys`` decoy states, lets Eve attack each with probability
    ``fraction`` and samples Eve's and the receiver's results from the engine's exact
    joint distribution (:func:`outcome_table`); the round detects Eve when any decoy is
    wrong.

    Parameters
    ----------
    decoys
        ``S >= 0``.
    trials
        Rounds, >= 1.
    rng
        Random source.
    attack
        Default: full intercept-resend in a random basis.

    Raises
    ------
    ConfigError
        If ``decoys < 0`` or ``trials < 1``.

    Examples
    --------
    >>> est = simulate_detection(4, 20000, np.random.default_rng(1))
    >>> abs(est.probability - est.analytic) < 5 * est.stderr
    True
    """
    s = _check_count("decoys", decoys, 0)
    n = _check_count("trials", trials, 1)
    a = attack or ParticleInterceptResend()
    detected = guessed = attacked = 0
    if s > 0:
        per = max(1, _CHUNK // s)
        done = 0
        while done < n:
            k = min(per, n - done)
            mask = rng.random((k, s)) < a.fraction
            err, g, t = _sample_errors(a, mask, rng)
            detected += int(np.count_nonzero(err.any(axis=1)))
            guessed, attacked = guessed + g, attacked + t
            done += k
    rate = guessed / attacked if attacked else math.nan
    return DetectionEstimate(s, n, detected, detection_probability(s, a), rate)


def detection_curve(
    decoys: Sequence[int], trials: int, rng: np.random.Generator, attack: Attack | None = None
) -> list[DetectionEstimate]:
    """:func:`simulate_detection` for each ``S`` in ``decoys``."""
    return [simulate_detection(int(s), trials, rng, attack) for s in decoys]


def simulate_unnoticed(
    attacked: int,
    *,
    message: int,
    decoys: int,
    trials: int,
    rng: np.random.Generator,
    attack: Attack | None = None,
) -> DetectionEstimate:
    """Monte Carlo of an attack on ``attacked`` random positions of a mixed sequence.

    Each round shuffles ``message`` channel particles and ``decoys`` decoys, lets Eve attack
    the first ``attacked`` positions (equivalent to a random choice), and checks the decoys.
    The returned :attr:`DetectionEstimate.probability` is the *detection* probability;
    ``1 - probability`` estimates :func:`unnoticed_probability`, stored in ``analytic`` as
    ``1 - unnoticed``.

    Raises
    ------
    ConfigError
        If a count is out of range.
    """
    n = _check_count("attacked", attacked, 0)
    m = _check_count("message", message, 0)
    s = _check_count("decoys", decoys, 0)
    t = _check_count("trials", trials, 1)
    if n > m + s:
        raise ConfigError(
            f"attacked ({n}) exceeds the sequence length ({m + s})",
            field="attacked",
            value=n,
            allowed=f"<= {m + s}",
        )
    a = _full(attack or ParticleInterceptResend())
    detected = guessed = hit = 0
    per = max(1, _CHUNK // max(1, m + s))
    done = 0
    while done < t:
        k = min(per, t - done)
        # decoy positions: the S smallest of M+S random keys; Eve attacks positions 0..n-1
        order = np.argsort(rng.random((k, m + s)), axis=1)
        is_decoy = order < s
        attacked_decoys = np.count_nonzero(is_decoy[:, :n], axis=1)
        mask = np.arange(s)[None, :] < attacked_decoys[:, None] if s else np.zeros((k, 0), bool)
        if s:
            err, g, h = _sample_errors(a, mask, rng)
            detected += int(np.count_nonzero(err.any(axis=1)))
            guessed, hit = guessed + g, hit + h
        done += k
    analytic = 1.0 - unnoticed_probability(n, message=m, decoys=s, attack=a)
    return DetectionEstimate(s, t, detected, analytic, guessed / hit if hit else math.nan)
