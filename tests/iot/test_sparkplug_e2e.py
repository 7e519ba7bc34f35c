"""Sparkplug B mode over the real Mosquitto, read by an independent Sparkplug B decoder.

A plain paho-mqtt client (not the project's transport) subscribes to ``spBv1.0/<group>/#`` on
a group of its own; pysparkplug (its own compiled Eclipse Tahu schema, its own topic parser)
decodes every message. The sealed envelopes in the ``Bytes`` metrics are opened with the
project's own code and the session's keys; the twin's attach ingest reads the same stream.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pysparkplug as sp
import pytest
from pysparkplug._protobuf import Payload as TahuPayload

from qkdtwin.iot import TelemetryConfig, TelemetrySession
from qkdtwin.iot.devices import VALUE_NAMES, VALUE_UNITS
from qkdtwin.iot.envelope import KIND_DEVICE, KIND_KEX, iter_records, open_envelope
from qkdtwin.iot.keys import mlkem_keypair
from qkdtwin.twin.attach import AttachAggregator
from qkdtwin.twin.ingest import (
    IngestRouter,
    IotMetadataStream,
    IotReadings,
    LinkStream,
    MqttIngest,
    ingest_topics,
)

from .conftest import MOSQUITTO

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

DECODERS = {
    "NBIRTH": sp.NBirth,
    "NDEATH": sp.NDeath,
    "NDATA": sp.NData,
    "DBIRTH": sp.DBirth,
    "DDATA": sp.DData,
    "DDEATH": sp.DDeath,
}


class PahoSniffer:
    """A plain paho-mqtt 2 client recording every message under one filter, in order."""

    def __init__(self, pattern: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"spb-sniff-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        self.client.subscribe(pattern, qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def _on(self, _c, _u, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, cond: Callable[[list[tuple[str, bytes]]], bool], timeout_s=20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if cond(self.messages):
                    return
            time.sleep(0.01)
        raise AssertionError("the sniffer did not see the expected messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def group() -> str:
    return f"spb{uuid.uuid4().hex[:10]}"  # one group per test: no crosstalk on the broker


def decode(topic: str, payload: bytes):
    t = sp.Topic.from_str(topic)
    return t, DECODERS[str(t.message_type)].decode(payload)


def kinds_of(messages) -> list[str]:
    return [t.split("/")[2] for t, _ in messages]


def test_devices_births_and_data_are_read_by_an_independent_decoder(pair):
    g, devices, intervals = group(), 6, 45
    sniff = PahoSniffer(f"spBv1.0/{g}/#")
    live = IngestRouter(
        LinkStream({"qkd-none": "A-B"}), IotMetadataStream(topic_style="sparkplug", group=g)
    )
    ingest = MqttIngest(MOSQUITTO, ingest_topics("sparkplug", g), live.on_payload).start()
    sent: dict[str, list[bytes]] = defaultdict(list)
    cfg = TelemetryConfig(
        scheme="mobile", devices=devices, broker=MOSQUITTO, group_id=g, rekey_messages=10,
        topic_style="sparkplug", bd_seq=9,
    )  # fmt: skip
    epochs = {}
    try:
        with TelemetrySession(
            cfg, pair.gateway_source, pair.aggregator_source,
            tap=lambda dev, rec: sent[dev].append(rec),
        ) as s:  # fmt: skip
            for _ in range(intervals):
                report = s.run_interval()
                assert (report.delivered, report.rejected) == (devices, {})
                epochs.update(s.aggregator.edges["edge-1"].epochs)  # keep every epoch's keys
            kinds = dict(zip(s.fleet.device_ids, s.fleet.kinds, strict=True))
            frames = s.totals["frames"]
        sniff.wait_for(lambda m: bool(m) and m[-1][0].endswith("/NDEATH/edge-1"))
        time.sleep(0.2)  # the live ingest's last messages
    finally:
        sniff.close()
        ingest.close()
    msgs = sniff.messages
    plain = [rec for recs in sent.values() for rec in recs]

    # namespace and order: NBIRTH, a DBIRTH per device, data, a DDEATH per device, NDEATH
    decoded = [decode(t, p) for t, p in msgs]
    assert all(t.namespace == "spBv1.0" and t.group_id == g for t, _ in decoded)
    assert all(t.edge_node_id == "edge-1" for t, _ in decoded)
    types = kinds_of(msgs)
    assert types[: devices + 1] == ["NBIRTH"] + ["DBIRTH"] * devices
    assert types[-devices - 1 :] == ["DDEATH"] * devices + ["NDEATH"]
    assert types.count("DDATA") + types.count("NDATA") == frames

    # seq: 0 in NBIRTH, +1 mod 256 on every later message; it wrapped
    seqs = [p.seq for (t, p) in decoded if str(t.message_type) != "NDEATH"]
    assert len(seqs) > 256
    assert seqs == [i % 256 for i in range(len(seqs))]

    # bdSeq: the same UInt64 in NBIRTH and in the (clean) NDEATH
    nbirth, ndeath = decoded[0][1], decoded[-1][1]
    bd = {m.name: m for m in nbirth.metrics}["bdSeq"]
    assert (bd.datatype, bd.value) == (sp.DataType.UINT64, 9)
    assert (ndeath.bd_seq_metric.name, ndeath.bd_seq_metric.value) == ("bdSeq", 9)

    # births: names, datatypes and units (engUnit, read with the independent schema), no values
    births = {t.device_id: (p, payload) for (t, p), (_, payload) in zip(decoded, msgs, strict=True)
              if str(t.message_type) == "DBIRTH"}  # fmt: skip
    assert set(births) == set(kinds)
    for dev, (birth, raw) in births.items():
        kind = kinds[dev]
        by_name = {m.name: m for m in birth.metrics}
        assert set(by_name) == {"qkdtwin/kind", "qkdtwin/envelope", *VALUE_NAMES[kind]}
        assert by_name["qkdtwin/kind"].value == kind
        assert by_name["qkdtwin/envelope"].datatype == sp.DataType.BYTES
        for name in VALUE_NAMES[kind]:
            assert (by_name[name].datatype, by_name[name].is_null) == (sp.DataType.DOUBLE, True)
        units = {
            m.name: dict(zip(m.properties.keys, [v.string_value for v in m.properties.values],
                             strict=True)).get("engUnit", "")
            for m in TahuPayload.FromString(raw).metrics
        }  # fmt: skip
        assert {n: units[n] for n in VALUE_NAMES[kind]} == {
            n: VALUE_UNITS[n] for n in VALUE_NAMES[kind]
        }

    # data: one Bytes metric; its records open, with the session's keys, to what was sealed;
    # every KEX (NDATA) precedes the device data of its epoch; no reading in clear anywhere
    opened: dict[str, list[bytes]] = defaultdict(list)
    announced: set[int] = set()
    for (t, p), (_topic, raw) in zip(decoded, msgs, strict=True):
        assert not any(rec in raw for rec in plain)
        if str(t.message_type) not in ("NDATA", "DDATA"):
            continue
        (metric,) = p.metrics
        assert (metric.name, metric.datatype) == ("qkdtwin/envelope", sp.DataType.BYTES)
        for header, body in iter_records(metric.value):
            if str(t.message_type) == "NDATA":
                assert (header.kind, header.sender_id) == (KIND_KEX, "edge-1")
                announced.add(header.epoch)
                continue
            assert (header.kind, header.sender_id) == (KIND_DEVICE, t.device_id)
            assert header.epoch in announced
            aead = epochs[header.epoch].sender_aead(header.sender_id)
            opened[t.device_id].append(open_envelope(aead, header, body))
    assert len(announced) == devices * intervals // 10
    assert opened == sent

    # the twin's ingest, live over MQTT: the same devices, records, births and no gap
    snap = live.iot.snapshot(time.time())  # type: ignore[union-attr]
    edge = snap.edges["edge-1"]
    assert (edge.births, edge.deaths, edge.online, edge.bd_seq, edge.seq_gaps) == (
        1,
        1,
        False,
        9,
        0,
    )
    assert edge.records == len(plain) + len(announced)
    devs = {k: v for k, v in snap.senders.items() if k != "edge-1"}
    assert set(devs) == set(kinds)
    assert all(d.health == "offline" and d.records == intervals for d in devs.values())
    assert devs[min(devs)].units == {n: VALUE_UNITS[n] for n in VALUE_NAMES[kinds[min(devs)]]}

    # ... and the same recording with one DDATA dropped on the way: one seq gap, one rebirth
    # a host would ask for, and that device one record short
    lost = next(i for i, t in enumerate(types) if t == "DDATA" and i > 100)
    replay = IotMetadataStream(topic_style="sparkplug", group=g)
    for i, (t, p) in enumerate(msgs):
        if i != lost:
            replay.offer(t, p, time.time())
    snap = replay.snapshot(time.time())
    assert (snap.edges["edge-1"].seq_gaps, snap.edges["edge-1"].rebirths_wanted) == (1, 1)
    short = msgs[lost][0].rsplit("/", 1)[1]
    assert snap.senders[short].records == intervals - 1


def test_the_will_is_an_ndeath_with_the_births_bdseq(pair):
    g = group()
    sniff = PahoSniffer(f"spBv1.0/{g}/#")
    cfg = TelemetryConfig(
        scheme="fixed", devices=3, broker=MOSQUITTO, group_id=g, topic_style="sparkplug",
        bd_seq=255,
    )  # fmt: skip
    try:
        with TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source) as s:
            assert s.run_interval().delivered == 3
            s.close(graceful=False)  # the TCP connection dropped without DISCONNECT
            sniff.wait_for(lambda m: any("/NDEATH/" in t for t, _ in m))
            s._wait(lambda: not s.aggregator.edges["edge-1"].online, "the will")
    finally:
        sniff.close()
    types = kinds_of(sniff.messages)
    assert types == ["NBIRTH", "DBIRTH", "DBIRTH", "DBIRTH", "NDATA", "NDEATH"]  # no DDEATH
    birth = decode(*sniff.messages[0])[1]
    will = decode(*sniff.messages[-1])[1]
    assert {m.name: m.value for m in birth.metrics}["bdSeq"] == 255
    assert (will.bd_seq_metric.datatype, will.bd_seq_metric.value) == (sp.DataType.UINT64, 255)
    assert s.receiver is not None
    assert s.receiver.totals()["deaths"] == 1


def test_the_twin_decrypts_the_sparkplug_stream_to_the_devices_values(pair, tmp_path: Path):
    """The attach mode's keyed ingest (pqc-only here: no KME needed) reads the same values."""
    g, seed = group(), bytes(range(64))
    sniff = PahoSniffer(f"spBv1.0/{g}/#")
    cfg = TelemetryConfig(
        scheme="mobile", devices=4, broker=MOSQUITTO, group_id=g, topic_style="sparkplug",
        mode="pqc-only",
    )  # fmt: skip
    try:
        with TelemetrySession(cfg, None, None, kem_private_key=mlkem_keypair(seed)) as s:
            for _ in range(3):
                report = s.run_interval()
            latest = {d: r.values for d, r in report.latest.items()}
        sniff.wait_for(lambda m: bool(m) and m[-1][0].endswith("/NDEATH/edge-1"))
    finally:
        sniff.close()
    (tmp_path / "kem.seed").write_text(seed.hex())
    dummy = tmp_path / "unused.pem"  # pqc-only: the SAE certificate is never loaded
    spec = AttachAggregator(
        sae_id="sae-twin", kme="M1", cert=dummy, key=dummy, ca=dummy,
        kem_seed_file=tmp_path / "kem.seed", group=g, scheme="mobile", mode="pqc-only",
        edges={"edge-1": "sae-gw"},
    )  # fmt: skip
    for drop in (None, 12):
        twin = IotReadings(spec, "https://127.0.0.1:9", topic_style="sparkplug")
        for i, (t, p) in enumerate(sniff.messages):
            if i != drop:
                twin.offer(t, p, 1.0)
        counters = twin.counters()
        if drop is None:
            assert {d.device_id: d.values for d in twin.latest()} == latest
            assert (counters["delivered"], counters["sparkplug.seq_gaps"]) == (12, 0)
            assert counters["sparkplug.devices"] == 4
        else:
            assert kinds_of(sniff.messages)[drop] == "DDATA"
            assert (counters["delivered"], counters["sparkplug.seq_gaps"]) == (11, 1)
        twin.close()
