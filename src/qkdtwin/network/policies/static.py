"""Static equal split: every pool gets the same constant rate, the largest the budgets allow."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qkdtwin.network.relay import RelayCosts

__all__ = ["static_rates"]


def static_rates(costs: RelayCosts) -> NDArray[np.float64]:
    r"""Equal rate ``t`` for every pool with ``t = min_r cap_r / sum_p A[r, p]``.

    Parameters
    ----------
    costs
        Relay costs of the pools (:func:`~qkdtwin.network.relay_costs`).

    Returns
    -------
    numpy.ndarray
        Rate of each pool, keys per time unit; ``A @ v <= capacity`` holds.

    Notes
    -----
    In the seed network with ``V`` per OLT every OLT carries its intra-OLT pool (2 hops on the
    OLT's access links) and 8 cross-OLT pools (1 hop each), so ``t = V / 10``.

    Examples
    --------
    >>> from qkdtwin.network import seed_topology, relay_costs, uniform_demands
    >>> pairs = [(d.src, d.dst) for d in uniform_demands(seed_topology(2.0), 1.0)]
    >>> float(static_rates(relay_costs(seed_topology(2.0), pairs))[0])
    0.2
    """
    # A's row sums from its sparse entries (a dense A is resources x pools: 88 GB at 10^6 pools)
    load = np.bincount(costs.hop_res, weights=costs.hop_cnt, minlength=costs.capacity.size)
    used = load > 0
    t = float(np.min(costs.capacity[used] / load[used])) if used.any() else 0.0
    return np.full(costs.pool_ptr.size - 1, t)
