"""The attached twin: state built only from what the operator's network exposes.

:class:`AttachedTwin` is the twin of a network it does not own (``qkdtwin twin serve
--attach``). Its inputs, and nothing else:

* link telemetry from the QKD modules over MQTT (:mod:`qkdtwin.interfaces`), validated,
  de-duplicated and ordered by :class:`~qkdtwin.twin.ingest.LinkStream`;
* IIoT envelope metadata seen on MQTT (:class:`~qkdtwin.twin.ingest.IotMetadataStream`), and
  the decrypted device readings only when the attach file grants the twin an aggregator SAE
  identity (:class:`~qkdtwin.twin.ingest.IotReadings`; live only, a recording holds no keys);
* the KMEs' operator interface (``GET /kme/v1/links``, polled with an operator certificate).

The twin is split along its seams: *ingest* (``twin/ingest``) -> *estimation* (per link a
:class:`~qkdtwin.twin.estimate.LinkEstimator`: maximum likelihood of the transmittance, the
background and the misalignment with intervals, over a sliding window) -> *detection* (per link
a :class:`~qkdtwin.twin.detect.LinkDetector`: CUSUM tests against the calibrated model) ->
*response* (:mod:`qkdtwin.twin.respond`: reroute the relay paths around an alarmed link, log
every step) -> *state* (:mod:`qkdtwin.twin.models`, the API's typed contract).

Everything is driven by explicit times: MQTT payloads carry their receive time, which the
attach file's clock maps to the modules' clock (network time); KME polls carry theirs. A
recording of those inputs (``--record``) therefore replays (``--replay``) to identical alarms
and state.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from qkdtwin.errors import QkdTwinError
from qkdtwin.interfaces import TOPIC_ROOT, LinkTelemetry
from qkdtwin.network.topology import link_id
from qkdtwin.twin.actuate import Action, Actuator
from qkdtwin.twin.attach import AttachFile
from qkdtwin.twin.detect import DetectionAlarm, DetectorConfig, LinkDetector
from qkdtwin.twin.estimate import IntervalObservation, LinkEstimate, LinkEstimator
from qkdtwin.twin.forecast import ConsumptionTracker, forecast_depletion
from qkdtwin.twin.ingest import IotMetadataStream, IotReadings, KmePoller, LinkStream, RawPoll
from qkdtwin.twin.layout import layered_layout
from qkdtwin.twin.models import (
    AlarmEvent,
    AlarmView,
    AttachedState,
    DeviceReadingView,
    DeviceView,
    ForecastView,
    IngestCounters,
    KmeLinkView,
    KmeView,
    LinkEstimateView,
    LinkStatus,
    LinkView,
    NodeView,
    PoolForecastView,
    ReadingsView,
    RouteView,
    SaePairView,
)
from qkdtwin.twin.respond import Responder
from qkdtwin.twin.subscribers import Subscribers
from qkdtwin.twin.whatif import WhatIfOutcome

__all__ = ["SUSPECTS", "AttachedLive", "AttachedTwin", "AttachedWhatIf"]

#: Displayed-estimate refits per reporting interval the default ``estimate_every`` aims at.
ESTIMATES_PER_INTERVAL = 100
#: Detector reference refits per reporting interval, at most about (``refit_every`` grows from
#: its default of 10 intervals past 500 links; the refits are staggered over the links).
REFITS_PER_INTERVAL = 50


def refit_every_for(links: int) -> int:
    """Intervals between a detector's reference refits in a twin of ``links`` links.

    The default 10 up to 500 links; beyond, ``ceil(links / 50)``, so about 50 refits (a fit
    and a design, ~5 ms each) run per reporting interval, staggered over the links. At 1,000
    links a reference is refitted every 20 intervals instead of 10: its window is 600 s, so
    it lags by at most 20 s of 600 either way.
    """
    return max(DetectorConfig().refit_every, -(-links // REFITS_PER_INTERVAL))


class AttachedLive(TypedDict):
    """The live side of an attached what-if: observed consumption, no live success rate."""

    success_rate: None
    consumption_keys_per_s: float
    pools_from_present: int
    note: str


class AttachedWhatIf(WhatIfOutcome):
    """A what-if of the attached twin (:meth:`AttachedTwin.what_if`)."""

    live: AttachedLive


#: Which attacks each statistic is sensitive to (an alarm names its statistic, not a cause).
SUSPECTS: dict[str, list[str]] = {
    "qber": ["intercept-resend", "misalignment fault"],
    "decoy-yield": ["pns"],
    "decoy-yield-rise": ["pns (short link)"],
    "loss-step": ["fiber-tap", "bad splice or connector", "cut"],
    "count-model": ["detector-blinding"],
    "background": ["detector-blinding", "stray light", "detector fault"],
    "detector-monitor": ["detector-blinding (faked-state)"],
}


@dataclass
class _Link:
    id: str
    a: str
    b: str
    module_id: str
    declared_eff: float
    estimator: LinkEstimator
    detector: LinkDetector
    status: LinkStatus = LinkStatus.UP
    alarm: AlarmView | None = None
    quiet_since: float | None = None
    #: The last accepted message's sequence number, interval end (s), QBER and SKR (b/s): kept
    #: as numbers, not the message (~20 objects tracked by the garbage collector per link,
    #: each living one interval: at 1,000 links they set off a full collection every few).
    last_seq: int | None = None
    last_end: float | None = None
    last_qber: float | None = None
    last_skr: float | None = None
    estimate: LinkEstimate | None = None
    since_fit: int = 0
    #: Where this link's estimate refits fall among the ``estimate_every`` intervals.
    phase: int = 0
    history: deque[tuple[float, float | None, float | None, float | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=3600)
    )
    #: The dashboard's view of :attr:`estimate`, built once per estimate (not per state).
    view: LinkEstimateView | None = None
    view_of: LinkEstimate | None = None


class AttachedTwin(Subscribers):
    """The twin of an attached network (see the module docstring).

    Parameters
    ----------
    attach
        The validated attach file.
    arl_days
        False-alarm average run length per link over all its statistics, simulated days.
    window_s
        Estimation window, s of network time.
    recovery_s
        An alarmed link whose statistics stay quiet this long (network time) goes to
        ``recovering``, and after as long again to ``up``.
    estimate_every
        Refit the displayed estimate every this many intervals of a link (1: every one);
        ``None`` (default): 1 up to 100 links, else ``ceil(links / 100)``, the links' refits
        staggered over the intervals, so about 100 fits run per reporting interval (a fit is
        ~2 ms of CPU: at 1,000 links one per link per interval was two cores). Detection does
        not use this estimate: each link's detector refits its own reference.
    on_record
        Called with every input ``(kind, key, payload, t_wall)`` (the recorder).
    actuate
        ``"off"`` (default: the closed loop's actions are planned and logged, not sent) or
        ``"on"`` (:mod:`qkdtwin.twin.actuate`); a replay is always off.
    forecast_window_s, forecast_lead_s, forecast_warn_prob
        Key-supply forecasts (:mod:`qkdtwin.twin.forecast`): seconds of KME polls the
        consumption rate covers; warn when a store empties within ``forecast_lead_s`` with at
        least ``forecast_warn_prob``.

    Notes
    -----
    Thread-safe: inputs may come from the MQTT thread, the poller thread and the tick
    thread; they are serialised by one lock.
    """

    def __init__(
        self,
        attach: AttachFile,
        *,
        arl_days: float = 30.0,
        window_s: float = 60.0,
        recovery_s: float = 120.0,
        estimate_every: int | None = None,
        on_record: Callable[[str, str, Any, float], None] | None = None,
        replay: bool = False,
        forecast_window_s: float = 300.0,
        forecast_lead_s: float = 300.0,
        forecast_warn_prob: float = 0.5,
        actuate: str = "off",
    ) -> None:
        self.attach = attach
        self.forecast_window_s = float(forecast_window_s)
        self.forecast_lead_s = float(forecast_lead_s)
        self.forecast_warn_prob = float(forecast_warn_prob)
        self._consumption: dict[tuple[str, str], ConsumptionTracker] = {}
        self.name = attach.name
        self.arl_days = float(arl_days)
        self.window_s = float(window_s)
        self.recovery_s = float(recovery_s)
        self.on_record = on_record
        self.replay = replay
        self._lock = threading.RLock()
        self._subs: list[Callable[[dict[str, Any]], None]] = []
        scenario = attach.scenario()
        self.topology = scenario.build_topology()
        self.layout = layered_layout(self.topology)
        # stale after 3 silent intervals, but never sooner than 2 s of wall time: a plant run
        # faster than real time (clock rate > 1) must not look stale from scheduling jitter
        interval = attach.reporting_interval_s
        self.stream = LinkStream(
            attach.module_map(),
            stale_intervals=max(3.0, 2.0 * attach.clock.rate / interval),
        )
        style = attach.iot_topic_style
        self.iot = IotMetadataStream(topic_style=style, group=attach.iot_group())
        self.readings: IotReadings | None = None
        if attach.aggregator is not None and not replay:
            self.readings = IotReadings(
                attach.aggregator, attach.kmes[attach.aggregator.kme].url, topic_style=style
            )
        self.detector_config = DetectorConfig(
            arl_days=self.arl_days, refit_every=refit_every_for(len(attach.links))
        )
        self.estimate_every = (
            max(1, -(-len(attach.links) // ESTIMATES_PER_INTERVAL))
            if estimate_every is None
            else max(1, int(estimate_every))
        )
        self.links: dict[str, _Link] = {}
        ends = {link_id(a, b): (str(a), str(b)) for a, b in self.topology.graph.edges()}
        for i, (lid, spec) in enumerate(attach.links.items()):
            a, b = ends[lid]
            self.links[lid] = _Link(
                phase=i % self.estimate_every,
                id=lid,
                a=a,
                b=b,
                module_id=spec.module_id,
                declared_eff=spec.declared_detector_efficiency,
                estimator=LinkEstimator(spec.declared_detector_efficiency, window_s=self.window_s),
                detector=LinkDetector(
                    spec.declared_detector_efficiency,
                    self.detector_config,
                    interval_s=interval,
                    refit_phase=i % self.detector_config.refit_every,
                ),
            )
        self.kmes: dict[str, KmeView] = {
            node: KmeView(node=node, url=k.url, status="never-seen")
            for node, k in attach.kmes.items()
        }
        # status bookkeeping of the KMEs' answers (the live poller fetches; this applies, so
        # that a replay of the recorded answers gives the same state)
        self._kme_state = (
            KmePoller({n: (k.url, None, None, None) for n, k in attach.kmes.items()})
            if attach.kmes
            else None
        )
        self.sae_pairs: dict[str, SaePairView] = {
            p.name: SaePairView(kme=p.kme, slave_sae_id=p.slave_sae_id, status="never-seen")
            for p in attach.sae_status
        }
        self.alarms: list[AlarmView] = []
        from functools import partial

        from qkdtwin.kms.client import OperatorClient

        self.actuator = Actuator(
            {
                node: partial(OperatorClient, k.url, k.cert, k.key, k.ca, timeout_s=2.0)
                for node, k in attach.kmes.items()
            },
            "off" if replay else actuate,
            on_done=self._actions_done,
        )
        #: (node, peer) -> (poll time, added_total, delivered_total), network time.
        self._kme_counters: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}
        self.responder = Responder(self.topology, scenario.build_demands(self.topology))
        self.t: float | None = None
        self.births = 0
        #: Released messages the models refused (time overlapping the previous interval).
        self.model_rejected = 0

    # -- subscribers (subscribe, unsubscribe: Subscribers) ---------------------------------------
    def _publish(self, event: dict[str, Any]) -> None:
        for cb in list(self._subs):
            cb(event)

    # -- inputs -------------------------------------------------------------------------------
    def net_time(self, t_wall: float) -> float:
        """Network time (the modules' clock) of a wall-clock receive time."""
        return self.attach.clock.network_time(t_wall)

    def on_mqtt(self, topic: str, payload: bytes, t_wall: float) -> None:
        """One MQTT message as received (never raises for a bad message)."""
        if self.on_record is not None:
            self.on_record("mqtt", topic, payload, t_wall)
        now = self.net_time(t_wall)
        events: list[dict[str, Any]] = []
        with self._lock:
            if topic.startswith(TOPIC_ROOT + "/") and topic.endswith("/perf"):
                for msg in self.stream.offer(topic, payload, now):
                    events += self._process(msg)
            elif topic.startswith(TOPIC_ROOT + "/"):
                self.births += 1  # module birth/death notices: liveness comes from the data
            else:
                self.iot.offer(topic, payload, now)
        if self.readings is not None and not topic.startswith(TOPIC_ROOT + "/"):
            # outside the twin's lock: a key exchange fetches its key from the KME
            self.readings.offer(topic, payload, now)
        for ev in events:
            self._publish(ev)

    def on_poll(self, node: str, raw: RawPoll, t_wall: float) -> None:
        """One KME poll as it came off the wire (a response or the error line).

        ``node`` is a KME's node name (its operator interface), or ``sae:<kme>:<slave>`` for
        the ETSI ``status`` of an SAE pair the attach file names.
        """
        if self.on_record is not None:
            self.on_record("poll", node, raw, t_wall)
        now = self.net_time(t_wall)
        if node.startswith("sae:"):
            with self._lock:
                self._on_sae_status(node, raw, now)
            return
        with self._lock:
            view = self.kmes.get(node)
            if view is None:
                return
            if self._kme_state is None:
                return
            res = self._kme_state.apply(node, raw, now)
            view.status = res.status
            if not res.ok or res.response is None:
                view.error = res.error
                return
            view.error = None
            view.last_poll = now
            view.links = [
                KmeLinkView(
                    **lk.model_dump(
                        include=set(KmeLinkView.model_fields) - {"consumption_keys_per_s"}
                    ),
                    consumption_keys_per_s=res.consumption.get(lk.peer),
                )
                for lk in res.response.links
            ]
            for lk in res.response.links:
                if lk.peer is not None:
                    series = self._kme_counters.setdefault((node, lk.peer), deque(maxlen=7200))
                    series.append((now, lk.added_total, lk.delivered_total))
                    tracker = self._consumption.setdefault(
                        (node, lk.peer), ConsumptionTracker(self.forecast_window_s)
                    )
                    tracker.observe(now, lk.delivered_total)
            for kv in view.links:
                # a disabled link delivers nothing: no depletion to forecast (nor to warn of)
                if kv.peer is not None and kv.enabled:
                    kv.forecast = self._store_forecast(node, kv.peer, kv.available, now)

    def _store_forecast(self, node: str, peer: str, level: int, now: float) -> ForecastView | None:
        """Forecast one KME store: supply from the link's estimate, consumption from polls."""
        lk = self.links.get(link_id(node, peer))
        tracker = self._consumption.get((node, peer))
        est = lk.estimate if lk is not None else None
        rate = tracker.rate() if tracker is not None else None
        if est is None or not est.converged or rate is None or tracker is None:
            return None
        supply = max(0.0, est.key_rate_bps) / self.attach.key_size_bits
        consumption, var, se = rate
        # seeded by the store and the poll time: a replay gives the same forecasts
        seed = zlib.crc32(f"{node}|{peer}|{now:.6f}".encode())
        f = forecast_depletion(
            level,
            supply,
            consumption,
            consumption_se=se,
            consumption_var_per_s=var,
            lead_s=self.forecast_lead_s,
            warn_prob=self.forecast_warn_prob,
            draws=2000,
            rng=seed,
        )

        def fin(x: float) -> float | None:
            return None if math.isinf(x) else x

        return ForecastView(
            level=f.level,
            supply_keys_per_s=f.supply_per_s,
            consumption_keys_per_s=f.consumption_per_s,
            consumption_window_s=tracker.span_s,
            drift_keys_per_s=f.drift_per_s,
            ttd_s=fin(f.ttd_s),
            ttd_interval_s=[fin(f.ttd_interval_s[0]), fin(f.ttd_interval_s[1])],
            interval_level=f.level_ci,
            p_empty_within_lead=f.p_empty_within_lead,
            lead_s=f.lead_s,
            warning=f.warning,
        )

    def _pool_forecasts(self) -> list[PoolForecastView]:
        """Per demand pair: the store on its relay path that empties first (its bottleneck)."""
        stores = {
            (k.node, lk.peer): lk.forecast
            for k in self.kmes.values()
            for lk in k.links
            if lk.peer is not None
        }
        out = []
        for r in self.responder.routes():
            path = r["path"]
            best: tuple[float, str, ForecastView] | None = None
            for u, v in zip(path or [], (path or [])[1:], strict=False):
                f = stores.get((u, v))
                if f is None:
                    continue
                key = math.inf if f.ttd_s is None else f.ttd_s
                if best is None or key < best[0]:
                    best = (key, f"{u}->{v}", f)
            out.append(
                PoolForecastView(
                    id=r["id"],
                    path=path,
                    bottleneck=None if best is None else best[1],
                    forecast=None if best is None else best[2],
                )
            )
        return out

    def _keys_since(self, node: str, peer: str, since: float) -> dict[str, Any] | None:
        """Keys a KME's store for ``peer`` added and delivered since ``since`` (network time).

        From the operator counters polled so far: the change from the last poll at or before
        ``since`` to the newest poll. With no poll that old, from the oldest one (then the
        numbers are lower bounds).
        """
        series = self._kme_counters.get((node, peer))
        if not series:
            return None
        base = None
        for rec in series:
            if rec[0] > since:
                break
            base = rec
        lower_bound = base is None
        if base is None:
            base = series[0]
        last = series[-1]
        return {
            "added": last[1] - base[1],
            "delivered": last[2] - base[2],
            "from_poll_at": base[0],
            "lower_bound": lower_bound,
        }

    def _discard_assessment(self, lk: _Link, since: float) -> dict[str, Any]:
        """Assess what discarding a link's keys since the change point takes, at both ends."""
        ends = {}
        for node, peer in ((lk.a, lk.b), (lk.b, lk.a)):
            ends[f"{node}->{peer}"] = self._keys_since(node, peer, since)
        return {
            "since": since,
            "stores": ends,
            "actuation": "off: the twin does not act on the KMEs yet; keys added since the "
            "change point should be discarded at both ends and keys delivered since then "
            "replaced by an early rekey",
        }

    def _on_sae_status(self, name: str, raw: RawPoll, now: float) -> None:
        view = self.sae_pairs.get(name)
        if view is None:
            return
        error = raw.error
        if error is None and raw.http_status != 200:
            error = f"GET {raw.url}: HTTP {raw.http_status}"
        if error is None:
            try:
                import json

                body = json.loads(raw.body or "")
                view.stored_key_count = int(body["stored_key_count"])
                view.max_key_count = int(body["max_key_count"])
                view.key_size = int(body["key_size"])
                view.master_sae_id = str(body["master_SAE_ID"])
            except (ValueError, TypeError, KeyError) as exc:
                error = f"GET {raw.url}: malformed ETSI status: {exc}"
        if error is not None:
            view.failures += 1
            view.error = error
            if view.last_poll is not None and view.failures >= 3:
                view.status = "stale"
            return
        view.failures = 0
        view.error = None
        view.status = "ok"
        view.last_poll = now

    def on_state(self, state: str, t_wall: float) -> None:
        """MQTT connection state changes: losing the broker makes every source stale."""
        if state != "connected":
            with self._lock:
                self.stream.mark_upstream_lost(self.net_time(t_wall))

    def tick(self, t_wall: float) -> None:
        """Periodic housekeeping: release timed-out gaps, mark stale links."""
        now = self.net_time(t_wall)
        events: list[dict[str, Any]] = []
        with self._lock:
            for msg in self.stream.tick(now):
                events += self._process(msg)
            for lk in self.links.values():
                src = self.stream.source_status(lk.module_id, now).status
                if src == "stale" and lk.status == LinkStatus.UP:
                    lk.status = LinkStatus.STALE
                elif src == "ok" and lk.status == LinkStatus.STALE:
                    lk.status = LinkStatus.UP
        for ev in events:
            self._publish(ev)
        self._publish({"type": "tick", "t": self.t})

    # -- estimation, detection, response ------------------------------------------------------
    def _process(self, msg: LinkTelemetry) -> list[dict[str, Any]]:
        lk = self.links[msg.link_id]
        if lk.last_end is not None and msg.interval_start < lk.last_end - 1e-6:
            # in sequence but overlapping the previous interval in time (a module whose
            # clock stepped back): its counts would be double-counted by the models
            self.model_rejected += 1
            return []
        try:
            obs = IntervalObservation.from_telemetry(msg)
        except QkdTwinError:
            self.model_rejected += 1
            return []
        lk.last_seq, lk.last_end = msg.seq, msg.interval_end
        lk.last_qber, lk.last_skr = msg.qber, msg.qkdl_performance.skr
        self.t = msg.interval_end if self.t is None else max(self.t, msg.interval_end)
        lk.estimator.add(obs)
        # statistics crossing in the same interval: the one with the strongest evidence
        # (CUSUM over threshold) names the alarm, the others go to its log
        detections = sorted(
            lk.detector.add(obs), key=lambda d: d.cusum / max(d.threshold, 1.0), reverse=True
        )
        lk.since_fit += 1
        if lk.estimate is None or lk.since_fit >= self.estimate_every:
            lk.since_fit = lk.phase if lk.estimate is None else 0  # staggered refits
            lk.estimate = lk.estimator.estimate()
            est = lk.estimate
            lo, hi = est.loss_db_ci if est.converged else (None, None)
            lk.history.append(
                (msg.interval_end, est.loss_db if est.converged else None, lo, hi, msg.qber)
            )
        events: list[dict[str, Any]] = []
        if lk.status == LinkStatus.STALE:
            lk.status = LinkStatus.UP
        if detections:
            lk.quiet_since = None
            if lk.alarm is None:
                events.append(self._raise(lk, detections[0], msg.interval_end))
                for extra in detections[1:]:
                    self._evidence(lk, extra, msg.interval_end)
            else:
                if lk.status == LinkStatus.RECOVERING:
                    lk.status = LinkStatus.ALARM
                for det in detections:
                    self._evidence(lk, det, msg.interval_end)
            # re-arm at once: under a persistent change the statistic crosses again within
            # about one detection delay; the reference stays frozen meanwhile
            lk.detector.rearm()
        elif lk.status in (LinkStatus.ALARM, LinkStatus.RECOVERING):
            if lk.quiet_since is None:
                lk.quiet_since = msg.interval_end
            quiet = msg.interval_end - lk.quiet_since
            if lk.status == LinkStatus.ALARM and quiet >= self.recovery_s:
                lk.status = LinkStatus.RECOVERING
                assert lk.alarm is not None
                lk.alarm.events.append(AlarmEvent(what="recovering", t=msg.interval_end))
            elif lk.status == LinkStatus.RECOVERING and quiet >= 2 * self.recovery_s:
                events.append(self._restore(lk, msg.interval_end))
        return events

    def _evidence(self, lk: _Link, det: DetectionAlarm, t: float) -> None:
        assert lk.alarm is not None
        lk.alarm.events.append(
            AlarmEvent(
                what="evidence",
                t=t,
                detail={"statistic": det.statistic, "cusum": det.cusum, "threshold": det.threshold},
            )
        )

    def _raise(self, lk: _Link, det: DetectionAlarm, t: float) -> dict[str, Any]:
        alarm = AlarmView(
            id=len(self.alarms) + 1,
            link=lk.id,
            kind=det.statistic,
            raised_at=t,
            onset=det.change_point_t,
            delay_s=t - det.change_point_t,
            suspected=SUSPECTS.get(det.statistic, []),
            evidence={
                "cusum": det.cusum,
                "threshold": det.threshold,
                "intervals": det.intervals,
                "design": det.design,
                "reference": det.reference,
                "post_change": det.post_change,
            },
            message=det.message,
        )
        alarm.events.append(AlarmEvent(what="raised", t=t, detail={"statistic": det.statistic}))
        lk.status = LinkStatus.ALARM
        lk.alarm = alarm
        lk.quiet_since = None
        self.alarms.append(alarm)
        t0 = time.perf_counter()
        changed = self.responder.reroute(self._down())
        alarm.events.append(
            AlarmEvent(
                what="rerouted",
                t=t,
                detail={**changed, "reroute_ms": (time.perf_counter() - t0) * 1e3},
            )
        )
        onset = det.change_point_t if det.change_point_t is not None else t
        assessment = self._discard_assessment(lk, onset)
        alarm.events.append(AlarmEvent(what="discard-assessed", t=t, detail=assessment))
        delivered = [e["delivered"] for e in assessment["stores"].values() if e is not None]
        # each end's store counts every key that left the link's pool (its own enc and the
        # peer's, mirrored): one end's change is the link's
        alarm.exposed_keys = max(delivered) if delivered else None
        # the KMEs' clock is wall time: the onset goes back through the attach file's clock
        since = self.attach.clock.wall_time(onset)
        self.actuator.submit(
            (alarm.id, t),
            self.actuator.plan_alarm(lk.id, lk.a, lk.b, since, det.statistic)
            + self._quota_plan(lk, det.statistic)
            + self._rekey_plan(lk, det.statistic),
        )
        return {"type": "alarm", "alarm": alarm.model_dump(mode="json")}

    def _relayed_pairs(self) -> list[tuple[str, str]]:
        """(gateway node, aggregator node) pairs of the attach file's IIoT section."""
        iot = self.attach.iot
        if iot is None:
            return []
        return sorted({(node, iot.aggregator) for node in iot.edges.values()})

    def _supply_keys_per_s(self, a: str, b: str) -> float | None:
        """Link ``a``-``b``'s estimated key supply, keys/s (``None``: not calibrated yet)."""
        lk = self.links.get(link_id(a, b))
        est = lk.estimate if lk is not None else None
        if est is None or not est.converged:
            return None
        return max(0.0, est.key_rate_bps) / self.attach.key_size_bits

    def _quota_plan(self, lk: _Link, reason: str, *, release: bool = False) -> list[Action]:
        """Relay quotas per the ``static`` policy on the network as it is after the alarm.

        Every relayed IIoT pair (gateway node -> aggregator node, more than one hop on the
        fewest-hop route over the links up) gets the static policy's equal rate (docs/
        network.md: ``t = min_r cap_r / sum_p A[r,p]``): ``t = min over the route's links l
        of cap_l / (1 + n_l)``, where ``cap_l`` is the link's estimated key supply
        (:meth:`_supply_keys_per_s`) and ``1 + n_l`` the pools drawing on it, its own direct
        pool and the ``n_l`` relayed pairs routed over it. The detours then share the
        remaining links instead of draining them first come, first served. A pair crossing
        a link not calibrated yet gets no quota. Each quota holds
        :data:`~qkdtwin.twin.actuate.QUOTA_BURST_S` seconds of its rate (at least one key). With
        ``release`` (a link restored), every other relayed pair has its quota removed; once
        no link is down, all are.
        """
        import networkx as nx

        from qkdtwin.twin.keynet import topology_without

        graph = topology_without(self.topology, self._down()).graph
        routes: dict[tuple[str, str], list[str]] = {}
        for src, dst in self._relayed_pairs():
            try:
                path = nx.shortest_path(graph, src, dst)
            except (nx.NetworkXNoPath, nx.NodeNotFound):
                continue
            if len(path) > 2:  # relayed: a direct link is never limited
                routes[src, dst] = path
        crossing: dict[frozenset[str], int] = {}
        for path in routes.values():
            for u, v in itertools.pairwise(path):
                crossing[frozenset((u, v))] = crossing.get(frozenset((u, v)), 0) + 1
        quotas: dict[tuple[str, str], float | None] = {}
        for pair, path in routes.items():
            shares = []
            for u, v in itertools.pairwise(path):
                cap = self._supply_keys_per_s(u, v)
                if cap is None:
                    break
                shares.append(cap / (1 + crossing[frozenset((u, v))]))
            else:
                quotas[pair] = min(shares) if self._down() else None
        if release:
            quotas = {p: quotas.get(p) for p in self._relayed_pairs()}
        return self.actuator.plan_quotas(lk.id, quotas, reason)

    def _rekey_plan(self, lk: _Link, reason: str) -> list[Action]:
        """Rekey requests for the gateways whose keys crossed ``lk`` to reach the aggregator.

        Their path is the fewest-hop one over the links that were up before this alarm (the
        KMEs' relay route).
        """
        iot = self.attach.iot
        if iot is None:
            return []
        import networkx as nx

        from qkdtwin.twin.keynet import topology_without

        graph = topology_without(self.topology, self._down() - {lk.id}).graph
        out = []
        for edge, node in iot.edges.items():
            try:
                path = nx.shortest_path(graph, node, iot.aggregator)
            except (nx.NetworkXNoPath, nx.NodeNotFound):
                continue
            if any({u, v} == {lk.a, lk.b} for u, v in itertools.pairwise(path)):
                out.append(
                    Action(
                        "rekey",
                        edge,
                        node,
                        lk.id,
                        reason,
                        **self._rekey_command(iot.group, edge),
                    )
                )
        return out

    def _rekey_command(self, group: str, edge: str) -> dict[str, Any]:
        """Topic (and, for Sparkplug, the protobuf NCMD payload) of a gateway's rekey command."""
        if self.attach.iot_topic_style != "sparkplug":
            from qkdtwin.iot.transport import topic as iot_topic

            return {"topic": iot_topic(group, "NCMD", edge)}
        from qkdtwin.iot.sparkplug import (
            REKEY_METRIC,
            DataType,
            Metric,
            Payload,
            encode_payload,
            now_ms,
            sparkplug_topic,
        )

        ts = now_ms()
        cmd = Payload(ts, None, (Metric(REKEY_METRIC, DataType.BOOLEAN, True, ts),))
        return {"topic": sparkplug_topic(group, "NCMD", edge), "payload": encode_payload(cmd)}

    def _actions_done(self, tag: tuple[int, float], actions: list[Action]) -> None:
        """Log a batch of closed-loop actions in its alarm (``tag``: alarm id, network time)."""
        alarm_id, t = tag
        with self._lock:
            alarm = self.alarms[alarm_id - 1]
            for act in actions:
                what = "actuated" if act.performed else "would-actuate"
                alarm.events.append(AlarmEvent(what=what, t=t, detail=act.to_detail()))

    def _restore(self, lk: _Link, t: float) -> dict[str, Any]:
        lk.status = LinkStatus.UP
        alarm = lk.alarm
        lk.alarm = None
        lk.quiet_since = None
        lk.detector.release()
        self.responder.reroute(self._down())
        if alarm is not None:
            alarm.active = False
            alarm.events.append(AlarmEvent(what="restored", t=t))
            since = self.attach.clock.wall_time(alarm.onset if alarm.onset is not None else t)
            self.actuator.submit(
                (alarm.id, t),
                self.actuator.plan_restore(lk.id, lk.a, lk.b, since)
                + self._quota_plan(lk, "restored", release=True),
            )
            return {"type": "restored", "alarm": alarm.model_dump(mode="json")}
        return {"type": "restored", "link": lk.id}

    def rebaseline(self, link: str) -> LinkView:
        """Operator action: accept the link's present behaviour as its new normal.

        After a real, harmless change (a repaired splice, a replaced detector) the loss-step
        statistic keeps alarming against the old reference; rebaselining relearns it, closes
        the alarm and brings the link back up.
        """
        with self._lock:
            lk = self.links[link]
            lk.detector.clear()
            if lk.alarm is not None:
                lk.alarm.events.append(AlarmEvent(what="rebaselined", t=self.t or 0.0))
            self._restore(lk, self.t or 0.0)
            return self._link_view(lk, self.t or 0.0)

    def what_if(
        self,
        sets: list[str] | dict[str, Any] | None = None,
        *,
        policy: str | None = None,
        seed: int | None = None,
        start: str = "present",
    ) -> AttachedWhatIf:
        """Predict the pools' success rates from the present (the exact network engine).

        The attach file's network (its demands, ``C``, ``X``, policy and link rates) on the
        topology as it is now (links in alarm or recovering removed), each demand pair's pool
        starting from the keys it can draw now: the fewest available keys among the KME stores
        of its relay path (polled; clipped to ``C``; pairs with an unpolled store start as the
        scenario says; ``start="scenario"``: every pool as the scenario says). ``live`` gives
        the observed consumption: the KMEs report deliveries,
        not refused requests, so there is no live success rate to compare with.

        Raises
        ------
        ConfigError
            For an unknown or out-of-range parameter or policy (the field is named).
        """
        from qkdtwin.twin.whatif import _check_start, _what_if_on, parse_sets

        _check_start(start)
        ov = parse_sets(sets or [])
        sc = self.attach.scenario()
        with self._lock:
            down = self._down()
            stores = {
                (k.node, lk.peer): lk for k in self.kmes.values() for lk in k.links if lk.peer
            }
            levels: dict[tuple[str, str], float] = {}
            for r in self.responder.routes():
                path = r["path"]
                if not path or len(path) < 2:
                    continue
                hops = [stores.get((u, v)) for u, v in itertools.pairwise(path)]
                if all(h is not None for h in hops):
                    a, b = r["id"].split("|", 1)
                    levels[(a, b)] = float(min(h.available for h in hops if h is not None))
            consumption = sum(
                (lk.forecast.consumption_keys_per_s if lk.forecast else 0.0)
                for lk in stores.values()
            )
        pred = _what_if_on(
            sc,
            self.topology,
            sc.build_demands(self.topology),
            down,
            ov,
            policy=policy or sc.policy,
            seed=seed,
            initial_levels=levels if start == "present" else None,
        )
        return {
            **pred,
            "live": {
                "success_rate": None,
                "consumption_keys_per_s": consumption,
                "pools_from_present": len(levels),
                "note": "the KMEs report deliveries, not refused requests: no live success rate",
            },
        }

    def _down(self) -> set[str]:
        return {
            lid
            for lid, lk in self.links.items()
            if lk.status in (LinkStatus.ALARM, LinkStatus.RECOVERING)
        }

    # -- views --------------------------------------------------------------------------------
    @staticmethod
    def _estimate_view(lk: _Link) -> LinkEstimateView:
        """Return the link's estimate as the dashboard shows it (rebuilt only when refitted)."""
        if lk.view is None or lk.view_of is not lk.estimate:
            lk.view, lk.view_of = _estimate_view(lk.estimate), lk.estimate
        return lk.view

    def _link_view(self, lk: _Link, now: float) -> LinkView:
        return LinkView(
            id=lk.id,
            a=lk.a,
            b=lk.b,
            module_id=lk.module_id,
            status=lk.status,
            source=self.stream.source_status(lk.module_id, now).status,
            estimate=self._estimate_view(lk),
            last_seq=lk.last_seq,
            last_interval_end=lk.last_end,
            observed_qber=lk.last_qber,
            observed_skr_bps=lk.last_skr,
            declared_detector_efficiency=lk.declared_eff,
            alarm_id=None if lk.alarm is None else lk.alarm.id,
        )

    def state(self) -> AttachedState:
        """Return the whole state (``GET /api/state``)."""
        with self._lock:
            now = self.t if self.t is not None else 0.0
            snap = self.stream.snapshot(modules=False)  # the totals: no per-module copies
            counts = _counter_dict(snap.total)
            return AttachedState(
                name=self.name,
                t=self.t,
                nodes=[
                    NodeView(
                        id=str(n),
                        role=str(d["role"]),
                        x=self.layout[str(n)][0],
                        y=self.layout[str(n)][1],
                    )
                    for n, d in self.topology.graph.nodes(data=True)
                ],
                links=[self._link_view(lk, now) for lk in self.links.values()],
                alarms=list(reversed(self.alarms)),
                active_alarms=sum(1 for a in self.alarms if a.active),
                kmes=list(self.kmes.values()),
                sae_pairs=list(self.sae_pairs.values()),
                routes=[RouteView(**r) for r in self.responder.routes()],
                devices=_devices(self.iot, now),
                readings=self._readings_view(),
                pool_forecasts=self._pool_forecasts(),
                ingest=IngestCounters(
                    counts={
                        **counts,
                        "offered": snap.offered,
                        "model_rejected": self.model_rejected,
                        **self._iot_counts(),
                    },
                    version_mismatch=[{"version": k, "count": v} for k, v in snap.versions.items()],
                ),
                arl_days=self.arl_days,
                replay=self.replay,
                actuation=self.actuator.mode,
            )

    def _iot_counts(self) -> dict[str, int]:
        """Sparkplug mode: lost gateway messages (``seq`` gaps) and rebirths a host would ask."""
        if self.attach.iot_topic_style != "sparkplug":
            return {}
        return {f"iot_{k}": v for k, v in self.iot.sequence_totals().items()}

    def _readings_view(self) -> ReadingsView:
        if self.attach.aggregator is None:
            return ReadingsView(
                granted=False,
                source="not-granted",
                note="the attach file grants no aggregator identity: envelope metadata only",
            )
        if self.readings is None:
            return ReadingsView(
                granted=True,
                source="replay",
                note="a recording holds no key material: readings are live only",
            )
        return ReadingsView(
            granted=True,
            source="decrypted",
            note=f"decrypted as {self.attach.aggregator.sae_id}; readings appear from the "
            "first key exchange seen (a gateway's next rekey)",
            counters=self.readings.counters(),
            devices=[
                DeviceReadingView(
                    id=d.device_id,
                    edge=d.edge,
                    kind=d.kind,
                    t=d.t,
                    values=d.values,
                    received_at=None if d.received_at != d.received_at else d.received_at,
                )
                for d in self.readings.latest()
            ],
        )

    def close(self) -> None:
        """Finish the closed loop's queued actions; release the KME clients."""
        self.actuator.close()
        if self.readings is not None:
            self.readings.close()

    def history(
        self, link: str
    ) -> list[tuple[float, float | None, float | None, float | None, float | None]]:
        """``(t, loss_db, low, high, qber)`` per accepted interval of one link."""
        with self._lock:
            return list(self.links[link].history)


def _counter_dict(c: Any) -> dict[str, int]:
    from dataclasses import fields, is_dataclass

    if is_dataclass(c):
        return {f.name: int(getattr(c, f.name)) for f in fields(c)}
    return {}


def _estimate_view(est: LinkEstimate | None) -> LinkEstimateView:
    if est is None or not est.converged:
        return LinkEstimateView(intervals=0 if est is None else est.intervals)

    def ci(v: tuple[float, float]) -> list[float]:
        return [float(v[0]), float(v[1])]

    return LinkEstimateView(
        t=est.t,
        window_s=est.window_s,
        intervals=est.intervals,
        loss_db=est.loss_db,
        loss_db_ci=ci(est.loss_db_ci),
        eta=est.eta,
        eta_ci=ci(est.eta_ci),
        dark_count_prob=est.dark_count_prob,
        dark_count_prob_ci=ci(est.dark_count_prob_ci),
        misalignment=est.misalignment,
        misalignment_ci=ci(est.misalignment_ci),
        qber=est.qber,
        qber_ci=ci(est.qber_ci),
        key_rate_bps=est.key_rate_bps,
        converged=True,
    )


def _devices(iot: IotMetadataStream, now: float) -> list[DeviceView]:
    snap = iot.snapshot(now)
    return [
        DeviceView(
            id=s.sender_id,
            status=str(s.health),
            messages=s.records,
            bytes=s.bytes,
            last_seen=s.last_seen,
            gaps=s.gaps,
        )
        for s in snap.senders.values()
    ]
