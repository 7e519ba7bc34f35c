"""A fixed-rate loop on a background thread, shared by the plant and the live twin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["run_at_fixed_rate"]


def run_at_fixed_rate(
    period_s: float,
    step: Callable[[], object],
    on_error: Callable[[Exception], None],
    stop: threading.Event,
) -> None:
    """Call ``step()`` every ``period_s`` wall seconds until ``stop`` is set.

    The schedule is fixed (``t0``, ``t0 + period_s``, ...), so a late step does not shift the
    next ones; a step that overruns its slot starts the schedule again from now (no burst of
    catch-up steps). An exception of ``step`` goes to ``on_error`` and the loop goes on.
    """
    nxt = time.monotonic()
    while not stop.is_set():
        try:
            step()
        except Exception as exc:  # the loop outlives a failed step: the caller reports it
            on_error(exc)
        nxt += period_s
        delay = nxt - time.monotonic()
        if delay < 0:
            nxt = time.monotonic()
            delay = 0.0
        stop.wait(delay)
