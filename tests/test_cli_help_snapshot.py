"""Every ``--help`` page of the CLI, pinned: an option renamed, dropped or re-worded fails here.

``tests/cli_help.json`` holds the page of every group and command at 100 columns. A change to
the CLI's surface is a change to that file, made on purpose and reviewed with the code
(regenerate: ``python tests/test_cli_help_snapshot.py --write``). The moves of issue 19 (the
``cli/`` package, option groups declared once, lazy loading) were checked against it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_help.json")
WIDTH = "100"


def _paths() -> list[tuple[str, ...]]:
    """Every command path of the CLI tree (groups and leaf commands), root first."""
    import typer

    from qkdtwin.cli import app

    root = typer.main.get_command(app)
    out: list[tuple[str, ...]] = []

    def walk(cmd: object, path: tuple[str, ...]) -> None:  # typer vendors click: duck-typed
        out.append(path)
        if hasattr(cmd, "list_commands"):
            ctx = cmd.make_context(  # type: ignore[attr-defined]
                path[-1] if path else "qkdtwin", ["--help"], resilient_parsing=True
            )
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not getattr(sub, "hidden", False):
                    walk(sub, (*path, name))

    walk(root, ())
    return out


def _pages() -> dict[str, str]:
    from qkdtwin.cli import main

    pages: dict[str, str] = {}
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        for path in _paths():
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = main([*path, "--help"])
            assert code == 0, path
            pages[" ".join(("qkdtwin", *path))] = buf.getvalue()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return pages


def test_every_help_page_is_the_pinned_one() -> None:
    want = json.loads(SNAPSHOT.read_text())
    got = _pages()
    assert sorted(got) == sorted(want)  # the same commands
    changed = [name for name in want if got[name] != want[name]]
    assert changed == []


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.write_text(json.dumps(_pages(), indent=1, sort_keys=True) + "\n")
