"""Attach-mode ingest over real brokers: Mosquitto on 127.0.0.1:1883 and the embedded amqtt."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qkdtwin.errors import TransportError
from qkdtwin.interfaces.link_telemetry import perf_topic
from qkdtwin.iot.envelope import KIND_DEVICE, Sealer
from qkdtwin.iot.transport import EmbeddedBroker, MqttTransport
from qkdtwin.twin.ingest import (
    IngestRouter,
    IotMetadataStream,
    LinkStream,
    MqttIngest,
    Recorder,
    Replayer,
    StreamCounters,
)
from tests.ports import free_port

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

MOSQUITTO = "mqtt://127.0.0.1:1883"


def tele(module: str, seq: int, now: float) -> bytes:
    start = now - 1.0
    return json.dumps(
        {
            "schema_version": 1,
            "module_id": module,
            "link_id": "A-B",
            "local_node": "A",
            "remote_node": "B",
            "seq": seq,
            "interval_start": start,
            "interval_end": start + 1.0,
            "protocol": "bb84-decoy",
            "repetition_rate_hz": 1e9,
            "intensities": [
                {"intensity": 0.5, "sent": 1000, "detected": 90, "sifted": 45, "errors": 1}
            ],
            "sifted_bits": 45,
            "errors": 1,
            "qber": 1 / 45,
            "secret_bits": 12,
            "qkdl_performance": {"skr": 12.0, "eskr": 11.0},
        }
    ).encode()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_link_telemetry_round_trip_over_mosquitto(tmp_path: Path):
    module, group = f"m-{uuid.uuid4().hex[:10]}", f"g{uuid.uuid4().hex[:10]}"
    links = LinkStream({module: "A-B"})
    router = IngestRouter(links, IotMetadataStream(), recorder=Recorder(tmp_path / "rec.jsonl"))
    states: list[str] = []
    topics = [perf_topic(module), f"qkdtwin/v1/{group}/#"]  # only this test's traffic
    ingest = MqttIngest(
        MOSQUITTO, topics, router.on_payload, on_state=lambda s, _t: states.append(s)
    )
    with ingest:
        assert ingest.connected
        pub = MqttTransport("127.0.0.1", 1883)
        try:
            now = time.time()
            # 0, 1, 1 (QoS 1 duplicate), 3 before 2 (a reordered pair), garbage, 4
            for seq in (0, 1, 1, 3, 2):
                pub.publish(perf_topic(module), tele(module, seq, now + seq))
            pub.publish(perf_topic(module), b'{"schema_version": 1, "seq": "x"}')
            pub.publish(perf_topic(module), tele(module, 4, now + 4))
            sealer = Sealer(
                AESGCM(bytes(32)), mode=1, kind=KIND_DEVICE, key_id=None, epoch=1, sender_id="d1"
            )
            frame = sealer.seal(b"secret reading") + sealer.seal(b"another")
            pub.publish(f"qkdtwin/v1/{group}/DDATA/edge-1", frame)
            wait_until(lambda: ingest.stats().messages == 8)
        finally:
            pub.close()
    assert states == ["connecting", "connected", "closed"]
    released = router.drain()
    assert [m.seq for m in released] == [0, 1, 2, 3, 4]
    assert {m.module_id for m in released} == {module}
    snap = links.snapshot()
    expect = StreamCounters(accepted=5, released=5, duplicate=1, reordered=1, malformed=1)
    assert snap.total == expect
    assert snap.modules[module] == expect
    assert links.source_status(module, time.time()).status == "ok"
    iot = router.iot.snapshot(time.time())  # type: ignore[union-attr]
    assert iot.edges["edge-1"].records == 2
    assert iot.edges["edge-1"].bytes == len(frame)
    assert (iot.senders["d1"].records, iot.senders["d1"].last_seq) == (2, 2)
    stats = ingest.stats()
    assert (stats.connects, stats.disconnects, stats.callback_errors) == (1, 0, 0)
    router.recorder.close()  # type: ignore[union-attr]
    # The recording replays to exactly the same state.
    again = IngestRouter(LinkStream({module: "A-B"}), IotMetadataStream())
    assert again.replay(Replayer(tmp_path / "rec.jsonl")) == 8
    assert again.links.snapshot() == snap
    assert [m.seq for m in again.drain()] == [0, 1, 2, 3, 4]


def test_a_failing_callback_does_not_stop_the_ingest():
    module = f"m-{uuid.uuid4().hex[:10]}"
    got: list[bytes] = []

    def on_payload(_topic: str, payload: bytes, _t: float) -> None:
        if payload == b"boom":
            raise RuntimeError("bug downstream")
        got.append(payload)

    with MqttIngest(MOSQUITTO, [perf_topic(module)], on_payload) as ingest:
        pub = MqttTransport("127.0.0.1", 1883)
        try:
            pub.publish(perf_topic(module), b"boom")
            pub.publish(perf_topic(module), b"after")
            wait_until(lambda: got == [b"after"])
        finally:
            pub.close()
        stats = ingest.stats()
    assert stats.callback_errors == 1
    assert stats.last_error is not None
    assert "bug downstream" in stats.last_error


def test_unreachable_broker_is_a_transport_error_naming_the_url():
    url = f"mqtt://127.0.0.1:{free_port()}"
    ingest = MqttIngest(url, on_payload=lambda *_: None)
    with pytest.raises(TransportError, match=f"cannot reach MQTT broker {url}"):
        ingest.start()
    assert ingest.state == "closed"


def test_broker_loss_marks_sources_stale_and_the_ingest_reconnects():
    module = f"m-{uuid.uuid4().hex[:10]}"
    links = LinkStream({module: "A-B"})
    router = IngestRouter(links)
    broker = EmbeddedBroker().start()
    port = broker.port
    ingest = MqttIngest(
        broker.url, [perf_topic(module)], router.on_payload, on_state=router.on_state, keepalive_s=2
    ).start()
    try:
        pub = MqttTransport("127.0.0.1", port)
        pub.publish(perf_topic(module), tele(module, 0, time.time()))
        wait_until(lambda: ingest.stats().messages == 1)
        pub.close()
        assert links.source_status(module, time.time()).status == "ok"
        broker.stop()
        wait_until(lambda: ingest.state == "reconnecting")
        # Fresh data a moment ago, but the broker is gone: the source is stale, nothing raised.
        assert links.source_status(module, time.time()).status == "stale"
        broker = EmbeddedBroker(port=port).start()
        assert ingest.wait_connected(15)
        pub = MqttTransport("127.0.0.1", port)
        pub.publish(perf_topic(module), tele(module, 1, time.time()))
        wait_until(lambda: ingest.stats().messages == 2)
        pub.close()
        assert links.source_status(module, time.time()).status == "ok"
        stats = ingest.stats()
        assert (stats.connects, stats.disconnects) == (2, 1)
        assert [m.seq for m in router.drain()] == [0, 1]
    finally:
        ingest.close()
        broker.stop()
