"""IIoT telemetry over MQTT with TLS: username/password and client certificates.

The test starts its own Mosquitto (Debian's ``/usr/sbin/mosquitto``, which ``make test``
installs) on free ports with certificates generated for it: one listener that wants a
username and password over TLS, one that wants a client certificate (mutual TLS).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qkdtwin.cli import main
from qkdtwin.kms.tls import Pki, init_pki

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, int, int]]:
    tmp = tmp_path_factory.mktemp("mosq")
    pki = init_pki(tmp / "pki", kme_ids=["broker"], sae_ids=["gw", "stranger"])
    subprocess.run([PASSWD, "-b", "-c", str(tmp / "passwd"), "alice", "s3cret"], check=True)
    pw_port, cert_port = _free_port(), _free_port()
    cert, key = pki.kmes["broker"]
    conf = tmp / "mosquitto.conf"
    # started as root, mosquitto drops to the "mosquitto" user, who cannot read our 0600 keys
    who = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        who + "per_listener_settings true\n"
        f"listener {pw_port} 127.0.0.1\n"
        f"cafile {pki.ca_cert}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {tmp / 'passwd'}\n"
        f"listener {cert_port} 127.0.0.1\n"
        f"cafile {pki.ca_cert}\ncertfile {cert}\nkeyfile {key}\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        for port in (pw_port, cert_port):
            while True:
                assert proc.poll() is None, "mosquitto exited"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "mosquitto did not listen"
                    time.sleep(0.05)
        yield pki, pw_port, cert_port
    finally:
        proc.terminate()
        proc.wait(10)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["iot", "run", "--keys", "local", "--devices", "3", "--messages", "4", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_password_over_tls(broker, capsys, monkeypatch) -> None:
    pki, pw_port, _ = broker
    url = f"mqtts://alice:s3cret@127.0.0.1:{pw_port}"
    code, out, err = _run(capsys, "--broker", url, "--mqtt-ca", str(pki.ca_cert), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["delivered"] == doc["sent"] == 12
    assert "s3cret" not in out  # the password never shows
    assert doc["broker"] == f"mqtts://alice:***@127.0.0.1:{pw_port}"
    # the password from the environment instead of the URL
    monkeypatch.setenv("QKDTWIN_MQTT_PASSWORD", "s3cret")
    code, out, err = _run(
        capsys, "--broker", f"mqtts://alice@127.0.0.1:{pw_port}", "--mqtt-ca",
        str(pki.ca_cert), "--json",
    )  # fmt: skip
    assert code == 0, err
    # a wrong password: one line, exit 2, no secret in it
    code, out, err = _run(
        capsys, "--broker", f"mqtts://alice:wrong@127.0.0.1:{pw_port}", "--mqtt-ca",
        str(pki.ca_cert),
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "refused" in err
    assert "wrong" not in err


def test_client_certificate(broker, capsys) -> None:
    pki, _, cert_port = broker
    cert, key = pki.saes["gw"]
    url = f"mqtts://127.0.0.1:{cert_port}"
    ca = str(pki.ca_cert)
    code, out, err = _run(
        capsys, "--broker", url, "--mqtt-ca", ca, "--mqtt-cert", str(cert), "--mqtt-key",
        str(key), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["delivered"] == 12
    # no client certificate: the broker refuses the TLS handshake: one line, exit 2
    code, out, err = _run(capsys, "--broker", url, "--mqtt-ca", ca)
    assert code == 2
    assert err.count("\n") == 1
    # plain MQTT to a TLS listener, a certificate without its key: one line each
    code, _, err = _run(capsys, "--broker", f"mqtt://127.0.0.1:{cert_port}", "--mqtt-ca", ca)
    assert code == 2
    assert "mqtts://" in err
    code, _, err = _run(capsys, "--broker", url, "--mqtt-cert", str(cert))
    assert code == 2
    assert "--mqtt-key" in err


def test_tls_files_must_exist(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "--broker", "mqtts://127.0.0.1:8883", "--mqtt-ca",
                        str(tmp_path / "nope.pem"))  # fmt: skip
    assert code == 2
    assert "nope.pem" in err
