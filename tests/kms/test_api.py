from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request

from qkdtwin.errors import KeyAccessError
from qkdtwin.kms import KeyStore, KmeConfig, create_app
from qkdtwin.kms.api import caller_sae_id

from .conftest import FakeClock

CONFIG = KmeConfig(
    kme_id="kme-1",
    saes={"sae-a": "kme-1", "sae-b": "kme-1", "sae-c": "kme-1", "sae-far": "kme-2"},
    key_size=256,
    min_key_size=64,
    max_key_size=512,
    max_key_per_request=10,
    max_key_count=1000,
    max_sae_id_count=1,
)


def _header_sae(request: Request) -> str:
    sae = request.headers.get("x-test-sae-id")
    if not sae:
        raise KeyAccessError("no verified client certificate")
    return sae


class Api:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __call__(
        self, method: str, path: str, sae: str | None = "sae-a", **kw: Any
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            headers = dict(kw.pop("headers", {}))
            if sae:
                headers["x-test-sae-id"] = sae
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kme") as c:
                return await c.request(method, path, headers=headers, **kw)

        return anyio.run(go)


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[KeyStore]:
    s = KeyStore(db_url, now=clock, max_key_count=1000)
    s.add_keys((str(uuid.uuid4()), os.urandom(64)) for _ in range(20))
    yield s
    s.close()


@pytest.fixture
def api(store: KeyStore) -> Api:
    app = create_app(CONFIG, store)
    app.dependency_overrides[caller_sae_id] = _header_sae
    return Api(app)


def _assert_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"message", "details"}
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)


def test_status(api: Api) -> None:
    r = api("GET", "/api/v1/keys/sae-far/status")
    assert r.status_code == 200
    body = r.json()
    assert body["source_KME_ID"] == "kme-1"
    assert body["target_KME_ID"] == "kme-2"
    assert body["master_SAE_ID"] == "sae-a"
    assert body["slave_SAE_ID"] == "sae-far"
    assert body["stored_key_count"] == 20
    assert body["key_size"] == 256
    assert body["max_key_per_request"] == 10
    assert body["max_SAE_ID_count"] == 1
    assert body["min_key_size"] == 64
    assert body["max_key_size"] == 512
    assert body["max_key_count"] == 1000


def test_enc_then_dec_roundtrip_get_and_post(api: Api, store: KeyStore) -> None:
    r = api("POST", "/api/v1/keys/sae-b/enc_keys", json={"number": 3, "size": 128})
    assert r.status_code == 200, r.text
    keys = r.json()["keys"]
    assert len(keys) == 3
    assert all(len(base64.b64decode(k["key"])) == 16 for k in keys)
    ids = [{"key_ID": k["key_ID"]} for k in keys]
    d = api("POST", "/api/v1/keys/sae-a/dec_keys", sae="sae-b", json={"key_IDs": ids})
    assert d.status_code == 200, d.text
    assert d.json()["keys"] == keys
    g = api("GET", "/api/v1/keys/sae-b/enc_keys", params={"number": 1})
    assert g.status_code == 200
    (k,) = g.json()["keys"]
    assert len(base64.b64decode(k["key"])) == 32  # default key_size
    d1 = api("GET", "/api/v1/keys/sae-a/dec_keys", sae="sae-b", params={"key_ID": k["key_ID"]})
    assert d1.json()["keys"] == [k]
    assert store.available_count() == 16


def test_second_retrieval_after_window_fails(api: Api, clock: FakeClock) -> None:
    (k,) = api("GET", "/api/v1/keys/sae-b/enc_keys").json()["keys"]
    params = {"key_ID": k["key_ID"]}
    assert api("GET", "/api/v1/keys/sae-a/dec_keys", sae="sae-b", params=params).is_success
    clock.t += 6
    _assert_error(api("GET", "/api/v1/keys/sae-a/dec_keys", sae="sae-b", params=params), 400)


def test_multicast(api: Api) -> None:
    body = {"number": 1, "additional_slave_SAE_IDs": ["sae-c"]}
    (k,) = api("POST", "/api/v1/keys/sae-b/enc_keys", json=body).json()["keys"]
    for sae in ("sae-b", "sae-c"):
        r = api("GET", "/api/v1/keys/sae-a/dec_keys", sae=sae, params={"key_ID": k["key_ID"]})
        assert r.json()["keys"] == [k]
    too_many = {"number": 1, "additional_slave_SAE_IDs": ["sae-c", "sae-far"]}
    _assert_error(api("POST", "/api/v1/keys/sae-b/enc_keys", json=too_many), 400)


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("POST", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("POST", {"json": {"number": 0}}),
        ("POST", {"json": {"number": -1}}),
        ("POST", {"json": {"number": 11}}),
        ("POST", {"json": {"number": "many"}}),
        ("POST", {"json": {"size": 100}}),
        ("POST", {"json": {"size": 56}}),
        ("POST", {"json": {"size": 520}}),
        ("POST", {"json": {"additional_slave_SAE_IDs": ["nobody"]}}),
        ("POST", {"json": {"extension_mandatory": [{"abc_route_type": "direct"}]}}),
        ("GET", {"params": {"number": 0}}),
        ("GET", {"params": {"size": 7}}),
        ("GET", {"params": {"number": "x"}}),
    ],
)
def test_enc_keys_bad_input(api: Api, store: KeyStore, method: str, kw: dict[str, Any]) -> None:
    _assert_error(api(method, "/api/v1/keys/sae-b/enc_keys", **kw), 400)
    assert store.available_count() == 20
    assert store.audit_log() == []


def test_optional_extension_ignored(api: Api) -> None:
    body = {"number": 1, "extension_optional": [{"abc_route_type": "direct"}]}
    assert api("POST", "/api/v1/keys/sae-b/enc_keys", json=body).status_code == 200


def test_unknown_slave_and_unknown_caller(api: Api, store: KeyStore) -> None:
    _assert_error(api("GET", "/api/v1/keys/nobody/enc_keys"), 400)
    _assert_error(api("GET", "/api/v1/keys/nobody/status"), 400)
    _assert_error(api("GET", "/api/v1/keys/sae-b/enc_keys", sae="sae-far"), 401)
    _assert_error(api("GET", "/api/v1/keys/sae-b/enc_keys", sae="stranger"), 401)
    _assert_error(api("GET", "/api/v1/keys/sae-b/status", sae=None), 401)
    assert store.available_count() == 20


def test_not_enough_keys_is_503(api: Api, store: KeyStore) -> None:
    for _ in range(2):
        assert api("GET", "/api/v1/keys/sae-b/enc_keys", params={"number": 10}).is_success
    _assert_error(api("GET", "/api/v1/keys/sae-b/enc_keys"), 503)


def test_dec_keys_errors_consume_nothing(api: Api, store: KeyStore) -> None:
    (k,) = api("GET", "/api/v1/keys/sae-b/enc_keys").json()["keys"]
    kid = k["key_ID"]
    path = "/api/v1/keys/sae-a/dec_keys"
    # unknown key_ID
    _assert_error(api("GET", path, sae="sae-b", params={"key_ID": str(uuid.uuid4())}), 400)
    _assert_error(api("GET", path, sae="sae-b", params={"key_ID": "garbage"}), 400)
    # a key of another pair: sae-c was not named as a slave -> 401
    _assert_error(api("GET", path, sae="sae-c", params={"key_ID": kid}), 401)
    # wrong master in the path -> 401
    _assert_error(
        api("GET", "/api/v1/keys/sae-c/dec_keys", sae="sae-b", params={"key_ID": kid}), 401
    )
    # unknown master SAE
    _assert_error(
        api("GET", "/api/v1/keys/nobody/dec_keys", sae="sae-b", params={"key_ID": kid}), 400
    )
    # malformed bodies
    _assert_error(
        api("POST", path, sae="sae-b", content=b"[", headers={"content-type": "application/json"}),
        400,
    )
    _assert_error(api("POST", path, sae="sae-b", json={"key_IDs": "x"}), 400)
    _assert_error(api("POST", path, sae="sae-b", json={"key_IDs": []}), 400)
    _assert_error(api("GET", path, sae="sae-b"), 400)
    # mixed good and unknown: all or nothing
    both = {"key_IDs": [{"key_ID": kid}, {"key_ID": str(uuid.uuid4())}]}
    _assert_error(api("POST", path, sae="sae-b", json=both), 400)
    assert [e["action"] for e in store.audit_log()] == ["enc"]
    assert api("GET", path, sae="sae-b", params={"key_ID": kid}).json()["keys"] == [k]


def test_openapi_lists_the_etsi_paths(api: Api) -> None:
    doc = api("GET", "/openapi.json").json()
    assert set(doc["paths"]) == {
        "/api/v1/keys/{slave_SAE_ID}/status",
        "/api/v1/keys/{slave_SAE_ID}/enc_keys",
        "/api/v1/keys/{master_SAE_ID}/dec_keys",
        "/kme/v1/links",  # the operator interface (qkdtwin.kms.operator), not ETSI 014
    }
    for name in ("Status", "KeyRequest", "KeyContainer", "KeyIDs", "ErrorBody"):
        assert name in doc["components"]["schemas"]
