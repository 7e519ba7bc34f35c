"""The attached twin, fed from an in-process plant: estimates, alarms, faults, replay, API.

The plant runs without MQTT here (its messages go straight to ``AttachedTwin.on_mqtt`` with a
receive time on the modules' clock), so each test controls every interval; the same twin over
real MQTT and KMEs is tested in ``test_attached_e2e.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.plant import Plant
from qkdtwin.twin.attach import load_attach_file
from qkdtwin.twin.attached import AttachedTwin
from qkdtwin.twin.attached_runner import replay
from qkdtwin.twin.attached_service import create_attached_app
from qkdtwin.twin.ingest import RawPoll, Recorder
from qkdtwin.twin.models import AttachedState, LinkStatus
from tests.asgi_client import AsgiClient

TRIANGLE = {
    "nodes": [
        {"name": "A", "role": "metro"},
        {"name": "B", "role": "metro"},
        {"name": "C", "role": "metro"},
    ],
    "links": [
        {"a": "A", "b": "B", "key_rate": 1.0},
        {"a": "B", "b": "C", "key_rate": 1.0},
        {"a": "A", "b": "C", "key_rate": 1.0},
    ],
    "demands": [{"src": "A", "dst": "B", "rate": 0.05}, {"src": "B", "dst": "C", "rate": 0.05}],
    "pool_capacity": 100,
    "keys_per_service": 10,
    "policy": "static",
    "duration": 1000.0,
    "seed": 7,
    "plant": {
        "links": {
            "A-B": {"length_km": 30.0},
            "B-C": {"length_km": 40.0},
            "A-C": {"length_km": 25.0},
        },
        "devices_per_gateway": 0,
    },
}


def make(tmp_path: Path, *, seed: int = 7, **twin_options) -> tuple[Plant, AttachedTwin, list]:
    """An offline plant and a twin attached to its messages (no MQTT, no KMEs)."""
    sink: list[tuple[str, bytes]] = []
    plant = Plant(
        TRIANGLE, tmp_path / "plant", broker=None, kmes=False, iot=False, seed=seed,
        publish=lambda t, b: sink.append((t, b)),
    )  # fmt: skip
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"  # never connected: the test feeds the twin itself
    twin = AttachedTwin(load_attach_file(doc), **twin_options)
    return plant, twin, sink


def make_with_kmes(tmp_path: Path, *nodes: str) -> tuple[Plant, dict, list]:
    """An offline plant and its attach document naming (unreachable) KMEs at ``nodes``.

    The tests feed the twin the KMEs' answers themselves (``twin.on_poll``).
    """
    plant, _twin, sink = make(tmp_path)
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    pem = tmp_path / "op.pem"
    pem.write_text("x")
    kme = {"url": "https://127.0.0.1:9", "cert": str(pem), "key": str(pem), "ca": str(pem)}
    doc["kmes"] = dict.fromkeys(nodes, kme)
    return plant, doc, sink


def feed(plant: Plant, twin: AttachedTwin, sink: list, n: int, latency_s: float = 0.05) -> None:
    """Run ``n`` plant intervals; deliver each message to the twin as MQTT would."""
    for _ in range(n):
        plant.step()
        t_recv = plant.clock_epoch + plant.t + latency_s
        for topic, payload in sink:
            twin.on_mqtt(topic, payload, t_recv)
        sink.clear()
        twin.tick(t_recv)


def link(twin: AttachedTwin, lid: str):
    return next(x for x in twin.state().links if x.id == lid)


def test_a_clean_network_raises_nothing_and_its_estimates_hold_the_truth(tmp_path):
    plant, twin, sink = make(tmp_path)
    feed(plant, twin, sink, 400)
    st = twin.state()
    assert st.alarms == []
    assert all(lk.status == LinkStatus.UP for lk in st.links)
    for lk in st.links:
        truth = [h.mean_loss_db for h in list(plant.history[lk.id])[-60:]]
        mean = sum(truth) / len(truth)
        lo, hi = lk.estimate.loss_db_ci
        se = (hi - lo) / (2 * 1.96)
        assert abs(lk.estimate.loss_db - mean) < 4 * se, (lk.id, lk.estimate, mean)
        assert lk.source == "ok"
        assert lk.estimate.qber == pytest.approx(0.033, abs=0.01)


@pytest.mark.parametrize(
    ("kind", "fraction", "statistic"),
    [
        ("intercept-resend", 0.5, "qber"),
        ("pns", 0.5, "decoy-yield"),
        ("fiber-tap", 0.3, "loss-step"),
        ("detector-blinding", 0.5, "count-model"),
        ("faked-state", 0.5, "detector-monitor"),
    ],
)
def test_each_attack_raises_the_statistic_that_sees_it(tmp_path, kind, fraction, statistic):
    plant, twin, sink = make(tmp_path)
    feed(plant, twin, sink, 300)
    onset = plant.clock_epoch + plant.t
    plant.attack("A-B", kind, fraction)
    for _ in range(120):
        feed(plant, twin, sink, 1)
        if twin.alarms:
            break
    assert twin.alarms, f"no alarm within 120 intervals of {kind}"
    alarm = twin.alarms[0]
    assert alarm.link == "A-B"
    # statistics crossing in the same interval: the strongest names the alarm, the rest are
    # logged as evidence (naive blinding moves the counts *and* the detector monitor)
    crossed = {alarm.kind} | {e.detail.get("statistic") for e in alarm.events}
    assert statistic in crossed, crossed
    if kind != "detector-blinding":
        assert alarm.kind == statistic
    assert alarm.raised_at > onset
    assert alarm.delay_s is not None
    assert alarm.delay_s >= 0
    assert link(twin, "A-B").status == LinkStatus.ALARM
    # the response: A|B now relays over C; nothing else alarmed
    routes = {r.id: r for r in twin.state().routes}
    assert routes["A|B"].path == ["A", "C", "B"]
    assert [e.what for e in alarm.events][:2] == ["raised", "rerouted"]
    assert {a.link for a in twin.alarms} == {"A-B"}


def test_faked_state_is_invisible_without_the_detector_monitor(tmp_path):
    scenario = json.loads(json.dumps(TRIANGLE))
    scenario["plant"]["detector_monitor"] = False
    sink: list[tuple[str, bytes]] = []
    plant = Plant(scenario, tmp_path, broker=None, kmes=False, iot=False, seed=3,
                  publish=lambda t, b: sink.append((t, b)))  # fmt: skip
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    twin = AttachedTwin(load_attach_file(doc))
    feed(plant, twin, sink, 300)
    plant.attack("A-B", "faked-state", 1.0)
    feed(plant, twin, sink, 200)
    # counts keep the honest law exactly: nothing the twin can see changes
    assert twin.alarms == []


def test_an_attack_that_stops_recovers_and_one_that_persists_does_not(tmp_path):
    plant, twin, sink = make(tmp_path, recovery_s=20.0)
    feed(plant, twin, sink, 300)
    plant.attack("A-B", "intercept-resend", 1.0)
    plant.attack("B-C", "intercept-resend", 1.0)
    feed(plant, twin, sink, 5)
    assert {a.link for a in twin.alarms} == {"A-B", "B-C"}
    plant.clear("A-B")
    feed(plant, twin, sink, 25)
    assert link(twin, "A-B").status == LinkStatus.RECOVERING
    feed(plant, twin, sink, 20)
    assert link(twin, "A-B").status == LinkStatus.UP
    assert link(twin, "B-C").status == LinkStatus.ALARM  # still attacked: re-detected each time
    ab = next(a for a in twin.alarms if a.link == "A-B")
    assert not ab.active
    assert [e.what for e in ab.events][-2:] == ["recovering", "restored"]
    bc = next(a for a in twin.alarms if a.link == "B-C")
    assert any(e.what == "evidence" for e in bc.events)


def test_bad_telemetry_is_counted_and_never_stops_the_twin(tmp_path):
    plant, twin, sink = make(tmp_path)
    feed(plant, twin, sink, 50)
    plant.step()
    t = plant.clock_epoch + plant.t
    msgs = list(sink)
    sink.clear()
    topic, payload = msgs[0]
    body = json.loads(payload)
    twin.on_mqtt(topic, b"{not json", t)
    twin.on_mqtt(topic, json.dumps({**body, "schema_version": 2}).encode(), t)
    twin.on_mqtt(
        "qkdtwin/link/v1/qkd-X-Y/perf", json.dumps({**body, "module_id": "qkd-X-Y"}).encode(), t
    )
    ahead = {**body, "seq": body["seq"] + 1, "interval_start": t + 0.5, "interval_end": t + 1.5}
    twin.on_mqtt(topic, json.dumps(ahead).encode(), t)  # ahead of a gap: held
    for topic2, payload2 in msgs:
        twin.on_mqtt(topic2, payload2, t)  # releases the held one after it
    twin.on_mqtt(topic, payload, t)  # duplicate
    skewed = {**body, "seq": body["seq"] + 2, "interval_start": t - 600, "interval_end": t - 599}
    twin.on_mqtt(topic, json.dumps(skewed).encode(), t)
    twin.on_mqtt("qkdtwin/v1/plant/NDATA/edge-1", b"\x00garbage", t)
    c = twin.state().ingest.counts
    assert c["malformed"] == 1
    assert c["version_mismatch"] == 1
    assert c["unknown_link"] == 1
    assert c["duplicate"] == 1
    assert c["reordered"] == 1
    assert c["skewed"] == 1
    assert c["model_rejected"] == 1  # it also overlaps the previous interval in time
    assert twin.state().ingest.version_mismatch == [{"version": "2", "count": 1}]
    feed(plant, twin, sink, 5)
    assert twin.alarms == []


def test_a_silent_module_goes_stale_and_comes_back(tmp_path):
    plant, twin, sink = make(tmp_path)
    feed(plant, twin, sink, 30)
    for _ in range(6):  # A-B's module falls silent
        plant.step()
        t = plant.clock_epoch + plant.t
        for topic, payload in sink:
            if "A-B" not in topic:
                twin.on_mqtt(topic, payload, t)
        sink.clear()
        twin.tick(t)
    assert link(twin, "A-B").status == LinkStatus.STALE
    assert link(twin, "A-B").source == "stale"
    feed(plant, twin, sink, 3)
    assert link(twin, "A-B").status == LinkStatus.UP


def test_a_kme_that_stops_answering_goes_stale_with_the_error(tmp_path):
    plant, _twin, _sink = make(tmp_path)
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    cert = tmp_path / "op.pem"
    cert.write_text("x")
    doc["kmes"] = {
        "A": {"url": "https://127.0.0.1:9", "cert": str(cert), "key": str(cert), "ca": str(cert)}
    }
    twin = AttachedTwin(load_attach_file(doc))
    url = "https://127.0.0.1:9/kme/v1/links"
    body = json.dumps(
        {"kme_id": "A", "time": 1.0, "links": [{"peer": "B", "enabled": True, "available": 5,
         "owned": 3, "reserved": 0, "added_total": 10, "delivered_total": 5, "erased_total": 5,
         "discarded_total": 0}], "relayed": None}
    )  # fmt: skip
    twin.on_poll("A", RawPoll(url, 200, body), 100.0)
    assert twin.state().kmes[0].status == "ok"
    assert twin.state().kmes[0].links[0].available == 5
    for k in range(3):
        twin.on_poll(
            "A",
            RawPoll(url, error=f"GET {url}: unreachable: refused", error_kind="unreachable"),
            101.0 + k,
        )
    kme = twin.state().kmes[0]
    assert kme.status == "stale"
    assert url in (kme.error or "")
    body2 = body.replace('"delivered_total": 5', '"delivered_total": 9')
    twin.on_poll("A", RawPoll(url, 200, body2), 105.0)
    kme = twin.state().kmes[0]
    assert kme.status == "ok"
    assert kme.links[0].consumption_keys_per_s == pytest.approx(4 / 5.0)


def test_a_recording_replays_to_the_same_alarms_and_state(tmp_path):
    rec_path = tmp_path / "rec.jsonl"
    recorder = Recorder(rec_path)

    def on_record(kind, key, payload, t):
        recorder.record_mqtt(key, payload, t) if kind == "mqtt" else recorder.record_poll(
            key, payload, t
        )

    plant, twin, sink = make(tmp_path, on_record=on_record)
    twin.tick = lambda t_wall: None  # ticks are not recorded: keep both runs tick-free
    feed(plant, twin, sink, 250)
    plant.attack("A-B", "pns", 0.5)
    plant.attack("B-C", "fiber-tap", 0.3)
    feed(plant, twin, sink, 60)
    recorder.close()
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    again = AttachedTwin(load_attach_file(doc), replay=True)
    again.tick = lambda t_wall: None
    replay(rec_path, twin=again)
    key = lambda tw: [(a.link, a.kind, a.raised_at) for a in tw.alarms]  # noqa: E731
    assert key(twin) == key(again)
    assert {a.link for a in twin.alarms} >= {"A-B", "B-C"}
    a, b = twin.state(), again.state()
    assert [x.estimate for x in a.links] == [x.estimate for x in b.links]
    assert a.ingest == b.ingest


def test_the_api_serves_the_typed_state(tmp_path):
    plant, twin, sink = make(tmp_path)
    feed(plant, twin, sink, 80)
    plant.attack("A-B", "intercept-resend", 1.0)
    feed(plant, twin, sink, 3)
    c = AsgiClient(create_attached_app(twin))
    st = AttachedState.model_validate(c.get("/api/state").json())
    assert {lk.id for lk in st.links} == {"A-B", "B-C", "A-C"}
    one = c.get("/api/links/B-A").json()
    assert one["id"] == "A-B"
    assert one["status"] == "alarm"
    assert (
        one["estimate"]["loss_db_ci"][0]
        < one["estimate"]["loss_db"]
        < one["estimate"]["loss_db_ci"][1]
    )
    alarms = c.get("/api/alarms?active=true").json()
    assert [(a["link"], a["kind"]) for a in alarms] == [("A-B", "qber")]
    assert c.get(f"/api/alarms/{alarms[0]['id']}").json()["raised_at"] == alarms[0]["raised_at"]
    bad = c.get("/api/links/A-Z")
    assert bad.status_code == 400
    assert bad.json()["field"] == "link"
    assert c.get("/api/alarms/99").status_code == 400
    hist = c.get("/api/history?link=A-C").json()["A-C"]
    assert len(hist) == 83
    assert math.isclose(hist[-1][1], link(twin, "A-C").estimate.loss_db)
    schema = c.get("/openapi.json").json()
    assert "AttachedState" in schema["components"]["schemas"]
    assert schema["components"]["schemas"]["LinkStatus"]["enum"] == [
        "up",
        "alarm",
        "recovering",
        "stale",
    ]
    rb = c.post("/api/links/A-B/rebaseline").json()
    assert rb["status"] == "up"
    assert "<svg" in c.get("/").text


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(broker="localhost"), "broker"),
        (
            lambda d: d["links"].update(
                {"A-Z": {"module_id": "m", "declared_detector_efficiency": 0.1}}
            ),
            "links.A-Z",
        ),
        (lambda d: d["links"]["A-B"].update(declared_detector_efficiency=1.5), "links.A-B"),
        (
            lambda d: d.update(
                kmes={
                    "A": {"url": "https://x:1", "cert": "/no/such.pem", "key": "/no", "ca": "/no"}
                }
            ),
            "kmes.A.cert",
        ),
        (
            lambda d: d.update(
                kmes={"Q": {"url": "https://x:1", "cert": "/no", "key": "/no", "ca": "/no"}}
            ),
            "kmes.Q",
        ),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d.update(kme_poll_every_s=0), "kme_poll_every_s"),
        (lambda d: d.update(kme_poll_every_s="often"), "kme_poll_every_s"),
    ],
)
def test_bad_attach_files_name_the_field(tmp_path, mutate, field):
    plant, _twin, _sink = make(tmp_path)
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        load_attach_file(doc)
    assert (err.value.field or "").startswith(field), err.value


def test_etsi_status_of_named_sae_pairs(tmp_path):
    plant, _twin, _sink = make(tmp_path)
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    kme = {"url": "https://127.0.0.1:9", "cert": str(pem), "key": str(pem), "ca": str(pem)}
    doc["kmes"] = {"A": kme}
    doc["sae_status"] = [
        {"kme": "A", "slave_sae_id": "sae-b", "cert": "x.pem", "key": "x.pem", "ca": "x.pem"}
    ]
    path = tmp_path / "attach.yaml"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    att = load_attach_file(path)
    assert att.sae_status[0].cert == pem.resolve()  # relative to the attach file
    twin = AttachedTwin(att)
    url = "https://127.0.0.1:9/api/v1/keys/sae-b/status"
    ok = json.dumps({"source_KME_ID": "A", "target_KME_ID": "B", "master_SAE_ID": "sae-a",
                     "slave_SAE_ID": "sae-b", "key_size": 256, "stored_key_count": 42,
                     "max_key_count": 1000, "max_key_per_request": 128, "max_key_size": 1024,
                     "min_key_size": 64, "max_SAE_ID_count": 0})  # fmt: skip
    twin.on_poll("sae:A:sae-b", RawPoll(url, 200, ok), 10.0)
    pair = twin.state().sae_pairs[0]
    assert (pair.status, pair.stored_key_count, pair.master_sae_id) == ("ok", 42, "sae-a")
    for k in range(3):
        twin.on_poll("sae:A:sae-b", RawPoll(url, 401, '{"message": "not authorised"}'), 11.0 + k)
    pair = twin.state().sae_pairs[0]
    assert pair.status == "stale"
    assert "401" in (pair.error or "")
    doc["sae_status"][0]["kme"] = "Z"
    with pytest.raises(ConfigError) as err:
        load_attach_file(doc)
    assert err.value.field == "sae_status.0.kme"


def test_losing_the_broker_marks_every_source_stale_until_data_returns(tmp_path):
    plant, twin, sink = make(tmp_path)
    feed(plant, twin, sink, 20)
    t = plant.clock_epoch + plant.t
    twin.on_state("reconnecting", t + 0.1)
    twin.tick(t + 0.2)
    assert {lk.status for lk in twin.state().links} == {LinkStatus.STALE}
    feed(plant, twin, sink, 1)
    assert {lk.status for lk in twin.state().links} == {LinkStatus.UP}


def _aggregator_doc(tmp_path: Path) -> dict:
    """An attach document with an aggregator grant (files exist; no KME is contacted)."""
    plant, _twin, _sink = make(tmp_path)
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"
    from qkdtwin.kms.tls import init_pki

    pki = init_pki(tmp_path / "pki", kme_ids=["A"], sae_ids=["sae-twin"])
    op, op_key = (str(p) for p in pki.operators["twin"])
    sae, sae_key = (str(p) for p in pki.saes["sae-twin"])
    seed = tmp_path / "kem.seed"
    seed.write_text("ab" * 64 + "\n")
    doc["kmes"] = {"A": {"url": "https://127.0.0.1:9", "cert": op, "key": op_key,
                         "ca": str(pki.ca_cert)}}  # fmt: skip
    doc["aggregator"] = {
        "sae_id": "sae-twin", "kme": "A", "cert": sae, "key": sae_key, "ca": str(pki.ca_cert),
        "kem_seed_file": str(seed), "group": "plant", "edges": {"GW": "sae-GW"},
    }  # fmt: skip
    return doc


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["aggregator"].update(kme="B"), "aggregator.kme"),
        (
            lambda d: d["aggregator"].update(kem_seed_file="/no/such.seed"),
            "aggregator.kem_seed_file",
        ),
        (lambda d: d["aggregator"].pop("kem_seed_file"), "aggregator"),
        (lambda d: d["aggregator"].update(mode="quantum"), "aggregator.mode"),
        (lambda d: d["aggregator"].update(edges={}), "aggregator.edges"),
    ],
)
def test_bad_aggregator_grants_name_the_field(tmp_path, mutate, field):
    doc = _aggregator_doc(tmp_path)
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        load_attach_file(doc)
    assert (err.value.field or "").startswith(field), err.value


def test_readings_say_where_they_come_from(tmp_path):
    doc = _aggregator_doc(tmp_path)
    # a granted live twin decrypts, a replay cannot
    live = AttachedTwin(load_attach_file(doc))
    assert live.state().readings.source == "decrypted"
    assert live.state().readings.devices == []
    live.close()
    assert AttachedTwin(load_attach_file(doc), replay=True).state().readings.source == "replay"
    doc.pop("aggregator")
    assert AttachedTwin(load_attach_file(doc)).state().readings.source == "not-granted"


def test_a_bad_kem_seed_is_one_error_naming_the_file(tmp_path):
    doc = _aggregator_doc(tmp_path)
    Path(doc["aggregator"]["kem_seed_file"]).write_text("abcd\n")
    with pytest.raises(ConfigError) as err:
        AttachedTwin(load_attach_file(doc))
    assert err.value.field == "aggregator.kem_seed_file"
    assert "64 bytes" in str(err.value)


def test_an_unusable_aggregator_certificate_is_one_error_naming_it(tmp_path):
    doc = _aggregator_doc(tmp_path)
    Path(doc["aggregator"]["key"]).write_text("not a key")
    with pytest.raises(ConfigError) as err:
        AttachedTwin(load_attach_file(doc))
    assert err.value.field == "aggregator.cert"


def test_an_alarm_assesses_the_keys_to_discard_at_both_ends(tmp_path):
    plant, doc, sink = make_with_kmes(tmp_path, "A", "B")
    twin = AttachedTwin(load_attach_file(doc))
    url = "https://127.0.0.1:9/kme/v1/links"
    polls: list[tuple[float, int]] = []

    def poll(k: int, t: float) -> None:
        # the A-B stores add 10 keys and deliver 4 per interval (B's counters run 1,000 ahead)
        for node, peer, off in (("A", "B", 0), ("B", "A", 1000)):
            body = {"kme_id": node, "time": t, "relayed": None, "links": [
                {"peer": peer, "enabled": True, "available": 5, "owned": 3, "reserved": 0,
                 "added_total": off + 10 * k, "delivered_total": off + 4 * k,
                 "erased_total": 0, "discarded_total": 0}]}  # fmt: skip
            twin.on_poll(node, RawPoll(url, 200, json.dumps(body)), t)
        polls.append((t, k))

    k = 0
    for _ in range(300):
        feed(plant, twin, sink, 1)
        k += 1
        poll(k, plant.clock_epoch + plant.t + 0.05)
    plant.attack("A-B", "fiber-tap", 0.5)
    for _ in range(120):
        feed(plant, twin, sink, 1)
        if twin.alarms:  # raised on this interval's telemetry, before its poll
            break
        k += 1
        poll(k, plant.clock_epoch + plant.t + 0.05)
    alarm = twin.alarms[0]
    ev = next(e for e in alarm.events if e.what == "discard-assessed")
    assert ev.detail["since"] == alarm.onset
    # independent count: intervals polled after the last poll at or before the onset
    k0 = max(kk for t, kk in polls if t <= alarm.onset)
    for end in ("A->B", "B->A"):
        got = ev.detail["stores"][end]
        assert (got["added"], got["delivered"], got["lower_bound"]) == (
            10 * (k - k0),
            4 * (k - k0),
            False,
        )
    assert "off" in ev.detail["actuation"]


def test_forecasts_from_the_calibrated_supply_and_the_polled_consumption(tmp_path):
    plant, doc, sink = make_with_kmes(tmp_path, "A")
    twin = AttachedTwin(load_attach_file(doc), forecast_lead_s=600.0)
    url = "https://127.0.0.1:9/kme/v1/links"
    for k in range(1, 201):
        feed(plant, twin, sink, 1)
        t = plant.clock_epoch + plant.t + 0.05
        body = {"kme_id": "A", "time": t, "relayed": None, "links": [
            {"peer": "B", "enabled": True, "available": 3000 - 8 * k, "owned": 0,
             "reserved": 0, "added_total": 0, "delivered_total": 10 * k, "erased_total": 0,
             "discarded_total": 0}]}  # fmt: skip
        twin.on_poll("A", RawPoll(url, 200, json.dumps(body)), t)
    st = twin.state()
    f = st.kmes[0].links[0].forecast
    assert f is not None
    est = link(twin, "A-B").estimate
    assert f.supply_keys_per_s == pytest.approx(est.key_rate_bps / 256)
    assert f.consumption_keys_per_s == pytest.approx(10.0)
    assert f.level == 3000 - 8 * 200
    # a steady counter: no dispersion beyond Poisson, so the median is close to level / drift
    drift = f.consumption_keys_per_s - f.supply_keys_per_s
    assert f.ttd_s == pytest.approx(f.level / drift, rel=0.1)
    lo, hi = f.ttd_interval_s
    assert lo < f.ttd_s < hi
    assert f.warning == (f.p_empty_within_lead >= 0.5)
    pools = {p.id: p for p in st.pool_forecasts}
    assert pools["A|B"].bottleneck == "A->B"
    assert pools["A|B"].forecast == f
    assert pools["B|C"].forecast is None  # no KME of B polled


def test_what_if_starts_from_the_keys_the_kmes_hold_now(tmp_path):
    import numpy as np

    from qkdtwin.network import Demand, simulate

    plant, doc, sink = make_with_kmes(tmp_path, "A")
    att = load_attach_file(doc)
    twin = AttachedTwin(att)
    feed(plant, twin, sink, 5)
    url = "https://127.0.0.1:9/kme/v1/links"
    store = {"peer": "B", "enabled": True, "available": 37, "owned": 0, "reserved": 0,
             "added_total": 37, "delivered_total": 0, "erased_total": 0,
             "discarded_total": 0}  # fmt: skip
    body = {"kme_id": "A", "time": 1.0, "relayed": None, "links": [store]}
    twin.on_poll("A", RawPoll(url, 200, json.dumps(body)), plant.clock_epoch + plant.t)
    # a load the links cannot keep up with, so the keys in the pools now matter
    sets = {"X": 10, "load": 2.0, "duration": 50}
    got = twin.what_if(sets)
    sc = att.scenario()
    topo = sc.build_topology()
    demands = [Demand(d.src, d.dst, d.rate * 2.0 / 0.1) for d in sc.build_demands(topo)]

    def ref(levels):
        return simulate(
            topo, demands, pool_capacity=100, keys_per_service=10,
            policy="static", rng=np.random.default_rng(7), duration=50.0,
            initial_levels=levels,
        ).success_rate  # fmt: skip

    # A|B relays over the A->B store (37 keys now); B|C's stores were not polled: full
    assert got["params"]["start"] == "present"
    assert got["live"]["pools_from_present"] == 1
    assert got["success_rate"] == ref({("A", "B"): 37.0}) != ref(None)
    assert twin.what_if(sets, start="scenario")["success_rate"] == ref(None)
    with pytest.raises(ConfigError):
        twin.what_if({"Q": 1})


class _FakeKme:
    """An operator interface that records calls (the real one: tests/kms, tests/plant)."""

    def __init__(self, log: list, node: str) -> None:
        self.log, self.node, self.enabled = log, node, {}

    def set_link_state(self, peer, enabled):
        self.log.append((self.node, "state", peer, enabled))
        self.enabled[peer] = enabled
        return {"enabled": enabled}

    def set_route_state(self, a, b, enabled):
        self.log.append((self.node, "route", f"{a}-{b}", enabled))
        return {"enabled": enabled}

    def discard_since(self, peer, since):
        self.log.append((self.node, "discard", peer, since))
        return {"discarded": 7}

    def set_relay_quota(self, destination, keys_per_s, burst=None):
        self.log.append((self.node, "quota", destination, keys_per_s, burst))
        self.quotas = getattr(self, "quotas", {})
        if keys_per_s is None:
            self.quotas.pop(destination, None)
        else:
            self.quotas[destination] = keys_per_s
        return {"quota": None if keys_per_s is None else {"keys_per_s": keys_per_s}}

    def relay_quotas(self):
        return [{"destination": d, "keys_per_s": r} for d, r in getattr(self, "quotas", {}).items()]

    def links(self):
        from types import SimpleNamespace

        return SimpleNamespace(
            links=[SimpleNamespace(peer=p, enabled=e) for p, e in self.enabled.items()]
        )

    def close(self):
        pass


@pytest.mark.parametrize("mode", ["off", "on"])
def test_the_closed_loop_acts_on_both_kmes_only_when_on(tmp_path, mode):
    from qkdtwin.twin.actuate import Actuator

    plant, doc, sink = make_with_kmes(tmp_path, "A", "B", "C")
    twin = AttachedTwin(load_attach_file(doc), actuate=mode)
    assert twin.state().actuation == mode
    calls: list = []
    twin.actuator = Actuator(
        {n: (lambda n=n: _FakeKme(calls, n)) for n in ("A", "B", "C")},
        mode,
        on_done=twin._actions_done,
    )
    feed(plant, twin, sink, 300)
    plant.attack("A-B", "fiber-tap", 0.5)
    for _ in range(60):
        feed(plant, twin, sink, 1)
        if twin.alarms:
            break
    alarm = twin.alarms[0]
    twin.actuator.close()  # wait for the worker (on)
    acted = [e for e in alarm.events if e.what in ("actuated", "would-actuate")]
    assert [(e.detail["action"], e.detail["kme"]) for e in acted] == [
        ("disable", "A"), ("disable", "B"), ("avoid", "C"), ("discard", "A"), ("discard", "B"),
    ]  # fmt: skip
    since = twin.attach.clock.wall_time(alarm.onset)
    assert all(e.detail["since"] == since for e in acted if e.detail["action"] == "discard")
    if mode == "off":
        assert calls == []
        assert all(e.what == "would-actuate" and not e.detail["performed"] for e in acted)
    else:
        assert calls == [
            ("A", "state", "B", False), ("B", "state", "A", False), ("C", "route", "A-B", False),
            ("A", "discard", "B", since), ("B", "discard", "A", since),
        ]  # fmt: skip
        for e in acted:
            assert e.what == "actuated"
            assert e.detail["error"] is None
            assert e.detail["acked_at"] >= e.detail["sent_at"]
        assert [e.detail["effect"] for e in acted[:2]] == [{"enabled": False}] * 2
    # a replay never acts, whatever it is asked
    assert AttachedTwin(load_attach_file(doc), actuate="on", replay=True).actuator.mode == "off"


def test_the_closed_loop_sets_static_relay_quotas_on_the_detour_and_lifts_them(tmp_path):
    from qkdtwin.twin.actuate import QUOTA_BURST_S, Actuator

    plant, doc, sink = make_with_kmes(tmp_path, "A", "B", "C")
    # a gateway behind A whose aggregator sits at B: direct over A-B, relayed A-C-B after
    doc["iot"] = {"group": "plant", "aggregator": "B", "edges": {"GW": "A"}}
    twin = AttachedTwin(load_attach_file(doc), actuate="on")
    calls: list = []
    twin.actuator = Actuator(
        {n: (lambda n=n: _FakeKme(calls, n)) for n in ("A", "B", "C")},
        "on",
        on_done=twin._actions_done,
    )
    feed(plant, twin, sink, 300)
    caps = {lk.id: lk.estimate.key_rate_bps / 256 for lk in twin.state().links}
    plant.attack("A-B", "fiber-tap", 0.5)
    for _ in range(60):
        feed(plant, twin, sink, 1)
        if twin.alarms:
            break
    twin.actuator.close()
    # static policy: A-C and C-B each carry their own pool and the relayed pair A->B
    rate = min(caps["A-C"], caps["B-C"]) / 2
    quota = [c for c in calls if c[1] == "quota"]
    assert len(quota) == 1
    node, _, dest, got, burst = quota[0]
    assert (node, dest) == ("A", "B")
    assert got == pytest.approx(rate, rel=0.05)  # the estimates moved on a little since
    assert burst == max(1, math.ceil(got * QUOTA_BURST_S))
    acted = [e.detail for e in twin.alarms[0].events if e.what == "actuated"]
    q = next(d for d in acted if d["action"] == "quota")
    assert q["effect"] == {"keys_per_s": got}
    assert q["error"] is None
    # restored: A-B is direct again, the quota is lifted
    calls.clear()
    twin.actuator = Actuator(
        {n: (lambda n=n: _FakeKme(calls, n)) for n in ("A", "B", "C")},
        "on",
        on_done=twin._actions_done,
    )
    lk = twin.links["A-B"]
    twin._restore(lk, twin.alarms[0].onset or 0.0)
    twin.actuator.close()
    assert [c for c in calls if c[1] == "quota"] == [("A", "quota", "B", None, None)]


def test_a_plant_in_a_relative_directory_writes_a_usable_attach_file(tmp_path, monkeypatch):
    # make demo runs the plant with --data-dir out/demo/attach/plant: relative
    monkeypatch.chdir(tmp_path)
    plant = Plant(TRIANGLE, "rel/plant", broker="mqtt://127.0.0.1:1883", iot=False)
    plant.start(loop=False)
    try:
        att = load_attach_file(plant.attach_file)  # certificates resolved and found
        assert all(k.cert.is_absolute() and k.cert.is_file() for k in att.kmes.values())
    finally:
        plant.stop()


def test_a_disabled_links_store_gets_no_forecast(tmp_path):
    plant, doc, sink = make_with_kmes(tmp_path, "A")
    twin = AttachedTwin(load_attach_file(doc))
    url = "https://127.0.0.1:9/kme/v1/links"
    for k in range(1, 41):
        feed(plant, twin, sink, 1)
        t = plant.clock_epoch + plant.t + 0.05
        store = {"peer": "B", "enabled": k < 40, "available": 500 - 5 * k, "owned": 0,
                 "reserved": 0, "added_total": 0, "delivered_total": 10 * k,
                 "erased_total": 0, "discarded_total": 0}  # fmt: skip
        body = {"kme_id": "A", "time": t, "relayed": None, "links": [store]}
        twin.on_poll("A", RawPoll(url, 200, json.dumps(body)), t)
        if k == 39:
            assert twin.state().kmes[0].links[0].forecast is not None
    assert twin.state().kmes[0].links[0].forecast is None  # disabled at the last poll


def test_the_attached_service_reports_health_and_metrics(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    plant, twin, sink = make(tmp_path)
    c = AsgiClient(create_attached_app(twin))
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")  # nothing heard yet: not ready, each link named
    assert r.status_code == 503
    assert sorted(r.json()["reasons"]) == [
        f"link {lk}: telemetry never-seen" for lk in ("A-B", "A-C", "B-C")
    ]
    feed(plant, twin, sink, 80)
    plant.attack("A-B", "intercept-resend", 1.0)
    feed(plant, twin, sink, 3)
    r = c.get("/readyz")
    assert (r.status_code, r.json()["reasons"]) == (200, [])
    fams = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    st = twin.state()
    want = {lk.id: lk.estimate.qber for lk in st.links if lk.estimate.qber is not None}
    got = {s.labels["link"]: s.value for s in fams["qkdtwin_link_qber_estimate"].samples}
    assert got == pytest.approx(want)
    up = {s.labels["link"]: s.value for s in fams["qkdtwin_link_up"].samples}
    assert up["A-B"] == 0.0  # in alarm
    assert fams["qkdtwin_alarms_active"].samples[0].value >= 1


def test_displayed_estimates_are_refitted_staggered_at_scale(tmp_path):
    from qkdtwin.twin.attached import ESTIMATES_PER_INTERVAL

    plant, twin, sink = make(tmp_path)
    assert twin.estimate_every == 1  # a small network: every link every interval
    assert ESTIMATES_PER_INTERVAL == 100
    plant, twin, sink = make(tmp_path / "b", estimate_every=3)
    feed(plant, twin, sink, 10)
    fits = {
        lid: [round(h[0] - plant.clock_epoch) for h in lk.history] for lid, lk in twin.links.items()
    }
    # each link: its first interval, then every third one, at its own phase
    assert sorted(fits.values()) == [[1, 2, 5, 8], [1, 3, 6, 9], [1, 4, 7, 10]]
    later = [tuple(v[1:]) for v in fits.values()]
    assert len(set(later)) == 3  # no two links refit in the same interval


def test_detector_refits_are_staggered_and_spaced_with_the_links(tmp_path):
    from qkdtwin.twin.attached import refit_every_for

    assert [refit_every_for(n) for n in (3, 100, 500, 501, 1044, 10_000)] == [
        10,
        10,
        10,
        11,
        21,
        200,
    ]
    _plant, twin, _sink = make(tmp_path)
    assert twin.detector_config.refit_every == 10
    assert sorted(lk.detector._phase for lk in twin.links.values()) == [0, 1, 2]


def test_a_states_estimate_views_are_the_current_estimates_built_once_each(tmp_path):
    """The dashboard's estimate of a link is rebuilt only when the link was refitted: between
    refits two states share one view object; after one it is the new estimate's. The reference
    is the view built afresh from the link's estimate. The state's ingest totals are the
    stream's full snapshot's."""
    from qkdtwin.twin.attached import _estimate_view

    plant, twin, sink = make(tmp_path, estimate_every=3)
    feed(plant, twin, sink, 8)
    views = {}
    for step in range(4):
        st = twin.state()
        snap = twin.stream.snapshot()
        total = dataclasses.asdict(snap.total)
        assert {k: st.ingest.counts[k] for k in total} == total
        assert twin.stream.snapshot(modules=False).modules == {}
        for lv in st.links:
            lk = twin.links[lv.id]
            assert lv.estimate == _estimate_view(lk.estimate)
            if lv.id in views:
                same_fit = views[lv.id][1] is lk.estimate
                assert (lv.estimate is views[lv.id][0]) == same_fit, (step, lv.id)
            views[lv.id] = (lv.estimate, lk.estimate)
        feed(plant, twin, sink, 1)


def test_link_views_show_the_last_message_and_keep_no_message(tmp_path):
    """A link keeps its last message's sequence number, interval end, QBER and SKR as numbers:
    the message itself (~20 objects for the garbage collector, each living one interval)
    made full collections of a 1,044-link twin every ~7 intervals. The reference is the last
    message of each module, parsed here from the bytes the plant published."""
    from qkdtwin.interfaces import LinkTelemetry, parse_link_telemetry

    plant, twin, sink = make(tmp_path)
    last: dict[str, LinkTelemetry] = {}
    for _ in range(4):
        plant.step()
        t_recv = plant.clock_epoch + plant.t + 0.05
        for topic, payload in sink:
            twin.on_mqtt(topic, payload, t_recv)
            if topic.endswith("/perf"):
                msg = parse_link_telemetry(payload)
                last[msg.link_id] = msg
        sink.clear()
        twin.tick(t_recv)
    assert set(last) == {"A-B", "B-C", "A-C"}
    for lid, msg in last.items():
        v = link(twin, lid)
        assert (v.last_seq, v.last_interval_end, v.observed_qber, v.observed_skr_bps) == (
            msg.seq,
            msg.interval_end,
            msg.qber,
            msg.qkdl_performance.skr,
        )
    held = [v for lk in twin.links.values() for v in vars(lk).values()]
    assert not any(isinstance(v, LinkTelemetry) for v in held)
