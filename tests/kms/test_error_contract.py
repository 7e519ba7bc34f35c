"""One error contract for every failure (issue 15, item 3).

A failing key store (lost PostgreSQL connection, full disk, read-only SQLite file) gives 503
with an ETSI Error body and ``Retry-After``; any other unexpected exception gives 500 with an
ETSI Error body; no body names anything internal (URLs, exception text, paths, SQL). A store
error mid-request rolls back: no key is delivered twice and none is lost. The background WAL
checkpoint thread survives errors and reports them on ``GET /kme/v1/links``.

The PostgreSQL tests use the real server (``conftest.PG_URL``) and fail when it is down.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request

from qkdtwin.errors import KeyAccessError
from qkdtwin.kms import KeyStore, KmeConfig, create_app
from qkdtwin.kms import store as store_module
from qkdtwin.kms.api import STORE_RETRY_AFTER_S, caller_sae_id
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.operator import caller_operator_id

from .conftest import PG_URL

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

CONFIG = KmeConfig(kme_id="kme-1", saes={"sae-a": "kme-1", "sae-b": "kme-1"})
POOL = 10
RESERVE_SQL = "UPDATE kms_keys SET state = 'reserved'"
DELIVER_SQL = "UPDATE kms_grants SET delivered_at"

#: Text that must never reach a response body.
INTERNALS = (
    "Traceback",
    "Errno",
    "sqlite",
    "psycopg",
    "UPDATE ",
    "SELECT ",
    "kms_keys",
    "disk is full",
    "readonly",
    "terminating",
    "127.0.0.1",
    "https://",
    "/tmp",
)


def _sae_from_header(request: Request) -> str:
    sae = request.headers.get("x-test-sae-id")
    if not sae:
        raise KeyAccessError("no verified client certificate")
    return sae


def _call(app: FastAPI, method: str, path: str, sae: str = "sae-a", **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kme") as c:
            return await c.request(method, path, headers={"x-test-sae-id": sae}, **kw)

    return anyio.run(go)


def _app(store: KeyStore) -> FastAPI:
    app = create_app(CONFIG, store)
    app.dependency_overrides[caller_sae_id] = _sae_from_header
    app.dependency_overrides[caller_operator_id] = lambda: "twin"
    return app


def _enc(app: FastAPI, number: int = 2) -> httpx.Response:
    return _call(app, "POST", "/api/v1/keys/sae-b/enc_keys", json={"number": number})


def _dec(app: FastAPI, key_ids: list[str]) -> httpx.Response:
    body = {"key_IDs": [{"key_ID": k} for k in key_ids]}
    return _call(app, "POST", "/api/v1/keys/sae-a/dec_keys", sae="sae-b", json=body)


def _assert_etsi_error(r: httpx.Response, status: int, *, retry_after: bool) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"message", "details"}
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["details"], list)
    for word in INTERNALS:
        assert word not in r.text, (word, r.text)
    if retry_after:
        assert r.headers["retry-after"] == str(STORE_RETRY_AFTER_S)
    else:
        assert "retry-after" not in r.headers
    return dict(body)


def _fail_on(
    engine: sa.Engine, prefix: str, exc: Callable[[], BaseException]
) -> Callable[[], None]:
    """Make every statement starting with ``prefix`` raise ``exc()``; return the undo."""

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith(prefix):
            raise exc()

    sa.event.listen(engine, "before_cursor_execute", before)
    return lambda: sa.event.remove(engine, "before_cursor_execute", before)


def _enc_count(store: KeyStore) -> int:
    return sum(1 for r in store.audit_log() if r["action"] == "enc")


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[KeyStore]:
    s = KeyStore(sqlite_url)
    s.add_keys((str(uuid.uuid4()), os.urandom(32)) for _ in range(POOL))
    yield s
    s.close()


# -- SQLite: full disk, read-only file, any OSError --------------------------------------------


def test_disk_full_mid_reservation_is_503_and_rolls_back(
    sqlite_store: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(sqlite_store)
    undo = _fail_on(
        sqlite_store.engine,
        RESERVE_SQL,
        lambda: sqlite3.OperationalError("database or disk is full"),
    )
    with caplog.at_level(logging.WARNING, logger="qkdtwin.kms"):
        r = _enc(app)
    _assert_etsi_error(r, 503, retry_after=True)
    assert "database or disk is full" in caplog.text  # the detail is in the server log
    # Rolled back: nothing reserved, nothing audited, nothing lost.
    assert sqlite_store.available_count() == POOL
    assert _enc_count(sqlite_store) == 0
    undo()
    r = _enc(app)
    assert r.status_code == 200, r.text
    assert len(r.json()["keys"]) == 2
    assert sqlite_store.available_count() == POOL - 2
    assert _enc_count(sqlite_store) == 2


def test_read_only_database_is_503(sqlite_store: KeyStore) -> None:
    """SQLite refuses every write (``query_only``: the file became read-only for the KME)."""
    app = _app(sqlite_store)

    def read_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")

    sqlite_store.engine.dispose()  # new connections only
    sa.event.listen(sqlite_store.engine, "connect", read_only)
    try:
        _assert_etsi_error(_enc(app), 503, retry_after=True)
    finally:
        sa.event.remove(sqlite_store.engine, "connect", read_only)
        sqlite_store.engine.dispose()
    assert sqlite_store.available_count() == POOL
    assert _enc(app).status_code == 200


def test_os_error_is_503_without_the_path(
    sqlite_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(sqlite_store)

    def full(*_a: Any, **_kw: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/secret/kme.db")

    monkeypatch.setattr(sqlite_store, "available_count", full)
    _assert_etsi_error(_call(app, "GET", "/api/v1/keys/sae-b/status"), 503, retry_after=True)


def test_non_transient_store_error_is_503_without_retry_after(
    sqlite_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(sqlite_store)

    def broken(*_a: Any, **_kw: Any) -> int:
        raise sa.exc.ProgrammingError("SELECT nonsense", {}, Exception("no such column"))

    monkeypatch.setattr(sqlite_store, "available_count", broken)
    _assert_etsi_error(_call(app, "GET", "/api/v1/keys/sae-b/status"), 503, retry_after=False)


def test_failed_delivery_to_slave_is_retried_once(sqlite_store: KeyStore) -> None:
    """dec_keys hit by a store error delivers nothing; the retry delivers each key once."""
    app = _app(sqlite_store)
    r = _enc(app, 3)
    assert r.status_code == 200
    ids = [k["key_ID"] for k in r.json()["keys"]]
    undo = _fail_on(
        sqlite_store.engine, DELIVER_SQL, lambda: sqlite3.OperationalError("disk I/O error")
    )
    _assert_etsi_error(_dec(app, ids), 503, retry_after=True)
    assert not any(row["action"] == "dec" for row in sqlite_store.audit_log())
    undo()
    r = _dec(app, ids)
    assert r.status_code == 200, r.text
    assert [k["key_ID"] for k in r.json()["keys"]] == ids
    dec = [row["key_id"] for row in sqlite_store.audit_log() if row["action"] == "dec"]
    assert sorted(dec) == sorted(ids)  # once each


def test_unexpected_exception_is_500_etsi_body(
    sqlite_store: KeyStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(sqlite_store)

    def bug(*_a: Any, **_kw: Any) -> None:
        raise RuntimeError("secret detail at /tmp/secret")

    monkeypatch.setattr(sqlite_store, "reserve", bug)
    with caplog.at_level(logging.ERROR, logger="qkdtwin.kms"):
        r = _enc(app)
    body = _assert_etsi_error(r, 500, retry_after=False)
    assert body == {"message": "internal error", "details": []}
    assert "secret detail" in caplog.text  # with its traceback, in the log only
    assert "Traceback" in caplog.text


# -- PostgreSQL: killed connections ------------------------------------------------------------


def _terminate(admin: sa.Engine, pids: list[int]) -> None:
    """Terminate backends and wait until PostgreSQL has removed them."""
    # Autocommit: pg_stat_activity is read once per transaction (a snapshot).
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for pid in pids:
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            alive = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:p)"),
                {"p": pids},
            ).scalar_one()
            if not alive:
                return
            time.sleep(0.02)
    raise AssertionError(f"backends {pids} still alive")


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[tuple[KeyStore, sa.Engine, str]]:
    name = f"kms_err_{uuid.uuid4().hex[:10]}"
    store = KeyStore(f"{pg_url}&application_name={name}")
    store.add_keys((str(uuid.uuid4()), os.urandom(32)) for _ in range(POOL))
    admin = sa.create_engine(PG_URL)
    yield store, admin, name
    store.close()
    admin.dispose()


def test_postgresql_connection_killed_mid_request(
    pg_store: tuple[KeyStore, sa.Engine, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The store's backend is terminated inside a reservation: 503, rolled back; the next
    request reconnects and gets keys, none of them twice."""
    store, admin, _name = pg_store
    app = _app(store)
    killed: list[int] = []

    def kill(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith(RESERVE_SQL) and not killed:
            killed.append(cursor.connection.info.backend_pid)
            _terminate(admin, killed)

    sa.event.listen(store.engine, "before_cursor_execute", kill)
    try:
        with caplog.at_level(logging.WARNING, logger="qkdtwin.kms"):
            r = _enc(app)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", kill)
    assert killed
    _assert_etsi_error(r, 503, retry_after=True)
    assert "OperationalError" in caplog.text
    assert store.available_count() == POOL  # rolled back: no key reserved, none lost
    assert _enc_count(store) == 0
    r = _enc(app, 3)
    assert r.status_code == 200, r.text
    got = {k["key_ID"] for k in r.json()["keys"]}
    assert len(got) == 3
    assert store.available_count() == POOL - 3
    assert {row["key_id"] for row in store.audit_log() if row["action"] == "enc"} == got


def test_postgresql_idle_connections_killed_between_requests(
    pg_store: tuple[KeyStore, sa.Engine, str],
) -> None:
    """Idle pooled connections killed (a PostgreSQL restart): the pool's pre-ping reconnects."""
    store, admin, name = pg_store
    app = _app(store)
    assert _enc(app, 1).status_code == 200
    with admin.connect() as conn:
        pids = list(
            conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                {"n": name},
            ).scalars()
        )
    assert pids
    _terminate(admin, pids)
    r = _enc(app, 1)
    assert r.status_code == 200, r.text
    assert store.available_count() == POOL - 2


# -- the WAL checkpoint thread ------------------------------------------------------------------


def test_checkpoint_thread_survives_errors_and_reports_them(
    sqlite_store: KeyStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(sqlite_store)
    real = sqlite_store.engine.raw_connection
    errors: list[BaseException] = [
        OSError(errno.ENOSPC, "No space left on device", "/tmp/secret/kme.db-wal"),
        sqlite3.OperationalError("database or disk is full"),
    ]
    calls: list[int] = []

    def flaky() -> Any:
        if sys._getframe(1).f_code.co_name == "checkpoint":  # requests use it too
            calls.append(1)
            if errors:
                raise errors.pop(0)
        return real()

    monkeypatch.setattr(sqlite_store.engine, "raw_connection", flaky)
    with caplog.at_level(logging.WARNING, logger="qkdtwin.kms"):
        sqlite_store.add_keys([(str(uuid.uuid4()), os.urandom(32))])  # dirty: to checkpoint
        deadline = time.monotonic() + 8.0
        while sqlite_store.checkpoint_health().failures < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = sqlite_store.checkpoint_health()
        assert health.failures == 2
        assert health.failing
        assert health.last_error == "OperationalError: database or disk is full"
        assert store_module._CHECKPOINTER.alive
        links = _call(app, "GET", "/kme/v1/links").json()
        assert links["store"] == {
            "checkpoint_failures": 2,
            "last_checkpoint_error": "OperationalError: database or disk is full",
            "last_checkpoint_error_at": health.last_error_at,
            "checkpoint_failing": True,
        }
        # The thread keeps trying (with backoff) and succeeds once the disk has room.
        while sqlite_store.checkpoint_health().failing and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not sqlite_store.checkpoint_health().failing
    assert sqlite_store.checkpoint_health().failures == 2
    assert len(calls) >= 3
    assert store_module._CHECKPOINTER.alive
    assert "[ENOSPC] No space left on device" in caplog.text
    store_after = _call(app, "GET", "/kme/v1/links").json()["store"]
    assert store_after["checkpoint_failing"] is False
    assert store_after["checkpoint_failures"] == 2
    for r in (caplog.text, str(store_after)):
        assert "secret" not in r  # an OSError's file name is left out


def test_checkpoint_error_description_has_no_path_or_sql() -> None:
    e = OSError(errno.EROFS, "Read-only file system", "/var/lib/kms/kme.db")
    assert store_module.describe_error(e) == "OSError: [EROFS] Read-only file system"
    wrapped = sa.exc.OperationalError(
        "UPDATE kms_keys SET material = ?", ("k" * 32,), sqlite3.OperationalError("disk I/O error")
    )
    assert store_module.describe_error(wrapped) == "OperationalError: disk I/O error"
    assert store_module.is_transient_store_error(wrapped)
    assert not store_module.is_transient_store_error(
        sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    )


# -- a peer KME that is down -----------------------------------------------------------------


def _raw_enc(net: DevNetwork, sae: str, slave: str) -> httpx.Response:
    cert, key = net.pki.saes[sae]
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    kme = {"sae-a": "kme-a", "sae-b": "kme-b", "sae-c": "kme-c"}[sae]
    with httpx.Client(base_url=net.url(kme), verify=ctx, timeout=10.0) as http:
        return http.post(f"/api/v1/keys/{slave}/enc_keys", json={"number": 1})


def test_peer_kme_down_gives_503_without_its_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saes = {"sae-a": "kme-a", "sae-b": "kme-b", "sae-c": "kme-c"}
    links = [("kme-a", "kme-b"), ("kme-b", "kme-c")]
    net = DevNetwork(
        tmp_path, ["kme-a", "kme-b", "kme-c"], links, saes, initial_keys=8, run_feeders=False
    )
    with net, caplog.at_level(logging.WARNING, logger="qkdtwin.kms"):
        url_c, url_b = net.url("kme-c"), net.url("kme-b")
        net.servers["kme-c"].stop()
        # Relayed a -> b -> c: kme-b cannot reach kme-c.
        r = _raw_enc(net, "sae-a", "sae-c")
        body = _assert_etsi_error(r, 503, retry_after=False)
        assert "kme-a-kme-b-kme-c" in body["message"]  # KME IDs are public (ETSI 014)
        assert url_c.split("//")[1] not in r.text
        assert url_c in caplog.text  # the detail is in the server log
        assert net.stores["kme-a"]["relayed"].audit_log() == []
        # Mirrored a -> b: kme-b itself is down.
        net.servers["kme-b"].stop()
        r = _raw_enc(net, "sae-a", "sae-b")
        body = _assert_etsi_error(r, 503, retry_after=False)
        assert body["details"] == [{"target_KME_ID": "kme-b"}]
        assert "kme-b" in body["message"]
        assert url_b.split("//")[1] not in r.text
        assert url_b in caplog.text
        for word in ("ConnectError", "refused", "Connection"):
            assert word not in r.text
