"""The typed spine of the attached twin: state, links, estimates, alarms, KMEs, routes.

These pydantic models are the API's contract (they appear in ``/openapi.json``). Everything in
them is observed, estimated (with its interval) or derived; nothing is the network's truth.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AlarmEvent",
    "AlarmView",
    "AttachedState",
    "DeviceReadingView",
    "DeviceView",
    "ForecastView",
    "IngestCounters",
    "KmeLinkView",
    "KmeView",
    "LinkEstimateView",
    "LinkStatus",
    "LinkView",
    "NodeView",
    "PoolForecastView",
    "ReadingsView",
    "RouteView",
    "SaePairView",
]


class LinkStatus(StrEnum):
    """Status of a link as the twin sees it."""

    UP = "up"
    ALARM = "alarm"
    RECOVERING = "recovering"
    STALE = "stale"


class LinkEstimateView(BaseModel):
    """Calibrated link model (maximum likelihood over the estimation window), with intervals."""

    t: float | None = Field(None, description="end of the window, network time, s")
    window_s: float | None = Field(None, description="length of the estimation window, s")
    intervals: int = Field(0, description="reporting intervals in the window")
    loss_db: float | None = Field(
        None, description="channel loss given the declared detector efficiency, dB"
    )
    loss_db_ci: list[float] | None = Field(None, description="95 % interval [low, high], dB")
    eta: float | None = Field(None, description="overall transmittance (channel x detector)")
    eta_ci: list[float] | None = None
    dark_count_prob: float | None = Field(None, description="per detector per gate")
    dark_count_prob_ci: list[float] | None = None
    misalignment: float | None = None
    misalignment_ci: list[float] | None = None
    qber: float | None = Field(None, description="signal QBER over the window")
    qber_ci: list[float] | None = None
    key_rate_bps: float | None = Field(None, description="asymptotic secret key rate, bit/s")
    converged: bool = False


class LinkView(BaseModel):
    """One link: identity, status, estimate, ingest health."""

    id: str
    a: str
    b: str
    module_id: str
    status: LinkStatus
    source: str = Field(description="ok | stale | never-seen (telemetry source health)")
    estimate: LinkEstimateView
    last_seq: int | None = None
    last_interval_end: float | None = None
    observed_qber: float | None = Field(None, description="QBER of the last interval")
    observed_skr_bps: float | None = Field(None, description="module-reported secret key rate")
    declared_detector_efficiency: float
    alarm_id: int | None = None


class AlarmEvent(BaseModel):
    """One step of an alarm's life (raised, rerouted, recovering, restored, ...)."""

    what: str
    t: float = Field(description="network time, s")
    detail: dict[str, Any] = Field(default_factory=dict)


class AlarmView(BaseModel):
    """An alarm raised from statistics alone.

    ``kind`` is the statistic that crossed its threshold (``qber``, ``decoy-yield``,
    ``loss-step``, ``count-model``, ``background``, ``detector-monitor``); ``raised_at`` is the
    network time (the end of the reporting interval that crossed it); ``onset`` the estimated
    change point and ``delay_s`` = raised_at - onset. ``suspected`` names the attacks the
    statistic is sensitive to. Deprecated fields of the self-simulated twin (``qber``,
    ``threshold``, ``t_sim``) are not used in attach mode.
    """

    id: int
    link: str
    kind: str
    raised_at: float
    onset: float | None = None
    delay_s: float | None = None
    active: bool = True
    suspected: list[str] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)
    events: list[AlarmEvent] = Field(default_factory=list)
    message: str = ""
    exposed_keys: int | None = Field(
        None,
        description="keys delivered from the link between the estimated onset and the alarm "
        "(from the KMEs' counters; null: no KME of the link polled)",
    )


class ForecastView(BaseModel):
    """When a key store runs dry (:mod:`qkdtwin.twin.forecast`); ``None`` times: never."""

    level: int = Field(description="keys in the store now")
    supply_keys_per_s: float = Field(description="calibrated key rate / key size")
    consumption_keys_per_s: float = Field(description="change of delivered_total per second")
    consumption_window_s: float = Field(description="seconds of polls the consumption covers")
    drift_keys_per_s: float
    ttd_s: float | None = Field(description="median time to depletion, s (None: never)")
    ttd_interval_s: list[float | None] = Field(
        description="[low, high] prediction interval, s (None: never)"
    )
    interval_level: float = Field(description="coverage of ttd_interval_s")
    p_empty_within_lead: float
    lead_s: float
    warning: bool = Field(description="p_empty_within_lead >= the warning probability")


class PoolForecastView(BaseModel):
    """A demand pair's key supply: the link store of its relay path that empties first."""

    id: str
    path: list[str] | None
    bottleneck: str | None = Field(description="KME store node->peer with the earliest ttd")
    forecast: ForecastView | None


class KmeLinkView(BaseModel):
    """One link store of a KME as its operator interface reports it."""

    peer: str | None
    enabled: bool
    available: int
    owned: int
    reserved: int
    added_total: int
    delivered_total: int
    erased_total: int
    discarded_total: int = 0
    consumption_keys_per_s: float | None = Field(
        None, description="change of delivered_total over the last poll interval"
    )
    forecast: ForecastView | None = None


class KmeView(BaseModel):
    """One KME: poll health and its link stores."""

    node: str
    url: str
    status: str = Field(description="ok | stale | never-seen")
    error: str | None = None
    last_poll: float | None = None
    links: list[KmeLinkView] = Field(default_factory=list)


class SaePairView(BaseModel):
    """An SAE pair's ETSI GS QKD 014 ``status`` as its master SAE sees it."""

    kme: str
    master_sae_id: str | None = None
    slave_sae_id: str
    status: str = Field(description="ok | stale | never-seen")
    error: str | None = None
    stored_key_count: int | None = None
    max_key_count: int | None = None
    key_size: int | None = None
    last_poll: float | None = None
    failures: int = 0


class RouteView(BaseModel):
    """The relay path of one demand pair over links that are up (``None``: cut)."""

    id: str
    path: list[str] | None
    hops: int | None


class DeviceView(BaseModel):
    """An IIoT edge or device as seen from envelope metadata only."""

    id: str
    status: str
    messages: int
    bytes: int
    last_seen: float | None = None
    gaps: int = 0


class DeviceReadingView(BaseModel):
    """A device's latest reading, decrypted by the twin in the aggregator's role."""

    id: str
    edge: str
    kind: str
    t: float = Field(description="the device's sample time, s")
    values: dict[str, float] = Field(description="measurements, units in the names")
    received_at: float | None = Field(description="network time of the carrying frame, s")


class ReadingsView(BaseModel):
    """Decrypted readings: only when the attach file grants an aggregator SAE identity."""

    granted: bool = Field(description="the attach file grants the twin an aggregator identity")
    source: Literal["decrypted", "not-granted", "replay"]
    note: str
    counters: dict[str, int] = Field(default_factory=dict)
    devices: list[DeviceReadingView] = Field(default_factory=list)


class IngestCounters(BaseModel):
    """What the ingest accepted and rejected (never stopping the twin)."""

    counts: dict[str, int] = Field(default_factory=dict)
    version_mismatch: list[Any] = Field(default_factory=list)


class NodeView(BaseModel):
    """A node of the topology with its dashboard position (0..1)."""

    id: str
    role: str
    x: float
    y: float


class AttachedState(BaseModel):
    """``GET /api/state`` of an attached twin."""

    mode: str = "attached"
    name: str
    t: float | None = Field(description="network time of the newest accepted message, s")
    nodes: list[NodeView]
    links: list[LinkView]
    alarms: list[AlarmView]
    active_alarms: int
    kmes: list[KmeView]
    sae_pairs: list[SaePairView] = Field(default_factory=list)
    routes: list[RouteView]
    devices: list[DeviceView]
    readings: ReadingsView
    pool_forecasts: list[PoolForecastView] = Field(default_factory=list)
    ingest: IngestCounters
    arl_days: float = Field(description="configured false-alarm average run length per link, days")
    replay: bool = False
    actuation: str = Field(
        "off", description="closed loop on the KMEs: off (plan and log only) or on"
    )
