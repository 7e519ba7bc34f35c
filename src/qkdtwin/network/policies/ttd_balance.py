"""Our policy: price-aware time-to-depletion balancing (coverage water-filling with prices).

At every service arrival each pool ``p`` with balance ``M_p``, expected key demand ``d_p``
(keys per time unit) and *price* ``w_p`` gets the rate

``v_p = min(d_p, max(0, c d_p / w_p - M_p / H))``

with the largest common level ``c`` the generation budgets allow (bisection; ``A v <= cap``),
raised further by progressive filling for the pools whose budgets are not yet spent. So:

* a pool about to run dry (small ``M_p``) gets rate before one that is full, as in the paper's
  algorithm, but in proportion to its demand (the traffic matrix), as in the demand split;
* a pool never gets more than its demand (more would only overflow a full pool);
* a pool whose keys are dear on the budgets that are short gets a lower target: ``w_p`` is the
  shadow price of one of its keys (:func:`price_weights`). An intra-OLT pool costs its OLT two
  keys per delivered key (two access hops), a cross-OLT pool one key on each OLT; when one OLT's
  budget is over-subscribed (skewed demand) a key spent on its intra pool serves half as many
  services as one spent on a cross pool, so equal coverage would waste the scarce budget.

In the paper's symmetric settings no budget is over-subscribed beyond the stock until small
``C``/``V``, the prices are then nearly equal and the rule reduces to the unpriced one.
The look-ahead ``H`` defaults to ``C / (20 mean d)`` in :func:`~qkdtwin.network.simulate` (a
short horizon reacts to the residues quickly; tuned on the seed network, see
``docs/reproduction.md``).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["price_weights", "ttd_rates"]

#: Exponents of :func:`price_weights`, chosen on the seed network (docs/reproduction.md).
PRICE_ALPHA = 4.0
PRICE_BETA = 4.0


def price_weights(
    capacity: NDArray[np.float64],
    pool_ptr: NDArray[np.int64],
    hop_res: NDArray[np.int64],
    hop_cnt: NDArray[np.float64],
    demand: NDArray[np.float64],
    stock_rate: float = 0.0,
    *,
    alpha: float = PRICE_ALPHA,
    beta: float = PRICE_BETA,
) -> NDArray[np.float64]:
    r"""Price of one delivered key of each pool on the over-subscribed budgets.

    ``w_p = (1 + (sum_r (A[r, p] x_r) ** beta) ** (1 / beta)) ** alpha`` with the excess
    pressure ``x_r = max(0, (A d)_r / (cap_r + s (A 1)_r) - 1)`` of resource ``r``: how far the
    demand routed over it exceeds its budget plus the stock its pools can spend (``s`` keys per
    time unit per pool). ``x_r`` stands in for the LP dual of the budget constraint: zero for a
    resource that is not over-subscribed, so without pressure every price is 1 and the policy is
    the unpriced coverage balance. ``beta`` makes the price follow the most pressed resource of
    the path (``beta -> inf``: the maximum); ``alpha`` sets how strongly a dear pool is held back.

    Parameters
    ----------
    capacity, pool_ptr, hop_res, hop_cnt
        Budgets and the per-pool CSR of the relay-cost matrix ``A``.
    demand
        Expected key demand of each pool, keys per time unit.
    stock_rate
        Spendable stock per pool, keys per time unit (the engine uses ``C / (2 T)`` for a run
        of length ``T``: half the initial fill over the run).
    alpha, beta
        Exponents (``alpha = 0`` turns pricing off).

    Returns
    -------
    numpy.ndarray
        Price ``w_p >= 1`` of each pool.

    Examples
    --------
    One budget of 1 shared by an intra pool (2 hops on it) and a cross pool (1 hop), each
    asking 1 key per time unit: the budget is 3x over-subscribed, the intra pool is dearer.

    >>> w = price_weights(
    ...     np.array([1.0, 10.0]), np.array([0, 1, 3]), np.array([0, 0, 1]),
    ...     np.array([2.0, 1.0, 1.0]), np.array([1.0, 1.0]), alpha=1.0, beta=1.0)
    >>> [float(x) for x in w]
    [5.0, 3.0]
    """
    n = pool_ptr.size - 1
    load = np.zeros(capacity.size)
    hops = np.zeros(capacity.size)
    for p in range(n):
        for k in range(pool_ptr[p], pool_ptr[p + 1]):
            load[hop_res[k]] += hop_cnt[k] * demand[p]
            hops[hop_res[k]] += hop_cnt[k]
    excess = np.maximum(load / (capacity + stock_rate * hops) - 1.0, 0.0)
    norm = np.zeros(n)
    for p in range(n):
        for k in range(pool_ptr[p], pool_ptr[p + 1]):
            norm[p] += (hop_cnt[k] * excess[hop_res[k]]) ** beta
    return np.asarray((1.0 + norm ** (1.0 / beta)) ** alpha, dtype=np.float64)


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
    price: NDArray[np.float64],
    horizon: float,
    frozen: NDArray[np.bool_],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    for p in range(level.size):
        if not frozen[p]:
            x = c * demand[p] / price[p] - level[p] / horizon
            if x > demand[p]:
                x = demand[p]
            out[p] = x if x > 0.0 else 0.0


@njit(cache=True)
def ttd_rates(
    level: NDArray[np.float64],
    demand: NDArray[np.float64],
    price: NDArray[np.float64],
    horizon: float,
    res_cap: NDArray[np.float64],
    pool_ptr: NDArray[np.int64],
    hop_res: NDArray[np.int64],
    hop_cnt: NDArray[np.float64],
    load: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Write the price-aware time-to-depletion rates into ``out`` (``A @ out <= res_cap``).

    Progressive filling: raise the common coverage ``c`` until a budget binds, freeze the pools
    that use a binding budget, and go on raising ``c`` for the others until each gets its demand,
    so that no budget is left idle while a pool with unmet demand could use it.

    Parameters
    ----------
    level
        Key balance of each pool.
    demand
        Expected key demand of each pool, keys per time unit (also the most a pool gets).
    price
        Price ``w_p >= 1`` of each pool (:func:`price_weights`).
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
            c = price[p] * (1.0 + level[p] / (demand[p] * horizon))
            if c > hi0:
                hi0 = c
    frozen = np.zeros(n, dtype=np.bool_)
    for p in range(n):
        out[p] = 0.0
    lo = 0.0
    for _round in range(res_cap.size + 1):
        hi = hi0
        _fill(hi, level, demand, price, horizon, frozen, out)
        # past full coverage keep raising c: spare budget still goes to the pools it can reach
        grow = 0
        while _feasible(out, res_cap, pool_ptr, hop_res, hop_cnt, load) >= 1.0 and grow < 60:
            lo = hi
            hi *= 2.0
            grow += 1
            _fill(hi, level, demand, price, horizon, frozen, out)
        if grow == 60:
            return
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            _fill(mid, level, demand, price, horizon, frozen, out)
            if _feasible(out, res_cap, pool_ptr, hop_res, hop_cnt, load) >= 1.0:
                lo = mid
            else:
                hi = mid
        _fill(lo, level, demand, price, horizon, frozen, out)
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
