"""The attached twin reads gateways that speak Sparkplug B 3.0 (``iot_topic_style: sparkplug``).

The stream comes from a real :class:`~qkdtwin.iot.TelemetrySession` on the in-process bus;
the same over Mosquitto, decoded by an independent decoder, is ``tests/iot/test_sparkplug_e2e``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.iot import LocalKeyPair, MemoryBus, TelemetryConfig, TelemetrySession
from qkdtwin.iot.sparkplug_edge import parse_command
from qkdtwin.twin.attach import load_attach_file
from qkdtwin.twin.attached import AttachedTwin
from qkdtwin.twin.ingest import (
    DEFAULT_TOPICS,
    IngestRouter,
    IotMetadataStream,
    LinkStream,
    ingest_topics,
)

GROUP = "plant"


def doc(**extra) -> dict:
    return {
        "broker": "mqtt://127.0.0.1:1",  # never connected: the tests feed the twin
        "network": {
            "nodes": [{"name": "A", "role": "metro"}, {"name": "B", "role": "metro"}],
            "links": [{"a": "A", "b": "B", "key_rate": 1.0}],
            "demands": [{"src": "A", "dst": "B", "rate": 0.05}],
            "pool_capacity": 100,
            "keys_per_service": 10,
            "policy": "static",
            "duration": 1000.0,
        },
        "links": {"A-B": {"module_id": "qkd-A-B", "declared_detector_efficiency": 0.045}},
        "iot": {"group": GROUP, "aggregator": "A", "edges": {"edge-1": "B"}},
        "iot_topic_style": "sparkplug",
        **extra,
    }


def sparkplug_stream(tmp_path: Path, devices: int = 4, intervals: int = 3) -> list:
    """Every message a Sparkplug session publishes, in order (births to deaths)."""
    bus = MemoryBus()
    seen: list[tuple[str, bytes]] = []
    bus.client().subscribe(f"spBv1.0/{GROUP}/#", lambda t, p: seen.append((t, p)))
    cfg = TelemetryConfig(
        scheme="mobile", devices=devices, broker="memory", group_id=GROUP, topic_style="sparkplug"
    )
    with (
        LocalKeyPair(tmp_path / "kms", initial_keys=8, feed=False) as keys,
        TelemetrySession(cfg, keys.gateway_source, keys.aggregator_source, bus=bus) as s,
    ):
        for _ in range(intervals):
            s.run_interval()
    return seen


def test_the_attach_file_selects_the_topics(tmp_path):
    att = load_attach_file(doc())
    assert (att.iot_topic_style, att.iot_group()) == ("sparkplug", GROUP)
    assert load_attach_file(doc(iot_topic_style="qkdtwin")).iot_topic_style == "qkdtwin"
    assert ingest_topics("qkdtwin") == DEFAULT_TOPICS
    assert ingest_topics("sparkplug", GROUP) == (*DEFAULT_TOPICS[:2], f"spBv1.0/{GROUP}/#")
    assert ingest_topics("sparkplug")[-1] == "spBv1.0/#"
    with pytest.raises(ConfigError) as err:
        load_attach_file(doc(iot_topic_style="spb"))
    assert err.value.field == "iot_topic_style"
    with pytest.raises(ConfigError, match="topic_style"):
        ingest_topics("spb")


def test_without_protobuf_the_attach_file_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    with pytest.raises(ConfigError, match=r"qkdtwin\[sparkplug\]") as err:
        load_attach_file(doc())
    assert err.value.field == "iot_topic_style"


def test_the_metadata_stream_lists_born_devices_counts_gaps_and_deaths(tmp_path):
    stream = sparkplug_stream(tmp_path)
    dropped = next(i for i, (t, _p) in enumerate(stream) if "/DDATA/" in t and i > 9)
    router = IngestRouter(
        LinkStream({"qkd-A-B": "A-B"}), IotMetadataStream(topic_style="sparkplug", group=GROUP)
    )
    for i, (t, p) in enumerate(stream):
        if i == 5:  # births seen, no data yet: every device listed, with its units, online
            snap = router.iot.snapshot(1.0)  # type: ignore[union-attr]
            assert len(snap.senders) == 4
            assert all(s.online and s.records == 0 for s in snap.senders.values())
            assert snap.senders["edge-1.d00000"].units == {"temperature_c": "°C", "ambient_c": "°C"}
        if i != dropped:
            router.on_payload(t, p, 1.0 + i / 10)
    assert router.stats().iot_messages == len(stream) - 1
    snap = router.iot.snapshot(10.0)  # type: ignore[union-attr]
    edge = snap.edges["edge-1"]
    assert (edge.seq_gaps, edge.rebirths_wanted, edge.births, edge.deaths) == (1, 1, 1, 1)
    assert (edge.online, edge.malformed, snap.malformed) == (False, 0, 0)
    devices = {k: v for k, v in snap.senders.items() if k != "edge-1"}
    assert len(devices) == 4
    assert all(d.health == "offline" for d in devices.values())
    assert sum(d.records for d in devices.values()) == 4 * 3 - 1


def test_the_attached_twin_exposes_gaps_and_sends_sparkplug_rekey_commands(tmp_path):
    stream = sparkplug_stream(tmp_path)
    twin = AttachedTwin(load_attach_file(doc()))
    dropped = next(i for i, (t, _p) in enumerate(stream) if "/DDATA/" in t)
    for i, (t, p) in enumerate(stream):
        if i != dropped:
            twin.on_mqtt(t, p, 100.0 + i)
    state = twin.state()
    assert (state.ingest.counts["iot_seq_gaps"], state.ingest.counts["iot_rebirths_wanted"]) == (
        1,
        1,
    )
    assert {d.id for d in state.devices} >= {f"edge-1.d{i:05d}" for i in range(4)}
    (act,) = twin._rekey_plan(twin.links["A-B"], "qber")
    assert act.topic == f"spBv1.0/{GROUP}/NCMD/edge-1"
    assert act.payload is not None
    assert parse_command(act.payload) == {"rekey"}
    twin.close()
