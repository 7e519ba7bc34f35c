"""Compare the survey's four QKD-network architectures: how many IoT devices each can serve.

Nothing about the answer is set per family: every family is built from the same hardware and
grown by its own rule until the twin says it no longer serves its devices.

* **Hardware (fixed for all)**: an edge QKD node (KME, trusted node, OLT, cluster head) has a
  key budget ``node_rate`` shared by its device links and terminates at most ``fanout``
  devices (except the centralized KME, which by definition takes them all); a core link (mesh,
  metro ring, metro-OLT) has its own rate ``core_rate``.
* **Demand (fixed per device)**: every device requests services of ``X`` keys at
  ``service_rate`` per time unit to one partner device (devices matched at random: east-west
  IIoT traffic, e.g. PLC to PLC), through the trusted relays of the cheapest path.
* **Growth rules**: *centralized* one KME; *distributed* one trusted node per ``fanout``
  devices in a full mesh; *hierarchical* one OLT per ``fanout`` devices, ``olts_per_metro``
  OLTs per metro node, metro nodes in a ring; *hybrid* cluster heads as in distributed, but
  per-link access rates (``node_rate / fanout`` each, no pooled budget) as in the survey's mix
  of centralized edges and a distributed core.

:func:`compare_architectures` doubles the number of devices from ``start`` until the success
rate of an exact simulation (equal split, pools of ``C`` keys starting full, ``duration`` time
units) falls below ``target`` or ``max_devices`` is reached, and reports the largest size
served and the key cost per device (keys consumed on all hops, per device and time unit).

Holding hardware equal *per link* favours the families that use many links (a full mesh of
256 nodes is 32,640 core links). Every row therefore also gives the hardware it took
(:func:`hardware`: QKD links, QKD modules, fibre-km) and the result is re-read at **equal
module count** and at **equal fibre-km**: for each budget, the most devices each family
served within it (:func:`within_budget`).

Traffic patterns (``traffic``): ``uniform`` (devices matched at random into pairs:
east-west device-to-device), ``local`` (pairs within the same edge node: a site's machines
talking to each other) and ``central`` (every device to one server device: north-south).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.network.engine import Demand, simulate
from qkdtwin.network.topology import (
    Topology,
    centralized_topology,
    default_length_km,
    distributed_topology,
    hierarchical_topology,
    hybrid_topology,
)

__all__ = [
    "ARCHITECTURES",
    "TRAFFIC_PATTERNS",
    "build_architecture",
    "compare_architectures",
    "hardware",
    "within_budget",
]

ARCHITECTURES = ("centralized", "distributed", "hierarchical", "hybrid")
TRAFFIC_PATTERNS = ("uniform", "local", "central")


def _pairs(gws: list[str], rng: np.random.Generator) -> list[tuple[str, str]]:
    """Match the devices at random into pairs (east-west traffic, one partner each)."""
    order = rng.permutation(len(gws))
    return [(gws[order[i]], gws[order[i + 1]]) for i in range(0, len(order) - 1, 2)]


def _demands(
    topo: Topology, gws: list[str], traffic: str, service_rate: float, rng: np.random.Generator
) -> list[Demand]:
    """Return the services of ``gws`` under a traffic pattern (the same keys per device)."""
    if traffic == "uniform":
        # both ends of a pair request services: 2 * service_rate per pair
        return [Demand(a, b, 2.0 * service_rate) for a, b in _pairs(gws, rng)]
    if traffic == "local":
        sites: dict[str, list[str]] = {}
        for g in gws:  # a device's site: the edge QKD node it hangs off
            sites.setdefault(next(iter(topo.graph.neighbors(g))), []).append(g)
        return [
            Demand(a, b, 2.0 * service_rate)
            for members in sites.values()
            for a, b in _pairs(members, rng)
        ]
    # central: every device to one server device, each at its own rate
    server, clients = gws[0], gws[1:]
    return [Demand(c, server, service_rate) for c in clients]


class Hardware(TypedDict):
    """QKD hardware of a topology (:func:`hardware`)."""

    links: int
    modules: int
    fiber_km: float


class ArchitectureRow(TypedDict):
    """One simulated size of one architecture (a row of :func:`compare_architectures`)."""

    architecture: str
    devices: int
    qkd_nodes: int
    links: int
    modules: int
    fiber_km: float
    success_rate: float
    mean_hops: float
    key_cost_per_device: float
    services: int
    elapsed_s: float


class ArchitectureComparison(TypedDict):
    """Result of :func:`compare_architectures`: the settings, every row, the summaries."""

    target: float
    node_rate: float
    core_rate: float
    fanout: int
    service_rate: float
    keys_per_service: float
    max_devices: int
    traffic: str
    rows: list[ArchitectureRow]
    #: Architecture -> largest size with success >= target (0 if none).
    served: dict[str, int]
    #: Architecture -> True if it never failed up to ``max_devices``.
    capped: dict[str, bool]
    #: Budget (as text) -> architecture -> most devices served within it.
    equal_modules: dict[str, dict[str, int]]
    equal_fiber_km: dict[str, dict[str, int]]


def hardware(topo: Topology) -> Hardware:
    """QKD hardware of a topology: links, modules (two per link) and fibre-km.

    Fibre lengths follow :func:`~qkdtwin.network.topology.default_length_km` (5 km access link,
    15 km OLT uplink, 30 km backbone or mesh link): the layout every family is given, stated
    so that the figures can be redone with another.
    """
    links = topo.graph.number_of_edges()
    fiber = sum(default_length_km(topo.role(a), topo.role(b)) for a, b in topo.graph.edges())
    return {"links": links, "modules": 2 * links, "fiber_km": float(fiber)}


def within_budget(
    rows: Sequence[Mapping[str, Any]], key: str, budgets: Sequence[float], target: float
) -> dict[str, dict[str, int]]:
    """Most devices each architecture served (success >= target) with ``rows[key] <= budget``.

    ``key`` is ``"modules"`` or ``"fiber_km"``; the result is keyed by the budget (as text,
    ``f"{budget:g}"``); an architecture that served nothing within a budget gets 0.
    """
    out: dict[str, dict[str, int]] = {}
    for budget in budgets:
        best: dict[str, int] = {}
        for r in rows:
            best.setdefault(r["architecture"], 0)
            if r[key] <= budget and r["success_rate"] >= target:
                best[r["architecture"]] = max(best[r["architecture"]], int(r["devices"]))
        out[f"{budget:g}"] = best
    return out


def build_architecture(
    name: str,
    devices: int,
    *,
    node_rate: float,
    core_rate: float,
    fanout: int = 100,
    olts_per_metro: int = 10,
) -> Topology:
    """Build family ``name`` for ``devices`` IoT devices by its growth rule.

    Every edge QKD node (KME, trusted node, OLT, cluster head) has the key budget ``node_rate``
    shared by its device links; every core link (mesh, metro ring, metro-OLT) has its own rate
    ``core_rate``. Growth rules: *centralized* one KME for all devices; *distributed* one
    trusted node per ``fanout`` devices, full mesh; *hierarchical* one OLT per ``fanout``
    devices, ``olts_per_metro`` OLTs per metro node, metros in a ring; *hybrid* one cluster
    head per ``fanout`` devices with per-link access rates ``node_rate / fanout`` (no pooled
    budget) and a full mesh core.

    Raises
    ------
    ConfigError
        If the name is unknown or a size is not positive.
    """
    if devices < 2:
        raise ConfigError(f"devices must be >= 2, got {devices}", field="sizes", value=devices)
    edge = math.ceil(devices / fanout)
    if name == "centralized":
        return centralized_topology(devices, node_rate=node_rate)
    if name == "distributed":
        per = math.ceil(devices / edge)
        return distributed_topology(edge, per, node_rate=node_rate, mesh_rate=core_rate)
    if name == "hierarchical":
        metros = math.ceil(edge / olts_per_metro)
        olts = math.ceil(edge / metros)
        per = math.ceil(devices / (metros * olts))
        return hierarchical_topology(metros, olts, per, olt_rate=node_rate, backbone_rate=core_rate)
    if name == "hybrid":
        per = math.ceil(devices / edge)
        # hybrid_topology gives core links 10 * link_rate * sqrt(clusters); undo the sqrt so
        # that every core link has core_rate, the same hardware as the other families
        topo = hybrid_topology(edge, per, link_rate=node_rate / fanout)
        for a, b, data in topo.graph.edges(data=True):
            if a.startswith("H") and b.startswith("H"):
                data["key_rate"] = core_rate
        return topo
    raise ConfigError(
        f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}",
        field="architectures",
        value=name,
    )


def compare_architectures(
    *,
    architectures: Sequence[str] = ARCHITECTURES,
    target: float = 0.99,
    start: int = 100,
    max_devices: int = 25_600,
    node_rate: float = 100.0,
    core_rate: float = 100.0,
    fanout: int = 100,
    service_rate: float = 0.01,
    keys_per_service: float = 10.0,
    pool_capacity: float = 100.0,
    duration: float = 5_000.0,
    seed: int = 1,
    traffic: str = "uniform",
    module_budgets: Sequence[float] = (1_000.0, 10_000.0, 100_000.0),
    fiber_budgets: Sequence[float] = (10_000.0, 100_000.0, 1_000_000.0),
    progress: Callable[[str, int], None] | None = None,
) -> ArchitectureComparison:
    """Largest number of devices each architecture serves at ``target``, found by simulation.

    Parameters
    ----------
    architectures
        Names from :data:`ARCHITECTURES`.
    target
        Success rate a size must reach to count as served.
    start, max_devices
        First size tried; sizes double up to ``max_devices`` (inclusive if reached exactly).
    node_rate, core_rate, fanout
        Budget of every edge QKD node and rate of every core link (keys per time unit);
        devices per edge node.
    service_rate, keys_per_service
        Services per device and time unit, ``X`` keys each.
    pool_capacity, duration, seed
        ``C``, simulated window and seed of each run.
    traffic
        ``uniform``, ``local`` or ``central`` (module docstring).
    module_budgets, fiber_budgets
        Budgets of the equal-hardware re-reading (QKD modules; fibre-km).
    progress
        Called with (architecture, size) before each run.

    Returns
    -------
    dict
        ``rows`` (architecture, devices, qkd_nodes, links, modules, fiber_km, success_rate,
        mean_hops, key_cost_per_device, services), ``served`` (architecture -> largest size
        with success >= target, 0 if none), ``capped`` (architecture -> True if it never failed
        up to ``max_devices``), ``equal_modules`` and ``equal_fiber_km`` (budget ->
        architecture -> most devices served within it, :func:`within_budget`).

    Raises
    ------
    ConfigError
        If the target, a rate or a size is out of range, or an architecture is unknown.
    """
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"target must be in (0, 1], got {target}", field="target")
    for field, value in (
        ("node_rate", node_rate),
        ("core_rate", core_rate),
        ("service_rate", service_rate),
    ):
        if not value > 0:
            raise ConfigError(f"{field} must be > 0, got {value}", field=field, allowed="> 0")
    if traffic not in TRAFFIC_PATTERNS:
        raise ConfigError(
            f"traffic must be one of {', '.join(TRAFFIC_PATTERNS)}, got {traffic!r}",
            field="traffic",
            value=traffic,
            allowed=", ".join(TRAFFIC_PATTERNS),
        )
    if start < 2 or max_devices < start or fanout < 1:
        raise ConfigError(
            f"sizes: need 2 <= start <= max_devices and fanout >= 1, got start {start}, "
            f"max_devices {max_devices}, fanout {fanout}",
            field="sizes",
        )
    rows: list[ArchitectureRow] = []
    served: dict[str, int] = {}
    capped: dict[str, bool] = {}
    for arch in architectures:
        served[arch] = 0
        capped[arch] = True
        n = int(start)
        while n <= max_devices:
            if progress is not None:
                progress(arch, n)
            topo = build_architecture(
                arch, n, node_rate=node_rate, core_rate=core_rate, fanout=fanout
            )
            gws = topo.nodes_with_role("edge_gateway")[:n]
            rng = np.random.default_rng([seed, n])
            demands = _demands(topo, gws, traffic, service_rate, rng)
            res = simulate(
                topo,
                demands,
                pool_capacity=pool_capacity,
                keys_per_service=keys_per_service,
                policy="static",
                rng=rng,
                duration=duration,
            )
            hop_keys = sum(p.consumed * p.hops for p in res.pools)
            rows.append(
                {
                    "architecture": arch,
                    "devices": n,
                    "qkd_nodes": len(topo.groups) or len(topo.nodes_with_role("kme")),
                    **hardware(topo),
                    "success_rate": res.success_rate,
                    "mean_hops": float(np.mean([p.hops for p in res.pools])),
                    "key_cost_per_device": hop_keys / (n * res.duration),
                    "services": res.services,
                    "elapsed_s": res.elapsed_s,
                }
            )
            if res.success_rate < target:
                capped[arch] = False
                break
            served[arch] = n
            n *= 2
    return {
        "target": target,
        "node_rate": node_rate,
        "core_rate": core_rate,
        "fanout": fanout,
        "service_rate": service_rate,
        "keys_per_service": keys_per_service,
        "max_devices": max_devices,
        "traffic": traffic,
        "rows": rows,
        "served": served,
        "capped": capped,
        "equal_modules": within_budget(rows, "modules", module_budgets, target),
        "equal_fiber_km": within_budget(rows, "fiber_km", fiber_budgets, target),
    }
