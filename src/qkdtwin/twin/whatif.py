"""What-if: run the exact network engine on a copy of the twin's current network.

``what_if`` takes the live topology *as it is now* (links in alarm removed, so relay paths
are the rerouted ones), applies the operator's changes and runs
:func:`qkdtwin.network.simulate` with them; the live twin is not touched. Parameters:

=========  ==========================================================  ==================
name       meaning                                                     allowed
=========  ==========================================================  ==================
``V``      rate of every shared generation budget (OLT), keys/s        (0, 1e6]
``C``      pool capacity, keys                                         (0, 1e7]
``X``      keys per service                                            (0, C]
``load``   total service arrival rate (demands scaled to it), 1/s      (0, 1e6]
``duration``  simulated horizon of the prediction, s                   (0, 1e6]
=========  ==========================================================  ==================

The prediction starts from the pools' levels *now* (``initial_levels``; clipped to a changed
``C``) unless the caller asks for the scenario's initial fill, and its horizon is stated
(``params.duration``) so that it is compared with the live window of the same length.

Pairs that have no path over the links that are up cannot be simulated (the engine rejects
disconnected demands); they are listed as ``unreachable`` and left out of the prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import networkx as nx
import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.network import Demand, Topology, canonical_policy, simulate
from qkdtwin.twin.keynet import topology_without

if TYPE_CHECKING:
    from qkdtwin.network.scenario import Scenario

__all__ = [
    "WHATIF_PARAMS",
    "WhatIfOutcome",
    "WhatIfParams",
    "WhatIfPool",
    "WhatIfPrediction",
    "parse_sets",
    "what_if",
]


class WhatIfParams(TypedDict):
    """The values a what-if used (``V``: ``None`` when unchanged)."""

    V: float | None
    C: float
    X: float
    load: float
    duration: float
    policy: str
    seed: int
    links_down: list[str]
    #: ``present`` or the initial fill the prediction started from (absent: nothing reachable).
    start: NotRequired[str]


class WhatIfPool(TypedDict):
    """One pool's prediction (``success_rate``: ``None`` without requests)."""

    id: str
    src: str
    dst: str
    success_rate: float | None
    requests: int
    #: Added by the live twin beside the prediction (:meth:`qkdtwin.twin.Twin.what_if`).
    live_success_rate: NotRequired[float | None]
    live_window_success_rate: NotRequired[float | None]


class WhatIfOutcome(TypedDict):
    """A prediction: the values used, the success rates, the pairs left out, its run time."""

    params: WhatIfParams
    success_rate: float | None
    services: int
    pools: list[WhatIfPool]
    unreachable: list[str]
    elapsed_s: float


class WhatIfPrediction(WhatIfOutcome):
    """The prediction of :func:`what_if`, to which a caller may add its ``live`` rates.

    The twins return theirs typed: :class:`~qkdtwin.twin.loop.TwinWhatIf`,
    :class:`~qkdtwin.twin.attached.AttachedWhatIf`.
    """

    live: NotRequired[Mapping[str, object]]


#: What-if parameters: name -> (low (exclusive), high (inclusive), meaning).
WHATIF_PARAMS: dict[str, tuple[float, float, str]] = {
    "V": (0.0, 1e6, "rate of every shared generation budget, keys/s"),
    "C": (0.0, 1e7, "pool capacity, keys"),
    "X": (0.0, 1e7, "keys per service"),
    "load": (0.0, 1e6, "total service arrival rate, 1/s"),
    "duration": (0.0, 1e6, "simulated horizon, s"),
}


def parse_sets(items: list[str] | dict[str, Any]) -> dict[str, float]:
    """Parse ``["V=4", "C=400"]`` (or a mapping) into checked what-if parameters.

    Raises
    ------
    ConfigError
        ``field="set.NAME"`` for an unknown name, a non-number or an out-of-range value.
    """
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        for it in items:
            name, sep, value = str(it).partition("=")
            if not sep:
                raise ConfigError(f"--set needs NAME=VALUE, got {it!r}", field="set", value=it)
            pairs.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in pairs:
        if name not in WHATIF_PARAMS:
            raise ConfigError(
                f"unknown what-if parameter {name!r}; known: {', '.join(WHATIF_PARAMS)}",
                field=f"set.{name}",
                value=name,
                allowed=", ".join(WHATIF_PARAMS),
            )
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"what-if parameter {name} must be a number, got {value!r}",
                field=f"set.{name}",
                value=value,
            ) from None
        low, high, meaning = WHATIF_PARAMS[name]
        if not (low < x <= high):
            raise ConfigError(
                f"what-if parameter {name} ({meaning}) must be in ({low:g}, {high:g}], got {x:g}",
                field=f"set.{name}",
                value=x,
                allowed=f"({low:g}, {high:g}]",
            )
        out[name] = x
    return out


def what_if(
    topology: Topology,
    demands: list[Demand],
    down: set[str],
    *,
    pool_capacity: float,
    keys_per_service: float,
    policy: str,
    duration: float,
    seed: int,
    overrides: dict[str, float] | None = None,
    initial_fill: str = "full",
    generation: str = "fluid",
    initial_levels: dict[tuple[str, str], float] | None = None,
) -> WhatIfPrediction:
    """Predict success rates with the exact engine on the current network plus ``overrides``.

    Parameters
    ----------
    topology, demands
        The twin's network and demands.
    down
        Ids of the links in alarm (removed for the prediction).
    pool_capacity, keys_per_service, policy, duration, seed
        The live values; ``overrides`` (``V``, ``C``, ``X``, ``load``, ``duration``) replace
        them, ``policy`` may be replaced by the caller.
    initial_fill, generation
        As in :func:`qkdtwin.network.simulate`.
    initial_levels
        Pool levels to start from, by pair (the present); clipped to the what-if's ``C``.
        ``None``: ``initial_fill``.

    Returns
    -------
    WhatIfPrediction
        ``params`` (the values used), ``success_rate``, ``services``, ``pools`` (per pair
        ``src``, ``dst``, ``success_rate``, ``requests``), ``unreachable`` pairs, ``elapsed_s``.

    Raises
    ------
    ConfigError
        For an invalid parameter (named), e.g. ``X > C``.
    """
    ov = dict(overrides or {})
    name = canonical_policy(policy)
    topo = topology_without(topology, down)
    if "V" in ov:
        for g in topo.groups:
            topo.groups[g] = ov["V"]
    cap_c = ov.get("C", pool_capacity)
    x = ov.get("X", keys_per_service)
    if x > cap_c:
        raise ConfigError(
            f"what-if: X ({x:g}) must not exceed C ({cap_c:g})", field="set.X", value=x
        )
    dem = list(demands)
    if "load" in ov:
        total = sum(d.rate for d in dem)
        dem = [Demand(d.src, d.dst, d.rate * ov["load"] / total) for d in dem]
    horizon = ov.get("duration", duration)
    reach = [d for d in dem if nx.has_path(topo.graph, d.src, d.dst)]
    unreachable = sorted({f"{d.src}|{d.dst}" for d in dem if d not in reach})
    params: WhatIfParams = {
        "V": ov.get("V"),
        "C": cap_c,
        "X": x,
        "load": sum(d.rate for d in dem),
        "duration": horizon,
        "policy": name,
        "seed": seed,
        "links_down": sorted(down),
    }
    if not reach:
        return {
            "params": params,
            "success_rate": None,
            "services": 0,
            "pools": [],
            "unreachable": unreachable,
            "elapsed_s": 0.0,
        }
    levels = None
    if initial_levels is not None:
        keep = {(d.src, d.dst) for d in reach} | {(d.dst, d.src) for d in reach}
        levels = {k: min(max(v, 0.0), cap_c) for k, v in initial_levels.items() if k in keep}
    params["start"] = "present" if levels is not None else initial_fill
    res = simulate(
        topo,
        reach,
        pool_capacity=cap_c,
        keys_per_service=x,
        policy=name,
        rng=np.random.default_rng(seed),
        duration=horizon,
        initial_fill=initial_fill,
        generation=generation,
        initial_levels=levels,
    )
    return {
        "params": params,
        "success_rate": res.success_rate,
        "services": res.services,
        "pools": [
            {
                "id": f"{p.src}|{p.dst}",
                "src": p.src,
                "dst": p.dst,
                "success_rate": None if p.requests == 0 else p.success_rate,
                "requests": p.requests,
            }
            for p in res.pools
        ],
        "unreachable": unreachable,
        "elapsed_s": res.elapsed_s,
    }


def _check_start(start: str) -> None:
    """Refuse a what-if ``start`` other than ``present`` and ``scenario`` (field ``start``)."""
    if start not in ("present", "scenario"):
        raise ConfigError(
            f"start must be present or scenario, got {start!r}", field="start", value=start
        )


def _what_if_on(
    scenario: Scenario,
    topology: Topology,
    demands: list[Demand],
    down: set[str],
    overrides: dict[str, float],
    *,
    policy: str,
    seed: int | None,
    initial_levels: dict[tuple[str, str], float] | None,
) -> WhatIfPrediction:
    """Run :func:`what_if` with a twin's network scenario as the live values.

    ``seed``: the scenario's unless given; ``duration``: the scenario's, else 1000 s.
    """
    return what_if(
        topology,
        demands,
        down,
        pool_capacity=scenario.pool_capacity,
        keys_per_service=scenario.keys_per_service,
        policy=policy,
        duration=scenario.duration or 1000.0,
        seed=scenario.seed if seed is None else int(seed),
        overrides=overrides,
        initial_fill=scenario.initial_fill,
        generation=scenario.generation,
        initial_levels=initial_levels,
    )
