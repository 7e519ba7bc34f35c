"""Small argument checks that raise :class:`~qkdtwin.errors.ConfigError` naming the field."""

from __future__ import annotations

import math

from qkdtwin.errors import ConfigError


def finite(field: str, value: float) -> float:
    """Return ``value`` as float, or raise if it is not a finite real number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{field} must be a number, got {value!r}", field=field, value=value, allowed="real"
        ) from None
    if not math.isfinite(x):
        raise ConfigError(
            f"{field} must be finite, got {value!r}", field=field, value=value, allowed="finite"
        )
    return x


def in_range(
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check ``low <(=) value <(=) high`` and return ``value`` as float.

    The error message spells the interval the way a physicist writes it, e.g. ``(0, 1]``.
    """
    x = finite(field, value)
    lo_ok = low is None or (x > low if low_open else x >= low)
    hi_ok = high is None or (x < high if high_open else x <= high)
    if lo_ok and hi_ok:
        return x
    allowed = interval_text(low, high, low_open=low_open, high_open=high_open)
    raise ConfigError(
        f"{field} must be in {allowed}, got {value!r}", field=field, value=value, allowed=allowed
    )


def interval_text(
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> str:
    """Spell an interval the way a physicist writes it: ``(0, 1]``, ``>= 0``, ``< 1``.

    At least one bound must be given.
    """
    if low is not None and high is not None:
        return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    assert high is not None
    return f"{'<' if high_open else '<='} {high:g}"


def probability(field: str, value: float) -> float:
    """Check that ``value`` is a probability in [0, 1]."""
    return in_range(field, value, 0.0, 1.0)
