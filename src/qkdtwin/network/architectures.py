"""Compare the survey's four QKD-network architectures at growing numbers of devices.

Every architecture gets QKD nodes of the same hardware: each node that terminates device links
has a total key budget ``node_rate`` shared by those links (a group). What differs is how many
such nodes an architecture deploys and how keys reach the core (where the IIoT aggregator sits):

============== =================================================================================
centralized    one KME; every device has a direct link to it (1 hop)
distributed    ``mesh_nodes`` trusted nodes in a full mesh, devices spread over them; the
               aggregator at node 0 (1 hop under node 0, 2 hops elsewhere)
hierarchical   ring of ``metros`` metro nodes, ``olts_per_metro`` OLTs under each, devices under
               the OLTs; aggregator at metro 0 (3 hops + ring hops)
hybrid         ``clusters`` cluster heads in a mesh whose core links have a finite rate, devices
               under each head; aggregator at head 0
============== =================================================================================

Each device requests services to the aggregator (Poisson, ``service_rate`` per time unit,
``X`` keys each). A run is the equal split over a long window with pools starting full; the
success rate and the key cost per device (keys consumed on all hops, per device and time unit)
are reported for each size, and the largest size meeting the target success rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.network.engine import Demand, simulate
from qkdtwin.network.topology import (
    Topology,
    centralized_topology,
    distributed_topology,
    hierarchical_topology,
    hybrid_topology,
)

__all__ = ["ARCHITECTURES", "build_architecture", "compare_architectures"]

ARCHITECTURES = ("centralized", "distributed", "hierarchical", "hybrid")


def build_architecture(
    name: str,
    devices: int,
    *,
    node_rate: float,
    mesh_nodes: int = 10,
    metros: int = 10,
    olts_per_metro: int = 10,
    clusters: int = 10,
) -> tuple[Topology, str]:
    """Build ``name`` with at least ``devices`` gateways; return it and its core node.

    Raises
    ------
    ConfigError
        If the name is unknown or a size is not positive.
    """
    if devices < 1:
        raise ConfigError(f"devices must be >= 1, got {devices}", field="sizes", value=devices)
    if name == "centralized":
        return centralized_topology(devices, node_rate=node_rate), "KME"
    if name == "distributed":
        per = math.ceil(devices / mesh_nodes)
        topo = distributed_topology(mesh_nodes, per, node_rate=node_rate, mesh_rate=1e6)
        return topo, "N0"
    if name == "hierarchical":
        per = math.ceil(devices / (metros * olts_per_metro))
        return hierarchical_topology(metros, olts_per_metro, per, olt_rate=node_rate), "M0"
    if name == "hybrid":
        per = math.ceil(devices / clusters)
        return hybrid_topology(clusters, per, link_rate=node_rate / 10, node_rate=node_rate), "H0"
    raise ConfigError(
        f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}",
        field="architectures",
        value=name,
    )


def compare_architectures(
    sizes: Sequence[int] = (100, 1000, 10_000, 100_000),
    *,
    architectures: Sequence[str] = ARCHITECTURES,
    target: float = 0.99,
    node_rate: float = 100.0,
    service_rate: float = 0.01,
    keys_per_service: float = 10.0,
    pool_capacity: float = 100.0,
    duration: float = 10_000.0,
    seed: int = 1,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Success rate and key cost per device of each architecture at each size.

    Parameters
    ----------
    sizes
        Numbers of IoT devices (edge gateways) to try.
    architectures
        Names from :data:`ARCHITECTURES`.
    target
        Success rate a size must reach to count as served.
    node_rate
        Key budget of every QKD node (keys per time unit).
    service_rate
        Services per device and time unit.
    keys_per_service, pool_capacity, duration, seed
        ``X``, ``C``, simulated window and seed of each run.
    progress
        Called with (architecture, size) before each run.

    Returns
    -------
    dict
        ``rows`` (architecture, devices, success_rate, key_cost_per_device, qkd_nodes, hops)
        and ``served`` (architecture -> largest size with success >= target, or 0).
    """
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"target must be in (0, 1], got {target}", field="target")
    rows: list[dict[str, Any]] = []
    served: dict[str, int] = {}
    for arch in architectures:
        served[arch] = 0
        for n in sizes:
            if progress is not None:
                progress(arch, n)
            topo, core = build_architecture(arch, int(n), node_rate=node_rate)
            gws = topo.nodes_with_role("edge_gateway")[: int(n)]
            demands = [Demand(g, core, service_rate) for g in gws]
            res = simulate(
                topo,
                demands,
                pool_capacity=pool_capacity,
                keys_per_service=keys_per_service,
                policy="static",
                rng=np.random.default_rng([seed, int(n)]),
                duration=duration,
            )
            hop_keys = sum(p.consumed * p.hops for p in res.pools)
            row = {
                "architecture": arch,
                "devices": int(n),
                "qkd_nodes": len(topo.groups),
                "success_rate": res.success_rate,
                "mean_hops": float(np.mean([p.hops for p in res.pools])),
                "key_cost_per_device": hop_keys / (len(gws) * res.duration),
                "services": res.services,
                "elapsed_s": res.elapsed_s,
            }
            rows.append(row)
            if res.success_rate >= target:
                served[arch] = max(served[arch], int(n))
    return {
        "target": target,
        "node_rate": node_rate,
        "service_rate": service_rate,
        "keys_per_service": keys_per_service,
        "rows": rows,
        "served": served,
    }
