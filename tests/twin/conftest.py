from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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
