"""Algorithm 1, line 21: the two readings on a two-OLT example computed by hand.

Two OLTs ``x`` (budget ``V_x``) and ``y`` (``V_y``); pool ``a`` intra-OLT under ``x`` (one
relay: 2 keys of ``x`` per delivered key), ``b`` intra under ``y``, ``c`` cross (1 key of each
OLT per key). Capacity 100 everywhere; utilization ``u = 1 - M / C``.
"""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.network import (
    canonical_policy,
    relay_costs,
    seed_topology,
    simulate,
    uniform_demands,
)
from qkdtwin.network.policies import akr_rates, resource_csr

RES_PTR = np.array([0, 2, 4])
RES_POOL = np.array([0, 2, 1, 2])  # x: a, c; y: b, c
RES_CNT = np.array([2.0, 1.0, 2.0, 1.0])
SINGLE = np.array([True, True, False])
CAP = np.full(3, 100.0)


def _rates(level: list[float], budgets: list[float], resplit: bool) -> np.ndarray:
    out = np.zeros(3)
    akr_rates(
        np.array(level), CAP, np.array(budgets), RES_PTR, RES_POOL, RES_CNT, SINGLE, out, resplit
    )
    return out


def test_hand_example_the_resplit_gives_x_remainder_to_its_intra_pool() -> None:
    # u = (0.5, 0.5, 1). OLT x (V = 4): intra sum 0.5, cross sum 1 -> v_in = 4/3, v_out = 8/3;
    # a is offered (4/3) / 2 = 2/3, c 8/3. OLT y (V = 1): v_in = 1/3, v_out = 2/3; b is offered
    # (1/3) / 2 = 1/6, c 2/3. Line 20: c = min(8/3, 2/3) = 2/3.
    base = _rates([50.0, 50.0, 0.0], [4.0, 1.0], resplit=False)
    np.testing.assert_allclose(base, [2 / 3, 1 / 6, 2 / 3], rtol=1e-12)
    # x spends 2 * 2/3 + 2/3 = 2 of its 4: under "no resplit" the other 2 stay unspent.
    # Resplit: x's remainder goes to a and c in proportion to u (1/3, 2/3 of it), c's part is
    # refused by y (spent), a takes its part whole; each pass hands out a third of what is
    # left, so in the limit a takes all of it: 2a + c = 4 -> a = 5/3; b and c unchanged.
    split = _rates([50.0, 50.0, 0.0], [4.0, 1.0], resplit=True)
    np.testing.assert_allclose(split, [5 / 3, 1 / 6, 2 / 3], rtol=1e-8)


def test_hand_example_a_remainder_whose_only_taker_is_held_elsewhere_stays_unspent() -> None:
    # a is full (u = 0), u_b = 0.5, u_c = 1, V_x = V_y = 4. x: no intra signal -> v_in = 0,
    # v_out = 4, c offered 4. y: v_in = 4/3, v_out = 8/3; b offered 2/3, c 8/3. c = 8/3.
    # x has 4 - 8/3 = 4/3 left, but its only pool that wants keys is c, which y (spent: 2 *
    # 2/3 + 8/3 = 4) cannot give more: the resplit changes nothing.
    for resplit in (False, True):
        got = _rates([100.0, 50.0, 0.0], [4.0, 4.0], resplit=resplit)
        np.testing.assert_allclose(got, [0.0, 2 / 3, 8 / 3], rtol=1e-12)


def test_resplit_respects_every_budget_and_never_gives_less() -> None:
    topo = seed_topology(2.0)
    pairs = [(d.src, d.dst) for d in uniform_demands(topo, 1.0)]
    costs = relay_costs(topo, pairs)
    A = costs.dense()
    res_ptr, res_pool, res_cnt, single = resource_csr(costs)
    rng = np.random.default_rng(1)
    n = len(pairs)
    spent_more = 0
    for _ in range(300):
        level = rng.uniform(0, 200, n) * (rng.random(n) < 0.8)
        cap = np.full(n, 200.0)
        base, split = np.zeros(n), np.zeros(n)
        akr_rates(level, cap, costs.capacity, res_ptr, res_pool, res_cnt, single, base, False)
        akr_rates(level, cap, costs.capacity, res_ptr, res_pool, res_cnt, single, split, True)
        assert np.all(split >= base - 1e-12)  # the resplit only hands out the remainder
        assert np.all(A @ split <= costs.capacity * (1 + 1e-9))
        spent_more += float((A @ split).sum()) > float((A @ base).sum()) + 1e-9
    assert spent_more > 0  # it does spend what the first reading leaves


def test_the_resplit_reading_is_a_policy_of_its_own() -> None:
    assert canonical_policy("akr-resplit") == "adaptive-key-residue-resplit"
    topo = seed_topology(2.0)
    demands = uniform_demands(topo, 1.0)
    runs = {
        pol: simulate(
            topo,
            demands,
            pool_capacity=200,
            keys_per_service=10,
            policy=pol,
            rng=np.random.default_rng([3, 0]),
            duration=1000.0,
        )
        for pol in ("adaptive-key-residue", "adaptive-key-residue-resplit")
    }
    a, b = runs.values()
    assert a.success_rate != pytest.approx(b.success_rate, abs=1e-12)  # different readings
    # spending the remainder generates at least as many keys
    assert sum(p.generated for p in b.pools) >= sum(p.generated for p in a.pools)
