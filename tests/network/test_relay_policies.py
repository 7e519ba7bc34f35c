"""Relay costs per hop, topology builders, and every policy within the resource limits."""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network import (
    Demand,
    Topology,
    build_topology,
    canonical_policy,
    key_path,
    relay_costs,
    seed_topology,
    simulate,
    skewed_demands,
    uniform_demands,
)
from qkdtwin.network.policies import (
    akr_rates,
    price_weights,
    proportional_rates,
    resource_csr,
    static_rates,
    ttd_rates,
)


def test_seed_topology_shape():
    t = seed_topology()
    assert len(t.nodes_with_role("metro")) == 3
    assert len(t.nodes_with_role("olt")) == 3
    assert len(t.nodes_with_role("edge_gateway")) == 6
    assert key_path(t, "GW1.1", "GW1.2") == ["GW1.1", "OLT1", "GW1.2"]
    assert len(key_path(t, "GW1.1", "GW2.1")) - 1 == 5  # GW-OLT-M-M-OLT-GW


def test_relay_consumes_key_on_every_hop():
    topo = seed_topology(2.0)
    costs = relay_costs(topo, [("GW1.1", "GW1.2"), ("GW1.1", "GW2.1"), ("GW1.1", "OLT1")])
    A = costs.dense()
    olt1 = costs.resources.index("OLT1")
    olt2 = costs.resources.index("OLT2")
    assert A[olt1, 0] == 2  # one relay at OLT1: both access links pay one key
    assert A[olt1, 1] == 1
    assert A[olt2, 1] == 1
    assert A[:, 1].sum() == 5  # five hops, one key each
    assert A[:, 2].sum() == 1


def test_chain_relay_in_simulation():
    t = Topology()
    for n in "abc":
        t.add_node(n, "relay")
    t.add_link("a", "b", key_rate=3.0)
    t.add_link("b", "c", key_rate=1.0)
    res = simulate(
        t,
        [Demand("a", "c", 1.0)],
        pool_capacity=1e9,
        keys_per_service=1,
        policy="static",
        rng=np.random.default_rng(0),
        duration=100.0,
        initial_fill="empty",
    )
    # the slower hop limits the relayed rate, and each relayed key costs both hops
    assert res.pools[0].generated == pytest.approx(100.0)
    assert res.pools[0].hops == 2


def test_physical_link_rate():
    t = Topology()
    t.add_node("a", "edge_gateway")
    t.add_node("b", "olt")
    t.add_link("a", "b", protocol="decoy-bb84", length_km=20.0)
    assert t.graph.edges["a", "b"]["key_rate"] > 1.0


@pytest.mark.parametrize("name", ["seed", "centralized", "distributed", "hierarchical", "hybrid"])
def test_builders_are_connected(name):
    import networkx as nx

    t = build_topology(name)
    assert nx.is_connected(t.graph)
    assert len(t.nodes_with_role("edge_gateway")) >= 2


def test_bad_topology_inputs():
    with pytest.raises(UnknownNameError):
        build_topology("ring")
    with pytest.raises(ConfigError):
        build_topology("seed", bogus=1)
    with pytest.raises(ConfigError):
        seed_topology(olt_rate=0.0)
    t = Topology()
    t.add_node("a")
    t.add_node("b")
    with pytest.raises(ConfigError, match="key_rate"):
        t.add_link("a", "b", key_rate=0.0)
    with pytest.raises(ConfigError, match="disconnected"):
        key_path(t, "a", "b")
    with pytest.raises(UnknownNameError):
        canonical_policy("random")


def test_every_policy_within_budgets():
    topo = seed_topology(2.0)
    pairs = [(d.src, d.dst) for d in uniform_demands(topo, 1.0)]
    costs = relay_costs(topo, pairs)
    A = costs.dense()
    res_ptr, res_pool, res_cnt, single = resource_csr(costs)
    rng = np.random.default_rng(0)
    n = len(pairs)
    for _ in range(200):
        level = rng.uniform(0, 200, n) * (rng.random(n) < 0.8)
        demand = rng.uniform(0, 2, n)
        cap = np.full(n, 200.0)
        outs = [static_rates(costs), proportional_rates(costs, demand)]
        v = np.zeros(n)
        akr_rates(level, cap, costs.capacity, res_ptr, res_pool, res_cnt, single, v)
        outs.append(v.copy())
        w = np.zeros(n)
        load = np.zeros(costs.capacity.size)
        price = 1.0 + rng.exponential(2.0, n) * (rng.random(n) < 0.5)
        ttd_rates(
            level,
            demand,
            price,
            100.0,
            costs.capacity,
            costs.pool_ptr,
            costs.hop_res,
            costs.hop_cnt,
            load,
            w,
        )
        outs.append(w.copy())
        # ours never gives a pool more than its demand (it would only overflow)
        assert np.all(w <= demand * (1 + 1e-9))
        for v in outs:
            assert np.all(v >= 0)
            assert np.all(A @ v <= costs.capacity * (1 + 1e-9))
        # ours leaves a budget idle only when each pool it serves gets its full demand or is
        # held back by another budget that is spent
        binding = A @ w >= costs.capacity * (1 - 1e-6)
        held = (A[binding] > 0).any(axis=0)
        for r in np.flatnonzero(~binding):
            free = (A[r] > 0) & ~held
            assert np.all(w[free] >= demand[free] * (1 - 1e-6))


def test_price_weights_against_dense_reference():
    topo = seed_topology(2.0)
    demands = skewed_demands(topo, 1.0)
    costs = relay_costs(topo, [(d.src, d.dst) for d in demands])
    d = np.array([x.rate for x in demands]) * 10.0
    stock = 0.1
    w = price_weights(costs.capacity, costs.pool_ptr, costs.hop_res, costs.hop_cnt, d, stock)
    # reference straight from the formula on the dense matrix
    A = costs.dense()
    excess = np.maximum(A @ d / (costs.capacity + stock * A.sum(axis=1)) - 1.0, 0.0)
    ref = (1.0 + ((A * excess[:, None]) ** 4).sum(axis=0) ** 0.25) ** 4
    np.testing.assert_allclose(w, ref, rtol=1e-12)
    # the intra-OLT pool under the busiest OLT is the dearest pool of all
    assert int(np.argmax(w)) == 0
    assert costs.dense()[:, 0].max() == 2.0
    # no budget over-subscribed: no prices
    ones = price_weights(
        costs.capacity, costs.pool_ptr, costs.hop_res, costs.hop_cnt, d * 1e-3, stock
    )
    np.testing.assert_array_equal(ones, 1.0)


def test_ours_not_behind_akr_under_skewed_demand():
    # The seed network with pair weights 1/rank (load 1000 in a window of 1000, X = 10): the
    # busiest OLT's budget is over-subscribed ~6x. The unpriced balance lost 4.1 pp to the
    # paper's algorithm at C = 200 and 1.2 pp at C = 400 (docs/reproduction.md); the price-aware
    # one must be ahead, paired over 24 seeds not used to choose its constants.
    topo = seed_topology(2.0)
    demands = skewed_demands(topo, 1.0)
    costs = relay_costs(topo, [(d.src, d.dst) for d in demands])
    for cap, floor in ((200, -0.1), (400, 1.0)):
        diffs = []
        for seed in range(500, 524):
            rates = [
                simulate(
                    topo,
                    demands,
                    pool_capacity=cap,
                    keys_per_service=10,
                    policy=pol,
                    rng=np.random.default_rng([seed, 0]),
                    duration=1000.0,
                    costs=costs,
                ).success_rate
                for pol in ("ttd-balance", "adaptive-key-residue")
            ]
            diffs.append(100.0 * (rates[0] - rates[1]))
        mean = float(np.mean(diffs))
        se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
        # margin in percentage points must exceed floor by more than 2 standard errors
        assert mean - 2.0 * se > floor, (cap, mean, se)
