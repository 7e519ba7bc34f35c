"""Bounded history of the twin's time series and its persistence in the embedded database.

Every series (``link:<id>:qber``, ``pool:<a>|<b>:level``, ``net:success``, ...) keeps its last
``cap`` points in memory (a ring buffer: memory stays bounded however long the twin runs) and
is appended to the twin's database (SQLite by default, PostgreSQL by URL), which is pruned to
the same cap; on start the twin reloads the recent past from it, so a restart keeps the charts
and the alarm log.

Storage is columnar: a tick's points are one *frame* (table ``twin_frames``: the time, the id
of its list of series names in ``twin_frame_names``, and the values as one float64 array, NaN
for no value), not one row per point. At 1,000 links a tick has ~4,000 points: a row each cost
~0.13 s of CPU a tick, a frame costs one insert. Points a database of an earlier version holds
(one row each, table ``twin_samples``) are still read on start and pruned.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from itertools import groupby
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
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
_frames = Table(
    "twin_frames",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("t", Float, nullable=False, index=True),
    Column("names_id", Integer, nullable=False),
    Column("vals", LargeBinary, nullable=False),
)
_frame_names = Table(
    "twin_frame_names",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("names", Text, nullable=False),
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
        #: Series-name lists written this run -> their id (a new list gets the next id).
        self._names_ids: dict[tuple[str, ...], int] = {}
        with self.engine.connect() as conn:
            last = conn.execute(
                select(_frame_names.c.id).order_by(_frame_names.c.id.desc())
            ).first()
        self._names_base = 0 if last is None else int(last[0])

    def append_samples(self, rows: list[tuple[str, float, float | None]]) -> None:
        """Append ``(series, t, value)`` rows: one frame per run of rows with the same ``t``."""
        if not rows:
            return
        frames = []
        for t, group in groupby(rows, key=lambda r: r[1]):
            pts = list(group)
            names = tuple(str(r[0]) for r in pts)
            vals = np.array([np.nan if r[2] is None else r[2] for r in pts], dtype="<f8")
            frames.append((float(t), names, vals.tobytes()))
        with self._lock, self.engine.begin() as conn:
            out = []
            for t, names, blob in frames:
                nid = self._names_ids.get(names)
                if nid is None:
                    nid = len(self._names_ids) + self._names_base + 1
                    conn.execute(insert(_frame_names).values(id=nid, names=json.dumps(names)))
                    self._names_ids[names] = nid
                out.append({"t": t, "names_id": nid, "vals": blob})
            conn.execute(insert(_frames), out)

    def prune(self, before_t: float) -> None:
        """Delete the points older than ``before_t`` (those the in-memory history dropped)."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(delete(_frames).where(_frames.c.t < before_t))
            conn.execute(delete(_samples).where(_samples.c.t < before_t))

    def load_samples(self, cap: int) -> dict[str, list[tuple[float, float | None]]]:
        """Every series' last ``cap`` points, oldest first (rows of the old layout first)."""
        out: dict[str, deque[tuple[float, float | None]]] = {}

        def put(name: str, t: float, v: float | None) -> None:
            buf = out.get(name)
            if buf is None:
                buf = out[name] = deque(maxlen=cap)
            buf.append((t, v))

        with self.engine.connect() as conn:
            for s, t, v in conn.execute(
                select(_samples.c.series, _samples.c.t, _samples.c.value).order_by(_samples.c.id)
            ):
                put(str(s), float(t), None if v is None else float(v))
            names = {
                int(i): json.loads(n)
                for i, n in conn.execute(select(_frame_names.c.id, _frame_names.c.names))
            }
            for t, nid, blob in conn.execute(
                select(_frames.c.t, _frames.c.names_id, _frames.c.vals).order_by(_frames.c.id)
            ):
                vals = np.frombuffer(blob, dtype="<f8").tolist()
                for name, v in zip(names[int(nid)], vals, strict=True):
                    put(name, float(t), None if v != v else v)
        return {k: list(v) for k, v in out.items()}

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
