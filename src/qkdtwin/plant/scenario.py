"""Plant scenario files: a network scenario plus a ``plant:`` section with the hidden truth.

A plant scenario is any :mod:`qkdtwin.network.scenario` file (topology, demands, policy) with
one more mapping, ``plant``, that says what the physical network *really* is and how it
changes. Nothing in it reaches the twin except what the plant's interfaces expose (link
telemetry, KME counters, IIoT traffic) and the declarations of the attach file::

    plant:
      reporting_interval_s: 1.0      # one link-telemetry message per module per interval, s
      link_defaults: {preset: gys}   # hidden truth of every link, overridable per link
      links:
        M1-M2: {length_km: 40.0, detector_efficiency: 0.05, dark_count_prob: 1.0e-6}
      drift:                         # slow changes of a link's loss, dB
        - {link: M2-M3, kind: ramp, db_per_hour: 0.05}
        - {link: M1-M3, kind: sine, amplitude_db: 0.2, period_s: 86400}
        - {link: OLT1-M1, kind: step, at_s: 3600, db: 0.3}
      events:                        # scripted events (the same as the control API's)
        - {at_s: 120, action: attack, link: M1-M2, type: pns, fraction: 0.1}
        - {at_s: 300, action: clear, link: M1-M2}
      detector_monitor: true         # modules report Bob's detector photocurrent
      devices_per_gateway: 2         # IIoT devices behind each edge gateway (0: none)
      aggregator: M1                 # node of the IIoT aggregator (the operator's SCADA)
      grant_twin_readings: true      # the attach file grants the twin an aggregator SAE
                                     # identity (its own SAE, entitled to the gateways' keys,
                                     # and the aggregator's ML-KEM key): the twin decrypts
      declared_efficiency_error: 0.0 # attach file declares efficiency x (1 + this)
      kme_feed_every: 5              # intervals between key deliveries of a module to its
                                     # KMEs (staggered over the links: one SQLite transaction
                                     # per store and delivery is what a large plant pays for)

Lengths not given default by the roles of the ends, as in the live twin: 5 km for an access
link, 15 km for an OLT uplink, 30 km for a backbone link. Every other parameter defaults to the
link's preset (GYS: 0.21 dB/km, detector efficiency 0.045, Y0 = 1.7e-6, e_d = 3.3 %).

Any error becomes a :class:`~qkdtwin.errors.ConfigError` naming the field (``plant.drift.0.kind``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qkdtwin.config import read_yaml_mapping
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network.scenario import Scenario, load_scenario
from qkdtwin.network.topology import Topology, default_length_km, link_id, resolve_link
from qkdtwin.plant.physics import ATTACK_KINDS

__all__ = [
    "DriftSpec",
    "EventSpec",
    "LinkTruthSpec",
    "PlantScenario",
    "PlantSettings",
    "load_plant_scenario",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LinkTruthSpec(_Strict):
    """Hidden true parameters of one link (all optional: preset and role defaults)."""

    preset: str | None = None
    length_km: float | None = Field(default=None, ge=0.0, le=400.0)
    attenuation_db_per_km: float | None = Field(default=None, ge=0.0, le=2.0)
    extra_loss_db: float | None = Field(default=None, ge=0.0, le=60.0)
    detector_efficiency: float | None = Field(default=None, gt=0.0, le=1.0)
    dark_count_prob: float | None = Field(default=None, ge=0.0, lt=0.01)
    misalignment: float | None = Field(default=None, ge=0.0, le=0.5)


class LinkTruthValues(TypedDict):
    """One link's resolved truth (:meth:`PlantScenario.link_truth`), preset and length set.

    The fields of :class:`LinkTruthSpec`; ``None`` leaves a value to the preset.
    """

    preset: str
    length_km: float
    attenuation_db_per_km: float | None
    extra_loss_db: float | None
    detector_efficiency: float | None
    dark_count_prob: float | None
    misalignment: float | None


class DriftSpec(_Strict):
    """A slow change of one link's loss (dB added to its extra loss).

    ``ramp``: ``db_per_hour`` x hours since ``at_s`` (default 0); ``sine``: ``amplitude_db`` x
    sin(2 pi (t - at_s) / ``period_s``); ``step``: ``db`` from ``at_s`` on.
    """

    link: str
    kind: Literal["ramp", "sine", "step"]
    at_s: float = Field(default=0.0, ge=0.0)
    db_per_hour: float = Field(default=0.0, ge=-10.0, le=10.0)
    amplitude_db: float = Field(default=0.0, ge=0.0, le=10.0)
    period_s: float = Field(default=86_400.0, gt=0.0)
    db: float = Field(default=0.0, ge=-20.0, le=60.0)

    def offset_db(self, t: float) -> float:
        """Loss added at plant time ``t`` (s), dB."""
        if t < self.at_s:
            return 0.0
        dt = t - self.at_s
        if self.kind == "ramp":
            return self.db_per_hour * dt / 3600.0
        if self.kind == "sine":
            return self.amplitude_db * math.sin(2.0 * math.pi * dt / self.period_s)
        return self.db


class EventSpec(_Strict):
    """A scripted event at plant time ``at_s`` (the control API's actions)."""

    at_s: float = Field(ge=0.0)
    action: Literal["attack", "clear", "cut", "drift"]
    link: str
    type: str | None = None
    fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    loss_db: float | None = Field(default=None, ge=-20.0, le=60.0)

    @model_validator(mode="after")
    def _complete(self) -> EventSpec:
        if self.action == "attack" and self.type is None:
            raise ValueError("an attack event needs a type")
        if self.action == "attack" and self.type not in ATTACK_KINDS:
            # checked when the file loads, not when the event falls due
            raise ValueError(f"unknown attack type {self.type!r}; known: {', '.join(ATTACK_KINDS)}")
        if self.action == "drift" and self.loss_db is None:
            raise ValueError("a drift event needs loss_db")
        return self


class PlantSettings(_Strict):
    """The ``plant:`` section (see the module docstring for every field and its unit)."""

    reporting_interval_s: float = Field(default=1.0, ge=0.01, le=3600.0)
    link_defaults: LinkTruthSpec = Field(default_factory=LinkTruthSpec)
    links: dict[str, LinkTruthSpec] = Field(default_factory=dict)
    drift: list[DriftSpec] = Field(default_factory=list)
    events: list[EventSpec] = Field(default_factory=list)
    detector_monitor: bool = True
    devices_per_gateway: int = Field(default=2, ge=0, le=1000)
    aggregator: str | None = None
    grant_twin_readings: bool = True
    declared_efficiency_error: float = Field(default=0.0, gt=-0.9, le=10.0)
    key_size_bits: int = Field(default=256, ge=64, le=8192, multiple_of=8)
    kme_max_keys: int = Field(default=20_000, ge=10, le=10**7)
    kme_feed_every: int = Field(default=5, ge=1, le=3600)


class PlantScenario:
    """A validated network scenario plus the plant's hidden truth.

    Attributes
    ----------
    network
        The network scenario (topology, demands, policy, seed).
    plant
        The plant settings.
    topology
        The built topology.
    source
        Where it came from (a path, or ``"<dict>"``).
    """

    def __init__(self, network: Scenario, plant: PlantSettings, source: str) -> None:
        self.network = network
        self.plant = plant
        self.source = source
        self.topology: Topology = network.build_topology()
        known = {link_id(a, b) for a, b in self.topology.graph.edges()}
        self.link_ids = sorted(known)
        for where, name in (
            [("links", n) for n in plant.links]
            + [(f"drift.{i}.link", d.link) for i, d in enumerate(plant.drift)]
            + [(f"events.{i}.link", e.link) for i, e in enumerate(plant.events)]
        ):
            if resolve_link(name, known) is None:
                raise UnknownNameError(
                    f"plant.{where}: unknown link {name!r}; links: {', '.join(self.link_ids)}",
                    field=f"plant.{where}",
                    value=name,
                )
        if plant.aggregator is not None and plant.aggregator not in self.topology.graph:
            raise UnknownNameError(
                f"plant.aggregator: unknown node {plant.aggregator!r}",
                field="plant.aggregator",
                value=plant.aggregator,
            )

    def link_truth(self, lid: str) -> LinkTruthValues:
        """Return one link's truth spec: per-link values over defaults over preset/role."""
        a, b = _ends(self, lid)
        over = next(
            (v for k, v in self.plant.links.items() if resolve_link(k, [lid]) == lid),
            None,
        )
        d = self.plant.link_defaults
        out: dict[str, Any] = {}
        for name in LinkTruthSpec.model_fields:
            v = getattr(over, name) if over is not None else None
            out[name] = getattr(d, name) if v is None else v
        if out["preset"] is None:
            out["preset"] = "gys"
        if out["length_km"] is None:
            topo = self.topology
            out["length_km"] = default_length_km(topo.role(a), topo.role(b))
        return cast(LinkTruthValues, out)  # one key per field of LinkTruthSpec

    def drifts_for(self, lid: str) -> list[DriftSpec]:
        """Drift specs of one link."""
        return [d for d in self.plant.drift if resolve_link(d.link, [lid]) == lid]

    def aggregator(self) -> str:
        """Node of the IIoT aggregator (default: the first metro node, else the first node)."""
        if self.plant.aggregator is not None:
            return self.plant.aggregator
        metros = self.topology.nodes_with_role("metro")
        return metros[0] if metros else str(next(iter(self.topology.graph.nodes)))


def _ends(sc: PlantScenario, lid: str) -> tuple[str, str]:
    for a, b in sc.topology.graph.edges():
        if link_id(a, b) == lid:
            return str(a), str(b)
    raise UnknownNameError(f"unknown link {lid!r}", field="link", value=lid)


def load_plant_scenario(source: str | Path | dict[str, Any]) -> PlantScenario:
    """Read and validate a plant scenario (a YAML path or a parsed mapping).

    Raises
    ------
    ConfigError
        If the file is unreadable or not YAML, or a field is invalid; the message and
        ``field`` name it.
    """
    label = "<dict>" if isinstance(source, dict) else str(Path(source))
    data = read_yaml_mapping(source)
    raw = data.pop("plant", None) or {}
    data.pop("twin", None)  # a twin scenario is a valid plant scenario (with plant defaults)
    if not isinstance(raw, dict):
        raise ConfigError("scenario field plant: must be a mapping", field="plant")
    network = load_scenario(data)
    try:
        plant = PlantSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError.from_validation(
            exc, prefix="plant.", template="scenario field {field}: {msg}"
        ) from None
    return PlantScenario(network, plant, label)
