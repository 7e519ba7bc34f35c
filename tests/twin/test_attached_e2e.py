"""The attached twin as users run it: plant and twin processes, MQTT, KMEs, record and replay."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

QKDTWIN = [sys.executable, "-m", "qkdtwin"]


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QKDTWIN, *args], capture_output=True, text=True, timeout=timeout)


def test_attach_demo_detects_pns_and_a_fibre_tap_from_statistics(tmp_path):
    r = cli(
        "twin", "attach-demo", "--json", "--port", "0", "--data-dir", str(tmp_path), timeout=400
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    kinds = {a["link"]: a["alarm_kind"] for a in res["attacks"]}
    assert kinds == {"M1-M2": "decoy-yield", "M2-M3": "loss-step"}
    assert all(0 <= a["delay_s"] <= 120 for a in res["attacks"])
    assert res["false_alarms"] == []
    assert len(res["links"]) == 12
    # the plant grants the twin the aggregator's identity: every device's readings decrypted
    assert res["readings_devices"] == 12
    assert res["readings_delivered"] > 0
    # the closed loop (on in the demo): each alarmed link stopped at both KMEs within 2 s
    assert res["actuation"] == "on"
    for a in res["attacks"]:
        assert a["stop_s"] is not None
        assert a["stop_s"] < 2.0
        assert a["rerouted_kmes"] == 10
    assert res["what_if_success"] is not None


def test_live_record_then_replay_gives_the_same_alarms(tmp_path):
    plant = subprocess.Popen(
        [*QKDTWIN, "plant", "serve", "examples/plant-seed.yaml", "--json", "--no-iot",
         "--speed", "10", "--data-dir", str(tmp_path / "plant")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    twin = None
    try:
        info = json.loads(plant.stdout.readline())
        rec = tmp_path / "rec.jsonl"
        twin = subprocess.Popen(
            [*QKDTWIN, "twin", "serve", "--attach", info["attach_file"], "--port", "0",
             "--record", str(rec), "--duration", "90", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = json.loads(twin.stdout.readline())["url"]

        def state() -> dict:
            return httpx.get(f"{url}/api/state", timeout=10).json()

        deadline = time.monotonic() + 60
        while not all(lk["estimate"]["converged"] for lk in state()["links"]):
            assert time.monotonic() < deadline, "no calibration"
            time.sleep(0.2)
        assert all(k["status"] == "ok" for k in state()["kmes"])
        att = cli("plant", "attack", "M1-M3", "--url", info["control_url"], "--type",
                  "intercept-resend", "--fraction", "0.5")  # fmt: skip
        assert att.returncode == 0, att.stderr
        deadline = time.monotonic() + 30
        while not state()["alarms"]:
            assert time.monotonic() < deadline, "no alarm"
            time.sleep(0.2)
        live = [(a["link"], a["kind"], a["raised_at"]) for a in reversed(state()["alarms"])]
        assert live[0][:2] == ("M1-M3", "qber")
        twin.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop that closes the recording
        _out, err = twin.communicate(timeout=60)
        assert twin.returncode == 0, err
    finally:
        if twin is not None and twin.poll() is None:
            twin.kill()
        plant.terminate()
        plant.communicate(timeout=60)
    assert (tmp_path / "rec.jsonl.attach.yaml").is_file()
    rep = cli("twin", "serve", "--replay", str(rec), "--json")
    assert rep.returncode == 0, rep.stderr
    replayed = [(a["link"], a["kind"], a["raised_at"]) for a in json.loads(rep.stdout)["alarms"]]
    assert replayed[: len(live)] == live


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["twin", "serve", "--attach", "no-such.yaml"], "no-such.yaml"),
        (["twin", "serve", "--record", "x.jsonl"], "--record"),
        (["twin", "serve", "--replay", "no-such.jsonl"], "no-such.jsonl"),
        (["twin", "serve", "--attach", "{attach}", "--arl-days", "0"], "arl"),
        (["twin", "serve", "--attach", "{attach_bad_broker}"], "127.0.0.1:1"),
        (["twin", "serve", "--attach", "{attach_v}"], "declared_detector_efficiency"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    doc = {
        "broker": "mqtt://127.0.0.1:1883",
        "network": yaml.safe_load(Path("examples/network-seed.yaml").read_text()),
        "links": {"M1-M2": {"module_id": "qkd-M1-M2", "declared_detector_efficiency": 0.045}},
    }
    files = {}
    for name, d in (
        ("attach", doc),
        ("attach_bad_broker", {**doc, "broker": "mqtt://127.0.0.1:1"}),
        (
            "attach_v",
            {**doc, "links": {"M1-M2": {"module_id": "m", "declared_detector_efficiency": 2}}},
        ),
    ):
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(d))
        files[name] = str(p)
    r = cli(*[a.format(**files) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
