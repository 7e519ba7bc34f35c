"""Key pools: a store of capacity ``C`` per node pair, refilled lazily.

A pool's balance only changes at two kinds of instants: when a service takes keys, and when its
generation rate changes. Between them it grows at its rate until full, so the balance at time
``t`` follows from the balance at the last update: ``min(C, M + v (t - t_last))`` for fluid
generation, or ``min(C, M + N)`` with ``N ~ Poisson(v (t - t_last))`` for keys generated one by
one as a Poisson process (both exact: no time step). Keys that would exceed ``C`` are dropped
and counted, so that ``generated = consumed + stored + dropped - initial`` always holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypedDict

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["PoolAccounts", "PoolStats", "refill", "serve"]

#: Slack of the "holds at least X keys" test (fluid balances are sums of floats).
SERVE_EPS = 1e-9


class PoolAccounts(NamedTuple):
    """What the compiled event loops count per pool, added to in place.

    ``requests``, ``successes``: services asked for and served; ``consumed``, ``generated``,
    ``dropped``: keys; ``trace``: the served pool's balance after each of the first
    ``trace.size`` requests.
    """

    requests: NDArray[np.int64]
    successes: NDArray[np.int64]
    consumed: NDArray[np.float64]
    generated: NDArray[np.float64]
    dropped: NDArray[np.float64]
    trace: NDArray[np.float64]

    @classmethod
    def zeros(cls, pools: int, traced: int = 0) -> PoolAccounts:
        """Empty accounts for ``pools`` pools tracing ``traced`` requests."""
        return cls(
            np.zeros(pools, dtype=np.int64),
            np.zeros(pools, dtype=np.int64),
            np.zeros(pools),
            np.zeros(pools),
            np.zeros(pools),
            np.zeros(traced),
        )


@njit(cache=True, inline="always")
def serve(
    acc: PoolAccounts, i: int, p: int, balance: float, keys: float
) -> tuple[float, bool]:  # pragma: no cover - compiled
    """Request ``i`` asks pool ``p`` (holding ``balance``) for ``keys``; book it.

    Served only if the pool holds at least ``keys`` (no partial consumption). Returns the new
    balance and whether the request was served. One rule for every event loop.
    """
    acc.requests[p] += 1
    served = balance + SERVE_EPS >= keys
    if served:
        balance -= keys
        if balance < 0.0:
            balance = 0.0
        acc.successes[p] += 1
        acc.consumed[p] += keys
    if i < acc.trace.size:
        acc.trace[i] = balance
    return balance, served


def refill(
    level: float,
    rate: float,
    elapsed: float,
    capacity: float,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """Lazy refill of one pool; returns ``(new_level, generated, dropped)``.

    Parameters
    ----------
    level
        Balance at the last update, keys.
    rate
        Generation rate since then, keys per time unit.
    elapsed
        Time since the last update.
    capacity
        Pool capacity ``C``.
    rng
        ``None`` for fluid generation; a generator for Poisson key arrivals.

    Examples
    --------
    >>> refill(5.0, 2.0, 10.0, 20.0)
    (20.0, 20.0, 5.0)
    """
    gen = rate * elapsed if rng is None else float(rng.poisson(rate * elapsed))
    new = level + gen
    dropped = max(0.0, new - capacity)
    return min(new, capacity), gen, dropped


class PoolStatsDict(TypedDict):
    """Plain-data form of :class:`PoolStats` (:meth:`PoolStats.to_dict`)."""

    src: str
    dst: str
    hops: int
    requests: int
    successes: int
    blocked: int
    success_rate: float
    consumed: float
    generated: float
    dropped: float
    initial_level: float
    final_level: float
    mean_rate: float
    key_utilization: float | None


@dataclass(frozen=True)
class PoolStats:
    """Statistics of one pool over a run (keys and counts).

    Attributes
    ----------
    src, dst
        The node pair.
    hops
        Links on its relay path (1 = direct QKD link).
    requests, successes
        Service requests for this pair and how many were served.
    consumed, generated, dropped, final_level, initial_level
        Keys taken by services, delivered by the relay path, lost at capacity, left at the
        end, present at the start.
    mean_rate
        ``generated`` over the run time (keys per time unit delivered into the pool).
    """

    src: str
    dst: str
    hops: int
    requests: int
    successes: int
    consumed: float
    generated: float
    dropped: float
    final_level: float
    initial_level: float
    mean_rate: float

    @property
    def success_rate(self) -> float:
        """Served over requested (NaN without requests)."""
        return self.successes / self.requests if self.requests else float("nan")

    def to_dict(self) -> PoolStatsDict:
        """Plain-data form for JSON."""
        return {
            "src": self.src,
            "dst": self.dst,
            "hops": self.hops,
            "requests": self.requests,
            "successes": self.successes,
            "blocked": self.requests - self.successes,
            "success_rate": self.success_rate,
            "consumed": self.consumed,
            "generated": self.generated,
            "dropped": self.dropped,
            "initial_level": self.initial_level,
            "final_level": self.final_level,
            "mean_rate": self.mean_rate,
            "key_utilization": self.consumed / self.generated if self.generated > 0 else None,
        }
