"""The plant process: QKD modules, KMEs, IIoT devices and the control endpoint, running live.

:class:`Plant` plays the network an operator owns. Per topology link a
:class:`~qkdtwin.plant.module.QkdModule` runs the link physics continuously (exact per-interval
count draws) with hidden true parameters that drift as the scenario says, publishes one
:class:`~qkdtwin.interfaces.LinkTelemetry` message per reporting interval over MQTT and feeds
its distilled keys into the ETSI GS QKD 014 KMEs at both ends (one KME per node, the project's
:class:`~qkdtwin.kms.devnet.DevNetwork`: mutual TLS, mirrored reservations, hop-by-hop relay).
Edge gateways and their devices publish encrypted IIoT telemetry over the same broker with
keys relayed from their KMEs to the aggregator's (:class:`~qkdtwin.iot.TelemetrySession` over
:class:`~qkdtwin.iot.KmeKeySource`). Events (attacks, cuts, loss steps) come from the scenario's
script or from the control endpoint (:mod:`qkdtwin.plant.control`), which also serves the
ground truth for tests and benchmarks.

Time: plant time ``t`` runs from 0 in steps of ``reporting_interval_s``; with ``speed`` S one
step takes ``reporting_interval_s / S`` wall seconds. Modules stamp their messages with their
clock, ``clock_epoch + t`` (``clock_epoch``: the Unix time at start), so at S = 1 the stamps are
Unix time; the attach file states S so a twin can map receive times to the modules' clock.

Everything random comes from one ``numpy.random.Generator`` seeded by the scenario's ``seed``:
the same scenario and the same calls of :meth:`Plant.step` give the same messages.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np
import yaml

from qkdtwin._pacing import run_at_fixed_rate
from qkdtwin.errors import ConfigError, QkdTwinError, TransportError, UnknownNameError
from qkdtwin.interfaces import LinkTelemetry, perf_topic, state_topic
from qkdtwin.network.topology import link_id, resolve_link
from qkdtwin.plant.control import LinkTruth, PlantTruth
from qkdtwin.plant.module import IntervalTruth, QkdModule
from qkdtwin.plant.physics import MonitorParams, TrueLinkParams
from qkdtwin.plant.scenario import PlantScenario, load_plant_scenario

if TYPE_CHECKING:
    from qkdtwin.iot.session import IntervalReportDict
    from qkdtwin.iot.transport import MqttSecurity
    from qkdtwin.kms.client import KmeClient

__all__ = ["TWIN_SAE_ID", "Plant", "module_id_for"]

#: SAE identity the attach file grants the twin (``plant.grant_twin_readings``): a second slave
#: of every gateway key, behind the aggregator's KME.
TWIN_SAE_ID = "sae-twin"

Publish = Callable[[str, bytes], None]


def module_id_for(link_id: str) -> str:
    """Return the module id of a link's QKD module (``qkd-<link>``, dots kept)."""
    return f"qkd-{link_id}"


def _mqtt_security(
    broker: str | None, ca: str | None, cert: str | None, key: str | None
) -> MqttSecurity | None:
    """Validate the plant's broker URL and MQTT TLS files; return how to connect.

    Raises
    ------
    ConfigError
        For a malformed URL, ``memory``, TLS files without an ``mqtts://`` broker, a
        certificate without its key (or the reverse), a TLS file that does not exist.
    """
    from qkdtwin.iot.transport import broker_security, parse_broker

    if broker is None:
        given = [n for n, v in (("mqtt_ca", ca), ("mqtt_cert", cert), ("mqtt_key", key)) if v]
        if given:
            raise ConfigError(f"{given[0]} needs an mqtts:// broker", field=given[0])
        return None
    spec = parse_broker(broker)
    if spec is not None and spec[0] == "memory":
        raise ConfigError("the plant needs a real MQTT broker", field="broker")
    return broker_security(broker, ca=ca, cert=cert, key=key)


class _LazyKmeClient:
    """An SAE's ETSI 014 client that connects on first use (the KMEs start after the IIoT)."""

    def __init__(self, plant: Plant, node: str, sae_id: str) -> None:
        self._plant = plant
        self._node = node
        self._sae = sae_id
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                from qkdtwin.kms.client import KmeClient

                net = self._plant.net
                if net is None:
                    raise ConfigError("the plant's KMEs are not running", field="kmes")
                cert, key = net.pki.saes[self._sae]
                self._client = KmeClient(net.url(self._node), cert, key, net.pki.ca_cert)
            return self._client

    def get_keys(self, *args: Any, **kwargs: Any) -> Any:
        return self._get().get_keys(*args, **kwargs)

    def get_keys_with_ids(self, *args: Any, **kwargs: Any) -> Any:
        return self._get().get_keys_with_ids(*args, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class PlantClock(TypedDict):
    """The modules' clock: Unix time of plant time 0, and plant seconds per wall second."""

    epoch: float
    rate: float


class AttachLink(TypedDict):
    """What the attach file declares about one link's module (no truth)."""

    module_id: str
    declared_detector_efficiency: float


class KmeAccess(TypedDict):
    """One KME's URL and the operator credentials the twin calls it with (file paths)."""

    url: str
    cert: str
    key: str
    ca: str


class SaeStatusAccess(TypedDict):
    """A gateway SAE's credentials, for reading the status of its key pool (file paths)."""

    kme: str
    slave_sae_id: str
    cert: str
    key: str
    ca: str


class AttachIot(TypedDict):
    """The IIoT group: its aggregator's node and the gateway node of each edge."""

    group: str
    aggregator: str
    edges: dict[str, str]


class AggregatorAccess(TypedDict):
    """The aggregator SAE identity the twin is granted to decrypt readings."""

    sae_id: str
    kme: str
    cert: str
    key: str
    ca: str
    kem_seed_file: str | None
    group: str
    scheme: str
    mode: str
    #: Edge node ID -> the gateway's SAE ID.
    edges: dict[str, str]


class _AttachOptional(TypedDict, total=False):
    """The keys of the attach file present only sometimes (:class:`AttachDocument`)."""

    mqtt_ca: str
    mqtt_cert: str
    mqtt_key: str
    #: KME ID -> how to reach it.
    kmes: dict[str, KmeAccess]
    sae_status: list[SaeStatusAccess]
    iot: AttachIot
    aggregator: AggregatorAccess


class AttachDocument(_AttachOptional):
    """Content of the attach file (:meth:`Plant.attach_document`).

    The MQTT TLS files only when given; ``kmes`` and ``sae_status`` only with KMEs, ``iot``
    and ``aggregator`` only with IIoT sessions (``aggregator``: when the twin is granted the
    readings).
    """

    name: str
    broker: str | None
    reporting_interval_s: float
    key_size_bits: int
    clock: PlantClock
    #: The scenario's ``network`` section (scenario file format).
    network: dict[str, Any]
    #: Link ID -> its module.
    links: dict[str, AttachLink]


class PlantDescription(TypedDict):
    """The first line ``plant serve --json`` prints (:meth:`Plant.describe`)."""

    control_url: str | None
    mqtt_url: str | None
    #: KME ID -> its URL (empty without KMEs).
    kmes: dict[str, str]
    attach_file: str | None
    modules: int
    speed: float
    reporting_interval_s: float


class IotReportError(TypedDict):
    """An IIoT interval that failed, in :attr:`Plant.iot_reports`."""

    error: str


class Plant:
    """A live stand-in for a QKD-secured IIoT network, with hidden truth.

    Parameters
    ----------
    scenario
        A :class:`PlantScenario`, a YAML path or a mapping.
    data_dir
        Where the PKI, the KME stores and the attach file go.
    speed
        Plant seconds per wall second.
    broker
        ``"embedded"`` (amqtt on loopback), ``"mqtt://HOST:PORT"`` (e.g. Mosquitto),
        ``"mqtts://HOST:PORT"`` (TLS), either with ``USER[:PASSWORD]@`` (the password may come
        from ``QKDTWIN_MQTT_PASSWORD`` instead), or ``None``: no MQTT, messages go to
        ``publish`` only (tests, benchmarks). The modules and the IIoT gateways all connect
        with these credentials.
    mqtt_ca, mqtt_cert, mqtt_key
        ``mqtts://`` only: the CA bundle of the broker's certificate (default: the system's
        CAs), and a client certificate and key (both or neither). The attach file hands the
        twin the broker URL without the password and these files.
    kmes
        Run the KMEs (the modules feed them); ``False``: keys are counted, not stored.
    iot
        Run the IIoT gateways and devices (needs ``kmes`` and a broker).
    publish
        Extra sink for every published message ``(topic, payload)``.
    seed
        Override of the scenario's seed.
    iot_group
        Sparkplug-style group of the IIoT topics (``qkdtwin/v1/<group>/...``; the attach file
        names it). Two plants on one broker need different groups, or each one's twin would
        receive the other's frames.

    Raises
    ------
    ConfigError
        For a malformed scenario, a speed out of range, a malformed broker URL, TLS files
        with a broker that is not ``mqtts://``, a certificate without its key (or the
        reverse) or a TLS file that does not exist.
    """

    def __init__(
        self,
        scenario: PlantScenario | str | Path | dict[str, Any],
        data_dir: str | Path,
        *,
        speed: float = 1.0,
        broker: str | None = "embedded",
        mqtt_ca: str | Path | None = None,
        mqtt_cert: str | Path | None = None,
        mqtt_key: str | Path | None = None,
        kmes: bool = True,
        iot: bool = True,
        publish: Publish | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        control_port: int = 0,
        iot_group: str = "plant",
    ) -> None:
        sc = scenario if isinstance(scenario, PlantScenario) else load_plant_scenario(scenario)
        if not iot_group or any(c in iot_group for c in "/+#"):
            raise ConfigError(
                f"iot_group must be a non-empty MQTT topic level, got {iot_group!r}",
                field="iot_group",
                value=iot_group,
            )
        self.iot_group = iot_group
        if not (0.0 < speed <= 100_000.0):
            raise ConfigError(f"speed must be in (0, 100000], got {speed!r}", field="speed")
        self.scenario = sc
        self.cfg = sc.plant
        # absolute: the attach file names its certificates by these paths, and the twin reads
        # relative ones relative to the attach file
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.speed = float(speed)
        self.broker_spec = broker
        #: The MQTT TLS files, absolute paths (``None``: not given); the attach file names them.
        self.mqtt_ca, self.mqtt_cert, self.mqtt_key = (
            None if f is None else str(Path(f).resolve()) for f in (mqtt_ca, mqtt_cert, mqtt_key)
        )
        self._security = _mqtt_security(broker, self.mqtt_ca, self.mqtt_cert, self.mqtt_key)
        self.want_kmes = kmes
        self.want_iot = iot and kmes and broker is not None and sc.plant.devices_per_gateway > 0
        #: The attach file grants the twin an aggregator SAE identity (decrypted readings).
        self.grant_readings = self.want_iot and sc.plant.grant_twin_readings
        self.kem_seed_file: Path | None = None
        self.host = host
        self.control_port = control_port
        self._sink = publish
        self.rng = np.random.default_rng(sc.network.seed if seed is None else seed)
        self.t = 0.0
        self.clock_epoch = time.time()
        self.modules: dict[str, QkdModule] = {}
        monitor = MonitorParams()
        for a, b in sc.topology.graph.edges():
            lid = link_id(a, b)
            spec: Mapping[str, Any] = sc.link_truth(lid)
            overrides = {
                k: spec[k]
                for k in (
                    "attenuation_db_per_km",
                    "extra_loss_db",
                    "detector_efficiency",
                    "dark_count_prob",
                    "misalignment",
                )
                if spec[k] is not None
            }
            try:
                params = TrueLinkParams.from_preset(spec["preset"], spec["length_km"], **overrides)
            except QkdTwinError as exc:
                raise ConfigError(f"plant.links.{lid}: {exc}", field=f"plant.links.{lid}") from None
            self.modules[lid] = QkdModule(
                module_id_for(lid),
                lid,
                str(a),
                str(b),
                params,
                sc.drifts_for(lid),
                monitor=sc.plant.detector_monitor,
                monitor_params=monitor,
            )
        self._events = sorted(sc.plant.events, key=lambda e: e.at_s)
        self._next_event = 0
        self.history: dict[str, deque[IntervalTruth]] = {
            lid: deque(maxlen=100_000) for lid in self.modules
        }
        self.keys_fed: dict[str, int] = dict.fromkeys(self.modules, 0)
        #: delivered_total of a link's stores at both KMEs when its attack began (truth)
        self._delivered_at_attack: dict[str, int] = {}
        self._pending_keys: dict[str, int] = dict.fromkeys(self.modules, 0)
        self._steps = 0
        self.published = 0
        self.event_log: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iot_thread: threading.Thread | None = None
        self.running = False
        self.broker: Any = None
        #: The broker the plant publishes to, without its password (attach file, describe).
        self.broker_url: str | None = None
        # the broker URL the IIoT sessions connect to (with the password, if one was given)
        self._broker_connect: str | None = None
        self._transport: Any = None
        self.net: Any = None
        self._feeders: dict[str, Any] = {}
        self.sessions: list[Any] = []
        self._kme_clients: list[Any] = []
        self.iot_reports: deque[IntervalReportDict | IotReportError] = deque(maxlen=100)
        self.control: Any = None
        self.control_url: str | None = None
        self.attach_file: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, *, loop: bool = True) -> Plant:
        """Start the broker, the KMEs, the IIoT devices, the control endpoint and the loop.

        Raises
        ------
        TransportError
            If the MQTT broker cannot be reached.
        """
        try:
            self._start_broker()
            # IIoT first: paho waits with select(), which refuses descriptors >= 1024, so the
            # MQTT clients get their sockets before the KMEs open hundreds of store files and
            # connections (100 KMEs hold ~1,300); their KME clients connect on first use
            if self.want_iot:
                self._start_iot()
            if self.want_kmes:
                self._start_kmes()
            self._start_control()
            self.attach_file = self.write_attach_file(self.data_dir / "attach.yaml")
            if loop:
                self._start_loop()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_broker(self) -> None:
        from qkdtwin.iot.transport import (
            EmbeddedBroker,
            connect_transport,
            parse_broker,
            public_broker_url,
        )

        if self.broker_spec is None:
            return
        spec = parse_broker(self.broker_spec)
        if spec is None:
            self.broker = EmbeddedBroker().start()
            addr = ("127.0.0.1", int(self.broker.port))
            self._broker_connect = f"mqtt://{addr[0]}:{addr[1]}"
        else:
            addr = (str(spec[0]), int(spec[1]))
            self._broker_connect = self.broker_spec
        self.broker_url = public_broker_url(self._broker_connect, mask_password=False)
        try:
            self._transport = connect_transport(
                addr, client_id=f"qkdtwin-plant-{id(self):x}", security=self._security
            )
        except TransportError as exc:
            shown = public_broker_url(self._broker_connect)
            raise TransportError(f"the plant cannot publish to {shown}: {exc}") from None
        for m in self.modules.values():
            self._transport.publish(
                state_topic(m.module_id),
                json.dumps({"module_id": m.module_id, "state": "online"}).encode(),
            )

    def _start_kmes(self) -> None:
        from qkdtwin.kms.devnet import DevNetwork

        topo = self.scenario.topology
        nodes = [str(n) for n in topo.graph.nodes]
        links = [(m.local_node, m.remote_node) for m in self.modules.values()]
        saes = self._sae_map()
        self.net = DevNetwork(
            self.data_dir / "kme",
            nodes,
            links,
            saes,
            initial_keys=0,
            run_feeders=False,
            max_sae_id_count=1 if self.grant_readings else 0,
            max_key_count=self.cfg.kme_max_keys,
        ).start()
        for f in self.net.feeders:
            a, b = f.owners
            self._feeders[link_id(a, b)] = f

    def _gateways(self) -> list[str]:
        return [str(n) for n in self.scenario.topology.nodes_with_role("edge_gateway")]

    def _sae_map(self) -> dict[str, str]:
        saes = {f"sae-{gw}": gw for gw in self._gateways()}
        saes["sae-scada"] = self.scenario.aggregator()
        if self.grant_readings:
            saes[TWIN_SAE_ID] = self.scenario.aggregator()
        return saes

    def _aggregator_kem(self) -> Any:
        """Make the aggregator's ML-KEM-768 key; write its seed (0600) if the twin gets it."""
        import os

        from qkdtwin.iot.keys import mlkem_keypair

        seed = os.urandom(64)
        if self.grant_readings:
            path = self.data_dir / "aggregator-kem.seed"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(seed.hex() + "\n")
            self.kem_seed_file = path
        return mlkem_keypair(seed)

    def _start_iot(self) -> None:
        from qkdtwin.iot import KmeKeySource, TelemetryConfig, TelemetrySession

        assert self._broker_connect is not None
        agg = self.scenario.aggregator()
        kem = self._aggregator_kem()
        extra = (TWIN_SAE_ID,) if self.grant_readings else ()
        for i, gw in enumerate(self._gateways()):
            sae = f"sae-{gw}"
            gw_client = _LazyKmeClient(self, gw, sae)
            agg_client = _LazyKmeClient(self, agg, "sae-scada")
            self._kme_clients += [gw_client, agg_client]
            # duck-typed: KmeKeySource calls get_keys / get_keys_with_ids only
            gw_src = KmeKeySource(
                cast("KmeClient", gw_client), "sae-scada", batch=4, additional_slaves=extra
            )
            agg_src = KmeKeySource(cast("KmeClient", agg_client), sae, batch=4)
            cfg = TelemetryConfig.build(
                devices=self.cfg.devices_per_gateway,
                broker=self._broker_connect,
                mqtt_ca=self.mqtt_ca,
                mqtt_cert=self.mqtt_cert,
                mqtt_key=self.mqtt_key,
                edge_id=gw.replace("/", "_"),
                group_id=self.iot_group,
                seed=int(self.scenario.network.seed) + i,
                interval_s=self.cfg.reporting_interval_s,
                rekey_seconds=60.0,
            )
            self.sessions.append(
                TelemetrySession(cfg, gw_src, agg_src, kem_private_key=kem).start()
            )

    def _start_control(self) -> None:
        from qkdtwin.kms.tls import serve_in_thread
        from qkdtwin.plant.control import create_control_app

        self.control = serve_in_thread(create_control_app(self), self.host, self.control_port)
        self.control_url = f"http://{self.host}:{self.control.port}"

    def _start_loop(self) -> None:
        self.running = True
        self._stop.clear()

        def log_error(exc: Exception) -> None:  # the plant keeps running; the failure is logged
            self.event_log.append({"t": self.t, "error": f"{type(exc).__name__}: {exc}"})

        def run() -> None:
            period = self.cfg.reporting_interval_s / self.speed
            run_at_fixed_rate(period, self.step, log_error, self._stop)

        self._thread = threading.Thread(target=run, daemon=True, name="qkdtwin-plant")
        self._thread.start()
        if self.sessions:

            def run_iot() -> None:
                period = self.cfg.reporting_interval_s / self.speed
                while not self._stop.wait(max(period, 0.2)):
                    for s in self.sessions:
                        try:
                            self.iot_reports.append(s.run_interval().to_dict())
                        except Exception as exc:  # a gateway failing closed is not a crash
                            self.iot_reports.append({"error": f"{type(exc).__name__}: {exc}"})

            self._iot_thread = threading.Thread(target=run_iot, daemon=True, name="plant-iot")
            self._iot_thread.start()

    def stop(self) -> None:
        """Stop everything (idempotent)."""
        self._stop.set()
        self.running = False
        for th in (self._thread, self._iot_thread):
            if th is not None:
                th.join(30.0)
        self._thread = self._iot_thread = None
        for s in self.sessions:
            with contextlib.suppress(Exception):
                s.close()
        self.sessions.clear()
        for client in self._kme_clients:
            with contextlib.suppress(Exception):
                client.close()
        self._kme_clients.clear()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.net is not None:
            self.net.stop()
            self.net = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop()
            self.broker = None

    def __enter__(self) -> Plant:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- the step ---------------------------------------------------------------------------
    def step(self) -> list[LinkTelemetry]:
        """Advance one reporting interval: events, every module's interval, keys, messages."""
        with self._lock:
            dt = self.cfg.reporting_interval_s
            t0, t1 = self.t, self.t + dt
            self._apply_due_events(t1)
            out: list[LinkTelemetry] = []
            every = self.cfg.kme_feed_every
            for i, (lid, m) in enumerate(self.modules.items()):
                msg, truth, keys = m.run_interval(
                    t0,
                    t1,
                    self.rng,
                    clock_offset=self.clock_epoch,
                    key_size_bits=self.cfg.key_size_bits,
                )
                self.history[lid].append(truth)
                self._pending_keys[lid] += keys
                # deliveries staggered over the links: link i every `every` intervals
                if self._pending_keys[lid] and (self._steps + i) % every == 0:
                    feeder = self._feeders.get(lid)
                    if feeder is not None:
                        feeder.push(self._pending_keys[lid])
                    self.keys_fed[lid] += self._pending_keys[lid]
                    self._pending_keys[lid] = 0
                out.append(msg)
            self.t = t1
            self._steps += 1
        for msg in out:
            payload = msg.model_dump_json().encode()
            topic = perf_topic(msg.module_id)
            if self._transport is not None:
                self._transport.publish(topic, payload)
            if self._sink is not None:
                self._sink(topic, payload)
            self.published += 1
        return out

    def _apply_due_events(self, t_end: float) -> None:
        while self._next_event < len(self._events) and self._events[self._next_event].at_s < t_end:
            ev = self._events[self._next_event]
            self._next_event += 1
            if ev.action == "attack":
                assert ev.type is not None
                self.attack(ev.link, ev.type, ev.fraction)
            elif ev.action == "clear":
                self.clear(ev.link)
            elif ev.action == "cut":
                self.cut(ev.link)
            else:
                assert ev.loss_db is not None
                self.drift(ev.link, ev.loss_db)

    # -- events -----------------------------------------------------------------------------
    def module(self, link: str) -> QkdModule:
        """Return the module of ``link`` (``A-B`` in either order).

        Raises
        ------
        UnknownNameError
            ``field="link"`` for an unknown link.
        """
        lid = resolve_link(str(link), set(self.modules))
        if lid is None:
            raise UnknownNameError(
                f"unknown link {link!r}; links: {', '.join(sorted(self.modules))}",
                field="link",
                value=link,
            )
        return self.modules[lid]

    def _log(self, what: str, m: QkdModule, **extra: Any) -> LinkTruth:
        self.event_log.append({"t": self.t, "what": what, "link": m.link_id, **extra})
        return LinkTruth(**m.truth(self.t))

    def attack(self, link: str, kind: str, fraction: float = 1.0) -> LinkTruth:
        """Start an attack on a link (see :mod:`qkdtwin.plant.physics` for the semantics)."""
        with self._lock:
            m = self.module(link)
            m.set_attack(kind, fraction)
            m.law_at(self.t)  # infeasible parameters fail here, not in the loop
            delivered = self._delivered_at_kmes(m)
            if delivered is not None:
                self._delivered_at_attack[m.link_id] = delivered
            return self._log("attack", m, type=kind, fraction=fraction)

    def clear(self, link: str) -> LinkTruth:
        """End the attack on a link and repair a cut."""
        with self._lock:
            m = self.module(link)
            m.clear()
            return self._log("clear", m)

    def cut(self, link: str) -> LinkTruth:
        """Cut a link's fibre."""
        with self._lock:
            m = self.module(link)
            m.set_cut()
            return self._log("cut", m)

    def drift(self, link: str, loss_db: float) -> LinkTruth:
        """Add a loss step of ``loss_db`` dB to a link (negative: repair).

        Raises
        ------
        ConfigError
            If the step makes the link's extra loss negative.
        """
        with self._lock:
            m = self.module(link)
            if m.params.extra_loss_db + m.drift_db(self.t) + loss_db < -1e-9:
                raise ConfigError(
                    f"a loss step of {loss_db:g} dB would make link {m.link_id}'s extra loss "
                    "negative",
                    field="loss_db",
                    value=loss_db,
                )
            m.add_loss(loss_db)
            return self._log("drift", m, loss_db=loss_db)

    def set_enabled(self, link: str, enabled: bool) -> LinkTruth:
        """Stop or resume a module's key delivery to its KMEs (its telemetry goes on).

        Disabling drops the keys the module distilled but has not delivered yet.
        """
        with self._lock:
            m = self.module(link)
            m.enabled = bool(enabled)
            if not enabled:
                self._pending_keys[m.link_id] = 0
            return self._log("enable" if enabled else "disable", m)

    def _delivered_at_kmes(self, m: QkdModule) -> int | None:
        """``delivered_total`` of the link's stores at both of its KMEs (``None``: no KMEs)."""
        if self.net is None:
            return None
        a, b = m.local_node, m.remote_node
        return int(
            self.net.stores[a][b].counters().delivered_total
            + self.net.stores[b][a].counters().delivered_total
        )

    def _link_truth(self, m: QkdModule) -> LinkTruth:
        t = LinkTruth(**m.truth(self.t))
        if self.net is not None:
            nodes = self.net.nodes
            t.kme_enabled = nodes[m.local_node].link_enabled(m.remote_node) and nodes[
                m.remote_node
            ].link_enabled(m.local_node)
            base = self._delivered_at_attack.get(m.link_id)
            if base is not None and m.attack.kind != "none":
                now = self._delivered_at_kmes(m)
                t.keys_delivered_since_attack = None if now is None else now - base
        return t

    def truth(self) -> PlantTruth:
        """Ground truth now (tests and benchmarks only)."""
        with self._lock:
            return PlantTruth(
                t=self.t,
                clock_epoch=self.clock_epoch,
                links=[self._link_truth(m) for m in self.modules.values()],
            )

    # -- the attach file --------------------------------------------------------------------
    def attach_document(self) -> AttachDocument:
        """Return the attach file's content: what an operator hands the twin (no truth in it)."""
        net = self.scenario.network.model_dump(mode="json", exclude_none=True)
        err = self.cfg.declared_efficiency_error
        mqtt: _AttachOptional = {}
        if self.mqtt_ca is not None:
            mqtt["mqtt_ca"] = self.mqtt_ca
        if self.mqtt_cert is not None:
            mqtt["mqtt_cert"] = self.mqtt_cert
        if self.mqtt_key is not None:
            mqtt["mqtt_key"] = self.mqtt_key
        doc: AttachDocument = {
            "name": Path(self.scenario.source).stem
            if self.scenario.source != "<dict>"
            else "plant",
            "broker": self.broker_url,
            **mqtt,
            "reporting_interval_s": self.cfg.reporting_interval_s,
            "key_size_bits": self.cfg.key_size_bits,
            "clock": {"epoch": self.clock_epoch, "rate": self.speed},
            "network": net,
            "links": {
                lid: {
                    "module_id": m.module_id,
                    "declared_detector_efficiency": m.params.detector_efficiency * (1.0 + err),
                }
                for lid, m in self.modules.items()
            },
        }
        if self.net is not None:
            pki = self.net.pki
            cert, key = pki.operators["twin"]
            doc["kmes"] = {
                node: {
                    "url": self.net.url(node),
                    "cert": str(cert),
                    "key": str(key),
                    "ca": str(pki.ca_cert),
                }
                for node in self.net.kme_ids
            }
            # the telemetry key pairs: each gateway's SAE and the aggregator's
            doc["sae_status"] = [
                {
                    "kme": gw,
                    "slave_sae_id": "sae-scada",
                    "cert": str(pki.saes[f"sae-{gw}"][0]),
                    "key": str(pki.saes[f"sae-{gw}"][1]),
                    "ca": str(pki.ca_cert),
                }
                for gw in self._gateways()
                if f"sae-{gw}" in pki.saes
            ]
            if self.sessions:
                doc["iot"] = {
                    "group": self.sessions[0].config.group_id,
                    "aggregator": self.scenario.aggregator(),
                    "edges": {s.config.edge_id: gw for s, gw in self._session_gateways()},
                }
            if self.grant_readings and self.sessions:
                cert, key = pki.saes[TWIN_SAE_ID]
                tcfg = self.sessions[0].config
                doc["aggregator"] = {
                    "sae_id": TWIN_SAE_ID,
                    "kme": self.scenario.aggregator(),
                    "cert": str(cert),
                    "key": str(key),
                    "ca": str(pki.ca_cert),
                    "kem_seed_file": str(self.kem_seed_file) if self.kem_seed_file else None,
                    "group": tcfg.group_id,
                    "scheme": tcfg.scheme,
                    "mode": tcfg.mode,
                    "edges": {s.config.edge_id: f"sae-{gw}" for s, gw in self._session_gateways()},
                }
        return doc

    def _session_gateways(self) -> list[tuple[Any, str]]:
        return list(zip(self.sessions, self._gateways(), strict=False))

    def write_attach_file(self, path: Path) -> Path:
        """Write the attach file (YAML) and return its path."""
        path.write_text(
            "# Attach file written by `qkdtwin plant serve`: give it to "
            "`qkdtwin twin serve --attach`.\n"
            + yaml.safe_dump(self.attach_document(), sort_keys=False)
        )
        return path

    def describe(self) -> PlantDescription:
        """Return the first line ``plant serve --json`` prints."""
        return {
            "control_url": self.control_url,
            "mqtt_url": self.broker_url,
            "kmes": {n: self.net.url(n) for n in self.net.kme_ids} if self.net else {},
            "attach_file": str(self.attach_file) if self.attach_file else None,
            "modules": len(self.modules),
            "speed": self.speed,
            "reporting_interval_s": self.cfg.reporting_interval_s,
        }
