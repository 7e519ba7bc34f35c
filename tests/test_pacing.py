"""The fixed-rate loop: steps on a fixed grid, overruns made up within the allowed lag."""

from __future__ import annotations

import pytest

from qkdtwin._pacing import run_at_fixed_rate


class _Clock:
    """A fake monotonic clock; its stop flag's ``wait`` advances it, steps cost ``durations``."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 100.0
        self.durations = list(durations)
        self.starts: list[float] = []

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.starts.append(self.now)
        self.now += self.durations.pop(0)
        if not self.durations:
            raise StopIteration  # ends the run through on_error

    def is_set(self) -> bool:
        return not self.durations

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        assert timeout >= 0.0
        self.now += timeout
        return False


def _run(durations: list[float], max_lag_s: float) -> list[float]:
    c = _Clock(durations)
    errors: list[Exception] = []
    run_at_fixed_rate(1.0, c.step, errors.append, c, max_lag_s=max_lag_s, clock=c)
    assert [type(e) for e in errors] == [StopIteration]
    return [s - 100.0 for s in c.starts]


def test_on_time_steps_keep_the_grid() -> None:
    assert _run([0.3] * 6, 0.0) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_an_overrun_restarts_the_schedule_without_lag_allowed() -> None:
    # the 3.5-s step (started at 2) ends at 5.5: the next starts then, the grid moves by 0.5
    assert _run([0.2, 0.2, 3.5, 0.2, 0.2, 0.2], 0.0) == [0.0, 1.0, 2.0, 5.5, 6.5, 7.5]


def test_an_overrun_within_the_allowed_lag_is_made_up() -> None:
    # behind by 2.5 s after the long step: steps run back to back (each 0.2 s) until the
    # schedule is met, then the grid of whole seconds is kept: 7 steps start by t = 7
    starts = _run([0.2, 0.2, 3.5, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2], 5.0)
    assert starts == pytest.approx([0.0, 1.0, 2.0, 5.5, 5.7, 5.9, 6.1, 7.0, 8.0])
    assert len([s for s in starts if s < 7.0]) == 7  # as many as on-time steps would make


def test_a_stall_beyond_the_allowed_lag_restarts_without_a_burst() -> None:
    # a 10-s step (started at 1) is 9 s late, over the 5 s allowed: start again at 11
    assert _run([0.2, 10.0, 0.2, 0.2, 0.2], 5.0) == [0.0, 1.0, 11.0, 12.0, 13.0]
