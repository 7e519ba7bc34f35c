"""Cost shape of the key store: set-based ``fetch`` and planner statistics after imports."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from qkdtwin.errors import KeyAccessError, KmsRequestError
from qkdtwin.kms import RETRY_WINDOW_S, KeyStore

from .conftest import FakeClock


def _keys(n: int, nbytes: int = 32) -> list[tuple[str, bytes]]:
    return [(str(uuid.uuid4()), os.urandom(nbytes)) for _ in range(n)]


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[KeyStore]:
    s = KeyStore(db_url, now=clock, max_key_count=1000)
    yield s
    s.close()


class _Statements:
    """Every SQL statement the store's engine sends, while recording."""

    def __init__(self, store: KeyStore) -> None:
        self.sql: list[str] = []
        self.recording = False
        event.listen(store.engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if self.recording:
            self.sql.append(statement)

    def count(self, call: Any) -> int:
        self.sql.clear()
        self.recording = True
        try:
            call()
        finally:
            self.recording = False
        return len(self.sql)


def test_fetch_sends_a_fixed_number_of_statements(store: KeyStore) -> None:
    store.add_keys(_keys(301))
    one = store.reserve("a", ["b"], 1, 256)
    hundred = store.reserve("a", ["b"], 100, 256)
    two_hundred = store.reserve("a", ["b"], 200, 256)
    stmts = _Statements(store)
    n1 = stmts.count(lambda: store.fetch("b", [k.key_id for k in one], master_sae_id="a"))
    n100 = stmts.count(lambda: store.fetch("b", [k.key_id for k in hundred], master_sae_id="a"))
    n200 = stmts.count(lambda: store.fetch("b", [k.key_id for k in two_hundred]))
    assert n1 == n100 == n200
    # SELECT, UPDATE, INSERT (+ SQLite's BEGIN IMMEDIATE)
    assert n1 <= 4
    # An idempotent retry only reads.
    retry = stmts.count(lambda: store.fetch("b", [k.key_id for k in hundred]))
    assert retry == n1 - 2

    # A refusal reads and stops: nothing written.
    def refuse() -> None:
        with pytest.raises(KeyAccessError):
            store.fetch("c", [k.key_id for k in hundred])

    assert stmts.count(refuse) == n1 - 2


def test_fetch_returns_the_order_asked_and_audits_each_key_once(
    store: KeyStore, clock: FakeClock
) -> None:
    store.add_keys(_keys(60))
    keys = store.reserve("a", ["b", "c"], 60, 256)
    by_id = {k.key_id: k for k in keys}
    ids = [k.key_id for k in keys]
    random.Random(1).shuffle(ids)
    assert store.fetch("b", ids[:20]) == [by_id[k] for k in ids[:20]]
    clock.t += 1.0
    # A retry of 20 keys inside the window plus 30 new ones: only the new ones are audited.
    got = store.fetch("b", ids[10:60])
    assert got == [by_id[k] for k in ids[10:60]]
    dec = [e for e in store.audit_log() if e["action"] == "dec"]
    assert sorted(e["key_id"] for e in dec) == sorted(ids)
    assert [e["key_id"] for e in dec[20:]] == ids[20:60]  # audited in the order asked
    # Another slave of the same keys is served on its own.
    assert store.fetch("c", ids[:5]) == [by_id[k] for k in ids[:5]]
    # After the window, any key already delivered refuses the whole request.
    clock.t += RETRY_WINDOW_S
    with pytest.raises(KmsRequestError, match="already delivered") as err:
        store.fetch("b", ids[:20])
    assert err.value.details == [{"key_ID": ids[0], "reason": "already delivered"}]


def test_fetch_reports_the_first_failing_key_in_request_order(store: KeyStore) -> None:
    store.add_keys(_keys(4))
    k1, k2 = store.reserve("a", ["b"], 2, 256)
    other = store.reserve("x", ["z"], 1, 256)[0]
    unknown = str(uuid.uuid4())
    with pytest.raises(KeyAccessError) as denied:
        store.fetch("b", [k1.key_id, other.key_id, unknown])
    assert denied.value.details == [{"key_ID": other.key_id, "reason": "not a slave of this key"}]
    with pytest.raises(KmsRequestError, match="unknown") as missing:
        store.fetch("b", [k1.key_id, unknown, other.key_id])
    assert missing.value.details == [{"key_ID": unknown, "reason": "unknown"}]
    with pytest.raises(KeyAccessError):  # wrong master, even with every other check passing
        store.fetch("b", [k1.key_id, k2.key_id], master_sae_id="x")
    # The master itself is not a slave of its keys.
    with pytest.raises(KeyAccessError):
        store.fetch("a", [k1.key_id])
    assert [e["action"] for e in store.audit_log()] == ["enc", "enc", "enc"]
    assert store.fetch("b", [k2.key_id, k1.key_id], master_sae_id="a") == [k2, k1]


def _reservation_plan(store: KeyStore) -> str:
    """EXPLAIN of the exact SELECT that ``reserve`` sends (captured), with its parameters."""
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cur: Any, statement: str, parameters: Any, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "ORDER BY" in statement.upper():
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        assert len(store.reserve("m", ["s"], 100, 256, owner="kme-a")) == 100
    finally:
        event.remove(store.engine, "before_cursor_execute", grab)
    assert len(seen) == 1, seen
    statement, parameters = seen[0]
    explain = "EXPLAIN QUERY PLAN " if store.is_sqlite else "EXPLAIN "
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(explain + statement, parameters).all()
    return "\n".join(str(r[-1]) for r in rows)


def test_postgresql_reservation_after_a_bulk_import_uses_an_index(pg_url: str) -> None:
    store = KeyStore(pg_url, max_key_count=100_000)
    try:
        n = 30_000
        assert store.add_keys(_keys(n), owner="kme-a") == n
        with store.engine.connect() as conn:
            tuples = conn.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE oid = 'kms_keys'::regclass"
            ).scalar_one()
        assert tuples > 0.9 * n  # ANALYZE ran: the planner knows the table's size
        plan = _reservation_plan(store)
        # Before: "Sort (Sort Key: seq) <- Bitmap Heap Scan" of every available key, on disk.
        assert "Sort" not in plan, plan
        assert "Index Scan using ix_kms_keys_" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "Bitmap" not in plan, plan
    finally:
        store.close()


def test_postgresql_small_additions_do_not_analyze_each_time(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(pg_url, max_key_count=100_000)
    calls: list[str] = []

    def grab(_conn: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.startswith("ANALYZE"):
            calls.append(statement)

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        store.add_keys(_keys(2_000, 16))  # >= 1,000 into an unanalysed table: refresh
        assert len(calls) == 1
        for _ in range(10):  # 10 x 10 keys: below ANALYZE_MIN_ROWS
            store.add_keys(_keys(10, 16))
        assert len(calls) == 1
        store.add_keys(_keys(1_000, 16))  # 1,100 new rows > 10 % of 2,000
        assert len(calls) == 2
    finally:
        store.close()


def test_sqlite_reservation_after_a_bulk_import_uses_the_state_seq_index(
    sqlite_url: str,
) -> None:
    store = KeyStore(sqlite_url, max_key_count=100_000)
    try:
        store.add_keys(_keys(20_000), owner="kme-a")
        plan = _reservation_plan(store)
        assert "ix_kms_keys_state_seq" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort
    finally:
        store.close()
