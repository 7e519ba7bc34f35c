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
of sums, O(log n_k), and a trial costs O(classes log n + class-resource incidences).

Nor are ~60 trials made: each resource's load is piecewise linear and non-decreasing in ``c``
(breakpoints where a pool's rate leaves 0 or reaches ``d``), so a probe also returns the line
and the piece around its ``c``, and the round's largest feasible level ``c*`` is read off a
line that meets the budget inside its piece, found by a few Newton steps (:func:`_probe`).
The reference's trial levels are then decided by ``c <= c*`` (:func:`_decide`), which
reproduces its bisection's outcome (the same level, bit for bit, unless a trial level falls
within rounding of ``c*``: then one last halving differs, ~``2**-40`` of the bracket). A
re-plan is typically one to five probes instead of ~60.

The balances still move at every arrival (each pool by its own rate), which is O(pools) per
arrival, done once per arrival in a vectorised loop, with the generated and dropped keys kept
per slot and the running sums rebuilt only for a class whose linear range a probe needs. The
refill map ``M -> min(C, M + v(M) dt)`` is non-decreasing in ``M`` when ``dt <= H``, so the
sorted order survives it (a class is re-sorted when it does not), and a served pool moves down
its class's order by insertion.

The progressive filling rounds, the freezing rule and the refill are the reference's, step for
step; results agree with the reference to rounding (tests compare the two event by event).
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


@njit(cache=True, inline="always")
def _class_terms(
    c: float,
    d: float,
    w: float,
    horizon: float,
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    a: int,
    b: int,
    stale: NDArray[np.bool_],
    k: int,
) -> tuple[float, int, int]:  # pragma: no cover - compiled
    """Class total rate at level ``c`` (keys per time unit), saturated and nonzero counts.

    The running sums ``run[a:b]`` are rebuilt first if ``stale[k]`` and the sum is needed.
    """
    if b <= a:
        return 0.0, 0, 0
    target = c * d / w
    # v = d where target - M/H >= d, i.e. M <= H (target - d); v = 0 where M >= H target
    sat = _bisect(bal, a, b, horizon * (target - d), True)
    zero = _bisect(bal, a, b, horizon * target, False)
    if zero < sat:
        zero = sat
    total = d * sat
    if zero > sat:
        if stale[k]:  # the refill moved the balances: running sums on demand only
            acc = 0.0
            for q in range(a, b):
                acc += bal[q]
                run[q] = acc
            stale[k] = False
        lin_sum = run[a + zero - 1] - (run[a + sat - 1] if sat > 0 else 0.0)
        total += (zero - sat) * target - lin_sum / horizon
    return total, sat, zero


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
    return _class_terms(c, d, w, horizon, bal, run, a, b, np.zeros(1, dtype=np.bool_), 0)[0]


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
    stale: NDArray[np.bool_],
) -> None:  # pragma: no cover - compiled
    for k in range(c_of.size):
        if not frozen[k]:
            c_of[k] = c
            rate[k] = _class_terms(
                c,
                classes.demand[k],
                classes.price[k],
                horizon,
                bal,
                run,
                classes.start[k],
                classes.start[k + 1],
                stale,
                k,
            )[0]


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


class _Work(NamedTuple):
    """Work arrays of :func:`_probe`.

    Per class: ``trial`` rate (keys per time unit), ``slope`` dv/dc and the piece
    ``cls_lo..cls_hi`` of c where that line holds; per resource: ``load``, ``beta`` dload/dc
    and the piece ``res_lo..res_hi``.
    """

    trial: NDArray[np.float64]
    slope: NDArray[np.float64]
    cls_lo: NDArray[np.float64]
    cls_hi: NDArray[np.float64]
    load: NDArray[np.float64]
    beta: NDArray[np.float64]
    res_lo: NDArray[np.float64]
    res_hi: NDArray[np.float64]


@njit(cache=True)
def _work(n_cls: int, n_res: int) -> _Work:  # pragma: no cover - compiled
    """Allocate the work arrays of :func:`_probe`."""
    return _Work(
        np.zeros(n_cls), np.zeros(n_cls), np.zeros(n_cls), np.zeros(n_cls),
        np.zeros(n_res), np.zeros(n_res), np.zeros(n_res), np.zeros(n_res),
    )  # fmt: skip


@njit(cache=True)
def _probe(
    x: float,
    classes: TtdClasses,
    horizon: float,
    res_cap: NDArray[np.float64],
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    frozen: NDArray[np.bool_],
    rate: NDArray[np.float64],
    work: _Work,
    stale: NDArray[np.bool_],
) -> tuple[bool, float, float, float]:  # pragma: no cover - compiled
    """Evaluate the bisection's test at level ``x`` and the linear piece of the loads around it.

    Within a class the rate is linear in ``c`` between breakpoints (a pool leaves 0 at
    ``c = w M / (d H)`` and reaches ``d`` at ``c = w (M / H + d) / d``), so around ``x`` each
    resource's load is ``load + slope (c - x)`` on ``[piece_lo, piece_hi]`` (the nearest
    breakpoints of its classes). A resource's budget binds where that line meets it, exactly,
    if the meeting point lies in the piece.

    Returns
    -------
    tuple
        ``(feasible, root, bound, guess)``: the reference's test ``min_r cap_r / load_r >= 1``
        at ``x``; the largest feasible level ``c*`` when the pieces determine it (else NaN);
        a level known feasible (>= ``x``) when ``x`` is, else one known infeasible (<= ``x``);
        the Newton estimate of ``c*`` (lines extended past their pieces; NaN if none).
    """
    inf = np.inf
    start, demand, price = classes.start, classes.demand, classes.price
    trial, slope, cl, ch = work.trial, work.slope, work.cls_lo, work.cls_hi
    for k in range(trial.size):
        if frozen[k]:
            continue
        a, b = start[k], start[k + 1]
        d, w = demand[k], price[k]
        trial[k] = 0.0
        slope[k] = 0.0
        cl[k] = -inf
        ch[k] = inf
        if b <= a or not d > 0.0:
            continue
        total, sat, zero = _class_terms(x, d, w, horizon, bal, run, a, b, stale, k)
        trial[k] = total
        slope[k] = (zero - sat) * d / w
        # the breakpoints next to x: a pool saturates at w (M/H + d) / d, leaves 0 at w M / (d H)
        lo_k, hi_k = -inf, inf
        if sat > 0:
            lo_k = max(lo_k, w * (bal[a + sat - 1] / horizon + d) / d)
        if zero > sat:
            lo_k = max(lo_k, w * bal[a + zero - 1] / (d * horizon))
        if a + sat < b:
            hi_k = min(hi_k, w * (bal[a + sat] / horizon + d) / d)
        if a + zero < b:
            hi_k = min(hi_k, w * bal[a + zero] / (d * horizon))
        cl[k] = min(lo_k, x)  # rounding can put x a hair past its own breakpoint
        ch[k] = max(hi_k, x)
    load, beta, r_lo, r_hi = work.load, work.beta, work.res_lo, work.res_hi
    load[:] = 0.0
    beta[:] = 0.0
    r_lo[:] = -inf
    r_hi[:] = inf
    for k in range(trial.size):
        v = rate[k] if frozen[k] else trial[k]
        for j in range(classes.cls_ptr[k], classes.cls_ptr[k + 1]):
            r = classes.cls_res[j]
            if v > 0.0:
                load[r] += classes.cls_cnt[j] * v
            if not frozen[k]:
                beta[r] += classes.cls_cnt[j] * slope[k]
                r_lo[r] = max(r_lo[r], cl[k])
                r_hi[r] = min(r_hi[r], ch[k])
    feasible = True
    for r in range(res_cap.size):
        if load[r] > 0.0 and res_cap[r] / load[r] < 1.0:
            feasible = False
            break
    guess = inf
    if feasible:
        # c* = min_r c*_r, each c*_r > x: exact where the line meets cap_r inside the piece
        exact, bound = inf, inf
        for r in range(res_cap.size):
            if beta[r] > 0.0:
                rho = x + (res_cap[r] - load[r]) / beta[r]
                guess = min(guess, rho)
                if rho <= r_hi[r]:
                    exact = min(exact, rho)
                    continue
            bound = min(bound, r_hi[r])  # c*_r lies beyond the piece: feasible up to it
        if exact <= bound:
            return True, exact, bound, guess
        return True, np.nan, bound, (guess if guess < inf else np.nan)
    # c* = min over the violated budgets of c*_r < x
    exact, bound, known = inf, x, True
    for r in range(res_cap.size):
        if not (load[r] > 0.0 and res_cap[r] / load[r] < 1.0):
            continue
        if beta[r] > 0.0:
            rho = x - (load[r] - res_cap[r]) / beta[r]
            guess = min(guess, rho)
            if rho >= r_lo[r]:
                exact = min(exact, rho)
                continue
        known = False  # c*_r lies below the piece: infeasible down to it
        bound = min(bound, r_lo[r])
    if known:
        return False, exact, bound, guess
    return False, np.nan, bound, (guess if guess < inf else np.nan)


@njit(cache=True)
def _decide(
    m: float,
    state: NDArray[np.float64],
    classes: TtdClasses,
    horizon: float,
    res_cap: NDArray[np.float64],
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    frozen: NDArray[np.bool_],
    rate: NDArray[np.float64],
    work: _Work,
    stale: NDArray[np.bool_],
) -> bool:  # pragma: no cover - compiled
    """Answer the bisection's test at ``m``: is ``m <= c*``, the round's largest feasible level.

    ``state`` = (largest level known feasible, smallest known infeasible, ``c*`` or NaN,
    Newton estimate or NaN, 1 if the last probe was at the estimate): probes are made only
    when what is known does not answer, first at the estimate (which usually pins ``c*``,
    answering every later test), then at ``m`` itself (which answers this one).
    """
    while True:
        root = state[2]
        if not np.isnan(root):
            return m <= float(root)
        if m <= state[0]:
            return True
        if m >= state[1]:
            return False
        g = state[3]
        x = m
        if state[4] == 0.0 and g > state[0] and g < state[1] and g != m:
            x = g
        state[4] = 1.0 if x != m else 0.0
        feasible, root, bound, guess = _probe(
            x, classes, horizon, res_cap, bal, run, frozen, rate, work, stale
        )
        state[2] = root
        state[3] = guess
        if feasible:
            state[0] = max(state[0], bound)
        else:
            state[1] = max(min(state[1], bound), state[0])


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
    """:func:`_plan_with` with its work arrays allocated here (for one-off calls)."""
    _plan_with(
        classes, horizon, res_cap, bal, run, frozen, c_of, rate, load,
        _work(c_of.size, res_cap.size), np.empty(5), np.zeros(c_of.size, dtype=np.bool_),
    )  # fmt: skip


@njit(cache=True)
def _plan_with(
    classes: TtdClasses,
    horizon: float,
    res_cap: NDArray[np.float64],
    bal: NDArray[np.float64],
    run: NDArray[np.float64],
    frozen: NDArray[np.bool_],
    c_of: NDArray[np.float64],
    rate: NDArray[np.float64],
    load: NDArray[np.float64],
    work: _Work,
    state: NDArray[np.float64],
    stale: NDArray[np.bool_],
) -> None:  # pragma: no cover - compiled
    """Run the reference's progressive filling; each class's level ``c`` goes to ``c_of``.

    The doubling and the 40 halvings visit the reference's trial levels in its order and take
    its decisions, but each decision ``c <= c*`` is read from what earlier probes pinned
    (:func:`_decide`): ``c*`` exactly, once a probe's linear piece holds it, which is after a
    few Newton steps on the piecewise-linear loads instead of ~60 evaluations. A trial level
    within rounding of ``c*`` may be decided the other way than the reference's float test
    does, which moves the round's level by one last halving (about ``2**-40`` of the bracket)
    and the rates by as little; the tests compare event by event to ``1e-9`` of the stock.
    """
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
        # what is known of this round's c*: lo is feasible (the last round's level, or 0)
        state[0] = lo
        state[1] = np.inf
        state[2] = np.nan
        state[3] = np.nan
        state[4] = 0.0
        hi = hi0
        grow = 0
        # past full coverage keep raising c: spare budget still goes to the pools it can reach
        while grow < 60 and _decide(
            hi, state, classes, horizon, res_cap, bal, run, frozen, rate, work, stale
        ):
            lo = hi
            hi *= 2.0
            grow += 1
        if grow == 60:
            _fill_classes(hi, classes, horizon, bal, run, frozen, c_of, rate, stale)
            return
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if _decide(mid, state, classes, horizon, res_cap, bal, run, frozen, rate, work, stale):
                lo = mid
            else:
                hi = mid
        _fill_classes(lo, classes, horizon, bal, run, frozen, c_of, rate, stale)
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
    gen: NDArray[np.float64],
    drop: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Sort slots ``a..b-1`` by balance, carrying their pools and per-slot counters."""
    order = np.argsort(bal[a:b], kind="mergesort")
    vals = bal[a:b][order]
    pools = pool_at[a:b][order]
    gens = gen[a:b][order]
    drops = drop[a:b][order]
    for i in range(b - a):
        bal[a + i] = vals[i]
        pool_at[a + i] = pools[i]
        slot_of[pools[i]] = a + i
        gen[a + i] = gens[i]
        drop[a + i] = drops[i]


@njit(cache=True)
def _refill_class(
    a: int,
    b: int,
    target: float,
    d: float,
    horizon: float,
    dt: float,
    capacity: float,
    bal: NDArray[np.float64],
    gen: NDArray[np.float64],
    drop: NDArray[np.float64],
) -> tuple[bool, bool]:  # pragma: no cover - compiled
    """Refill slots ``a..b-1`` for ``dt`` time units at ``min(d, max(0, target - M / H))``.

    Balances ``M`` and ``capacity`` in keys; ``target`` (``c d / w``) and ``d`` in keys per
    time unit; ``horizon`` and ``dt`` in time units. Counters ``gen``/``drop`` are per slot.
    Branch-free on 0-based views (a zero rate adds zero), so the loop vectorises. Returns
    whether any balance may have moved and whether the slots are still sorted.
    """
    n = b - a
    if n <= 0:
        return False, True
    bs = bal[a:b]
    gs = gen[a:b]
    ds = drop[a:b]
    moved = target - bs[0] / horizon > 0.0  # the lowest balance has the highest rate
    for i in range(n):
        m = bs[i]
        x = target - m / horizon
        x = d if x > d else x
        v = x if x > 0.0 else 0.0
        g = v * dt
        gs[i] += g
        y = m + g
        over = y - capacity
        ds[i] += over if over > 0.0 else 0.0
        bs[i] = capacity if over > 0.0 else y
    unsorted = 0
    for i in range(1, n):
        unsorted += bs[i] < bs[i - 1]
    return moved, unsorted == 0


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
    # class-sorted layout: slot -> pool, balance and counters; pool -> slot
    pool_at = np.argsort(classes.pool_class, kind="mergesort").astype(np.int64)
    slot_of = np.empty(n_pools, dtype=np.int64)
    bal = np.empty(n_pools)
    gen = np.zeros(n_pools)  # keys generated and dropped since the start of this call
    drop = np.zeros(n_pools)
    for i in range(n_pools):
        slot_of[pool_at[i]] = i
        bal[i] = level[pool_at[i]]
    for k in range(n_cls):
        _sort_class(start[k], start[k + 1], bal, pool_at, slot_of, gen, drop)
    run = np.empty(n_pools)  # running sum of the balances within each class
    stale = np.ones(n_cls, dtype=np.bool_)  # run out of date (rebuilt when a plan needs it)
    frozen = np.zeros(n_cls, dtype=np.bool_)
    c_of = np.zeros(n_cls)
    rate = np.zeros(n_cls)
    load = np.zeros(res_cap.size)
    work = _work(n_cls, res_cap.size)
    state = np.empty(5)
    t_prev = 0.0
    n_events = times.size
    for i in range(n_events + 1):
        t = times[i] if i < n_events else t_end
        # ---- plan from the balances after the previous event -------------------------------
        _plan_with(
            classes, horizon, res_cap, bal, run, frozen, c_of, rate, load, work, state, stale
        )
        # ---- refill every pool to t at its planned rate -----------------------------------
        dt = t - t_prev
        if dt > 0.0:
            for k in range(n_cls):
                a, b = start[k], start[k + 1]
                moved, ordered = _refill_class(
                    a, b, c_of[k] * classes.demand[k] / classes.price[k], classes.demand[k],
                    horizon, dt, capacity, bal, gen, drop,
                )  # fmt: skip
                if moved:
                    stale[k] = True
                if not ordered:  # dt > H can reverse the order of the linear range
                    _sort_class(a, b, bal, pool_at, slot_of, gen, drop)
            t_prev = t
        if i == n_events:
            break
        # ---- serve the request --------------------------------------------------------------
        p = req_pool[i]
        q = slot_of[p]
        lv, served = serve(acc, i, p, bal[q], keys)
        if served:
            # move the pool down its class's order, with its counters
            k = classes.pool_class[p]
            stale[k] = True
            a = start[k]
            g, dr = gen[q], drop[q]
            while q > a and bal[q - 1] > lv:
                bal[q] = bal[q - 1]
                gen[q] = gen[q - 1]
                drop[q] = drop[q - 1]
                pool_at[q] = pool_at[q - 1]
                slot_of[pool_at[q]] = q
                q -= 1
            bal[q] = lv
            gen[q] = g
            drop[q] = dr
            pool_at[q] = p
            slot_of[p] = q
    for q in range(n_pools):
        p = pool_at[q]
        level[p] = bal[q]
        acc.generated[p] += gen[q]
        acc.dropped[p] += drop[q]
