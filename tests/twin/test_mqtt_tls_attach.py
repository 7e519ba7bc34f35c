"""The twin's ingest and the plant over MQTT with TLS: passwords and client certificates.

Against a Mosquitto the test starts itself on free ports with certificates it generates
(:mod:`tests.mqtt_tls_broker`): one TLS listener that wants a username and password, one that
wants a client certificate.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qkdtwin.cli import main
from qkdtwin.errors import ConfigError, TransportError
from qkdtwin.iot.transport import MqttTransport, broker_security
from qkdtwin.kms.tls import init_pki
from qkdtwin.plant import Plant
from qkdtwin.twin.attach import load_attach_file
from qkdtwin.twin.attached_runner import AttachedRunner
from qkdtwin.twin.ingest import MqttIngest
from tests.mqtt_tls_broker import PASSWORD, USER, TlsBroker, tls_mosquitto

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

SEED = "examples/plant-seed.yaml"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with tls_mosquitto(tmp_path_factory.mktemp("mosq")) as b:
        yield b


@pytest.fixture(autouse=True)
def _no_env_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QKDTWIN_MQTT_PASSWORD", raising=False)


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _publisher(b: TlsBroker) -> MqttTransport:
    cert, key = b.client("stranger")
    sec = broker_security(b.cert_url, ca=b.ca, cert=cert, key=key)
    return MqttTransport("127.0.0.1", b.cert_port, security=sec)


def _receive_one(ingest_args: tuple[str, dict[str, Any]], b: TlsBroker) -> MqttIngest:
    url, kw = ingest_args
    topic = f"test/{uuid.uuid4().hex[:10]}"
    got: list[bytes] = []
    ingest = MqttIngest(url, [topic], lambda _t, p, _r: got.append(p), **kw).start()
    pub = _publisher(b)
    try:
        pub.publish(topic, b"over tls")
        wait_until(lambda: got == [b"over tls"])
    finally:
        pub.close()
        ingest.close()
    return ingest


# -- (a) the ingest receives over TLS -----------------------------------------------------------
def test_ingest_over_tls_with_a_password(
    tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    b = tls_broker
    caplog.set_level(logging.DEBUG)
    ingest = _receive_one((b.pw_url(), {"ca": b.ca}), b)
    assert ingest.tls
    assert ingest.url == f"mqtts://{USER}:***@127.0.0.1:{b.pw_port}"
    assert ingest.stats().url == ingest.url
    assert ingest.stats().connects == 1
    # the password from the environment instead of the URL
    monkeypatch.setenv("QKDTWIN_MQTT_PASSWORD", PASSWORD)
    ingest = _receive_one((b.pw_url(password=None), {"ca": Path(b.ca)}), b)
    assert ingest.url == f"mqtts://{USER}@127.0.0.1:{b.pw_port}"
    assert PASSWORD not in caplog.text


def test_ingest_over_tls_with_a_client_certificate(tls_broker: TlsBroker) -> None:
    b = tls_broker
    cert, key = b.client("gw")
    ingest = _receive_one((b.cert_url, {"ca": b.ca, "cert": cert, "key": key}), b)
    assert ingest.url == f"mqtts://127.0.0.1:{b.cert_port}"


# -- (b) refusals: one clear error, no secret in it ---------------------------------------------
def _refusal(url: str, **kw: Any) -> str:
    ingest = MqttIngest(url, ["test/#"], lambda *_: None, connect_timeout_s=5.0, **kw)
    with pytest.raises(TransportError) as exc:
        ingest.start()
    assert ingest.state == "closed"
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_wrong_password_untrusted_ca_and_missing_certificate(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    b = tls_broker
    err = _refusal(b.pw_url(password="wrong-pw"), ca=b.ca)
    assert "not authorised" in err
    assert f"mqtts://{USER}:***@127.0.0.1:{b.pw_port}" in err
    assert "wrong-pw" not in err
    # a username without a password anywhere: the hint names the variable
    err = _refusal(b.pw_url(password=None), ca=b.ca)
    assert "not authorised" in err
    assert "QKDTWIN_MQTT_PASSWORD" in err
    # a CA that did not sign the broker's certificate
    other = init_pki(tmp_path / "other", kme_ids=["x"], sae_ids=[])
    err = _refusal(b.pw_url(), ca=str(other.ca_cert))
    assert "certificate verify failed" in err
    assert PASSWORD not in err
    # no client certificate for a listener that wants one
    err = _refusal(b.cert_url, ca=b.ca)
    assert f"mqtts://127.0.0.1:{b.cert_port}" in err
    assert "certificate" in err


def test_bad_tls_parameters_are_config_errors(tls_broker: TlsBroker, tmp_path: Path) -> None:
    b = tls_broker
    cert, _key = b.client()
    with pytest.raises(ConfigError, match="--mqtt-key"):
        MqttIngest(b.cert_url, on_payload=lambda *_: None, ca=b.ca, cert=cert)
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        MqttIngest(b.cert_url, on_payload=lambda *_: None, ca=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="mqtts://"):
        MqttIngest(f"mqtt://127.0.0.1:{b.cert_port}", on_payload=lambda *_: None, ca=b.ca)


# -- (c) a plant publishing over TLS, a twin attached through the plant's attach file ----------
@pytest.mark.parametrize("login", ["password", "certificate"])
def test_plant_over_tls_and_a_twin_attached_by_its_attach_file(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    b = tls_broker
    tls: dict[str, Any]
    if login == "password":
        monkeypatch.setenv("QKDTWIN_MQTT_PASSWORD", PASSWORD)
        broker, tls = b.pw_url(password=None), {"mqtt_ca": b.ca}
    else:
        cert, key = b.client("gw")
        broker, tls = b.cert_url, {"mqtt_ca": b.ca, "mqtt_cert": cert, "mqtt_key": key}
    plant = Plant(SEED, tmp_path / "plant", broker=broker, kmes=False, iot=False, speed=10.0, **tls)
    runner = None
    try:
        plant.start()
        assert plant.attach_file is not None
        text = plant.attach_file.read_text()
        assert PASSWORD not in text
        att = load_attach_file(plant.attach_file)
        assert att.broker == broker
        assert {k: str(getattr(att, k)) for k in tls} == tls
        runner = AttachedRunner(plant.attach_file, serve=False).start()
        assert runner.ingest is not None
        assert runner.ingest.tls

        def intervals() -> list[int]:
            return [lk.estimate.intervals for lk in runner.twin.state().links]

        wait_until(lambda: min(intervals()) >= 3, timeout=20)
        assert len(intervals()) == len(plant.modules)
    finally:
        if runner is not None:
            runner.stop()
        plant.stop()


# -- (d) the CLI: bad TLS options are one line and exit 2 ---------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    _out, err = capsys.readouterr()
    return code, err


def test_plant_serve_bad_tls_options(
    tls_broker: TlsBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = tls_broker
    cert, _key = b.client()
    serve = ["plant", "serve", SEED, "--data-dir", str(tmp_path), "--no-iot", "--duration", "1"]
    for extra, needle in (
        (["--broker", b.cert_url, "--mqtt-ca", b.ca, "--mqtt-cert", cert], "--mqtt-key"),
        (["--broker", b.cert_url, "--mqtt-ca", str(tmp_path / "nope.pem")], "nope.pem"),
        (["--mqtt-ca", b.ca], "mqtts://"),  # the embedded broker is plain
        (["--broker", b.pw_url(password="wrong-pw"), "--mqtt-ca", b.ca], "not authori"),
    ):
        code, err = _cli(capsys, *serve, *extra)
        assert code == 2, (extra, err)
        assert needle in err.lower(), err  # paho says "Not authorized"
        assert err.count("\n") == 1, err
        assert "wrong-pw" not in err


def _attach_doc(**extra: Any) -> dict[str, Any]:
    return {
        "network": yaml.safe_load(Path("examples/network-seed.yaml").read_text()),
        "links": {"M1-M2": {"module_id": "qkd-M1-M2", "declared_detector_efficiency": 0.045}},
        **extra,
    }


def test_twin_attach_bad_tls_fields(
    tls_broker: TlsBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = tls_broker
    cert, _key = b.client()
    cases = [
        ({"broker": b.cert_url, "mqtt_ca": "nope.pem"}, "mqtt_ca"),
        ({"broker": b.cert_url, "mqtt_ca": b.ca, "mqtt_cert": cert}, "mqtt_cert"),
        ({"broker": f"mqtt://127.0.0.1:{b.pw_port}", "mqtt_ca": b.ca}, "mqtts://"),
        ({"broker": b.pw_url(password="file-pw"), "mqtt_ca": b.ca}, "QKDTWIN_MQTT_PASSWORD"),
        ({"broker": b.pw_url(password=None), "mqtt_ca": b.ca}, "not authorised"),
    ]
    for i, (fields, needle) in enumerate(cases):
        path = tmp_path / f"attach{i}.yaml"
        path.write_text(yaml.safe_dump(_attach_doc(**fields)))
        code, err = _cli(capsys, "twin", "serve", "--attach", str(path), "--port", "0")
        assert code == 2, (fields, err)
        assert needle in err, err
        assert err.count("\n") == 1, err
        assert "file-pw" not in err


def test_attach_file_tls_paths_are_relative_to_it(tls_broker: TlsBroker, tmp_path: Path) -> None:
    b = tls_broker
    cert, key = b.client()
    (tmp_path / "ca.pem").write_bytes(Path(b.ca).read_bytes())
    path = tmp_path / "attach.yaml"
    doc = _attach_doc(broker=b.cert_url, mqtt_ca="ca.pem", mqtt_cert=cert, mqtt_key=key)
    path.write_text(yaml.safe_dump(doc))
    att = load_attach_file(path)
    assert att.mqtt_ca == (tmp_path / "ca.pem").resolve()
    assert att.broker_address() == ("127.0.0.1", b.cert_port)


def test_plant_iiot_gateways_publish_over_tls(tls_broker: TlsBroker, tmp_path: Path) -> None:
    b = tls_broker
    cert, key = b.client("gw")
    plant = Plant(
        SEED, tmp_path, broker=b.cert_url, mqtt_ca=b.ca, mqtt_cert=cert, mqtt_key=key, speed=4.0
    )
    try:
        # each gateway's session waits until its aggregator saw the birth through the broker
        plant.start(loop=False)
        assert len(plant.sessions) == 6
        assert {s.config.broker for s in plant.sessions} == {b.cert_url}
        assert plant.describe()["mqtt_url"] == b.cert_url
    finally:
        plant.stop()
