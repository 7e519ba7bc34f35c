"""Engines of the KME key store (:mod:`qkdtwin.kms.store`): URLs, SQLite set-up, file mode.

:func:`make_engine` opens the store's writing engine (SQLite: WAL, ``BEGIN IMMEDIATE``,
``secure_delete``, no automatic checkpoint; PostgreSQL: pre-ping), :func:`make_read_engine`
the read-only engine of a SQLite file; the helpers normalise URLs, tell SQLite files from
in-memory databases and make a SQLite file private (mode 0600).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.pool import NullPool
from sqlalchemy.util import LRUCache


def _is_table(engine: Engine, name: str) -> bool:
    """Return whether the database (its default schema) has table ``name``."""
    return bool(inspect(engine).has_table(name))


def _is_sqlite_file(url: str) -> bool:
    """Return whether a SQLite URL names a file (not an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return False
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return bool(path) and not path.startswith(":memory:") and "mode=memory" not in url


def _normalise_url(url: str) -> str:
    """Select the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _private_sqlite_file(url: str) -> None:
    """Create a SQLite store's file mode 0600 (or make an existing one 0600).

    SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions, so the
    material never sits in a file other users can read.
    """
    if not url.startswith("sqlite:///"):
        return
    path = url.removeprefix("sqlite:///")
    if not path or path.startswith(":memory:") or "?" in path:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.chmod(path + suffix, 0o600)
    except OSError:
        return  # SQLite reports an unusable path itself, with its own error


def _pool_args(pooled: bool) -> dict[str, Any]:
    """Pool options: up to 20 kept connections, or none kept (``NullPool``).

    Without a pool every transaction opens its own connection and closes it at its end, so a
    store at rest holds no file descriptor (a process with thousands of stores, see
    :class:`~qkdtwin.kms.store.KeyStore`'s ``keep_connections``).
    """
    return {"pool_size": 20} if pooled else {"poolclass": NullPool}


def _create_sqlite_engine(url: str, pooled: bool, **kwargs: Any) -> Engine:
    # used from any thread; a writer waits up to 30 s for SQLite's lock
    return create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30.0},
        hide_parameters=True,
        **_pool_args(pooled),
        **kwargs,
    )


_shared_lock = threading.Lock()
_shared_compilation: tuple[Dialect, LRUCache[Any, Any]] | None = None


def _shared_dialect_and_cache() -> tuple[Dialect, LRUCache[Any, Any]]:
    """Return the SQLite dialect and compiled-statement cache shared by unpooled engines.

    SQLAlchemy caches a statement's compiled form per engine, keyed by the engine's dialect.
    A process with thousands of stores (the live twin: four per gateway link, two engines
    each) compiled the same few dozen statements once per engine: ~1,400 objects tracked by
    the garbage collector per store, ~2 million at 1,000 links, which every full collection
    walks (1.2-1.6 s). One dialect and one cache for all of them compile each statement once.
    The dialect is a template's (an in-memory database, initialised once); a statement's
    compiled form depends on the dialect and the statement only, not on the file.
    """
    global _shared_compilation
    with _shared_lock:
        if _shared_compilation is None:
            template = _create_sqlite_engine("sqlite://", False, query_cache_size=0)
            with template.connect():  # runs the dialect's one-time initialisation
                pass
            _shared_compilation = (template.dialect, LRUCache(2000))
        return _shared_compilation


def _sqlite_engine(url: str, pooled: bool) -> Engine:
    engine = _create_sqlite_engine(url, pooled)
    if pooled:
        return engine
    # thousands of unpooled stores: one dialect and one compiled-statement cache for all
    dialect, cache = _shared_dialect_and_cache()
    engine.dialect = dialect
    return engine.execution_options(compiled_cache=cache)


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """Engine for a store's writes (and, without a read engine, its reads).

    ``pooled=False`` keeps no connection between transactions (:func:`_pool_args`).
    """
    # hide_parameters: an error's text never carries the statement's parameters (key
    # material among them), wherever it is logged.
    if not url.startswith("sqlite"):
        if pooled:
            return create_engine(url, pool_pre_ping=True, hide_parameters=True)
        return create_engine(url, poolclass=NullPool, hide_parameters=True)
    engine = _sqlite_engine(url, pooled)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's
        # deferred BEGIN, so a reservation holds the write lock from its first SELECT.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        # Freed content (a key's old row after its material was dropped) is overwritten
        # with zeros in the database file and in the WAL's page images, not left in free
        # pages where a copy of the disk would find it.
        cur.execute("PRAGMA secure_delete=ON")
        # Checkpoints run on a background thread (see KeyStore._checkpointer), not inside
        # the commit of whichever request crosses the auto-checkpoint threshold.
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_read_engine(url: str, *, pooled: bool = True) -> Engine:
    """Engine for a SQLite file's reads (``KeyStore._read``): read-only, deferred transactions.

    ``pooled=False`` keeps no connection between transactions (:func:`_pool_args`).
    """
    engine = _sqlite_engine(url, pooled)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA query_only=ON")  # a write through it is a bug: refused
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")  # deferred: a WAL snapshot, no write lock

    return engine
