"""The twin's IIoT layer: one :class:`qkdtwin.iot.TelemetrySession` per edge gateway.

Key supply (how the QKD network reaches the telemetry). Every edge gateway ``G`` has an ETSI
SAE pair with the aggregator, which sits at the node ``twin.aggregator`` (default: the first
metro node). Their end-to-end keys live in two key stores (``e2e/G@gw.db`` at G's KME,
``e2e/G@agg.db`` at the aggregator's KME) and are filled by **trusted-node key relay**
(:func:`qkdtwin.kms.relay.relay_key`): a fresh key crosses the current fewest-hop path of
links that are *up*, one-time-padded with one link key per hop, consuming link keys of the
KMEs along the way. So an alarm on a link reroutes the telemetry's keys too; a gateway whose
only access link is in alarm gets no new key (its key source is cut, the gateway fails closed
and queues readings) until the link is restored.

The sessions share one MQTT broker: the embedded amqtt broker started here (default), a real
one (``telemetry: {broker: mqtt://HOST:PORT}``), or the in-process bus (``memory``). Each tick
runs one telemetry interval per gateway (every device sends one reading); the twin keeps the
interval's counts and every device's latest reading and health.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from qkdtwin.errors import ConfigError, KeyExhaustedError, KmsError, QkdTwinError
from qkdtwin.iot import (
    EmbeddedBroker,
    GatedKeySource,
    MemoryBus,
    SharedFleet,
    StoreKeySource,
    TelemetryConfig,
    TelemetrySession,
)
from qkdtwin.iot.devices import decode_reading, reading_health
from qkdtwin.kms import KeyStore
from qkdtwin.kms.relay import RelayError, relay_key
from qkdtwin.twin.device_table import DeviceTable
from qkdtwin.twin.keynet import topology_without

if TYPE_CHECKING:
    from qkdtwin.twin.loop import Twin
    from qkdtwin.twin.results import TelemetryReport

__all__ = ["IotTelemetry"]

KEY_BITS = 256
#: End-to-end keys kept ready per gateway (a gateway uses one per key epoch).
TARGET_KEYS = 2
#: Least relays per tick over all gateways (the budget grows with the key demand: see
#: :func:`relay_budget`); it bounds the KMS work of one tick.
MAX_RELAYS_PER_TICK = 16
#: Mixed with the scenario's seed for the shared device fleet's random stream.
FLEET_STREAM = 0xF1EE7


def relay_budget(gateways: int, conf: TelemetryConfig) -> int:
    """Relays allowed per tick: twice the gateways' mean key demand, at least 16.

    In the steady state every gateway starts a key epoch (one end-to-end key) every
    ``rekey_seconds`` or every ``rekey_messages`` readings, whichever comes first; with a
    fixed budget of 16 a twin of 1,000 gateways and 60-s epochs (16.7 keys per 1-s tick)
    would starve for ever. Twice the mean leaves room to catch up after an outage.
    """
    per_s = max(1.0 / conf.rekey_seconds, conf.devices / (conf.rekey_messages * conf.interval_s))
    return max(MAX_RELAYS_PER_TICK, math.ceil(2.0 * gateways * per_s * conf.interval_s))


def _telemetry_option_error(exc: ConfigError) -> ConfigError:
    """Return the error renamed as the scenario names the option (``twin.telemetry.NAME``)."""
    name = f"twin.telemetry.{exc.field}" if exc.field else "twin.telemetry"
    return ConfigError(f"{name}: {exc}", field=name)


def _edge_id(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", node)[:40]


class _Gateway:
    def __init__(self, node: str, gw_store: KeyStore, agg_store: KeyStore) -> None:
        self.node = node
        self.gw_store = gw_store
        self.agg_store = agg_store
        self.inner = StoreKeySource(
            gw_store, f"sae-{node}", "sae-aggregator", mirror=agg_store, batch=1
        )
        self.gate = GatedKeySource(_CountedSupply(self))
        self.agg_source = StoreKeySource(agg_store, "sae-aggregator", f"sae-{node}", batch=1)
        self.relayed = gw_store.available_count(KEY_BITS)
        self.path: list[str] | None = None
        self.session: TelemetrySession | None = None
        #: Devices of this gateway seen at the aggregator so far (their gateway is recorded).
        self.devices_seen = 0

    @property
    def ready(self) -> int:
        """End-to-end keys in the gateway's store not yet drawn (relayed less reserved)."""
        return self.relayed - self.inner.reserved_bits // KEY_BITS


class _CountedSupply:
    """A gateway's key source that knows, from the twin's own count, when its store is empty.

    The twin installs every end-to-end key itself (:meth:`IotTelemetry.prepare`), so it knows
    how many the gateway's store holds (:attr:`_Gateway.ready`). A gateway without a key retries
    at every interval; at 1,000 gateways those retries were ~1,000 store transactions a tick
    that could only fail. With none ready, this refuses at once with the store's own error
    (:class:`KeyExhaustedError`); otherwise it asks the store.
    """

    def __init__(self, gw: _Gateway) -> None:
        self._gw = gw

    def new_key(self, size_bits: int) -> tuple[str, bytes]:
        """Return a key from the store, or raise KeyExhaustedError when none was relayed."""
        if size_bits == KEY_BITS and self._gw.ready <= 0:
            raise KeyExhaustedError(
                "no end-to-end key ready for this gateway", details=[{"available": 0}]
            )
        return self._gw.inner.new_key(size_bits)

    def key_by_id(self, key_id: str) -> bytes:
        """Pass through to the store."""
        return self._gw.inner.key_by_id(key_id)

    @property
    def reserved_bits(self) -> int:
        """Bits drawn from the store."""
        return self._gw.inner.reserved_bits

    @property
    def delivered_bits(self) -> int:
        """Bits handed out."""
        return self._gw.inner.delivered_bits


class IotTelemetry:
    """Telemetry of every edge gateway of the twin (the twin's :class:`TelemetryComponent`).

    Raises
    ------
    ConfigError
        For an unknown aggregator node (``twin.aggregator``) or a bad telemetry option
        (``twin.telemetry.NAME``).
    """

    def __init__(self, twin: Twin) -> None:
        cfg, net = twin.cfg, twin.scenario.network
        topo = twin.topology
        self.gateways_nodes = topo.nodes_with_role("edge_gateway")
        agg = cfg.aggregator
        if agg is None:
            for role in ("server", "kme", "metro", "olt", "relay"):
                cand = topo.nodes_with_role(role)
                if cand:
                    agg = cand[0]
                    break
        if agg is None or agg not in topo.graph:
            raise ConfigError(
                f"twin.aggregator: unknown node {agg!r}", field="twin.aggregator", value=agg
            )
        self.aggregator = str(agg)
        opts = dict(cfg.telemetry)
        broker = str(opts.pop("broker", "embedded"))
        for bad in ("devices", "edge_id", "seed", "interval_s"):  # the twin sets these
            if bad in opts:
                raise ConfigError(
                    f"twin.telemetry.{bad} is set by the twin", field=f"twin.telemetry.{bad}"
                )
        self.broker: EmbeddedBroker | None = None
        self._scratch: asyncio.AbstractEventLoop | None = None
        self.bus: MemoryBus | None = None
        root = Path(twin.data_dir) / "e2e"
        root.mkdir(parents=True, exist_ok=True)
        self.gws: list[_Gateway] = []
        self._paths_for: int = -1
        self.relays_per_tick = MAX_RELAYS_PER_TICK
        self.fleet: SharedFleet | None = None
        #: Device ID -> its gateway's node, for every device seen (read by the DeviceTables).
        self._gateway_of: dict[str, str] = {}
        try:
            if broker == "embedded":
                self.broker = self._start_broker()
                broker = f"mqtt://127.0.0.1:{self.broker.port}"
            elif broker == "memory":
                self.bus = MemoryBus()
            # every gateway's devices stepped as one fleet (qkdtwin.iot.fleet_share)
            if self.gateways_nodes:
                self.fleet = self._shared_fleet(cfg.devices_per_gateway, int(net.seed), opts)
            for i, gw in enumerate(self.gateways_nodes):
                try:
                    conf = TelemetryConfig.build(
                        devices=cfg.devices_per_gateway,
                        edge_id=_edge_id(gw),
                        seed=int(net.seed) * 100_003 + i,
                        broker=broker,
                        interval_s=cfg.tick_s,
                        **opts,
                    )
                except ConfigError as exc:
                    raise _telemetry_option_error(exc) from None
                # keep_connections=False: two stores per gateway; at 1,000 gateways kept
                # connections ran the process out of file descriptors (~5 per store)
                gw_store, agg_store = (
                    KeyStore(f"sqlite:///{root / f'{_edge_id(gw)}@{e}.db'}", keep_connections=False)
                    for e in ("gw", "agg")
                )
                g = _Gateway(gw, gw_store, agg_store)
                self.gws.append(g)
                g.session = TelemetrySession(
                    conf,
                    g.gate,
                    g.agg_source,
                    bus=self.bus,
                    keep_latencies=False,
                    fleet=self.fleet.parts[i] if self.fleet is not None else None,
                ).start()
                self.relays_per_tick = relay_budget(len(self.gateways_nodes), conf)
        except BaseException:
            self.close()
            raise

    def _shared_fleet(self, devices: int, seed: int, opts: dict[str, Any]) -> SharedFleet:
        """Lay out every gateway's devices as one fleet, named as a session names its own.

        Raises
        ------
        ConfigError
            ``twin.telemetry.NAME`` for a bad device option.
        """
        try:
            conf = TelemetryConfig.build(devices=devices, edge_id="fleet", seed=0, **opts)
            return SharedFleet(
                [
                    [f"{_edge_id(gw)}.d{j:05d}" for j in range(devices)]
                    for gw in self.gateways_nodes
                ],
                np.random.default_rng([seed, FLEET_STREAM]),
                payload_bytes=conf.payload_bytes,
                fault_rate_per_s=conf.fault_rate_per_s,
                drift_rate_per_s=conf.drift_rate_per_s,
            )
        except ConfigError as exc:
            raise _telemetry_option_error(exc) from None

    def _start_broker(self) -> EmbeddedBroker:
        """Start the embedded broker with a scratch event loop current on this thread.

        amqtt's ``Broker()`` creates a future on the calling thread's current event loop;
        without one, asyncio makes a default loop that nobody closes (a leaked socket pair),
        or fails outright off the main thread. The scratch loop is closed in :meth:`close`.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._scratch = asyncio.new_event_loop()
            asyncio.set_event_loop(self._scratch)
            try:
                return EmbeddedBroker().start()
            finally:
                asyncio.set_event_loop(None)
        return EmbeddedBroker().start()

    def prepare(self, twin: Twin) -> None:
        """Under the twin's lock: route each gateway's keys and relay end-to-end keys.

        At most one relay per gateway and :attr:`relays_per_tick` in all per tick (the
        gateways with the fewest ready keys first, see :func:`relay_budget`), so the KMS work
        per tick stays bounded.
        """
        if self._paths_for != twin.keynet.reroutes:
            topo = topology_without(twin.topology, twin._down())
            for g in self.gws:
                try:
                    g.path = [str(n) for n in nx.shortest_path(topo.graph, g.node, self.aggregator)]
                except (nx.NetworkXNoPath, nx.NodeNotFound):
                    g.path = None
                if g.path is None:
                    g.gate.cut()
                else:
                    g.gate.restore()
            self._paths_for = twin.keynet.reroutes
        budget = self.relays_per_tick
        for g in sorted(self.gws, key=lambda g: g.ready):
            if budget == 0:
                break
            if g.path is None or len(g.path) < 2 or g.ready >= TARGET_KEYS:
                continue
            # relay only when every hop holds a link key: a relay that fails midway wastes
            # the pads it already used (they are never reused)
            if not twin.kmes.path_has_keys(g.path):
                continue
            budget -= 1
            try:
                relay_key(twin.kmes.hops(g.path), g.gw_store, g.agg_store, size_bits=KEY_BITS)
            except RelayError:
                twin.kmes.resync(g.path)
                continue
            g.relayed += 1
            twin.kmes.consumed(g.path)

    def run_interval(self, twin: Twin) -> TelemetryReport:
        """Outside the twin's lock: one interval per gateway; return the summed report."""
        tot: TelemetryReport = {
            "sessions": len(self.gws),
            "sent": 0,
            "delivered": 0,
            "decrypt_failures": 0,
            "queued": 0,
            "qkd_key_bits_consumed": 0,
            "rejected": {},
            "dropped": {},
            "key_failures": {},
            "gateways_cut": sum(1 for g in self.gws if g.path is None),
            "aggregator": self.aggregator,
            "errors": 0,
        }
        p50: list[float] = []
        p99: list[float] = []
        encoded: dict[str, bytes] = {}  # the readings stay encoded: see DeviceTable
        gateway_of = self._gateway_of
        if self.fleet is not None:
            self.fleet.step(twin.cfg.tick_s, 1)
        for g in self.gws:
            assert g.session is not None
            try:
                rep = g.session.run_interval(1)
            except QkdTwinError:
                tot["errors"] += 1
                continue
            tot["sent"] += int(rep.sent)
            tot["delivered"] += int(rep.delivered)
            tot["decrypt_failures"] += int(rep.decrypt_failures)
            tot["queued"] += int(rep.queued)
            tot["qkd_key_bits_consumed"] += int(rep.qkd_key_bits_consumed)
            _add_counts(tot["rejected"], rep.rejected)
            _add_counts(tot["dropped"], rep.dropped)
            _add_counts(tot["key_failures"], rep.key_failures)
            if rep.latency_ms_p50 == rep.latency_ms_p50:
                p50.append(rep.latency_ms_p50)
                p99.append(rep.latency_ms_p99)
            if len(rep.latest) != g.devices_seen:  # a device seen for the first time
                g.devices_seen = len(rep.latest)
                for dev_id in rep.latest:
                    gateway_of.setdefault(dev_id, g.node)
            encoded.update(rep.latest.encoded_items())
        tot["latency_ms_p50"] = float(np.median(p50)) if p50 else None
        tot["latency_ms_p99"] = float(max(p99)) if p99 else None
        tot["devices"] = DeviceTable(
            encoded, gateway_of, decode=decode_reading, health_of=reading_health
        )
        return tot

    def close(self) -> None:
        """Stop every session, the embedded broker, and close the end-to-end stores."""
        for g in self.gws:
            if g.session is not None:
                with contextlib.suppress(QkdTwinError, KmsError, OSError):
                    g.session.shutdown()
                g.session = None
            g.gw_store.close()
            g.agg_store.close()
        self.gws = []
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    """Add a gateway's counts by reason into the interval's totals."""
    for k, v in counts.items():
        into[k] = into.get(k, 0) + int(v)
