"""Adaptive Key Residue advanced by *pool class*: the same events, O(classes) per arrival.

The reference event loop (:func:`qkdtwin.network.engine` with ``algorithm="per-pool"``)
brings every pool up to date and re-plans every pool's rate at every service arrival, which
costs O(pools) per arrival. This module computes the same trajectory while touching only
*classes* of pools, and only the one pool that an arrival asks for.

Why a class is enough
---------------------
Write ``u_p = 1 - M_p / C`` for the utilization of pool ``p`` (``C`` is the same for every
pool). In :func:`~qkdtwin.network.policies.akr_rates` resource ``r`` (budget ``V_r``, summed
utilization ``U_r`` of its pools) offers pool ``p`` the share ``V_r u_p / U_r`` of its budget,
whether ``p`` is an intra or a cross pool (``b_in u / r_in = V u / U``), i.e.
``V_r u_p / (U_r a_rp)`` delivered keys per time unit for ``a_rp`` keys of ``r`` per delivered
key. The pool takes the minimum over its resources, so

    ``v_p = u_p * g_k``,  ``g_k = min_{r in k} V_r / (U_r a_rk)``

where ``k`` is the pool's *class*: the pools with the same resources and the same
``a_rp`` (all gateways under one OLT with a demand to the same core node form one class).
Between two arrivals a pool of class ``k`` refills by ``v_p dt``, so its utilization becomes
``u_p (1 - g_k dt / C)``: *every pool of a class is scaled by the same factor*. A class
therefore stores its utilizations as ``u_p = s_k w_p`` with one scale ``s_k``, the sum
``S_k = s_k sum_p w_p`` and the largest ``w_p``; an arrival multiplies ``s_k`` of every class
(O(classes)), recomputes ``U_r = sum_{k on r} S_k`` and ``g_k`` (O(class-resource
incidences)), and rewrites ``w_p`` of the one pool it serves. When ``1 - g_k dt / C <= 0``
the whole class reaches ``C`` and overflows (the cap of lines 10-13): the pools touched since
the class was last full are written out and the class starts over, which costs O(1) amortised
per arrival. Key accounts per pool (generated, dropped) are integrals of ``u_p`` and are kept
as per-class running integrals per unit of ``w``, settled when a pool is touched.

The two corner cases of :func:`akr_rates` follow the same pattern: a resource whose pools are
all full (``U_r = 0``) splits ``V_r`` equally, so a class whose resources are *all* full gets
the constant rate ``min_r V_r / (n_r a_rk)`` per pool (all of it overflows); a class with some
full resource is itself full and gets nothing. Line 21 read as a resplit keeps the form
``v_p = u_p h_k``: a pass hands resource ``r``'s remainder ``L_r`` out as ``L_r u_p / (U_r
a_rp)``, again a per-class factor, with the same stopping rule (the largest per-pool increase,
``e_k s_k max w_p``).

The resplit visits only *live* classes. A *private* resource (one class uses it: an OLT's
budget, its uplink) has utilization ``U_r = S_k``, so a class held by one of its private
resources spends that resource whole (``L_r = 0``); remainders only shrink from pass to pass,
so such a class is offered nothing by any later pass. Only the classes held by a *shared*
resource (a ring link whose budget is split over hundreds of classes) take part, and each
leaves as soon as its own remainder becomes its offer. A pass costs O(live classes and their
groups' shared resources), not O(classes + resources): at 10^6 gateways (1,000 OLT classes)
the resplit reading went from ~6 full passes per arrival to a few live classes.

Exactness: the per-event semantics are those of the reference (same refill, cap, service and
re-plan at every arrival); results agree with it to rounding (sums are formed per class rather
than per pool). Tests compare the two event by event on random scenarios. Poisson key
generation is not covered: there every pool draws its own Poisson count at every arrival, so
reproducing the process needs one draw per pool per arrival (O(pools)), and the engine uses
the per-pool loop for it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qkdtwin.network.policies.adaptive_residue import RESPLIT_PASSES
from qkdtwin.network.pools import PoolAccounts, serve

__all__ = ["PoolClasses", "pool_classes", "run_akr_by_class"]

#: A class whose largest utilization falls below this is full: 1 - u rounds to 1 in float64
#: near this size, as the per-pool loop's ``level + v dt`` rounds to ``C``.
_SNAP = 1e-15
#: Renormalise a class's scale when it falls below this, so that the per-unit-of-w integrals
#: (``gam``, ``dlt``) never add increments much smaller than what they hold: each renormalising
#: settles the class's touched pools and restarts the integrals at zero (at most ~7 digits'
#: spread, so the accounts keep ~1e-13 relative precision).
_RENORM = 1e-3


class PoolClasses(NamedTuple):
    """Pools grouped by identical resource use (see the module docstring).

    A class's resources are split into its *private* ones (no other class uses them: an OLT's
    budget, its uplink) and its *shared* ones; classes with the same shared resources (and
    costs on them) form a *group* (the OLTs of one metro node), whose minimum over the shared
    resources is computed once per arrival for all its classes.

    Attributes
    ----------
    pool_class
        Class of each pool.
    size
        Pools in each class.
    cls_ptr, cls_res, cls_cnt
        The private resources of class ``k`` are ``cls_res[cls_ptr[k]:cls_ptr[k + 1]]``, each
        costing ``cls_cnt`` resource keys per delivered key.
    cls_group
        Group of each class.
    grp_ptr, grp_res, grp_cnt
        The shared resources of group ``g`` and their costs, in the same layout.
    res_entries
        Pools drawing on each resource (``n_r`` of the equal split when all are full).
    member_ptr, members
        The pools of class ``k`` are ``members[member_ptr[k]:member_ptr[k + 1]]``.
    """

    pool_class: NDArray[np.int64]
    size: NDArray[np.float64]
    cls_ptr: NDArray[np.int64]
    cls_res: NDArray[np.int64]
    cls_cnt: NDArray[np.float64]
    cls_group: NDArray[np.int64]
    grp_ptr: NDArray[np.int64]
    grp_res: NDArray[np.int64]
    grp_cnt: NDArray[np.float64]
    res_entries: NDArray[np.float64]
    member_ptr: NDArray[np.int64]
    members: NDArray[np.int64]


def unique_rows(
    ptr: NDArray[np.int64],
    res: NDArray[np.int64],
    cnt: NDArray[np.float64],
    extra: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Give each distinct CSR row ``(res, cnt)`` an id, in order of first appearance.

    ``extra`` (rows x m) adds per-row values that must also be equal. Returns
    ``(row_id, first)``: the id of every row and the first row of each id.
    """
    n = ptr.size - 1
    lengths = np.diff(ptr)
    width = int(lengths.max()) if n and lengths.size else 0
    m = 0 if extra is None else extra.shape[1]
    table = np.full((n, 2 * width + 1 + m), -1.0)
    table[:, 0] = lengths
    if extra is not None:
        table[:, 2 * width + 1 :] = extra
    row_of = np.repeat(np.arange(n), lengths)
    col = np.arange(res.size) - np.repeat(ptr[:-1], lengths)
    table[row_of, 1 + 2 * col] = res
    table[row_of, 2 + 2 * col] = cnt
    _, first, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[np.asarray(inverse).reshape(-1)].astype(np.int64), np.asarray(first)[order]


def gather_rows(
    ptr: NDArray[np.int64], rows: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """CSR pointer and entry indices of the rows ``rows`` of a CSR structure ``ptr``."""
    lengths = np.diff(ptr)[rows]
    new_ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    take = np.repeat(ptr[:-1][rows], lengths) + (
        np.arange(int(new_ptr[-1])) - np.repeat(new_ptr[:-1], lengths)
    )
    return new_ptr, take.astype(np.int64)


def pool_classes(
    pool_ptr: NDArray[np.int64],
    hop_res: NDArray[np.int64],
    hop_cnt: NDArray[np.float64],
    n_resources: int,
) -> PoolClasses:
    """Group pools whose rows of the relay-cost matrix are equal (vectorised; O(nnz log)).

    ``pool_ptr, hop_res, hop_cnt`` are the per-pool CSR rows of the cost matrix ``A`` with the
    resources of each row sorted (as :func:`~qkdtwin.network.relay_costs` writes them).

    Examples
    --------
    Three pools: two use resource 0 twice, one uses resources 0 and 1 once each. Resource 0
    is shared by the two classes, resource 1 is the second class's own.

    >>> c = pool_classes(np.array([0, 1, 2, 4]), np.array([0, 0, 0, 1]),
    ...                  np.array([2.0, 2.0, 1.0, 1.0]), 2)
    >>> c.pool_class.tolist(), c.size.tolist(), c.res_entries.tolist()
    ([0, 0, 1], [2.0, 1.0], [3.0, 1.0])
    >>> c.cls_res.tolist(), c.cls_group.tolist(), c.grp_res.tolist(), c.grp_cnt.tolist()
    ([1], [0, 1], [0, 0], [2.0, 1.0])
    """
    pool_class, reps = unique_rows(pool_ptr, hop_res, hop_cnt)
    n_cls = reps.size
    size = np.bincount(pool_class, minlength=n_cls).astype(np.float64)
    members = np.argsort(pool_class, kind="stable").astype(np.int64)
    member_ptr = np.concatenate(([0], np.cumsum(size.astype(np.int64)))).astype(np.int64)
    res_entries = np.bincount(hop_res, minlength=n_resources).astype(np.float64)
    row_ptr, take = gather_rows(pool_ptr, reps)
    row_res, row_cnt = hop_res[take], hop_cnt[take]
    cls_of = np.repeat(np.arange(n_cls), np.diff(row_ptr))
    classes_on = np.bincount(row_res, minlength=n_resources)  # classes using each resource
    private = classes_on[row_res] == 1
    # private resources: one CSR per class
    cls_ptr = np.concatenate(([0], np.cumsum(np.bincount(cls_of[private], minlength=n_cls))))
    # shared resources: classes with equal shared rows form a group
    sh_ptr = np.concatenate(([0], np.cumsum(np.bincount(cls_of[~private], minlength=n_cls))))
    cls_group, grp_reps = unique_rows(sh_ptr.astype(np.int64), row_res[~private], row_cnt[~private])
    grp_ptr, grp_take = gather_rows(sh_ptr.astype(np.int64), grp_reps)
    return PoolClasses(
        pool_class,
        size,
        cls_ptr.astype(np.int64),
        np.ascontiguousarray(row_res[private], dtype=np.int64),
        np.ascontiguousarray(row_cnt[private], dtype=np.float64),
        cls_group,
        grp_ptr,
        np.ascontiguousarray(row_res[~private][grp_take], dtype=np.int64),
        np.ascontiguousarray(row_cnt[~private][grp_take], dtype=np.float64),
        res_entries,
        member_ptr,
        members,
    )


@njit(cache=True)
def _settle(
    p: int,
    k: int,
    w: NDArray[np.float64],
    gam: NDArray[np.float64],
    dlt: NDArray[np.float64],
    phi: NDArray[np.float64],
    gam_at: NDArray[np.float64],
    dlt_at: NDArray[np.float64],
    phi_at: NDArray[np.float64],
    generated: NDArray[np.float64],
    dropped: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Book pool ``p``'s generated and dropped keys since it was last settled."""
    flow = phi[k] - phi_at[p]
    generated[p] += w[p] * (gam[k] - gam_at[p]) + flow
    dropped[p] += w[p] * (dlt[k] - dlt_at[p]) + flow
    gam_at[p] = gam[k]
    dlt_at[p] = dlt[k]
    phi_at[p] = phi[k]


@njit(cache=True)
def _resplit_live(
    live: NDArray[np.int64],
    n_live: int,
    classes: PoolClasses,
    res_cap: NDArray[np.float64],
    util: NDArray[np.float64],
    used: NDArray[np.float64],
    ssum: NDArray[np.float64],
    gm: NDArray[np.float64],
    s: NDArray[np.float64],
    wmax: NDArray[np.float64],
    gext: NDArray[np.float64],
    gstamp: NDArray[np.int64],
    gadd: NDArray[np.float64],
    touched: NDArray[np.int64],
    extra: NDArray[np.float64],
    bound: NDArray[np.bool_],
    stamp: int,
    tol: float,
) -> int:  # pragma: no cover - compiled
    """Line 21 read as a resplit, pass by pass, visiting only the *live* classes.

    ``live[:n_live]`` are the active classes held by a shared resource (their private
    resources still have budget left); ``used`` holds what the plan takes from each shared
    resource. Each pass hands every live class ``e_k = min(e_g, L_r / (U_r a_rk))`` over its
    group's shared resources (``e_g``, computed once per group and pass) and its private ones,
    exactly as :func:`~qkdtwin.network.policies.adaptive_residue.akr_rates` does per pool. A
    class whose offer is its private remainder spends it (that remainder is then zero and,
    remainders only shrinking, stays zero): it leaves the live set. So are classes offered
    nothing. Returns the counter ``stamp`` for the next call.
    """
    cls_ptr, cls_res, cls_cnt = classes.cls_ptr, classes.cls_res, classes.cls_cnt
    cls_group = classes.cls_group
    grp_ptr, grp_res, grp_cnt = classes.grp_ptr, classes.grp_res, classes.grp_cnt
    for _ in range(RESPLIT_PASSES):
        if n_live == 0:
            break
        stamp += 1
        # every live class's extra from the remainders at the start of the pass (Jacobi)
        for b in range(n_live):
            k = live[b]
            g = cls_group[k]
            if gstamp[g] != stamp:
                gstamp[g] = stamp
                e = np.inf
                for j in range(grp_ptr[g], grp_ptr[g + 1]):
                    r = grp_res[j]
                    x = res_cap[r] - used[r]
                    left = x if x > 0.0 else 0.0
                    o = left / (util[r] * grp_cnt[j]) if util[r] > 0.0 else 0.0
                    if o < e:
                        e = o
                gext[g] = e
            e = gext[g]
            held = False
            sk = ssum[k]
            for j in range(cls_ptr[k], cls_ptr[k + 1]):
                x = res_cap[cls_res[j]] - cls_cnt[j] * (sk * gm[k])
                left = x if x > 0.0 else 0.0
                o = left / (sk * cls_cnt[j]) if sk > 0.0 else 0.0
                if o <= e:
                    e = o
                    held = True
            extra[k] = e
            bound[k] = held
        grown = 0.0
        n_touched = 0
        n_next = 0
        for b in range(n_live):
            k = live[b]
            e = extra[k]
            if np.isfinite(e) and e > 0.0 and wmax[k] > 0.0:
                gm[k] += e
                g = cls_group[k]
                if gadd[g] == 0.0:
                    touched[n_touched] = g
                    n_touched += 1
                gadd[g] += ssum[k] * e
                x = e * s[k] * wmax[k]
                if x > grown:
                    grown = x
                if not bound[k]:
                    live[n_next] = k
                    n_next += 1
        n_live = n_next
        for t in range(n_touched):
            g = touched[t]
            for j in range(grp_ptr[g], grp_ptr[g + 1]):
                used[grp_res[j]] += grp_cnt[j] * gadd[g]
            gadd[g] = 0.0
        if grown <= tol:
            break
    return stamp


# nogil: a Dask worker running a long replication keeps answering its heartbeats
@njit(cache=True, nogil=True)
def run_akr_by_class(
    times: NDArray[np.float64],
    req_pool: NDArray[np.int64],
    keys: float,
    t_end: float,
    capacity: float,
    level: NDArray[np.float64],
    classes: PoolClasses,
    res_cap: NDArray[np.float64],
    resplit: bool,
    acc: PoolAccounts,
) -> None:  # pragma: no cover - compiled
    """Run the arrivals under Adaptive Key Residue, advancing classes (fluid generation).

    Same contract as the engine's per-pool loop for policy codes 2 and 4: ``level`` holds the
    initial balances on entry and the final ones on exit; the per-pool counters are added to.
    ``capacity`` is the pools' common ``C`` (keys); ``resplit`` selects line 21's reading.
    """
    n_pools = level.size
    generated, dropped = acc.generated, acc.dropped
    n_cls = classes.size.size
    n_res = res_cap.size
    pool_class = classes.pool_class
    cls_ptr = classes.cls_ptr
    cls_res = classes.cls_res
    cls_cnt = classes.cls_cnt
    cls_group = classes.cls_group
    grp_ptr = classes.grp_ptr
    grp_res = classes.grp_res
    grp_cnt = classes.grp_cnt
    n_grp = grp_ptr.size - 1
    # the resources used by more than one class; a private resource's utilization is its
    # class's, so only these need a sum over classes
    shared = np.unique(grp_res)
    gsum = np.zeros(n_grp)  # summed utilization of the group's active classes
    gbest = np.zeros(n_grp)  # the group's minimum offer per unit u over its shared resources
    gbusy = np.zeros(n_grp, dtype=np.bool_)  # some shared resource of the group is in use
    # the constant per-pool rate of a full class whose resources are all idle (U_r = 0):
    # every resource splits its budget equally over the pools on it (akr_rates' fallback)
    idle_rate = np.full(n_cls, np.inf)
    for k in range(n_cls):
        for j in range(cls_ptr[k], cls_ptr[k + 1]):
            r = cls_res[j]
            o = res_cap[r] / (classes.res_entries[r] * cls_cnt[j])
            idle_rate[k] = min(idle_rate[k], o)
        g = cls_group[k]
        for j in range(grp_ptr[g], grp_ptr[g + 1]):
            r = grp_res[j]
            o = res_cap[r] / (classes.res_entries[r] * grp_cnt[j])
            idle_rate[k] = min(idle_rate[k], o)
        if not np.isfinite(idle_rate[k]):
            idle_rate[k] = 0.0
    # per class: u_p = s * w_p; wsum = sum w_p; wmax = max w_p
    s = np.ones(n_cls)
    wsum = np.zeros(n_cls)
    wmax = np.zeros(n_cls)
    ssum = np.zeros(n_cls)  # s * wsum at the plan: the class's summed utilization
    gm = np.zeros(n_cls)  # rate per unit of utilization (keys per time unit)
    flow = np.zeros(n_cls)  # per-pool rate while every resource of the class is full
    gam = np.zeros(n_cls)  # generated keys per unit of w, integrated
    dlt = np.zeros(n_cls)  # dropped keys per unit of w, integrated
    phi = np.zeros(n_cls)  # generated (and dropped) keys per pool while full, integrated
    dirty_n = np.zeros(n_cls, dtype=np.int64)
    dirty = np.empty(max(n_pools, 1), dtype=np.int64)  # class k's slots start at member_ptr[k]
    is_dirty = np.zeros(n_pools, dtype=np.bool_)
    w = np.zeros(n_pools)
    gam_at = np.zeros(n_pools)
    dlt_at = np.zeros(n_pools)
    phi_at = np.zeros(n_pools)
    # classes with a pool below C (wsum > 0), in no particular order, and each one's slot
    active = np.empty(max(n_cls, 1), dtype=np.int64)
    slot = np.full(n_cls, -1, dtype=np.int64)
    n_active = 0
    util = np.zeros(n_res)
    # resplit state: live classes, shared resources' use, per-group extras of a pass
    live = np.empty(max(n_cls, 1), dtype=np.int64)
    used = np.zeros(n_res)
    gdeliv = np.zeros(n_grp)
    gext = np.zeros(n_grp)
    gstamp = np.zeros(n_grp, dtype=np.int64)
    gadd = np.zeros(n_grp)
    touched = np.empty(max(n_grp, 1), dtype=np.int64)
    extra = np.zeros(n_cls)
    bound = np.zeros(n_cls, dtype=np.bool_)
    stamp = 0
    tol = 1e-9 * max(1.0, res_cap.max()) if n_res else 0.0
    for p in range(n_pools):
        u = 1.0 - level[p] / capacity
        if u > 0.0:
            k = pool_class[p]
            w[p] = u
            wsum[k] += u
            if u > wmax[k]:
                wmax[k] = u
            dirty[classes.member_ptr[k] + dirty_n[k]] = p
            dirty_n[k] += 1
            is_dirty[p] = True
            if slot[k] < 0:
                slot[k] = n_active
                active[n_active] = k
                n_active += 1

    t_prev = 0.0
    n_events = times.size
    for i in range(n_events + 1):
        t = times[i] if i < n_events else t_end
        # ---- plan (lines 1-7, 19-22) from the balances after the previous event ------------
        for r in shared:
            util[r] = 0.0
        for g in range(n_grp):
            gsum[g] = 0.0
        for a in range(n_active):
            k = active[a]
            sk = s[k] * wsum[k]
            ssum[k] = sk
            gsum[cls_group[k]] += sk
        for g in range(n_grp):
            if gsum[g] > 0.0:
                for j in range(grp_ptr[g], grp_ptr[g + 1]):
                    util[grp_res[j]] += gsum[g]
        any_idle = False
        for g in range(n_grp):
            best = np.inf
            busy = False
            for j in range(grp_ptr[g], grp_ptr[g + 1]):
                r = grp_res[j]
                if util[r] > 0.0:
                    busy = True
                    o = res_cap[r] / (util[r] * grp_cnt[j])
                    if o < best:
                        best = o
            gbest[g] = best
            gbusy[g] = busy
            if not busy:
                any_idle = True
        # a full class (wsum = 0) gets nothing, unless every resource it uses is idle (its
        # private ones are: no other class uses them); then it gets the equal-split flow.
        # With every group busy no full class flows: the flows stay unread (see the refill).
        if any_idle:
            for k in range(n_cls):
                if slot[k] < 0:
                    flow[k] = 0.0 if gbusy[cls_group[k]] else idle_rate[k]
        n_live = 0
        if resplit:
            for g in range(n_grp):
                gdeliv[g] = 0.0
        for a in range(n_active):
            k = active[a]
            sk = ssum[k]
            gb = gbest[cls_group[k]]
            best = gb
            for j in range(cls_ptr[k], cls_ptr[k + 1]):
                if sk > 0.0:
                    o = res_cap[cls_res[j]] / (sk * cls_cnt[j])
                    if o < best:
                        best = o
            flow[k] = 0.0
            gm[k] = best if np.isfinite(best) else 0.0
            if resplit:
                # the flows of full classes use only idle resources (U_r = 0), whose
                # remainder no pool can take (offers are proportional to u): left out
                gdeliv[cls_group[k]] += sk * gm[k]
                if best == gb and np.isfinite(gb):  # held by a shared resource, not its own
                    live[n_live] = k
                    n_live += 1
        if resplit and n_live > 0:
            for r in shared:
                used[r] = 0.0
            for g in range(n_grp):
                if gdeliv[g] > 0.0:
                    for j in range(grp_ptr[g], grp_ptr[g + 1]):
                        used[grp_res[j]] += grp_cnt[j] * gdeliv[g]
            stamp = _resplit_live(
                live, n_live, classes, res_cap, util, used, ssum, gm, s, wmax, gext, gstamp,
                gadd, touched, extra, bound, stamp, tol,
            )  # fmt: skip
        # ---- refill every class to t (lines 8-13) -----------------------------------------
        dt = t - t_prev
        if dt > 0.0:
            if any_idle:
                for k in range(n_cls):
                    if flow[k] > 0.0:
                        phi[k] += flow[k] * dt
            for a in range(n_active - 1, -1, -1):  # backwards: a full class is swap-removed
                k = active[a]
                if gm[k] > 0.0:
                    amount = gm[k] * dt
                    sk = s[k]
                    gam[k] += sk * amount
                    f = 1.0 - amount / capacity
                    full = f <= 0.0
                    if full:
                        dlt[k] += sk * (amount - capacity)
                    else:
                        sk *= f
                        full = sk * wmax[k] < _SNAP
                    if full or sk < _RENORM:
                        # settle the pools touched since the class was last full
                        base = classes.member_ptr[k]
                        total = 0.0
                        top = 0.0
                        for d in range(dirty_n[k]):
                            q = dirty[base + d]
                            _settle(
                                q, k, w, gam, dlt, phi, gam_at, dlt_at, phi_at, generated, dropped
                            )
                            if full:
                                w[q] = 0.0
                                is_dirty[q] = False
                            else:
                                w[q] *= sk
                                total += w[q]
                                if w[q] > top:
                                    top = w[q]
                        if full:
                            dirty_n[k] = 0
                            wsum[k] = 0.0
                            wmax[k] = 0.0
                            n_active -= 1
                            last = active[n_active]
                            active[a] = last
                            slot[last] = a
                            slot[k] = -1
                        else:
                            wsum[k] = total
                            wmax[k] = top
                        sk = 1.0
                        gam[k] = 0.0  # every pool with w > 0 is settled: restart the integrals
                        dlt[k] = 0.0
                        for d in range(dirty_n[k]):
                            q = dirty[base + d]
                            gam_at[q] = 0.0
                            dlt_at[q] = 0.0
                    s[k] = sk
            t_prev = t
        if i == n_events:
            break
        # ---- serve the request (lines 16-18) ----------------------------------------------
        p = req_pool[i]
        k = pool_class[p]
        _settle(p, k, w, gam, dlt, phi, gam_at, dlt_at, phi_at, generated, dropped)
        lv = capacity * (1.0 - s[k] * w[p])
        lv, served = serve(acc, i, p, lv, keys)
        if served:
            w_new = (1.0 - lv / capacity) / s[k]
            wsum[k] += w_new - w[p]
            w[p] = w_new
            if w_new > wmax[k]:
                wmax[k] = w_new
            if not is_dirty[p]:
                dirty[classes.member_ptr[k] + dirty_n[k]] = p
                dirty_n[k] += 1
                is_dirty[p] = True
            if slot[k] < 0:
                slot[k] = n_active
                active[n_active] = k
                n_active += 1
    for p in range(n_pools):
        k = pool_class[p]
        _settle(p, k, w, gam, dlt, phi, gam_at, dlt_at, phi_at, generated, dropped)
        level[p] = capacity * (1.0 - s[k] * w[p])
