"""Dead time and afterpulsing, against renewal-theory closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdtwin.qkd.detection import DetectorTimeline
from qkdtwin.qkd.sampling import bernoulli_positions


def stream(timeline, rng, p, n_chunks=40, chunk=50_000):
    registered = np.zeros(2, dtype=np.int64)
    gates_all = []
    for c in range(n_chunks):
        g = bernoulli_positions(rng, chunk, p)
        f0 = np.ones(g.size, dtype=bool)
        f1 = np.zeros(g.size, dtype=bool)
        rg, r0, r1 = timeline.apply(rng, c * chunk, chunk, g, f0, f1)
        registered += [r0.sum(), r1.sum()]
        gates_all.append(rg + c * chunk)
    return registered, np.concatenate(gates_all), n_chunks * chunk


@pytest.mark.parametrize(("p", "dead"), [(0.01, 50), (0.05, 10)])
def test_non_paralysable_dead_time_rate(p, dead):
    # renewal cycle: D dead gates plus a geometric wait of mean 1/p -> rate p / (1 + p D)
    tl = DetectorTimeline(dead_gates=dead, afterpulse_prob=0.0)
    reg, gates, n = stream(tl, np.random.default_rng(1), p)
    expected = p / (1 + p * dead)
    assert reg[0] / n == pytest.approx(expected, rel=5 / math.sqrt(expected * n))
    # no two registered clicks closer than the dead time, across chunk boundaries too
    assert np.diff(gates).min() > dead
    assert reg[1] == 0


def test_afterpulses_add_clicks_after_the_dead_time():
    p, dead, pap = 0.002, 5, 0.3
    tl = DetectorTimeline(dead_gates=dead, afterpulse_prob=pap)
    reg, gates, n = stream(tl, np.random.default_rng(2), p)
    # each registered click spawns a click D+1 gates later with prob pap (cascading):
    # rate r solves r = p (1 - r D) + pap r  (primary clicks only in live gates)
    r = p / (1 + p * dead - pap)
    assert reg[0] / n == pytest.approx(r, rel=0.08)
    gaps = np.diff(gates)
    # afterpulses show up as an excess of gaps of exactly D + 1 gates
    assert (gaps == dead + 1).mean() > 0.2


def test_inactive_timeline_passes_events_through():
    tl = DetectorTimeline(0, 0.0)
    assert not tl.active
    g = np.array([1, 5, 9])
    rg, r0, r1 = tl.apply(np.random.default_rng(0), 0, 10, g, np.ones(3, bool), np.ones(3, bool))
    assert rg.tolist() == [1, 5, 9]
    assert r0.all()
    assert r1.all()
