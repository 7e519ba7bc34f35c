"""The KME's published OpenAPI document, and its live answers, against ETSI GS QKD 014 V1.1.1.

ETSI published no OpenAPI description for V1.1.1, so the reference is
``etsi_gs_qkd_014_v1.1.1.yaml`` beside this file, written from the standard's clauses 5 and 6
(its header says how). Compared: paths and methods, parameters (name, place, required-ness,
type), request bodies, status codes, content types, and every schema's field names, types and
required-ness, recursively. Then the bodies the service really sends (success and each error)
are checked against the reference schemas, strictly: no missing or unknown field, no
``null`` where the standard has an object, key_IDs that are UUIDs, keys that are base64.

The document also holds one operation outside the standard, listed in :data:`NON_ETSI`: the
operator interface ``GET /kme/v1/links`` (:mod:`qkdtwin.kms.operator`), under its own prefix;
the comparison covers the ``/api/v1/`` operations.

Tolerated, and listed exactly in :data:`NULLABLE_OPTIONALS`: FastAPI renders an optional
field or query parameter as ``anyOf: [T, null]``. On requests that is a superset (an explicit
``null`` is read as absent); on responses the service omits absent optional fields instead of
sending ``null`` (checked on the live bodies below).
"""

from __future__ import annotations

import base64
import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from fastapi import FastAPI, Request

from qkdtwin.errors import KeyAccessError
from qkdtwin.kms import KeyStore, KmeConfig, create_app
from qkdtwin.kms.api import caller_sae_id

REFERENCE = Path(__file__).with_name("etsi_gs_qkd_014_v1.1.1.yaml")
METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}
CONFIG = KmeConfig(
    kme_id="kme-1",
    saes={"sae-a": "kme-1", "sae-b": "kme-1", "sae-c": "kme-1", "sae-far": "kme-2"},
    max_key_per_request=10,
)
POOL = 12

#: Operations of our document that ETSI GS QKD 014 does not define, and their schemas.
NON_ETSI = {"GET /kme/v1/links"}
NON_ETSI_SCHEMAS = {
    "KmeLinksResponse",
    "LinkCounts",
    "KeyCountsModel",
    "StoreHealth",
    "AdmissionStats",
}

#: Where our document says ``T or null`` and the standard says ``T``; all optional.
NULLABLE_OPTIONALS = {
    *(
        f"GET /api/v1/keys/{{slave_SAE_ID}}/enc_keys query {p}" for p in ("number", "size")
    ),  # optional query parameters
    *(
        f"POST /api/v1/keys/{{slave_SAE_ID}}/enc_keys request .{f}"
        for f in (
            "number",
            "size",
            "additional_slave_SAE_IDs",
            "extension_mandatory",
            "extension_optional",
        )
    ),
    "POST /api/v1/keys/{master_SAE_ID}/dec_keys request .key_IDs[].key_ID_extension",
    "POST /api/v1/keys/{master_SAE_ID}/dec_keys request .key_IDs_extension",
    # Response schemas: allowed by the document, never sent (see test_live_bodies...).
    *(
        f"{op} {code} {f}"
        for op in (
            "GET /api/v1/keys/{slave_SAE_ID}/enc_keys",
            "POST /api/v1/keys/{slave_SAE_ID}/enc_keys",
            "GET /api/v1/keys/{master_SAE_ID}/dec_keys",
            "POST /api/v1/keys/{master_SAE_ID}/dec_keys",
        )
        for code, f in (
            ("200", ".keys[].key_ID_extension"),
            ("200", ".keys[].key_extension"),
            ("200", ".key_container_extension"),
            *((c, ".details") for c in ("400", "401", "503")),
        )
    ),
    "GET /api/v1/keys/{slave_SAE_ID}/status 200 .status_extension",
    *(f"GET /api/v1/keys/{{slave_SAE_ID}}/status {c} .details" for c in ("400", "401", "503")),
}


def _reference() -> dict[str, Any]:
    return dict(yaml.safe_load(REFERENCE.read_text()))


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    store = KeyStore(f"sqlite:///{tmp_path_factory.mktemp('oas') / 'kme.db'}")
    try:
        yield create_app(CONFIG, store).openapi()
    finally:
        store.close()


def _deref(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _shape(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Reduce a schema to type, nullability, properties, required names and items."""
    schema = _deref(doc, schema)
    nullable = False
    if "anyOf" in schema:
        alts = [_deref(doc, a) for a in schema["anyOf"]]
        nullable = any(a.get("type") == "null" for a in alts)
        (schema,) = [a for a in alts if a.get("type") != "null"]
    out: dict[str, Any] = {"type": schema.get("type"), "nullable": nullable}
    if out["type"] == "object":
        props = schema.get("properties", {})
        out["properties"] = {k: _shape(doc, v) for k, v in props.items()}
        out["required"] = set(schema.get("required", []))
    elif out["type"] == "array":
        out["items"] = _shape(doc, schema["items"])
    return out


def _compare(
    std: dict[str, Any], ours: dict[str, Any], where: str, optional: bool, nullable: set[str]
) -> list[str]:
    """Differences between two shapes; optional places where ours adds null go to nullable."""
    if std["type"] != ours["type"]:
        return [f"{where}: type {ours['type']!r}, standard {std['type']!r}"]
    problems: list[str] = []
    if ours["nullable"] and not std["nullable"]:
        if optional:
            nullable.add(where)
        else:
            problems.append(f"{where}: nullable, but required by the standard")
    if std["type"] == "object":
        s_props, o_props = std["properties"], ours["properties"]
        if set(s_props) != set(o_props):
            problems.append(f"{where}: fields {sorted(o_props)}, standard {sorted(s_props)}")
        if std["required"] != ours["required"]:
            problems.append(
                f"{where}: required {sorted(ours['required'])}, standard {sorted(std['required'])}"
            )
        for name in sorted(set(s_props) & set(o_props)):
            problems += _compare(
                s_props[name],
                o_props[name],
                f"{where}.{name}",
                name not in std["required"],
                nullable,
            )
    elif std["type"] == "array":
        problems += _compare(std["items"], ours["items"], f"{where}[]", False, nullable)
    return problems


def _operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _compare_documents(ours: dict[str, Any]) -> tuple[list[str], set[str]]:
    std = _reference()
    std_ops = _operations(std)
    our_ops = {k: v for k, v in _operations(ours).items() if k not in NON_ETSI}
    problems: list[str] = []
    nullable: set[str] = set()
    if set(std_ops) != set(our_ops):
        problems.append(f"operations {sorted(our_ops)}, standard {sorted(std_ops)}")
    for key in sorted(set(std_ops) & set(our_ops)):
        s_op, o_op = std_ops[key], our_ops[key]
        s_params = {(p["name"], p["in"]): p for p in s_op.get("parameters", [])}
        o_params = {(p["name"], p["in"]): p for p in o_op.get("parameters", [])}
        if set(s_params) != set(o_params):
            problems.append(f"{key}: parameters {sorted(o_params)}, standard {sorted(s_params)}")
        for name, place in sorted(set(s_params) & set(o_params)):
            s_p, o_p = s_params[name, place], o_params[name, place]
            if bool(s_p.get("required")) != bool(o_p.get("required")):
                problems.append(f"{key} {place} {name}: required-ness differs")
            problems += _compare(
                _shape(std, s_p["schema"]),
                _shape(ours, o_p["schema"]),
                f"{key} {place} {name}",
                not s_p.get("required"),
                nullable,
            )
        s_body, o_body = s_op.get("requestBody"), o_op.get("requestBody")
        if (s_body is None) != (o_body is None):
            problems.append(f"{key}: request body present in one document only")
        elif s_body is not None and o_body is not None:
            if set(s_body["content"]) != set(o_body["content"]):
                problems.append(f"{key}: request content types {sorted(o_body['content'])}")
            for ctype in set(s_body["content"]) & set(o_body["content"]):
                problems += _compare(
                    _shape(std, s_body["content"][ctype]["schema"]),
                    _shape(ours, o_body["content"][ctype]["schema"]),
                    f"{key} request ",
                    False,
                    nullable,
                )
        s_resp, o_resp = s_op["responses"], o_op["responses"]
        if set(s_resp) != set(o_resp):
            problems.append(f"{key}: status codes {sorted(o_resp)}, standard {sorted(s_resp)}")
        for code in sorted(set(s_resp) & set(o_resp)):
            s_content, o_content = s_resp[code]["content"], o_resp[code].get("content", {})
            if set(s_content) != set(o_content):
                problems.append(f"{key} {code}: content types {sorted(o_content)}")
            for ctype in set(s_content) & set(o_content):
                problems += _compare(
                    _shape(std, s_content[ctype]["schema"]),
                    _shape(ours, o_content[ctype]["schema"]),
                    f"{key} {code} ",
                    False,
                    nullable,
                )
    return problems, nullable


def test_reference_is_the_standards_shape() -> None:
    std = _reference()
    assert set(std["components"]["schemas"]) == {
        "Status",
        "KeyRequest",
        "KeyContainer",
        "KeyIDs",
        "Error",
    }
    assert len(_operations(std)) == 5


def test_document_matches_standard(ours: dict[str, Any]) -> None:
    problems, _nullable = _compare_documents(ours)
    assert problems == []


def test_only_optional_places_are_nullable(ours: dict[str, Any]) -> None:
    _problems, nullable = _compare_documents(ours)
    assert nullable == NULLABLE_OPTIONALS


def test_only_the_operator_interface_is_added(ours: dict[str, Any]) -> None:
    assert set(_operations(ours)) - set(_operations(_reference())) == NON_ETSI
    assert all(k.split()[1].startswith("/kme/v1/") for k in NON_ETSI)


def test_no_validation_error_schema_is_published(ours: dict[str, Any]) -> None:
    # FastAPI's 422/HTTPValidationError would advertise a non-ETSI status and body.
    assert set(ours["components"]["schemas"]) == {
        "Status",
        "KeyRequest",
        "KeyContainer",
        "Key",
        "KeyIDs",
        "KeyID",
        "ErrorBody",
        *NON_ETSI_SCHEMAS,
    }


def test_comparison_catches_departures(ours: dict[str, Any]) -> None:
    # The comparison itself: a renamed field, a changed type, an extra status code.
    broken = copy.deepcopy(ours)
    status = broken["components"]["schemas"]["Status"]["properties"]
    status["max_sae_id_count"] = status.pop("max_SAE_ID_count")
    broken["components"]["schemas"]["KeyRequest"]["properties"]["number"] = {"type": "string"}
    broken["paths"]["/api/v1/keys/{slave_SAE_ID}/status"]["get"]["responses"]["404"] = {}
    problems, _ = _compare_documents(broken)
    assert len(problems) == 3, problems


# -- live bodies against the reference schemas ----------------------------------------------


def _check(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """Strict check of a JSON value against a reference schema (the subset it uses)."""
    schema = _deref(doc, schema)
    kind = schema["type"]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        props = schema.get("properties")
        problems = [f"{where}: {n} missing" for n in schema.get("required", []) if n not in value]
        if props is not None:
            problems += [f"{where}: unknown field {n}" for n in value if n not in props]
            for name in set(value) & set(props):
                problems += _check(doc, props[name], value[name], f"{where}.{name}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not an array"]
        return [p for v in value for p in _check(doc, schema["items"], v, f"{where}[]")]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not an integer"]
    assert kind == "string"
    if not isinstance(value, str):
        return [f"{where}: {value!r} is not a string"]
    if schema.get("format") == "uuid" and str(uuid.UUID(value)) != value.lower():
        return [f"{where}: {value!r} is not a UUID"]
    if schema.get("contentEncoding") == "base64":
        base64.b64decode(value, validate=True)
    return []


def _header_sae(request: Request) -> str:
    sae = request.headers.get("x-test-sae-id")
    if not sae:
        raise KeyAccessError("no verified client certificate")
    return sae


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    store = KeyStore(f"sqlite:///{tmp_path / 'kme.db'}")
    store.add_keys((str(uuid.uuid4()), os.urandom(32)) for _ in range(POOL))
    application = create_app(CONFIG, store)
    application.dependency_overrides[caller_sae_id] = _header_sae
    try:
        yield application
    finally:
        store.close()


def _call(app: FastAPI, method: str, path: str, sae: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://kme") as c:
            return await c.request(method, path, headers={"x-test-sae-id": sae}, **kw)

    return anyio.run(go)


def _template(path: str) -> str:
    endpoint = path.rsplit("/", 1)[1]
    role = "master" if endpoint == "dec_keys" else "slave"
    return f"/api/v1/keys/{{{role}_SAE_ID}}/{endpoint}"


def test_live_bodies_match_the_standard(app: FastAPI) -> None:
    std = _reference()
    enc, dec = "/api/v1/keys/sae-b/enc_keys", "/api/v1/keys/sae-a/dec_keys"
    got = _call(app, "GET", enc, "sae-a", params={"number": 2})
    posted = _call(app, "POST", enc, "sae-a", json={"number": 1, "size": 128})
    ids = [k["key_ID"] for r in (got, posted) for k in r.json()["keys"]]
    calls: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("GET", "/api/v1/keys/sae-b/status", "sae-a", {}, 200),
        ("GET", dec, "sae-b", {"params": {"key_ID": ids[0]}}, 200),
        ("POST", dec, "sae-b", {"json": {"key_IDs": [{"key_ID": i} for i in ids[1:]]}}, 200),
        ("GET", "/api/v1/keys/sae-nobody/status", "sae-a", {}, 400),
        ("GET", enc, "sae-a", {"params": {"size": 7}}, 400),
        ("GET", enc, "sae-a", {"params": {"number": "many"}}, 400),
        ("POST", enc, "sae-a", {"content": b"{not json"}, 400),
        ("POST", enc, "sae-a", {"json": {"extension_mandatory": [{"x": 1}]}}, 400),
        ("GET", dec, "sae-b", {"params": {"key_ID": str(uuid.uuid4())}}, 400),
        ("POST", dec, "sae-b", {"json": {"key_IDs": "nope"}}, 400),
        ("GET", "/api/v1/keys/sae-b/status", "sae-far", {}, 401),
        ("GET", dec, "sae-c", {"params": {"key_ID": ids[0]}}, 401),
        ("GET", enc, "sae-a", {"params": {"number": 10}}, 503),
    ]
    for method, path, sae, kw, expected in calls:
        r = _call(app, method, path, sae, **kw)
        assert r.status_code == expected, (method, path, r.text)
        assert r.headers["content-type"] == "application/json"
        op = _operations(std)[f"{method} {_template(path)}"]
        schema = op["responses"][str(expected)]["content"]["application/json"]["schema"]
        assert _check(std, schema, r.json(), f"{method} {path} {expected}") == []
    for r in (got, posted):
        assert r.status_code == 200
        assert _check(std, {"$ref": "#/components/schemas/KeyContainer"}, r.json(), "enc") == []
