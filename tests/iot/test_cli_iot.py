"""``qkdtwin iot run``: JSON keys, real KMEs by default, errors as one line and exit 2."""

from __future__ import annotations

import json

import pytest

from qkdtwin.cli import main

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

KEYS = {
    "scheme",
    "devices",
    "sent",
    "delivered",
    "decrypt_failures",
    "rejected",
    "qkd_key_bits_consumed",
    "key_bits_per_message",
    "msgs_per_s",
    "latency_ms_p50",
    "latency_ms_p99",
}


def run_json(capsys, *args: str) -> dict:
    assert main(["iot", "run", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_run_uses_real_kmes_and_the_embedded_broker(capsys):
    out = run_json(capsys, "--scheme", "mobile", "--devices", "4", "--messages", "3")
    assert set(out) >= KEYS
    assert (out["keys"], out["broker"], out["mode"]) == ("kme", "embedded", "hybrid")
    assert (out["sent"], out["delivered"], out["decrypt_failures"], out["rejected"]) == (
        12,
        12,
        0,
        {},
    )
    assert out["qkd_key_bits_consumed"] == 256
    assert out["key_bits_per_message"] == 256 / 12


def test_fixed_scheme_over_mosquitto_with_local_keys_and_rekeying(capsys):
    out = run_json(
        capsys,
        "--scheme",
        "fixed",
        "--devices",
        "5",
        "--messages",
        "4",
        "--keys",
        "local",
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--rekey-messages",
        "10",
        "--mode",
        "qkd-only",
    )
    assert (out["delivered"], out["epochs"], out["qkd_key_bits_consumed"]) == (20, 2, 512)
    assert out["envelopes"] == 4
    assert out["msgs_per_s"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scheme", "ring"], "scheme"),
        (["--devices", "0"], "devices"),
        (["--mode", "quantum"], "mode"),
        (["--broker", "http://x"], "broker"),
        (["--keys", "magic"], "--keys"),
        (["--broker", "mqtt://127.0.0.1:1", "--keys", "local"], "MQTT broker"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, args, needle):
    assert main(["iot", "run", *args, "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err
    assert err.startswith("qkdtwin: error:")
