"""The self-simulated twin's alarm rule (detection), as pure decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdtwin.twin.links import Block, LinkEngine
from qkdtwin.twin.qber_rule import QberDecision, check_link, check_links, decide

STATUSES = ("up", "alarm", "recovering")


def ref_qber(blocks: list[Block], min_bits: int) -> float:
    """Independent reference: newest blocks pooled until ``min_bits`` sifted bits."""
    sifted = errors = 0
    for b in reversed(blocks):
        sifted += b.sifted
        errors += b.errors
        if sifted >= min_bits:
            break
    return errors / sifted if sifted else math.nan


def ref_action(status: str, q: float, threshold: float) -> str | None:
    """Independent reference of the rule."""
    if q != q:  # NaN: no sifted bits yet, nothing to decide
        return None
    if status == "up":
        return "raise" if q > threshold else None
    if status == "recovering":
        return "restore" if not q > threshold else None
    return None


def engine(lid: str, threshold: float = 0.08, min_bits: int = 1000) -> LinkEngine:
    a, b = lid.split("-")
    return LinkEngine(
        a=a,
        b=b,
        protocol="decoy-bb84",
        preset="gys",
        length_km=10.0,
        qber_threshold=threshold,
        calibration_pulses=1000,
        min_bits=min_bits,
    )


@pytest.fixture(scope="module")
def link() -> LinkEngine:
    return engine("A-B")


def with_blocks(lk: LinkEngine, blocks: list[tuple[int, int]], threshold: float) -> LinkEngine:
    lk.blocks.clear()
    for i, (s, e) in enumerate(blocks):
        lk.blocks.append(Block(float(i), 10**6, s, e, 0.0))
    lk.qber_threshold = threshold
    return lk


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("q", [0.0, 0.03, 0.0799, 0.08, 0.0801, 0.25, 1.0, math.nan])
def test_decide_matches_reference(status: str, q: float) -> None:
    d = decide("A-B", status, q, 0.08)
    want = ref_action(status, q, 0.08)
    assert (d.action if d else None) == want
    if d is not None:
        assert (d.link, d.qber, d.threshold) == ("A-B", q, 0.08)


def test_exactly_at_threshold_neither_raises_nor_keeps_recovering() -> None:
    assert decide("A-B", "up", 0.08, 0.08) is None
    assert decide("A-B", "recovering", 0.08, 0.08) == QberDecision("A-B", "restore", 0.08, 0.08)
    assert decide("A-B", "up", math.nextafter(0.08, 1.0), 0.08) is not None
    assert decide("A-B", "recovering", math.nextafter(0.08, 1.0), 0.08) is None


def test_nan_qber_decides_nothing_in_any_status() -> None:
    for status in STATUSES:
        assert decide("A-B", status, math.nan, 0.08) is None
        assert decide("A-B", status, math.nan, math.inf) is None


def test_alarmed_link_stays_in_alarm_whatever_its_qber() -> None:
    for q in (0.0, 0.08, 0.5):
        assert decide("A-B", "alarm", q, 0.08) is None


def test_recovering_link_restored_only_at_or_under_threshold(link: LinkEngine) -> None:
    # 90 errors in 1000 bits: still above 8 %, stays recovering
    with_blocks(link, [(1000, 90)], 0.08)
    assert check_link("A-B", link, "recovering") is None
    # a clean block pooled with it: (90 + 10) / 2000 = 5 % -> restored
    with_blocks(link, [(1000, 90), (1000, 10)], 0.08)
    link.min_bits = 2000
    try:
        d = check_link("A-B", link, "recovering")
    finally:
        link.min_bits = 1000
    assert d == QberDecision("A-B", "restore", 0.05, 0.08)


def test_window_at_threshold_from_blocks(link: LinkEngine) -> None:
    # the newest block alone holds min_bits: 80 / 1000 is exactly the threshold
    with_blocks(link, [(1000, 900), (1000, 80)], 80 / 1000)
    assert link.alarm_qber() == link.qber_threshold
    assert check_link("A-B", link, "up") is None
    assert check_link("A-B", link, "recovering") is not None
    with_blocks(link, [(1000, 900), (1000, 81)], 80 / 1000)
    assert check_link("A-B", link, "up") == QberDecision("A-B", "raise", 0.081, 0.08)


def test_no_sifted_bits_is_nan_and_decides_nothing(link: LinkEngine) -> None:
    for blocks in ([], [(0, 0), (0, 0)]):
        with_blocks(link, blocks, 0.08)
        assert math.isnan(link.alarm_qber())
        for status in STATUSES:
            assert check_link("A-B", link, status) is None


def test_check_links_recomputed_independently_and_touches_nothing() -> None:
    rng = np.random.default_rng(11)
    links = {lid: engine(lid, min_bits=m) for lid, m in (("A-B", 500), ("B-C", 3000), ("C-D", 1))}
    seen: set[str] = set()
    for _ in range(200):
        status = {lid: str(rng.choice(STATUSES)) for lid in links}
        for lk in links.values():
            n = int(rng.integers(0, 6))
            sifted = rng.integers(0, 1500, n)
            blocks = [(int(s), int(rng.integers(0, s + 1))) for s in sifted]
            with_blocks(lk, blocks, float(rng.choice([0.05, 0.08, 0.11])))
        snapshot = {lid: list(lk.blocks) for lid, lk in links.items()}
        status_before = dict(status)

        got = check_links(links, status)

        want = []
        for lid, lk in links.items():
            q = ref_qber(list(lk.blocks), lk.min_bits)
            act = ref_action(status[lid], q, lk.qber_threshold)
            if act is not None:
                want.append((lid, act, q, lk.qber_threshold))
        assert [(d.link, d.action, d.threshold) for d in got] == [
            (lid, act, thr) for lid, act, _, thr in want
        ]
        assert [d.qber for d in got] == pytest.approx([q for *_, q, _ in want])
        assert status == status_before
        seen |= {d.action for d in got}
        assert {lid: list(lk.blocks) for lid, lk in links.items()} == snapshot
    assert seen == {"raise", "restore"}


def test_check_links_follows_ids(link: LinkEngine) -> None:
    with_blocks(link, [(1000, 200)], 0.08)
    links = {"A-B": link}
    assert check_links(links, {"A-B": "up"}, []) == []
    assert [d.link for d in check_links(links, {"A-B": "up"}, ["A-B", "A-B"])] == ["A-B", "A-B"]
