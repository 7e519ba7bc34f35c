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


def test_compiled_dead_time_equals_a_plain_reference_across_chunks() -> None:
    """Dead time only (the compiled loop): random click streams cut into chunks give exactly
    what a plain per-event reference gives on the whole stream, state carried over chunks."""
    rng = np.random.default_rng(7)
    for dead in (0, 1, 3, 40):
        n_gates, chunk = 20_000, 3_000
        gates = np.sort(rng.choice(n_gates, size=2_500, replace=False)).astype(np.int64)
        f0 = rng.random(gates.size) < 0.6
        f1 = ~f0 | (rng.random(gates.size) < 0.2)
        # reference: one pass over the whole stream
        last = [-(10**18), -(10**18)]
        want = []
        for g, a, b in zip(gates.tolist(), f0.tolist(), f1.tolist(), strict=True):
            r0 = a and g - last[0] > dead
            r1 = b and g - last[1] > dead
            if r0:
                last[0] = g
            if r1:
                last[1] = g
            if r0 or r1:
                want.append((g, r0, r1))
        tl = DetectorTimeline(dead, 0.0)
        got = []
        for off in range(0, n_gates, chunk):
            sel = (gates >= off) & (gates < off + chunk)
            g, a, b = tl.apply(rng, off, chunk, gates[sel] - off, f0[sel], f1[sel])
            got += [(int(x) + off, bool(y), bool(z)) for x, y, z in zip(g, a, b, strict=True)]
        assert got == want, dead
