"""The plant as a process: Mosquitto, KMEs over mutual TLS, IIoT devices, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from qkdtwin.interfaces import parse_link_telemetry
from qkdtwin.plant import Plant
from qkdtwin.twin.attach import load_attach_file
from qkdtwin.twin.ingest import KmePoller

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

MOSQUITTO = "mqtt://127.0.0.1:1883"


@pytest.fixture(scope="module")
def live_plant(tmp_path_factory):
    plant = Plant(
        "examples/plant-seed.yaml",
        tmp_path_factory.mktemp("plant"),
        broker=MOSQUITTO,
        speed=4.0,
        # the broker is shared with tests running in parallel: this plant's IIoT frames only
        iot_group=f"plant-{uuid.uuid4().hex[:8]}",
    )
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, *_a: (cl.subscribe("qkdtwin/#", qos=1), ready.set())
    c.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    assert ready.wait(10)
    plant.start()
    time.sleep(5.0)
    yield plant, got
    c.loop_stop()
    c.disconnect()
    plant.stop()


def test_modules_publish_valid_telemetry_on_mosquitto(live_plant):
    plant, got = live_plant
    # the broker is shared with other tests: keep this plant's modules only
    ours = {f"qkdtwin/link/v1/{m.module_id}/perf" for m in plant.modules.values()}
    perf = [parse_link_telemetry(p) for t, p in got if t in ours]
    assert {m.link_id for m in perf} == set(plant.modules)
    assert len(perf) >= 12 * 5


def test_iiot_devices_publish_encrypted_telemetry(live_plant):
    plant, got = live_plant
    deadline = time.monotonic() + 60.0  # a loaded machine may need a while for the first epoch
    while not any(r.get("delivered", 0) > 0 for r in list(plant.iot_reports)):
        assert time.monotonic() < deadline, list(plant.iot_reports)[-3:]
        time.sleep(0.2)
    iot = [t for t, _p in list(got) if t.startswith(f"qkdtwin/v1/{plant.iot_group}/")]
    assert any("/NBIRTH/" in t for t in iot)
    assert any("/NDATA/" in t for t in iot)


def test_attach_file_lets_an_operator_poll_every_kme(live_plant):
    plant, _got = live_plant
    att = load_attach_file(plant.attach_file)
    assert set(att.links) == set(plant.modules)
    assert "truth" not in plant.attach_file.read_text()
    assert "control" not in plant.attach_file.read_text()
    # the telemetry key pairs (gateway SAE -> aggregator SAE) are named for ETSI status polls
    assert {p.kme for p in att.sae_status} == {f"GW{i}.{j}" for i in (1, 2, 3) for j in (1, 2)}
    # keys the modules distilled arrived in the KMEs at both ends of a backbone link; the two
    # ends are read one after the other while the plant keeps feeding, so look for a poll
    # between two pushes
    with KmePoller({n: (k.url, k.cert, k.key, k.ca) for n, k in att.kmes.items()}) as poller:
        for _ in range(40):
            res = poller.poll(time.time())
            assert all(r.ok for r in res.values()), [r.error for r in res.values() if not r.ok]
            a = {lk.peer: lk for lk in res["M1"].response.links}["M2"].added_total
            b = {lk.peer: lk for lk in res["M2"].response.links}["M1"].added_total
            if a == b:
                break
            time.sleep(0.05)
    assert a > 0
    assert a == b


def test_a_twin_granted_the_aggregator_identity_decrypts_what_the_aggregator_does(live_plant):
    from qkdtwin.twin.attached import AttachedTwin

    plant, got = live_plant
    att = load_attach_file(plant.attach_file)
    assert att.aggregator is not None
    assert oct(att.aggregator.kem_seed_file.stat().st_mode & 0o777) == "0o600"
    # the independent reference: every reading the plant's own aggregator verified
    seen: dict[tuple[str, float], dict] = {}
    for s in plant.sessions:
        s.aggregator.on_reading = lambda r: seen.__setitem__((r.device_id, r.t), r.values)
    # wait for data frames published after the hook (so the plant saw them through it)
    n0 = len(got)
    deadline = time.monotonic() + 60.0
    while sum("/NDATA/" in t for t, _p in got[n0:]) < 2 * len(plant.sessions):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    twin = AttachedTwin(att)
    try:
        # everything since the plant started, epoch 1's key exchange included, in order
        for topic, payload in list(got):
            twin.on_mqtt(topic, payload, time.time())
        readings = twin.state().readings
    finally:
        twin.close()
    assert readings.source == "decrypted"
    devices = plant.cfg.devices_per_gateway * len(plant.sessions)
    assert len(readings.devices) == devices, readings.counters
    assert not any(k.startswith("rejected.") for k in readings.counters), readings.counters
    for d in readings.devices:
        assert seen[(d.id, d.t)] == d.values


def test_cli_serve_json_first_line_then_bad_input(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qkdtwin",
            "plant",
            "serve",
            "examples/plant-seed.yaml",
            "--json",
            "--no-iot",
            "--duration",
            "6",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())
        assert {"control_url", "mqtt_url", "kmes", "attach_file"} <= set(first)
        url = first["control_url"]
        ok = subprocess.run(
            [
                sys.executable,
                "-m",
                "qkdtwin",
                "plant",
                "attack",
                "M1-M2",
                "--url",
                url,
                "--type",
                "pns",
                "--fraction",
                "0.2",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["attack"] == {"type": "pns", "fraction": 0.2}
        bad = subprocess.run(
            [sys.executable, "-m", "qkdtwin", "plant", "attack", "M1-M9", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2
        assert "M1-M9" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
        truth = subprocess.run(
            [sys.executable, "-m", "qkdtwin", "plant", "truth", "--url", url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert {lk["id"] for lk in json.loads(truth.stdout)["links"]} >= {"M1-M2"}
    finally:
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["plant", "serve", "nope.yaml"], "nope.yaml"),
        (["plant", "serve", "examples/plant-seed.yaml", "--speed", "0"], "speed"),
        (
            ["plant", "serve", "examples/plant-seed.yaml", "--broker", "mqtt://127.0.0.1:1"],
            "127.0.0.1:1",
        ),
        (
            ["plant", "drift", "M1-M2", "--loss-db", "1", "--url", "http://127.0.0.1:1"],
            "127.0.0.1:1",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    r = subprocess.run(
        [sys.executable, "-m", "qkdtwin", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_disabled_module_delivers_no_keys_and_the_truth_says_so(live_plant):
    import httpx

    plant, _got = live_plant
    url = plant.control_url
    truth = {lk["id"]: lk for lk in httpx.get(f"{url}/truth", timeout=10).json()["links"]}
    assert all(lk["kme_enabled"] is True for lk in truth.values())
    assert truth["M1-M3"]["keys_delivered_since_attack"] is None  # no attack
    r = httpx.post(f"{url}/modules/M1-M3/enable", json={"enabled": False}, timeout=10)
    assert r.status_code == 200
    assert r.json()["enabled"] is False
    fed = plant.keys_fed["M1-M3"]
    time.sleep(3.0)  # 12 plant intervals at speed 4: at least two delivery rounds
    assert plant.keys_fed["M1-M3"] == fed
    r = httpx.post(f"{url}/modules/M1-M3/enable", json={"enabled": True}, timeout=10)
    assert r.json()["enabled"] is True
    deadline = time.monotonic() + 10
    while plant.keys_fed["M1-M3"] == fed:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    bad = httpx.post(f"{url}/modules/M1-M3/enable", json={"enabled": "no"}, timeout=10)
    assert bad.status_code == 422
    # an attack records the KMEs' delivered counters: the truth reports keys since then
    httpx.post(f"{url}/links/M2-M3/attack", json={"type": "pns", "fraction": 0.1}, timeout=10)
    try:
        lk = next(x for x in httpx.get(f"{url}/truth", timeout=10).json()["links"]
                  if x["id"] == "M2-M3")  # fmt: skip
        assert isinstance(lk["keys_delivered_since_attack"], int)
        assert lk["keys_delivered_since_attack"] >= 0
    finally:
        httpx.post(f"{url}/links/M2-M3/clear", timeout=10)
