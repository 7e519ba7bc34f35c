"""IIoT telemetry over MQTT with TLS: username/password and client certificates.

The test starts its own Mosquitto (Debian's ``/usr/sbin/mosquitto``, which ``make test``
installs) on free ports with certificates generated for it (:mod:`tests.mqtt_tls_broker`): one
listener that wants a username and password over TLS, one that wants a client certificate
(mutual TLS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qkdtwin.cli import main
from qkdtwin.kms.tls import Pki
from tests.mqtt_tls_broker import tls_mosquitto

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, int, int]]:
    with tls_mosquitto(tmp_path_factory.mktemp("mosq")) as b:
        yield b.pki, b.pw_port, b.cert_port


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
