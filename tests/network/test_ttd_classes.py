"""``ttd-balance`` planned by class, against the per-pool reference loop, event by event."""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.network import (
    Demand,
    hub_demands,
    national_topology,
    relay_costs,
    seed_topology,
    simulate,
    skewed_demands,
    uniform_demands,
)
from qkdtwin.network.policies import price_weights, routing_arrays, ttd_rates
from qkdtwin.network.policies.ttd_classes import _class_rate, _plan, ttd_classes

from .test_akr_classes import _assert_same_events, _random_scenario


def _both(topo, demands, seed, n, **kw):
    return [
        simulate(
            topo,
            demands,
            policy="ttd-balance",
            rng=np.random.default_rng(seed),
            services=n,
            trace=n,
            algorithm=algorithm,
            **kw,
        )
        for algorithm in ("per-pool", "by-class")
    ]


@pytest.mark.parametrize("case", range(10))
def test_ttd_by_class_takes_the_reference_decision_at_every_arrival(case) -> None:
    rng = np.random.default_rng(2000 + case)
    topo, demands = _random_scenario(rng)
    x = float(rng.choice([1.0, 5.0, 10.0]))
    cap = x * float(rng.choice([1.0, 2.0, 3.5, 10.0, 40.0]))
    kw = {"pool_capacity": cap, "keys_per_service": x}
    if case % 2:
        kw["initial_fill"] = "empty"
    ref, got = _both(topo, demands, case, 400, **kw)
    assert ref.success_rate > 0.0
    _assert_same_events(ref, got, cap)


@pytest.mark.parametrize("load", [0.3, 0.93, 1.7])
def test_ttd_by_class_on_a_hub_demand_where_classes_hold_many_pools(load) -> None:
    topo = national_topology(3, 2, 2, 8, olt_rate=4.0)
    demands = hub_demands(topo, "C0", load * 12 * 4.0 / 10.0)
    demands.append(Demand("GW0.0.0.0", "GW2.1.1.7", 0.2))  # a pool of its own class
    ref, got = _both(topo, demands, 3, 1500, pool_capacity=60.0, keys_per_service=10.0)
    _assert_same_events(ref, got, 60.0)
    if load > 1.0:
        assert ref.success_rate < 0.9


def test_class_rate_is_the_sum_of_the_pools_rates() -> None:
    # second method: the per-pool formula of ttd_rates, summed in Python
    topo = seed_topology(2.0)
    demands = skewed_demands(topo, 1.0) + uniform_demands(topo, 0.5)
    pairs = sorted({(min(d.src, d.dst), max(d.src, d.dst)) for d in demands})
    costs = relay_costs(topo, pairs)
    r = routing_arrays(costs)
    rng = np.random.default_rng(9)
    demand = np.repeat(rng.uniform(0.1, 1.0, 3), 5)
    price = price_weights(costs.capacity, costs.pool_ptr, costs.hop_res, costs.hop_cnt, demand)
    classes = ttd_classes(r.pool_ptr, r.hop_res, r.hop_cnt, demand, price)
    level = rng.uniform(0.0, 100.0, len(pairs))
    horizon = 7.0
    for k in range(classes.start.size - 1):
        members = np.flatnonzero(classes.pool_class == k)
        bal = np.sort(level[members])
        run = np.cumsum(bal)
        for c in (0.0, 0.3, 1.0, 2.5, 10.0, 1e3):
            want = sum(
                max(0.0, min(demand[p], c * demand[p] / price[p] - level[p] / horizon))
                for p in members
            )
            got = _class_rate(
                c, classes.demand[k], classes.price[k], horizon, bal, run, 0, bal.size
            )
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", range(6))
def test_ttd_by_class_matches_when_the_gaps_exceed_the_horizon(case) -> None:
    # H near the mean inter-arrival gap, so that many gaps dt exceed it: over dt > H the refill
    # of the linear range overshoots (M -> M (1 - dt/H) + c d dt / w) and reverses the order of
    # the balances there, which the class kernel repairs by re-sorting the class. Three hot
    # gateways of one OLT (one class) carry most of the demand under an overloaded budget, so
    # their balances sit together in the linear range (~550 re-sorts over these cases).
    rng = np.random.default_rng(3000 + case)
    topo = national_topology(2, 2, 2, 6, olt_rate=float(rng.uniform(0.5, 3.0)))
    gws = topo.nodes_with_role("edge_gateway")
    demands = [Demand(g, "C0", 1.0) for g in gws[:3]]
    demands += [Demand(g, "C0", 0.05) for g in gws[6::5]]
    total = sum(d.rate for d in demands)
    x = float(rng.choice([1.0, 5.0]))
    cap = x * float(rng.choice([2.0, 3.5]))
    horizon = float(rng.uniform(0.5, 2.0)) / total
    kw = {"pool_capacity": cap, "keys_per_service": x, "horizon": horizon}
    if case % 2:
        kw["initial_fill"] = "empty"
    ref, got = _both(topo, demands, case, 600, **kw)
    assert ref.success_rate > 0.0
    _assert_same_events(ref, got, cap)


@pytest.mark.parametrize("case", range(12))
def test_class_plan_gives_the_rates_of_the_reference_bisection(case) -> None:
    # second method: the reference ttd_rates on the pools (bisection, progressive filling);
    # the class plan solves each round's level exactly and replays the bisection's decisions
    rng = np.random.default_rng(4000 + case)
    topo = national_topology(2, 2, 3, 8, olt_rate=float(rng.uniform(0.5, 4.0)))
    demands = hub_demands(topo, "C0", float(rng.uniform(0.2, 4.0)))
    demands += uniform_demands(topo, float(rng.uniform(0.0, 1.0)))[:: int(rng.integers(5, 40))]
    pairs = [(min(d.src, d.dst), max(d.src, d.dst)) for d in demands]
    keep = sorted(set(pairs))
    costs = relay_costs(topo, keep)
    r = routing_arrays(costs)
    rate_of = dict.fromkeys(keep, 0.0)
    for d, pr in zip(demands, pairs, strict=True):
        rate_of[pr] += d.rate
    demand = 10.0 * np.array([rate_of[pr] for pr in keep])
    stock = float(rng.choice([0.0, 0.5]))
    price = price_weights(
        costs.capacity, costs.pool_ptr, costs.hop_res, costs.hop_cnt, demand, stock
    )
    cap = 60.0
    horizon = float(rng.uniform(0.2, 3.0)) * cap / (20.0 * demand.mean())
    level = rng.uniform(0.0, cap, demand.size)
    if case % 3 == 1:
        level[rng.random(demand.size) < 0.5] = cap  # full pools: ties at the top
    elif case % 3 == 2:
        level[:] = 0.0  # empty pools: every rate linear in c from 0
    want = np.zeros(demand.size)
    ttd_rates(
        level, demand, price, horizon, r.res_cap, r.pool_ptr, r.hop_res, r.hop_cnt,
        np.zeros(r.res_cap.size), want,
    )  # fmt: skip
    cl = ttd_classes(r.pool_ptr, r.hop_res, r.hop_cnt, demand, price)
    order = np.lexsort((level, cl.pool_class))
    bal = level[order]
    run = np.zeros(bal.size)
    m = cl.start.size - 1
    for k in range(m):
        a, b = cl.start[k], cl.start[k + 1]
        run[a:b] = np.cumsum(bal[a:b])
    c_of, rate = np.zeros(m), np.zeros(m)
    frozen = np.zeros(m, dtype=np.bool_)
    _plan(cl, horizon, r.res_cap, bal, run, frozen, c_of, rate, np.zeros(r.res_cap.size))
    k = cl.pool_class
    got = np.clip(c_of[k] * demand / price - level / horizon, 0.0, demand)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * demand.max())
    load = np.zeros(r.res_cap.size)
    np.add.at(load, r.hop_res, r.hop_cnt * np.repeat(want, np.diff(r.pool_ptr)))
    assert (load <= r.res_cap * (1 + 1e-9)).all()
