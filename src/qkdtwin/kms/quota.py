"""Per-destination relay quotas: a key budget an operator (the twin's policy) sets on a KME.

A relayed key consumes one link key on every hop of its path (:mod:`qkdtwin.kms.relay`), so
the relays of one SAE pair can drain links that other pairs need, most of all after a link
is disabled and the relays take a longer detour. The twin's allocation policies plan *rates*
per pool (keys per second); a :class:`RelayQuota` applies such a rate at the KME where a relay
starts: a token bucket of ``keys_per_s`` tokens per second holding at most ``burst`` tokens,
one token per relayed key. A request that finds too few tokens is refused at once (ETSI 014
503 with ``Retry-After``), before any link key is consumed. Local and direct-link keys
(one hop, mirrored) are never limited: the quota applies to what crosses trusted nodes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qkdtwin.errors import ConfigError

__all__ = ["QuotaState", "RelayQuota"]


@dataclass(frozen=True)
class QuotaState:
    """A snapshot of one quota (for the operator interface)."""

    destination: str
    keys_per_s: float
    burst: int
    tokens: float
    granted_keys: int
    refused_requests: int


class RelayQuota:
    """Token bucket of relayed keys toward one destination KME.

    Parameters
    ----------
    destination
        The KME the relays go to.
    keys_per_s
        Refill rate, keys per second (>= 0; 0 stops relays to ``destination``).
    burst
        Most tokens held (>= 1); default one second of quota, at least 1 key. The bucket
        starts full.
    clock
        Monotonic clock, s (tests).

    Raises
    ------
    ConfigError
        For a negative or non-finite rate or a burst below 1.
    """

    def __init__(
        self,
        destination: str,
        keys_per_s: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(keys_per_s) or keys_per_s < 0:
            raise ConfigError(
                f"keys_per_s must be a finite number >= 0, got {keys_per_s}",
                field="keys_per_s",
                value=keys_per_s,
            )
        if burst is None:
            burst = max(1, math.ceil(keys_per_s))
        if burst < 1:
            raise ConfigError(f"burst must be >= 1, got {burst}", field="burst", value=burst)
        self.destination = destination
        self.keys_per_s = float(keys_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._at = clock()
        self.granted_keys = 0
        self.refused_requests = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.keys_per_s)
        self._at = now

    def take(self, keys: int) -> float:
        """Take ``keys`` tokens if the bucket holds them.

        Returns
        -------
        float
            0 when granted (the tokens are taken); else the seconds until the bucket would
            hold them (``inf`` when it never will: a request larger than ``burst``, or a
            zero rate), and nothing is taken.
        """
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= keys:
                self._tokens -= keys
                self.granted_keys += keys
                return 0.0
            self.refused_requests += 1
            if keys > self.burst or self.keys_per_s == 0:
                return math.inf
            return (keys - self._tokens) / self.keys_per_s

    def state(self) -> QuotaState:
        """Return the quota's settings, its tokens now and its counts."""
        with self._lock:
            self._refill(self._clock())
            return QuotaState(
                self.destination,
                self.keys_per_s,
                self.burst,
                self._tokens,
                self.granted_keys,
                self.refused_requests,
            )
