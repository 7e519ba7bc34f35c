"""The live twin: links, KMEs, key pools, telemetry, alarms and history advanced tick by tick.

:class:`Twin` only orchestrates: the source, detection and response live in their own modules.
One tick of ``tick_s`` simulated seconds:

1. source (:class:`~qkdtwin.twin.sim_source.LinkSource`): every QKD link runs one block
   (:mod:`qkdtwin.twin.links`; one link per tick is recalibrated with the pulse-by-pulse engine,
   round robin); a link that is *up* hands its secret key to the KMEs at its ends
   (:mod:`qkdtwin.twin.kmes`), a link in alarm hands over nothing. Each block is published
   as link telemetry (schema v1) and read back through the attached twin's ingest
   (:class:`~qkdtwin.twin.ingest.LinkStream`): detection sees only what the ingest released;
2. detection (:mod:`qkdtwin.twin.qber_rule`, pure): a link that is up and whose windowed QBER
   passed its threshold is to raise an alarm; a link whose attack was cleared is to come back
   (status ``recovering`` -> ``up``) as soon as its QBER is at or under the threshold again;
3. response (:class:`~qkdtwin.twin.sim_respond.SimResponse`): an alarmed link's pending and
   recent keys are discarded (KME stores and key pools), it is taken out of routing and the
   pools are rerouted around it where the topology allows; a restored link's routes come back.
   Then the source delivers the pending keys of the links that are up to their KME stores
   (staggered: link i every ``kme_feed_every`` ticks, at phase i);
4. the key network advances and the policy re-plans its rates (:mod:`qkdtwin.twin.keynet`);
5. the IIoT telemetry runs one interval, when a telemetry component is attached
   (:mod:`qkdtwin.twin.devices`);
6. the history records the tick and every subscriber (the dashboard's event stream) receives
   the new state.

An injected attack does not wait for the next tick: the attacked link is recalibrated and runs
its next block at once, so the alarm (if any) reaches the dashboard within one engine run.

Everything random comes from one ``numpy.random.Generator`` seeded by the scenario's ``seed``:
the same scenario and the same sequence of calls give the same twin (tests call :meth:`step`
directly; :meth:`start` runs it on a thread, paced at ``tick_s / speed`` wall seconds per tick).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NotRequired, Protocol, TypedDict, cast

import numpy as np

from qkdtwin._pacing import run_at_fixed_rate
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network import Demand
from qkdtwin.network.topology import resolve_link
from qkdtwin.twin.alarms import Alarm, AlarmLog, AlarmRecord
from qkdtwin.twin.config import TwinScenario, load_twin_scenario
from qkdtwin.twin.device_table import DeviceTable
from qkdtwin.twin.ingest import LinkStream
from qkdtwin.twin.keynet import KeyNetwork, PoolData
from qkdtwin.twin.kmes import KeyCounts, KmeLayer
from qkdtwin.twin.layout import layered_layout
from qkdtwin.twin.links import (
    LinkDescription,
    LinkEngine,
    PostprocessFailure,
    PostprocessSummary,
    make_attack,
)
from qkdtwin.twin.qber_rule import check_link, check_links
from qkdtwin.twin.results import DeviceReading, TelemetryCounts, TelemetryReport, TelemetrySummary
from qkdtwin.twin.sim_respond import ResponseEvent, SimResponse, links_down
from qkdtwin.twin.sim_source import (
    LinkSource,
    build_links,
    feed_every,
    observed_block,
    sim_module_id,
)
from qkdtwin.twin.state import History, TwinDatabase
from qkdtwin.twin.subscribers import Subscribers
from qkdtwin.twin.whatif import (
    WhatIfOutcome,
    WhatIfParams,
    _check_start,
    _what_if_on,
    parse_sets,
)
from qkdtwin.twin.windows import CountWindow, WindowCounts

__all__ = [
    "LinkState",
    "TelemetryComponent",
    "Twin",
    "TwinEvent",
    "TwinState",
    "TwinWhatIf",
]


#: Ticks the live loop may fall behind its wall-clock schedule and make up (back-to-back ticks):
#: an occasional long tick (a full garbage collection at 1,000 links) then costs no update.
#: Further behind, the schedule starts again from now (see :func:`run_at_fixed_rate`).
CATCH_UP_TICKS = 5


class LinkState(LinkDescription):
    """One link as the API shows it: its description, last block, status and keys."""

    #: QBER of the last block (``None`` before one with sifted bits).
    qber: float | None
    #: The windowed QBER the alarm uses (``None``: not a number yet).
    alarm_qber: float | None
    #: Secret key rate delivered (0 unless up), and the engine's rate whatever the status.
    key_rate_bps: float
    engine_key_rate_bps: float
    status: str
    attack: str | None
    keys: KeyCounts
    postprocess: PostprocessSummary | PostprocessFailure | None


class NodePosition(TypedDict):
    """A node and its place on the dashboard's drawing."""

    id: str
    role: str
    x: float
    y: float


class KmeLevel(TypedDict):
    """Link keys available at one node's KME."""

    node: str
    available_keys: int


class WindowKpi(TypedDict):
    """Service counts over a trailing window (``lived_s``: the part of it lived so far)."""

    label: str
    seconds: float
    lived_s: float
    requests: int
    successes: int
    success_rate: float | None


class NetworkSummary(TypedDict):
    """The key network's counts, parameters and links out of routing."""

    success_rate: float | None
    requests: int
    successes: int
    pool_capacity: float
    keys_per_service: float
    reroutes: int
    links_down: list[str]
    windows: list[WindowKpi]


class LoopTiming(TypedDict):
    """Wall time of the ticks, ms."""

    ticks: int
    step_ms_p50: float | None
    step_ms_p99: float | None
    step_ms_max: float | None
    step_ms_last: list[float]


class TwinState(TypedDict):
    """The whole live state (:meth:`Twin.state`, the ``GET /api/state`` body).

    ``devices`` in the full state; ``devices_count`` instead in the compact one.
    """

    t: float
    tick: int
    tick_s: float
    speed: float
    scenario: str
    policy: str
    nodes: list[NodePosition]
    links: list[LinkState]
    pools: list[PoolData]
    kmes: list[KmeLevel]
    network: NetworkSummary
    telemetry: TelemetrySummary
    alarms: list[AlarmRecord]
    active_alarms: int
    loop: LoopTiming
    devices_count: NotRequired[int]
    devices: NotRequired[list[DeviceReading]]


class LiveWindow(TypedDict):
    """The live counts over the what-if's horizon (or as much of it as was lived)."""

    seconds: float
    of_horizon_s: float
    requests: int
    success_rate: float | None


class LiveRates(TypedDict):
    """The live side of a what-if: success rates since start and over the window."""

    success_rate: float | None
    window: LiveWindow
    policy: str
    C: float
    X: float


class TwinWhatIf(WhatIfOutcome):
    """A what-if of the live twin (:meth:`Twin.what_if`): the prediction and the live rates."""

    live: LiveRates


class TickEvent(TypedDict):
    """Event: a tick ran (the compact state)."""

    type: Literal["tick"]
    state: TwinState
    wall_time: NotRequired[float]


class LinkActionEvent(TypedDict):
    """Event: an operator attacked (``attack`` names it) or cleared a link."""

    type: Literal["attack", "clear"]
    link: str
    attack: NotRequired[str]
    state: LinkState
    wall_time: NotRequired[float]


class WhatIfParamsOnly(TypedDict):
    """The parameters of a what-if, as its event carries them."""

    params: WhatIfParams


class WhatIfEvent(TypedDict):
    """Event: a what-if was run."""

    type: Literal["what-if"]
    result: WhatIfParamsOnly
    wall_time: NotRequired[float]


class ErrorEvent(TypedDict):
    """Event: a tick failed (the loop goes on)."""

    type: Literal["error"]
    message: str
    wall_time: NotRequired[float]


#: Every event the twin publishes (``wall_time``: Unix s, set when published).
TwinEvent = TickEvent | LinkActionEvent | WhatIfEvent | ErrorEvent | ResponseEvent


class TelemetryComponent(Protocol):
    """What the twin needs from the IIoT layer (see :mod:`qkdtwin.twin.devices`)."""

    def prepare(self, twin: Twin) -> None:
        """Under the twin's lock, before an interval: route and supply keys."""
        ...

    def run_interval(self, twin: Twin) -> TelemetryReport:
        """Run one telemetry interval and return its summary (``devices``, counters)."""
        ...

    def close(self) -> None:
        """Stop the devices, gateways, aggregator and broker."""
        ...


class Twin(Subscribers):
    """The live digital twin of one scenario.

    Parameters
    ----------
    scenario
        A :class:`TwinScenario`, a path, a mapping, or ``None`` for the packaged seed default.
    data_dir
        Directory of the KME stores and (by default) the twin's SQLite database.
    db_url
        Database of the history and alarm log (default ``sqlite:///DATA_DIR/twin.db``; a
        ``postgresql://`` URL works too).
    telemetry
        ``True``: build the IIoT telemetry from the scenario when :mod:`qkdtwin.iot` is
        installed; ``False``: no telemetry; or a ready :class:`TelemetryComponent`.
    speed
        Override of the scenario's ``twin.speed``.

    Raises
    ------
    ConfigError
        For a malformed scenario (the field is named).
    """

    def __init__(
        self,
        scenario: TwinScenario | str | Path | dict[str, Any] | None = None,
        *,
        data_dir: str | Path,
        db_url: str | None = None,
        telemetry: bool | TelemetryComponent = True,
        speed: float | None = None,
    ) -> None:
        sc = scenario if isinstance(scenario, TwinScenario) else load_twin_scenario(scenario)
        self.scenario = sc
        net, cfg = sc.network, sc.twin
        self.cfg = cfg
        if speed is not None:
            if not (0.0 < speed <= 10_000.0):
                raise ConfigError(
                    f"speed must be in (0, 10000], got {speed!r}", field="speed", value=speed
                )
            cfg = cfg.model_copy(update={"speed": float(speed)})
            self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.topology = net.build_topology()
        self.demands: list[Demand] = net.build_demands(self.topology)
        self.rng = np.random.default_rng(net.seed)
        self._lock = threading.RLock()
        self._subs: list[Callable[[dict[str, Any]], None]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.tick = 0
        self.step_ms: list[float] = []
        self._batch: list[tuple[str, bytes]] | None = None
        # links (the source; calibrated once each)
        self.links: dict[str, LinkEngine] = build_links(self.topology, cfg, self.rng)
        self.status: dict[str, str] = dict.fromkeys(self.links, "up")
        self.attack_label: dict[str, str | None] = dict.fromkeys(self.links, None)
        # layers
        self.keynet = KeyNetwork(
            self.topology,
            self.demands,
            pool_capacity=net.pool_capacity,
            keys_per_service=net.keys_per_service,
            policy=net.policy,
            horizon_s=net.duration or 1000.0,
            initial_fill=net.initial_fill,
        )
        # telemetry first: its MQTT clients (paho waits with select(), limited to descriptors
        # below 1024) get their sockets before the many key store files are opened
        self.devices: Mapping[str, DeviceReading] = {}
        self.telemetry_summary: TelemetrySummary = {"enabled": False}
        self.telemetry: TelemetryComponent | None = None
        self._last_services = (0, 0)
        #: Per-pool service counts over trailing windows (KPIs, the live side of a what-if).
        self.windows = CountWindow(len(self.keynet.pairs))
        if telemetry is True and cfg.devices_per_gateway > 0:
            from qkdtwin.twin.devices import build_telemetry

            self.telemetry = build_telemetry(self)
        elif telemetry is not True and telemetry is not False:
            self.telemetry = telemetry
        if self.telemetry is not None:
            self.telemetry_summary = {"enabled": True}
        try:
            self._open_stores(db_url)
        except BaseException:
            if self.telemetry is not None:
                self.telemetry.close()
            raise
        self.layout = layered_layout(self.topology)
        self._gateways = frozenset(self.topology.nodes_with_role("edge_gateway"))

    def _open_stores(self, db_url: str | None) -> None:
        cfg = self.cfg
        self.kmes = KmeLayer(
            [(lid, lk.a, lk.b) for lid, lk in self.links.items()], self.data_dir, cfg.kme_max_keys
        )
        self.db = TwinDatabase(db_url or f"sqlite:///{self.data_dir / 'twin.db'}")
        self.history = History(cfg.history, self.db)
        self.alarms = AlarmLog(self.db)
        # the links' telemetry goes through the same ingest as an attached network's
        self.ingest = LinkStream({sim_module_id(lid): lid for lid in self.links})
        self.source = LinkSource(
            self.links,
            self.status,
            self.kmes,
            self.rng,
            postprocess=cfg.postprocess,
            feed_every=feed_every(cfg.kme_feed_every, len(self.links)),
            publish=self._ingest,
        )
        self.response = SimResponse(self.links, self.status, self.kmes, self.keynet, self.alarms)
        t0 = self.db.get_meta("t")
        self.t = float(t0) if t0 is not None else 0.0

    # -- subscribers (subscribe, unsubscribe: Subscribers) ---------------------------------------

    def _publish(self, event: TwinEvent) -> None:
        event.setdefault("wall_time", time.time())
        for cb in list(self._subs):
            cb(cast("dict[str, Any]", event))  # a TypedDict is a plain dict

    # -- the tick ------------------------------------------------------------------------------

    def _ingest(self, topic: str, payload: bytes) -> None:
        """Offer one telemetry message to the ingest; keep every block it releases.

        During a tick's blocks the messages are collected and offered at once afterwards
        (:meth:`_ingest_many`).
        """
        if self._batch is not None:
            self._batch.append((topic, payload))
            return
        for msg in self.ingest.offer(topic, payload, self.t):
            self.links[msg.link_id].observe(observed_block(msg))

    def _ingest_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Offer one tick's telemetry messages to the ingest at once (:meth:`_ingest` each)."""
        for msg in self.ingest.offer_each(messages, self.t):  # one message alive at a time
            self.links[msg.link_id].observe(observed_block(msg))

    def _check(self, lid: str) -> list[ResponseEvent]:
        """Run detection then response for one link after its block; return the events."""
        decision = check_link(lid, self.links[lid], self.status[lid])
        return [] if decision is None else self.response.apply(decision, self.t)

    def _down(self) -> set[str]:
        return links_down(self.status)

    def step(self, dt: float | None = None) -> TwinState:
        """Advance one tick of ``dt`` simulated seconds (default ``tick_s``); return the state.

        The telemetry interval runs outside the twin's lock, so operator actions (an attack,
        a what-if) are never queued behind the MQTT round trips.
        """
        t_start = time.perf_counter()
        with self._lock:
            dt = float(self.cfg.tick_s if dt is None else dt)
            self.t += dt
            self.tick += 1
            self._batch = []
            try:
                ids = self.source.run(self.t, dt)
            finally:
                batch, self._batch = self._batch or [], None
            self._ingest_many(batch)
            decisions = check_links(self.links, self.status, ids)
            events = self.response.apply_all(decisions, self.t)
            self.source.deliver(self.tick)
            req, served = self.keynet.step(dt, self.rng)
            self._last_services = (req, served)
            self.windows.record(self.t, self.keynet.requests, self.keynet.successes)
            tel = self.telemetry
            if tel is not None:
                tel.prepare(self)
        for ev in events:
            self._publish(ev)
        summary = self._run_telemetry(tel) if tel is not None else None
        with self._lock:
            if summary is not None:
                self.devices = summary.pop("devices", self.devices)
                counts: TelemetryCounts = summary  # what is left: the counts
                self.telemetry_summary = {"enabled": True, **counts}
            self._record()
            state = self.state(compact=True)
            self.step_ms.append((time.perf_counter() - t_start) * 1e3)
            del self.step_ms[:-1000]
        self._publish({"type": "tick", "state": state})
        return state

    def _run_telemetry(self, tel: TelemetryComponent) -> TelemetryReport:
        try:
            return tel.run_interval(self)
        except Exception as exc:  # the live loop keeps running whatever the IIoT layer does
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _record(self) -> None:
        h, t = self.history, self.t
        for lid, lk in self.links.items():
            blk = lk.blocks[-1] if lk.blocks else None
            h.add(f"link:{lid}:qber", t, blk.qber if blk else None)
            h.add(
                f"link:{lid}:key_rate_bps",
                t,
                lk.key_rate_bps if self.status[lid] == "up" else 0.0,
            )
        for p in self.keynet.pools():
            h.add(f"pool:{p.src}|{p.dst}:level", t, p.level)
            h.add(f"pool:{p.src}|{p.dst}:rate", t, p.rate)
        req, served = self._last_services
        h.add("net:success", t, served / req if req else None)
        h.add("net:success_cum", t, self.keynet.success_rate())
        h.add("net:links_down", t, float(len(self._down())))
        tel = self.telemetry_summary
        if tel.get("enabled") and "delivered" in tel:
            h.add("iot:sent", t, float(tel["sent"]))
            h.add("iot:delivered", t, float(tel["delivered"]))
            h.add("iot:latency_ms_p50", t, tel.get("latency_ms_p50"))
        h.flush()
        if self.tick % 10 == 0:
            self.db.set_meta("t", repr(self.t))

    # -- operator actions ---------------------------------------------------------------------

    def resolve_link(self, name: str) -> str:
        """Canonical id of a link given as ``A-B`` in either order.

        Raises
        ------
        UnknownNameError
            ``field="link"`` if there is no such link.
        """
        lid = resolve_link(str(name), self.links)
        if lid is not None:
            return lid
        raise UnknownNameError(
            f"unknown link {name!r}; links: {', '.join(sorted(self.links))}",
            field="link",
            value=name,
        )

    def attack(self, link: str, kind: str = "intercept-resend", fraction: float = 1.0) -> LinkState:
        """Inject an attack on ``link`` and run its next block at once; return the link's state.

        Raises
        ------
        ConfigError
            For an unknown link (``field="link"``), type (``"type"``) or a fraction outside
            [0, 1] (``"fraction"``).
        """
        with self._lock:
            lid = self.resolve_link(link)
            att = make_attack(kind, fraction)
            self.source.set_attack(lid, att)
            self.attack_label[lid] = att.describe()
            self.source.recalibrate(lid)
            self.source.block(lid, self.t, self.cfg.tick_s)
            events = self._check(lid)
            view = self._link_view(lid)
        self._publish({"type": "attack", "link": lid, "attack": att.describe(), "state": view})
        for ev in events:
            self._publish(ev)
        return view

    def clear(self, link: str) -> LinkState:
        """Stop the attack on ``link``; it comes back once its QBER is under the threshold.

        Raises
        ------
        ConfigError
            For an unknown link (``field="link"``).
        """
        with self._lock:
            lid = self.resolve_link(link)
            self.attack_label[lid] = None
            self.source.clear_attack(lid)
            self.response.attack_cleared(lid, self.t)
            self.source.block(lid, self.t, self.cfg.tick_s)
            events = self._check(lid)
            view = self._link_view(lid)
        self._publish({"type": "clear", "link": lid, "state": view})
        for ev in events:
            self._publish(ev)
        return view

    def what_if(
        self,
        sets: list[str] | dict[str, Any] | None = None,
        *,
        policy: str | None = None,
        seed: int | None = None,
        start: str = "present",
        window_s: float | None = None,
    ) -> TwinWhatIf:
        """Predict success rates with changed parameters on a copy of the current network.

        ``start="present"`` (default) starts the prediction from the pools' current levels,
        ``"scenario"`` from the scenario's initial fill. Returns the prediction of
        :func:`qkdtwin.twin.whatif.what_if` plus ``live``: the live success rates (overall
        over the whole run, and over the last ``duration`` seconds: ``window``, the live
        window of the prediction's length, or as much of it as has been lived) to show side
        by side; each pool carries ``live_success_rate`` (since start) and
        ``live_window_success_rate`` (over that window).

        ``window_s`` (seconds, without a ``duration`` in ``sets``): compare on the same
        horizon. The prediction runs for as long as the live window of ``window_s`` seconds
        actually covers (all of it once the twin has lived that long), so prediction and live
        rates are counted over windows of equal length, as the dashboard shows them.

        Raises
        ------
        ConfigError
            For an unknown or out-of-range parameter or policy (the field is named).
        """
        _check_start(start)
        if window_s is not None and not (0 < window_s <= self.windows.max_age_s):
            raise ConfigError(
                f"window_s must be in (0, {self.windows.max_age_s:g}] s, got {window_s!r}",
                field="window_s",
                value=window_s,
            )
        ov = parse_sets(sets or [])
        net = self.scenario.network
        with self._lock:
            if window_s is not None and "duration" not in ov:
                covered = self.windows.over(window_s).lived_s
                ov["duration"] = covered if covered > 0 else float(window_s)
            horizon = ov.get("duration", net.duration or 1000.0)
            down = self._down()
            pools_now = self.keynet.pools()
            live_pools = {p.to_dict()["id"]: p.to_dict() for p in pools_now}
            live_rate = self.keynet.success_rate()
            levels = {(p.src, p.dst): float(p.level) for p in pools_now}
            window = self.windows.over(horizon)
            index = {f"{a}|{b}": i for i, (a, b) in enumerate(self.keynet.pairs)}
        pred = _what_if_on(
            net,
            self.topology,
            self.demands,
            down,
            ov,
            policy=policy or self.keynet.policy,
            seed=seed,
            initial_levels=levels if start == "present" else None,
        )
        for p in pred["pools"]:
            lp = live_pools.get(p["id"])
            p["live_success_rate"] = None if lp is None else lp["success_rate"]
            i = index.get(p["id"])
            p["live_window_success_rate"] = None if i is None else window.pool_rate(i)
        result: TwinWhatIf = {
            **pred,
            "live": {
                "success_rate": live_rate,
                "window": {
                    "seconds": window.lived_s,
                    "of_horizon_s": horizon,
                    "requests": int(window.requests.sum()),
                    "success_rate": window.success_rate,
                },
                "policy": self.keynet.policy,
                "C": self.keynet.capacity,
                "X": self.keynet.keys,
            },
        }
        self._publish({"type": "what-if", "result": {"params": result["params"]}})
        return result

    # -- views ---------------------------------------------------------------------------------

    def _link_view(self, lid: str) -> LinkState:
        lk = self.links[lid]
        blk = lk.blocks[-1] if lk.blocks else None
        return {
            **lk.describe(),
            "qber": blk.qber if blk and blk.sifted else None,
            "alarm_qber": _num(lk.alarm_qber()),
            "key_rate_bps": lk.key_rate_bps if self.status[lid] == "up" else 0.0,
            "engine_key_rate_bps": lk.key_rate_bps,
            "status": self.status[lid],
            "attack": self.attack_label[lid],
            "keys": self.kmes.link_view(lid),
            "postprocess": lk.postprocessed,
        }

    def state(self, *, compact: bool = False) -> TwinState:
        """Return the whole live state as plain data (the ``GET /api/state`` body).

        With ``compact`` (the event stream) the device list is left out (see ``/api/devices``)
        and the alarm list is cut to the 20 newest.
        """
        with self._lock:
            pools = [p.to_dict() for p in self.keynet.pools()]
            levels = self.kmes.node_levels()
            out: TwinState = {
                "t": self.t,
                "tick": self.tick,
                "tick_s": self.cfg.tick_s,
                "speed": self.cfg.speed,
                "scenario": self.scenario.source,
                "policy": self.keynet.policy,
                "nodes": [
                    {
                        "id": str(n),
                        "role": d["role"],
                        "x": self.layout[str(n)][0],
                        "y": self.layout[str(n)][1],
                    }
                    for n, d in self.topology.graph.nodes(data=True)
                ],
                "links": [self._link_view(lid) for lid in self.links],
                "pools": pools,
                "kmes": [{"node": n, "available_keys": k} for n, k in sorted(levels.items())],
                "network": {
                    "success_rate": self.keynet.success_rate(),
                    "requests": int(self.keynet.requests.sum()),
                    "successes": int(self.keynet.successes.sum()),
                    "pool_capacity": self.keynet.capacity,
                    "keys_per_service": self.keynet.keys,
                    "reroutes": self.keynet.reroutes,
                    "links_down": sorted(self._down()),
                    "windows": [
                        _window_view(label, seconds, self.windows.over(seconds))
                        for label, seconds in KPI_WINDOWS
                    ],
                },
                "telemetry": self.telemetry_summary.copy(),
                "alarms": self.alarms.to_list(20 if compact else None),
                "active_alarms": sum(1 for a in self.alarms.alarms if a.active),
                "loop": {
                    "ticks": self.tick,
                    "step_ms_p50": _pct(self.step_ms, 50),
                    "step_ms_p99": _pct(self.step_ms, 99),
                    "step_ms_max": max(self.step_ms) if self.step_ms else None,
                    "step_ms_last": [round(x, 2) for x in self.step_ms[-60:]],
                },
            }
            if compact:
                out["devices_count"] = len(self.devices)
            else:
                out["devices"] = list(self.devices.values())
            return out

    def device_page(
        self,
        *,
        offset: int = 0,
        limit: int | None = None,
        gateway: str | None = None,
        health: str | None = None,
    ) -> tuple[TelemetrySummary, int, list[DeviceReading]]:
        """Latest device readings, filtered and paged: ``(telemetry, total, page)``.

        ``total`` counts the devices that pass the filters (``gateway``: the node's devices;
        ``health``: ``ok``, ``fault`` or ``drift``); the page is ``limit`` of them (all when
        ``None``) from ``offset``, in the twin's order (by gateway, then device), which is
        the same from tick to tick, so pages do not shift.

        Raises
        ------
        ConfigError
            For a negative ``offset`` or a ``limit`` below 1.
        """
        if offset < 0:
            raise ConfigError(f"offset must be >= 0, got {offset}", field="offset", value=offset)
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}", field="limit", value=limit)
        if gateway is not None and gateway not in self._gateways:
            raise UnknownNameError(f"unknown gateway {gateway!r}", field="gateway", value=gateway)
        if health is not None and health not in ("ok", "fault", "drift"):
            raise ConfigError(
                f"health must be ok, fault or drift, got {health!r}", field="health", value=health
            )
        with self._lock:
            tel = self.telemetry_summary.copy()
            devs = self.devices
        if isinstance(devs, DeviceTable):  # filters without decoding; decodes the page only
            ids = devs.select(gateway, health)
        else:
            ids = [
                k
                for k, d in devs.items()
                if (gateway is None or d["gateway"] == gateway)
                and (health is None or d["health"] == health)
            ]
        end = None if limit is None else offset + limit
        return tel, len(ids), [devs[k] for k in ids[offset:end]]

    def alarm(self, alarm_id: int) -> Alarm:
        """One alarm by id (``UnknownNameError`` with ``field="alarm_id"`` if absent)."""
        for a in self.alarms.alarms:
            if a.id == alarm_id:
                return a
        raise UnknownNameError(f"no alarm {alarm_id}", field="alarm_id", value=alarm_id)

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Run ticks on a daemon thread, one every ``tick_s / speed`` wall seconds.

        A tick that overruns is made up by the next ones while the loop is at most
        :data:`CATCH_UP_TICKS` ticks behind (so the mean rate holds through a long tick).
        """
        if self._thread is not None:
            return
        self._stop.clear()

        def report(exc: Exception) -> None:  # keep the live loop alive; report the failure
            self._publish({"type": "error", "message": f"{type(exc).__name__}: {exc}"})

        def run() -> None:
            period = self.cfg.tick_s / self.cfg.speed
            run_at_fixed_rate(
                period, self.step, report, self._stop, max_lag_s=CATCH_UP_TICKS * period
            )

        self._thread = threading.Thread(target=run, daemon=True, name="qkdtwin-twin")
        self._thread.start()

    def stop(self) -> None:
        """Stop the tick thread (if running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
            self._thread = None

    def close(self) -> None:
        """Stop, persist the simulated time and release the stores and the database."""
        self.stop()
        with self._lock:
            if self.telemetry is not None:
                self.telemetry.close()
                self.telemetry = None
            self.history.flush()
            self.db.set_meta("t", repr(self.t))
            self.kmes.close()
            self.db.close()


#: The trailing windows of the success KPIs (label, seconds), beside the rate since start.
KPI_WINDOWS = (("last minute", 60.0), ("last hour", 3600.0))


def _window_view(label: str, seconds: float, w: WindowCounts) -> WindowKpi:
    return {
        "label": label,
        "seconds": seconds,
        "lived_s": w.lived_s,
        "requests": int(w.requests.sum()),
        "successes": int(w.successes.sum()),
        "success_rate": w.success_rate,
    }


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def _num(x: float) -> float | None:
    return None if x != x else float(x)
