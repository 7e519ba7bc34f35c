"""The receiving side of the Sparkplug B mode: session state of edge nodes, and their data.

:class:`SparkplugHost` follows what a Sparkplug host application follows, without keys: per
edge node the birth/death state and its ``bdSeq`` (a death counts only when its ``bdSeq``
matches the current birth's), the ``seq`` of every message after NBIRTH (a jump counts the
missing numbers as ``seq_gaps``: messages lost; a standard host would then ask for a rebirth,
which is counted as ``rebirths_wanted`` and handed to ``on_rebirth_wanted``), and per device
its birth (metric names, datatypes and ``engUnit`` units: the device list) and death. Data
messages yield their ``qkdtwin/envelope`` bytes metric.

:class:`SparkplugReceiver` feeds those envelopes to :class:`~qkdtwin.iot.aggregator.Aggregator`
objects (one per edge), which open them exactly as the ``qkdtwin/v1`` frames (same keys, same
replay window); the topic's sender is checked against each record's sender ID.

Garbage never raises: an undecodable payload is counted ``malformed``, a topic of another
group or edge ``ignored``, and new nodes or devices beyond the limits ``untracked``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qkdtwin.errors import EnvelopeError
from qkdtwin.iot.sparkplug import (
    BDSEQ_METRIC,
    ENVELOPE_METRIC,
    DataType,
    Payload,
    SparkplugTopic,
    decode_payload,
    parse_topic,
    seq_missing,
)

if TYPE_CHECKING:
    from qkdtwin.iot.aggregator import Aggregator

__all__ = [
    "HostMessage",
    "SparkplugDevice",
    "SparkplugHost",
    "SparkplugNode",
    "SparkplugReceiver",
]


@dataclass
class SparkplugDevice:
    """A device as its DBIRTH/DDEATH/DDATA messages tell.

    Attributes
    ----------
    device_id
        From the topic.
    online
        ``True`` after DBIRTH, ``False`` after DDEATH or its node's death, ``None`` when data
        came without a birth seen.
    kind
        The ``qkdtwin/kind`` birth metric.
    metrics
        Metric name -> ``(datatype name, unit)`` from the birth (unit ``""``: none given).
    births, deaths, messages
        Counts (``messages``: DDATA).
    """

    device_id: str
    online: bool | None = None
    kind: str | None = None
    metrics: dict[str, tuple[str, str]] = field(default_factory=dict)
    births: int = 0
    deaths: int = 0
    messages: int = 0


@dataclass
class SparkplugNode:
    """An edge node's Sparkplug session as the host sees it.

    Attributes
    ----------
    group, edge
        From the topic.
    online
        ``True`` after NBIRTH, ``False`` after a matching NDEATH (``None``: neither seen).
    bd_seq
        ``bdSeq`` of the current birth.
    last_seq
        ``seq`` of the last message (``None``: no birth or data since the last death).
    births, deaths, messages
        NBIRTHs, NDEATHs that matched, every message counted.
    seq_gaps
        Missing sequence numbers: messages lost (or reordered) on the way.
    gap_events
        Jumps in the sequence.
    duplicates
        Messages that repeated the previous ``seq`` (a QoS 1 redelivery).
    stale_deaths
        NDEATHs whose ``bdSeq`` was not the current birth's (ignored, as the spec says).
    rebirths_wanted
        Times a standard host would ask this node for a rebirth (a gap, or data without a
        birth).
    info
        The NBIRTH's metrics, name -> value (the clear metadata).
    devices
        By device ID.
    """

    group: str
    edge: str
    online: bool | None = None
    bd_seq: int | None = None
    last_seq: int | None = None
    births: int = 0
    deaths: int = 0
    messages: int = 0
    seq_gaps: int = 0
    gap_events: int = 0
    duplicates: int = 0
    stale_deaths: int = 0
    rebirths_wanted: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, SparkplugDevice] = field(default_factory=dict)
    _awaiting_birth: bool = False


@dataclass(frozen=True, slots=True)
class HostMessage:
    """One accepted message: its topic, payload, envelope bytes (data) and missing ``seq``."""

    topic: SparkplugTopic
    payload: Payload
    envelope: bytes | None
    missing: int


class SparkplugHost:
    """Follow Sparkplug edge nodes from their messages (see the module docstring).

    Parameters
    ----------
    group
        Only this group (``None``: every group).
    edges
        Only these edge node IDs (``None``: every edge).
    max_nodes, max_devices
        Most nodes, and most devices per node, tracked.
    on_rebirth_wanted
        Called with ``(group, edge)`` whenever a rebirth should be requested.

    Notes
    -----
    Not thread-safe: feed it from one thread (or under a lock).
    """

    def __init__(
        self,
        group: str | None = None,
        *,
        edges: Collection[str] | None = None,
        max_nodes: int = 4096,
        max_devices: int = 100_000,
        on_rebirth_wanted: Callable[[str, str], None] | None = None,
    ) -> None:
        self.group = group
        self.edges = None if edges is None else frozenset(edges)
        self.max_nodes = max_nodes
        self.max_devices = max_devices
        self.on_rebirth_wanted = on_rebirth_wanted
        self.nodes: dict[str, SparkplugNode] = {}
        self.malformed = 0
        self.ignored = 0
        self.untracked = 0
        self.commands = 0

    def offer(self, topic: str, data: bytes) -> HostMessage | None:
        """Take one MQTT message; return it parsed, or ``None`` if it was not taken."""
        t = parse_topic(topic)
        if t is None or (self.group is not None and t.group != self.group):
            self.ignored += 1
            return None
        if self.edges is not None and t.edge not in self.edges:
            self.ignored += 1
            return None
        if t.message_type in ("NCMD", "DCMD"):
            self.commands += 1  # commands to the node (a host's, or the twin's own)
            return None
        try:
            payload = decode_payload(data)
        except EnvelopeError:
            self.malformed += 1
            return None
        node = self.nodes.get(t.edge)
        if node is None:
            if len(self.nodes) >= self.max_nodes:
                self.untracked += 1
                return None
            node = self.nodes[t.edge] = SparkplugNode(t.group, t.edge)
        if t.message_type == "NBIRTH":
            return self._node_birth(node, t, payload)
        if t.message_type == "NDEATH":
            return self._node_death(node, t, payload)
        if payload.seq is None:
            self.malformed += 1
            return None
        device = None
        if t.device is not None:
            device = node.devices.get(t.device)
            if device is None:
                if len(node.devices) >= self.max_devices:
                    self.untracked += 1
                    return None
                device = node.devices[t.device] = SparkplugDevice(t.device)
        node.messages += 1
        missing = self._sequence(node, payload.seq)
        envelope = None
        if t.message_type == "DBIRTH":
            assert device is not None
            device.online = True
            device.births += 1
            device.metrics = {}
            for m in payload.metrics:
                if m.name == "qkdtwin/kind" and isinstance(m.value, str):
                    device.kind = m.value
                elif m.name is not None:
                    unit = m.properties.get("engUnit")
                    unit = unit if isinstance(unit, str) else ""
                    device.metrics[m.name] = (m.datatype.name, unit)
        elif t.message_type == "DDEATH":
            assert device is not None
            device.online = False
            device.deaths += 1
        else:  # NDATA, DDATA
            if device is not None:
                device.messages += 1
                if device.online is None:
                    self._want_rebirth(node)  # data of a device whose birth we did not see
            env = payload.metric(ENVELOPE_METRIC)
            if env is not None and env.datatype == DataType.BYTES and isinstance(env.value, bytes):
                envelope = env.value
        return HostMessage(t, payload, envelope, missing)

    # -- lifecycle and sequence ------------------------------------------------------------
    def _node_birth(self, node: SparkplugNode, t: SparkplugTopic, p: Payload) -> HostMessage:
        bd = p.metric(BDSEQ_METRIC)
        node.online = True
        node.bd_seq = bd.value if bd is not None and isinstance(bd.value, int) else None
        node.last_seq = p.seq if p.seq is not None else 0
        node.births += 1
        node.messages += 1
        node._awaiting_birth = False
        node.info = {m.name: m.value for m in p.metrics if m.name is not None}
        for dev in node.devices.values():
            dev.online = False  # until its DBIRTH of this birth
        return HostMessage(t, p, None, 0)

    def _node_death(self, node: SparkplugNode, t: SparkplugTopic, p: Payload) -> HostMessage:
        bd = p.metric(BDSEQ_METRIC)
        bd_seq = bd.value if bd is not None and isinstance(bd.value, int) else None
        node.messages += 1
        if node.bd_seq is not None and bd_seq != node.bd_seq:
            node.stale_deaths += 1  # the death of an earlier session: this one lives on
            return HostMessage(t, p, None, 0)
        node.online = False
        node.deaths += 1
        node.last_seq = None
        for dev in node.devices.values():
            dev.online = False
        return HostMessage(t, p, None, 0)

    def _sequence(self, node: SparkplugNode, seq: int) -> int:
        last, node.last_seq = node.last_seq, seq % 256
        if last is None:
            self._want_rebirth(node)  # attached mid-session, or data after a death
            return 0
        missing = seq_missing(last, seq)
        if missing == 255:
            node.duplicates += 1
            return 0
        if missing:
            node.seq_gaps += missing
            node.gap_events += 1
            node._awaiting_birth = False
            self._want_rebirth(node)
        return missing

    def _want_rebirth(self, node: SparkplugNode) -> None:
        if node._awaiting_birth:
            return
        node._awaiting_birth = True
        node.rebirths_wanted += 1
        if self.on_rebirth_wanted is not None:
            self.on_rebirth_wanted(node.group, node.edge)

    def totals(self) -> dict[str, int]:
        """Return counts over every node: sequence gaps, births, deaths, devices, garbage."""
        out = {
            "births": 0,
            "deaths": 0,
            "stale_deaths": 0,
            "seq_gaps": 0,
            "gap_events": 0,
            "duplicates": 0,
            "rebirths_wanted": 0,
        }
        devices = online = 0
        for n in self.nodes.values():
            for k in out:
                out[k] += getattr(n, k)
            devices += len(n.devices)
            online += sum(1 for d in n.devices.values() if d.online)
        out |= {
            "nodes": len(self.nodes),
            "devices": devices,
            "devices_online": online,
            "malformed": self.malformed,
            "ignored": self.ignored,
            "untracked": self.untracked,
            "commands": self.commands,
        }
        return out


class SparkplugReceiver:
    """Open the Sparkplug data of some edge nodes with one :class:`Aggregator` per edge.

    Parameters
    ----------
    aggregators
        Edge node ID -> its aggregator (the scheme and mode of that gateway).
    group
        The Sparkplug group of the gateways.
    on_rebirth_wanted
        See :class:`SparkplugHost`.
    """

    def __init__(
        self,
        aggregators: Mapping[str, Aggregator],
        group: str,
        *,
        on_rebirth_wanted: Callable[[str, str], None] | None = None,
    ) -> None:
        self.aggregators = dict(aggregators)
        self._rebirth_cb = on_rebirth_wanted
        self._rebirths: list[tuple[str, str]] = []
        self.host = SparkplugHost(
            group,
            edges=set(self.aggregators),
            on_rebirth_wanted=None if on_rebirth_wanted is None else self._queue_rebirth,
        )
        self.lock = threading.Lock()

    def _queue_rebirth(self, group: str, edge: str) -> None:
        self._rebirths.append((group, edge))  # called under the lock: sent after it

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take one MQTT message (never raises for a bad one)."""
        with self.lock:
            msg = self.host.offer(topic, payload)
            rebirths, self._rebirths = self._rebirths, []
        for group, edge in rebirths:
            assert self._rebirth_cb is not None
            self._rebirth_cb(group, edge)  # outside the lock: it may publish (an NCMD)
        if msg is None:
            return
        t = msg.topic
        agg = self.aggregators[t.edge]
        if t.message_type in ("NBIRTH", "NDEATH"):
            bd = msg.payload.metric(BDSEQ_METRIC)
            bd_seq = bd.value if bd is not None and isinstance(bd.value, int) else -1
            agg.lifecycle(t.edge, t.message_type, bd_seq)
        elif msg.envelope is not None:
            agg.handle_frame(t.edge, msg.envelope, sender=t.device or t.edge)
        else:
            agg.notify()

    def node(self, edge: str) -> SparkplugNode | None:
        """Return the state of one edge node (``None`` if nothing was seen of it)."""
        with self.lock:
            return self.host.nodes.get(edge)

    def totals(self) -> dict[str, int]:
        """See :meth:`SparkplugHost.totals`."""
        with self.lock:
            return self.host.totals()
