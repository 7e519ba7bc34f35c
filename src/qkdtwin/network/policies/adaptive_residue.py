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
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["akr_rates"]


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
