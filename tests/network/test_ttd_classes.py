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
from qkdtwin.network.policies import price_weights, routing_arrays
from qkdtwin.network.policies.ttd_classes import _class_rate, ttd_classes

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
