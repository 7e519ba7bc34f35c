"""The twin's history store: frames of a tick's points, read back exactly, old rows included."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from qkdtwin.twin.state import History, TwinDatabase, _frames, _samples


def _drive(h: History, rng: random.Random, ticks: int, t0: float = 0.0) -> None:
    """Ticks of points: a fixed set of series, one that appears later, gaps and NaN."""
    for k in range(ticks):
        t = t0 + k + 1.0
        for i in range(30):
            v = rng.choice([None, math.nan, rng.uniform(-1e6, 1e6), 0.0, -0.0, 1e-300])
            h.add(f"link:L{i}:qber", t, v)
        if k >= ticks // 2:  # telemetry switched on half way: a new list of names
            h.add("iot:sent", t, float(k))
        h.flush()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_history_reloads_exactly_what_it_held(backend, tmp_path: Path, request) -> None:
    url = (
        f"sqlite:///{tmp_path / 'twin.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    rng = random.Random(3)
    db = TwinDatabase(url)
    h = History(cap=25, db=db)
    _drive(h, rng, 40)
    want = h.get()
    db.close()
    db2 = TwinDatabase(url)
    again = History(cap=25, db=db2)
    assert again.get() == want  # every point, None where NaN or missing, in order
    assert len(want["link:L0:qber"]) == 25
    assert len(want["iot:sent"]) == 20
    # a second run appends frames with lists of names of its own, and reloads both runs
    _drive(again, rng, 10, t0=40.0)
    want2 = again.get()
    db2.close()
    db3 = TwinDatabase(url)
    assert History(cap=25, db=db3).get() == want2
    with db3.engine.connect() as conn:
        n_frames = len(conn.execute(select(_frames.c.id)).all())
    assert n_frames <= 50  # one row a tick (pruned), not one a point (31 a tick)
    db3.close()


def test_rows_of_the_old_layout_are_read_first_and_pruned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twin.db'}"
    db = TwinDatabase(url)
    with db.engine.begin() as conn:  # what an earlier version wrote: a row per point
        conn.execute(
            insert(_samples),
            [{"series": "net:success", "t": float(t), "value": t / 10} for t in range(1, 6)],
        )
    h = History(cap=8, db=db)
    assert h.get()["net:success"] == [[float(t), t / 10] for t in range(1, 6)]
    for t in range(6, 12):
        h.add("net:success", float(t), t / 10)
        h.flush()
    db.prune(7.0)
    db.close()
    db2 = TwinDatabase(url)
    got = History(cap=8, db=db2).get()["net:success"]
    assert got == [[float(t), t / 10] for t in range(7, 12)]
    with db2.engine.connect() as conn:
        assert conn.execute(select(_samples.c.t)).all() == []
    db2.close()
