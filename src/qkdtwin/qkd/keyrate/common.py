r"""Helpers shared by the key-rate formulas: argument checks and the binary entropy.

* :func:`_arr` and :func:`_out` turn scalar or array arguments into checked float64 arrays
  and back (a Python float when every input was a scalar), so that every formula of the
  :mod:`qkdtwin.qkd.keyrate` package is vectorised in the same way;
* :func:`_miss_hit` gives :math:`(1-\eta)^n` and :math:`1-(1-\eta)^n` accurately for tiny
  :math:`\eta`;
* :func:`_h2` and :func:`binary_entropy` give the binary Shannon entropy in bits.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import xlogy

from qkdtwin._validate import interval_text
from qkdtwin.errors import ConfigError

__all__ = [
    "FloatOrArray",
    "binary_entropy",
]


#: A float for scalar input, an array of float64 when any input is an array.
FloatOrArray = float | NDArray[np.float64]

_LN2 = math.log(2.0)


def _arr(
    field: str,
    value: ArrayLike,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> NDArray[np.float64]:
    """``value`` as a float64 array, every element finite and inside the interval, else raise."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{field} must be a number or an array of numbers, got {value!r}",
            field=field,
            value=value,
            allowed="real",
        ) from None
    if not np.all(np.isfinite(a)):
        raise ConfigError(
            f"{field} must be finite, got {value!r}", field=field, value=value, allowed="finite"
        )
    lo_bad = low is not None and bool(np.any(a <= low if low_open else a < low))
    hi_bad = high is not None and bool(np.any(a >= high if high_open else a > high))
    if lo_bad or hi_bad:
        allowed = interval_text(low, high, low_open=low_open, high_open=high_open)
        raise ConfigError(
            f"{field} must be in {allowed}, got {value!r}",
            field=field,
            value=value,
            allowed=allowed,
        )
    return a


def _out(x: NDArray[np.float64], *inputs: ArrayLike) -> FloatOrArray:
    """Return a Python float when every input was a scalar, else the array."""
    if all(np.ndim(i) == 0 for i in inputs):
        return float(x)
    return np.asarray(x, dtype=np.float64)


def _miss_hit(
    n: NDArray[np.float64], eta: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(1 - eta)^n`` and ``1 - (1 - eta)^n``, the latter accurate for tiny ``eta``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = np.where(n == 0, 0.0, -np.expm1(n * np.log1p(-eta)))
    return 1.0 - hit, np.asarray(hit, dtype=np.float64)


def _h2(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Binary entropy without argument checks (``xlogy`` makes ``0 log 0 = 0``)."""
    # "+ 0.0" turns the -0.0 of h2(0) and h2(1) into 0.0
    return np.asarray(-(xlogy(p, p) + xlogy(1.0 - p, 1.0 - p)) / _LN2 + 0.0, dtype=np.float64)


def binary_entropy(p: ArrayLike) -> FloatOrArray:
    r"""Binary Shannon entropy :math:`h_2(p)` in bits.

    Parameters
    ----------
    p
        Probability, or array of probabilities, in [0, 1].

    Returns
    -------
    float or ndarray
        :math:`h_2(p) = -p \log_2 p - (1-p) \log_2 (1-p)`, with :math:`h_2(0) = h_2(1) = 0`.

    Raises
    ------
    ConfigError
        If any ``p`` is outside [0, 1] or not finite.

    Examples
    --------
    >>> binary_entropy(0.5)
    1.0
    >>> binary_entropy(0.0)
    0.0
    >>> round(binary_entropy(0.11), 4)
    0.4999

    Notes
    -----
    Symmetric, :math:`h_2(p) = h_2(1 - p)`, concave, maximal (1 bit) at 1/2.
    """
    a = _arr("p", p, 0.0, 1.0)
    return _out(_h2(a), p)
