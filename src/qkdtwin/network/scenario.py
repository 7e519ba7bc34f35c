"""YAML scenario files for the network twin.

A scenario gives the network either explicitly (``nodes``, ``links`` with ``key_rate`` or a
physical ``protocol`` + ``length_km`` [+ ``preset``] or a shared ``group``, and ``groups``) or by
``topology: {builder: NAME, params: {...}}``; the demands as ``[{src, dst, rate}, ...]`` or
``uniform_demand: {total_rate, role}`` or ``hub_demand: {dst, total_rate, role}`` (every node
of the role to one core server); and the run::

    nodes:
      - {name: a, role: edge_gateway}
      - {name: b, role: olt}
    links:
      - {a: a, b: b, key_rate: 1.0}        # keys per time unit
    demands:
      - {src: a, dst: b, rate: 0.05}       # services per time unit
    pool_capacity: 100                     # C, keys
    keys_per_service: 10                   # X, keys
    policy: static                         # or proportional, adaptive-key-residue, ttd-balance
    services: 100000                       # or duration: 1000.0
    initial_fill: full                     # or empty
    generation: fluid                      # or poisson
    seed: 1

Any validation error becomes a :class:`~qkdtwin.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qkdtwin.config import read_yaml_mapping
from qkdtwin.errors import ConfigError
from qkdtwin.network.engine import (
    Demand,
    SimulationResult,
    hub_demands,
    simulate,
    uniform_demands,
)
from qkdtwin.network.policies import canonical_policy
from qkdtwin.network.topology import Topology, build_topology

__all__ = ["Scenario", "load_scenario", "run_scenario"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSpec(_Strict):
    """One node."""

    name: str
    role: str = "relay"


class LinkSpec(_Strict):
    """One QKD link: ``key_rate``, or ``protocol`` + ``length_km``, or ``group``."""

    a: str
    b: str
    key_rate: float | None = Field(default=None, gt=0)
    group: str | None = None
    protocol: str | None = None
    length_km: float | None = Field(default=None, ge=0)
    preset: str = "gys"


class GroupSpec(_Strict):
    """A shared generation budget (e.g. an OLT's total rate ``V``)."""

    name: str
    rate: float = Field(gt=0)


class DemandSpec(_Strict):
    """Poisson services between two nodes."""

    src: str
    dst: str
    rate: float = Field(gt=0)


class UniformDemandSpec(_Strict):
    """Uniform demand over all pairs of nodes of one role."""

    total_rate: float = Field(gt=0)
    role: str = "edge_gateway"


class HubDemandSpec(_Strict):
    """Every node of one role asks for keys with one node (a core server)."""

    dst: str
    total_rate: float = Field(gt=0)
    role: str = "edge_gateway"


class TopologySpec(_Strict):
    """A named builder and its parameters."""

    builder: str
    params: dict[str, Any] = Field(default_factory=dict)


class Scenario(_Strict):
    """A complete network-twin run (see the module docstring for the format)."""

    topology: TopologySpec | None = None
    nodes: list[NodeSpec] = Field(default_factory=list)
    links: list[LinkSpec] = Field(default_factory=list)
    groups: list[GroupSpec] = Field(default_factory=list)
    demands: list[DemandSpec] = Field(default_factory=list)
    uniform_demand: UniformDemandSpec | None = None
    hub_demand: HubDemandSpec | None = None
    pool_capacity: float = Field(gt=0)
    keys_per_service: float = Field(default=1.0, gt=0)
    policy: str = "static"
    services: int | None = Field(default=None, ge=1)
    duration: float | None = Field(default=None, gt=0)
    initial_fill: Literal["full", "empty"] = "full"
    generation: Literal["fluid", "poisson"] = "fluid"
    seed: int = 1
    trace: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.topology is None and not self.nodes:
            raise ValueError("give either topology or nodes and links")
        if (self.services is None) == (self.duration is None):
            raise ValueError("give exactly one of services and duration")
        if not self.demands and self.uniform_demand is None and self.hub_demand is None:
            raise ValueError("give demands, uniform_demand or hub_demand")
        if self.keys_per_service > self.pool_capacity:
            raise ValueError("keys_per_service must not exceed pool_capacity")
        return self

    def build_topology(self) -> Topology:
        """Build the network this scenario describes."""
        if self.topology is not None:
            topo = build_topology(self.topology.builder, **self.topology.params)
        else:
            topo = Topology()
        for g in self.groups:
            topo.add_group(g.name, g.rate)
        for n in self.nodes:
            topo.add_node(n.name, n.role)
        for ln in self.links:
            topo.add_link(
                ln.a,
                ln.b,
                key_rate=ln.key_rate,
                group=ln.group,
                protocol=ln.protocol,
                length_km=ln.length_km,
                preset=ln.preset,
            )
        return topo

    def build_demands(self, topology: Topology) -> list[Demand]:
        """Return the demands of this scenario."""
        out = [Demand(d.src, d.dst, d.rate) for d in self.demands]
        if self.uniform_demand is not None:
            out += uniform_demands(
                topology, self.uniform_demand.total_rate, role=self.uniform_demand.role
            )
        if self.hub_demand is not None:
            hub = self.hub_demand
            out += hub_demands(topology, hub.dst, hub.total_rate, role=hub.role)
        return out


def load_scenario(source: str | Path | dict[str, Any]) -> Scenario:
    """Read and validate a scenario from a YAML file (or an already-parsed mapping).

    Raises
    ------
    ConfigError
        If the file cannot be read, is not YAML, or a field is invalid (the message names it).
    """
    data = read_yaml_mapping(source)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(
            exc, template="scenario field {field}: {msg}", default_field="scenario"
        ) from None
    canonical_policy(sc.policy)
    return sc


def run_scenario(scenario: Scenario) -> SimulationResult:
    """Build the network and run the scenario with its seed."""
    topo = scenario.build_topology()
    return simulate(
        topo,
        scenario.build_demands(topo),
        pool_capacity=scenario.pool_capacity,
        keys_per_service=scenario.keys_per_service,
        policy=scenario.policy,
        rng=np.random.default_rng(scenario.seed),
        services=scenario.services,
        duration=scenario.duration,
        initial_fill=scenario.initial_fill,
        generation=scenario.generation,
        trace=scenario.trace,
    )
