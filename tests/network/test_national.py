"""The national topology builder, hub demands and scenarios that use them."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network import (
    build_topology,
    hub_demands,
    national_topology,
    relay_costs,
    simulate,
)
from qkdtwin.network.scenario import load_scenario, run_scenario


@pytest.mark.parametrize(
    ("cores", "metros", "olts", "gws"), [(1, 1, 1, 1), (2, 1, 2, 3), (4, 3, 2, 5)]
)
def test_national_topology_counts_and_rings(cores, metros, olts, gws) -> None:
    t = national_topology(cores, metros, olts, gws)
    g = t.graph
    n_gw = cores * metros * olts * gws
    assert len(t.nodes_with_role("edge_gateway")) == n_gw
    assert len(t.nodes_with_role("olt")) == cores * metros * olts == len(t.groups)
    assert len(t.nodes_with_role("metro")) == cores * (1 + metros)
    assert nx.is_connected(g)
    # a tree below the rings: edges = nodes - 1 + one per independent ring
    backbone_rings = 1 if cores > 2 else 0
    metro_rings = cores if metros >= 2 else 0
    assert g.number_of_edges() == g.number_of_nodes() - 1 + backbone_rings + metro_rings
    # every gateway hangs on one OLT and draws on that OLT's budget
    for gw in t.nodes_with_role("edge_gateway")[:: max(1, n_gw // 7)]:
        (olt,) = g.neighbors(gw)
        assert t.role(olt) == "olt"
        assert g.edges[gw, olt]["group"] == olt


def test_national_paths_cross_the_rings_to_the_core_server() -> None:
    t = national_topology(4, 3, 2, 2, olt_rate=5.0, backbone_rate=7.0, metro_rate=9.0)
    gw = "GW2.1.0.1"
    costs = relay_costs(t, [(gw, "C0")])
    path = costs.paths[0]
    assert path[:3] == (gw, "OLT2.1.0", "M2.1")
    assert path[-1] == "C0"
    assert "C2" in path  # down the metro ring to its core, then along the backbone
    names = [costs.resources[r] for r in costs.hop_res]
    assert "OLT2.1.0" in names
    caps = dict(zip(costs.resources, costs.capacity, strict=True))
    assert caps["OLT2.1.0"] == 5.0
    assert any(caps[n] == 7.0 for n in names)  # a backbone link
    assert any(caps[n] == 9.0 for n in names)  # a metro ring link


def test_national_by_name_and_bad_parameters() -> None:
    t = build_topology("national", cores=2, metros_per_core=1, olts_per_metro=1, gateways_per_olt=2)
    assert len(t.nodes_with_role("edge_gateway")) == 4
    with pytest.raises(ConfigError, match="cores"):
        national_topology(0, 1, 1, 1)


def test_hub_demands_one_per_gateway() -> None:
    t = national_topology(2, 2, 2, 3)
    d = hub_demands(t, "C1", 24.0)
    assert len(d) == 24
    assert {x.dst for x in d} == {"C1"}
    assert sum(x.rate for x in d) == pytest.approx(24.0)
    with pytest.raises(UnknownNameError, match="unknown node"):
        hub_demands(t, "nowhere", 1.0)
    with pytest.raises(ConfigError, match="total_rate"):
        hub_demands(t, "C1", 0.0)
    with pytest.raises(ConfigError, match="no node of role"):
        hub_demands(t, "C1", 1.0, role="server")


def test_scenario_with_hub_demand_runs_akr_by_class_like_the_reference() -> None:
    sc = load_scenario(
        {
            "topology": {
                "builder": "national",
                "params": {"cores": 3, "metros_per_core": 2, "olts_per_metro": 2,
                           "gateways_per_olt": 4, "olt_rate": 2.0},
            },
            "hub_demand": {"dst": "C0", "total_rate": 3.0},
            "pool_capacity": 40,
            "keys_per_service": 10,
            "policy": "adaptive-key-residue",
            "services": 3000,
            "seed": 4,
        }
    )  # fmt: skip
    res = run_scenario(sc)
    assert res.services == 3000
    assert len(res.pools) == 48
    assert 0.2 < res.success_rate < 1.0
    topo = sc.build_topology()
    ref = simulate(
        topo,
        sc.build_demands(topo),
        pool_capacity=40,
        keys_per_service=10,
        policy="adaptive-key-residue",
        rng=np.random.default_rng(4),
        services=3000,
        algorithm="per-pool",
    )
    assert [p.successes for p in ref.pools] == [p.successes for p in res.pools]


def test_scenario_without_any_demand_names_the_three_forms() -> None:
    with pytest.raises(ConfigError, match="hub_demand"):
        load_scenario({"topology": {"builder": "seed"}, "pool_capacity": 10, "services": 10})
