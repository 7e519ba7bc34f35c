"""A telemetry session: devices -> edge gateway -> MQTT -> aggregator, interval by interval.

This is the recipe the CLI and the live twin use::

    with LocalKeyPair() as pair, TelemetrySession(
        TelemetryConfig(scheme="mobile", devices=50, broker="embedded"),
        pair.gateway_source, pair.aggregator_source,
    ) as session:
        report = session.run_interval(messages_per_device=1)
        report.delivered, report.rejected, report.latest["edge-1.d00003"].values

One session is one edge gateway (one link, one ETSI SAE pair) with its devices, and the
aggregator that receives it. Several sessions (distinct ``edge_id``) can share one broker:
start one :class:`~qkdtwin.iot.transport.EmbeddedBroker` and give each its ``url``, since
``broker="embedded"`` starts a broker per session.

:meth:`TelemetrySession.run_interval` samples every device, seals, publishes, and waits (up
to ``delivery_timeout_s``) until the aggregator has processed every record published in the
interval, then reports what happened in it.

With ``topic_style="sparkplug"`` the gateway is a Sparkplug B 3.0 edge node
(:class:`~qkdtwin.iot.sparkplug_edge.SparkplugEdgeNode`: NBIRTH and a DBIRTH per device at
start, the sealed records in the ``Bytes`` metric of NDATA/DDATA, DDEATHs and NDEATH at a clean
close, NDEATH as the will) and the aggregator receives through a
:class:`~qkdtwin.iot.sparkplug_host.SparkplugReceiver` (:attr:`TelemetrySession.receiver`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qkdtwin.errors import ConfigError, TransportError
from qkdtwin.iot.aggregator import Aggregator
from qkdtwin.iot.devices import MIN_PAYLOAD_BYTES, DeviceFleet
from qkdtwin.iot.envelope import check_sender_id
from qkdtwin.iot.fleet_share import FleetPart
from qkdtwin.iot.gateway import EdgeGateway
from qkdtwin.iot.key_derivation import mlkem_keypair
from qkdtwin.iot.key_sources import QkdKeySource
from qkdtwin.iot.latest import LatestReadings
from qkdtwin.iot.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE
from qkdtwin.iot.transport import (
    TOPIC_ROOT,
    EmbeddedBroker,
    MemoryBus,
    Transport,
    broker_security,
    connect_transport,
    parse_broker,
    topic,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import mlkem

    from qkdtwin.iot.sparkplug_edge import SparkplugEdgeNode
    from qkdtwin.iot.sparkplug_host import SparkplugReceiver

__all__ = ["IntervalReport", "TelemetryConfig", "TelemetrySession"]


class TelemetryConfig(BaseModel):
    """Settings of a telemetry session (every field has a working default).

    Attributes
    ----------
    scheme
        ``"fixed"`` (aggregate, one envelope per interval) or ``"mobile"`` (one envelope per
        reading, under the device's own key).
    devices
        Number of simulated devices behind the gateway.
    mode
        ``"hybrid"`` (QKD key + ML-KEM-768), ``"qkd-only"`` or ``"pqc-only"``.
    broker
        ``"embedded"`` (amqtt on loopback, started by the session), a broker URL
        ``mqtt://[USER[:PASSWORD]@]HOST:PORT`` or ``mqtts://...`` (TLS), or ``"memory"``
        (in-process bus, no MQTT: unit tests and fast what-if runs).
    mqtt_ca, mqtt_cert, mqtt_key
        ``mqtts://`` only: the CA that signed the broker's certificate (default: the system's),
        and a client certificate and key for mutual TLS (PEM files).
    mqtt_protocol
        ``"3.1.1"`` or ``"5"``.
    payload_bytes
        Size of each encoded reading, bytes.
    rekey_messages, rekey_seconds
        Start a new key epoch after this many readings or seconds.
    seed
        Seed of the device simulation (signals, faults). Key material is never seeded.
    group_id, edge_id
        Sparkplug group and edge node IDs (topics, key derivation, device IDs).
    topic_style
        ``"qkdtwin"`` (``qkdtwin/v1/...`` topics, JSON births, binary frames) or
        ``"sparkplug"`` (Sparkplug B 3.0: ``spBv1.0/...`` topics, protobuf payloads, the sealed
        envelopes in a ``Bytes`` metric; needs ``pip install 'qkdtwin[sparkplug]'``; see
        :mod:`qkdtwin.iot.sparkplug_edge`).
    bd_seq
        Birth/death sequence number of this session's MQTT connection (in NBIRTH and the
        NDEATH will), 0..255; a restarted gateway passes its previous value plus one, modulo
        256, so that a host can tell the new session's death from the old one's.
    interval_s
        Simulated time per interval, s.
    queue_limit
        Readings held by the gateway while no key is available.
    replay_window
        Anti-replay window per sender, sequence numbers.
    frame_bytes
        Largest frame (MQTT message) the gateway builds, bytes (one larger envelope is sent
        alone).
    delivery_timeout_s
        How long :meth:`TelemetrySession.run_interval` waits for the aggregator.
    fault_rate_per_s, drift_rate_per_s
        Device health transition rates, 1/s.
    """

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["fixed", "mobile"] = "fixed"
    devices: int = Field(10, ge=1, le=100_000)
    mode: Literal["hybrid", "qkd-only", "pqc-only"] = "hybrid"
    broker: str = "embedded"
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    mqtt_protocol: Literal["3.1.1", "5"] = "3.1.1"
    payload_bytes: int = Field(256, ge=MIN_PAYLOAD_BYTES, le=262_144)
    rekey_messages: int = Field(100_000, ge=1)
    rekey_seconds: float = Field(60.0, gt=0)
    seed: int = 0
    group_id: str = "plant-1"
    edge_id: str = "edge-1"
    topic_style: Literal["qkdtwin", "sparkplug"] = "qkdtwin"
    bd_seq: int = Field(0, ge=0, le=255)
    interval_s: float = Field(1.0, gt=0)
    queue_limit: int = Field(10_000, ge=0)
    replay_window: int = Field(1024, ge=1, le=65_536)
    frame_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024)
    delivery_timeout_s: float = Field(10.0, gt=0)
    fault_rate_per_s: float = Field(1e-4, ge=0)
    drift_rate_per_s: float = Field(2e-4, ge=0)

    @field_validator("group_id", "edge_id")
    @classmethod
    def _ids(cls, v: str) -> str:
        check_sender_id(v)
        if len(v) > 48:
            raise ValueError("at most 48 characters (device IDs extend it)")
        return v

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parse_broker(v)
        return v

    @classmethod
    def build(cls, **options: Any) -> TelemetryConfig:
        """Validate ``options``; a bad one raises :class:`ConfigError` naming the field.

        Raises
        ------
        ConfigError
            For an unknown option or a value out of range.
        """
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise ConfigError.from_validation(exc, default_field="options") from exc


class IntervalReportDict(TypedDict):
    """JSON-ready counts of an :class:`IntervalReport` (:meth:`IntervalReport.to_dict`)."""

    interval: int
    sent: int
    delivered: int
    decrypt_failures: int
    rejected: dict[str, int]
    dropped: dict[str, int]
    queued: int
    qkd_key_bits_consumed: int
    qkd_key_bits_reserved: int
    epochs_started: int
    key_failures: dict[str, int]
    envelopes: int
    frames: int
    bytes_published: int
    latency_ms_p50: float
    latency_ms_p99: float
    #: Devices with a verified reading at the aggregator so far (``len(latest)``).
    devices_seen: int


@dataclass
class IntervalReport:
    """What happened during one interval (counts are for this interval only).

    Attributes
    ----------
    interval
        1-based index of the interval.
    sent
        Readings sealed and published by the gateway.
    delivered
        Readings decrypted, verified and handed over by the aggregator.
    decrypt_failures
        Records whose AES-GCM authentication failed (also in ``rejected["auth_failed"]``).
    rejected
        Refused records by reason.
    dropped
        Readings dropped by the gateway by reason (``queue_full``).
    queued
        Readings waiting at the gateway for a key at the end of the interval.
    qkd_key_bits_consumed
        QKD key bits the gateway put to use (one key per epoch).
    qkd_key_bits_reserved
        QKD key bits taken from the KME pool (includes prefetched keys of a batch).
    epochs_started
        Key epochs started in this interval.
    key_failures
        Failed attempts to get a key, by error class.
    envelopes
        Data envelopes published (rekey records not counted).
    frames, bytes_published
        MQTT messages and payload bytes published.
    latency_ms_p50, latency_ms_p99
        Sampling-to-verified-delivery latency of the readings delivered, ms (NaN if none).
    latest
        Device ID -> latest verified reading at the aggregator (all devices seen so far),
        a snapshot held encoded and decoded on access (:class:`~qkdtwin.iot.latest.LatestReadings`).
    """

    interval: int
    sent: int
    delivered: int
    decrypt_failures: int
    rejected: dict[str, int]
    dropped: dict[str, int]
    queued: int
    qkd_key_bits_consumed: int
    qkd_key_bits_reserved: int
    epochs_started: int
    key_failures: dict[str, int]
    envelopes: int
    frames: int
    bytes_published: int
    latency_ms_p50: float
    latency_ms_p99: float
    latest: LatestReadings = field(repr=False, default_factory=LatestReadings)

    def to_dict(self) -> IntervalReportDict:
        """Return the counts as a JSON-ready dict (``latest`` as a count of devices)."""
        out = {k: v for k, v in self.__dict__.items() if k != "latest"}
        out["devices_seen"] = len(self.latest)
        return cast(IntervalReportDict, out)  # every field but ``latest``, in field order


#: Up to this many values, :func:`p50_p99` sorts in Python (NumPy's per-call cost dominates).
_SMALL_QUANTILE = 64


def p50_p99(values: list[float]) -> tuple[float, float]:
    """Return ``np.percentile(values, (50, 99))`` (linear method), bit for bit; NaNs if empty.

    One gateway's interval has a few latencies (10 devices: 10) and a twin computes 1,000 of
    these a second: ``np.percentile`` costs ~25 us a call whatever the size, sorting ten floats
    in Python ~2 us. The arithmetic is NumPy's: the virtual index ``(n - 1) * q``, its floor
    and the weight, and ``_lerp``'s two forms (``a + d*t``; ``b - d*(1 - t)`` from
    ``t >= 0.5``).
    """
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    if n > _SMALL_QUANTILE:
        q50, q99 = np.percentile(np.asarray(values, dtype=np.float64), (50, 99))
        return float(q50), float(q99)
    x = sorted(values)
    out = []
    for q in (50 / 100, 99 / 100):
        v = (n - 1) * q  # the linear method's virtual index
        if v >= n - 1:
            out.append(float(x[-1]))
            continue
        lo = max(math.floor(v), 0)
        t = v - lo
        a, b = x[lo], x[lo + 1]
        d = b - a
        out.append(float(b - d * (1 - t) if t >= 0.5 else a + d * t))
    return out[0], out[1]


def _diff(now: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


class TelemetrySession:
    """One edge gateway, its devices and the aggregator, over MQTT (or the in-memory bus).

    Parameters
    ----------
    config
        The settings.
    gateway_keys
        The gateway's QKD key source (master SAE); wrap it in
        :class:`~qkdtwin.iot.keys.GatedKeySource` to be able to cut it.
    aggregator_keys
        The aggregator's QKD key source (slave SAE).
    bus
        The in-process bus when ``config.broker == "memory"`` (a new one if ``None``).
    tap
        Optional callback seeing every plaintext reading before sealing (tests).
    kem_private_key
        The aggregator's ML-KEM-768 decapsulation key (default: a fresh one). Pass one to
        share the aggregator's identity with another receiver, e.g. a digital twin granted
        the readings (:mod:`qkdtwin.plant`).
    fleet
        The devices, instead of a fleet of ``config.devices`` made here: a
        :class:`~qkdtwin.iot.fleet_share.FleetPart` of a fleet shared by many gateways (the
        twin); it must hold ``config.devices`` devices.
    keep_latencies
        Keep every interval's latencies in :attr:`latencies` (the default: a run that is
        summed up at its end). ``False`` for a caller that runs for days and reads each
        interval's report (the live twin): the list would grow by one array per interval for
        ever (at 1,000 gateways ~0.7 GB an hour).

    Raises
    ------
    TransportError
        From :meth:`start`, if the broker cannot be reached.
    """

    def __init__(
        self,
        config: TelemetryConfig,
        gateway_keys: QkdKeySource | None,
        aggregator_keys: QkdKeySource | None,
        *,
        bus: MemoryBus | None = None,
        tap: Any = None,
        kem_private_key: mlkem.MLKEM768PrivateKey | None = None,
        keep_latencies: bool = True,
        fleet: DeviceFleet | FleetPart | None = None,
    ) -> None:
        self.config = config
        self.keep_latencies = keep_latencies
        self.kem_private_key = kem_private_key
        self.gateway_keys = gateway_keys
        self.aggregator_keys = aggregator_keys
        self.bus = bus
        self.tap = tap
        if fleet is not None and len(fleet.device_ids) != config.devices:
            raise ConfigError(
                f"the fleet holds {len(fleet.device_ids)} devices, config.devices is "
                f"{config.devices}",
                field="fleet",
            )
        self.fleet = fleet or DeviceFleet(
            config.devices,
            np.random.default_rng(config.seed),
            payload_bytes=config.payload_bytes,
            id_prefix=f"{config.edge_id}.d",
            fault_rate_per_s=config.fault_rate_per_s,
            drift_rate_per_s=config.drift_rate_per_s,
        )
        self.data_topic = topic(
            config.group_id, "NDATA" if config.scheme == "fixed" else "DDATA", config.edge_id
        )
        self.gateway: EdgeGateway | None = None
        self.aggregator: Aggregator | None = None
        #: Sparkplug mode: the gateway's edge node and the aggregator's receiving side.
        self.sparkplug: SparkplugEdgeNode | None = None
        self.receiver: SparkplugReceiver | None = None
        self.broker: EmbeddedBroker | None = None
        self._gw_t: Transport | None = None
        self._agg_t: Transport | None = None
        self._interval = 0
        self._published = 0
        self.bd_seq = 0
        self.totals: Counter[str] = Counter()
        self.started_at = 0.0
        self.busy_s = 0.0
        #: Latencies (ms) of every delivered reading, one array per interval (empty without
        #: ``keep_latencies``).
        self.latencies: list[np.ndarray] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> TelemetrySession:
        """Connect the aggregator and the gateway, publish the birth, wait until it is seen."""
        cfg = self.config
        if cfg.topic_style == "sparkplug":
            from qkdtwin.iot.sparkplug import require_protobuf

            require_protobuf()
        spec = parse_broker(cfg.broker)
        addr: tuple[str, int] | MemoryBus
        if spec is None:
            self.broker = EmbeddedBroker().start()
            addr = ("127.0.0.1", self.broker.port)
        elif spec[0] == "memory":
            self.bus = addr = self.bus or MemoryBus()
        else:
            addr = spec
        kem = None
        if cfg.mode != "qkd-only":
            kem = self.kem_private_key or mlkem_keypair()
        tag = uuid.uuid4().hex[:8]
        self.aggregator = Aggregator(
            self.aggregator_keys,
            kem,
            scheme=cfg.scheme,
            mode=cfg.mode,
            replay_window=cfg.replay_window,
        )
        self.gateway = EdgeGateway(
            cfg.edge_id,
            scheme=cfg.scheme,
            mode=cfg.mode,
            key_source=self.gateway_keys,
            kem_public_key=kem.public_key() if kem is not None else None,
            rekey_messages=cfg.rekey_messages,
            rekey_seconds=cfg.rekey_seconds,
            queue_limit=cfg.queue_limit,
            frame_bytes=cfg.frame_bytes,
            tap=self.tap,
        )
        security = broker_security(cfg.broker, ca=cfg.mqtt_ca, cert=cfg.mqtt_cert,
                                   key=cfg.mqtt_key)  # fmt: skip
        try:
            self._agg_t = connect_transport(
                addr, client_id=f"qkdtwin-agg-{tag}", protocol=cfg.mqtt_protocol,
                security=security,
            )  # fmt: skip
            if cfg.topic_style == "sparkplug":
                self._start_sparkplug(addr, tag, security)
                self.started_at = time.perf_counter()
                return self
            self._agg_t.subscribe(
                f"{TOPIC_ROOT}/{cfg.group_id}/+/{cfg.edge_id}", self.aggregator.on_message
            )
            self.bd_seq = cfg.bd_seq
            death = json.dumps({"bdSeq": self.bd_seq, "edge": cfg.edge_id}).encode()
            self._gw_t = connect_transport(
                addr,
                client_id=f"qkdtwin-gw-{cfg.edge_id}-{tag}",
                will=(topic(cfg.group_id, "NDEATH", cfg.edge_id), death),
                protocol=cfg.mqtt_protocol,
                security=security,
            )
            # Sparkplug-like command topic: {"rekey": true} starts a new epoch at once
            self._gw_t.subscribe(topic(cfg.group_id, "NCMD", cfg.edge_id), self._on_command)
            self._gw_t.publish(topic(cfg.group_id, "NBIRTH", cfg.edge_id), self._birth())
            self._wait(lambda: self._edge_online(), "the gateway's birth")
        except BaseException:
            self.shutdown()
            raise
        self.started_at = time.perf_counter()
        return self

    def _start_sparkplug(self, addr: tuple[str, int] | MemoryBus, tag: str, security: Any) -> None:
        """Connect the Sparkplug edge node (NDEATH as the will), publish its births, wait."""
        from qkdtwin.iot.sparkplug import sparkplug_topic
        from qkdtwin.iot.sparkplug_edge import SparkplugEdgeNode
        from qkdtwin.iot.sparkplug_host import SparkplugReceiver

        cfg = self.config
        agg, tr = self.aggregator, self._agg_t
        assert agg is not None
        assert tr is not None
        self.receiver = SparkplugReceiver({cfg.edge_id: agg}, cfg.group_id)
        for pattern in ("+/{e}", "+/{e}/+"):
            tr.subscribe(
                f"{SPARKPLUG_NAMESPACE}/{cfg.group_id}/{pattern.format(e=cfg.edge_id)}",
                self.receiver.on_message,
            )
        info = json.loads(self._birth())
        self.bd_seq = cfg.bd_seq
        edge = self.sparkplug = SparkplugEdgeNode(
            cfg.group_id,
            cfg.edge_id,
            list(zip(self.fleet.device_ids, self.fleet.kinds, strict=True)),
            node_info={k: info[k] for k in ("scheme", "mode", "devices", "kem",
                                            "kem_key_sha256", "envelope_version")},
            bd_seq=self.bd_seq,
            frame_bytes=cfg.frame_bytes,
        )  # fmt: skip
        self._gw_t = connect_transport(
            addr,
            client_id=f"qkdtwin-gw-{cfg.edge_id}-{tag}",
            will=edge.death(),
            protocol=cfg.mqtt_protocol,
            security=security,
        )
        self._gw_t.subscribe(
            sparkplug_topic(cfg.group_id, "NCMD", cfg.edge_id), self._on_sparkplug_command
        )
        edge.publish_births(self._gw_t)
        self._wait(self._births_seen, "the gateway's NBIRTH and DBIRTHs")

    def _births_seen(self) -> bool:
        rec = self.receiver
        node = None if rec is None else rec.node(self.config.edge_id)
        if node is None or not node.online:
            return False
        return sum(1 for d in node.devices.values() if d.online) >= self.config.devices

    def _on_sparkplug_command(self, _topic: str, payload: bytes) -> None:
        """Handle a Sparkplug NCMD: ``Node Control/Rebirth`` and ``qkdtwin/rekey``."""
        from qkdtwin.errors import EnvelopeError
        from qkdtwin.iot.sparkplug_edge import parse_command

        try:
            asked = parse_command(payload)
        except EnvelopeError:
            self.totals["commands.malformed"] += 1
            return
        if not asked:
            self.totals["commands.ignored"] += 1
        if "rekey" in asked and self.gateway is not None:
            self.gateway.request_rekey()
            self.totals["commands.rekey"] += 1
        if "rebirth" in asked and self.sparkplug is not None and self._gw_t is not None:
            self.sparkplug.publish_births(self._gw_t)
            self.totals["commands.rebirth"] += 1

    def _on_command(self, _topic: str, payload: bytes) -> None:
        """Handle an ``NCMD``: ``{"rekey": true}`` starts a new epoch before the next reading.

        A digital twin sends it after an alarm on a QKD link this gateway's keys crossed.
        """
        try:
            cmd = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self.totals["commands.malformed"] += 1
            return
        if isinstance(cmd, dict) and cmd.get("rekey") is True and self.gateway is not None:
            self.gateway.request_rekey()
            self.totals["commands.rekey"] += 1
        else:
            self.totals["commands.ignored"] += 1

    def _birth(self) -> bytes:
        cfg = self.config
        kem_pub = self.gateway.kem_public_key if self.gateway is not None else None
        fingerprint = (
            hashlib.sha256(kem_pub.public_bytes_raw()).hexdigest() if kem_pub is not None else None
        )
        return json.dumps(
            {
                "bdSeq": self.bd_seq,
                "edge": cfg.edge_id,
                "scheme": cfg.scheme,
                "mode": cfg.mode,
                "devices": cfg.devices,
                "kem": "ML-KEM-768" if kem_pub is not None else None,
                "kem_key_sha256": fingerprint,
                "envelope_version": 1,
            }
        ).encode()

    def _edge_online(self) -> bool:
        agg = self.aggregator
        assert agg is not None
        st = agg.edges.get(self.config.edge_id)
        return st is not None and st.online

    def _wait(self, cond: Any, what: str, timeout: float | None = None) -> bool:
        agg = self.aggregator
        assert agg is not None
        with agg.cv:
            ok = bool(agg.cv.wait_for(cond, timeout or self.config.delivery_timeout_s))
        if not ok and what:
            raise TransportError(f"timed out waiting for {what}")
        return ok

    def close(self, *, graceful: bool = True) -> None:
        """Publish the death (graceful) or drop the connection (the broker sends the will)."""
        if self._gw_t is not None:
            try:
                if graceful and self.sparkplug is not None:
                    self.sparkplug.publish_deaths(self._gw_t)
                    if self.aggregator is not None:
                        self._wait(lambda: not self._edge_online(), "", timeout=2.0)
                elif graceful:
                    death = json.dumps({"bdSeq": self.bd_seq, "edge": self.config.edge_id})
                    self._gw_t.publish(
                        topic(self.config.group_id, "NDEATH", self.config.edge_id), death.encode()
                    )
                    if self.aggregator is not None:
                        self._wait(lambda: not self._edge_online(), "", timeout=2.0)
            finally:
                self._gw_t.close(graceful=graceful)
                self._gw_t = None
        if self._agg_t is not None and graceful:
            self._agg_t.close()
            self._agg_t = None

    def shutdown(self) -> None:
        """Close everything, including the aggregator and an embedded broker."""
        self.close()
        if self._agg_t is not None:
            self._agg_t.close()
            self._agg_t = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> TelemetrySession:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    # -- running ---------------------------------------------------------------------------
    def run_interval(self, messages_per_device: int = 1) -> IntervalReport:
        """Sample every device ``messages_per_device`` times, seal, publish, await delivery.

        Raises
        ------
        ConfigError
            If ``messages_per_device`` < 1 or the session is not started.
        """
        gw, agg, tr = self.gateway, self.aggregator, self._gw_t
        if gw is None or agg is None or tr is None:
            raise ConfigError("start() the session first", field="session")
        if messages_per_device < 1:
            raise ConfigError("messages_per_device must be >= 1", field="messages_per_device")
        t0 = time.perf_counter()
        self._interval += 1
        with agg.lock:
            rej0, deliv0 = Counter(agg.rejected), agg.delivered
        drop0, fail0 = Counter(gw.dropped), Counter(gw.key_failures)
        bits0, epochs0 = gw.qkd_bits_used, gw.epochs_started
        res0 = int(getattr(self.gateway_keys, "reserved_bits", 0))
        readings = self.fleet.step(self.config.interval_s, messages_per_device)
        edge = self.sparkplug
        out = gw.process(readings, frames=edge is None)
        nbytes = 0
        if edge is not None:
            n_msgs, nbytes = edge.publish_records(tr, out.senders, out.sealed)
        else:
            for frame in out.frames:
                tr.publish(self.data_topic, frame, qos=1)
                nbytes += len(frame)
            n_msgs = len(out.frames)
        self._published += out.records
        target = self._published
        self._wait(lambda: agg.records_seen >= target, "", self.config.delivery_timeout_s)
        with agg.lock:
            rejected = _diff(agg.rejected, rej0)
            delivered = agg.delivered - deliv0
            # emptied in place: a fresh list per interval would outlive it and be promoted
            # to the collector's oldest generation (1,000 a tick in the twin)
            lat_list = agg.latencies_ms.copy()
            agg.latencies_ms.clear()
            latest = agg.latest.copy()
        p50, p99 = p50_p99(lat_list)
        report = IntervalReport(
            interval=self._interval,
            sent=out.readings_sent,
            delivered=delivered,
            decrypt_failures=rejected.get("auth_failed", 0),
            rejected=rejected,
            dropped=_diff(gw.dropped, drop0),
            queued=len(gw.queue),
            qkd_key_bits_consumed=gw.qkd_bits_used - bits0,
            qkd_key_bits_reserved=int(getattr(self.gateway_keys, "reserved_bits", 0)) - res0,
            epochs_started=gw.epochs_started - epochs0,
            key_failures=_diff(gw.key_failures, fail0),
            envelopes=out.envelopes,
            frames=n_msgs,
            bytes_published=nbytes,
            latency_ms_p50=p50,
            latency_ms_p99=p99,
            latest=latest,
        )
        self.busy_s += time.perf_counter() - t0
        if lat_list and self.keep_latencies:
            self.latencies.append(np.asarray(lat_list, dtype=np.float64))
        for k in ("sent", "delivered", "decrypt_failures", "envelopes", "frames"):
            self.totals[k] += getattr(report, k)
        self.totals["bytes_published"] += report.bytes_published
        self.totals["qkd_key_bits_consumed"] += report.qkd_key_bits_consumed
        self.totals["qkd_key_bits_reserved"] += report.qkd_key_bits_reserved
        self.totals["epochs"] += report.epochs_started
        for k, v in rejected.items():
            self.totals[f"rejected.{k}"] += v
        for k, v in report.dropped.items():
            self.totals[f"dropped.{k}"] += v
        return report

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until the aggregator has processed every record the gateway published."""
        agg = self.aggregator
        if agg is None:
            return True
        target = self._published
        return self._wait(lambda: agg.records_seen >= target, "", timeout_s)
