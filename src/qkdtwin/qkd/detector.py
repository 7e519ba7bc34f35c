"""Threshold single-photon detectors with dark counts, misalignment, dead time and afterpulses.

Bob (and, for entanglement-based protocols, Alice) measures with two threshold detectors, one
per outcome of the chosen basis. A detector only tells *click* or *no click*. A photon that
reaches Bob's measurement is detected with probability ``efficiency``; the optical
misalignment ``misalignment`` (``e_d``) is the probability that a detected photon of a
matching basis lands in the wrong detector. Each detector also clicks on its own with
probability ``dark_count_prob`` per gate, independently of the light. When both detectors
click, Bob assigns a random bit (the squashing model of Lütkenhaus, PRA 59, 3301 (1999)).

Optional non-idealities, off by default:

* ``dead_time_s``: after a registered click the detector ignores the following gates for
  ``dead_time_s`` seconds (non-paralysable);
* ``afterpulse_prob``: a registered click causes, with this probability, a spurious click in the
  first gate after the dead time (first-order afterpulsing, no cascade memory beyond that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qkdtwin import _validate as v

__all__ = ["ThresholdDetector"]


@dataclass(frozen=True)
class ThresholdDetector:
    """A pair of identical threshold detectors measuring one basis.

    Parameters
    ----------
    efficiency
        Detection efficiency including Bob's internal optics, in (0, 1].
    dark_count_prob
        Dark-count probability per gate of *one* detector, in [0, 1). The background yield
        ``Y0`` of the pair is ``1 - (1 - dark_count_prob)^2`` (about twice this value).
    misalignment
        Probability ``e_d`` that a photon hits the wrong detector of a matching basis, [0, 0.5].
    dead_time_s
        Dead time after each registered click, in seconds (>= 0).
    afterpulse_prob
        Probability that a registered click produces an afterpulse click, [0, 1).
    """

    efficiency: float
    dark_count_prob: float
    misalignment: float = 0.0
    dead_time_s: float = 0.0
    afterpulse_prob: float = 0.0

    def __post_init__(self) -> None:
        v.in_range("efficiency", self.efficiency, 0.0, 1.0, low_open=True)
        v.in_range("dark_count_prob", self.dark_count_prob, 0.0, 1.0, high_open=True)
        v.in_range("misalignment", self.misalignment, 0.0, 0.5)
        v.in_range("dead_time_s", self.dead_time_s, 0.0)
        v.in_range("afterpulse_prob", self.afterpulse_prob, 0.0, 1.0, high_open=True)

    @classmethod
    def from_background_yield(
        cls, efficiency: float, y0: float, misalignment: float = 0.0, **kwargs: float
    ) -> ThresholdDetector:
        """Build a detector pair whose combined background yield per gate is ``y0``.

        Published parameter sets quote ``Y0``, the probability that *either* detector fires
        with no signal; each detector then has ``1 - sqrt(1 - Y0)`` (about ``Y0 / 2``).
        """
        v.in_range("Y0", y0, 0.0, 1.0, high_open=True)
        pd = 1.0 - math.sqrt(1.0 - y0)
        return cls(efficiency, pd, misalignment, **kwargs)

    @property
    def background_yield(self) -> float:
        """``Y0``: probability that at least one of the two detectors clicks with no light."""
        return 1.0 - (1.0 - self.dark_count_prob) ** 2

    def dead_gates(self, repetition_rate_hz: float) -> int:
        """Return the number of gates blinded after a click at ``repetition_rate_hz``.

        Gate ``j`` after the click comes ``j / f`` later and is blind while ``j / f`` is less
        than the dead time ``tau``: ``ceil(tau f) - 1`` gates (a gate exactly at ``tau`` is
        live). 40 ns at 80 MHz (12.5 ns apart) blinds the gates at 12.5, 25 and 37.5 ns: 3.

        Examples
        --------
        >>> d = ThresholdDetector(0.9, 1e-6, dead_time_s=40e-9)
        >>> d.dead_gates(80e6), d.dead_gates(1e9), ThresholdDetector(0.9, 1e-6,
        ...     dead_time_s=5e-9).dead_gates(80e6)
        (3, 39, 0)
        """
        return max(0, math.ceil(self.dead_time_s * repetition_rate_hz - 1e-9) - 1)
