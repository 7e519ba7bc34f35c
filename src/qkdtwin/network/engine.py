"""Exact discrete-event simulation of a key network under an allocation policy.

Model
-----
* One key pool of capacity ``C`` per node pair that has demand. Keys reach a pool through its
  trusted-relay path at the pool's rate ``v_p`` (keys per time unit); relaying costs every
  generation resource on the path (see :mod:`qkdtwin.network.relay`), and the policy keeps
  ``A v <= capacity``.
* Services arrive as a Poisson process per pair (rates ``lambda_p`` per time unit); each needs
  ``X`` keys and is served only if the pool holds at least ``X`` (no partial consumption),
  else it is blocked (cause ``insufficient_keys``).
* The only events are service arrivals. Pools are refilled lazily (:mod:`qkdtwin.network.pools`):
  with a constant-rate policy an arrival touches one pool, O(1); an adaptive policy recomputes
  all rates at each arrival (the paper's Algorithm 1 runs "for task request R(s, d)"), O(pools)
  in the reference loop. With fluid generation, Adaptive Key Residue is advanced by classes of
  pools with the same resource use instead (:mod:`qkdtwin.network.policies.akr_classes`):
  the same events, O(classes) per arrival; ``ttd-balance`` sums its bisection's trial loads
  per class (:mod:`qkdtwin.network.policies.ttd_classes`).
  Arrival times of a Poisson process are generated vectorised; the event loop is compiled with
  numba. Arrivals are processed in time order, ties in generation order, as SimPy's
  ``(time, seq)`` heap would; a heap is not needed because no event schedules another.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

import numpy as np
from numba import njit
from numpy.typing import NDArray

from qkdtwin._validate import in_range
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network.policies import (
    Routing,
    constant_rates,
    get_policy,
    plan_dynamic,
    pool_classes,
    price_weights,
    routing_arrays,
    run_akr_by_class,
)
from qkdtwin.network.policies.registry import AKR, AKR_RESPLIT, TTD
from qkdtwin.network.policies.ttd_classes import run_ttd_by_class, ttd_classes
from qkdtwin.network.pools import SERVE_EPS, PoolAccounts, PoolStats, PoolStatsDict, serve
from qkdtwin.network.relay import RelayCosts, relay_costs
from qkdtwin.network.topology import Topology

__all__ = [
    "Demand",
    "SimulationResult",
    "hub_demands",
    "simulate",
    "skewed_demands",
    "uniform_demands",
]

_WARM: set[str] = set()
_ALGORITHMS = ("auto", "per-pool", "by-class")
# ``auto`` plans ttd-balance by class only from this many pools and 4 pools per class up: on
# the seed network (15 pools, 6 classes) the per-pool loop is as fast (6.7k vs 6.1k req/s)
_TTD_MIN_POOLS = 100


@dataclass(frozen=True)
class Demand:
    """Poisson service arrivals between ``src`` and ``dst`` at ``rate`` per time unit."""

    src: str
    dst: str
    rate: float


def uniform_demands(
    topology: Topology, total_rate: float, *, role: str = "edge_gateway"
) -> list[Demand]:
    """Uniform demand over all unordered pairs of nodes of ``role``, ``total_rate`` in all.

    Examples
    --------
    >>> from qkdtwin.network import seed_topology
    >>> len(uniform_demands(seed_topology(), 1.0))
    15
    """
    nodes = topology.nodes_with_role(role)
    pairs = [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :]]
    if not pairs:
        raise ConfigError(f"fewer than two nodes of role {role!r}", field="demands")
    return [Demand(a, b, total_rate / len(pairs)) for a, b in pairs]


def skewed_demands(
    topology: Topology, total_rate: float, *, exponent: float = 1.0, role: str = "edge_gateway"
) -> list[Demand]:
    """Zipf demand: the pairs of :func:`uniform_demands`, in its order, weighted ``1/rank^s``.

    The skewed traffic of the policy comparisons (``s = 1``: pair weights 1/rank; on the seed
    network the busiest OLT's budget is then ~6x over-subscribed), ``total_rate`` in all.

    Examples
    --------
    >>> from qkdtwin.network import seed_topology
    >>> d = skewed_demands(seed_topology(), 1.0)
    >>> round(d[0].rate / d[1].rate, 9), round(sum(x.rate for x in d), 9)
    (2.0, 1.0)
    """
    pairs = uniform_demands(topology, 1.0, role=role)
    w = 1.0 / np.arange(1, len(pairs) + 1) ** float(exponent)
    w *= total_rate / w.sum()
    return [Demand(d.src, d.dst, float(wi)) for d, wi in zip(pairs, w, strict=True)]


def hub_demands(
    topology: Topology, dst: str, total_rate: float, *, role: str = "edge_gateway"
) -> list[Demand]:
    """Every node of ``role`` asks for keys with ``dst`` (a core server), ``total_rate`` in all.

    One pool per node: the demand of a national deployment where each gateway talks to a data
    centre.

    Raises
    ------
    UnknownNameError
        If ``dst`` is not a node.
    ConfigError
        If no node other than ``dst`` has the role, or the rate is not positive.

    Examples
    --------
    >>> from qkdtwin.network import seed_topology
    >>> d = hub_demands(seed_topology(), "M1", 6.0)
    >>> len(d), d[0].dst, d[0].rate
    (6, 'M1', 1.0)
    """
    if dst not in topology.graph:
        raise UnknownNameError(f"unknown node {dst!r}", field="demands.dst", value=dst)
    rate = in_range("total_rate", total_rate, 0.0, low_open=True)
    nodes = [n for n in topology.nodes_with_role(role) if n != dst]
    if not nodes:
        raise ConfigError(f"no node of role {role!r} besides {dst!r}", field="demands")
    each = rate / len(nodes)
    return [Demand(n, dst, each) for n in nodes]


class KeyTotals(TypedDict):
    """Network-wide key accounts (:meth:`SimulationResult.totals`)."""

    initial: float
    generated: float
    consumed: float
    stored: float
    dropped: float


class BlockedCounts(TypedDict):
    """Refused requests by cause."""

    insufficient_keys: int


class SimulationResultDict(TypedDict):
    """Plain-data form of :class:`SimulationResult` (the ``network run --json`` contract).

    ``trace`` only when the run traced pool levels.
    """

    policy: str
    services: int
    successes: int
    blocked: BlockedCounts
    success_rate: float
    duration: float
    keys: KeyTotals
    key_utilization: float | None
    pools: list[PoolStatsDict]
    elapsed_s: float
    events_per_s: float | None
    trace: NotRequired[dict[str, list[float]]]


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`.

    Attributes
    ----------
    policy
        Canonical policy name.
    services, successes
        Requests and served requests.
    duration
        Simulated time (time units).
    pools
        Per-pool statistics.
    elapsed_s
        Wall time of the simulation.
    trace
        Level of the requested pool after each of the first ``trace`` requests:
        ``(time, pool_index, level)`` arrays (empty unless asked for).
    """

    policy: str
    services: int
    successes: int
    duration: float
    pools: list[PoolStats]
    elapsed_s: float
    trace: dict[str, list[float]] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Served over requested (NaN without requests)."""
        return self.successes / self.services if self.services else float("nan")

    def totals(self) -> KeyTotals:
        """Network-wide key accounts (``generated + initial = consumed + stored + dropped``)."""
        return {
            "initial": float(sum(p.initial_level for p in self.pools)),
            "generated": float(sum(p.generated for p in self.pools)),
            "consumed": float(sum(p.consumed for p in self.pools)),
            "stored": float(sum(p.final_level for p in self.pools)),
            "dropped": float(sum(p.dropped for p in self.pools)),
        }

    def to_dict(self) -> SimulationResultDict:
        """Plain-data form (the ``network run --json`` contract)."""
        tot = self.totals()
        supplied = tot["initial"] + tot["generated"]
        out: SimulationResultDict = {
            "policy": self.policy,
            "services": self.services,
            "successes": self.successes,
            "blocked": {"insufficient_keys": self.services - self.successes},
            "success_rate": self.success_rate,
            "duration": self.duration,
            "keys": tot,
            "key_utilization": tot["consumed"] / supplied if supplied > 0 else None,
            "pools": [p.to_dict() for p in self.pools],
            "elapsed_s": self.elapsed_s,
            "events_per_s": self.services / self.elapsed_s if self.elapsed_s > 0 else None,
        }
        if self.trace:
            out["trace"] = self.trace
        return out


@njit(cache=True)
def _advance(
    q: int,
    t: float,
    level: NDArray[np.float64],
    last: NDArray[np.float64],
    rates: NDArray[np.float64],
    cap: NDArray[np.float64],
    generated: NDArray[np.float64],
    dropped: NDArray[np.float64],
    poisson: bool,
) -> None:  # pragma: no cover - compiled
    dt = t - last[q]
    if dt > 0.0:
        lam = rates[q] * dt
        g = lam
        if poisson:
            # numba's own generator state, seeded in _run from the caller's rng
            g = float(np.random.poisson(lam)) if lam > 0.0 else 0.0  # noqa: NPY002
        generated[q] += g
        x = level[q] + g
        if x > cap[q]:
            dropped[q] += x - cap[q]
            x = cap[q]
        level[q] = x
        last[q] = t


@njit(cache=True, nogil=True)
def _run_constant(
    times: NDArray[np.float64],
    req_pool: NDArray[np.int64],
    keys: float,
    t_end: float,
    cap: NDArray[np.float64],
    level: NDArray[np.float64],
    rates: NDArray[np.float64],
    poisson: bool,
    seed: int,
    acc: PoolAccounts,
) -> None:  # pragma: no cover - compiled
    """Run the arrivals of a constant-rate policy (``static``, ``proportional``).

    The same events as :func:`_run` with ``dynamic=False`` (only the served pool is brought up
    to date; tests compare the two bit for bit), in a loop of its own with the service rule of
    :func:`~qkdtwin.network.pools.serve` written out on local arrays: through ``serve`` and the
    accounts tuple, numba's code ran this loop at ~55 % of the speed (seed network, 8.4 vs
    15.1-15.7 million requests/s; ``benchmarks/seed_regression.py``), even with ``serve``
    inlined.
    """
    n_pools = level.size
    generated, dropped = acc.generated, acc.dropped
    requests, successes, consumed, trace = acc.requests, acc.successes, acc.consumed, acc.trace
    if poisson:
        np.random.seed(seed)  # noqa: NPY002
    last = np.zeros(n_pools)
    for i in range(times.size):
        p = req_pool[i]
        _advance(p, times[i], level, last, rates, cap, generated, dropped, poisson)
        requests[p] += 1
        if level[p] + SERVE_EPS >= keys:  # serve()'s rule
            level[p] -= keys
            if level[p] < 0.0:
                level[p] = 0.0
            successes[p] += 1
            consumed[p] += keys
        if i < trace.size:
            trace[i] = level[p]
    for q in range(n_pools):
        _advance(q, t_end, level, last, rates, cap, generated, dropped, poisson)


# nogil: a Dask worker running a long replication keeps answering its heartbeats
@njit(cache=True, nogil=True)
def _run(
    times: NDArray[np.float64],
    req_pool: NDArray[np.int64],
    keys: float,
    t_end: float,
    cap: NDArray[np.float64],
    level: NDArray[np.float64],
    rates: NDArray[np.float64],
    policy: int,
    dynamic: bool,
    routing: Routing,
    demand: NDArray[np.float64],
    price: NDArray[np.float64],
    horizon: float,
    poisson: bool,
    seed: int,
    acc: PoolAccounts,
) -> None:  # pragma: no cover - compiled
    n_pools = level.size
    generated, dropped = acc.generated, acc.dropped
    if poisson:
        # numba's own per-thread state (not numpy's global one), seeded from the caller's rng
        np.random.seed(seed)  # noqa: NPY002
    last = np.zeros(n_pools)
    load = np.zeros(routing.res_cap.size)
    if dynamic:
        plan_dynamic(policy, level, cap, routing, demand, price, horizon, load, rates)
    for i in range(times.size):
        t = times[i]
        p = req_pool[i]
        if dynamic:
            for q in range(n_pools):
                _advance(q, t, level, last, rates, cap, generated, dropped, poisson)
        else:
            _advance(p, t, level, last, rates, cap, generated, dropped, poisson)
        level[p] = serve(acc, i, p, level[p], keys)[0]
        if dynamic:
            plan_dynamic(policy, level, cap, routing, demand, price, horizon, load, rates)
    for q in range(n_pools):
        _advance(q, t_end, level, last, rates, cap, generated, dropped, poisson)


def simulate(
    topology: Topology,
    demands: list[Demand],
    *,
    pool_capacity: float,
    keys_per_service: float,
    policy: str,
    rng: np.random.Generator,
    services: int | None = None,
    duration: float | None = None,
    initial_fill: str = "full",
    generation: str = "fluid",
    trace: int = 0,
    horizon: float | None = None,
    costs: RelayCosts | None = None,
    initial_levels: Mapping[tuple[str, str], float] | None = None,
    algorithm: str = "auto",
) -> SimulationResult:
    """Simulate service requests on a key network; exact, event by event.

    Parameters
    ----------
    topology
        The network.
    demands
        Poisson arrival rate per node pair (pairs given twice are merged).
    pool_capacity
        ``C``, keys per pool (> 0).
    keys_per_service
        ``X``, keys per service (> 0, at most ``C``).
    policy
        ``static``, ``proportional``, ``adaptive-key-residue`` (line 21 read as no resplit),
        ``adaptive-key-residue-resplit`` (read as a resplit) or ``ttd-balance``.
    rng
        Source of all randomness (arrivals and, for Poisson generation, key arrivals).
    services, duration
        Exactly one: number of requests to simulate, or simulated time (the number of
        requests is then Poisson).
    initial_fill
        ``full`` (pools start at ``C``) or ``empty``.
    generation
        ``fluid`` (keys arrive at a constant rate) or ``poisson`` (one by one, Poisson).
    trace
        Record the pool level after each of the first ``trace`` requests.
    horizon
        Look-ahead of ``ttd-balance`` (default: ``C`` over 20 times the mean key demand per
        pool).
    costs
        Precomputed :func:`relay_costs` of the demand pairs (saves path search in sweeps).
    initial_levels
        Keys in each pool at the start, by pair ``(src, dst)`` (either order), each in
        ``[0, C]``; pairs not named start as ``initial_fill`` says. A what-if "from the
        present" passes the live levels here.
    algorithm
        How a dynamic policy is advanced; every choice simulates the same events.
        ``per-pool``: the reference loop, every pool refilled and re-planned at every arrival
        (O(pools) per arrival). ``by-class`` (fluid generation only): Adaptive Key Residue
        (both readings) advanced by classes of pools with the same resource use
        (:mod:`qkdtwin.network.policies.akr_classes`, O(classes) per arrival), and
        ``ttd-balance`` with its bisection summed per class of pools with the same resource
        use, demand and price (:mod:`qkdtwin.network.policies.ttd_classes`; the refill stays
        O(pools) per arrival, each of its ~60-120 trial levels costs O(classes log pools)).
        ``auto`` (default): ``by-class`` for Adaptive Key Residue where it applies (faster
        even when every pool is a class of its own: 10x on the seed network); for
        ``ttd-balance`` from 100 pools and 4 pools per class up; for ``static`` and
        ``proportional`` (constant rates: only the served pool is brought up to date) a loop of
        their own, the same events as ``per-pool`` bit for bit; else ``per-pool``.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ConfigError
        On a non-positive capacity, rate or count, an unknown policy or node, a demand between
        disconnected nodes, or both/neither of ``services`` and ``duration``.

    Examples
    --------
    >>> import numpy as np
    >>> from qkdtwin.network import Topology
    >>> t = Topology()
    >>> t.add_node("a", "edge_gateway"); t.add_node("b", "olt")
    >>> t.add_link("a", "b", key_rate=1.0)
    >>> res = simulate(t, [Demand("a", "b", 0.05)], pool_capacity=100, keys_per_service=10,
    ...                policy="static", rng=np.random.default_rng(1), services=1000)
    >>> 0.0 < res.success_rate <= 1.0
    True
    """
    pol = get_policy(policy)
    name = pol.name
    cap_c = in_range("pool_capacity", pool_capacity, 0.0, low_open=True)
    x = in_range("keys_per_service", keys_per_service, 0.0, cap_c, low_open=True)
    if (services is None) == (duration is None):
        raise ConfigError("give exactly one of services and duration", field="services")
    if initial_fill not in ("full", "empty"):
        raise ConfigError(
            f"initial_fill must be 'full' or 'empty', got {initial_fill!r}",
            field="initial_fill",
            value=initial_fill,
            allowed="full, empty",
        )
    if generation not in ("fluid", "poisson"):
        raise ConfigError(
            f"generation must be 'fluid' or 'poisson', got {generation!r}",
            field="generation",
            value=generation,
            allowed="fluid, poisson",
        )
    if algorithm not in _ALGORITHMS:
        raise ConfigError(
            f"algorithm must be one of {', '.join(_ALGORITHMS)}, got {algorithm!r}",
            field="algorithm",
            value=algorithm,
            allowed=", ".join(_ALGORITHMS),
        )
    by_class_ok = pol.code in (AKR, AKR_RESPLIT, TTD) and generation == "fluid"
    if algorithm == "by-class" and not by_class_ok:
        raise ConfigError(
            "algorithm 'by-class' runs adaptive-key-residue (both readings) and ttd-balance "
            f"with fluid generation only (got policy {name!r}, generation {generation!r})",
            field="algorithm",
            value=algorithm,
        )
    if not demands:
        raise ConfigError("at least one demand is needed", field="demands")
    merged: dict[tuple[str, str], float] = {}
    for d in demands:
        in_range("demands.rate", d.rate, 0.0, low_open=True)
        key = (d.src, d.dst) if d.src <= d.dst else (d.dst, d.src)
        merged[key] = merged.get(key, 0.0) + float(d.rate)
    pairs = list(merged)
    lam = np.array([merged[k] for k in pairs])
    if costs is None:
        costs = relay_costs(topology, pairs)
    n_pools = len(pairs)
    demand_keys = lam * x
    rates = constant_rates(pol, costs, demand_keys)
    total = float(lam.sum())
    if services is not None:
        n = int(in_range("services", services, 1.0))
        times = np.cumsum(rng.exponential(1.0 / total, n))
        t_end = float(times[-1])
    else:
        t_end = in_range("duration", float(duration or 0.0), 0.0, low_open=True)
        n = int(rng.poisson(total * t_end))
        times = np.sort(rng.uniform(0.0, t_end, n))
    cum = np.cumsum(lam)
    req_pool = np.minimum(np.searchsorted(cum, rng.random(n) * total, side="right"), n_pools - 1)
    req_pool = req_pool.astype(np.int64)
    seed = int(rng.integers(0, 2**31 - 1))
    if horizon is None:
        horizon = cap_c / (20.0 * float(demand_keys.mean()))
    cap = np.full(n_pools, cap_c)
    level = cap.copy() if initial_fill == "full" else np.zeros(n_pools)
    if initial_levels:
        index = {k: i for i, k in enumerate(pairs)}
        for (a, b), v in initial_levels.items():
            i = index.get((a, b) if a <= b else (b, a))
            if i is None:
                raise ConfigError(
                    f"initial_levels: {a}|{b} is not a demand pair",
                    field="initial_levels",
                    value=f"{a}|{b}",
                )
            level[i] = in_range(f"initial_levels.{a}|{b}", float(v), 0.0, cap_c)
    # spendable stock: half the initial keys over the run (nothing when pools start empty)
    stock = 0.5 * float(level.mean()) / t_end
    price = price_weights(
        costs.capacity, costs.pool_ptr, costs.hop_res, costs.hop_cnt, demand_keys, stock
    )
    initial = level.copy()
    routing = routing_arrays(costs)
    trace_n = min(int(trace), n)
    acc = PoolAccounts.zeros(n_pools, trace_n)
    args = (
        pol.dynamic,
        routing,
        demand_keys,
        price,
        float(horizon),
        generation == "poisson",
        seed,
    )
    classes = None
    ttd = None
    if by_class_ok and algorithm != "per-pool":
        if pol.code == TTD:
            ttd = ttd_classes(
                routing.pool_ptr, routing.hop_res, routing.hop_cnt, demand_keys, price
            )
            n_cls = ttd.start.size - 1
            if algorithm == "auto" and (n_pools < _TTD_MIN_POOLS or 4 * n_cls > n_pools):
                ttd = None  # too few pools per class to pay for the class layout
        else:
            classes = pool_classes(
                routing.pool_ptr, routing.hop_res, routing.hop_cnt, routing.res_cap.size
            )
    if classes is not None:
        kernel = "akr-by-class"
    elif ttd is not None:
        kernel = "ttd-by-class"
    else:
        kernel = "constant" if not pol.dynamic and algorithm == "auto" else "per-pool"
    rates = rates.astype(np.float64)

    def loop(m: int, t_stop: float, lv: NDArray[np.float64], into: PoolAccounts) -> None:
        """Run the first ``m`` arrivals and refill to ``t_stop``, adding to ``into``."""
        if classes is not None:
            resplit = pol.code == AKR_RESPLIT
            run_akr_by_class(
                times[:m], req_pool[:m], x, t_stop, cap_c, lv, classes, routing.res_cap,
                resplit, into,
            )  # fmt: skip
        elif ttd is not None:
            run_ttd_by_class(
                times[:m], req_pool[:m], x, t_stop, cap_c, lv, ttd, routing.res_cap,
                float(horizon), into,
            )  # fmt: skip
        elif not pol.dynamic and algorithm == "auto":
            _run_constant(times[:m], req_pool[:m], x, t_stop, cap, lv, rates, *args[5:], into)
        else:
            _run(times[:m], req_pool[:m], x, t_stop, cap, lv, rates, pol.code, *args, into)

    if kernel not in _WARM:  # load (or compile) the event loop outside the timed region
        loop(0, 0.0, level.copy(), PoolAccounts.zeros(n_pools))
        _WARM.add(kernel)
    start = _time.perf_counter()
    loop(n, t_end, level, acc)
    elapsed = _time.perf_counter() - start
    stats = [
        PoolStats(
            src=a,
            dst=b,
            hops=costs.hops(i),
            requests=int(acc.requests[i]),
            successes=int(acc.successes[i]),
            consumed=float(acc.consumed[i]),
            generated=float(acc.generated[i]),
            dropped=float(acc.dropped[i]),
            final_level=float(level[i]),
            initial_level=float(initial[i]),
            mean_rate=float(acc.generated[i] / t_end) if t_end > 0 else 0.0,
        )
        for i, (a, b) in enumerate(pairs)
    ]
    tr: dict[str, list[float]] = {}
    if trace_n:
        tr = {
            "time": times[:trace_n].tolist(),
            "pool": req_pool[:trace_n].astype(float).tolist(),
            "level": acc.trace.tolist(),
        }
    return SimulationResult(
        policy=name,
        services=n,
        successes=int(acc.successes.sum()),
        duration=t_end,
        pools=stats,
        elapsed_s=elapsed,
        trace=tr,
    )
