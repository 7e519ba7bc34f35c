"""``ttd-balance`` with its bisection evaluated per *class* of pools: the same events, faster.

The reference (:func:`~qkdtwin.network.policies.ttd_rates`, called at every arrival by the
per-pool loop) finds the coverage level ``c`` by bisection: ~60 trial values per re-plan, and
each trial fills the rate ``v_p = min(d_p, max(0, c d_p / w_p - M_p / H))`` of every pool and
sums the load on every resource, O(pools + nonzeros of A) per trial.

Pools with the same row of the relay-cost matrix, the same key demand ``d`` and the same
price ``w`` form a *class* (under a hub demand: the gateways of one OLT). Within a class
``v_p`` depends on the balance alone, piecewise linearly: ``d`` below ``H (c d / w - d)``,
``c d / w - M / H`` up to ``H c d / w``, then 0. So with the class's balances sorted and their
running sums, the class's total rate at a trial ``c`` is two binary searches and a difference
of sums, O(log n_k), and a trial costs O(classes log n + class-resource incidences). The
balances still move at every arrival (each pool by its own rate), which is O(pools) per
arrival, done once rather than once per trial; the refill map ``M -> min(C, M + v(M) dt)`` is
non-decreasing in ``M`` when ``dt <= H``, so the sorted order survives it (a class is re-sorted
when it does not), and a served pool moves down its class's order by insertion.

The bisection, the progressive filling rounds, the freezing rule and the refill are the
reference's, step for step; only the sums are formed per class, so results agree with the
reference to rounding (tests compare the two event by event).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qkdtwin.network.policies.akr_classes import gather_rows, unique_rows
from qkdtwin.network.pools import PoolAccounts, serve

__all__ = ["TtdClasses", "run_ttd_by_class", "ttd_classes"]


class TtdClasses(NamedTuple):
    """Pools grouped by (row of the cost matrix, key demand, price).

    Attributes
    ----------
    pool_class
        Class of each pool.
    start
        First slot of each class in the class-sorted layout (``start[-1]`` = pools).
    cls_ptr, cls_res, cls_cnt
        The resources of class ``k`` and their costs, CSR.
    demand, price
        The class's key demand ``d`` (keys per time unit) and price ``w``.
    """

    pool_class: NDArray[np.int64]
    start: NDArray[np.int64]
    cls_ptr: NDArray[np.int64]
    cls_res: NDArray[np.int64]
    cls_cnt: NDArray[np.float64]
    demand: NDArray[np.float64]
    price: NDArray[np.float64]


def ttd_classes(
    pool_ptr: NDArray[np.int64],
    hop_res: NDArray[np.int64],
    hop_cnt: NDArray[np.float64],
    demand: NDArray[np.float64],
    price: NDArray[np.float64],
) -> TtdClasses:
    """Group pools with equal cost rows, demands and prices (vectorised).

    Examples
    --------
    >>> c = ttd_classes(np.array([0, 1, 2, 3]), np.array([0, 0, 0]), np.ones(3),
    ...                 np.array([1.0, 1.0, 2.0]), np.ones(3))
    >>> c.pool_class.tolist(), c.start.tolist(), c.demand.tolist()
    ([0, 0, 1], [0, 2, 3], [1.0, 2.0])
    """
    extra = np.column_stack((demand, price)).astype(np.float64)
    pool_class, reps = unique_rows(pool_ptr, hop_res, hop_cnt, extra)
    n_cls = reps.size
    size = np.bincount(pool_class, minlength=n_cls)
    start = np.concatenate(([0], np.cumsum(size))).astype(np.int64)
    cls_ptr, take = gather_rows(pool_ptr, reps)
    return TtdClasses(
        pool_class,
        start,
        cls_ptr,
        np.ascontiguousarray(hop_res[take], dtype=np.int64),
        np.ascontiguousarray(hop_cnt[take], dtype=np.float64),
        np.ascontiguousarray(demand[reps], dtype=np.float64),
        np.ascontiguousarray(price[reps], dtype=np.float64),
    )


@njit(cache=True, inline="always")
def _bisect(bal: NDArray[np.float64], a: int, b: int, x: float, right: bool) -> int:
    """Slots of ``bal[a:b]`` (sorted) below ``x`` (``right``: at or below), as an offset."""
    lo, hi = a, b
    while lo < hi:
        mid = (lo + hi) >> 1
        if bal[mid] < x or (right and bal[mid] == x):
            lo = mid + 1
        else:
            hi = mid
    return lo - a


@njit(cache=True)
def _class_rate(
    c: float,
    d: float,
    w: float,
    horizon: float,
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    a: int,
    b: int,
) -> float:  # pragma: no cover - compiled
    """Sum ``min(d, max(0, c d/w - M/H))`` over the class's slots ``a..b-1`` (sorted)."""
    if b <= a:
        return 0.0
    target = c * d / w
    # v = d where target - M/H >= d, i.e. M <= H (target - d); v = 0 where M >= H target
    sat = _bisect(bal, a, b, horizon * (target - d), True)
    zero = _bisect(bal, a, b, horizon * target, False)
    if zero < sat:
        zero = sat
    total = d * sat
    if zero > sat:
        lin_sum = run[a + zero - 1] - (run[a + sat - 1] if sat > 0 else 0.0)
        total += (zero - sat) * target - lin_sum / horizon
    return total


@njit(cache=True)
def _fill_classes(
    c: float,
    classes: TtdClasses,
    horizon: float,
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    frozen: NDArray[np.bool_],
    c_of: NDArray[np.float64],
    rate: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    for k in range(c_of.size):
        if not frozen[k]:
            c_of[k] = c
            rate[k] = _class_rate(
                c,
                classes.demand[k],
                classes.price[k],
                horizon,
                bal,
                run,
                classes.start[k],
                classes.start[k + 1],
            )


@njit(cache=True)
def _feasible_classes(
    classes: TtdClasses,
    rate: NDArray[np.float64],
    res_cap: NDArray[np.float64],
    load: NDArray[np.float64],
) -> float:  # pragma: no cover - compiled
    """Return ``min_r cap_r / (A v)_r`` (``inf`` when nothing is used), from class totals."""
    load[:] = 0.0
    for k in range(rate.size):
        if rate[k] > 0.0:
            for j in range(classes.cls_ptr[k], classes.cls_ptr[k + 1]):
                load[classes.cls_res[j]] += classes.cls_cnt[j] * rate[k]
    s = np.inf
    for r in range(res_cap.size):
        if load[r] > 0.0:
            q = res_cap[r] / load[r]
            if q < s:
                s = q
    return s


@njit(cache=True)
def _plan(
    classes: TtdClasses,
    horizon: float,
    res_cap: NDArray[np.float64],
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    frozen: NDArray[np.bool_],
    c_of: NDArray[np.float64],
    rate: NDArray[np.float64],
    load: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Run the reference's progressive filling; each class's level ``c`` goes to ``c_of``."""
    n_cls = c_of.size
    hi0 = 1.0
    for k in range(n_cls):
        a, b = classes.start[k], classes.start[k + 1]
        if b > a and classes.demand[k] > 0.0:
            # the largest balance of the class gives its largest c (the formula is monotone)
            c = classes.price[k] * (1.0 + bal[b - 1] / (classes.demand[k] * horizon))
            if c > hi0:
                hi0 = c
    for k in range(n_cls):
        frozen[k] = False
        c_of[k] = 0.0
        rate[k] = 0.0
    lo = 0.0
    for _round in range(res_cap.size + 1):
        hi = hi0
        _fill_classes(hi, classes, horizon, bal, run, frozen, c_of, rate)
        grow = 0
        while _feasible_classes(classes, rate, res_cap, load) >= 1.0 and grow < 60:
            lo = hi
            hi *= 2.0
            grow += 1
            _fill_classes(hi, classes, horizon, bal, run, frozen, c_of, rate)
        if grow == 60:
            return
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            _fill_classes(mid, classes, horizon, bal, run, frozen, c_of, rate)
            if _feasible_classes(classes, rate, res_cap, load) >= 1.0:
                lo = mid
            else:
                hi = mid
        _fill_classes(lo, classes, horizon, bal, run, frozen, c_of, rate)
        _feasible_classes(classes, rate, res_cap, load)
        changed = False
        for k in range(n_cls):
            if frozen[k]:
                continue
            for j in range(classes.cls_ptr[k], classes.cls_ptr[k + 1]):
                r = classes.cls_res[j]
                if load[r] >= res_cap[r] * (1.0 - 1e-6):
                    frozen[k] = True
                    changed = True
                    break
        if not changed:
            return
        done = True
        for k in range(n_cls):
            if not frozen[k]:
                done = False
                break
        if done:
            return


@njit(cache=True)
def _sort_class(
    a: int,
    b: int,
    bal: NDArray[np.float64],
    pool_at: NDArray[np.int64],
    slot_of: NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    order = np.argsort(bal[a:b], kind="mergesort")
    vals = bal[a:b][order]
    pools = pool_at[a:b][order]
    for i in range(b - a):
        bal[a + i] = vals[i]
        pool_at[a + i] = pools[i]
        slot_of[pools[i]] = a + i


# nogil: a Dask worker running a long replication keeps answering its heartbeats
@njit(cache=True, nogil=True)
def run_ttd_by_class(
    times: NDArray[np.float64],
    req_pool: NDArray[np.int64],
    keys: float,
    t_end: float,
    capacity: float,
    level: NDArray[np.float64],
    classes: TtdClasses,
    res_cap: NDArray[np.float64],
    horizon: float,
    acc: PoolAccounts,
) -> None:  # pragma: no cover - compiled
    """Run the arrivals under ``ttd-balance`` with fluid generation, planning by class.

    Same contract as the engine's per-pool loop for policy code 3 (``level`` in: initial
    balances, out: final ones; counters added to); ``capacity`` is the pools' common ``C``.
    """
    n_pools = level.size
    n_cls = classes.start.size - 1
    start = classes.start
    # class-sorted layout: slot -> pool and balance; pool -> slot
    pool_at = np.argsort(classes.pool_class, kind="mergesort").astype(np.int64)
    slot_of = np.empty(n_pools, dtype=np.int64)
    bal = np.empty(n_pools)
    for i in range(n_pools):
        slot_of[pool_at[i]] = i
        bal[i] = level[pool_at[i]]
    for k in range(n_cls):
        _sort_class(start[k], start[k + 1], bal, pool_at, slot_of)
    run = np.empty(n_pools)  # running sum of the balances within each class
    frozen = np.zeros(n_cls, dtype=np.bool_)
    c_of = np.zeros(n_cls)
    rate = np.zeros(n_cls)
    load = np.zeros(res_cap.size)
    t_prev = 0.0
    n_events = times.size
    for i in range(n_events + 1):
        t = times[i] if i < n_events else t_end
        # ---- plan from the balances after the previous event -------------------------------
        for k in range(n_cls):
            total = 0.0
            for q in range(start[k], start[k + 1]):
                total += bal[q]
                run[q] = total
        _plan(classes, horizon, res_cap, bal, run, frozen, c_of, rate, load)
        # ---- refill every pool to t at its planned rate -----------------------------------
        dt = t - t_prev
        if dt > 0.0:
            for k in range(n_cls):
                c = c_of[k]
                d = classes.demand[k]
                w = classes.price[k]
                ordered = True
                for q in range(start[k], start[k + 1]):
                    x = c * d / w - bal[q] / horizon
                    if x > d:
                        x = d
                    v = x if x > 0.0 else 0.0
                    if v > 0.0:
                        g = v * dt
                        p = pool_at[q]
                        acc.generated[p] += g
                        y = bal[q] + g
                        if y > capacity:
                            acc.dropped[p] += y - capacity
                            y = capacity
                        bal[q] = y
                    if q > start[k] and bal[q] < bal[q - 1]:
                        ordered = False
                if not ordered:  # dt > H can reverse the order of the linear range
                    _sort_class(start[k], start[k + 1], bal, pool_at, slot_of)
            t_prev = t
        if i == n_events:
            break
        # ---- serve the request --------------------------------------------------------------
        p = req_pool[i]
        q = slot_of[p]
        lv, served = serve(acc, i, p, bal[q], keys)
        if served:
            # move the pool down its class's order
            a = start[classes.pool_class[p]]
            while q > a and bal[q - 1] > lv:
                bal[q] = bal[q - 1]
                pool_at[q] = pool_at[q - 1]
                slot_of[pool_at[q]] = q
                q -= 1
            bal[q] = lv
            pool_at[q] = p
            slot_of[p] = q
    for q in range(n_pools):
        level[pool_at[q]] = bal[q]
