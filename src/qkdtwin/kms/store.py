"""Durable key store of a KME: SQLAlchemy Core over SQLite (WAL, default) or PostgreSQL.

Lifecycle of a key (column ``state``)::

    available --reserve--> reserved --(every slave fetched it)--> erased
        |                                                            ^
        +--(expires_at passed)--> expired ---------------------------+ (material dropped)

* **Reservation is atomic.** :meth:`KeyStore.reserve` picks, marks and grants keys in one
  transaction: on SQLite that transaction starts with ``BEGIN IMMEDIATE`` (one writer at a
  time), on PostgreSQL the candidate rows are selected ``FOR UPDATE SKIP LOCKED``. Two
  concurrent requests therefore never receive the same key.
* **One delivery per key and SAE.** The master receives a key once, when it is reserved; each
  slave receives it once through :meth:`KeyStore.fetch`. A repeated fetch by the same slave is
  answered again only within :data:`RETRY_WINDOW_S` seconds of the first delivery (an
  idempotent retry for a lost response); later it is refused. This is *our* policy: ETSI GS QKD
  014 does not say whether a key may be fetched twice.
* **Audit log.** Every delivery appends a row ``(at, sae_id, key_id, action)`` to
  ``kms_audit``; the store never updates or deletes audit rows and never writes key material
  there.
* **Wrapping at rest.** With a key-encryption key (16, 24 or 32 bytes), material is stored as
  ``nonce || AES-GCM(kek, nonce, key, aad=key_id)``.
* **Counters.** ``kms_counters`` holds the key counts that :meth:`KeyStore.counters` reports
  (the operator interface, :mod:`qkdtwin.kms.operator`): cumulative totals and the pool
  gauges, updated in the same transaction as each state change, so reading them costs a
  handful of rows however large the store (see :class:`KeyCounts` for their meaning and
  their relation to the audit log).
* **Store errors.** A failed statement (lost connection, lock timeout, full disk, read-only
  file) raises SQLAlchemy's error out of the method and rolls its transaction back, so no key
  is reserved, delivered or lost by it; the API answers 503 (see
  :func:`is_transient_store_error`). SQL parameters are hidden from the errors' text (they
  carry key material).
* **WAL checkpoints** (SQLite) run on a background thread that survives any error: failures
  are counted, logged (logger ``qkdtwin.kms``), retried with backoff and reported by
  :meth:`KeyStore.checkpoint_health`.

Time is read from an injectable clock (``now``, seconds since the epoch, float), so TTL and
the retry window are testable without sleeping.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Engine,
    delete,
    func,
    insert,
    inspect,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import Connection

from qkdtwin.errors import ConfigError, KeyAccessError, KeyExhaustedError, KmsRequestError
from qkdtwin.kms.kek import EpochKeys
from qkdtwin.kms.store_engine import (
    _is_sqlite_file,
    _is_table,
    _normalise_url,
    _private_sqlite_file,
    make_engine,
    make_read_engine,
)
from qkdtwin.kms.store_errors import STORE_ERRORS, describe_error, is_transient_store_error
from qkdtwin.kms.store_schema import (
    _ADDED,
    _COUNTER_SHARDS,
    _DELIVERED,
    _DISCARDED,
    _ERASED,
    _RESERVED,
    _audit,
    _available_name,
    _counters,
    _grants,
    _handover,
    _keys,
    _meta,
    _metadata,
)
from qkdtwin.kms.store_threads import _CHECKPOINTER, _SWEEPER
from qkdtwin.kms.store_threads import _Checkpointer as _Checkpointer
from qkdtwin.kms.store_threads import _Sweeper as _Sweeper
from qkdtwin.kms.store_types import (
    AuditEntry,
    CheckpointHealth,
    DeliveredKey,
    KeyCounts,
    StoredKey,
    UnreserveResult,
)
from qkdtwin.kms.store_wrap import _EPOCH_MARK as _EPOCH_MARK
from qkdtwin.kms.store_wrap import blob_epoch, unwrap_material, wrap_material

__all__ = [
    "HANDED_OVER_AUDIT_BY",
    "RETRY_WINDOW_S",
    "STORE_ERRORS",
    "CheckpointHealth",
    "DeliveredKey",
    "KeyCounts",
    "KeyStore",
    "StoredKey",
    "UnreserveResult",
    "describe_error",
    "is_transient_store_error",
]

log = logging.getLogger("qkdtwin.kms")

#: Seconds during which a slave may fetch the same key again (idempotent retry; our policy).
RETRY_WINDOW_S = 5.0

#: On PostgreSQL :meth:`KeyStore.add_keys` refreshes the planner's statistics (``ANALYZE
#: kms_keys``) once at least this many keys were added since the last refresh ...
ANALYZE_MIN_ROWS = 1_000
#: ... and they are more than this fraction of the rows the planner knew then.
ANALYZE_GROWTH = 0.10

Clock = Callable[[], float]

#: Audit actions that count as a delivery (a key leaving the pool for use) or a discard.
DELIVERY_ACTIONS = ("enc", "sync", "relay")
DISCARD_ACTIONS = ("discard", "expire")
#: ``sae_id`` of the audit rows of :meth:`KeyStore.expire`.
EXPIRY_AUDIT_BY = "store:ttl"
#: ``sae_id`` of the ``erase`` rows of :meth:`KeyStore.erase_delivered` for master-side copies
#: whose :meth:`KeyStore.erase_handed_over` never ran (the response was not sent). The copies
#: erased after a sent response are audited under :data:`HANDED_OVER_AUDIT_BY` instead.
RETRY_WINDOW_AUDIT_BY = "store:retry-window"
#: ``sae_id`` of the ``erase`` rows of the master-side copies erased once their ``enc_keys``
#: response was sent (:meth:`KeyStore.erase_handed_over` as the KME calls it).
HANDED_OVER_AUDIT_BY = "store:handed-over"


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    """Yield ``items`` in lists of at most ``size`` (bound parameters per statement)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class KeyStore:
    """Key store of one KME.

    Parameters
    ----------
    url
        SQLAlchemy URL: ``sqlite:///path.db`` (WAL mode) or ``postgresql://user@host/db``.
    kek
        Optional key-encryption key (16, 24 or 32 bytes) that wraps key material at rest.
    max_key_count
        Upper bound on the number of available keys; :meth:`add_keys` stores no more.
    ttl_s
        Lifetime of a stored key in seconds; ``None`` for no expiry.
    reserved_ttl_s
        Age in seconds after which a reservation that a slave never fetched is erased by
        :meth:`sweep` (:meth:`expire_reservations`); ``None``: never.
    scrub_interval_s
        SQLite: at most this often (s), when keys were erased since the last time, the sweep
        rewrites the file (:meth:`scrub`) so no stale copy of an erased key survives in a
        page's free space; ``None``: never (then only at :meth:`close`).
    epoch_dir, epoch_s
        With ``kek``: wrap material with per-epoch keys kept in files under
        ``epoch_dir/<store ID>/`` (one per ``epoch_s`` seconds), re-wrap the survivors and
        destroy old epochs' files (:meth:`rotate_epochs`, :class:`~qkdtwin.kms.kek.EpochKeys`),
        so old row versions awaiting VACUUM on PostgreSQL become unreadable.
    now
        Clock in seconds since the epoch (injectable for tests).
    keep_connections
        Keep database connections open between transactions (the default: a KME serving
        requests). ``False`` opens one per transaction and closes it after, so a store at rest
        holds no file descriptor: for a process with thousands of stores (the twin holds four
        per gateway link), which would otherwise run out of descriptors (~5 per SQLite store:
        two connections' database and WAL files and the shared-memory file).

    Raises
    ------
    ConfigError
        If ``kek`` has a wrong length, ``max_key_count`` < 1 or ``ttl_s`` <= 0.
    """

    def __init__(
        self,
        url: str,
        *,
        kek: bytes | None = None,
        max_key_count: int = 100_000,
        ttl_s: float | None = None,
        reserved_ttl_s: float | None = 3600.0,
        scrub_interval_s: float | None = 60.0,
        epoch_dir: str | os.PathLike[str] | None = None,
        epoch_s: float = 600.0,
        now: Clock = time.time,
        keep_connections: bool = True,
    ) -> None:
        if kek is not None and len(kek) not in (16, 24, 32):
            raise ConfigError(
                "kek must be 16, 24 or 32 bytes", field="kek", value=len(kek), allowed="16|24|32"
            )
        if max_key_count < 1:
            raise ConfigError(
                f"max_key_count must be >= 1, got {max_key_count}",
                field="max_key_count",
                value=max_key_count,
                allowed=">= 1",
            )
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(
                f"ttl_s must be > 0, got {ttl_s}", field="ttl_s", value=ttl_s, allowed="> 0"
            )
        self._aead = AESGCM(kek) if kek is not None else None
        self.max_key_count = max_key_count
        self.ttl_s = ttl_s
        if reserved_ttl_s is not None and reserved_ttl_s <= RETRY_WINDOW_S:
            raise ConfigError(
                f"reserved_ttl_s must exceed the retry window ({RETRY_WINDOW_S} s)",
                field="reserved_ttl_s",
                value=reserved_ttl_s,
            )
        self.reserved_ttl_s = reserved_ttl_s
        self.scrub_interval_s = scrub_interval_s
        self._last_scrub = time.monotonic()
        self._scrubbed_erased: int | None = None
        self._now = now
        self.url = _normalise_url(url)
        _private_sqlite_file(self.url)
        self.engine: Engine = self._make_engine(self.url, pooled=keep_connections)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read_engine: Engine | None = (
            self._make_read_engine(self.url, pooled=keep_connections)
            if _is_sqlite_file(self.url)
            else None
        )
        self._write_lock = threading.Lock()
        self._erase_mark: float | None = None  # erase_delivered's previous cutoff
        self._stats_lock = threading.Lock()  # _refresh_statistics
        self._added_since_analyze = 0
        self._analyzed_rows: float | None = None  # rows of kms_keys at the last ANALYZE
        had_handover = _is_table(self.engine, "kms_handover")
        _metadata.create_all(self.engine)
        self._migrate(backfill_handover=not had_handover)
        self._check_wrapping(kek)
        self._epochs: EpochKeys | None = None
        self._rotated_for: int | None = None  # the epoch rotate_epochs last ran in
        if epoch_dir is not None:
            if kek is None:
                raise ConfigError("epoch keys need a kek (wrapping on)", field="epoch_dir")
            self._epochs = EpochKeys(Path(epoch_dir) / self.store_id(), epoch_s, now)
        self._dirty = False  # written since the last background checkpoint
        self._closed = False
        self._checkpoint_lock = threading.Lock()  # a checkpoint never races close()
        self._checkpoint_health = CheckpointHealth()  # replaced whole, read without a lock
        self._checkpoint_backoff_s = 0.0  # the checkpointer's wait after a failure
        self._checkpoint_retry_at = 0.0  # time.monotonic() before which it does not retry
        if self.is_sqlite:
            self._scrubbed_erased = self.counters().erased_total
            _CHECKPOINTER.add(self)

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database file (PASSIVE: never blocks a writer); SQLite only.

        When that copied every frame, the WAL is also truncated to zero bytes (TRUNCATE,
        given up at once if a reader holds it), so erased keys' old page images do not stay
        in it.

        Returns SQLite's ``(busy, WAL frames, frames checkpointed)``; ``(0, 0, 0)`` once closed.

        SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages, so
        one request in a few dozen paid for it (the p99 of the load benchmark). Stores turn
        it off and a single background thread per process calls this for every store that
        was written since its last checkpoint.

        A failure (full disk, I/O error, ...) is re-raised after it was recorded in
        :meth:`checkpoint_health`; the store stays marked as written, so the next round
        retries.
        """
        with self._checkpoint_lock:
            if self._closed:
                return (0, 0, 0)
            self._dirty = False
            try:
                # On the DB-API connection (autocommit): through SQLAlchemy the statement would
                # run inside the BEGIN IMMEDIATE of every transaction here, where SQLite
                # refuses it.
                raw = self.engine.raw_connection()
                try:
                    cur = raw.cursor()
                    row = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if row[0] == 0 and row[1] == row[2] and row[1] > 0:
                        # Everything is in the database file: empty the WAL too, so no page
                        # image of an erased key stays in it. TRUNCATE waits for readers;
                        # with a short busy timeout it gives up at once under load (the
                        # next writer then reuses the WAL from its start) and is retried
                        # on the next quiet round.
                        cur.execute("PRAGMA busy_timeout=50")
                        try:
                            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                        finally:
                            cur.execute("PRAGMA busy_timeout=30000")
                finally:
                    raw.close()
            except Exception as exc:
                self._dirty = True
                h = self._checkpoint_health
                self._checkpoint_health = CheckpointHealth(
                    h.failures + 1, describe_error(exc), self._now(), failing=True
                )
                raise
            if self._checkpoint_health.failing:
                h = self._checkpoint_health
                self._checkpoint_health = CheckpointHealth(
                    h.failures, h.last_error, h.last_error_at
                )
            return (int(row[0]), int(row[1]), int(row[2]))

    def sweep(self) -> int:
        """Erase what this KME will not deliver again; return how many keys were erased.

        :meth:`erase_delivered`, then, with ``reserved_ttl_s``, :meth:`expire_reservations`
        and, with ``ttl_s``, :meth:`expire`.
        """
        if self._closed:  # closed while the sweeper held it in its round
            return 0
        n = self.erase_delivered()
        self.rotate_epochs()
        if self.reserved_ttl_s is not None:
            n += self.expire_reservations(self.reserved_ttl_s)
        if self.ttl_s is not None:
            n += self.expire()
        self.maybe_scrub()
        return n

    def maybe_scrub(self) -> bool:
        """:meth:`scrub` if ``scrub_interval_s`` passed since the last and keys were erased."""
        if not self.is_sqlite or self.scrub_interval_s is None or self._closed:
            return False
        now = time.monotonic()
        if now - self._last_scrub < self.scrub_interval_s:
            return False
        self._last_scrub = now
        erased = self.counters().erased_total
        if erased == self._scrubbed_erased:
            return False
        self.scrub()
        self._scrubbed_erased = erased
        return True

    def scrub(self) -> None:
        """Rewrite the SQLite file without its free space, then empty the WAL (SQLite only).

        ``secure_delete`` zeroes a row's old content when it is freed, but SQLite moves cells
        around when it rebalances or defragments a page and leaves the old copies of the
        moved cells in the page's unallocated gap, unzeroed: a key erased later may survive
        there (found by ``benchmarks/kms_overload.py``). ``VACUUM`` rebuilds every page from
        the live rows only, so no such copy survives; the WAL is truncated after it. The
        store's writers wait meanwhile (tens of ms for tens of thousands of keys).
        """
        if not self.is_sqlite:
            return
        with self._checkpoint_lock, self._write_lock:
            if self._closed:
                return
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("VACUUM")
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()

    def start_sweeping(self) -> None:
        """Have the process's sweeper thread call :meth:`sweep` every second (KME servers)."""
        _SWEEPER.add(self)

    def checkpoint_health(self) -> CheckpointHealth:
        """Return how this store's WAL checkpoints fare (all zero on PostgreSQL)."""
        return self._checkpoint_health

    def _migrate(self, *, backfill_handover: bool = False) -> None:
        """Add columns that stores made by older versions lack (never drops or rewrites data).

        ``backfill_handover``: the store had no ``kms_handover`` table yet, so its pending
        master-side copies (reserved keys with no slave grant here) are listed in it now.
        """
        columns = {c["name"] for c in inspect(self.engine).get_columns("kms_keys")}
        with self._write() as conn:
            if backfill_handover:
                conn.execute(
                    insert(_handover).from_select(
                        ["key_id", "reserved_at"],
                        select(_keys.c.key_id, func.coalesce(_keys.c.reserved_at, 0.0))
                        .where(_keys.c.state == "reserved")
                        .where(~self._slave_grant().exists()),
                    )
                )
            if "owner" not in columns:
                conn.exec_driver_sql("ALTER TABLE kms_keys ADD COLUMN owner VARCHAR(255)")
            conn.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS ix_kms_grants_delivered_at ON kms_grants (delivered_at)"
            )
            conn.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS ix_kms_keys_state_reserved_at "
                "ON kms_keys (state, reserved_at)"
            )
            # Keys with a TTL only (empty without one): expire() and counters() find the
            # available keys whose TTL has passed without scanning the pool.
            conn.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS ix_kms_keys_expiring ON kms_keys (state, expires_at)"
                " WHERE expires_at IS NOT NULL"
            )
            self._backfill_counters(conn)

    def _check_wrapping(self, kek: bytes | None) -> None:
        """Record (new store) or verify (existing store) whether and with which KEK it wraps.

        A store made before this record existed and holding keys counts as unwrapped.
        """
        from qkdtwin.kms.kek import kek_check

        want = "none" if kek is None else kek_check(kek)
        with self._write() as conn:
            have = conn.execute(
                select(_meta.c.value).where(_meta.c.name == "wrapping")
            ).scalar_one_or_none()
            if have is None:
                legacy = conn.execute(select(_keys.c.key_id).limit(1)).first() is not None
                have = "none" if legacy else want
                conn.execute(insert(_meta).values(name="wrapping", value=have))
            sid = conn.execute(
                select(_meta.c.value).where(_meta.c.name == "store_id")
            ).scalar_one_or_none()
            if sid is None:
                sid = str(uuid.uuid4())
                conn.execute(insert(_meta).values(name="store_id", value=sid))
        self._store_id = sid
        where = self.engine.url.render_as_string(hide_password=True)
        if have == want:
            return
        if have == "none":
            msg = (
                f"key store {where} was created without wrapping; open it without a kek_file "
                "(or import its keys into a new wrapped store)"
            )
        elif kek is None:
            msg = f"key store {where} is wrapped: give its key-encryption key (kek_file)"
        else:
            msg = f"key store {where} was wrapped with another key-encryption key"
        raise ConfigError(msg, field="kek_file")

    def _backfill_counters(self, conn: Connection) -> None:
        """Fill ``kms_counters`` from the key table and audit log of a store that lacks them.

        Runs once per store (a store made by this version starts with its counter rows).
        For a store written by an older version, ``discarded`` is derived from the balance
        ``added = available + delivered + discarded``, since older versions neither audited
        expiry nor checked which discarded keys existed.
        """
        if conn.execute(select(func.count()).select_from(_counters)).scalar_one():
            return
        if not self.is_sqlite:  # two processes opening one new store: one fills it
            conn.exec_driver_sql("LOCK TABLE kms_counters IN SHARE ROW EXCLUSIVE MODE")
            if conn.execute(select(func.count()).select_from(_counters)).scalar_one():
                return
        by_state: dict[str, int] = dict(
            conn.execute(select(_keys.c.state, func.count()).group_by(_keys.c.state)).all()
        )
        by_owner = conn.execute(
            select(_keys.c.owner, func.count())
            .where(_keys.c.state == "available")
            .group_by(_keys.c.owner)
        ).all()
        delivered = conn.execute(
            select(func.count()).select_from(_audit).where(_audit.c.action.in_(DELIVERY_ACTIONS))
        ).scalar_one()
        delivered -= conn.execute(
            select(func.count()).select_from(_audit).where(_audit.c.action == "undo")
        ).scalar_one()
        added = sum(by_state.values())
        available = by_state.get("available", 0)
        values = {
            _ADDED: added,
            _DELIVERED: delivered,
            _DISCARDED: max(0, added - available - delivered),
            _ERASED: by_state.get("erased", 0) + by_state.get("expired", 0),
            _RESERVED: by_state.get("reserved", 0),
            **{_available_name(o): n for o, n in by_owner},
        }
        conn.execute(
            insert(_counters),
            [{"name": k, "shard": 0, "value": int(v)} for k, v in sorted(values.items())],
        )

    def _bump(self, conn: Connection, deltas: dict[str, int]) -> None:
        """Add ``deltas`` to the counters, inside the caller's write transaction.

        Called last in each transaction, names in sorted order: on PostgreSQL a transaction
        then holds counter rows only while it commits, and two transactions on one shard take
        them in the same order (no deadlock).
        """
        shard = 0 if self.is_sqlite else random.randrange(_COUNTER_SHARDS)
        rows = [(name, shard, d) for name, d in sorted(deltas.items()) if d]
        if rows:
            q = "?" if self.is_sqlite else "%s"
            conn.exec_driver_sql(
                f"INSERT INTO kms_counters (name, shard, value) VALUES ({q}, {q}, {q}) "
                "ON CONFLICT (name, shard) "
                "DO UPDATE SET value = kms_counters.value + excluded.value",
                rows,
            )

    @staticmethod
    def _owner_deltas(owners: Iterable[str | None], sign: int = -1) -> dict[str, int]:
        """Per-owner ``available`` counter deltas for keys leaving (or entering) the pool."""
        out: dict[str, int] = {}
        for owner in owners:
            name = _available_name(owner)
            out[name] = out.get(name, 0) + sign
        return out

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """Open a connection for reading (a consistent snapshot until the block ends).

        On a SQLite file, reads go through a second, read-only engine whose transactions
        start with a plain (deferred) ``BEGIN``: in WAL mode such a reader never takes the
        write lock and never waits for a writer, nor a writer for it. (Through the main
        engine every transaction starts with ``BEGIN IMMEDIATE``, :meth:`_make_engine`, so a
        read there would hold the write lock: ``dec_keys`` waited up to 2 s for its store
        lookup under 16 concurrent SAEs.) An in-memory database has no second connection
        to share it, so its reads queue behind this process's writers instead.
        """
        if self._read_engine is not None:
            with self._read_engine.connect() as conn:
                yield conn
        elif self.is_sqlite:
            with self._write_lock, self.engine.connect() as conn:
                yield conn
        else:
            with self.engine.connect() as conn:
                yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """Open a write transaction; on SQLite, queue this process's writers on a lock first.

        SQLite allows one writer at a time anyway; queueing in-process avoids the busy
        handler's sleep-and-retry backoff, which made tail latencies of seconds under
        concurrent requests. Other processes still serialise through ``BEGIN IMMEDIATE``.
        """
        if self.is_sqlite:
            with self._write_lock, self.engine.begin() as conn:
                self._dirty = True
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @staticmethod
    def _make_engine(url: str, *, pooled: bool = True) -> Engine:
        """Engine for this store's writes (:func:`~qkdtwin.kms.store_engine.make_engine`)."""
        return make_engine(url, pooled=pooled)

    @staticmethod
    def _make_read_engine(url: str, *, pooled: bool = True) -> Engine:
        """Engine for :meth:`_read` on a SQLite file: read-only, deferred transactions."""
        return make_read_engine(url, pooled=pooled)

    # -- material wrapping -------------------------------------------------------------------

    def store_id(self) -> str:
        """Return this store's random ID (kept in the store; names its epoch-key directory)."""
        return self._store_id

    def _wrap(self, key_id: str, material: bytes) -> bytes:
        return wrap_material(self._aead, self._epochs, key_id, material)

    def _unwrap(self, key_id: str, blob: bytes) -> bytes:
        return unwrap_material(self._aead, self._epochs, key_id, blob)

    def rotate_epochs(self) -> int:
        """Re-wrap surviving keys out of old epochs, then destroy those epochs' key files.

        Runs once per epoch (a no-op otherwise, and without epoch keys): every key with
        material wrapped before the previous epoch (or with the KEK itself) is re-wrapped with
        the current epoch's key; the key files of every epoch before the previous one are then
        destroyed. So a delivered key's old row versions are unreadable at most two epochs
        after it was last written. Returns how many keys were re-wrapped.
        """
        ep = self._epochs
        if ep is None:
            return 0
        cur = ep.current_epoch()
        if self._rotated_for == cur:
            return 0
        keep_from = cur - 1
        q = "?" if self.is_sqlite else "%s"
        with self._write() as conn:
            rows = conn.execute(
                select(_keys.c.key_id, _keys.c.material).where(_keys.c.material.is_not(None))
            ).all()
            updates = []
            for key_id, blob in rows:
                e = blob_epoch(blob)
                if e is not None and e >= keep_from:
                    continue
                material = self._unwrap(key_id, blob)
                updates.append((self._wrap(key_id, material), key_id, blob))
            if updates:
                # only if the row still holds what was read (a concurrent reservation may have
                # re-wrapped it already)
                conn.exec_driver_sql(
                    f"UPDATE kms_keys SET material = {q} WHERE key_id = {q} AND material = {q}",
                    updates,
                )
        gone = ep.destroy_before(keep_from)
        if gone:
            log.info("destroyed the wrap keys of epochs %s", gone)
        self._rotated_for = cur
        return len(updates)

    # -- supply ------------------------------------------------------------------------------

    def add_keys(self, keys: Iterable[tuple[str, bytes]], *, owner: str | None = None) -> int:
        """Store new available keys, up to ``max_key_count`` available keys in total.

        Parameters
        ----------
        keys
            ``(key_id, material)`` pairs; ``key_id`` is a UUID string shared by both KMEs of
            a link, ``material`` a non-empty byte string.
        owner
            The KME that may hand these keys out through ``enc_keys`` (the other end of the
            link only serves them after a mirrored reservation); ``None``: either end.

        Returns
        -------
        int
            How many keys were stored (extras beyond ``max_key_count`` are dropped).

        Raises
        ------
        ConfigError
            If a key is empty or its ID is not a UUID.
        """
        now = self._now()
        expires = None if self.ttl_s is None else now + self.ttl_s
        with self._write() as conn:
            # The available gauges (state available, TTL passed or not): no scan of the pool.
            available = int(
                conn.execute(
                    select(func.coalesce(func.sum(_counters.c.value), 0)).where(
                        (_counters.c.name == _available_name(None))
                        | _counters.c.name.like(_available_name("") + "%")
                    )
                ).scalar_one()
            )
            seq = conn.execute(select(func.coalesce(func.max(_keys.c.seq), 0))).scalar_one()
            rows: list[dict[str, Any]] = []
            for key_id, material in keys:
                if available + len(rows) >= self.max_key_count:
                    break
                if not material:
                    raise ConfigError("key material must not be empty", field="material")
                try:
                    key_id = str(uuid.UUID(key_id))
                except ValueError as exc:
                    raise ConfigError(
                        f"key_id must be a UUID, got {key_id!r}", field="key_id", value=key_id
                    ) from exc
                seq += 1
                rows.append(
                    {
                        "key_id": key_id,
                        "seq": seq,
                        "size_bits": 8 * len(material),
                        "material": self._wrap(key_id, material),
                        "state": "available",
                        "created_at": now,
                        "expires_at": expires,
                        "master_sae_id": None,
                        "reserved_at": None,
                        "owner": owner,
                    }
                )
            if rows:
                conn.execute(insert(_keys), rows)
                self._bump(conn, {_ADDED: len(rows), _available_name(owner): len(rows)})
        self._refresh_statistics(len(rows))
        return len(rows)

    def _refresh_statistics(self, added: int) -> None:
        """``ANALYZE kms_keys`` once enough keys were added since the planner last looked.

        PostgreSQL only. Right after a bulk import PostgreSQL still believes the table small:
        a reservation then sorted every available key on disk (88 ms per request at 100,000
        keys) until someone ran ANALYZE. The statistics are refreshed once the keys added by
        this process since the last refresh reach :data:`ANALYZE_MIN_ROWS` and more than
        :data:`ANALYZE_GROWTH` of the rows the planner knew then (``pg_class.reltuples``
        before this process's first refresh). A failure is logged, never raised: the keys
        are stored already.

        SQLite is left alone: without statistics its planner already takes
        ``ix_kms_keys_state_seq`` for a reservation (the only index matching both the state
        and the order), and ANALYZE would read every index under the single write lock.
        """
        if added <= 0 or self.is_sqlite:
            return
        with self._stats_lock:
            self._added_since_analyze += added
            if self._added_since_analyze < ANALYZE_MIN_ROWS:
                return
            try:
                if self._analyzed_rows is None:
                    self._analyzed_rows = self._planner_rows()
                if self._added_since_analyze <= ANALYZE_GROWTH * self._analyzed_rows:
                    return
                with self._write() as conn:
                    conn.exec_driver_sql("ANALYZE kms_keys")
                    total = conn.execute(
                        select(func.coalesce(func.sum(_counters.c.value), 0)).where(
                            _counters.c.name == _ADDED
                        )
                    ).scalar_one()
            except STORE_ERRORS as exc:
                log.warning("ANALYZE of the key store failed: %s", describe_error(exc))
                return
            self._analyzed_rows = float(total)
            self._added_since_analyze = 0

    def _planner_rows(self) -> float:
        """Rows of ``kms_keys`` as PostgreSQL's planner last saw them (0: never analysed)."""
        with self._read() as conn:
            tuples = conn.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE oid = 'kms_keys'::regclass"
            ).scalar()
            return max(0.0, float(tuples or 0.0))

    def expire(self) -> int:
        """Mark available keys whose TTL has passed as expired and drop their material.

        Returns
        -------
        int
            The number of keys expired.
        """
        now = self._now()
        with self._write() as conn:
            gone = conn.execute(
                update(_keys)
                .where(_keys.c.state == "available")
                .where(_keys.c.expires_at.is_not(None))
                .where(_keys.c.expires_at <= now)
                .values(state="expired", material=None)
                .returning(_keys.c.key_id, _keys.c.owner)
            ).all()
            if gone:
                conn.execute(
                    insert(_audit),
                    [
                        {"at": now, "sae_id": EXPIRY_AUDIT_BY, "key_id": k, "action": "expire"}
                        for k, _ in gone
                    ],
                )
                deltas = self._owner_deltas(o for _, o in gone)
                self._bump(conn, {**deltas, _ERASED: len(gone), _DISCARDED: len(gone)})
            return len(gone)

    def available_count(self, min_size_bits: int = 0, *, owner: str | None = None) -> int:
        """Return the number of unexpired available keys of at least ``min_size_bits`` bits.

        With ``owner``, count only the keys that KME may hand out (its own and unowned ones).
        """
        now = self._now()
        stmt = (
            select(func.count())
            .select_from(_keys)
            .where(self._usable(now))
            .where(_keys.c.size_bits >= min_size_bits)
        )
        if owner is not None:
            stmt = stmt.where(_keys.c.owner.is_(None) | (_keys.c.owner == owner))
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    @staticmethod
    def _usable(now: float) -> Any:
        return (_keys.c.state == "available") & (
            _keys.c.expires_at.is_(None) | (_keys.c.expires_at > now)
        )

    # -- delivery ----------------------------------------------------------------------------

    def reserve(
        self,
        master_sae_id: str,
        slave_sae_ids: Sequence[str],
        number: int,
        size_bits: int,
        key_ids: Sequence[str] | None = None,
        *,
        owner: str | None = None,
        slaves_here: bool = True,
    ) -> list[DeliveredKey]:
        """Reserve ``number`` keys of ``size_bits`` bits and deliver them to the master.

        Keys longer than ``size_bits`` are truncated to it when reserved (the rest is erased).

        Parameters
        ----------
        master_sae_id
            The calling SAE (``enc_keys``); recorded with every key.
        slave_sae_ids
            The slave SAEs allowed to fetch these keys with ``dec_keys``.
        number
            How many keys, >= 1.
        size_bits
            Key size in bits, a positive multiple of 8.
        key_ids
            Reserve exactly these keys (``number`` must equal their count) instead of the
            oldest ones: the peer KME mirrors a reservation made at the other end of the link
            (KME-to-KME synchronisation). Audited as ``sync``, not ``enc``.
        owner
            Take only keys this KME owns or nobody owns (the per-direction split of a link's
            pool); ignored with ``key_ids``.
        slaves_here
            Whether the slaves fetch these keys from this store. ``False`` (the slaves sit
            behind the peer KME, which mirrors the reservation): no slave grant is written
            here, and this master-side copy is erased by :meth:`erase_handed_over` once the
            master has its response, or by :meth:`erase_delivered` after the retry window.

        Returns
        -------
        list of DeliveredKey

        Raises
        ------
        KeyExhaustedError
            If fewer than ``number`` suitable keys are available (nothing is reserved).
        """
        if number < 1 or size_bits < 8 or size_bits % 8:
            raise KmsRequestError("number must be >= 1 and size a positive multiple of 8")
        out: list[DeliveredKey] = []
        with self._write() as conn:
            # stamped under the write lock: on SQLite the stamps then follow the commit order,
            # so a reservation or fetch that waited for the lock behind an erasure sweep is
            # never stamped before that sweep's cutoff (erase_delivered would skip it)
            now = self._now()
            stmt = (
                select(_keys.c.key_id, _keys.c.material, _keys.c.owner)
                .where(self._usable(now))
                .where(_keys.c.size_bits >= size_bits)
                .order_by(_keys.c.seq)
                .limit(number)
            )
            if key_ids is not None:
                stmt = stmt.where(_keys.c.key_id.in_(list(key_ids)))
            elif owner is not None:
                stmt = stmt.where(_keys.c.owner.is_(None) | (_keys.c.owner == owner))
            if not self.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            rows = conn.execute(stmt).all()
            if len(rows) < number:
                raise KeyExhaustedError(
                    f"only {len(rows)} keys of >= {size_bits} bits available, {number} requested",
                    details=[{"available": len(rows), "requested": number}],
                )
            grants: list[tuple[Any, ...]] = []
            audit: list[tuple[Any, ...]] = []
            marks: list[tuple[Any, ...]] = []
            action = "enc" if key_ids is None else "sync"
            for key_id, blob, _owner in rows:
                material = self._unwrap(key_id, blob)[: size_bits // 8]
                marks.append((master_sae_id, now, size_bits, self._wrap(key_id, material), key_id))
                grants.append((key_id, master_sae_id, "master", now))
                if slaves_here:
                    grants.extend((key_id, s, "slave", None) for s in slave_sae_ids)
                audit.append((now, master_sae_id, key_id, action))
                out.append(DeliveredKey(key_id, material))
            # Plain DB-API executemany: SQLAlchemy's per-row parameter processing was a third
            # of a 100-key reservation's CPU time.
            q = "?" if self.is_sqlite else "%s"
            conn.exec_driver_sql(
                f"UPDATE kms_keys SET state = 'reserved', master_sae_id = {q}, "
                f"reserved_at = {q}, size_bits = {q}, material = {q} WHERE key_id = {q}",
                marks,
            )
            conn.exec_driver_sql(
                f"INSERT INTO kms_grants (key_id, sae_id, role, delivered_at) "
                f"VALUES ({q}, {q}, {q}, {q})",
                grants,
            )
            conn.exec_driver_sql(
                f"INSERT INTO kms_audit (at, sae_id, key_id, action) VALUES ({q}, {q}, {q}, {q})",
                audit,
            )
            if not slaves_here:
                conn.exec_driver_sql(
                    f"INSERT INTO kms_handover (key_id, reserved_at) VALUES ({q}, {q})",
                    [(r.key_id, now) for r in rows],
                )
            deltas = self._owner_deltas(r.owner for r in rows)
            self._bump(conn, {**deltas, _DELIVERED: len(rows), _RESERVED: len(rows)})
        return out

    def fetch(
        self, slave_sae_id: str, key_ids: Sequence[str], master_sae_id: str | None = None
    ) -> list[DeliveredKey]:
        """Deliver reserved keys to a slave SAE, all or nothing.

        Parameters
        ----------
        slave_sae_id
            The calling SAE (``dec_keys``).
        key_ids
            The key IDs the master received.
        master_sae_id
            If given, every key must have been reserved by this master SAE.

        Returns
        -------
        list of DeliveredKey
            In the order of ``key_ids``.

        Raises
        ------
        KmsRequestError
            If a key_ID is malformed, unknown, repeated, or already delivered to this slave
            more than :data:`RETRY_WINDOW_S` seconds ago.
        KeyAccessError
            If a key exists but the caller was not named as one of its slaves, or the key
            was reserved by another master than ``master_sae_id``.
        """
        if not key_ids:
            raise KmsRequestError("no key_ID given")
        if len(set(key_ids)) != len(key_ids):
            raise KmsRequestError("a key_ID is repeated")
        out: list[DeliveredKey] = []
        # Set-based: one SELECT, at most one UPDATE and one INSERT, whatever the number of
        # key_IDs (it was ~4 statements per key). Plain DB-API statements, as in reserve().
        q = "?" if self.is_sqlite else "%s"
        ids = list(key_ids)
        marks = ", ".join([q] * len(ids))
        if self.is_sqlite:
            grant = (
                "LEFT JOIN kms_grants g "
                "ON g.key_id = k.key_id AND g.sae_id = ? AND g.role = 'slave'"
            )
        else:
            # One probe of uq_kms_grants_key_sae per key, whatever the statistics: with a
            # plain join, PostgreSQL (before kms_grants was analysed) compared every key
            # with every grant of the slave.
            grant = (
                "LEFT JOIN LATERAL (SELECT role, delivered_at FROM kms_grants "
                "WHERE key_id = k.key_id AND sae_id = %s AND role = 'slave' LIMIT 1) g ON TRUE"
            )
        with self._write() as conn:
            now = self._now()  # under the write lock, as in reserve()
            found = {
                r[0]: r
                for r in conn.exec_driver_sql(
                    "SELECT k.key_id, k.state, k.material, k.master_sae_id, g.role, "
                    f"g.delivered_at FROM kms_keys k {grant} WHERE k.key_id IN ({marks})",
                    (slave_sae_id, *ids),
                ).all()
            }
            first_time: list[str] = []
            # Checked in the order of key_ids, so the error names the same key as before.
            for key_id in ids:
                row = found.get(key_id)
                if row is None or row.state in ("available", "expired"):
                    raise KmsRequestError(
                        "unknown key_ID", details=[{"key_ID": key_id, "reason": "unknown"}]
                    )
                if row.role is None or (
                    master_sae_id is not None and row.master_sae_id != master_sae_id
                ):
                    raise KeyAccessError(
                        "key_ID not issued to this SAE",
                        details=[{"key_ID": key_id, "reason": "not a slave of this key"}],
                    )
                first = row.delivered_at
                if row.material is None or (first is not None and now - first > RETRY_WINDOW_S):
                    raise KmsRequestError(
                        "key already delivered",
                        details=[{"key_ID": key_id, "reason": "already delivered"}],
                    )
                out.append(DeliveredKey(key_id, self._unwrap(key_id, row.material)))
                if first is None:
                    first_time.append(key_id)
            if first_time:
                # Only grants still undelivered: a concurrent fetch of the same key by the
                # same slave (PostgreSQL) that committed first is not audited twice. The unary
                # plus keeps SQLite off ix_kms_grants_delivered_at (every undelivered grant):
                # the rows are found by (key_id, sae_id).
                fresh = {
                    r[0]
                    for r in conn.exec_driver_sql(
                        f"UPDATE kms_grants SET delivered_at = {q} WHERE sae_id = {q} "
                        f"AND role = 'slave' AND +delivered_at IS NULL "
                        f"AND key_id IN ({', '.join([q] * len(first_time))}) RETURNING key_id",
                        (now, slave_sae_id, *first_time),
                    ).all()
                }
                audit = [(now, slave_sae_id, k, "dec") for k in first_time if k in fresh]
                if audit:
                    conn.exec_driver_sql(
                        "INSERT INTO kms_audit (at, sae_id, key_id, action) "
                        f"VALUES ({q}, {q}, {q}, {q})",
                        audit,
                    )
        return out

    def consume(
        self, by: str, size_bits: int, key_ids: Sequence[str] | None = None
    ) -> DeliveredKey:
        """Take one available key out of the pool for use inside the KMS (key relay).

        The key is marked ``erased`` (its material dropped) and audited with action
        ``relay`` under ``by``, in one transaction.

        Parameters
        ----------
        by
            Who consumed it, for the audit log (e.g. ``relay:<relay_id>``).
        size_bits
            Bits needed; the key is truncated to it.
        key_ids
            ``None`` to take the oldest suitable key; else the one ID the other end of the
            link took (both ends then consume the same key).

        Raises
        ------
        KeyExhaustedError
            If no suitable key is available (nothing is consumed).
        KmsRequestError
            If the named key is unknown, not available or too short.
        """
        now = self._now()
        with self._write() as conn:
            stmt = select(_keys.c.key_id, _keys.c.material, _keys.c.owner)
            stmt = stmt.where(self._usable(now)).where(_keys.c.size_bits >= size_bits)
            if key_ids is not None:
                stmt = stmt.where(_keys.c.key_id.in_(list(key_ids)))
            stmt = stmt.order_by(_keys.c.seq).limit(1)
            if not self.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            row = conn.execute(stmt).first()
            if row is None:
                if key_ids is not None:
                    raise KmsRequestError("link key not available", details=[{"key_IDs": key_ids}])
                raise KeyExhaustedError(
                    f"no key of >= {size_bits} bits available", details=[{"available": 0}]
                )
            key_id, blob, owner = row
            material = self._unwrap(key_id, blob)[: size_bits // 8]
            conn.execute(
                update(_keys)
                .where(_keys.c.key_id == key_id)
                .values(state="erased", material=None, master_sae_id=by, reserved_at=now)
            )
            conn.execute(
                insert(_audit), [{"at": now, "sae_id": by, "key_id": key_id, "action": "relay"}]
            )
            self._bump(conn, {_available_name(owner): -1, _DELIVERED: 1, _ERASED: 1})
        return DeliveredKey(key_id, material)

    def discard(self, key_ids: Sequence[str], by: str) -> int:
        """Erase available keys by ID (compensation of a failed relay); return how many.

        Keys that are unknown or no longer available are skipped; only the keys erased are
        audited (``discard`` under ``by``).
        """
        return self._erase(key_ids, by, from_state="available", action="discard")

    def discard_since(self, since: float, by: str) -> int:
        """Erase the available keys stored at or after ``since`` (s, the store's clock).

        The actuation of an alarm: keys a link distilled after the estimated change point may
        be known to Eve. Audited ``discard`` under ``by`` (counted in ``discarded_total``).
        Returns how many.
        """
        with self._read() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(_keys.c.key_id)
                    .where(_keys.c.state == "available")
                    .where(_keys.c.created_at >= since)
                ).all()
            ]
        return self._erase(ids, by, from_state="available", action="discard") if ids else 0

    def record_operation(self, by: str, action: str) -> None:
        """Audit an operator's action on this store's link (``key_id`` ``-``), e.g. a disable."""
        with self._write() as conn:
            conn.execute(
                insert(_audit).values(at=self._now(), sae_id=by, key_id="-", action=action[:16])
            )

    def revoke(self, key_ids: Sequence[str], by: str) -> int:
        """Erase reserved keys that must never be used (compensation of a failed mirroring).

        A reservation whose mirror at the peer KME failed is revoked: its keys are erased and
        their slave grants can no longer be fetched. Audited as ``revoke`` under ``by``.

        Returns
        -------
        int
            How many keys were revoked.
        """
        return self._erase(key_ids, by, from_state="reserved", action="revoke")

    def unreserve(
        self, key_ids: Sequence[str], by: str, *, mirrored_only: bool = False
    ) -> UnreserveResult:
        """Return reserved keys that nobody received to the pool (undo of a reservation).

        For a reservation whose response never reached its master SAE (the client went away,
        see "Admission control" in ``docs/kms.md``): each key of ``key_ids`` in state
        reserved goes back to available (same owner, same TTL, its material as reserved:
        truncated to the size asked for), its grants are deleted and ``undo`` is audited
        under ``by``. The counters move back: ``reserved`` and ``delivered_total`` down,
        the available gauge up, so ``added_total == available + delivered_total +
        discarded_total`` still holds (``delivered_total`` counts keys that left the pool
        and did not come back; see :class:`KeyCounts`).

        A key that a slave has already fetched here (a delivered slave grant) is never
        returned to the pool: it is erased instead (audited ``revoke`` under ``by``). Keys
        in another state, or unknown, are left alone and reported in neither list. One
        transaction.

        With ``mirrored_only`` (the peer KME asking, ``POST /kme/v1/reservations/undo``)
        only keys reserved for slaves that fetch here (a mirrored reservation: it has slave
        grants) are touched; a master-side copy of this KME's own reservation is left alone.

        Returns
        -------
        UnreserveResult
            The key_IDs returned to the pool and those erased instead.
        """
        if not key_ids:
            return UnreserveResult([], [])
        now = self._now()
        ids = list(dict.fromkeys(key_ids))
        with self._write() as conn:
            stmt = (
                select(_keys.c.key_id, _keys.c.owner)
                .where(_keys.c.key_id.in_(ids))
                .where(_keys.c.state == "reserved")
            )
            if mirrored_only:
                stmt = stmt.where(self._slave_grant().exists())
            rows = conn.execute(stmt).all()
            if not rows:
                return UnreserveResult([], [])
            fetched = {
                k
                for (k,) in conn.execute(
                    select(_grants.c.key_id)
                    .where(_grants.c.key_id.in_([k for k, _ in rows]))
                    .where(_grants.c.role == "slave")
                    .where(_grants.c.delivered_at.is_not(None))
                ).all()
            }
            back = [(k, o) for k, o in rows if k not in fetched]
            gone = [k for k, _ in rows if k in fetched]
            deltas: dict[str, int] = {}
            audit: list[dict[str, Any]] = []
            if back:
                back_ids = [k for k, _ in back]
                conn.execute(
                    update(_keys)
                    .where(_keys.c.key_id.in_(back_ids))
                    .values(state="available", master_sae_id=None, reserved_at=None)
                )
                conn.execute(_grants.delete().where(_grants.c.key_id.in_(back_ids)))
                conn.execute(delete(_handover).where(_handover.c.key_id.in_(back_ids)))
                audit += [
                    {"at": now, "sae_id": by, "key_id": k, "action": "undo"} for k in back_ids
                ]
                deltas = self._owner_deltas((o for _, o in back), sign=1)
                deltas[_DELIVERED] = -len(back)
            if gone:
                conn.execute(
                    update(_keys)
                    .where(_keys.c.key_id.in_(gone))
                    .values(state="erased", material=None)
                )
                audit += [{"at": now, "sae_id": by, "key_id": k, "action": "revoke"} for k in gone]
                deltas[_ERASED] = len(gone)
            conn.execute(insert(_audit), audit)
            self._bump(conn, {**deltas, _RESERVED: -len(rows)})
        return UnreserveResult([k for k, _ in back], gone)

    def _erase(self, key_ids: Sequence[str], by: str, *, from_state: str, action: str) -> int:
        """Erase the keys of ``key_ids`` that are in ``from_state``; audit ``action`` for each.

        Keys in another state (or unknown) are left alone and not audited.
        """
        now = self._now()
        if not key_ids:
            return 0
        with self._write() as conn:
            gone = conn.execute(
                update(_keys)
                .where(_keys.c.key_id.in_(list(key_ids)))
                .where(_keys.c.state == from_state)
                .values(state="erased", material=None)
                .returning(_keys.c.key_id, _keys.c.owner)
            ).all()
            if not gone:
                return 0
            conn.execute(
                insert(_audit),
                [{"at": now, "sae_id": by, "key_id": k, "action": action} for k, _ in gone],
            )
            if from_state == "available":
                deltas = self._owner_deltas(o for _, o in gone)
                deltas[_DISCARDED] = len(gone)
            else:
                deltas = {_RESERVED: -len(gone)}
            self._bump(conn, {**deltas, _ERASED: len(gone)})
            return len(gone)

    def install_reserved(
        self,
        keys: Sequence[tuple[str, bytes]],
        master_sae_id: str,
        slave_sae_ids: Sequence[str],
        *,
        delivered_to_master: bool,
    ) -> None:
        """Store relayed end-to-end keys directly as reserved for one master and its slaves.

        Used by key relay: the source KME hands the keys to the master at once
        (``delivered_to_master=True``, audited ``enc``; the slaves fetch at the destination,
        so no slave grant is written and this copy is erased like a mirrored reservation's
        master-side copy, see :meth:`erase_handed_over`), the destination KME keeps them for
        its slaves' ``dec_keys`` (audited ``sync``). All or nothing, in one transaction.

        Raises
        ------
        ConfigError
            If a key_ID is not a UUID, already exists, or a key is empty.
        """
        action = "enc" if delivered_to_master else "sync"
        with self._write() as conn:
            now = self._now()  # under the write lock, as in reserve()
            seq = conn.execute(select(func.coalesce(func.max(_keys.c.seq), 0))).scalar_one()
            ids = [str(uuid.UUID(k)) for k, _ in keys]
            if conn.execute(
                select(func.count()).select_from(_keys).where(_keys.c.key_id.in_(ids))
            ).scalar_one():
                raise ConfigError("relayed key_ID already present", field="key_ID")
            rows, grants, audit = [], [], []
            for i, (key_id, material) in enumerate(zip(ids, (m for _, m in keys), strict=True)):
                if not material:
                    raise ConfigError("key material must not be empty", field="material")
                rows.append(
                    {
                        "key_id": key_id,
                        "seq": seq + 1 + i,
                        "size_bits": 8 * len(material),
                        "material": self._wrap(key_id, material),
                        "state": "reserved",
                        "created_at": now,
                        "expires_at": None,
                        "master_sae_id": master_sae_id,
                        "reserved_at": now,
                        "owner": None,
                    }
                )
                grants.append(
                    {
                        "key_id": key_id,
                        "sae_id": master_sae_id,
                        "role": "master",
                        "delivered_at": now if delivered_to_master else None,
                    }
                )
                if not delivered_to_master:
                    grants.extend(
                        {"key_id": key_id, "sae_id": s, "role": "slave", "delivered_at": None}
                        for s in slave_sae_ids
                    )
                audit.append(
                    {"at": now, "sae_id": master_sae_id, "key_id": key_id, "action": action}
                )
            if rows:
                conn.execute(insert(_keys), rows)
                conn.execute(insert(_grants), grants)
                conn.execute(insert(_audit), audit)
                if delivered_to_master:
                    conn.execute(
                        insert(_handover), [{"key_id": k, "reserved_at": now} for k in ids]
                    )
                n = len(rows)
                self._bump(conn, {_ADDED: n, _DELIVERED: n, _RESERVED: n})

    def now(self) -> float:
        """Return the store's clock reading (seconds since the epoch)."""
        return self._now()

    def erase_handed_over(self, key_ids: Sequence[str], by: str) -> int:
        """Erase master-side copies: reserved keys of ``key_ids`` that no slave fetches here.

        Called once the master SAE has its ``enc_keys`` response, when the slaves sit behind
        another KME (a mirrored reservation, :meth:`reserve` with ``slaves_here=False``, or
        a relay's source copy): nothing here will ever deliver them again. Keys with a slave
        grant here are left alone. Audited ``erase`` under ``by``.

        Returns
        -------
        int
            How many keys were erased.
        """
        if not key_ids:
            return 0
        now = self._now()
        ids = list(key_ids)
        with self._write() as conn:
            n = self._erase_master_copies(conn, now, _keys.c.key_id.in_(ids), by)
            conn.execute(delete(_handover).where(_handover.c.key_id.in_(ids)))
        return n

    @staticmethod
    def _slave_grant() -> Any:
        """Select the slave grants here of the ``kms_keys`` row at hand (correlated subquery)."""
        return (
            select(_grants.c.key_id)
            .where(_grants.c.key_id == _keys.c.key_id)
            .where(_grants.c.role == "slave")
        )

    def _erase_master_copies(self, conn: Connection, now: float, where: Any, by: str) -> int:
        return self._erase_reserved(
            conn, now, where, ~self._slave_grant().exists(), by=by, action="erase"
        )

    def _erase_reserved(
        self, conn: Connection, now: float, *where: Any, by: str, action: str
    ) -> int:
        """Erase the reserved keys matching every ``where``; audit each as ``action`` by ``by``."""
        gone = conn.execute(
            update(_keys)
            .where(_keys.c.state == "reserved")
            .where(*where)
            .values(state="erased", material=None)
            .returning(_keys.c.key_id)
        ).all()
        if gone:
            conn.execute(
                insert(_audit),
                [{"at": now, "sae_id": by, "key_id": k, "action": action} for (k,) in gone],
            )
            self._bump(conn, {_RESERVED: -len(gone), _ERASED: len(gone)})
        return len(gone)

    def expire_reservations(self, max_age_s: float) -> int:
        """Erase reserved keys older than ``max_age_s`` that a slave never fetched.

        A reservation whose slave never calls ``dec_keys`` (its master lost the key IDs, or
        never passed them on) would keep the material forever; past this age it is erased
        (audited ``stale`` under :data:`EXPIRY_AUDIT_BY`). Counted in ``erased_total``.

        Returns
        -------
        int
            How many keys were erased.
        """
        now = self._now()
        with self._write() as conn:
            gone = self._erase_reserved(
                conn,
                now,
                _keys.c.reserved_at <= now - max_age_s,
                by=EXPIRY_AUDIT_BY,
                action="stale",
            )
        if gone:
            log.warning("erased %d reservations older than %.0f s never fetched", gone, max_age_s)
        return gone

    def erase_delivered(self) -> int:
        """Erase reserved keys nothing here will deliver again, once the retry window passed.

        Two kinds, both older than the retry window (:data:`RETRY_WINDOW_S` seconds):

        * keys fetched by every slave (the last fetch that long ago). Only keys with a slave
          delivery newer than the previous call's cutoff are examined (index on
          ``delivered_at``), so the cost follows the deliveries since the last call, not the
          size of the store; the first call after start examines every delivered key once;
        * master-side copies (no slave grant here: the slaves fetch at the peer KME) reserved
          that long ago, whose :meth:`erase_handed_over` did not run (a response that failed;
          audited ``erase`` under :data:`RETRY_WINDOW_AUDIT_BY`).

        Returns
        -------
        int
            The number of keys erased.
        """
        now = self._now()
        cutoff = now - RETRY_WINDOW_S
        with self._write() as conn:
            # Each kind in two steps: the candidates' key_IDs from a small index range, then
            # the UPDATE by primary key. As one statement with a subquery, SQLite's planner
            # walked every reserved key instead (8 ms per call with 40,000 keys awaiting their
            # slaves, under the write lock).
            # Master-side copies: only those listed as pending hand-over (kms_handover); a row
            # stamped before the cutoff but committed after this transaction began is simply
            # found by the next call.
            stale = conn.execute(
                select(_handover.c.key_id).where(_handover.c.reserved_at <= cutoff)
            ).all()
            copies = 0
            for chunk in _chunks([k for (k,) in stale]):
                copies += self._erase_master_copies(
                    conn,
                    now,
                    _keys.c.key_id.in_(chunk) & (_keys.c.reserved_at <= cutoff),
                    RETRY_WINDOW_AUDIT_BY,
                )
            if stale:
                conn.execute(delete(_handover).where(_handover.c.reserved_at <= cutoff))
            recent = (
                select(_grants.c.key_id)
                .where(_grants.c.role == "slave")
                .where(_grants.c.delivered_at.is_not(None))
                .where(_grants.c.delivered_at <= cutoff)
            )
            if self._erase_mark is not None:
                recent = recent.where(_grants.c.delivered_at > self._erase_mark)
            pending = (
                select(_grants.c.key_id)
                .where(_grants.c.key_id == _keys.c.key_id)
                .where(_grants.c.role == "slave")
                .where(_grants.c.delivered_at.is_(None) | (_grants.c.delivered_at > cutoff))
            )
            erased = 0
            for chunk in _chunks(list(dict.fromkeys(k for (k,) in conn.execute(recent)))):
                res = conn.execute(
                    update(_keys)
                    .where(_keys.c.key_id.in_(chunk))
                    .where(_keys.c.state == "reserved")
                    .where(~pending.exists())
                    .values(state="erased", material=None)
                )
                erased += int(res.rowcount)
            if erased:
                self._bump(conn, {_RESERVED: -erased, _ERASED: erased})
        self._erase_mark = cutoff
        return erased + copies

    # -- inspection --------------------------------------------------------------------------

    def counters(self, owner: str | None = None) -> KeyCounts:
        """Return the key counts of this store (see :class:`KeyCounts`).

        One statement over ``kms_counters`` (a few rows) and the available keys whose TTL
        has passed but that :meth:`expire` has not marked yet (an index range, usually
        empty), so the cost does not grow with the store; on PostgreSQL the single statement
        also makes it one consistent snapshot.

        Parameters
        ----------
        owner
            The KME asking: ``owned`` counts the available keys it may hand out (its own and
            unowned ones); ``None``: every available key.
        """
        now = self._now()
        gauges = select(
            literal_column("'c'"), _counters.c.name, func.sum(_counters.c.value)
        ).group_by(_counters.c.name)
        stale = (
            select(literal_column("'x'"), _keys.c.owner, func.count())
            .where(_keys.c.state == "available")
            .where(_keys.c.expires_at.is_not(None))
            .where(_keys.c.expires_at <= now)
            .group_by(_keys.c.owner)
        )
        with self._read() as conn:
            rows = conn.execute(union_all(gauges, stale)).all()
        counts: dict[str, int] = {}
        usable: dict[str | None, int] = {}  # available keys per owner, TTL not passed
        prefix = _available_name("")
        for kind, name, value in rows:
            if kind == "x":  # name: the owner of available keys whose TTL has passed
                usable[name] = usable.get(name, 0) - int(value)
            elif name == _available_name(None) or name.startswith(prefix):
                who = None if name == _available_name(None) else name[len(prefix) :]
                usable[who] = usable.get(who, 0) + int(value)
            else:
                counts[name] = int(value)
        available = sum(usable.values())
        owned = available
        if owner is not None:
            owned = usable.get(None, 0) + usable.get(owner, 0)
        return KeyCounts(
            available=available,
            owned=owned,
            reserved=counts.get(_RESERVED, 0),
            added_total=counts.get(_ADDED, 0),
            delivered_total=counts.get(_DELIVERED, 0),
            erased_total=counts.get(_ERASED, 0),
            discarded_total=counts.get(_DISCARDED, 0),
        )

    def key_info(self, key_id: str) -> StoredKey | None:
        """Return the metadata of one key, or ``None`` if unknown."""
        with self._read() as conn:
            row = conn.execute(
                select(
                    _keys.c.key_id, _keys.c.size_bits, _keys.c.state, _keys.c.master_sae_id
                ).where(_keys.c.key_id == key_id)
            ).first()
        return None if row is None else StoredKey(*row)

    def audit_log(self) -> list[AuditEntry]:
        """Return the audit log in order: dicts with ``at, sae_id, key_id, action``."""
        with self._read() as conn:
            rows = conn.execute(
                select(_audit.c.at, _audit.c.sae_id, _audit.c.key_id, _audit.c.action).order_by(
                    _audit.c.id
                )
            ).all()
        return [cast(AuditEntry, dict(r._mapping)) for r in rows]

    def raw_material(self, key_id: str) -> bytes | None:
        """Return the stored (possibly wrapped) blob of a key; for tests of wrapping at rest."""
        with self._read() as conn:
            return conn.execute(
                select(_keys.c.material).where(_keys.c.key_id == key_id)
            ).scalar_one_or_none()

    def close(self) -> None:
        """Release the database connections (after a last checkpoint on SQLite)."""
        _CHECKPOINTER.discard(self)
        _SWEEPER.discard(self)
        if self.is_sqlite and self._scrubbed_erased is not None and not self._closed:
            try:  # keys erased since the last scrub: leave no stale copy behind
                if self.counters().erased_total != self._scrubbed_erased:
                    self.scrub()
            except Exception as exc:
                log.warning("scrub at close failed: %s", describe_error(exc))
        if self.is_sqlite and self._dirty:
            try:
                self.checkpoint()
            except Exception as exc:  # the WAL stays; SQLite checkpoints it at the next open
                log.warning("WAL checkpoint at close failed: %s", describe_error(exc))
        with self._checkpoint_lock:
            self._closed = True
            if self._read_engine is not None:
                self._read_engine.dispose()
            self.engine.dispose()
