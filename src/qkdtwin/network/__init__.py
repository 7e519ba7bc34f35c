"""The network twin: topologies, key pools, trusted relays, allocation policies, engine.

Examples
--------
>>> import numpy as np
>>> from qkdtwin.network import seed_topology, simulate, uniform_demands
>>> topo = seed_topology(olt_rate=2.0)
>>> res = simulate(topo, uniform_demands(topo, 1.0), pool_capacity=400, keys_per_service=10,
...                policy="ttd-balance", rng=np.random.default_rng(1), duration=1000.0)
>>> res.success_rate > 0.8
True
"""

from __future__ import annotations

from qkdtwin.network.engine import (
    Demand,
    SimulationResult,
    hub_demands,
    simulate,
    skewed_demands,
    uniform_demands,
)
from qkdtwin.network.policies import POLICIES, canonical_policy
from qkdtwin.network.pools import PoolStats, refill
from qkdtwin.network.relay import RelayCosts, key_path, relay_costs
from qkdtwin.network.topology import (
    BUILDERS,
    ROLES,
    Topology,
    build_topology,
    centralized_topology,
    default_length_km,
    distributed_topology,
    hierarchical_topology,
    hybrid_topology,
    link_id,
    national_topology,
    physical_key_rate,
    resolve_link,
    seed_topology,
)

__all__ = [
    "BUILDERS",
    "POLICIES",
    "ROLES",
    "Demand",
    "PoolStats",
    "RelayCosts",
    "SimulationResult",
    "Topology",
    "build_topology",
    "canonical_policy",
    "centralized_topology",
    "default_length_km",
    "distributed_topology",
    "hierarchical_topology",
    "hub_demands",
    "hybrid_topology",
    "key_path",
    "link_id",
    "national_topology",
    "physical_key_rate",
    "refill",
    "relay_costs",
    "resolve_link",
    "seed_topology",
    "simulate",
    "skewed_demands",
    "uniform_demands",
]
