"""Engine against independent references: a birth-death chain, a plain Python loop, accounts."""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.network import (
    POLICIES,
    Demand,
    Topology,
    refill,
    relay_costs,
    seed_topology,
    simulate,
    uniform_demands,
)


def two_node(rate: float = 1.0) -> Topology:
    t = Topology()
    t.add_node("a", "edge_gateway")
    t.add_node("b", "olt")
    t.add_link("a", "b", key_rate=rate)
    return t


def chain_success(c: int, x: int, v: float, lam: float) -> float:
    """Exact stationary success of a pool as a CTMC: +1 key at rate v, -x at rate lam."""
    n = c + 1
    q = np.zeros((n, n))
    for k in range(n):
        if k < c:
            q[k, k + 1] += v
        if k >= x:
            q[k, k - x] += lam
        q[k, k] = -q[k].sum()
    a = np.vstack([q.T, np.ones(n)])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    return float(pi[x:].sum())  # PASTA: arrivals see the stationary distribution


@pytest.mark.parametrize(("c", "x", "v", "lam"), [(30, 3, 1.0, 0.3), (20, 5, 1.0, 0.25)])
def test_single_pool_poisson_matches_birth_death_chain(c, x, v, lam):
    exact = chain_success(c, x, v, lam)
    res = simulate(
        two_node(v),
        [Demand("a", "b", lam)],
        pool_capacity=c,
        keys_per_service=x,
        policy="static",
        rng=np.random.default_rng(7),
        services=300_000,
        generation="poisson",
    )
    assert res.success_rate == pytest.approx(exact, abs=0.006)


def test_single_pool_fluid_matches_plain_python_loop():
    c, x, v, lam, n = 50.0, 10.0, 1.0, 0.12, 5000
    res = simulate(
        two_node(v),
        [Demand("a", "b", lam)],
        pool_capacity=c,
        keys_per_service=x,
        policy="static",
        rng=np.random.default_rng(3),
        services=n,
    )
    rng = np.random.default_rng(3)  # the same draws, replayed by an independent loop
    times = np.cumsum(rng.exponential(1.0 / lam, n))
    level, last, served = c, 0.0, 0
    for t in times:
        level, _, _ = refill(level, v, t - last, c)
        last = t
        if level + 1e-9 >= x:
            level -= x
            served += 1
    assert res.successes == served
    assert res.pools[0].final_level == pytest.approx(level)


def test_long_run_throughput_bound():
    # starved pool: every generated key is eventually used, success -> v / (lam x)
    res = simulate(
        two_node(1.0),
        [Demand("a", "b", 0.2)],
        pool_capacity=100,
        keys_per_service=10,
        policy="static",
        rng=np.random.default_rng(1),
        services=200_000,
    )
    assert res.success_rate == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("generation", ["fluid", "poisson"])
@pytest.mark.parametrize("fill", ["full", "empty"])
def test_conservation(policy, generation, fill):
    topo = seed_topology(2.0)
    res = simulate(
        topo,
        uniform_demands(topo, 0.5),
        pool_capacity=200,
        keys_per_service=10,
        policy=policy,
        rng=np.random.default_rng(11),
        duration=2000.0,
        generation=generation,
        initial_fill=fill,
    )
    for p in res.pools:
        assert p.initial_level + p.generated == pytest.approx(
            p.consumed + p.final_level + p.dropped, rel=1e-9, abs=1e-6
        )
        assert 0.0 <= p.final_level <= 200.0
        assert p.consumed == pytest.approx(10 * p.successes)
    t = res.totals()
    assert t["initial"] + t["generated"] == pytest.approx(
        t["consumed"] + t["stored"] + t["dropped"]
    )


@pytest.mark.parametrize("policy", list(POLICIES))
def test_reproducible_by_seed(policy):
    topo = seed_topology(2.0)
    kw = {
        "pool_capacity": 200,
        "keys_per_service": 10,
        "policy": policy,
        "duration": 1000.0,
        "generation": "poisson",
    }
    d = uniform_demands(topo, 1.0)
    a = simulate(topo, d, rng=np.random.default_rng(5), **kw).to_dict()
    b = simulate(topo, d, rng=np.random.default_rng(5), **kw).to_dict()
    c = simulate(topo, d, rng=np.random.default_rng(6), **kw).to_dict()
    for r in (a, b, c):
        r.pop("elapsed_s")
        r.pop("events_per_s")
    assert a == b
    assert a != c


def test_generation_never_exceeds_budget():
    topo = seed_topology(2.0)
    pairs = [(d.src, d.dst) for d in uniform_demands(topo, 1.0)]
    costs = relay_costs(topo, pairs)
    A = costs.dense()
    for policy in POLICIES:
        res = simulate(
            topo,
            uniform_demands(topo, 1.0),
            pool_capacity=200,
            keys_per_service=10,
            policy=policy,
            rng=np.random.default_rng(2),
            duration=5000.0,
        )
        spent = A @ np.array([p.generated for p in res.pools])
        assert np.all(spent <= costs.capacity * res.duration * (1 + 1e-9)), policy


def test_trace_and_bad_arguments():
    res = simulate(
        two_node(),
        [Demand("a", "b", 0.1)],
        pool_capacity=20,
        keys_per_service=5,
        policy="static",
        rng=np.random.default_rng(0),
        services=50,
        trace=10,
    )
    assert len(res.trace["level"]) == 10
    kw = {"policy": "static", "rng": np.random.default_rng(0), "services": 10}
    with pytest.raises(ConfigError, match="pool_capacity"):
        simulate(two_node(), [Demand("a", "b", 1)], pool_capacity=0, keys_per_service=1, **kw)
    with pytest.raises(ConfigError, match="keys_per_service"):
        simulate(two_node(), [Demand("a", "b", 1)], pool_capacity=5, keys_per_service=6, **kw)
    with pytest.raises(ConfigError, match="rate"):
        simulate(two_node(), [Demand("a", "b", -1)], pool_capacity=5, keys_per_service=1, **kw)
    with pytest.raises(ConfigError, match="unknown node"):
        simulate(two_node(), [Demand("a", "z", 1)], pool_capacity=5, keys_per_service=1, **kw)


def test_initial_levels_start_the_pools_where_the_present_is() -> None:
    # one pool with (almost) no supply: 35 keys serve exactly 3 services of 10 keys
    t = Topology()
    t.add_node("a", "edge_gateway")
    t.add_node("b", "olt")
    t.add_link("a", "b", key_rate=1e-9)
    common = {
        "pool_capacity": 100, "keys_per_service": 10, "policy": "static", "services": 50,
        "rng": np.random.default_rng(0),
    }  # fmt: skip
    res = simulate(t, [Demand("a", "b", 1.0)], initial_levels={("b", "a"): 35.0}, **common)
    assert res.pools[0].successes == 3
    acc = res.totals()
    assert acc["initial"] == 35.0
    assert acc["initial"] + acc["generated"] == pytest.approx(
        acc["consumed"] + acc["stored"] + acc["dropped"]
    )
    with pytest.raises(ConfigError) as err:
        simulate(t, [Demand("a", "b", 1.0)], initial_levels={("a", "b"): 101.0}, **common)
    assert err.value.field == "initial_levels.a|b"
    with pytest.raises(ConfigError) as err:
        simulate(t, [Demand("a", "b", 1.0)], initial_levels={("a", "c"): 1.0}, **common)
    assert err.value.field == "initial_levels"


@pytest.mark.parametrize("policy", ["static", "proportional"])
@pytest.mark.parametrize("generation", ["fluid", "poisson"])
def test_constant_rate_loop_is_the_general_loop_bit_for_bit(policy, generation) -> None:
    # static and proportional run in a loop of their own (``auto``); the general loop
    # (``per-pool``) brings the same pools up to date in the same order and draws the same
    # Poisson counts, so every account, the trace and every balance agree exactly
    topo = seed_topology(1.5)
    rng = np.random.default_rng(5)
    demands = [d for d in uniform_demands(topo, 2.0) if rng.random() < 0.8]
    kw = {
        "pool_capacity": 40.0,
        "keys_per_service": 10.0,
        "policy": policy,
        "services": 20_000,
        "trace": 20_000,
        "generation": generation,
        "initial_fill": "empty",
    }
    auto, ref = (
        simulate(topo, demands, rng=np.random.default_rng(9), algorithm=a, **kw)
        for a in ("auto", "per-pool")
    )
    assert 0.1 < ref.success_rate < 0.95  # blocked and served requests both occur
    np.testing.assert_array_equal(auto.trace["level"], ref.trace["level"])
    for field in ("requests", "successes", "consumed", "generated", "dropped", "final_level"):
        got = [getattr(p, field) for p in auto.pools]
        assert got == [getattr(p, field) for p in ref.pools], field
