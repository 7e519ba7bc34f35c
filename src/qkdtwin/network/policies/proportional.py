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
    load = costs.dense() @ d
    used = load > 0
    s = float(np.min(costs.capacity[used] / load[used])) if used.any() else 0.0
    return s * d
