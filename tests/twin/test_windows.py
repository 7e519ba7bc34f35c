"""Trailing-window service counts: the dashboard's last minute and hour, a what-if's live side."""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.twin.windows import CountWindow


def test_windows_equal_a_brute_force_difference_of_the_counters() -> None:
    """Random per-tick counts over two hours: each window's counts are the cumulative counters
    now minus those at the window's start, the start is never earlier than asked, and it is
    late by at most one coarse step (exactly on time within the fine span)."""
    rng = np.random.default_rng(3)
    n, tick = 4, 0.5
    cw = CountWindow(n, fine_s=120.0, coarse_every_s=30.0, max_age_s=3600.0)
    t, req, succ = 0.0, np.zeros(n, np.int64), np.zeros(n, np.int64)
    history = {0.0: (req.copy(), succ.copy())}
    for step in range(2 * 3600 * 2):
        t = (step + 1) * tick
        r = rng.poisson(3.0, n)
        req += r
        succ += rng.binomial(r, 0.8)
        history[t] = (req.copy(), succ.copy())
        cw.record(t, req, succ)
        if step % 997 == 0 or step == 2 * 3600 * 2 - 1:
            for seconds in (1.0, 60.0, 119.5, 600.0, 3600.0):
                w = cw.over(seconds)
                base_t = t - w.lived_s
                assert base_t >= t - seconds - 1e-9
                late = base_t - max(0.0, t - seconds)
                assert late <= (0.0 if seconds <= 120.0 else 30.0) + 1e-9, (t, seconds, late)
                b_req, b_succ = history[round(base_t * 2) / 2]
                np.testing.assert_array_equal(w.requests, req - b_req)
                np.testing.assert_array_equal(w.successes, succ - b_succ)
                total = int((req - b_req).sum())
                assert w.success_rate == pytest.approx(int((succ - b_succ).sum()) / total)


def test_early_in_a_run_a_window_covers_what_was_lived() -> None:
    cw = CountWindow(2)
    assert cw.over(60.0).lived_s == 0.0
    assert cw.over(60.0).success_rate is None
    cw.record(5.0, np.array([3, 1]), np.array([2, 1]))
    w = cw.over(60.0)
    assert w.lived_s == 5.0
    assert w.success_rate == pytest.approx(3 / 4)
    assert w.pool_rate(0) == pytest.approx(2 / 3)


def test_snapshots_stay_bounded() -> None:
    cw = CountWindow(1, fine_s=10.0, coarse_every_s=5.0, max_age_s=100.0)
    for k in range(1, 10_001):
        cw.record(float(k), np.array([k]), np.array([k]))
    assert len(cw._fine) <= 12
    assert len(cw._coarse) <= 100 / 5 + 1
