"""SharedFleet: one fleet for many gateways, each gateway's part handed to its session."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.iot import DeviceFleet, MemoryBus, SharedFleet, TelemetryConfig, TelemetrySession
from qkdtwin.iot.devices import decode_reading, stamp_wall_time

GROUPS = [[f"gw{g}.d{j:05d}" for j in range(n)] for g, n in enumerate((3, 1, 5, 2))]


def _clock(start: int = 1_000):
    counter = itertools.count(start)
    return lambda: next(counter)


def test_each_part_gets_its_own_devices_readings_once_per_sample() -> None:
    """The reference: a DeviceFleet of the same IDs and seed stepped by itself; every part's
    readings are that fleet's readings of the part's devices (bytes equal once the wall-time
    stamp is made the same), in sample order, and no device is left out or repeated."""
    shared = SharedFleet(GROUPS, np.random.default_rng(5), wall_ns=_clock())
    ids = [d for g in GROUPS for d in g]
    ref = DeviceFleet(len(ids), np.random.default_rng(5), device_ids=ids, wall_ns=lambda: 7)
    for count in (1, 3):
        shared.step(0.5, count)
        want = ref.step(0.5, count)
        got_all = []
        for part, group in zip(shared.parts, GROUPS, strict=True):
            assert part.device_ids == group
            got = part.step(0.5, count)
            assert len(got) == len(group) * count
            # sample by sample: the part's devices, each once
            for s in range(count):
                assert sorted(d for d, _ in got[s * len(group) : (s + 1) * len(group)]) == group
            got_all.extend(got)
        by_dev_want: dict[str, list[bytes]] = {}
        for dev, rec in want:
            by_dev_want.setdefault(dev, []).append(rec)
        by_dev_got: dict[str, list[bytes]] = {}
        for dev, rec in got_all:
            by_dev_got.setdefault(dev, []).append(stamp_wall_time(rec, 7))
        assert by_dev_got == by_dev_want
    assert [p.kinds for p in shared.parts] == [
        ref.kinds[0:3],
        ref.kinds[3:4],
        ref.kinds[4:9],
        ref.kinds[9:11],
    ]


def test_a_part_stamps_its_readings_when_it_takes_them() -> None:
    """ts_ns is the wall clock at the part's take, not at the shared step (each take later)."""
    shared = SharedFleet(GROUPS, np.random.default_rng(1), wall_ns=_clock(10))
    shared.step(1.0)  # the step itself reads the clock once (10)
    stamps = [{decode_reading(rec).ts_ns for _d, rec in part.step(1.0)} for part in shared.parts]
    assert stamps == [{11}, {12}, {13}, {14}]


def test_misuse_is_refused_with_the_field_named() -> None:
    shared = SharedFleet(GROUPS, np.random.default_rng(1))
    with pytest.raises(ConfigError) as never:
        shared.parts[0].step(1.0)
    assert never.value.field == "step"
    shared.step(1.0)
    with pytest.raises(ConfigError) as other_dt:
        shared.parts[0].step(2.0)
    assert other_dt.value.field == "dt_s"
    shared.parts[0].step(1.0)
    with pytest.raises(ConfigError) as twice:
        shared.parts[0].step(1.0)
    assert twice.value.field == "step"
    for bad in ([], [["a"], []], [["a", "b"], ["b"]], [["bad id"]]):
        with pytest.raises(ConfigError) as exc:
            SharedFleet(bad, np.random.default_rng(1))
        assert exc.value.field in ("device_ids", "sender_id")


def test_a_reading_not_taken_before_the_next_step_is_dropped() -> None:
    shared = SharedFleet(GROUPS, np.random.default_rng(1))
    shared.step(1.0)
    shared.step(1.0)  # part 0 skipped the first interval: only the second one is there
    got = shared.parts[0].step(1.0)
    assert {decode_reading(r).t for _d, r in got} == {2.0}


def test_a_session_runs_on_its_part(pair) -> None:
    shared = SharedFleet(GROUPS[:2], np.random.default_rng(3))
    cfg = TelemetryConfig(scheme="mobile", devices=3, broker="memory", edge_id="gw0")
    with pytest.raises(ConfigError) as wrong:
        TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source, fleet=shared.parts[1])
    assert wrong.value.field == "fleet"
    with TelemetrySession(
        cfg, pair.gateway_source, pair.aggregator_source, bus=MemoryBus(), fleet=shared.parts[0]
    ) as s:
        for _ in range(3):
            shared.step(cfg.interval_s)
            rep = s.run_interval()
            assert rep.delivered == 3
            assert set(rep.latest) == set(GROUPS[0])
