"""The seed paper's Adaptive Key Residue algorithm (Algorithm 1), one reading of it.

See ``docs/adaptive-key-residue.md`` for the line-by-line mapping and the ambiguities. In short,
at every service arrival, after all pools are brought up to date (lines 8-15) and the service
is served or blocked (lines 16-18), every generation resource (an OLT's budget ``V``, or a link
with its own rate) splits its rate between its *intra* pools (all hops on this resource: the
paper's OLTs-QKP) and its *cross* pools (COLT-QKP) in proportion to the summed key utilization
``u_p = 1 - M_p / C_p`` of each class (lines 1-7, 21), then within a class in proportion to each
pool's utilization; a cross pool receives the *minimum* of the offers of the resources it
crosses (lines 19-20: "the same key generation rate ... under the two OLTs ... the minimum"),
converted from resource keys to delivered keys by the number of hops on that resource (line 22).

Line 21 ("update v_in^x and v_out^x"), which follows the minimum, has two defensible readings,
both implemented (``resplit``):

* **no resplit** (policy ``adaptive-key-residue``): the minimum is the last step; when a cross
  pool takes the smaller of its two OLTs' offers, the rest of the larger offer stays unspent;
* **resplit** (policy ``adaptive-key-residue-resplit``): after the minimum, each resource's
  remaining budget ``L_r = V_r - sum_p a_rp v_p`` is re-split among its pools in proportion to
  their utilization ``u_p`` (the rule of line 22), every pool with ``u_p > 0`` taking part, intra
  and cross alike; an intra pool takes its extra offer whole, a cross pool the minimum of the
  extra offers of its resources (a relayed key costs a key on each); repeated until no rate
  grows by more than ``1e-9`` of the largest budget, at most :data:`RESPLIT_PASSES` passes.
  Every pass keeps ``A v <= V`` (a pool never takes more than any of its resources offered).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["RESPLIT_PASSES", "akr_rates"]

#: Most re-split passes of line 21 (read as "resplit"). Where a pool's remainder is offered by
#: a resource with plenty left (each pass hands out a share of what the previous one left),
#: a handful suffice. Where a pool is held by a large shared resource (a ring link split over
#: hundreds of pools) while its own OLT still has budget, each pass offers it about the same
#: small amount again, and the cap decides: in the national regime of
#: ``tests/network/test_akr_classes.py`` (hub demand at 95 % of the OLTs' budgets, ring links
#: of 300-600 keys per time unit) ~1 arrival in 6 of 4,000 stopped at it. The cap is part of
#: this reading's definition: every kernel (per pool, by class) stops at it.
RESPLIT_PASSES = 64


@njit(cache=True)
def akr_rates(
    level: NDArray[np.float64],
    capacity: NDArray[np.float64],
    res_cap: NDArray[np.float64],
    res_ptr: NDArray[np.int64],
    res_pool: NDArray[np.int64],
    res_cnt: NDArray[np.float64],
    single: NDArray[np.bool_],
    out: NDArray[np.float64],
    resplit: bool = False,
) -> None:  # pragma: no cover - compiled
    """Write the Adaptive Key Residue rates of every pool into ``out``.

    Parameters
    ----------
    level
        Key balance ``M_p`` of each pool (after lazy refill to now).
    capacity
        Capacity ``C_p`` of each pool.
    res_cap
        Rate of each generation resource (``V`` for an OLT).
    res_ptr, res_pool, res_cnt
        CSR, per resource: the pools relayed over it and hops on it per delivered key.
    single
        ``True`` for pools whose path uses one resource only (intra pools).
    out
        Rates, keys per time unit, written in place. ``A @ out <= res_cap`` holds.
    resplit
        Line 21 read as a re-split of each resource's remainder after the minimum (see the
        module docstring); ``False``: the remainder stays unspent.
    """
    n_pools = level.size
    for p in range(n_pools):
        out[p] = np.inf
    for r in range(res_cap.size):
        r_in = 0.0
        r_out = 0.0
        n_in = 0
        n_out = 0
        for k in range(res_ptr[r], res_ptr[r + 1]):
            p = res_pool[k]
            u = 1.0 - level[p] / capacity[p]
            if single[p]:
                r_in += u
                n_in += 1
            else:
                r_out += u
                n_out += 1
        total = r_in + r_out
        if total > 0.0:
            b_in = res_cap[r] * r_in / total
            b_out = res_cap[r] * r_out / total
        else:  # every pool full: no utilization signal, fall back to an equal split
            b_in = res_cap[r] * n_in / max(n_in + n_out, 1)
            b_out = res_cap[r] * n_out / max(n_in + n_out, 1)
        for k in range(res_ptr[r], res_ptr[r + 1]):
            p = res_pool[k]
            u = 1.0 - level[p] / capacity[p]
            if single[p]:
                share = b_in * u / r_in if r_in > 0.0 else b_in / n_in
            else:
                share = b_out * u / r_out if r_out > 0.0 else b_out / n_out
            offer = share / res_cnt[k]
            if offer < out[p]:
                out[p] = offer
    for p in range(n_pools):
        if not np.isfinite(out[p]):
            out[p] = 0.0
    if resplit:
        _resplit(level, capacity, res_cap, res_ptr, res_pool, res_cnt, out)


@njit(cache=True)
def _resplit(
    level: NDArray[np.float64],
    capacity: NDArray[np.float64],
    res_cap: NDArray[np.float64],
    res_ptr: NDArray[np.int64],
    res_pool: NDArray[np.int64],
    res_cnt: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Hand each resource's remaining budget to its pools, as line 22 does (see module doc)."""
    n_pools = level.size
    extra = np.empty(n_pools)
    tol = 1e-9 * max(1.0, res_cap.max()) if res_cap.size else 0.0
    for _ in range(RESPLIT_PASSES):
        for p in range(n_pools):
            extra[p] = np.inf
        for r in range(res_cap.size):
            used = 0.0
            r_u = 0.0
            for k in range(res_ptr[r], res_ptr[r + 1]):
                p = res_pool[k]
                used += res_cnt[k] * out[p]
                r_u += 1.0 - level[p] / capacity[p]
            left = max(0.0, res_cap[r] - used)
            for k in range(res_ptr[r], res_ptr[r + 1]):
                p = res_pool[k]
                u = 1.0 - level[p] / capacity[p]
                offer = left * u / r_u / res_cnt[k] if r_u > 0.0 else 0.0
                if offer < extra[p]:
                    extra[p] = offer
        grown = 0.0
        for p in range(n_pools):
            if np.isfinite(extra[p]) and extra[p] > 0.0:
                out[p] += extra[p]
                if extra[p] > grown:
                    grown = extra[p]
        if grown <= tol:
            return
