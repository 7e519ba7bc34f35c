"""Bounded history of the twin's time series and its persistence in the embedded database.

Every series (``link:<id>:qber``, ``pool:<a>|<b>:level``, ``net:success``, ...) keeps its last
``cap`` points in memory (a ring buffer: memory stays bounded however long the twin runs) and
is appended to a table of the twin's database (SQLite by default, PostgreSQL by URL), which is
pruned to the same cap; on start the twin reloads the recent past from it, so a restart keeps
the charts and the alarm log.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from qkdtwin.twin.alarms import AlarmRecord

__all__ = ["History", "TwinDatabase"]

_meta = MetaData()
_samples = Table(
    "twin_samples",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("series", String(200), nullable=False, index=True),
    Column("t", Float, nullable=False),
    Column("value", Float, nullable=True),
)
_alarms = Table(
    "twin_alarms",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("body", Text, nullable=False),
)
_meta_kv = Table(
    "twin_meta",
    _meta,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)


class TwinDatabase:
    """The twin's embedded database (SQLAlchemy Core: ``sqlite:///...`` or ``postgresql://``).

    Parameters
    ----------
    url
        SQLAlchemy URL.
    """

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        self.url = url
        kw: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kw["connect_args"] = {"check_same_thread": False, "timeout": 30.0}
        self.engine: Engine = create_engine(url, **kw)
        _meta.create_all(self.engine)
        self._lock = threading.Lock()

    def append_samples(self, rows: list[tuple[str, float, float | None]]) -> None:
        """Append ``(series, t, value)`` rows."""
        if not rows:
            return
        # the driver's executemany: thousands of rows a tick at 1,000 links, where building
        # one parameter dict per row through the SQL expression layer cost more than SQLite
        # (plain Python values: the driver binds no NumPy scalar)
        q = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        plain = [(str(s), float(t), None if v is None else float(v)) for s, t, v in rows]
        with self._lock, self.engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO twin_samples (series, t, value) VALUES ({q}, {q}, {q})", plain
            )

    def prune(self, before_t: float) -> None:
        """Delete the points older than ``before_t`` (those the in-memory history dropped)."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(delete(_samples).where(_samples.c.t < before_t))

    def load_samples(self, cap: int) -> dict[str, list[tuple[float, float | None]]]:
        """Every series' last ``cap`` points, oldest first."""
        out: dict[str, list[tuple[float, float | None]]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_samples.c.series, _samples.c.t, _samples.c.value).order_by(_samples.c.id)
            ).all()
        for s, t, v in rows:
            out.setdefault(str(s), []).append((float(t), None if v is None else float(v)))
        return {k: v[-cap:] for k, v in out.items()}

    def save_alarm(self, alarm_id: int, body: AlarmRecord) -> None:
        """Insert or replace one alarm record."""
        text = json.dumps(body)
        with self._lock, self.engine.begin() as conn:
            done = conn.execute(
                update(_alarms).where(_alarms.c.id == alarm_id).values(body=text)
            ).rowcount
            if not done:
                conn.execute(insert(_alarms).values(id=alarm_id, body=text))

    def load_alarms(self) -> list[AlarmRecord]:
        """Every stored alarm record, by id (as :meth:`save_alarm` stored it)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_alarms.c.body).order_by(_alarms.c.id)).all()
        return [json.loads(r[0]) for r in rows]

    def get_meta(self, key: str) -> str | None:
        """Return a stored string value (e.g. the simulated time reached)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_meta_kv.c.value).where(_meta_kv.c.key == key)).first()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a string value."""
        with self._lock, self.engine.begin() as conn:
            if not conn.execute(
                update(_meta_kv).where(_meta_kv.c.key == key).values(value=value)
            ).rowcount:
                conn.execute(insert(_meta_kv).values(key=key, value=value))

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


class History:
    """In-memory ring buffers of time series, ``cap`` points each, mirrored to a database.

    Parameters
    ----------
    cap
        Points kept per series.
    db
        Database to persist to (``None``: memory only).
    """

    def __init__(self, cap: int, db: TwinDatabase | None = None) -> None:
        self.cap = int(cap)
        self.db = db
        self.series: dict[str, deque[tuple[float, float | None]]] = {}
        self._pending: list[tuple[str, float, float | None]] = []
        self._flushes = 0
        if db is not None:
            for name, pts in db.load_samples(self.cap).items():
                self.series[name] = deque(pts, maxlen=self.cap)

    def add(self, name: str, t: float, value: float | None) -> None:
        """Append a point (NaN is stored as ``None``)."""
        if value is not None and value != value:
            value = None
        buf = self.series.get(name)
        if buf is None:
            buf = self.series[name] = deque(maxlen=self.cap)
        buf.append((t, value))
        self._pending.append((name, t, value))

    def flush(self) -> None:
        """Write the points added since the last flush to the database."""
        if self.db is not None and self._pending:
            rows, self._pending = self._pending, []
            self.db.append_samples(rows)
            self._flushes += 1
            if self._flushes % max(1, self.cap // 4) == 0:
                oldest = min((b[0][0] for b in self.series.values() if b), default=0.0)
                self.db.prune(oldest)
        else:
            self._pending = []

    def get(
        self, names: list[str] | None = None, prefix: str | None = None
    ) -> dict[str, list[list[float | None]]]:
        """Series as ``{name: [[t, value], ...]}`` (all, by names, or by name prefix)."""
        keys = list(self.series) if names is None else [n for n in names if n in self.series]
        if prefix is not None:
            keys = [k for k in keys if k.startswith(prefix)]
        return {k: [list(p) for p in self.series[k]] for k in keys}

    def last_t(self) -> float:
        """Latest time over all series (0 when empty)."""
        return max((b[-1][0] for b in self.series.values() if b), default=0.0)
