"""Gateway and aggregator without a broker: exact delivery, tampering, replay, fail closed."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from qkdtwin.iot import (
    Aggregator,
    DeviceFleet,
    EdgeGateway,
    GatedKeySource,
    MemoryBus,
    Reading,
    TelemetryConfig,
    TelemetrySession,
)
from qkdtwin.iot.devices import decode_reading
from qkdtwin.iot.envelope import KIND_DEVICE, iter_records, seal_envelope
from qkdtwin.iot.keys import mlkem_keypair


class Link:
    """A gateway and an aggregator joined by hand (frames passed directly)."""

    def __init__(self, pair, scheme="mobile", mode="hybrid", devices=4, **gw_kw):
        kem = mlkem_keypair()
        self.sent: list[tuple[str, bytes]] = []
        self.got: list[Reading] = []
        self.source = GatedKeySource(pair.gateway_source)
        self.gw = EdgeGateway(
            "edge-1",
            scheme=scheme,
            mode=mode,
            key_source=self.source,
            kem_public_key=kem.public_key(),
            tap=lambda d, r: self.sent.append((d, r)),
            **gw_kw,
        )
        self.agg = Aggregator(
            pair.aggregator_source,
            kem,
            scheme=scheme,
            mode=mode,
            replay_window=64,
            on_reading=self.got.append,
        )
        self.fleet = DeviceFleet(devices, np.random.default_rng(1), id_prefix="edge-1.d")

    def frames(self, count=1):
        return self.gw.process(self.fleet.step(1.0, count)).frames

    def deliver(self, frames):
        for f in frames:
            self.agg.handle_frame("edge-1", f, "NDATA" if self.gw.scheme == "fixed" else "DDATA")


@pytest.mark.parametrize("scheme", ["fixed", "mobile"])
@pytest.mark.parametrize("mode", ["hybrid", "qkd-only", "pqc-only"])
def test_every_delivered_reading_is_exactly_what_was_sent(pair, scheme, mode):
    link = Link(pair, scheme, mode, devices=5, rekey_messages=7)
    for _ in range(4):
        link.deliver(link.frames(2))
    assert [r.raw for r in link.got] == [rec for _d, rec in link.sent]
    assert len(link.got) == 40
    assert not link.agg.rejected
    assert link.gw.epochs_started == 6  # ceil(40 / 7): rekeyed every 7 readings
    assert link.gw.qkd_bits_used == (0 if mode == "pqc-only" else 6 * 256)
    r = link.got[-1]
    assert r == decode_reading(r.raw)
    assert r.health in ("ok", "fault", "drift")


def test_tampering_with_any_byte_is_rejected_and_aggregator_keeps_running(pair):
    link = Link(pair, "mobile", devices=1)
    link.deliver(link.frames())  # KEX + first envelope: epoch open
    (frame,) = link.frames()
    ((header, _body),) = list(iter_records(frame))
    assert header.kind == KIND_DEVICE
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        before = sum(link.agg.rejected.values())
        link.deliver([bytes(bad)])
        assert sum(link.agg.rejected.values()) > before, f"byte {i} not rejected"
    assert len(link.got) == 1  # nothing tampered got through
    assert link.agg.rejected["auth_failed"] > 0
    link.deliver([frame])  # the genuine one still goes through
    assert len(link.got) == 2
    assert link.got[-1].raw == link.sent[-1][1]


def test_tampered_rekey_records_are_rejected(pair):
    link = Link(pair, "fixed", devices=2, rekey_messages=2)
    first = link.frames()  # KEX(1) + aggregate
    link.deliver(first)
    (frame,) = link.frames()  # KEX(2) + aggregate
    (kex, _), (_data, _) = list(iter_records(frame))
    kex_len = 36 + len(kex.sender_id) + kex.body_length
    positions = [*list(range(0, 36 + len(kex.sender_id))), 40, 500, kex_len - 20, kex_len - 1]
    before = len(link.got)
    for i in positions:
        bad = bytearray(frame[:kex_len])
        bad[i] ^= 0x04
        link.deliver([bytes(bad)])
    assert len(link.got) == before
    assert 2 not in link.agg.edges["edge-1"].epochs
    link.deliver([frame])  # genuine rekey still opens epoch 2 (key kept after a forged fetch)
    assert 2 in link.agg.edges["edge-1"].epochs
    assert len(link.got) == before + 2


def test_replayed_and_too_old_messages_are_rejected(pair):
    link = Link(pair, "mobile", devices=1)
    frames = [link.frames()[0] for _ in range(70)]
    link.deliver(frames[:1])
    link.deliver(frames[2:10])  # frame 1 is late
    link.deliver(frames[:1])  # replay of an accepted envelope (the KEX is stale too)
    assert link.agg.rejected == {"replay": 1, "stale_kex": 1}, link.agg.rejected
    link.deliver(frames[10:])
    link.deliver(frames[1:2])  # seq 2 is now 68 behind the newest, outside the 64 window
    assert link.agg.rejected["too_old"] == 1
    assert len(link.got) == 69


def test_unknown_key_id_and_wrong_epoch_are_rejected(pair):
    link = Link(pair, "mobile", devices=1)
    link.deliver(link.frames())
    keys = link.gw._keys
    aead = keys.sender_aead("edge-1.d00000")
    forged_kid = seal_envelope(
        aead,
        b"x",
        mode=1,
        kind=KIND_DEVICE,
        key_id=str(uuid.uuid4()),
        epoch=1,
        seq=50,
        sender_id="edge-1.d00000",
    )
    wrong_epoch = seal_envelope(
        aead,
        b"x",
        mode=1,
        kind=KIND_DEVICE,
        key_id=keys.key_id,
        epoch=7,
        seq=51,
        sender_id="edge-1.d00000",
    )
    wrong_mode = seal_envelope(
        aead,
        b"x",
        mode=2,
        kind=KIND_DEVICE,
        key_id=keys.key_id,
        epoch=1,
        seq=52,
        sender_id="edge-1.d00000",
    )
    link.deliver([forged_kid, wrong_epoch, wrong_mode, b"\x01garbage"])
    assert link.agg.rejected == {
        "unknown_key_id": 1,
        "wrong_epoch": 1,
        "mode_mismatch": 1,
        "truncated": 1,
    }


def test_rekey_with_a_key_id_the_kme_does_not_know_is_rejected(pair):
    link = Link(pair, "fixed", devices=1)
    (frame,) = link.frames()
    (_kex, _), _data = list(iter_records(frame))
    bad = bytearray(frame)
    bad[4:20] = uuid.uuid4().bytes  # key_ID of the KEX record
    link.deliver([bytes(bad)])
    assert link.agg.rejected["unknown_key_id"] == 1
    assert link.agg.rejected["wrong_epoch"] == 1  # its data cannot be opened either
    assert not link.got


def test_fail_closed_queues_then_drops_then_recovers(pair):
    bus = MemoryBus()
    wire: list[bytes] = []
    bus.client().subscribe("#", lambda _t, p: wire.append(p))
    plain: list[bytes] = []
    cfg = TelemetryConfig(scheme="mobile", devices=5, broker="memory", queue_limit=12)
    gated = GatedKeySource(pair.gateway_source)
    with TelemetrySession(
        cfg, gated, pair.aggregator_source, bus=bus, tap=lambda _d, r: plain.append(r)
    ) as s:
        assert s.run_interval().delivered == 5
        gated.cut()
        s.gateway._epoch_readings = cfg.rekey_messages  # the epoch is used up: must rekey
        r1 = s.run_interval()
        assert (r1.sent, r1.delivered, r1.queued, r1.dropped) == (0, 0, 5, {})
        r2 = s.run_interval(2)
        assert (r2.sent, r2.queued, r2.dropped) == (0, 12, {"queue_full": 3})
        assert r2.key_failures == {"KeyExhaustedError": 1}
        gated.restore()
        r3 = s.run_interval()
        # the bound holds when the interval's readings arrive, before keys are tried
        assert (r3.sent, r3.delivered, r3.queued, r3.dropped) == (12, 12, 0, {"queue_full": 5})
    data = [p for p in wire if p[:1] == b"\x01"]
    for rec in plain:  # no plaintext reading (nor its signal window) ever on the wire
        assert not any(rec in p or rec[40:80] in p for p in wire), "plaintext on the wire"
    assert data


@pytest.mark.parametrize("keep", [True, False])
def test_a_long_running_session_keeps_no_latency_history_unless_asked(pair, keep):
    """keep_latencies=False (the live twin): each interval's report still has its quantiles,
    computed from that interval's latencies, but nothing is kept after it."""
    cfg = TelemetryConfig(scheme="fixed", devices=4, broker="memory")
    with TelemetrySession(
        cfg, pair.gateway_source, pair.aggregator_source, bus=MemoryBus(), keep_latencies=keep
    ) as s:
        reports = [s.run_interval() for _ in range(5)]
        assert all(r.delivered == 4 and r.latency_ms_p99 >= r.latency_ms_p50 >= 0 for r in reports)
        assert len(s.latencies) == (5 if keep else 0)
        if keep:  # every delivered reading's latency, one array per interval
            assert sum(len(a) for a in s.latencies) == 20


def test_the_interval_quantiles_are_numpys_bit_for_bit() -> None:
    """p50_p99 (plain Python for few values) against np.percentile itself, on random,
    repeated, sorted and single values, both sides of the size where it hands over to NumPy."""
    from qkdtwin.iot.session import p50_p99

    rng = np.random.default_rng(11)
    cases = [[], [3.5], [2.0, 2.0], list(range(10)), [1e-9, 1e9, -3.0]]
    for n in [*range(1, 80), 200]:
        cases.append(rng.exponential(5.0, n).tolist())
        cases.append(np.round(rng.normal(0, 1, n), 1).tolist())  # ties
    for vals in cases:
        got = p50_p99(list(vals))
        if not vals:
            assert all(np.isnan(got))
            continue
        want = np.percentile(np.asarray(vals, dtype=np.float64), (50, 99))
        assert got == (float(want[0]), float(want[1])), vals
