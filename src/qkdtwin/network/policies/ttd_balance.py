"""Our policy: balance expected time-to-depletion (coverage water-filling).

At every service arrival each pool ``p`` with balance ``M_p`` and expected key demand ``d_p``
(keys per time unit) should cover the same fraction ``c`` of its demand over a look-ahead
horizon ``H``: ``(M_p + v_p H) / (d_p H) = c``, i.e. ``v_p = max(0, c d_p - M_p / H)``. The
policy takes the largest ``c`` the generation budgets allow (bisection; ``A v <= cap``), so a
pool about to run dry gets rate before one that is full, and no rate is spent on pools that
would only overflow. Spare budget keeps going to the pools it can reach, in the same
proportions, so no budget idles while a pool with demand could use it. With ``H = C / d`` (the
time a full pool lasts) the rule reads ``v_p = d_p max(0, c - M_p / C_p)``: rates proportional
to demand times missing fill, so it uses the traffic matrix (like the demand-proportional split)
and the residues (like the paper's algorithm) together.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["ttd_rates"]


@njit(cache=True)
def _feasible(
    v: NDArray[np.float64],
    res_cap: NDArray[np.float64],
    pool_ptr: NDArray[np.int64],
    hop_res: NDArray[np.int64],
    hop_cnt: NDArray[np.float64],
    load: NDArray[np.float64],
) -> float:  # pragma: no cover - compiled
    """Return ``min_r cap_r / (A v)_r`` (``inf`` when nothing is used)."""
    load[:] = 0.0
    for p in range(v.size):
        if v[p] > 0.0:
            for k in range(pool_ptr[p], pool_ptr[p + 1]):
                load[hop_res[k]] += hop_cnt[k] * v[p]
    s = np.inf
    for r in range(res_cap.size):
        if load[r] > 0.0:
            q = res_cap[r] / load[r]
            if q < s:
                s = q
    return s


@njit(cache=True)
def _fill(
    c: float,
    level: NDArray[np.float64],
    demand: NDArray[np.float64],
    horizon: float,
    frozen: NDArray[np.bool_],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    for p in range(level.size):
        if not frozen[p]:
            x = c * demand[p] - level[p] / horizon
            out[p] = x if x > 0.0 else 0.0


@njit(cache=True)
def ttd_rates(
    level: NDArray[np.float64],
    demand: NDArray[np.float64],
    horizon: float,
    res_cap: NDArray[np.float64],
    pool_ptr: NDArray[np.int64],
    hop_res: NDArray[np.int64],
    hop_cnt: NDArray[np.float64],
    load: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Write the time-to-depletion balancing rates into ``out`` (``A @ out <= res_cap``).

    Progressive filling: raise the common coverage ``c`` until a budget binds, freeze the pools
    that use a binding budget, and go on raising ``c`` for the others (past full coverage if
    need be), so that no budget is left idle while a pool with demand could use it.

    Parameters
    ----------
    level
        Key balance of each pool.
    demand
        Expected key demand of each pool, keys per time unit.
    horizon
        Look-ahead ``H``, time units.
    res_cap, pool_ptr, hop_res, hop_cnt
        Budgets and the per-pool CSR of the relay-cost matrix.
    load
        Work array, one entry per resource.
    out
        Rates, written in place.
    """
    n = level.size
    hi0 = 1.0
    for p in range(n):
        if demand[p] > 0.0:
            c = 1.0 + level[p] / (demand[p] * horizon)
            if c > hi0:
                hi0 = c
    frozen = np.zeros(n, dtype=np.bool_)
    for p in range(n):
        out[p] = 0.0
    lo = 0.0
    for _round in range(res_cap.size + 1):
        hi = hi0
        _fill(hi, level, demand, horizon, frozen, out)
        # past full coverage keep raising c: spare budget still goes to the pools it can reach
        grow = 0
        while _feasible(out, res_cap, pool_ptr, hop_res, hop_cnt, load) >= 1.0 and grow < 60:
            lo = hi
            hi *= 2.0
            grow += 1
            _fill(hi, level, demand, horizon, frozen, out)
        if grow == 60:
            return
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            _fill(mid, level, demand, horizon, frozen, out)
            if _feasible(out, res_cap, pool_ptr, hop_res, hop_cnt, load) >= 1.0:
                lo = mid
            else:
                hi = mid
        _fill(lo, level, demand, horizon, frozen, out)
        _feasible(out, res_cap, pool_ptr, hop_res, hop_cnt, load)
        changed = False
        for p in range(n):
            if frozen[p]:
                continue
            for k in range(pool_ptr[p], pool_ptr[p + 1]):
                r = hop_res[k]
                if load[r] >= res_cap[r] * (1.0 - 1e-6):
                    frozen[p] = True
                    changed = True
                    break
        if not changed:
            return
        done = True
        for p in range(n):
            if not frozen[p]:
                done = False
                break
        if done:
            return
