"""Sparkplug B mode, without a broker: codec, topics, seq wrap, grouping, host rules, commands.

The independent decoder is pysparkplug (installed by the Makefile with ``--no-deps``: it pins
paho-mqtt<2 for its client, which is not used here), whose own compiled Eclipse Tahu schema
reads what ``qkdtwin.iot.sparkplug`` writes, and the reverse.
"""

from __future__ import annotations

import json
import sys

import pysparkplug as sp
import pytest

from qkdtwin.cli import main
from qkdtwin.errors import ConfigError, MalformedEnvelopeError
from qkdtwin.iot import LocalKeyPair, MemoryBus, TelemetryConfig, TelemetrySession
from qkdtwin.iot.sparkplug import (
    ENVELOPE_METRIC,
    REBIRTH_METRIC,
    REKEY_METRIC,
    DataType,
    Metric,
    Payload,
    SparkplugTopic,
    decode_payload,
    encode_payload,
    next_seq,
    parse_topic,
    require_protobuf,
    seq_missing,
    sparkplug_topic,
)
from qkdtwin.iot.sparkplug_edge import SparkplugEdgeNode, group_records, parse_command
from qkdtwin.iot.sparkplug_host import SparkplugHost


class Recorder:
    """A transport stand-in that keeps what is published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.sent.append((topic, payload))


def test_codec_round_trip_of_every_scalar_type_null_and_properties():
    metrics = (
        Metric("bdSeq", DataType.UINT64, 255, 17),
        Metric("i8", DataType.INT8, -128),
        Metric("i16", DataType.INT16, -2),
        Metric("i32", DataType.INT32, -(2**31)),
        Metric("i64", DataType.INT64, -(2**63)),
        Metric("u32", DataType.UINT32, 2**32 - 1),
        Metric("f", DataType.FLOAT, 1.5),
        Metric("d", DataType.DOUBLE, -0.1),
        Metric("b", DataType.BOOLEAN, True),
        Metric("s", DataType.STRING, "héllo"),
        Metric("env", DataType.BYTES, bytes(range(256))),
        Metric("t", DataType.DOUBLE, None, is_null=True, properties={"engUnit": "°C", "n": -3}),
    )
    p = Payload(1_700_000_000_000, 42, metrics)
    assert decode_payload(encode_payload(p)) == p


def test_the_independent_decoder_reads_our_payloads_and_we_read_its():
    ours = Payload(5, 0, (Metric("bdSeq", DataType.UINT64, 3, 5), Metric("x", DataType.INT8, -3)))
    theirs = sp.NBirth.decode(encode_payload(ours))
    assert (theirs.timestamp, theirs.seq) == (5, 0)
    assert [(m.name, m.datatype, m.value) for m in theirs.metrics] == [
        ("bdSeq", sp.DataType.UINT64, 3),
        ("x", sp.DataType.INT8, -3),
    ]
    data = sp.DData(
        timestamp=9,
        seq=255,
        metrics=(sp.Metric(9, ENVELOPE_METRIC, sp.DataType.BYTES, value=b"\x01"),),
    )
    back = decode_payload(data.encode(include_dtypes=True))
    assert (back.timestamp, back.seq) == (9, 255)
    assert back.metric(ENVELOPE_METRIC) == Metric(ENVELOPE_METRIC, DataType.BYTES, b"\x01", 9)


def test_garbage_is_not_a_payload():
    with pytest.raises(MalformedEnvelopeError) as err:
        decode_payload(b"\xff\xff\xff\xff")
    assert err.value.reason == "bad_sparkplug"


def test_topics():
    assert sparkplug_topic("g", "NBIRTH", "e") == "spBv1.0/g/NBIRTH/e"
    assert sparkplug_topic("g", "DDATA", "e", "d") == "spBv1.0/g/DDATA/e/d"
    assert parse_topic("spBv1.0/g/DDATA/e/d") == SparkplugTopic("g", "DDATA", "e", "d")
    assert parse_topic("spBv1.0/g/NDEATH/e") == SparkplugTopic("g", "NDEATH", "e")
    for bad in (
        "spBv1.0/STATE/host",
        "spBv1.0/g/DDATA/e",  # device message without a device
        "spBv1.0/g/NDATA/e/d",  # node message with one
        "spBv1.0/g/XDATA/e",
        "qkdtwin/v1/g/NDATA/e",
        "spBv1.0//NDATA/e",
    ):
        assert parse_topic(bad) is None, bad


def test_seq_wraps_from_255_to_0_and_gaps_are_counted_across_the_wrap():
    assert next_seq(254) == 255
    assert next_seq(255) == 0
    assert (seq_missing(255, 0), seq_missing(254, 1), seq_missing(7, 7)) == (0, 2, 255)
    tr = Recorder()
    node = SparkplugEdgeNode("g", "e", [("e.d00000", "power")], bd_seq=4)
    node.publish_births(tr)
    for i in range(300):
        node.publish_records(tr, ["e.d00000"], [bytes([i % 256]) * 40])
    node.publish_deaths(tr)
    seqs = [decode_payload(p).seq for t, p in tr.sent if "NDEATH" not in t]
    assert seqs[0] == 0  # NBIRTH
    assert seqs == [i % 256 for i in range(len(seqs))]  # DBIRTH 1, 300 DDATA, DDEATH: wraps
    assert len(seqs) == 303
    independent = [sp.DData.decode(p).seq for t, p in tr.sent if "/DDATA/" in t]
    assert independent[253:257] == [255, 0, 1, 2]  # the 255th DDATA has seq 255, then 0

    host = SparkplugHost("g")
    for t, p in tr.sent:
        host.offer(t, p)
    n = host.nodes["e"]
    assert (n.seq_gaps, n.gap_events, n.rebirths_wanted, n.online, n.bd_seq) == (0, 0, 0, False, 4)

    host = SparkplugHost("g")
    dropped = next(i for i, (t, p) in enumerate(tr.sent) if decode_payload(p).seq == 255)
    for i, (t, p) in enumerate(tr.sent):
        if i != dropped:
            host.offer(t, p)
    assert (host.nodes["e"].seq_gaps, host.nodes["e"].rebirths_wanted) == (1, 1)


def test_births_declare_names_datatypes_and_units_and_no_reading():
    tr = Recorder()
    node = SparkplugEdgeNode(
        "g", "e", [("e.d0", "vibration")], node_info={"scheme": "mobile", "devices": 1, "kem": None}
    )
    node.publish_births(tr)
    nbirth = decode_payload(tr.sent[0][1])
    assert {m.name: m.datatype for m in nbirth.metrics} == {
        "bdSeq": DataType.UINT64,
        REBIRTH_METRIC: DataType.BOOLEAN,
        REKEY_METRIC: DataType.BOOLEAN,
        ENVELOPE_METRIC: DataType.BYTES,
        "qkdtwin/scheme": DataType.STRING,
        "qkdtwin/devices": DataType.UINT64,
    }
    dbirth = decode_payload(tr.sent[1][1])
    values = {m.name: m for m in dbirth.metrics if m.datatype == DataType.DOUBLE}
    assert set(values) == {"rms_mm_s", "peak_mm_s", "crest_factor", "kurtosis"}
    assert all(m.is_null and m.value is None for m in values.values())
    assert values["rms_mm_s"].properties == {"engUnit": "mm/s"}
    assert values["kurtosis"].properties == {}  # dimensionless: no unit


def test_grouping_keeps_a_kex_before_the_device_data_of_its_epoch():
    senders = ["e", "d1", "d2", "d1", "e", "d2", "d1"]
    records = [b"K1", b"a1", b"b1", b"a2", b"K2", b"b2", b"a3"]
    assert group_records("e", senders, records, 1024) == [
        (None, b"K1"),
        ("d1", b"a1a2"),
        ("d2", b"b1"),
        (None, b"K2"),
        ("d2", b"b2"),
        ("d1", b"a3"),
    ]
    # the fixed scheme: KEX and aggregates all the gateway's, cut at frame_bytes
    assert group_records("e", ["e"] * 3, [b"x" * 600] * 3, 1024) == [
        (None, b"x" * 600),
        (None, b"x" * 600),
        (None, b"x" * 600),
    ]


def test_host_rules_stale_death_duplicates_and_data_without_a_birth():
    tr = Recorder()
    node = SparkplugEdgeNode("g", "e", [("e.d0", "energy")], bd_seq=2)
    node.publish_births(tr)
    node.publish_records(tr, ["e.d0"], [b"r"])
    host = SparkplugHost("g")
    for t, p in tr.sent:
        host.offer(t, p)
    host.offer(*tr.sent[-1])  # a QoS 1 redelivery
    stale = Payload(1, None, (Metric("bdSeq", DataType.UINT64, 1),))
    host.offer("spBv1.0/g/NDEATH/e", encode_payload(stale))
    n = host.nodes["e"]
    assert (n.duplicates, n.stale_deaths, n.online, n.seq_gaps) == (1, 1, True, 0)
    assert n.devices["e.d0"].metrics["energy_kwh"] == ("DOUBLE", "kWh")
    host.offer("spBv1.0/g/NDATA/e", b"\xff\xff")
    host.offer("spBv1.0/other/NDATA/e", tr.sent[-1][1])
    assert (host.malformed, host.ignored) == (1, 1)

    late = SparkplugHost("g")  # attached mid-session: no birth seen
    late.offer(*tr.sent[-1])
    assert (late.nodes["e"].rebirths_wanted, late.nodes["e"].seq_gaps) == (1, 0)


def test_commands_rebirth_and_rekey_over_the_memory_bus(tmp_path):
    bus = MemoryBus()
    seen: list[tuple[str, bytes]] = []
    bus.client().subscribe("spBv1.0/g/#", lambda t, p: seen.append((t, p)))
    cfg = TelemetryConfig(
        scheme="mobile", devices=3, broker="memory", group_id="g", topic_style="sparkplug"
    )
    with (
        LocalKeyPair(tmp_path / "kms", initial_keys=16, feed=False) as keys,
        TelemetrySession(cfg, keys.gateway_source, keys.aggregator_source, bus=bus) as s,
    ):
        assert s.run_interval().delivered == 3
        cmd = bus.client()
        ts = 1
        cmd.publish(
            "spBv1.0/g/NCMD/edge-1",
            encode_payload(Payload(ts, None, (Metric(REBIRTH_METRIC, DataType.BOOLEAN, True),))),
        )
        births = [decode_payload(p).seq for t, p in seen if "BIRTH" in t]
        assert births == [0, 1, 2, 3, 0, 1, 2, 3]  # NBIRTH and 3 DBIRTHs, twice
        cmd.publish(
            "spBv1.0/g/NCMD/edge-1",
            encode_payload(Payload(ts, None, (Metric(REKEY_METRIC, DataType.BOOLEAN, True),))),
        )
        report = s.run_interval()
        assert (report.delivered, report.epochs_started, report.rejected) == (3, 1, {})
        assert s.totals["commands.rebirth"] == 1
        assert s.totals["commands.rekey"] == 1
        assert s.receiver is not None
        assert s.receiver.totals()["seq_gaps"] == 0
    assert parse_command(seen[-1][1]) == set()  # NDEATH: no command


def test_missing_protobuf_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    with pytest.raises(ConfigError, match=r"pip install 'qkdtwin\[sparkplug\]'"):
        require_protobuf()
    code = main(["iot", "run", "--topic-style", "sparkplug", "--broker", "memory", "--keys",
                 "local", "-n", "2", "-m", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "qkdtwin[sparkplug]" in err[0]


def test_a_bad_topic_style_is_one_line_and_exit_2(capsys):
    code = main(["iot", "run", "--topic-style", "sparkplugb", "--broker", "memory"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "--topic-style" in err[0]


def test_iot_run_reports_the_sparkplug_counts(capsys):
    args = ["iot", "run", "--topic-style", "sparkplug", "--broker", "memory", "--keys", "local"]
    assert main([*args, "-n", "3", "-m", "2", "--scheme", "fixed", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["topic_style"], out["sent"], out["delivered"], out["rejected"]) == (
        "sparkplug",
        6,
        6,
        {},
    )
    assert out["frames"] == 2  # one NDATA per interval: the KEX and the aggregate together
    spb = out["sparkplug"]
    assert (spb["births"], spb["devices"], spb["seq_gaps"], spb["malformed"]) == (1, 3, 0, 0)


def test_a_host_that_asks_for_a_rebirth_on_a_gap_gets_one(tmp_path):
    """A receiver wired like a standard host: a lost message -> NCMD rebirth -> new births."""
    from qkdtwin.iot import Aggregator, SparkplugReceiver
    from qkdtwin.iot.keys import mlkem_keypair

    bus, kem = MemoryBus(), mlkem_keypair()
    cfg = TelemetryConfig(
        scheme="mobile", devices=2, broker="memory", group_id="h", topic_style="sparkplug",
        mode="pqc-only",
    )  # fmt: skip
    with TelemetrySession(cfg, None, None, bus=bus, kem_private_key=kem) as s:
        cmd = bus.client()
        rebirth = Payload(1, None, (Metric(REBIRTH_METRIC, DataType.BOOLEAN, True),))
        host = SparkplugReceiver(
            {"edge-1": Aggregator(None, kem, scheme="mobile", mode="pqc-only")},
            "h",
            on_rebirth_wanted=lambda g, e: cmd.publish(
                sparkplug_topic(g, "NCMD", e), encode_payload(rebirth)
            ),
        )
        seen = []

        def lossy(topic: str, payload: bytes) -> None:
            seen.append(topic)
            if len(seen) != 6:  # lose one DDATA on the way to this host
                host.on_message(topic, payload)

        bus.client().subscribe("spBv1.0/h/#", lossy)
        for _ in range(3):
            s.run_interval()
        totals = host.totals()
        # one rebirth because this host joined after the NBIRTH, one for the lost message
        assert (totals["seq_gaps"], totals["rebirths_wanted"], totals["births"]) == (1, 2, 2)
        assert s.totals["commands.rebirth"] == 2
        assert "/DDATA/" in seen[5]
        assert host.aggregators["edge-1"].delivered == 2 * 3 - 1
