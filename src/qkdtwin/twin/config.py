"""Twin scenario files: a network scenario plus an optional ``twin:`` section.

A twin scenario is any :mod:`qkdtwin.network.scenario` file (the seed topology by default) with
one more optional mapping, ``twin``, that says how the live twin runs it::

    twin:
      tick_s: 1.0                  # simulated seconds per update of the live loop
      speed: 1.0                   # simulated seconds per wall-clock second
      history: 600                 # points kept per time series (memory cap)
      qber_threshold: 0.08         # alarm threshold of every link (fraction)
      qber_min_bits: 1000          # sifted bits (newest blocks) the alarm QBER is computed on
      calibration_pulses: 2000000  # pulses of one link-engine run (round robin, 1 link/tick)
      kme_feed_every: 10           # ticks between key deliveries into the KME stores
                                   # (default: max(10, links / 20), so a tick makes at
                                   # most ~20 links' deliveries)
      postprocess: true            # run Cascade + verification + PA on each round-robin run
      link_defaults: {protocol: decoy-bb84, preset: gys}
      links:                       # per-link physics, by id "A-B" (either order)
        GW1.1-OLT1: {length_km: 8.0, qber_threshold: 0.06}
      aggregator: M1               # node whose KME serves the telemetry aggregator
      devices_per_gateway: 2       # IIoT devices under each edge gateway (0: no telemetry)
      telemetry: {}                # extra TelemetryConfig fields (scheme, mode, broker, ...)

Lengths not given default by the roles of the ends: 5 km for an access link (an end is an
edge gateway or IoT device), 15 km for an OLT uplink, 30 km otherwise (backbone).

Any error becomes a :class:`~qkdtwin.errors.ConfigError` naming the field (``twin.qber_window``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qkdtwin.config import read_yaml_mapping
from qkdtwin.errors import ConfigError
from qkdtwin.network.scenario import Scenario, load_scenario

__all__ = [
    "LinkPhysics",
    "TwinScenario",
    "TwinSettings",
    "default_scenario_path",
    "load_twin_scenario",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LinkPhysics(_Strict):
    """Physical description of one QKD link of the twin (all optional, defaults by role)."""

    protocol: str | None = None
    preset: str | None = None
    length_km: float | None = Field(default=None, ge=0.0, le=400.0)
    qber_threshold: float | None = Field(default=None, gt=0.0, lt=0.5)


class TwinSettings(_Strict):
    """The ``twin:`` section (see the module docstring for every field and its unit)."""

    tick_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    speed: float = Field(default=1.0, gt=0.0, le=10_000.0)
    history: int = Field(default=600, ge=10, le=100_000)
    qber_threshold: float = Field(default=0.08, gt=0.0, lt=0.5)
    qber_min_bits: int = Field(default=1000, ge=1, le=10**9)
    calibration_pulses: int = Field(default=2_000_000, ge=10_000, le=10**9)
    kme_feed_every: int | None = Field(default=None, ge=1, le=10_000)
    postprocess: bool = True
    kme_max_keys: int = Field(default=2000, ge=10, le=10**7)
    link_defaults: LinkPhysics = Field(default_factory=LinkPhysics)
    links: dict[str, LinkPhysics] = Field(default_factory=dict)
    aggregator: str | None = None
    devices_per_gateway: int = Field(default=2, ge=0, le=10_000)
    telemetry: dict[str, Any] = Field(default_factory=dict)


class TwinScenario:
    """A validated network scenario plus its twin settings.

    Attributes
    ----------
    network
        The network scenario (topology, demands, ``C``, ``X``, policy, seed, ``duration``).
    twin
        The twin settings.
    source
        Where it came from (a path, or ``"<dict>"``).
    """

    def __init__(self, network: Scenario, twin: TwinSettings, source: str) -> None:
        self.network = network
        self.twin = twin
        self.source = source


def default_scenario_path() -> Path:
    """Path of the packaged default scenario: the seed paper's network with twin defaults."""
    return Path(str(resources.files("qkdtwin.twin").joinpath("scenarios/seed.yaml")))


def load_twin_scenario(source: str | Path | dict[str, Any] | None = None) -> TwinScenario:
    """Read and validate a twin scenario (a YAML path, a parsed mapping, or the default).

    Raises
    ------
    ConfigError
        If the file is unreadable or not YAML, or a field of the network scenario or of the
        ``twin`` section is invalid; the message and ``field`` name it.
    """
    if source is None:
        source = default_scenario_path()
    label = "<dict>" if isinstance(source, dict) else str(Path(source))
    data = read_yaml_mapping(source)
    twin_raw = data.pop("twin", None) or {}
    if not isinstance(twin_raw, dict):
        raise ConfigError("scenario field twin: must be a mapping", field="twin")
    network = load_scenario(data)
    try:
        twin = TwinSettings.model_validate(twin_raw)
    except ValidationError as exc:
        raise ConfigError.from_validation(
            exc, prefix="twin.", template="scenario field {field}: {msg}"
        ) from None
    return TwinScenario(network, twin, label)
