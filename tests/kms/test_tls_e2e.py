"""One KME over real HTTPS with mutual TLS on loopback (uvicorn on a background thread)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from qkdtwin.errors import KeyAccessError, KmsError, KmsRequestError
from qkdtwin.kms import KeyStore, KmeConfig, create_app
from qkdtwin.kms.client import KmeClient
from qkdtwin.kms.tls import Pki, RunningServer, init_pki, issue_certificate, make_server

from .conftest import FakeClock

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(
        tmp_path_factory.mktemp("pki"), kme_ids=["kme-1"], sae_ids=["sae-a", "sae-b", "sae-x"]
    )


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def kme(pki: Pki, tmp_path_factory: pytest.TempPathFactory, clock: FakeClock) -> Iterator[str]:
    store = KeyStore(f"sqlite:///{tmp_path_factory.mktemp('db') / 'kme.db'}", now=clock)
    store.add_keys((str(uuid.uuid4()), os.urandom(32)) for _ in range(50))
    config = KmeConfig(kme_id="kme-1", saes={"sae-a": "kme-1", "sae-b": "kme-1", "sae-x": "kme-1"})
    cert, key = pki.kmes["kme-1"]
    server = make_server(
        create_app(config, store),
        host="127.0.0.1",
        port=0,
        certfile=cert,
        keyfile=key,
        ca_certs=pki.ca_cert,
    )
    with RunningServer(server) as running:
        yield f"https://127.0.0.1:{running.port}"
    store.close()


def _client(url: str, pki: Pki, sae: str) -> KmeClient:
    cert, key = pki.saes[sae]
    return KmeClient(url, cert, key, pki.ca_cert, timeout_s=5.0)


def test_master_then_slave_then_refused(kme: str, pki: Pki, clock: FakeClock) -> None:
    with _client(kme, pki, "sae-a") as a, _client(kme, pki, "sae-b") as b:
        assert a.status("sae-b")["master_SAE_ID"] == "sae-a"
        keys = a.get_keys("sae-b", number=4)
        assert len(keys) == 4
        assert b.get_keys_with_ids("sae-a", [k.key_id for k in keys]) == keys
        clock.t += 10
        with pytest.raises(KmsRequestError):
            b.get_keys_with_ids("sae-a", [keys[0].key_id])


def test_foreign_sae_refused(kme: str, pki: Pki) -> None:
    with _client(kme, pki, "sae-a") as a, _client(kme, pki, "sae-x") as x:
        (k,) = a.get_keys("sae-b")
        with pytest.raises(KeyAccessError):
            x.get_keys_with_ids("sae-a", [k.key_id])


def _write(tmp: Path, name: str, cert: object, key: object) -> tuple[Path, Path]:
    c, k = tmp / f"{name}.pem", tmp / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
    k.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def _ca(pki: Pki) -> tuple[object, object]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    return cert, key


def test_unsigned_foreign_and_expired_certificates_refused(
    kme: str, pki: Pki, tmp_path: Path
) -> None:
    ca_cert, ca_key = _ca(pki)
    self_signed = _write(tmp_path, "self", *issue_certificate("sae-a", sae_id="sae-a"))
    other_ca_cert, other_ca_key = issue_certificate("evil CA", is_ca=True)
    foreign = _write(
        tmp_path,
        "foreign",
        *issue_certificate(
            "sae-a", issuer_cert=other_ca_cert, issuer_key=other_ca_key, sae_id="sae-a"
        ),
    )
    expired = _write(
        tmp_path,
        "expired",
        *issue_certificate(
            "sae-a",
            issuer_cert=ca_cert,
            issuer_key=ca_key,
            sae_id="sae-a",
            days=-1,  # type: ignore[arg-type]
        ),
    )
    for cert, key in (self_signed, foreign, expired):
        with KmeClient(kme, cert, key, pki.ca_cert, timeout_s=5.0) as c:
            with pytest.raises(KmsError, match="cannot reach KME") as info:
                c.status("sae-b")
            assert type(info.value) is KmsError  # a TLS refusal, not an ETSI 401


def test_no_client_certificate_refused(kme: str, pki: Pki) -> None:
    import ssl

    import httpx

    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with httpx.Client(verify=ctx, timeout=5.0) as c, pytest.raises(httpx.HTTPError):
        c.get(f"{kme}/api/v1/keys/sae-b/status")


def test_idle_client_that_never_closes_tls_is_dropped(pki: Pki, tmp_path: Path) -> None:
    """A client that keeps its socket but never answers the TLS close (as ``requests`` does)
    is dropped after the keep-alive time plus a short grace, not after asyncio's 30 s."""
    import socket
    import ssl
    import time

    store = KeyStore(f"sqlite:///{tmp_path / 'kme.db'}")
    config = KmeConfig(kme_id="kme-1", saes={"sae-a": "kme-1", "sae-b": "kme-1"})
    cert, key = pki.kmes["kme-1"]
    server = make_server(
        create_app(config, store),
        host="127.0.0.1",
        port=0,
        certfile=cert,
        keyfile=key,
        ca_certs=pki.ca_cert,
        keep_alive_s=1,
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(*map(str, pki.saes["sae-a"]))
    with RunningServer(server) as running:
        raw = socket.create_connection(("127.0.0.1", running.port))
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(
                b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\n"
                b"Host: x\r\nConnection: keep-alive\r\n\r\n"
            )
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")
            assert len(server.server_state.connections) == 1
            # Keep the socket, read nothing: the server's close_notify is never answered.
            deadline = time.monotonic() + 15.0  # asyncio alone would linger for 30 s
            while server.server_state.connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not server.server_state.connections
    store.close()
