"""IIoT traffic as the twin sees it without keys: :class:`IotMetadataStream`.

In attach mode the twin does not hold the telemetry keys, so it reads only what an envelope
carries in the clear (:mod:`qkdtwin.iot.envelope`): the topic
(``qkdtwin/v1/<group>/<NBIRTH|NDEATH|NDATA|DDATA>/<edge>``) and, for every record of a data
frame, the header: version, mode, kind (KEX, aggregate, device), key_ID (the QKD key's UUID,
in the clear), epoch, sequence number, body length and sender ID. Nothing is decrypted and
the body is never looked at beyond its length. The header carries **no timestamp**: timing is
the receive time ``now`` the caller passes (Unix s), so, as for
:class:`~qkdtwin.twin.ingest.link_stream.LinkStream`, a recorded stream replays identically.

Per sender (a device ID in the mobile scheme, the gateway's ID in the fixed scheme and for
rekey records) it tracks records, bytes, last seen, the epoch, the last sequence number and
its gaps; per edge it tracks frames, bytes, records, malformed frames, rekeys (KEX records,
one per epoch), the key_ID in use and the birth/death state (NBIRTH/NDEATH JSON, which is in
the clear by design).

Sequence numbers (see :class:`~qkdtwin.iot.envelope.Sealer`): per sender and epoch they start
at 1 and grow by one per record; a new epoch starts again at 1. A jump within an epoch counts
the missing numbers as ``gaps``; a number not above the last one counts ``out_of_order`` (a
QoS 1 duplicate, a replay or a reordering: without keys they cannot be told apart).

Health per sender: ``"stale"`` when more than ``stale_intervals`` of its message intervals
(median gap between its frames, or ``interval_s`` if given) have passed without a record;
``"gap"`` when a sequence gap was seen within the last ``stale_intervals`` intervals;
``"ok"`` otherwise. Rate: records per second over the last ``rate_window_s`` seconds.

Garbage never raises: a topic outside the tree, an unknown message type or an unparseable
frame is counted (``malformed``); records before the first malformed one in a frame count
normally (the rest of the frame cannot be delimited).

Sparkplug B mode (``topic_style="sparkplug"``, :mod:`qkdtwin.iot.sparkplug_edge`): the topics
are ``spBv1.0/<group>/<type>/<edge>[/<device>]`` and the payloads protobuf. A
:class:`~qkdtwin.iot.sparkplug_host.SparkplugHost` follows each edge node's session: NBIRTH and
NDEATH (``bdSeq``) give the edge's online state, each DBIRTH a device with its metric names and
units (so a device is listed from its birth, before any record), DDEATH and NDEATH mark devices
``offline``, and the Sparkplug ``seq`` of each edge node counts lost messages
(:attr:`EdgeMetadata.seq_gaps`). The ``qkdtwin/envelope`` bytes of NDATA and DDATA are read
exactly as a ``qkdtwin/v1`` frame.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from qkdtwin.errors import ConfigError, EnvelopeError
from qkdtwin.iot.envelope import KIND_AGGREGATE, KIND_DEVICE, KIND_KEX, iter_records
from qkdtwin.iot.transport import TOPIC_ROOT

if TYPE_CHECKING:
    from qkdtwin.iot.sparkplug_host import SparkplugHost

__all__ = [
    "EdgeMetadata",
    "IotHealth",
    "IotMetadataSnapshot",
    "IotMetadataStream",
    "SenderMetadata",
]

IotHealth = Literal["ok", "stale", "gap", "offline", "never-seen"]

_ROOT_PARTS = TOPIC_ROOT.split("/")
_KIND_NAMES = {KIND_KEX: "kex", KIND_AGGREGATE: "aggregate", KIND_DEVICE: "device"}


@dataclass(frozen=True, slots=True)
class SenderMetadata:
    """What the clear headers tell about one sender (device or gateway).

    Attributes
    ----------
    sender_id, edge
        The sender and the edge whose topic carried its records.
    kind
        ``"device"``, ``"aggregate"`` or ``"kex"`` (of its last record).
    records, bytes
        Records seen and their size on the wire (header + body), bytes.
    first_seen, last_seen
        Receive times, Unix s.
    epoch, last_seq
        Of its last record.
    gaps
        Sequence numbers missing within an epoch.
    out_of_order
        Records whose number was not above the previous one (duplicate, replay or reorder).
    rate
        Records per second over the rate window.
    interval_s
        Its message interval (given, or the median gap between its frames), s.
    health
        ``"ok"``, ``"stale"``, ``"gap"`` or (Sparkplug, after DDEATH or NDEATH) ``"offline"``.
    online
        Sparkplug: ``True`` after its DBIRTH, ``False`` after DDEATH or its node's death
        (``None``: no birth seen, or not Sparkplug).
    units
        Sparkplug: measurement name -> unit from its DBIRTH (``""``: dimensionless).
    """

    sender_id: str
    edge: str
    kind: str
    records: int
    bytes: int
    first_seen: float
    last_seen: float
    epoch: int
    last_seq: int
    gaps: int
    out_of_order: int
    rate: float
    interval_s: float | None
    health: IotHealth
    online: bool | None = None
    units: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EdgeMetadata:
    """One edge gateway: its frames and birth/death state.

    Attributes
    ----------
    edge, group
        From the topic.
    frames, bytes, records
        Data frames (MQTT messages), their payload bytes and the records they held.
    malformed
        Frames (or birth/death messages) that could not be parsed.
    rekeys
        KEX records seen (one per epoch).
    epoch, key_id
        Epoch and key_ID (UUID, ``None`` in pqc-only mode) of its last KEX record.
    online
        Last NBIRTH seen without a matching NDEATH after it (``None``: no birth/death seen).
    births, deaths
        Birth and death messages.
    last_seen
        Receive time of its last message, Unix s.
    bd_seq
        ``bdSeq`` of its current birth.
    seq_gaps
        Sparkplug: messages lost, from the edge node's ``seq`` (0 otherwise).
    rebirths_wanted
        Sparkplug: times a standard host would have asked this node for a rebirth.
    """

    edge: str
    group: str
    frames: int
    bytes: int
    records: int
    malformed: int
    rekeys: int
    epoch: int | None
    key_id: str | None
    online: bool | None
    births: int
    deaths: int
    last_seen: float
    bd_seq: int | None = None
    seq_gaps: int = 0
    rebirths_wanted: int = 0


@dataclass(frozen=True, slots=True)
class IotMetadataSnapshot:
    """State of an :class:`IotMetadataStream` at one moment.

    Attributes
    ----------
    edges, senders
        By edge ID and by sender ID.
    messages, malformed
        MQTT messages offered; those not attributable to any edge or not parseable.
    untracked
        Messages of new edges or senders refused because ``max_sources`` was reached.
    """

    edges: dict[str, EdgeMetadata]
    senders: dict[str, SenderMetadata]
    messages: int
    malformed: int
    untracked: int


@dataclass
class _Sender:
    edge: str
    first_seen: float
    kind: str = "device"
    records: int = 0
    nbytes: int = 0
    last_seen: float = 0.0
    epoch: int = -1
    last_seq: int = -1
    gaps: int = 0
    out_of_order: int = 0
    last_gap_t: float | None = None
    online: bool | None = None
    units: dict[str, str] = field(default_factory=dict)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=17))
    window: deque[tuple[float, int]] = field(default_factory=deque)


@dataclass
class _Edge:
    group: str
    frames: int = 0
    nbytes: int = 0
    records: int = 0
    malformed: int = 0
    rekeys: int = 0
    epoch: int | None = None
    key_id: str | None = None
    online: bool | None = None
    bd_seq: int | None = None
    births: int = 0
    deaths: int = 0
    last_seen: float = 0.0
    seq_gaps: int = 0
    rebirths_wanted: int = 0


class IotMetadataStream:
    """Track IIoT edges and senders from MQTT topics and clear envelope headers only.

    Parameters
    ----------
    interval_s
        Expected message interval of every sender, s; ``None`` estimates it per sender
        from the gaps between its frames.
    stale_intervals
        Intervals without a record after which a sender is stale (> 0).
    rate_window_s
        Window of the record rate, s (> 0).
    max_sources
        Most edges and most senders tracked (each); messages of further new ones are
        counted ``untracked`` (so forged IDs cannot grow memory without bound).
    topic_style
        ``"qkdtwin"`` (``qkdtwin/v1`` topics) or ``"sparkplug"`` (Sparkplug B 3.0).
    group
        Sparkplug: only this group (``None``: every group).

    Raises
    ------
    ConfigError
        For a parameter out of range, or the Sparkplug mode without the protobuf runtime.

    Notes
    -----
    Not thread-safe: feed it from one thread (or under a lock).
    """

    def __init__(
        self,
        *,
        interval_s: float | None = None,
        stale_intervals: float = 3.0,
        rate_window_s: float = 30.0,
        max_sources: int = 4096,
        topic_style: Literal["qkdtwin", "sparkplug"] = "qkdtwin",
        group: str | None = None,
    ) -> None:
        for name, value in (
            ("stale_intervals", stale_intervals),
            ("rate_window_s", rate_window_s),
            ("interval_s", 1.0 if interval_s is None else interval_s),
        ):
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ConfigError(f"{name} must be a finite number > 0", field=name, value=value)
        if not isinstance(max_sources, int) or max_sources < 1:
            raise ConfigError("max_sources must be >= 1", field="max_sources", value=max_sources)
        self.interval_s = interval_s
        self.stale_intervals = float(stale_intervals)
        self.rate_window_s = float(rate_window_s)
        self.max_sources = max_sources
        self._edges: dict[str, _Edge] = {}
        self._senders: dict[str, _Sender] = {}
        self._messages = 0
        self._malformed = 0
        #: Command messages (NCMD) seen: not telemetry, not malformed.
        self.commands = 0
        self._untracked = 0
        self.topic_style = topic_style
        self._spb: SparkplugHost | None = None
        if topic_style == "sparkplug":
            from qkdtwin.iot.sparkplug import require_protobuf
            from qkdtwin.iot.sparkplug_host import SparkplugHost

            require_protobuf()
            self._spb = SparkplugHost(group, max_nodes=max_sources, max_devices=max_sources)
        elif topic_style != "qkdtwin":
            raise ConfigError(
                "topic_style must be qkdtwin or sparkplug", field="topic_style", value=topic_style
            )

    # -- feeding ---------------------------------------------------------------------------
    def offer(self, topic: str, payload: bytes, now: float) -> None:
        """Account one MQTT message of the IIoT tree received at ``now`` (Unix s).

        Never raises for bad input: it is counted as malformed.
        """
        self._messages += 1
        try:
            self._offer(topic, payload, now)
        except Exception:  # metadata is best effort: nothing may stop the ingest
            self._malformed += 1

    def _offer(self, topic: str, payload: bytes, now: float) -> None:
        if self._spb is not None:
            self._offer_sparkplug(self._spb, topic, payload, now)
            return
        parts = topic.split("/") if isinstance(topic, str) else []
        if (
            len(parts) != len(_ROOT_PARTS) + 3
            or parts[: len(_ROOT_PARTS)] != _ROOT_PARTS
            or parts[-2] not in ("NBIRTH", "NDEATH", "NDATA", "DDATA", "NCMD")
            or not parts[-1]
            or not parts[-3]
            or not isinstance(payload, bytes | bytearray)
        ):
            self._malformed += 1
            return
        group, msg_type, edge_id = parts[-3], parts[-2], parts[-1]
        if msg_type == "NCMD":  # a command to the edge (the twin's own rekey requests)
            self.commands += 1
            return
        edge = self._edge(edge_id, group)
        if edge is None:
            return
        edge.last_seen = now
        if msg_type in ("NBIRTH", "NDEATH"):
            self._lifecycle(edge, msg_type, bytes(payload))
            return
        self._frame(edge, edge_id, bytes(payload), len(payload), now)

    def _edge(self, edge_id: str, group: str) -> _Edge | None:
        edge = self._edges.get(edge_id)
        if edge is None:
            if len(self._edges) >= self.max_sources:
                self._untracked += 1
                return None
            edge = self._edges[edge_id] = _Edge(group)
        return edge

    def _offer_sparkplug(self, host: SparkplugHost, topic: str, payload: bytes, now: float) -> None:
        before = host.malformed, host.ignored, host.untracked, host.commands
        msg = host.offer(topic, bytes(payload)) if isinstance(topic, str) else None
        self._malformed += (host.malformed - before[0]) + (host.ignored - before[1])
        self._untracked += host.untracked - before[2]
        self.commands += host.commands - before[3]
        if msg is None:
            if not isinstance(topic, str):
                self._malformed += 1
            return
        t = msg.topic
        edge = self._edge(t.edge, t.group)
        if edge is None:
            return
        node = host.nodes[t.edge]
        edge.last_seen = now
        edge.online, edge.bd_seq = node.online, node.bd_seq
        edge.births, edge.deaths = node.births, node.deaths
        edge.seq_gaps, edge.rebirths_wanted = node.seq_gaps, node.rebirths_wanted
        if t.message_type in ("NBIRTH", "NDEATH"):
            for dev_id, dev in node.devices.items():  # a new birth or a death: devices wait
                known = self._senders.get(dev_id)  # for their DBIRTH
                if known is not None:
                    known.online = dev.online
        elif t.message_type in ("DBIRTH", "DDEATH") and t.device is not None:
            s = self._senders.get(t.device)
            if s is None:
                if len(self._senders) >= self.max_sources:
                    self._untracked += 1
                    return
                s = self._senders[t.device] = _Sender(t.edge, now)
            dev = node.devices[t.device]
            s.edge, s.online = t.edge, dev.online
            s.units = {
                name: unit
                for name, (_dtype, unit) in dev.metrics.items()
                if not name.startswith("qkdtwin/")  # the envelope, the kind: not measurements
            }
        elif msg.envelope is not None:
            self._frame(edge, t.edge, msg.envelope, len(payload), now)

    def _frame(self, edge: _Edge, edge_id: str, frame: bytes, nbytes: int, now: float) -> None:
        edge.frames += 1
        edge.nbytes += nbytes
        frame_senders: set[str] = set()
        try:
            for header, _body in iter_records(frame):
                edge.records += 1
                size = len(header.aad) + header.body_length
                if header.kind == KIND_KEX:
                    edge.rekeys += 1
                    edge.epoch = header.epoch
                    edge.key_id = header.key_id_str
                s = self._senders.get(header.sender_id)
                if s is None:
                    if len(self._senders) >= self.max_sources:
                        self._untracked += 1
                        continue
                    s = self._senders[header.sender_id] = _Sender(edge_id, now)
                self._record(s, edge_id, header.kind, header.epoch, header.seq, size, now)
                if header.sender_id not in frame_senders:
                    frame_senders.add(header.sender_id)
                    s.arrivals.append(now)
        except EnvelopeError:
            edge.malformed += 1

    def _lifecycle(self, edge: _Edge, msg_type: str, payload: bytes) -> None:
        try:
            data = json.loads(payload)
            bd_seq = int(data["bdSeq"]) if isinstance(data, dict) and "bdSeq" in data else None
        except (ValueError, TypeError, KeyError):
            edge.malformed += 1
            bd_seq = None
        if msg_type == "NBIRTH":
            edge.births += 1
            edge.online, edge.bd_seq = True, bd_seq
        else:
            edge.deaths += 1
            # Sparkplug rule: a death ends the session only if it matches the current birth.
            if edge.bd_seq is None or bd_seq == edge.bd_seq:
                edge.online = False

    def _record(
        self, s: _Sender, edge_id: str, kind: int, epoch: int, seq: int, size: int, now: float
    ) -> None:
        s.edge = edge_id
        s.kind = _KIND_NAMES.get(kind, str(kind))
        s.records += 1
        s.nbytes += size
        s.last_seen = now
        if s.window and s.window[-1][0] == now:
            s.window[-1] = (now, s.window[-1][1] + 1)
        else:
            s.window.append((now, 1))
        while s.window and s.window[0][0] < now - self.rate_window_s:
            s.window.popleft()
        if kind == KIND_KEX:
            # Rekey record: seq 0, opens epoch ``epoch`` for the whole edge.
            s.epoch, s.last_seq = epoch, 0
            return
        if epoch > s.epoch:
            # New epoch: numbering starts again at 1; numbers below ``seq`` are missing.
            missing = seq - 1 if s.epoch >= 0 else 0
            s.epoch = epoch
        elif epoch < s.epoch or seq <= s.last_seq:
            s.out_of_order += 1
            return
        else:
            missing = seq - s.last_seq - 1 if s.last_seq >= 0 else 0
        if missing > 0:
            s.gaps += missing
            s.last_gap_t = now
        s.last_seq = seq

    # -- reading ---------------------------------------------------------------------------
    def _interval(self, s: _Sender) -> float | None:
        if self.interval_s is not None:
            return self.interval_s
        times = list(s.arrivals)
        diffs = [b - a for a, b in itertools.pairwise(times) if b > a]
        return statistics.median(diffs) if diffs else None

    def _sender_view(self, sid: str, s: _Sender, now: float) -> SenderMetadata:
        interval = self._interval(s)
        horizon = None if interval is None else self.stale_intervals * interval
        health: IotHealth = "ok"
        if s.online is False:
            health = "offline"
        elif horizon is not None and now - s.last_seen > horizon:
            health = "stale"
        elif s.last_gap_t is not None and (horizon is None or now - s.last_gap_t <= horizon):
            health = "gap"
        recent = sum(n for t, n in s.window if t >= now - self.rate_window_s)
        return SenderMetadata(
            sender_id=sid,
            edge=s.edge,
            kind=s.kind,
            records=s.records,
            bytes=s.nbytes,
            first_seen=s.first_seen,
            last_seen=s.last_seen,
            epoch=s.epoch,
            last_seq=s.last_seq,
            gaps=s.gaps,
            out_of_order=s.out_of_order,
            rate=recent / self.rate_window_s,
            interval_s=interval,
            health=health,
            online=s.online,
            units=dict(s.units),
        )

    def sender(self, sender_id: str, now: float) -> SenderMetadata | None:
        """Return one sender's metadata at ``now``, ``None`` if it was never seen."""
        s = self._senders.get(sender_id)
        return None if s is None else self._sender_view(sender_id, s, now)

    def health(self, sender_id: str, now: float) -> IotHealth:
        """Return ``"ok"``, ``"stale"``, ``"gap"`` or ``"never-seen"`` for one sender."""
        view = self.sender(sender_id, now)
        return "never-seen" if view is None else view.health

    def sequence_totals(self) -> dict[str, int]:
        """Sparkplug: ``seq_gaps`` (messages lost) and ``rebirths_wanted`` over every edge."""
        edges = self._edges.values()
        return {
            "seq_gaps": sum(e.seq_gaps for e in edges),
            "rebirths_wanted": sum(e.rebirths_wanted for e in edges),
        }

    def snapshot(self, now: float) -> IotMetadataSnapshot:
        """Return every edge and sender as seen at ``now``."""
        edges = {
            eid: EdgeMetadata(
                edge=eid,
                group=e.group,
                frames=e.frames,
                bytes=e.nbytes,
                records=e.records,
                malformed=e.malformed,
                rekeys=e.rekeys,
                epoch=e.epoch,
                key_id=e.key_id,
                online=e.online,
                births=e.births,
                deaths=e.deaths,
                last_seen=e.last_seen,
                bd_seq=e.bd_seq,
                seq_gaps=e.seq_gaps,
                rebirths_wanted=e.rebirths_wanted,
            )
            for eid, e in sorted(self._edges.items())
        }
        senders = {sid: self._sender_view(sid, s, now) for sid, s in sorted(self._senders.items())}
        return IotMetadataSnapshot(
            edges=edges,
            senders=senders,
            messages=self._messages,
            malformed=self._malformed + sum(e.malformed for e in self._edges.values()),
            untracked=self._untracked,
        )
