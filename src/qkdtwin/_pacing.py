"""A fixed-rate loop on a background thread, shared by the plant and the live twin."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["run_at_fixed_rate"]


class StopFlag(Protocol):
    """What the loop needs of its stop flag (a :class:`threading.Event`)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def run_at_fixed_rate(
    period_s: float,
    step: Callable[[], object],
    on_error: Callable[[Exception], None],
    stop: StopFlag,
    *,
    max_lag_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``step()`` every ``period_s`` wall seconds until ``stop`` is set.

    The schedule is fixed (``t0``, ``t0 + period_s``, ...), so a late step does not shift the
    next ones. A step that overruns its slot is made up while the loop is at most
    ``max_lag_s`` behind its schedule: the next steps run back to back until they are on the
    schedule again, so the mean rate stays one step per ``period_s`` through an occasional
    long step (a full garbage collection of a large twin takes a few periods). Further
    behind, the schedule starts again from now (no burst of catch-up steps after a stall);
    ``max_lag_s=0`` (the default) always starts again. An exception of ``step`` goes to
    ``on_error`` and the loop goes on. ``clock`` is the monotonic clock, seconds.
    """
    nxt = clock()
    while not stop.is_set():
        try:
            step()
        except Exception as exc:  # the loop outlives a failed step: the caller reports it
            on_error(exc)
        nxt += period_s
        now = clock()
        delay = nxt - now
        if delay < 0:
            if -delay > max_lag_s:
                nxt = now
            delay = 0.0
        stop.wait(delay)
