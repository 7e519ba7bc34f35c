"""The live twin's HTTP API pinned: its OpenAPI document equals tests/twin/openapi_twin.json.

A route, a field or a description changed on purpose is a change to that file, reviewed with
the code (regenerate: ``python -m tests.twin.test_openapi_snapshot --write``); one changed by
accident (a refactor, a type annotation FastAPI reads) fails here. The typed results of issue
19 were checked against the document from before them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from qkdtwin.twin import Twin, create_twin_app

from .conftest import seed_dict

SNAPSHOT = Path(__file__).with_name("openapi_twin.json")


def _document(data_dir: Path) -> dict[str, object]:
    twin = Twin(seed_dict(), data_dir=data_dir, telemetry=False)
    try:
        return create_twin_app(twin, run=False).openapi()
    finally:
        twin.close()


def test_the_twin_api_document_is_the_pinned_one(tmp_path: Path) -> None:
    assert _document(tmp_path) == json.loads(SNAPSHOT.read_text())


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    with tempfile.TemporaryDirectory() as d:
        SNAPSHOT.write_text(json.dumps(_document(Path(d)), indent=1, sort_keys=True) + "\n")
