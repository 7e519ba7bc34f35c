"""Exact, vectorised sampling helpers for sparse events.

Detector clicks at long distance are rare (one pulse in 10^4..10^7), so the engine draws the
few events that happen instead of testing every pulse where that is equivalent in law.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["bernoulli_positions", "categorical", "random_bits"]


def bernoulli_positions(rng: np.random.Generator, n: int, p: float) -> NDArray[np.int64]:
    """Return the indices of the successes among ``n`` Bernoulli(p) trials, in order.

    Draws geometric gaps between successes, which has exactly the law of testing every trial
    but costs O(n p) instead of O(n).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> pos = bernoulli_positions(rng, 10**6, 1e-3)
    >>> 800 < pos.size < 1200 and bool(np.all(np.diff(pos) > 0))
    True
    """
    if n <= 0 or p <= 0.0:
        return np.empty(0, dtype=np.int64)
    if p >= 1.0:
        return np.arange(n, dtype=np.int64)
    out: list[NDArray[np.int64]] = []
    start = -1
    while True:
        expect = (n - start) * p
        batch = int(expect + 6.0 * np.sqrt(expect + 1.0) + 16)
        pos = start + np.cumsum(rng.geometric(p, size=batch))
        keep = pos[pos < n]
        out.append(keep)
        if keep.size < pos.size:
            break
        start = int(pos[-1])
    return np.concatenate(out).astype(np.int64, copy=False)


def categorical(u: NDArray[np.float64], cumulative: NDArray[np.float64]) -> NDArray[np.intp]:
    """Map uniforms ``u`` to category indices, row-wise.

    Parameters
    ----------
    u
        Uniform draws on [0, 1), shape ``(m,)``.
    cumulative
        Cumulative probabilities, shape ``(m, c)``; the last column should be 1. Each row is the
        distribution of the matching draw.

    Returns
    -------
    numpy.ndarray
        Index of the first column whose cumulative probability exceeds ``u``.
    """
    idx = (u[:, np.newaxis] >= cumulative).sum(axis=1)
    first: NDArray[np.intp] = np.minimum(idx, cumulative.shape[1] - 1)
    return first


def random_bits(rng: np.random.Generator, n: int) -> NDArray[np.uint8]:
    """``n`` random bytes: eight fair, independent bits per pulse, one byte each."""
    return rng.integers(0, 256, size=n, dtype=np.uint8)
