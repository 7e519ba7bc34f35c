"""The key network of the live twin: key pools, relay paths and the allocation policy, per tick.

It is the network engine's model (:mod:`qkdtwin.network`) advanced in fixed ticks instead of
event by event, so that an operator can watch it and links can go down under it:

* one pool of capacity ``C`` per node pair with demand, fed through its fewest-hop trusted-relay
  path over the links that are *up* (:func:`qkdtwin.network.relay_costs` on the topology without
  the links in alarm: this is the rerouting); a pair left without a path gets rate 0;
* per tick of ``dt``: every pool grows by ``v_p dt`` up to ``C`` (excess dropped and counted),
  ``n_p ~ Poisson(lambda_p dt)`` services arrive and ``min(n_p, floor(M_p / X))`` are served,
  each taking ``X`` keys;
* then the policy re-plans the rates from the new balances (``static`` and ``proportional`` only
  change on a reroute; ``adaptive-key-residue`` and ``ttd-balance`` every tick), with the same
  compiled kernels as the event engine.

The tick discretisation differs from the exact engine only in the order of arrivals and refill
within a tick; what-if predictions use the exact engine (:mod:`qkdtwin.twin.whatif`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypedDict

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from qkdtwin.network import Demand, RelayCosts, Topology, relay_costs
from qkdtwin.network.policies import (
    constant_rates,
    get_policy,
    plan_dynamic,
    price_weights,
    routing_arrays,
)

__all__ = ["KeyNetwork", "PoolData", "PoolView", "topology_without"]

_EPS = 1e-9


def topology_without(topology: Topology, down: set[str]) -> Topology:
    """Copy of ``topology`` without the links whose canonical id is in ``down``."""
    g = nx.Graph(topology.graph)
    for a, b in list(g.edges()):
        if "-".join(sorted((str(a), str(b)))) in down:
            g.remove_edge(a, b)
    return Topology(graph=g, groups=dict(topology.groups), name=topology.name)


class PoolData(TypedDict):
    """A :class:`PoolView` as plain data (:meth:`PoolView.to_dict`)."""

    id: str
    src: str
    dst: str
    level: float
    capacity: float
    rate: float
    path: list[str] | None
    default_path: list[str] | None
    routable: bool
    rerouted: bool
    requests: int
    successes: int
    success_rate: float | None


@dataclass(frozen=True)
class PoolView:
    """One pool as the API shows it (keys, keys per second, counts)."""

    src: str
    dst: str
    level: float
    capacity: float
    rate: float
    path: list[str] | None
    requests: int
    successes: int
    #: The relay path with every link up (``path`` differs from it after a reroute).
    default_path: list[str] | None = None

    def to_dict(self) -> PoolData:
        """Plain data for JSON."""
        return {
            "id": f"{self.src}|{self.dst}",
            "src": self.src,
            "dst": self.dst,
            "level": self.level,
            "capacity": self.capacity,
            "rate": self.rate,
            "path": self.path,
            "default_path": self.default_path,
            "routable": self.path is not None,
            "rerouted": self.path is not None and self.path != self.default_path,
            "requests": self.requests,
            "successes": self.successes,
            "success_rate": self.successes / self.requests if self.requests else None,
        }


class KeyNetwork:
    """Live key pools of a topology under an allocation policy.

    Parameters
    ----------
    topology
        The network (link rates and shared budgets in keys per second).
    demands
        Poisson service arrivals per pair, per second.
    pool_capacity
        ``C``, keys.
    keys_per_service
        ``X``, keys.
    policy
        Policy name (:data:`qkdtwin.network.POLICIES`, aliases accepted).
    horizon_s
        Run length the policies' stock term assumes (the scenario's ``duration``), s.
    initial_fill
        ``full`` or ``empty``.
    """

    def __init__(
        self,
        topology: Topology,
        demands: list[Demand],
        *,
        pool_capacity: float,
        keys_per_service: float,
        policy: str,
        horizon_s: float,
        initial_fill: str = "full",
    ) -> None:
        self.topology = topology
        self._policy = get_policy(policy)
        self.policy = self._policy.name
        self.capacity = float(pool_capacity)
        self.keys = float(keys_per_service)
        self.horizon_s = float(horizon_s)
        merged: dict[tuple[str, str], float] = {}
        for d in demands:
            key = (d.src, d.dst) if d.src <= d.dst else (d.dst, d.src)
            merged[key] = merged.get(key, 0.0) + float(d.rate)
        self.pairs = list(merged)
        self.lam = np.array([merged[k] for k in self.pairs], dtype=np.float64)
        n = len(self.pairs)
        self.level = np.full(n, self.capacity) if initial_fill == "full" else np.zeros(n)
        self.rates = np.zeros(n)
        self.requests = np.zeros(n, dtype=np.int64)
        self.successes = np.zeros(n, dtype=np.int64)
        self.generated = np.zeros(n)
        self.dropped = np.zeros(n)
        self.consumed = np.zeros(n)
        self.paths: list[list[str] | None] = [None] * n
        self.down: set[str] = set()
        # generation of each pool in the latest ticks, to discard key made during an attack
        self.recent_gen: deque[NDArray[np.float64]] = deque(maxlen=16)
        self.reroutes = 0
        self.reroute(set())
        #: Each pool's relay path with every link up: a pool whose path differs was rerouted.
        self.default_paths = list(self.paths)

    def reroute(self, down: set[str]) -> list[int]:
        """Recompute relay paths avoiding the links in ``down``; return pools whose path changed."""
        self.down = set(down)
        topo = topology_without(self.topology, self.down)
        live = [
            i
            for i, (a, b) in enumerate(self.pairs)
            if a in topo.graph and b in topo.graph and nx.has_path(topo.graph, a, b)
        ]
        old = list(self.paths)
        self.paths = [None] * len(self.pairs)
        self._live = np.asarray(live, dtype=np.int64)
        if live:
            self.costs: RelayCosts | None = relay_costs(topo, [self.pairs[i] for i in live])
            for j, i in enumerate(live):
                self.paths[i] = list(self.costs.paths[j])
            self._routing = routing_arrays(self.costs)
            dk = self.lam[self._live] * self.keys
            self._demand_keys = dk
            stock = 0.5 * self.capacity / self.horizon_s
            self._price = price_weights(
                self.costs.capacity,
                self.costs.pool_ptr,
                self.costs.hop_res,
                self.costs.hop_cnt,
                dk,
                stock,
            )
            self._horizon = self.capacity / (20.0 * float(dk.mean()))
            self._load = np.zeros(self.costs.capacity.size)
        else:
            self.costs = None
        self.reroutes += 1
        self.replan()
        return [i for i in range(len(self.pairs)) if old[i] != self.paths[i]]

    def replan(self) -> None:
        """Let the policy set every routable pool's rate from the current balances."""
        self.rates[:] = 0.0
        if self.costs is None:
            return
        live = self._live
        pol = self._policy
        if not pol.dynamic:
            r = constant_rates(pol, self.costs, self._demand_keys)
        else:
            r = np.zeros(live.size)
            plan_dynamic(
                pol.code,
                self.level[live].astype(np.float64),
                np.full(live.size, self.capacity),
                self._routing,
                self._demand_keys,
                self._price,
                self._horizon,
                self._load,
                r,
            )
        self.rates[live] = np.where(np.isfinite(r), r, 0.0)

    def step(self, dt: float, rng: np.random.Generator) -> tuple[int, int]:
        """Advance ``dt`` seconds: refill, serve Poisson arrivals, re-plan; return (req, served)."""
        gen = self.rates * dt
        new = self.level + gen
        drop = np.maximum(0.0, new - self.capacity)
        self.level = np.minimum(new, self.capacity)
        self.generated += gen
        self.dropped += drop
        self.recent_gen.append(gen - drop)
        arrivals = rng.poisson(self.lam * dt)
        can = np.floor((self.level + _EPS) / self.keys).astype(np.int64)
        served = np.minimum(arrivals, can)
        self.level = np.maximum(0.0, self.level - served * self.keys)
        self.consumed += served * self.keys
        self.requests += arrivals
        self.successes += served
        self.replan()
        return int(arrivals.sum()), int(served.sum())

    def discard_recent(self, link: str, ticks: int) -> float:
        """Remove from the pools relayed over ``link`` the key of the last ``ticks`` ticks.

        Returns the keys discarded (a pool never goes below zero).
        """
        idx = [i for i, p in enumerate(self.paths) if p is not None and _uses(p, link)]
        if not idx or not self.recent_gen:
            return 0.0
        recent = list(self.recent_gen)[-ticks:]
        amount = np.sum(recent, axis=0)[idx]
        before = self.level[idx].copy()
        self.level[idx] = np.maximum(0.0, self.level[idx] - amount)
        return float(np.sum(before - self.level[idx]))

    def pools(self) -> list[PoolView]:
        """Every pool as a :class:`PoolView`."""
        return [
            PoolView(
                a,
                b,
                float(self.level[i]),
                self.capacity,
                float(self.rates[i]),
                self.paths[i],
                int(self.requests[i]),
                int(self.successes[i]),
                self.default_paths[i],
            )
            for i, (a, b) in enumerate(self.pairs)
        ]

    def success_rate(self) -> float | None:
        """Return served over requested since start (``None`` before the first request)."""
        req = int(self.requests.sum())
        return int(self.successes.sum()) / req if req else None


def _uses(path: list[str], link: str) -> bool:
    return any("-".join(sorted((path[k], path[k + 1]))) == link for k in range(len(path) - 1))
