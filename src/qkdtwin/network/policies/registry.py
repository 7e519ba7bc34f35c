"""One registry of the allocation policies, and the routing arrays every kernel is given.

Each policy is registered once (:data:`REGISTRY`): its canonical name, the integer code the
compiled event loop switches on, whether it is re-planned at every arrival (*dynamic*) or sets
constant rates once, and for a constant policy the function that computes those rates. The
network engine (:func:`qkdtwin.network.simulate`) and the live twin's key network
(:class:`qkdtwin.twin.KeyNetwork`) both plan through :func:`constant_rates` and
:func:`plan_dynamic`, so adding a policy is one entry here plus its rate function.

The relay routing of a set of pools travels to the kernels as one :class:`Routing` (a
``NamedTuple`` of flat arrays, not a numba ``jitclass``, so that ``cache=True`` keeps the
compiled kernels on disk between runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qkdtwin.errors import UnknownNameError
from qkdtwin.network.policies.adaptive_residue import akr_rates
from qkdtwin.network.policies.proportional import proportional_rates
from qkdtwin.network.policies.static import static_rates
from qkdtwin.network.policies.ttd_balance import ttd_rates
from qkdtwin.network.relay import RelayCosts

__all__ = [
    "POLICIES",
    "REGISTRY",
    "Policy",
    "Routing",
    "canonical_policy",
    "constant_rates",
    "get_policy",
    "plan_dynamic",
    "resource_csr",
    "routing_arrays",
]

# The compiled kernels switch on these codes (module constants: numba freezes them).
STATIC, PROPORTIONAL, AKR, TTD, AKR_RESPLIT = 0, 1, 2, 3, 4

ConstantRates = Callable[[RelayCosts, NDArray[np.float64]], NDArray[np.float64]]


@dataclass(frozen=True)
class Policy:
    """One allocation policy.

    Attributes
    ----------
    name
        Canonical name (``qkdtwin network simulate --policy``).
    code
        Integer code of the compiled kernels.
    dynamic
        Re-planned from the pools' balances at every service arrival (else constant rates).
    rule
        One line: what it does.
    rates
        For a constant policy: rates in keys/s per pool from the routing and each pool's
        expected key demand (keys/s); ``None`` for a dynamic one.
    """

    name: str
    code: int
    dynamic: bool
    rule: str
    rates: ConstantRates | None = None


REGISTRY: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            "static",
            STATIC,
            False,
            "equal constant rate for every pool",
            lambda costs, _demand: static_rates(costs),
        ),
        Policy(
            "proportional",
            PROPORTIONAL,
            False,
            "constant rate proportional to the pool's expected key demand",
            proportional_rates,
        ),
        Policy(
            "adaptive-key-residue",
            AKR,
            True,
            "the seed paper's Algorithm 1, line 21 read as no resplit",
        ),
        Policy(
            "ttd-balance",
            TTD,
            True,
            "ours: balance the expected time to depletion (coverage water-filling)",
        ),
        Policy(
            "adaptive-key-residue-resplit",
            AKR_RESPLIT,
            True,
            "the seed paper's Algorithm 1, line 21 read as a resplit of each OLT's remainder",
        ),
    )
}

#: Policy names and the engine's integer code for each (kept for callers of the old table).
POLICIES: dict[str, int] = {name: p.code for name, p in REGISTRY.items()}

_ALIASES = {
    "akr": "adaptive-key-residue",
    "akr-resplit": "adaptive-key-residue-resplit",
    "equal": "static",
    "ttd": "ttd-balance",
    "ours": "ttd-balance",
}


def canonical_policy(name: str) -> str:
    """Canonical policy name (aliases ``akr``, ``equal``, ``ttd``, ``ours`` accepted).

    Raises
    ------
    UnknownNameError
        If the policy does not exist.

    Examples
    --------
    >>> canonical_policy("akr")
    'adaptive-key-residue'
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
        raise UnknownNameError(
            f"unknown policy {name!r}; known: {', '.join(REGISTRY)}",
            field="policy",
            value=name,
            allowed=", ".join(REGISTRY),
        )
    return key


def get_policy(name: str) -> Policy:
    """Return the registered :class:`Policy` of ``name`` (aliases accepted)."""
    return REGISTRY[canonical_policy(name)]


class Routing(NamedTuple):
    """The relay routing of a set of pools as flat arrays (both directions of the hop map).

    Attributes
    ----------
    res_cap
        Generation budget of each resource (a link's key rate, or an OLT's shared ``V``),
        keys/s.
    pool_ptr, hop_res, hop_cnt
        The hops of pool ``p`` are ``hop_res[pool_ptr[p]:pool_ptr[p + 1]]``, each costing
        ``hop_cnt`` resource keys per delivered key.
    res_ptr, res_pool, res_cnt
        The pools drawing on resource ``r`` are ``res_pool[res_ptr[r]:res_ptr[r + 1]]``, with
        ``res_cnt`` keys each.
    single
        Whether each pool has one hop (an intra pool of its resource).
    """

    res_cap: NDArray[np.float64]
    pool_ptr: NDArray[np.int64]
    hop_res: NDArray[np.int64]
    hop_cnt: NDArray[np.float64]
    res_ptr: NDArray[np.int64]
    res_pool: NDArray[np.int64]
    res_cnt: NDArray[np.float64]
    single: NDArray[np.bool_]


def resource_csr(
    costs: RelayCosts,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]]:
    """Invert the pool -> hop map of ``costs`` into resource -> (pool, key count) CSR arrays.

    Returns ``(res_ptr, res_pool, res_cnt, single)``: the pools drawing on resource ``r`` are
    ``res_pool[res_ptr[r]:res_ptr[r + 1]]`` with ``res_cnt`` keys each; ``single`` marks the
    pools of one hop.
    """
    n_pools = costs.pool_ptr.size - 1
    pool_of_hop = np.repeat(np.arange(n_pools), np.diff(costs.pool_ptr))
    order = np.argsort(costs.hop_res, kind="stable")
    res_pool = pool_of_hop[order].astype(np.int64)
    res_cnt = costs.hop_cnt[order]
    counts = np.bincount(costs.hop_res, minlength=costs.capacity.size)
    res_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    single = np.diff(costs.pool_ptr) == 1
    return res_ptr, res_pool, res_cnt, single


def routing_arrays(costs: RelayCosts) -> Routing:
    """Return the :class:`Routing` of ``costs`` (its hop map and the inverted one)."""
    res_ptr, res_pool, res_cnt, single = resource_csr(costs)
    return Routing(
        np.ascontiguousarray(costs.capacity, dtype=np.float64),
        np.ascontiguousarray(costs.pool_ptr, dtype=np.int64),
        np.ascontiguousarray(costs.hop_res, dtype=np.int64),
        np.ascontiguousarray(costs.hop_cnt, dtype=np.float64),
        res_ptr,
        res_pool,
        np.ascontiguousarray(res_cnt, dtype=np.float64),
        single,
    )


def constant_rates(
    policy: Policy, costs: RelayCosts, demand: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Rates (keys/s per pool) of a constant policy; zeros for a dynamic one (planned later).

    ``demand``: each pool's expected key demand, keys/s.
    """
    if policy.rates is None:
        return np.zeros(costs.pool_ptr.size - 1)
    return np.asarray(policy.rates(costs, demand), dtype=np.float64)


@njit(cache=True, inline="always")
def plan_dynamic(
    code: int,
    level: NDArray[np.float64],
    capacity: NDArray[np.float64],
    routing: Routing,
    demand: NDArray[np.float64],
    price: NDArray[np.float64],
    horizon: float,
    load: NDArray[np.float64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """Write the rates of dynamic policy ``code`` into ``out`` from the pools' balances.

    ``level`` and ``capacity`` in keys, ``demand`` in keys/s, ``price`` the TTD resource
    weights, ``horizon`` the TTD look-ahead in s, ``load`` a scratch array (one per
    resource). A constant policy's code leaves ``out`` as it is.
    """
    if code in (AKR, AKR_RESPLIT):
        akr_rates(
            level,
            capacity,
            routing.res_cap,
            routing.res_ptr,
            routing.res_pool,
            routing.res_cnt,
            routing.single,
            out,
            code == AKR_RESPLIT,
        )
    elif code == TTD:
        ttd_rates(
            level,
            demand,
            price,
            horizon,
            routing.res_cap,
            routing.pool_ptr,
            routing.hop_res,
            routing.hop_cnt,
            load,
            out,
        )
