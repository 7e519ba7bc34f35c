"""The public API of every package, pinned: a name added, removed or renamed fails here.

``tests/public_api.json`` holds each package's ``__all__``; a change to the API is a change to
that file, made on purpose and reviewed with the code (regenerate it with
``python tests/test_api_snapshot.py --write``). Names are also unique across the packages: two
packages may export the same name only for the same object (a re-export), never for two
different things (``InterceptResend`` once meant both the link engine's attack on photons and
the teleportation scheme's attack on decoy particles).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("public_api.json")
PACKAGES = [
    "qkdtwin",
    "qkdtwin.errors",
    "qkdtwin.extras",
    "qkdtwin.interfaces",
    "qkdtwin.iot",
    "qkdtwin.kms",
    "qkdtwin.network",
    "qkdtwin.network.policies",
    "qkdtwin.ops",
    "qkdtwin.plant",
    "qkdtwin.qkd",
    "qkdtwin.qkd.keyrate",
    "qkdtwin.qkd.postprocess",
    "qkdtwin.qkd.protocols",
    "qkdtwin.teleport",
    "qkdtwin.twin",
    "qkdtwin.twin.ingest",
]


def _exports() -> dict[str, list[str]]:
    return {name: list(importlib.import_module(name).__all__) for name in PACKAGES}


def test_every_package_exports_exactly_the_pinned_names() -> None:
    assert _exports() == json.loads(SNAPSHOT.read_text())


def test_every_exported_name_exists() -> None:
    for pkg, names in _exports().items():
        mod = importlib.import_module(pkg)
        missing = [n for n in names if not hasattr(mod, n)]
        assert missing == [], pkg


def test_a_public_name_means_one_thing() -> None:
    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    for pkg, names in _exports().items():
        mod = importlib.import_module(pkg)
        for n in names:
            obj = getattr(mod, n)
            if n in seen and seen[n][1] is not obj:
                clashes.append(f"{n}: {seen[n][0]} and {pkg}")
            seen.setdefault(n, (pkg, obj))
    assert clashes == []


def test_the_renamed_names_still_work_with_a_warning() -> None:
    import pytest

    import qkdtwin.teleport
    import qkdtwin.twin

    with pytest.warns(DeprecationWarning, match="ParticleInterceptResend"):
        old = qkdtwin.teleport.InterceptResend
    assert old is qkdtwin.teleport.ParticleInterceptResend
    with pytest.warns(DeprecationWarning, match="create_twin_app"):
        assert qkdtwin.twin.create_app is qkdtwin.twin.create_twin_app


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.write_text(json.dumps(_exports(), indent=1) + "\n")
