"""Demand-proportional split: rates proportional to each pool's expected key demand."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qkdtwin.network.relay import RelayCosts

__all__ = ["proportional_rates"]


def proportional_rates(costs: RelayCosts, demand: NDArray[np.float64]) -> NDArray[np.float64]:
    r"""Rates ``v_p = s d_p`` with ``s = min_r cap_r / (A d)_r``: the largest feasible scaling.

    Parameters
    ----------
    costs
        Relay costs of the pools.
    demand
        Expected key demand of each pool, keys per time unit (arrival rate times keys per
        service).

    Returns
    -------
    numpy.ndarray
        Rate of each pool; ``A @ v <= capacity`` holds with equality on the tightest resource.
    """
    d = np.asarray(demand, dtype=np.float64)
    # A @ d from A's sparse entries (a dense A is resources x pools)
    pool_of_hop = np.repeat(np.arange(d.size), np.diff(costs.pool_ptr))
    load = np.bincount(
        costs.hop_res, weights=costs.hop_cnt * d[pool_of_hop], minlength=costs.capacity.size
    )
    used = load > 0
    s = float(np.min(costs.capacity[used] / load[used])) if used.any() else 0.0
    return s * d
