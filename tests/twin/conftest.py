from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from qkdtwin.twin import Twin, default_scenario_path


def seed_dict(**twin: Any) -> dict[str, Any]:
    data = yaml.safe_load(default_scenario_path().read_text())
    data["twin"] = {**data.get("twin", {}), **twin}
    return data


@pytest.fixture
def make_twin(tmp_path: Path) -> Iterator[Callable[..., Twin]]:
    made: list[Twin] = []

    def make(data: dict[str, Any] | None = None, sub: str = "d", **kw: Any) -> Twin:
        kw.setdefault("telemetry", False)
        t = Twin(data if data is not None else seed_dict(), data_dir=tmp_path / sub, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


PG_URL = os.environ.get("QKDTWIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards; the URL pins search_path to it."""
    schema = f"twin_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
