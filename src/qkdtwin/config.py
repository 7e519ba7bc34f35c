"""Parsing of the values users type: ranges, counts and number lists.

Ranges are written ``START:STOP[:STEP]`` and include ``STOP`` when the step lands on it
(``0:150:10`` has 16 points, ``1:10`` has 10). A single number is a one-point range.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError, RangeSyntaxError

__all__ = ["parse_count", "parse_float_list", "parse_range"]

_MAX_RANGE_POINTS = 1_000_000


def _number(text: str, what: str, spec: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise RangeSyntaxError(
            f"malformed range {spec!r}: {what} {text!r} is not a number",
            field="range",
            value=spec,
            allowed="START:STOP[:STEP]",
        ) from None
    if not math.isfinite(x):
        raise RangeSyntaxError(
            f"malformed range {spec!r}: {what} must be finite",
            field="range",
            value=spec,
            allowed="START:STOP[:STEP]",
        )
    return x


def parse_range(spec: str, *, field: str = "range") -> NDArray[np.float64]:
    """Parse ``START:STOP[:STEP]`` (inclusive) or a single number into an array.

    Parameters
    ----------
    spec
        The text, e.g. ``"0:150:10"``.
    field
        Name used in error messages (``"distance_km"``).

    Raises
    ------
    RangeSyntaxError
        If the text is malformed, the step is not positive, STOP < START, or the range has
        more than a million points.

    Examples
    --------
    >>> parse_range("0:150:10").size
    16
    >>> parse_range("1:10").tolist()[-1]
    10.0
    >>> parse_range("25").tolist()
    [25.0]
    """
    parts = spec.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(p.strip() == "" for p in parts):
        raise RangeSyntaxError(
            f"malformed {field} range {spec!r}: expected START:STOP[:STEP] or a number",
            field=field,
            value=spec,
            allowed="START:STOP[:STEP]",
        )
    if len(parts) == 1:
        return np.array([_number(parts[0], "value", spec)])
    start = _number(parts[0], "START", spec)
    stop = _number(parts[1], "STOP", spec)
    step = _number(parts[2], "STEP", spec) if len(parts) == 3 else 1.0
    if step <= 0:
        raise RangeSyntaxError(
            f"malformed {field} range {spec!r}: STEP must be > 0",
            field=field,
            value=spec,
            allowed="STEP > 0",
        )
    if stop < start:
        raise RangeSyntaxError(
            f"malformed {field} range {spec!r}: STOP must be >= START",
            field=field,
            value=spec,
            allowed="STOP >= START",
        )
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > _MAX_RANGE_POINTS:
        raise RangeSyntaxError(
            f"{field} range {spec!r} has {count} points (max 1000000)", field=field, value=spec
        )
    return start + step * np.arange(count, dtype=np.float64)


def parse_count(text: str | int, *, field: str = "pulses") -> int:
    """Parse a positive integer count, accepting ``1000000``, ``1e6`` or ``1_000_000``.

    Raises
    ------
    ConfigError
        If the text is not a whole number >= 1.

    Examples
    --------
    >>> parse_count("1e9")
    1000000000
    """
    s = str(text).strip().replace("_", "")
    try:
        value = int(s)
    except ValueError:
        try:
            x = float(s)
        except ValueError:
            x = math.nan  # not a number: refused as not whole below
        if not math.isfinite(x) or x != math.floor(x):
            raise ConfigError(
                f"{field} must be a whole number >= 1, got {text!r}",
                field=field,
                value=text,
                allowed=">= 1",
            ) from None
        value = int(x)
    if value < 1:
        raise ConfigError(
            f"{field} must be >= 1, got {text!r}", field=field, value=text, allowed=">= 1"
        )
    return value


def parse_float_list(text: str, *, field: str) -> tuple[float, ...]:
    """Parse a comma-separated list of numbers (``"0.1,0"``).

    Raises
    ------
    ConfigError
        If an item is not a finite number.
    """
    items = [t.strip() for t in text.split(",") if t.strip() != ""]
    out = []
    for t in items:
        try:
            x = float(t)
        except ValueError:
            raise ConfigError(
                f"{field} must be comma-separated numbers, got {text!r}", field=field, value=text
            ) from None
        if not math.isfinite(x):
            raise ConfigError(
                f"{field} values must be finite, got {text!r}", field=field, value=text
            )
        out.append(x)
    return tuple(out)


def read_yaml_mapping(
    source: str | Path | dict[str, Any], *, what: str = "scenario"
) -> dict[str, Any]:
    """Return the mapping in a YAML file (a copy of ``source`` if it is already a dict).

    Raises
    ------
    ConfigError
        If the file cannot be read, is not YAML, or does not hold a mapping; ``field`` is
        ``what`` and the message names the file.
    """
    import yaml

    if isinstance(source, dict):
        return dict(source)
    label = str(Path(source))
    try:
        data = yaml.safe_load(Path(source).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {label!r}: {exc.strerror}", field=what) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{what} {label!r} is not valid YAML: {str(exc).splitlines()[0]}", field=what
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} must be a YAML mapping", field=what)
    return data
