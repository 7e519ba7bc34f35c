"""Attach-mode ingest without a broker: LinkStream, IotMetadataStream, KmePoller, recordings."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import strategies as st

import qkdtwin.twin.ingest as ingest
from qkdtwin.errors import ConfigError
from qkdtwin.interfaces.link_telemetry import perf_topic
from qkdtwin.iot.envelope import KIND_DEVICE, Sealer, seal_kex
from qkdtwin.kms.tls import RunningServer, init_pki, make_server
from qkdtwin.twin.ingest import (
    IngestRouter,
    IotMetadataStream,
    KmeEndpoint,
    KmePoller,
    LinkStream,
    RawPoll,
    Recorder,
    Replayer,
    StreamCounters,
    read_records,
)
from tests.ports import free_port

T0 = 1_700_000_000.0
MOD, LINK = "qkd-ab-1", "A-B"


def tele(seq: int, module: str = MOD, link: str = LINK, dur: float = 1.0, **over: Any) -> dict:
    start = T0 + seq * dur
    msg = {
        "schema_version": 1,
        "module_id": module,
        "link_id": link,
        "local_node": link.split("-")[0],
        "remote_node": link.split("-")[-1],
        "seq": seq,
        "interval_start": start,
        "interval_end": start + dur,
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
    msg.update(over)
    return msg


def raw(seq: int, **kw: Any) -> bytes:
    return json.dumps(tele(seq, **kw)).encode()


def recv_t(seq: int, dur: float = 1.0, delay: float = 0.05) -> float:
    """Receive time of message ``seq``: its interval end plus a small broker delay."""
    return T0 + (seq + 1) * dur + delay


def feed(
    s: LinkStream, seq: int, *, module: str = MOD, t: float | None = None, **kw: Any
) -> list[int]:
    out = s.offer(
        perf_topic(module), raw(seq, module=module, **kw), recv_t(seq) if t is None else t
    )
    return [m.seq for m in out]


def counters(**kw: int) -> StreamCounters:
    return StreamCounters(**kw)


# -- LinkStream: acceptance and every rejection path ------------------------------------------


def test_in_order_messages_are_released_at_once_and_counted():
    s = LinkStream({MOD: LINK})
    assert [feed(s, i) for i in range(4)] == [[0], [1], [2], [3]]
    snap = s.snapshot()
    assert snap.total == counters(accepted=4, released=4)
    assert snap.modules == {MOD: counters(accepted=4, released=4)}
    assert snap.offered == 4
    assert snap.versions == {}


def test_released_message_is_the_validated_model():
    s = LinkStream({MOD: LINK})
    (msg,) = s.offer(perf_topic(MOD), raw(0), recv_t(0))
    assert isinstance(msg, ingest.link_stream.LinkTelemetry)
    assert (msg.module_id, msg.link_id, msg.secret_bits, msg.duration_s) == (MOD, LINK, 12, 1.0)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps(tele(0, qber=2.0)).encode(), "qber"),
        (json.dumps(tele(0, sifted_bits=1, errors=5)).encode(), "errors must be <= sifted_bits"),
        (json.dumps({**tele(0), "extra": 1}).encode(), "extra"),
        (json.dumps({k: v for k, v in tele(0).items() if k != "seq"}).encode(), "seq"),
    ],
)
def test_malformed_payloads_are_counted_per_module(payload, detail):
    s = LinkStream({MOD: LINK})
    assert s.offer(perf_topic(MOD), payload, T0) == []
    snap = s.snapshot()
    assert snap.total == counters(malformed=1)
    assert snap.modules[MOD] == counters(malformed=1)  # the topic names a known module
    (rej,) = snap.recent
    assert (rej.reason, rej.module_id) == ("malformed", MOD)
    assert detail in rej.detail
    assert feed(s, 0) == [0]  # the stream goes on


def test_version_mismatch_is_its_own_counter_with_the_version_recorded():
    s = LinkStream({MOD: LINK})
    assert s.offer(perf_topic(MOD), raw(0, schema_version=2), T0) == []
    assert s.offer(perf_topic(MOD), raw(1, schema_version=2), T0) == []
    bad = {k: v for k, v in tele(2).items() if k != "schema_version"}
    assert s.offer(perf_topic(MOD), json.dumps(bad).encode(), T0) == []
    assert s.offer(perf_topic(MOD), raw(3, schema_version="1"), T0) == []
    snap = s.snapshot()
    assert snap.total == counters(version_mismatch=4)
    assert snap.modules[MOD] == counters(version_mismatch=4)
    assert snap.versions == {"2": 2, "null": 1, '"1"': 1}
    assert snap.recent[0].detail == "schema_version 2"


def test_unknown_link_in_mapping_mode():
    s = LinkStream({MOD: LINK})
    # An unknown module: counted in the total only (garbage cannot grow per-module state).
    assert feed(s, 0, module="rogue") == []
    # A known module naming another link.
    assert s.offer(perf_topic(MOD), raw(0, link="A-C"), recv_t(0)) == []
    snap = s.snapshot()
    assert snap.total == counters(unknown_link=2)
    assert snap.modules == {MOD: counters(unknown_link=1)}
    assert [r.detail for r in snap.recent] == [
        "link 'A-B': unknown module",
        "link 'A-C': module belongs to 'A-B'",
    ]


def test_unknown_link_in_link_set_mode_and_modules_are_learnt():
    s = LinkStream(["A-B", "B-C"])
    assert s.modules == ()
    assert feed(s, 0, module="m2", link="X-Y") == []
    assert feed(s, 0, module="m1") == [0]
    assert feed(s, 0, module="m2", link="B-C") == [0]
    assert s.modules == ("m1", "m2")
    snap = s.snapshot()
    assert snap.total == counters(unknown_link=1, accepted=2, released=2)
    assert snap.modules["m2"] == counters(accepted=1, released=1)  # learnt after the rejection
    assert s.source_status("m1", recv_t(0)).link_id == "A-B"
    assert s.source_status("nobody", T0).status == "never-seen"


def test_link_set_mode_learns_a_bounded_number_of_modules():
    s = LinkStream(["A-B"], max_modules=2)
    assert [feed(s, 0, module=f"m{i}") for i in range(3)] == [[0], [0], []]
    assert s.modules == ("m0", "m1")
    assert s.snapshot().total == counters(accepted=2, released=2, unknown_link=1)


def test_topic_mismatch():
    s = LinkStream({MOD: LINK, "other": "B-C"})
    assert s.offer(perf_topic("other"), raw(0), recv_t(0)) == []  # payload says MOD
    assert s.offer("qkdtwin/link/v1/qkd-ab-1/state", raw(0), recv_t(0)) == []
    assert s.offer("qkdtwin/link/v1/perf", raw(0), recv_t(0)) == []
    assert s.offer("something/else", raw(0), recv_t(0)) == []
    snap = s.snapshot()
    assert snap.total == counters(topic_mismatch=4)
    assert snap.modules["other"] == counters(topic_mismatch=1)
    assert snap.modules[MOD] == counters()
    assert "topic names 'other', payload 'qkd-ab-1'" in snap.recent[0].detail


def test_duplicates_of_released_and_of_held_messages():
    s = LinkStream({MOD: LINK})
    assert feed(s, 0) == [0]
    assert feed(s, 0) == []  # QoS 1 redelivery of a released message
    assert feed(s, 2) == []  # held behind the gap at 1
    assert feed(s, 2) == []  # duplicate of a held message
    assert feed(s, 1) == [1, 2]
    snap = s.snapshot()
    assert snap.total == counters(accepted=3, released=3, duplicate=2, reordered=1)
    assert [r.reason for r in snap.recent] == ["duplicate", "duplicate"]


def test_reorder_within_depth_is_released_in_order():
    s = LinkStream({MOD: LINK})
    assert feed(s, 0) == [0]
    assert feed(s, 3) == []
    assert feed(s, 2) == []
    assert feed(s, 1) == [1, 2, 3]
    assert feed(s, 4) == [4]
    snap = s.snapshot()
    # 2 and 1 arrived after a higher seq.
    assert snap.total == counters(accepted=5, released=5, reordered=2)
    assert s.source_status(MOD, recv_t(4)).last_released_seq == 4


def test_gap_is_skipped_after_depth_later_messages_and_then_late():
    s = LinkStream({MOD: LINK}, reorder_depth=3)
    assert feed(s, 0) == [0]
    assert feed(s, 2) == []
    assert feed(s, 3) == []
    assert s.source_status(MOD, recv_t(3)).buffered == 2
    assert feed(s, 4) == [2, 3, 4]  # three held: the gap at 1 is given up
    assert feed(s, 1) == []  # too late now
    snap = s.snapshot()
    assert snap.total == counters(accepted=4, released=4, lost=1, late=1)
    assert snap.recent[-1].detail == "seq 1 < next expected 5"


def test_default_depth_is_eight():
    s = LinkStream({MOD: LINK}, gap_timeout_intervals=100.0)  # only the depth can skip here
    assert ingest.DEFAULT_REORDER_DEPTH == 8
    feed(s, 0)
    outs = [feed(s, i) for i in range(3, 11)]  # 1 and 2 missing; 8 later messages
    assert outs[:-1] == [[]] * 7
    assert outs[-1] == list(range(3, 11))
    assert s.snapshot().total.lost == 2


def test_gap_is_skipped_after_timeout_in_intervals():
    s = LinkStream({MOD: LINK}, gap_timeout_intervals=2.0)
    dur = 5.0
    feed(s, 0, dur=dur, t=T0 + 5)
    t_held = T0 + 15.125  # exact in binary, so the boundary below is exact too
    assert feed(s, 2, dur=dur, t=t_held) == []
    assert s.tick(t_held + 2 * dur - 0.01) == []
    assert [m.seq for m in s.tick(t_held + 2 * dur)] == [2]
    assert s.snapshot().total == counters(accepted=2, released=2, lost=1)


def test_timeout_is_applied_when_another_module_offers():
    s = LinkStream({MOD: LINK, "m2": "B-C"})
    feed(s, 0)
    feed(s, 2)
    out = s.offer(perf_topic("m2"), raw(0, module="m2", link="B-C"), recv_t(2) + 5)
    assert [(m.module_id, m.seq) for m in out] == [(MOD, 2), ("m2", 0)]


@pytest.mark.parametrize(
    ("offset", "skewed"), [(0.05, False), (4.9, False), (5.1, True), (-60.0, True)]
)
def test_skewed_messages_are_accepted_and_flagged(offset, skewed):
    s = LinkStream({MOD: LINK})
    t = T0 + 1 + offset  # interval_end of seq 0 is T0 + 1
    assert feed(s, 0, t=t) == [0]  # released whatever the clock says
    snap = s.snapshot()
    assert snap.total == counters(accepted=1, released=1, skewed=int(skewed))
    status = s.source_status(MOD, t)
    assert status.skewed is skewed
    assert status.clock_offset_s == pytest.approx(offset, abs=1e-5)
    assert feed(s, 1) == [1]
    assert s.source_status(MOD, recv_t(1)).skewed is False  # the flag follows the last message


def test_staleness_after_k_intervals_of_the_modules_own_length():
    s = LinkStream({MOD: LINK, "m2": "B-C"})
    assert s.source_status(MOD, T0).status == "never-seen"
    assert s.stale_sources(T0) == []
    dur = 2.0
    for i in range(3):
        feed(s, i, dur=dur, t=T0 + (i + 1) * dur)
    last = T0 + 3 * dur
    assert s.source_status(MOD, last + 3 * dur).status == "ok"  # K = 3 intervals of 2 s
    st = s.source_status(MOD, last + 3 * dur + 0.01)
    assert (st.status, st.interval_s, st.age_s) == ("stale", dur, pytest.approx(6.01))
    assert s.stale_sources(last + 7) == [MOD]
    assert s.statuses(last + 7)["m2"].status == "never-seen"
    feed(s, 3, dur=dur, t=last + 8)
    assert s.source_status(MOD, last + 8).status == "ok"


def test_upstream_loss_marks_sources_stale_until_their_next_message():
    s = LinkStream({MOD: LINK})
    feed(s, 0)
    s.mark_upstream_lost(recv_t(0) + 0.1)
    assert s.source_status(MOD, recv_t(0) + 0.2).status == "stale"
    feed(s, 1)
    assert s.source_status(MOD, recv_t(1)).status == "ok"


def test_module_restart_is_not_late():
    s = LinkStream({MOD: LINK})
    for i in range(5):
        feed(s, i)
    feed(s, 7)  # held behind a gap when the module restarts
    later = T0 + 100
    out = s.offer(perf_topic(MOD), raw(0, interval_start=later, interval_end=later + 1), later + 1)
    assert [m.seq for m in out] == [7, 0]
    assert feed(s, 1, interval_start=later + 1, interval_end=later + 2, t=later + 2) == [1]
    assert s.snapshot().total == counters(accepted=8, released=8, restarts=1, lost=2)


def test_bad_constructor_arguments():
    with pytest.raises(ConfigError, match="reorder_depth"):
        LinkStream({MOD: LINK}, reorder_depth=0)
    with pytest.raises(ConfigError, match="skew_tolerance_s"):
        LinkStream({MOD: LINK}, skew_tolerance_s=0)
    with pytest.raises(ConfigError, match="at least one link"):
        LinkStream([])
    with pytest.raises(ConfigError, match="unknown module"):
        LinkStream({MOD: LINK}).source_status("nope", T0)


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=80),
    st.lists(st.sampled_from([b"", b"{}", b"null", b"\x00"]), max_size=5),
    st.integers(1, 10),
)
def test_counters_add_up_and_release_order_is_strict(seqs, garbage, depth):
    s = LinkStream({MOD: LINK}, reorder_depth=depth)
    released: list[int] = []
    for i, seq in enumerate(seqs):
        released += feed(s, seq, t=T0 + i * 0.1)
    for g in garbage:
        released += [m.seq for m in s.offer(perf_topic(MOD), g, T0)]
    released += [m.seq for m in s.tick(T0 + 1e6)]
    assert released == sorted(set(released))  # strictly increasing, never twice
    assert set(released) <= set(seqs)
    c = s.snapshot().total
    offered = len(seqs) + len(garbage)
    assert c.accepted + c.rejected == offered == s.snapshot().offered
    assert c.accepted == c.released == len(released)  # everything held was released at the end
    assert c.lost == (max(released) - min(released) + 1) - len(released)


# -- IotMetadataStream ----------------------------------------------------------------------


KEY = bytes(range(32))
KID = str(uuid.UUID(int=7))


def device_records(sender: str, n: int, epoch: int = 1) -> list[bytes]:
    sealer = Sealer(
        AESGCM(KEY), mode=1, kind=KIND_DEVICE, key_id=KID, epoch=epoch, sender_id=sender
    )
    return [sealer.seal(f"{sender}:{i}".encode()) for i in range(n)]


def kex(edge: str, epoch: int) -> bytes:
    return seal_kex(AESGCM(KEY), mode=1, key_id=KID, epoch=epoch, sender_id=edge, kem_ct=b"k" * 32)


def test_iot_metadata_from_clear_headers_only():
    s = IotMetadataStream(interval_s=1.0)
    g, e = "plant", "edge-1"
    ddata = f"qkdtwin/v1/{g}/DDATA/{e}"
    s.offer(f"qkdtwin/v1/{g}/NBIRTH/{e}", json.dumps({"bdSeq": 0, "edge": e}).encode(), T0)
    d1 = device_records("dev-1", 4)
    d2 = device_records("dev-2", 2)
    s.offer(ddata, kex(e, 1) + d1[0] + d2[0], T0 + 1)
    s.offer(ddata, d1[1] + d1[3] + d2[1], T0 + 2)  # d1 seq 3 lost
    s.offer(ddata, d2[1], T0 + 2.5)  # redelivered
    snap = s.snapshot(T0 + 2.5)
    edge = snap.edges[e]
    assert (edge.group, edge.frames, edge.records, edge.rekeys, edge.epoch, edge.key_id) == (
        g,
        3,
        7,
        1,
        1,
        KID,
    )
    assert edge.bytes == len(kex(e, 1) + d1[0] + d2[0]) + len(d1[1] + d1[3] + d2[1]) + len(d2[1])
    assert (edge.online, edge.births, edge.malformed) == (True, 1, 0)
    dev1, dev2 = snap.senders["dev-1"], snap.senders["dev-2"]
    assert (dev1.records, dev1.last_seq, dev1.gaps, dev1.out_of_order, dev1.health) == (
        3,
        4,
        1,
        0,
        "gap",
    )
    assert dev1.bytes == len(d1[0]) + len(d1[1]) + len(d1[3])
    assert (dev2.records, dev2.gaps, dev2.out_of_order, dev2.health) == (3, 0, 1, "ok")
    assert snap.senders[e].kind == "kex"
    assert dev1.rate == pytest.approx(3 / 30.0)
    # A gap shows for K intervals; silence for more than K intervals is staleness.
    assert s.health("dev-1", T0 + 2 + 3.0) == "gap"
    assert s.health("dev-2", T0 + 2.5 + 3.0) == "ok"
    assert s.health("dev-1", T0 + 2 + 3.5) == "stale"
    assert s.health("nobody", T0) == "never-seen"


def test_iot_new_epoch_restarts_numbering_and_death_matches_birth():
    s = IotMetadataStream(interval_s=1.0)
    topic = "qkdtwin/v1/g/DDATA/e"
    s.offer(topic, b"".join(device_records("d", 2, epoch=1)), T0)
    s.offer(topic, b"".join(device_records("d", 2, epoch=2)), T0 + 1)
    s.offer(topic, device_records("d", 1, epoch=1)[0], T0 + 1.5)  # old epoch
    d = s.sender("d", T0 + 1.5)
    assert d is not None
    assert (d.epoch, d.last_seq, d.gaps, d.out_of_order) == (2, 2, 0, 1)
    s.offer("qkdtwin/v1/g/NBIRTH/e", b'{"bdSeq": 3}', T0)
    s.offer("qkdtwin/v1/g/NDEATH/e", b'{"bdSeq": 2}', T0)  # a stale will: ignored
    assert s.snapshot(T0).edges["e"].online is True
    s.offer("qkdtwin/v1/g/NDEATH/e", b'{"bdSeq": 3}', T0)
    assert s.snapshot(T0).edges["e"].online is False


def test_iot_garbage_never_raises_and_is_counted():
    s = IotMetadataStream()
    good = device_records("d", 1)[0]
    s.offer("qkdtwin/v1/g/DDATA/e", os.urandom(50), T0)
    s.offer("qkdtwin/v1/g/DDATA/e", b"", T0)
    s.offer("qkdtwin/v1/g/DDATA/e", good + good[:20], T0)  # a truncated second record
    s.offer("qkdtwin/v1/g/NBIRTH/e", b"\xff not json", T0)
    s.offer("qkdtwin/v1/g/XDATA/e", good, T0)
    s.offer("not/ours", good, T0)
    s.offer("qkdtwin/v1/g/DDATA/e", None, T0)  # type: ignore[arg-type]
    snap = s.snapshot(T0)
    assert snap.messages == 7
    assert snap.edges["e"].malformed == 4
    assert snap.malformed == 4 + 3
    assert snap.senders["d"].records == 1  # the record before the damage still counts


def test_iot_tracks_a_bounded_number_of_sources():
    s = IotMetadataStream(max_sources=2)
    for i in range(4):
        s.offer(f"qkdtwin/v1/g/DDATA/e{i}", device_records(f"d{i}", 1)[0], T0)
    snap = s.snapshot(T0)
    assert len(snap.edges) == 2
    assert snap.untracked == 2


# -- KmePoller ------------------------------------------------------------------------------


def links_body(delivered: int, t: float, added: int = 1000, **over: Any) -> dict:
    body = {
        "kme_id": "kme-a",
        "time": t,
        "links": [
            {
                "peer": "kme-b",
                "enabled": True,
                "available": 100,
                "owned": 50,
                "reserved": 0,
                "added_total": added,
                "delivered_total": delivered,
                "erased_total": delivered,
                "discarded_total": 0,
            }
        ],
        "relayed": None,
    }
    body.update(over)
    return body


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return init_pki(d / "good", kme_ids=("kme-a",), sae_ids=("operator", "sae-x")), init_pki(
        d / "other", kme_ids=("kme-z",), sae_ids=("intruder",)
    )


@pytest.fixture(scope="module")
def kme_stub(pki) -> Iterator[str]:
    """A tiny KME over mutual TLS: /kme/v1/links for the operator, 401 for anyone else."""
    good, _ = pki
    app = FastAPI()
    calls = {"n": 0}

    @app.get("/kme/v1/links")
    def links(request: Request) -> JSONResponse:
        if request.scope.get("qkdtwin.sae_id") != "operator":
            return JSONResponse({"message": "operator certificate required"}, status_code=401)
        calls["n"] += 1
        n = calls["n"]
        return JSONResponse(links_body(delivered=40 * n, t=T0 + 2.0 * n))

    cert, key = good.kmes["kme-a"]
    server = make_server(
        app, host="127.0.0.1", port=0, certfile=cert, keyfile=key, ca_certs=good.ca_cert
    )
    with RunningServer(server) as running:
        yield f"https://127.0.0.1:{running.port}"


def test_poller_over_mutual_tls_ok_401_tls_and_unreachable(pki, kme_stub):
    good, other = pki
    op_cert, op_key = good.saes["operator"]
    x_cert, x_key = good.saes["sae-x"]
    dead = f"https://127.0.0.1:{free_port()}"
    kmes = {
        "A": (kme_stub, op_cert, op_key, good.ca_cert),
        "wrong-cert": (kme_stub, x_cert, x_key, good.ca_cert),
        "wrong-ca": (kme_stub, op_cert, op_key, other.ca_cert),
        "foreign-cert": (kme_stub, *other.saes["intruder"], good.ca_cert),
        "down": KmeEndpoint(dead, op_cert, op_key, good.ca_cert),
    }
    with KmePoller(kmes, timeout_s=3.0) as poller:
        first = poller.poll(T0)
        second = poller.poll(T0 + 2)
    a1, a2 = first["A"], second["A"]
    assert (a1.ok, a1.status, a1.error) == (True, "ok", None)
    assert a1.response is not None
    assert a1.response.links[0].peer == "kme-b"
    assert a1.consumption == {}  # no previous sample
    assert a2.consumption == {"kme-b": pytest.approx(20.0)}  # 40 keys in 2 s of KME time
    assert a2.production == {"kme-b": 0.0}
    for node, kind in [
        ("wrong-cert", "unauthorized"),
        ("wrong-ca", "tls"),
        ("foreign-cert", "tls"),
        ("down", "unreachable"),
    ]:
        r = second[node]
        assert (r.ok, r.error_kind, r.status, r.consecutive_failures) == (
            False,
            kind,
            "never-seen",
            2,
        )
        assert r.error is not None
        assert "\n" not in r.error
        assert r.url in r.error
        assert r.error.startswith(f"GET {r.url}: {kind}")
    assert "401" in second["wrong-cert"].error


def test_one_dead_kme_does_not_delay_the_others(pki, kme_stub):
    good, _ = pki
    op_cert, op_key = good.saes["operator"]
    with socket.socket() as black_hole:  # accepts TCP connections, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        hole = f"https://127.0.0.1:{black_hole.getsockname()[1]}"
        kmes = {
            "A": (kme_stub, op_cert, op_key, good.ca_cert),
            "hole": (hole, op_cert, op_key, good.ca_cert),
        }
        with KmePoller(kmes, timeout_s=0.5) as poller:
            t0 = time.perf_counter()
            res = poller.poll(T0)
            elapsed = time.perf_counter() - t0
            again = poller.poll(T0 + 1)
    assert elapsed < 1.5
    assert res["A"].ok
    assert res["hole"].error_kind == "timeout"
    assert again["hole"].error_kind in ("timeout", "busy")
    assert again["A"].ok


def mock_poller(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> KmePoller:
    return KmePoller(
        {"A": ("http://kme-a.test", None, None, None)}, transport=httpx.MockTransport(handler), **kw
    )


def test_poller_status_goes_stale_after_n_failures_and_recovers():
    script: list[Any] = [
        ("ok", links_body(10, T0)),
        ("down", None),
        ("down", None),
        ("ok", links_body(30, T0 + 10)),
        ("down", None),
        ("down", None),
        ("down", None),
        ("ok", links_body(5, T0 + 40)),  # the KME restarted: counters went down
        ("ok", links_body(25, T0 + 40)),  # KME time did not advance: the poll times are used
    ]
    step = {"i": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/kme/v1/links"
        what, body = script[step["i"]]
        step["i"] += 1
        if what == "down":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=body)

    with mock_poller(handler, stale_after=3) as p:
        results = [p.poll(T0 + 10 * i)["A"] for i in range(len(script))]
        assert p.statuses() == {"A": "ok"}
    assert [r.status for r in results] == ["ok", "ok", "ok", "ok", "ok", "ok", "stale", "ok", "ok"]
    assert [r.consecutive_failures for r in results] == [0, 1, 2, 0, 1, 2, 3, 0, 0]
    assert results[3].consumption == {"kme-b": pytest.approx(2.0)}  # 20 keys in 10 s
    assert results[7].consumption == {}  # reset: no rate
    assert results[8].consumption == {"kme-b": pytest.approx(20 / 10)}  # poll times: 10 s
    assert results[1].error == "GET http://kme-a.test/kme/v1/links: unreachable: connection refused"


@pytest.mark.parametrize(
    ("response", "kind", "text"),
    [
        (httpx.Response(200, text="<html>"), "malformed", "malformed"),
        (httpx.Response(200, json={"kme_id": "a", "time": 1.0}), "malformed", "links"),
        (httpx.Response(200, json=links_body(-1, T0)), "malformed", "links.0.delivered_total"),
        (httpx.Response(403, text="no"), "unauthorized", "HTTP 403"),
        (httpx.Response(500, text="boom\ntrace"), "http", "HTTP 500 boom trace"),
    ],
)
def test_poller_bad_answers_are_one_line_errors(response, kind, text):
    with mock_poller(lambda _r: response) as p:
        r = p.poll(T0)["A"]
    assert (r.ok, r.error_kind, r.status) == (False, kind, "never-seen")
    assert r.error is not None
    assert text in r.error
    assert "\n" not in r.error


def test_poller_never_raises_even_if_the_transport_does():
    def handler(_r: httpx.Request) -> httpx.Response:
        raise RuntimeError("bug in the transport")

    with mock_poller(handler) as p:
        r = p.poll(T0)["A"]
    assert (r.ok, r.error_kind) == (False, "error")


def test_poller_accepts_iso_time_pseudo_links_and_ignores_unknown_fields():
    body = links_body(10, T0, extra="x")
    body["time"] = "2023-11-14T22:13:20Z"
    body["links"][0]["new_counter"] = 3
    body["relayed"] = dict.fromkeys(ingest.KmeKeyCounts.model_fields, 0)
    body["links"].append({**body["links"][0], "peer": None, "delivered_total": 0})
    with mock_poller(lambda _r: httpx.Response(200, json=body)) as p:
        r = p.poll(T0)["A"]
        body["links"][1]["delivered_total"] = 30
        body["time"] = "2023-11-14T22:13:30+00:00"
        r2 = p.poll(T0 + 10)["A"]
    assert r.response is not None
    assert r.response.time == T0
    assert r.response.relayed == ingest.KmeKeyCounts(**dict.fromkeys(body["relayed"], 0))
    assert r2.consumption == {"kme-b": 0.0, None: pytest.approx(3.0)}  # None: the pseudo-link


def test_poller_bad_configuration(tmp_path):
    with pytest.raises(ConfigError, match="at least one"):
        KmePoller({})
    with pytest.raises(ConfigError, match="http"):
        KmePoller({"A": ("ftp://x", None, None, None)})
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        KmePoller({"A": ("https://x", tmp_path / "missing.pem", tmp_path / "k", None)})
    with (
        mock_poller(lambda _r: httpx.Response(200)) as p,
        pytest.raises(ConfigError, match="unknown KME"),
    ):
        p.status("B")


# -- Recorder / Replayer --------------------------------------------------------------------


def test_record_round_trip_with_a_truncated_last_line(tmp_path):
    path = tmp_path / "rec" / "ingest.jsonl"
    payloads = [raw(0), b"\x00\xffbinary", raw(1)]
    poll_ok = RawPoll("https://k/kme/v1/links", 200, json.dumps(links_body(1, T0)), elapsed_s=0.01)
    poll_err = RawPoll(
        "https://k/kme/v1/links", error="GET https://k: timeout: x", error_kind="timeout"
    )
    with Recorder(path) as rec:
        rec.record_mqtt(perf_topic(MOD), payloads[0], T0 + 1)
        rec.record_mqtt("qkdtwin/v1/g/DDATA/e", payloads[1], T0 + 1.5)
        rec.record_poll("A", poll_ok, T0 + 2)
        rec.record_poll("B", poll_err, T0 + 2)
        rec.record_mqtt(perf_topic(MOD), payloads[2], T0 + 3)
        assert rec.lines == 5
    whole = path.read_bytes()
    with open(path, "ab") as fh:  # a crash in the middle of the next line
        fh.write(b'{"t": 1700000004.0, "kind": "mqtt", "topic": "qkdtwin/li')
    log = read_records(path)
    assert log.truncated
    assert [b.line for b in log.bad_lines] == [6]
    assert "incomplete last line" in log.bad_lines[0].reason
    assert [(r.kind, r.t) for r in log.records] == [
        ("mqtt", T0 + 1),
        ("mqtt", T0 + 1.5),
        ("poll", T0 + 2),
        ("poll", T0 + 2),
        ("mqtt", T0 + 3),
    ]
    assert [r.payload for r in log.records if r.kind == "mqtt"] == payloads
    assert log.records[2].poll == poll_ok
    assert log.records[3].poll == poll_err
    assert log.records[3].node == "B"
    # Reopening ends the incomplete line, so new records never merge with it.
    with Recorder(path) as rec:
        assert rec.repaired
        rec.record_mqtt(perf_topic(MOD), raw(2), T0 + 5)
    log2 = read_records(path)
    assert not log2.truncated
    assert len(log2.records) == 6
    assert [b.line for b in log2.bad_lines] == [6]
    assert path.read_bytes().startswith(whole)


def test_read_records_skips_damaged_middle_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    good = json.dumps({"t": 1.0, "kind": "mqtt", "topic": "a", "payload": "aGk="})
    lines = [
        good,
        "not json",
        json.dumps({"t": "x", "kind": "mqtt"}),
        json.dumps({"t": 2, "kind": "?"}),
        "",
        good,
    ]
    path.write_text("\n".join(lines) + "\n")
    log = read_records(path)
    assert [r.line for r in log.records] == [1, 6]
    assert log.records[0].payload == b"hi"
    assert [b.line for b in log.bad_lines] == [2, 3, 4]
    assert not log.truncated
    with pytest.raises(ConfigError, match="cannot read recording"):
        read_records(tmp_path / "missing.jsonl")


def test_replayer_speed(tmp_path):
    path = tmp_path / "r.jsonl"
    with Recorder(path) as rec:
        for t in (10.0, 11.0, 13.0, 12.5):  # written slightly out of time order
            rec.record_mqtt("x", b"p", t)
    now = {"t": 100.0}
    sleeps: list[float] = []

    def sleep(d: float) -> None:
        sleeps.append(d)
        now["t"] += d

    replay = Replayer(path, speed=2.0, sleep=sleep, clock=lambda: now["t"])
    assert [r.t for r in replay] == [10.0, 11.0, 13.0, 12.5]  # file order
    assert sleeps == [pytest.approx(0.5), pytest.approx(1.0)]  # stream runs twice as fast
    fast: list[float] = []
    assert len(list(Replayer(path, sleep=fast.append))) == 4
    assert fast == []
    with pytest.raises(ConfigError, match="speed"):
        Replayer(path, speed=0)


def test_recorded_session_replays_to_the_same_state(tmp_path):
    path = tmp_path / "session.jsonl"
    msgs = [(perf_topic(MOD), raw(i), recv_t(i)) for i in (0, 2, 1, 1, 4, 5)]
    msgs.insert(3, (perf_topic(MOD), b"garbage", recv_t(2)))
    msgs.append(("qkdtwin/v1/g/DDATA/e", b"".join(device_records("d", 3)), recv_t(5)))
    live = IngestRouter(LinkStream({MOD: LINK}), IotMetadataStream(), recorder=Recorder(path))
    for m in msgs:
        live.on_payload(*m)
    live.recorder.close()  # type: ignore[union-attr]
    replayed = IngestRouter(LinkStream({MOD: LINK}), IotMetadataStream())
    assert replayed.replay(Replayer(path)) == len(msgs)
    assert replayed.links.snapshot() == live.links.snapshot()
    assert replayed.iot.snapshot(recv_t(6)) == live.iot.snapshot(recv_t(6))  # type: ignore[union-attr]
    assert [m.seq for m in replayed.drain()] == [m.seq for m in live.drain()] == [0, 1, 2]
    assert replayed.links.source_status(MOD, recv_t(5)).buffered == 2


def test_recorded_polls_replay_to_the_same_results(tmp_path):
    bodies = [links_body(10, T0), links_body(50, T0 + 4)]
    it = iter([httpx.Response(200, json=b) for b in bodies] + [httpx.Response(401)])
    path = tmp_path / "polls.jsonl"
    live: list[Any] = []
    with mock_poller(lambda _r: next(it)) as p, Recorder(path) as rec:
        for i in range(3):
            r = p.poll(T0 + 4 * i)["A"]
            rec.record_poll("A", r.raw, r.t)
            live.append(r)
    with mock_poller(lambda _r: httpx.Response(500)) as p2:
        again = [p2.apply(rec.node, rec.poll, rec.t) for rec in read_records(path).records]  # type: ignore[arg-type]
    assert again == live  # the raw outcome too: recording loses nothing
    assert again[1].consumption == {"kme-b": pytest.approx(10.0)}
    assert again[2].error_kind == "unauthorized"


def test_router_on_state_and_queue_limit():
    r = IngestRouter(LinkStream({MOD: LINK}), max_queue=2)
    for i in range(3):
        r.on_payload(perf_topic(MOD), raw(i), recv_t(i))
    r.on_payload("qkdtwin/link/v1/x/state", b"{}", T0)
    r.on_payload("elsewhere", b"", T0)
    assert [m.seq for m in r.drain()] == [1, 2]
    assert r.stats() == ingest.RouterStats(3, 1, 0, 1, 0, 1)
    r.on_state("reconnecting", recv_t(2) + 0.1)
    assert r.links.source_status(MOD, recv_t(2) + 0.2).status == "stale"


def test_public_api_is_sorted_and_complete():
    assert ingest.__all__ == sorted(ingest.__all__, key=lambda s: (not s.isupper(), s))
    for name in ingest.__all__:
        assert hasattr(ingest, name), name


def test_mqtt_ingest_refuses_bad_urls():
    with pytest.raises(ConfigError, match="mqtt://HOST:PORT"):
        ingest.MqttIngest("http://x", on_payload=lambda *_: None)
    with pytest.raises(ConfigError, match="mqtt://HOST:PORT"):
        ingest.MqttIngest("memory", on_payload=lambda *_: None)


def test_poller_against_real_kmes_operator_endpoint(tmp_path):
    from qkdtwin.kms.client import KmeClient
    from qkdtwin.kms.devnet import DevNetwork

    saes = {"sae-a": "kme-a", "sae-b": "kme-b"}
    with DevNetwork(
        tmp_path, ["kme-a", "kme-b"], [("kme-a", "kme-b")], saes, initial_keys=20, run_feeders=False
    ) as net:
        op_cert, op_key = net.pki.operators["twin"]
        sae_cert, sae_key = net.pki.saes["sae-a"]
        kmes = {k: (net.url(k), op_cert, op_key, net.pki.ca_cert) for k in ("kme-a", "kme-b")}
        kmes["as-sae"] = (net.url("kme-a"), sae_cert, sae_key, net.pki.ca_cert)
        with KmePoller(kmes, timeout_s=5.0) as poller:
            first = poller.poll(T0)
            with KmeClient(net.url("kme-a"), sae_cert, sae_key, net.pki.ca_cert) as sae:
                sae.get_keys("sae-b", number=3)
            time.sleep(0.05)
            second = poller.poll(T0 + 1)
    for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
        r1, r2 = first[kme], second[kme]
        assert (r1.ok, r2.ok, r2.status) == (True, True, "ok"), (r1.error, r2.error)
        assert r1.response is not None
        assert r2.response is not None
        assert r1.response.kme_id == kme
        (l1,), (l2,) = r1.response.links, r2.response.links
        assert (l1.peer, l1.available, l1.delivered_total) == (peer, 20, 0)
        assert l2.delivered_total == 3
        assert r2.consumption[peer] == pytest.approx(3 / (r2.response.time - r1.response.time))
    assert first["as-sae"].error_kind == "unauthorized"


def test_poll_slots_cover_every_kme_once_and_follow_the_rate() -> None:
    nodes = [f"N{i}" for i in range(1100)]
    auto = ingest.poll_slots(nodes, 1.0)
    assert len(auto) == 11  # 1,100 KMEs at most 100 polls/s: each every 11 s
    assert sorted(n for s in auto for n in s) == sorted(nodes)
    assert max(map(len, auto)) - min(map(len, auto)) <= 1  # evenly spread
    assert len(ingest.poll_slots(nodes, 1.0, 15.0)) == 15
    assert len(ingest.poll_slots(nodes, 0.5, 15.0)) == 30
    assert ingest.poll_slots(["A", "B"], 1.0) == [["A", "B"]]  # few KMEs: all, every period
    assert ingest.poll_slots(["A", "B"], 1.0, 60.0) == [["A"], ["B"]]  # never an empty slot
    for bad in ((0.0, None), (1.0, 0.0), (1.0, -3.0)):
        with pytest.raises(ConfigError):
            ingest.poll_slots(nodes, *bad)


def test_poll_schedule_staggers_kmes_and_sae_pairs_within_the_poll_budget() -> None:
    # 1,044 KMEs and 1,000 gateways' SAE pairs (the 1,000-link network): polling every SAE
    # pair every period would be 1,000 requests a second on top of the KMEs
    kmes = [f"K{i}" for i in range(1044)]
    saes = [f"GW{i}" for i in range(1000)]
    auto = ingest.poll_schedule(kmes, saes, 1.0)
    assert len(auto) == 20  # 2,044 polls at most 100 a second: each every ~20 s
    assert sorted(k for ks, _ in auto for k in ks) == sorted(kmes)  # each once per cycle
    assert sorted(g for _, gs in auto for g in gs) == sorted(saes)
    per_slot = [len(ks) + len(gs) for ks, gs in auto]
    assert max(per_slot) <= ingest.MAX_POLLS_PER_S * 1.05  # the budget, up to rounding
    assert max(per_slot) - min(per_slot) <= 2  # evenly spread
    assert len(ingest.poll_schedule(kmes, saes, 1.0, 15.0)) == 15
    # few of both: everything every period, as before; no SAE pairs: the KME slots
    assert ingest.poll_schedule(["A"], ["g"], 1.0) == [(["A"], ["g"])]
    assert [k for k, _ in ingest.poll_schedule(kmes, [], 1.0, 15.0)] == ingest.poll_slots(
        kmes, 1.0, 15.0
    )
    for bad in ((0.0, None), (1.0, 0.0)):
        with pytest.raises(ConfigError):
            ingest.poll_schedule(kmes, saes, *bad)


def test_a_staggered_poll_asks_only_its_kmes() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        return httpx.Response(200, json=links_body(10, T0))

    kmes = {n: (f"http://kme-{n.lower()}.test", None, None, None) for n in "ABCD"}
    with KmePoller(kmes, transport=httpx.MockTransport(handler)) as poller:
        slots = ingest.poll_slots(list(kmes), 1.0, 2.0)
        assert slots == [["A", "C"], ["B", "D"]]
        got = poller.poll(T0, slots[1])
        assert list(got) == ["B", "D"]
        assert sorted(asked) == ["kme-b.test", "kme-d.test"]
        assert all(r.status == "ok" for r in got.values())
        assert poller.poll(T0 + 1, slots[0]).keys() == {"A", "C"}
        assert len(poller.poll(T0 + 2)) == 4  # no subset: every KME, as before
        with pytest.raises(ConfigError, match="unknown KME"):
            poller.poll(T0, ["Z"])
