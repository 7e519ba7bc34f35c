"""Helpers shared by the CLI sub-applications: JSON output, HTTP calls, common option types."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

__all__ = ["JsonOpt", "check_fraction", "emit_json", "request_json"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


def _hide_flag_types() -> None:
    """Show no type for on/off flags in ``--help`` (typer 0.29 prints ``<bool>`` for them).

    A flag takes no value, so a type column entry only adds noise to every help screen. The
    type of options that take a value is left as typer shows it.
    """
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by ``None``: strict JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def check_fraction(fraction: float) -> None:
    """Refuse an attack ``--fraction`` outside [0, 1] before any service is called.

    Raises
    ------
    ConfigError
        With ``field="fraction"``.
    """
    if not (0.0 <= fraction <= 1.0):
        from qkdtwin.errors import ConfigError

        raise ConfigError(f"fraction must be in [0, 1], got {fraction}", field="fraction")


def emit_json(obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as one line of strict JSON to stdout.

    Non-finite numbers (the PLOB bound at zero distance is infinite) are written as ``null``.
    """
    sys.stdout.write(json.dumps(_finite(obj), allow_nan=False) + "\n")


def request_json(method: str, url: str, body: dict[str, Any] | None = None, *, what: str) -> Any:
    """Call a qkdtwin HTTP service and return its JSON answer.

    Parameters
    ----------
    what
        The service, for messages (``"the twin"``, ``"the plant"``).

    Raises
    ------
    ConfigError
        If the service cannot be reached, or answers 4xx/5xx: the message is the service's
        own (``field`` names the offending field when the service says which).
    """
    import httpx

    from qkdtwin.errors import ConfigError

    try:
        r = httpx.request(method, url, json=body, timeout=120.0)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {what} at {url}: {exc}", field="url") from None
    if r.status_code >= 400:
        try:
            d = r.json()
        except ValueError:
            raise ConfigError(f"HTTP {r.status_code} from {url}", field="url") from None
        if "detail" in d and isinstance(d["detail"], list):
            e = d["detail"][0]
            loc = ".".join(str(x) for x in e.get("loc", [])[1:])
            raise ConfigError(f"{loc}: {e.get('msg')}", field=loc)
        raise ConfigError(str(d.get("message", d)), field=d.get("field"))
    return r.json()
