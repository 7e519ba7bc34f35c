"""Helpers shared by the CLI sub-applications: JSON output and common option types."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated, Any

import typer

__all__ = ["JsonOpt", "emit_json"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by ``None``: strict JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def emit_json(obj: dict[str, Any]) -> None:
    """Write ``obj`` as one line of strict JSON to stdout.

    Non-finite numbers (the PLOB bound at zero distance is infinite) are written as ``null``.
    """
    sys.stdout.write(json.dumps(_finite(obj), allow_nan=False) + "\n")
