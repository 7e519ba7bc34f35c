"""The twin at scale: the vectorised tick keeps the per-link law; batched paths equal the old."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from qkdtwin.interfaces import perf_topic
from qkdtwin.twin.ingest import LinkStream
from qkdtwin.twin.kmes import KEY_BITS, KmeLayer
from qkdtwin.twin.links import LinkEngine
from qkdtwin.twin.sim_source import block_telemetry, draw_blocks, sim_module_id


def _engine(a: str, b: str, det: float, sift: float, qber: float, key: float) -> LinkEngine:
    lk = LinkEngine(a, b, "decoy-bb84", "gys", 10.0, 0.08, 10_000)
    lk.detect_per_pulse, lk.sift_per_pulse, lk.qber, lk.key_rate_bps = det, sift, qber, key
    return lk


ENGINES = [
    _engine("A", "B", 2e-3, 9e-4, 0.02, 5e3),  # a short link
    _engine("B", "C", 1e-4, 4e-5, 0.25, 0.0),  # attacked: high QBER, no key
    _engine("C", "D", 3e-6, 1e-6, 0.05, 10.0),  # a long one: few detections
    _engine("D", "E", 0.0, 0.0, 0.0, 0.0),  # nothing detected at all
]


def test_vectorised_blocks_have_the_per_link_law() -> None:
    """The vectorised draw (all links at once) and ``run_block`` (link by link) agree.

    Same deterministic fields; for detected, sifted and errors of every link, a two-sample
    Kolmogorov-Smirnov test does not tell the two paths apart (and their means agree).
    """
    n = 3000
    old_rng, new_rng = np.random.default_rng(1), np.random.default_rng(2)
    old = [[lk.run_block(1.0, 1.0, old_rng) for lk in ENGINES] for _ in range(n)]
    new = [draw_blocks(ENGINES, 1.0, 1.0, new_rng) for _ in range(n)]
    for i, lk in enumerate(ENGINES):
        o, w = old[0][i], new[0][i]
        assert (w.t, w.pulses, w.key_bits) == (o.t, o.pulses, o.key_bits)
        assert w.pulses == round(lk.repetition_rate_hz)
        for field in ("detected", "sifted", "errors"):
            a = np.array([getattr(row[i], field) for row in old])
            b = np.array([getattr(row[i], field) for row in new])
            if a.max() == 0:
                assert b.max() == 0, (lk.id, field)
                continue
            assert stats.ks_2samp(a, b).pvalue > 1e-4, (lk.id, field)
            se = np.sqrt(a.var() / n + b.var() / n)
            assert abs(a.mean() - b.mean()) < 5 * se + 1e-9, (lk.id, field)
        sifted = np.array([row[i].sifted for row in new])
        errors = np.array([row[i].errors for row in new])
        assert (errors <= sifted).all()
        assert (sifted <= np.array([row[i].detected for row in new])).all()


def test_offer_many_releases_what_offer_does_one_by_one() -> None:
    lids = [lk.id for lk in ENGINES]
    rng = np.random.default_rng(3)
    msgs = []
    for seq in range(1, 4):
        for lk, blk in zip(ENGINES, draw_blocks(ENGINES, float(seq), 1.0, rng), strict=True):
            m = block_telemetry(lk, blk, seq, 1.0)
            msgs.append((seq, perf_topic(m.module_id), m.model_dump_json().encode()))
    one = LinkStream({sim_module_id(x): x for x in lids})
    many = LinkStream({sim_module_id(x): x for x in lids})
    each = LinkStream({sim_module_id(x): x for x in lids})
    for seq in range(1, 4):
        batch = [(tp, pl) for s, tp, pl in msgs if s == seq]
        a = [r for tp, pl in batch for r in one.offer(tp, pl, 100.0 + seq)]
        b = many.offer_many(batch, 100.0 + seq)
        assert [(m.link_id, m.seq, m.sifted_bits) for m in a] == [
            (m.link_id, m.seq, m.sifted_bits) for m in b
        ]
        assert len(b) == len(ENGINES)
        # offer_each: the same releases, each yielded before the next message is taken
        pulled: list[int] = []

        def source(batch=batch, pulled=pulled):
            for item in batch:
                pulled.append(1)
                yield item

        c = []
        for m in each.offer_each(source(), 100.0 + seq):
            assert len(pulled) == len(c) + 1  # in order, one message in: one released
            c.append((m.link_id, m.seq, m.sifted_bits))
        assert c == [(m.link_id, m.seq, m.sifted_bits) for m in a]
    assert one.snapshot() == many.snapshot() == each.snapshot()


@pytest.fixture
def kmes(tmp_path: Path):
    layer = KmeLayer([("A-B", "A", "B")], tmp_path, max_keys=20)
    yield layer
    layer.close()


def test_pending_keys_are_a_count_and_a_full_store_costs_nothing(kmes: KmeLayer) -> None:
    assert kmes.produce("A-B", 15.5 * KEY_BITS) == 15
    assert kmes.link_view("A-B") == {"available": 0, "pending": 15, "produced": 15, "discarded": 0}
    kmes.mark_block("A-B")
    assert kmes.flush("A-B") == 15
    lk = kmes.links["A-B"]
    assert lk.store_a.available_count(KEY_BITS) == lk.store_b.available_count(KEY_BITS) == 15
    # 12 more: the stores take 5 (max_keys 20), the rest is dropped, as a store drops them
    kmes.produce("A-B", 12 * KEY_BITS)
    assert kmes.flush("A-B") == 5
    assert kmes.link_view("A-B")["available"] == 20
    assert lk.store_a.available_count(KEY_BITS) == 20
    # full: no key drawn, no transaction
    kmes.produce("A-B", 7 * KEY_BITS)
    calls = []
    real = lk.store_a.add_keys
    lk.store_a.add_keys = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[method-assign]
    assert kmes.flush("A-B") == 0
    assert calls == []
    assert kmes.link_view("A-B")["pending"] == 0
    # the keys of the last block and the pending ones are discarded on an alarm
    kmes.produce("A-B", 3 * KEY_BITS)
    assert kmes.discard("A-B", 1) == 3 + 15 + 5
    assert lk.store_a.available_count(KEY_BITS) == 0
    assert kmes.link_view("A-B")["discarded"] == 23


def test_a_nearly_full_store_is_topped_up_only_once_it_has_room_for_5_percent(
    tmp_path: Path,
) -> None:
    """max_keys 100: a store with room for fewer than 5 keys gets no delivery (and no
    transaction); with room for 5 or more it is filled again, and the count stays exact."""
    layer = KmeLayer([("A-B", "A", "B"), ("B-C", "B", "C")], tmp_path, max_keys=100)
    try:
        assert layer.top_up_keys == 5
        for lid in ("A-B", "B-C"):
            layer.produce(lid, 100 * KEY_BITS)
            assert layer.flush(lid) == 100
        lk = layer.links["A-B"]
        hops = layer.hops(["A", "B", "C"])
        for _ in range(4):  # four relays take 4 keys from every hop's stores
            for h in hops:
                h.left.consume("test", KEY_BITS)
                h.right.consume("test", KEY_BITS)
            layer.consumed(["A", "B", "C"])
        assert lk.available == lk.store_a.available_count(KEY_BITS) == 96
        layer.produce("A-B", 50 * KEY_BITS)
        assert layer.flush("A-B") == 0  # room 4 < 5: dropped, as a full store drops them
        assert lk.store_a.available_count(KEY_BITS) == 96
        assert layer.link_view("A-B")["pending"] == 0
        for h in hops:
            h.left.consume("test", KEY_BITS)
            h.right.consume("test", KEY_BITS)
        layer.consumed(["A", "B", "C"])
        layer.produce("A-B", 50 * KEY_BITS)
        assert layer.flush("A-B") == 5  # room 5: topped up to max_keys
        assert lk.available == lk.store_a.available_count(KEY_BITS) == 100
        assert lk.store_b.available_count(KEY_BITS) == 100
        # a link whose key rate is below its use still delivers every key it made
        layer.produce("B-C", 2 * KEY_BITS)
        assert layer.flush("B-C") == 2
        assert layer.links["B-C"].store_a.available_count(KEY_BITS) == 97
    finally:
        layer.close()


def test_the_key_feed_period_grows_with_the_links_unless_set() -> None:
    from qkdtwin.twin.sim_source import feed_every

    assert feed_every(None, 12) == 10  # the seed network: every 10 ticks, as always
    assert feed_every(None, 200) == 10
    assert feed_every(None, 201) == 11
    assert feed_every(None, 1044) == 53  # ~20 links' deliveries per tick
    assert feed_every(3, 1044) == 3  # a configured period is kept
    for links in (1, 12, 250, 1044, 20_001):
        every = feed_every(None, links)
        per_tick = max(sum(1 for i in range(links) if (t + i) % every == 0) for t in range(every))
        assert per_tick <= max(20, -(-links // 10))
