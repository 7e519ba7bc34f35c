"""Service counts over a trailing window: the live twin's "last minute" and "last hour".

A success rate counted since start-up stays at 100 % long after five pools were cut: the
dashboard shows the rate over the last minute and the last hour beside it, and a what-if is
compared with the live window of its own horizon. :class:`CountWindow` keeps snapshots of the
cumulative per-pool request and success counters and answers a window by differencing the
newest snapshot with the oldest one inside the window.

Memory is bounded whatever the run's length: one snapshot per tick for the last ``fine_s``
seconds, then one per ``coarse_every_s`` up to ``max_age_s``. A window longer than ``fine_s``
therefore starts at a coarse snapshot, up to ``coarse_every_s`` later than asked; the window
reports the seconds it actually covers (``lived_s``), never the ones asked for.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["CountWindow", "WindowCounts"]


@dataclass(frozen=True)
class WindowCounts:
    """Requests and successes per pool over a trailing window.

    Attributes
    ----------
    lived_s
        Seconds the window actually covers (less than asked early in a run, or by up to one
        coarse step for long windows).
    requests, successes
        Per pool, in the key network's pool order.
    """

    lived_s: float
    requests: NDArray[np.int64]
    successes: NDArray[np.int64]

    @property
    def success_rate(self) -> float | None:
        """Served over requested in the window, all pools (``None`` without a request)."""
        req = int(self.requests.sum())
        return int(self.successes.sum()) / req if req else None

    def pool_rate(self, i: int) -> float | None:
        """Return served over requested in the window for pool ``i`` (``None``: no request)."""
        req = int(self.requests[i])
        return int(self.successes[i]) / req if req else None


class CountWindow:
    """Snapshots of cumulative per-pool counters, differenced over trailing windows.

    Parameters
    ----------
    n_pools
        Number of pools (the counters' length).
    t0
        Simulated time of the zero snapshot, s.
    fine_s
        Keep every snapshot this many seconds back.
    coarse_every_s, max_age_s
        Older snapshots are thinned to one per ``coarse_every_s`` and dropped past
        ``max_age_s`` (the longest window answered exactly to that resolution).
    """

    def __init__(
        self,
        n_pools: int,
        t0: float = 0.0,
        *,
        fine_s: float = 120.0,
        coarse_every_s: float = 30.0,
        max_age_s: float = 3600.0,
    ) -> None:
        if not (0 < fine_s <= max_age_s and coarse_every_s > 0):
            raise ValueError("need 0 < fine_s <= max_age_s and coarse_every_s > 0")
        self.fine_s, self.coarse_every_s, self.max_age_s = fine_s, coarse_every_s, max_age_s
        zero = np.zeros(n_pools, dtype=np.int64)
        self._fine: deque[tuple[float, NDArray[np.int64], NDArray[np.int64]]] = deque()
        self._coarse: deque[tuple[float, NDArray[np.int64], NDArray[np.int64]]] = deque()
        self._fine.append((t0, zero, zero))

    def record(
        self, t: float, requests: NDArray[np.integer], successes: NDArray[np.integer]
    ) -> None:
        """Add the cumulative counters at simulated time ``t`` (s, non-decreasing)."""
        self._fine.append((t, np.array(requests, dtype=np.int64), np.array(successes, np.int64)))
        while len(self._fine) > 1 and self._fine[0][0] < t - self.fine_s:
            old = self._fine.popleft()
            if not self._coarse or old[0] >= self._coarse[-1][0] + self.coarse_every_s:
                self._coarse.append(old)
        while self._coarse and self._coarse[0][0] < t - self.max_age_s:
            self._coarse.popleft()

    def over(self, seconds: float) -> WindowCounts:
        """Return the counts over the last ``seconds`` (or as much of them as was recorded)."""
        t, req, succ = self._fine[-1]
        start = t - seconds
        base = None
        for snap in self._coarse:
            if snap[0] >= start:
                base = snap
                break
        if base is None:
            base = next((s for s in self._fine if s[0] >= start), self._fine[-1])
        return WindowCounts(t - base[0], req - base[1], succ - base[2])
