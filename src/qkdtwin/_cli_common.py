"""Helpers shared by the CLI sub-applications: JSON output and common option types."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

__all__ = ["JsonOpt", "emit_json"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


def emit_json(obj: dict[str, Any]) -> None:
    """Write ``obj`` as one line of strict JSON (no NaN/Infinity) to stdout."""
    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
