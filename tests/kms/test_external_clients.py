"""Conformance run with an independent ETSI GS QKD 014 client: ``etsi-qkd-014-client`` 0.9.0.

Two KMEs (``kme-a``, ``kme-b``, one store each, reservations mirrored like ``dev-pair``) run
in-process over real HTTPS with mutual TLS on loopback; ``sae-a`` sits behind kme-a, ``sae-b``
and the foreign ``sae-x`` behind kme-b. Every request goes through the PyPI client
(``requests`` under it), not through qkdtwin's own client. The stores share a fake clock, so
the 5 s retry window of docs/kms.md is crossed without sleeping.

Departures of ``etsi-qkd-014-client`` 0.9.0 from the standard, worked around here (and listed
in docs/kms.md, "Conformance with external clients"):

* ``get_key`` sends ``GET enc_keys`` only when it has no parameter at all; with ``number`` or
  ``size`` it always POSTs a Key request. The standard's ``GET ...?number=&size=`` form is
  not offered, so the test sends it through the client's own mTLS transport (``_get``).
* ``get_key_with_key_IDs`` only POSTs Key IDs; ``GET dec_keys?key_ID=`` is sent the same way.
* ``DataKeyRequest.json()`` drops falsy values, so ``number=0`` (or ``size=0``) is silently
  sent as ``{}`` and the KME answers with its defaults instead of refusing the request.
* ``DataKeyContainer`` drops each key's ``key_extension``; ``DataStatus`` ignores
  ``status_extension``; ``extension_mandatory``/``extension_optional`` are typed ``dict``
  where the standard has arrays of objects (a list passes through unchanged).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from etsi_qkd_014_client import QKD014Client
from etsi_qkd_014_client.data import DataError, DataKeyContainer, DataKeyRequest, DataStatus

from qkdtwin.kms import RETRY_WINDOW_S, KeyStore, KmeConfig, create_app
from qkdtwin.kms.tls import Pki, RunningServer, init_pki, make_server

from .conftest import FakeClock

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

SAES = {"sae-a": "kme-a", "sae-b": "kme-b", "sae-x": "kme-b"}
KEY_BYTES = 32  # every stored key: 256 bits, the KMEs' default key_size
POOL = 80


@dataclass
class Pair:
    """Two running KMEs: ``urls['kme-a']`` is ``https://127.0.0.1:PORT``."""

    pki: Pki
    urls: dict[str, str]
    stores: dict[str, KeyStore]
    clock: FakeClock

    def hostport(self, kme: str) -> str:
        return self.urls[kme].removeprefix("https://")

    def cert(self, sae: str) -> tuple[str, str]:
        cert, key = self.pki.saes[sae]
        return str(cert), str(key)


def _mirror(peer: KeyStore) -> Any:
    def sync(master: str, slaves: list[str], key_ids: list[str], size_bits: int) -> None:
        peer.reserve(master, slaves, len(key_ids), size_bits, key_ids=key_ids)

    return sync


@contextmanager
def two_kmes(directory: Path, **config: Any) -> Iterator[Pair]:
    """Start kme-a and kme-b over mTLS on free loopback ports; stop them afterwards.

    ``config`` goes into both :class:`KmeConfig` objects (e.g. ``max_key_per_request``).
    """
    pki = init_pki(directory / "pki", kme_ids=["kme-a", "kme-b"], sae_ids=list(SAES))
    clock = FakeClock()
    with ExitStack() as stack:
        stores: dict[str, KeyStore] = {}
        for kme in ("kme-a", "kme-b"):
            stores[kme] = KeyStore(f"sqlite:///{directory / f'{kme}.db'}", now=clock)
            stack.callback(stores[kme].close)
        pool = [(str(uuid.uuid4()), os.urandom(KEY_BYTES)) for _ in range(POOL)]
        for store in stores.values():
            store.add_keys(pool)
        urls: dict[str, str] = {}
        for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
            app = create_app(
                KmeConfig(kme_id=kme, saes=SAES, **config),
                stores[kme],
                sync=_mirror(stores[peer]),
            )
            cert, key = pki.kmes[kme]
            server = make_server(
                app, host="127.0.0.1", port=0, certfile=cert, keyfile=key, ca_certs=pki.ca_cert
            )
            # Generous start-up limit: CI runs on 2 shared cores.
            running = stack.enter_context(RunningServer(server, startup_timeout_s=60.0))
            urls[kme] = f"https://127.0.0.1:{running.port}"
        yield Pair(pki=pki, urls=urls, stores=stores, clock=clock)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with two_kmes(tmp_path_factory.mktemp("ext-clients")) as p:
        yield p


def _client(pair: Pair, sae: str, kme: str) -> QKD014Client:
    cert, key = pair.cert(sae)
    return QKD014Client(pair.hostport(kme), cert, key, str(pair.pki.ca_cert))


def _container(code: int, data: object) -> DataKeyContainer:
    assert code == 200, data
    assert isinstance(data, DataKeyContainer)
    return data


def _error(code: int, data: object, expected: int) -> DataError:
    assert code == expected, data
    assert isinstance(data, DataError)
    assert data.message
    assert isinstance(data.details, list)
    return data


def _raw(client: QKD014Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Send through the library's own mTLS transport, for forms its API does not offer."""
    url = f"https://{client.kme_hostname}{path}"
    return client._get(url) if method == "GET" else client._post(url, body or {})


def _as_map(container: DataKeyContainer) -> dict[str, str]:
    return {k.key_id: k.key for k in container.keys}


def test_status(pair: Pair) -> None:
    code, status = _client(pair, "sae-a", "kme-a").get_status("sae-b")
    assert code == 200
    assert isinstance(status, DataStatus)
    assert (status.source_kme_id, status.target_kme_id) == ("kme-a", "kme-b")
    assert (status.master_sae_id, status.slave_sae_id) == ("sae-a", "sae-b")
    assert status.key_size == 8 * KEY_BYTES
    assert status.min_key_size <= status.key_size <= status.max_key_size
    assert 0 < status.stored_key_count <= status.max_key_count
    assert status.max_key_per_request >= 1
    assert status.max_sae_id_count == 0
    # The slave side asks its own KME about the same pair the other way round.
    code, status = _client(pair, "sae-b", "kme-b").get_status("sae-a")
    assert code == 200
    assert isinstance(status, DataStatus)
    assert (status.source_kme_id, status.target_kme_id) == ("kme-b", "kme-a")


def test_master_get_and_post_then_slave_by_id(pair: Pair) -> None:
    master = _client(pair, "sae-a", "kme-a")
    slave = _client(pair, "sae-b", "kme-b")
    # GET without parameters (the only GET form the client sends): the KME's defaults.
    (default,) = _container(*master.get_key("sae-b")).keys
    # POST Key request (what the client sends once any parameter is given).
    posted = _container(*master.get_key("sae-b", number=4, size=128)).keys
    # GET with number/size: the standard's form, through the client's own transport.
    raw = _raw(master, "GET", "/api/v1/keys/sae-b/enc_keys?number=3&size=192")
    got = DataKeyContainer(raw.json()).keys
    assert raw.status_code == 200
    assert [len(base64.b64decode(k.key)) for k in (default, *posted, *got)] == (
        [KEY_BYTES] + [16] * 4 + [24] * 3
    )
    sent = {k.key_id: k.key for k in (default, *posted, *got)}
    assert len(sent) == 8
    assert all(str(uuid.UUID(kid)) == kid for kid in sent)  # key_IDs are UUIDs

    # The slave gets the same keys by ID at its own KME: POST Key IDs (several at once)...
    ids = [k.key_id for k in posted]
    assert _as_map(_container(*slave.get_key_with_key_IDs("sae-a", ids))) == {
        i: sent[i] for i in ids
    }
    # ...and GET dec_keys?key_ID= (one key), through the client's transport.
    for k in (default, *got):
        raw = _raw(slave, "GET", f"/api/v1/keys/sae-a/dec_keys?key_ID={k.key_id}")
        assert raw.status_code == 200
        assert _as_map(DataKeyContainer(raw.json())) == {k.key_id: k.key}


def test_second_retrieval_refused_after_retry_window(pair: Pair) -> None:
    master = _client(pair, "sae-a", "kme-a")
    slave = _client(pair, "sae-b", "kme-b")
    keys = _container(*master.get_key("sae-b", number=2)).keys
    ids = [k.key_id for k in keys]
    first = _as_map(_container(*slave.get_key_with_key_IDs("sae-a", ids)))
    # Within the retry window a repeated request is answered again (a lost response)...
    assert _as_map(_container(*slave.get_key_with_key_IDs("sae-a", ids))) == first
    pair.clock.t += RETRY_WINDOW_S + 1
    # ...after it, each key is refused: 400, for the POST and the GET form alike.
    err = _error(*slave.get_key_with_key_IDs("sae-a", ids), expected=400)
    assert err.message == "key already delivered"
    raw = _raw(slave, "GET", f"/api/v1/keys/sae-a/dec_keys?key_ID={ids[1]}")
    assert raw.status_code == 400
    assert DataError(raw.json()).message == "key already delivered"


def test_foreign_sae_refused(pair: Pair) -> None:
    master = _client(pair, "sae-a", "kme-a")
    (key,) = _container(*master.get_key("sae-b")).keys
    # sae-x is registered at kme-b, but the key was not issued to it: 401.
    foreign = _client(pair, "sae-x", "kme-b")
    _error(*foreign.get_key_with_key_IDs("sae-a", [key.key_id]), expected=401)
    raw = _raw(foreign, "GET", f"/api/v1/keys/sae-a/dec_keys?key_ID={key.key_id}")
    assert raw.status_code == 401
    # The master itself asking kme-b (where it is not registered): 401 for every method.
    stranger = _client(pair, "sae-a", "kme-b")
    _error(*stranger.get_status("sae-b"), expected=401)
    _error(*stranger.get_key("sae-b"), expected=401)
    _error(*stranger.get_key_with_key_IDs("sae-b", [key.key_id]), expected=401)
    # The refusals consumed nothing: the real slave still gets the key.
    slave = _client(pair, "sae-b", "kme-b")
    assert _as_map(_container(*slave.get_key_with_key_IDs("sae-a", [key.key_id]))) == {
        key.key_id: key.key
    }


def test_bad_requests_are_400(pair: Pair) -> None:
    master = _client(pair, "sae-a", "kme-a")
    before = pair.stores["kme-a"].available_count(8 * KEY_BYTES)
    _error(*master.get_key("sae-b", number=10_000), expected=400)  # above max_key_per_request
    _error(*master.get_key("sae-b", size=257), expected=400)  # not a multiple of 8
    _error(*master.get_key("sae-unknown"), expected=400)  # unknown slave SAE
    err = _error(*master.get_key("sae-b", extension_mandatory=[{"x_vendor": 1}]), expected=400)
    assert err.details == [{"extension_unsupported": ["x_vendor"]}]
    # extension_optional may be ignored (the standard's words): served.
    assert len(_container(*master.get_key("sae-b", extension_optional=[{"x": 1}])).keys) == 1
    slave = _client(pair, "sae-b", "kme-b")
    _error(*slave.get_key_with_key_IDs("sae-a", [str(uuid.uuid4())]), expected=400)
    assert pair.stores["kme-a"].available_count(8 * KEY_BYTES) == before - 1


def test_client_drops_falsy_request_fields() -> None:
    # Departure of the client: number=0 and size=0 vanish from the Key request...
    assert DataKeyRequest(number=0, size=0).json() == {}
    assert DataKeyRequest(number=2, size=64).json() == {"number": 2, "size": 64}


def test_zero_number_refused_when_actually_sent(pair: Pair) -> None:
    # ...so number=0 is sent through the client's transport as the standard's JSON: 400.
    master = _client(pair, "sae-a", "kme-a")
    raw = _raw(master, "POST", "/api/v1/keys/sae-b/enc_keys", {"number": 0})
    assert raw.status_code == 400
    assert DataError(raw.json()).message.startswith("number must be")
