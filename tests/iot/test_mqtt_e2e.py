"""End to end over real MQTT brokers: Mosquitto on 127.0.0.1:1883 and the embedded amqtt."""

from __future__ import annotations

import json
import uuid

import pytest

from qkdtwin.errors import TransportError
from qkdtwin.iot import (
    DevKmePair,
    GatedKeySource,
    MqttTransport,
    TelemetryConfig,
    TelemetrySession,
)
from qkdtwin.iot.envelope import iter_records

from .conftest import MOSQUITTO

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


def group() -> str:
    return f"t{uuid.uuid4().hex[:10]}"  # one group per test: no crosstalk on the shared broker


def run_and_check(url, sniffer_factory, pair, scheme, **kw):
    g = group()
    host, port = url.removeprefix("mqtt://").split(":")
    sniff = sniffer_factory(host, int(port), f"qkdtwin/v1/{g}/#")
    plain: list[bytes] = []
    got: list[bytes] = []
    cfg = TelemetryConfig(scheme=scheme, devices=6, broker=url, group_id=g, rekey_messages=10, **kw)
    with TelemetrySession(
        cfg, pair.gateway_source, pair.aggregator_source, tap=lambda _d, r: plain.append(r)
    ) as s:
        s.aggregator.on_reading = lambda r: got.append(r.raw)
        reports = [s.run_interval(2) for _ in range(3)]
        assert [r.delivered for r in reports] == [12, 12, 12]
        assert all(r.rejected == {} and r.decrypt_failures == 0 for r in reports)
        assert sum(r.epochs_started for r in reports) == 4  # 36 readings, rekey every 10
        assert reports[-1].latency_ms_p99 >= reports[-1].latency_ms_p50
        assert set(reports[-1].latest) == set(s.fleet.device_ids)
        frames = sum(r.frames for r in reports)
    assert got == plain  # every delivered message decrypts to exactly what was sent
    sniff.wait_for(
        lambda m: (
            sum(t.endswith("DATA/edge-1") for t, _ in m) == frames
            and m[-1][0].endswith("NDEATH/edge-1")
        )
    )
    for t, payload in sniff.messages:
        if "DATA" in t:
            assert all(h.version == 1 for h, _ in iter_records(payload))
            assert not any(rec in payload for rec in plain)
    kinds = [t.split("/")[3] for t, _ in sniff.messages]
    assert kinds[0] == "NBIRTH"
    assert kinds[-1] == "NDEATH"


@pytest.mark.parametrize("scheme", ["fixed", "mobile"])
def test_mosquitto_end_to_end(pair, sniffer_factory, scheme):
    run_and_check(MOSQUITTO, sniffer_factory, pair, scheme)


def test_mosquitto_mqtt5_pqc_only(pair, sniffer_factory):
    run_and_check(MOSQUITTO, sniffer_factory, pair, "mobile", mqtt_protocol="5", mode="pqc-only")


@pytest.mark.parametrize("scheme", ["fixed", "mobile"])
def test_embedded_broker_end_to_end(pair, sniffer_factory, embedded, scheme):
    run_and_check(embedded.url, sniffer_factory, pair, scheme)


def test_session_starts_its_own_embedded_broker(pair):
    cfg = TelemetryConfig(scheme="mobile", devices=3, broker="embedded")
    with TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source) as s:
        assert s.broker is not None
        assert s.broker.port > 0
        assert s.run_interval().delivered == 3
    assert s.broker is None


def test_tampered_and_replayed_frames_over_mosquitto(pair, sniffer_factory):
    g = group()
    sniff = sniffer_factory("127.0.0.1", 1883, f"qkdtwin/v1/{g}/DDATA/#")
    attacker = MqttTransport("127.0.0.1", 1883)
    cfg = TelemetryConfig(scheme="mobile", devices=2, broker=MOSQUITTO, group_id=g)
    try:
        with TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source) as s:
            agg = s.aggregator
            s.run_interval()
            sniff.wait_for(lambda m: len(m) == 1)
            # replay the captured frame: its rekey record is stale, both envelopes replays
            attacker.publish(s.data_topic, sniff.messages[0][1])
            s._wait(lambda: agg.records_seen == 6, "the replayed records")
            assert agg.rejected == {"stale_kex": 1, "replay": 2}
            # a fresh frame, not yet seen: flip one ciphertext byte of its first envelope
            (fresh,) = s.gateway.process(s.fleet.step(1.0)).frames
            (h1, _), _second = list(iter_records(fresh))
            bad = bytearray(fresh)
            bad[36 + len(h1.sender_id) + 3] ^= 0xFF
            attacker.publish(s.data_topic, bytes(bad))
            s._wait(lambda: agg.records_seen == 8, "the tampered records")
            assert agg.rejected["auth_failed"] == 1
            assert agg.delivered == 3
            attacker.publish(s.data_topic, fresh)  # the genuine first envelope still opens
            s._wait(lambda: agg.records_seen == 10, "the genuine records")
            assert agg.delivered == 4
            assert agg.rejected["replay"] == 3
            s._published = agg.records_seen
            r = s.run_interval()  # and the pipeline keeps running
            assert (r.delivered, r.rejected) == (2, {})
    finally:
        attacker.close()


def test_key_exhaustion_never_puts_plaintext_on_the_wire(pair, sniffer_factory):
    g = group()
    sniff = sniffer_factory("127.0.0.1", 1883, f"qkdtwin/v1/{g}/#")
    plain: list[bytes] = []
    gated = GatedKeySource(pair.gateway_source)
    cfg = TelemetryConfig(
        scheme="fixed", devices=4, broker=MOSQUITTO, group_id=g, rekey_messages=4, queue_limit=10
    )
    with TelemetrySession(
        cfg, gated, pair.aggregator_source, tap=lambda _d, r: plain.append(r)
    ) as s:
        assert s.run_interval().delivered == 4
        gated.cut()
        reports = [s.run_interval() for _ in range(3)]
        assert [r.sent for r in reports] == [0, 0, 0]
        assert reports[-1].queued == 10
        assert reports[-1].dropped == {"queue_full": 2}
        gated.restore()
        assert s.run_interval().delivered == 10 + 4 - 4  # queue of 10 plus 4 new, 4 dropped
    sniff.wait_for(lambda m: m and m[-1][0].endswith("NDEATH/edge-1"))
    assert len(plain) == 20
    for _t, payload in sniff.messages:
        for rec in plain:
            assert rec not in payload
            assert rec[30:90] not in payload


def test_last_will_tells_the_aggregator_the_gateway_died(pair, sniffer_factory):
    g = group()
    sniff = sniffer_factory("127.0.0.1", 1883, f"qkdtwin/v1/{g}/NDEATH/#")
    cfg = TelemetryConfig(scheme="fixed", devices=1, broker=MOSQUITTO, group_id=g)
    s = TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source).start()
    try:
        assert s.aggregator.edges["edge-1"].online
        s.close(graceful=False)  # connection dropped without DISCONNECT
        sniff.wait_for(lambda m: len(m) == 1)
        assert json.loads(sniff.messages[0][1]) == {"bdSeq": 0, "edge": "edge-1"}
        s._wait(lambda: not s.aggregator.edges["edge-1"].online, "the will")
    finally:
        s.shutdown()


def test_keys_through_real_kmes_over_mosquitto(tmp_path):
    with DevKmePair(tmp_path / "kmes", initial_keys=8, feed=False, batch=2) as kmes:
        cfg = TelemetryConfig(
            scheme="mobile", devices=3, broker=MOSQUITTO, group_id=group(), rekey_messages=3
        )
        with TelemetrySession(cfg, kmes.gateway_source, kmes.aggregator_source) as s:
            reports = [s.run_interval() for _ in range(3)]
        assert [r.delivered for r in reports] == [3, 3, 3]
        assert sum(r.qkd_key_bits_consumed for r in reports) == 3 * 256
        assert kmes.gateway_source.reserved_bits == 4 * 256  # two enc_keys calls of 2 keys
        actions = [a["action"] for a in kmes.store_b.audit_log()]
        assert actions.count("dec") == 3
        assert actions.count("sync") == 4


def test_unreachable_broker_is_a_transport_error(pair):
    cfg = TelemetryConfig(broker="mqtt://127.0.0.1:1")
    with pytest.raises(TransportError):
        TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source).start()
