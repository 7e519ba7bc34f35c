"""The physical layer of the live twin: one QKD link engine per topology link, run in blocks.

Cost model (why the blocks are *sampled*). The pulse-by-pulse engine
(:func:`qkdtwin.qkd.simulate_link`) runs at ~5x10^7 pulses/s; a GYS link at 2 MHz produces
2x10^6 pulses per second of simulated time, so running every pulse of 100 links would cost
several cores. The twin therefore separates *calibration* from *blocks*:

* **Calibration** runs the real engine on ``calibration_pulses`` pulses of the link, with the
  current attack, and records its sifted bits per pulse ``s``, its QBER ``q`` and its secret key
  rate (bit/s, from the simulated statistics with the protocol's key-rate formula, so an
  eavesdropper's information is paid for by privacy amplification). A link is calibrated at
  start, at once when an attack is injected or cleared, and otherwise in round robin, one link
  per tick.
* **A block** of ``dt`` simulated seconds has ``n = f_rep dt`` pulses; its sifted bits
  ``N ~ Binomial(n, s)`` and errors ``E ~ Binomial(N, q)`` are drawn from the calibrated law
  (two draws per link per block: microseconds), and it yields ``R dt`` bits of secret key.

The alarm QBER of a link is the QBER of its most recent blocks that together hold at least
``min_bits`` sifted bits (at least one block), newest first: a real QKD system estimates the QBER
on a sample of sifted bits the same way.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from qkdtwin.errors import ConfigError, QkdTwinError
from qkdtwin.network.topology import link_id
from qkdtwin.qkd import (
    Attack,
    InterceptResend,
    NoAttack,
    PhotonNumberSplitting,
    build_link_model,
    simulate_link,
)
from qkdtwin.qkd.protocols import canonical_protocol

__all__ = [
    "ATTACK_TYPES",
    "Block",
    "LinkDescription",
    "LinkEngine",
    "PostprocessFailure",
    "PostprocessSummary",
    "link_id",
    "make_attack",
    "windowed_qber",
]

#: Attack types the twin can inject, by the name used in the API and the CLI.
ATTACK_TYPES = ("intercept-resend", "pns")


def make_attack(kind: str, fraction: float = 1.0) -> Attack:
    """Build an attack from its API name and the attacked fraction of pulses.

    Raises
    ------
    ConfigError
        ``field="type"`` for an unknown type, ``field="fraction"`` outside [0, 1].
    """
    if kind in ATTACK_TYPES and not (0.0 <= float(fraction) <= 1.0):
        raise ConfigError(
            f"fraction must be in [0, 1], got {fraction!r}",
            field="fraction",
            value=fraction,
            allowed="[0, 1]",
        )
    if kind == "intercept-resend":
        return InterceptResend(float(fraction))
    if kind == "pns":
        return PhotonNumberSplitting(float(fraction))
    raise ConfigError(
        f"unknown attack type {kind!r}; known: {', '.join(ATTACK_TYPES)}",
        field="type",
        value=kind,
        allowed=", ".join(ATTACK_TYPES),
    )


@dataclass(frozen=True)
class Block:
    """Statistics of one block of a link.

    Attributes
    ----------
    t
        Simulated time at the end of the block, s.
    pulses
        Pulses sent in the block.
    sifted, errors
        Sifted bits of the key class and how many of them differ between Alice and Bob.
    key_bits
        Secret key produced, bits (before the twin decides whether to use it).
    detected
        Pulses with at least one click at Bob, all intensity classes (``>= sifted``).
    """

    t: float
    pulses: int
    sifted: int
    errors: int
    key_bits: float
    detected: int = 0

    @property
    def qber(self) -> float:
        """Errors over sifted bits (NaN without sifted bits)."""
        return self.errors / self.sifted if self.sifted else float("nan")


def windowed_qber(blocks: list[Block] | deque[Block], min_bits: int) -> float:
    """QBER of the newest blocks that hold at least ``min_bits`` sifted bits (>= one block).

    This is the quantity the alarm compares with the threshold; tests recompute it from the
    block history.

    Examples
    --------
    >>> bs = [Block(1, 10, 1000, 30, 0.0), Block(2, 10, 400, 100, 0.0)]
    >>> round(windowed_qber(bs, 300), 3), round(windowed_qber(bs, 1000), 3)
    (0.25, 0.093)
    """
    s = e = 0
    for b in reversed(blocks):
        s += b.sifted
        e += b.errors
        if s >= min_bits:
            break
    return e / s if s else float("nan")


class LinkDescription(TypedDict):
    """The static description of a link for the API (:meth:`LinkEngine.describe`)."""

    id: str
    a: str
    b: str
    protocol: str
    preset: str
    length_km: float
    qber_threshold: float
    repetition_rate_hz: float


class PostprocessSummary(TypedDict):
    """Outcome of the classical chain on a calibration run (:attr:`LinkEngine.postprocessed`)."""

    sifted_bits: int
    key_bits_in: int
    qber_estimate: float
    leaked_bits: int
    verified: bool
    keys_identical: bool
    final_key_bits: int
    aborted: bool
    abort_reason: str | None
    elapsed_ms: float


class PostprocessFailure(TypedDict):
    """The classical chain failed on a calibration run: why."""

    error: str


@dataclass
class LinkEngine:
    """One QKD link of the twin: physics, current attack, calibration and recent blocks.

    Parameters
    ----------
    a, b
        End nodes.
    protocol, preset, length_km
        Physical description (see :func:`qkdtwin.qkd.build_link_model`).
    qber_threshold
        Alarm threshold on the windowed QBER (fraction).
    calibration_pulses
        Pulses per engine run.
    min_bits
        Sifted bits pooled for the alarm QBER.
    """

    a: str
    b: str
    protocol: str
    preset: str
    length_km: float
    qber_threshold: float
    calibration_pulses: int
    min_bits: int = 1000
    attack: Attack = field(default_factory=NoAttack)
    sift_per_pulse: float = 0.0
    detect_per_pulse: float = 0.0
    qber: float = 0.0
    key_rate_bps: float = 0.0
    calibrations: int = 0
    postprocessed: PostprocessSummary | PostprocessFailure | None = None
    blocks: deque[Block] = field(default_factory=lambda: deque(maxlen=64))

    def __post_init__(self) -> None:
        self._id = link_id(self.a, self.b)
        self.protocol = canonical_protocol(self.protocol)
        try:
            self.model = build_link_model(self.protocol, self.length_km, self.preset)
        except QkdTwinError as exc:
            raise ConfigError(
                f"link {self.id}: {exc}", field=f"twin.links.{self.id}", value=self.length_km
            ) from None

    @property
    def id(self) -> str:
        """Canonical link id (:func:`link_id`; the ends never change)."""
        return self._id

    @property
    def repetition_rate_hz(self) -> float:
        """Pulses per second of simulated time."""
        return float(self.model.repetition_rate_hz)

    def set_attack(self, attack: Attack) -> None:
        """Set Eve's strategy (``NoAttack()`` to clear); recalibrate before the next block.

        Raises
        ------
        ConfigError
            If the protocol does not support the attack (entanglement-based links).
        """
        if not isinstance(attack, NoAttack) and self.protocol in ("bbm92", "e91"):
            raise ConfigError(
                f"link {self.id} runs {self.protocol}; attacks are simulated for "
                "prepare-and-measure protocols only",
                field="type",
                value=attack.describe(),
            )
        self.attack = attack

    def calibrate(self, rng: np.random.Generator, *, postprocess: bool = False) -> None:
        """Run the link engine once with the current attack and record its statistics.

        A run with too few detections for the decoy estimates is retried with four times the
        pulses (up to twice). With ``postprocess`` the run's sifted bits also go through the
        classical chain (:func:`qkdtwin.qkd.postprocess.postprocess`: parameter estimation,
        Cascade, verification, finite-key privacy amplification) and its outcome is kept in
        :attr:`postprocessed` (at this block size the finite-key length is usually 0: the
        twin's key rate comes from the asymptotic formula on the run's statistics).

        Raises
        ------
        ConfigError
            If the link yields no statistics even then (e.g. far beyond its reach).
        """
        pulses = self.calibration_pulses
        for _ in range(3):
            try:
                res = simulate_link(
                    self.protocol,
                    self.model,
                    pulses,
                    rng,
                    attack=self.attack,
                    keep_bits=postprocess,
                )
            except ConfigError:
                pulses *= 4
                continue
            if res.sifted_bits > 0:
                self.sift_per_pulse = res.sifted_bits / res.pulses
                self.detect_per_pulse = max(res.detections, res.sifted_bits) / res.pulses
                self.qber = float(res.qber)
                self.key_rate_bps = max(0.0, float(res.secret_key_rate_bps))
                self.calibrations += 1
                if postprocess:
                    self._postprocess(res, rng)
                return
            pulses *= 4
        raise ConfigError(
            f"link {self.id} ({self.protocol}, {self.length_km:g} km) gives no sifted key",
            field=f"twin.links.{self.id}.length_km",
            value=self.length_km,
        )

    def _postprocess(self, res: Any, rng: np.random.Generator) -> None:
        from qkdtwin.qkd.postprocess import postprocess

        try:
            pp = postprocess(res, self.model, rng)
        except QkdTwinError as exc:
            self.postprocessed = {"error": str(exc)}
            return
        self.postprocessed = {
            "sifted_bits": pp.sifted_bits,
            "key_bits_in": pp.key_bits_in,
            "qber_estimate": pp.qber_estimate,
            "leaked_bits": pp.leaked_bits,
            "verified": pp.verified,
            "keys_identical": pp.keys_identical,
            "final_key_bits": pp.final_key_bits,
            "aborted": pp.aborted,
            "abort_reason": pp.abort_reason,
            "elapsed_ms": pp.elapsed_s * 1e3,
        }

    def run_block(self, t: float, dt: float, rng: np.random.Generator) -> Block:
        """Sample one block of ``dt`` simulated seconds ending at ``t``.

        Detections are binomial in the pulses with the calibrated detection probability, the
        sifted bits binomial in the detections (their thinning: the same law as sampling them
        from the pulses directly), the errors binomial in the sifted bits. The block is *not*
        kept: what the twin knows of a link arrives through its ingest (:meth:`observe`).
        """
        pulses = round(self.repetition_rate_hz * dt)
        p_det = min(1.0, self.detect_per_pulse)
        detected = int(rng.binomial(pulses, p_det))
        p_sift = min(1.0, self.sift_per_pulse / p_det) if p_det > 0 else 0.0
        sifted = int(rng.binomial(detected, p_sift)) if detected else 0
        errors = int(rng.binomial(sifted, min(1.0, max(0.0, self.qber)))) if sifted else 0
        return Block(t, pulses, sifted, errors, self.key_rate_bps * dt, detected)

    def observe(self, blk: Block) -> None:
        """Keep one block as the twin observed it (the ingest's released telemetry)."""
        self.blocks.append(blk)

    def window_blocks(self) -> int:
        """Return the number of newest blocks the alarm QBER pools (at least one)."""
        s = 0
        for k, b in enumerate(reversed(self.blocks), start=1):
            s += b.sifted
            if s >= self.min_bits:
                return k
        return max(1, len(self.blocks))

    def alarm_qber(self) -> float:
        """Return the windowed QBER the alarm uses (:func:`windowed_qber` over the kept blocks)."""
        return windowed_qber(self.blocks, self.min_bits)

    def describe(self) -> LinkDescription:
        """Return the static description for the API."""
        return {
            "id": self.id,
            "a": self.a,
            "b": self.b,
            "protocol": self.protocol,
            "preset": self.preset,
            "length_km": self.length_km,
            "qber_threshold": self.qber_threshold,
            "repetition_rate_hz": self.repetition_rate_hz,
        }
