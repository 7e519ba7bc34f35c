"""Layering: lower layers never import upper ones; the twin never imports the plant."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "qkdtwin"

# package -> packages it must never import
FORBIDDEN = {
    "qkd": ("network", "kms", "iot", "twin", "plant", "interfaces"),
    "network": ("kms", "iot", "twin", "plant"),
    "kms": ("network", "iot", "twin", "plant"),
    "iot": ("network", "twin", "plant"),
    "interfaces": ("qkd", "network", "kms", "iot", "twin", "plant"),
    "plant": ("twin",),
    "twin": ("plant",),  # the twin sees the plant only through its standard interfaces
}


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upper_layers(package):
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        for mod in imported_modules(path):
            parts = mod.split(".")
            if parts[0] == "qkdtwin" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not bad, bad


def test_the_checker_sees_a_forbidden_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from qkdtwin.plant.scenario import resolve_link\n")
    assert "qkdtwin.plant.scenario" in imported_modules(f)
