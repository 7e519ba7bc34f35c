"""Ordering and validation of link telemetry: :class:`LinkStream`.

The stage between the MQTT subscription and the twin's link state in attach mode. It is
pure and deterministic: every call takes the receive time ``now`` explicitly (Unix seconds,
the ingest's clock), so a recorded stream replays to exactly the same result.

What happens to one offered message (``topic``, ``payload``, ``now``), checks in this order;
each message is counted under exactly one outcome, the first that applies:

1. the topic is not ``qkdtwin/link/v1/<module_id>/perf``: ``topic_mismatch``;
2. :func:`~qkdtwin.interfaces.link_telemetry.parse_link_telemetry` refuses it: another
   ``schema_version``: ``version_mismatch`` (the offending version is recorded in
   :attr:`LinkStreamSnapshot.versions`); anything else (not JSON, not an object, a schema
   violation): ``malformed``;
3. the payload's ``module_id`` differs from the topic's: ``topic_mismatch``;
4. the module or link is not known (constructor): ``unknown_link``;
5. ``(module_id, seq)`` was released recently or is held in the reorder buffer:
   ``duplicate`` (QoS 1 redelivery);
6. ``seq`` is below the next expected one (its slot was released or skipped): ``late``;
7. otherwise ``accepted``: released now if it is the next expected ``seq`` (with any held
   successors), or held in the reorder buffer.

So ``offered = accepted + malformed + unknown_link + version_mismatch + duplicate + late +
topic_mismatch``. ``skewed`` and ``reordered`` flag accepted messages; ``lost`` counts
sequence numbers skipped, not messages; ``released`` counts messages handed out.

Reorder buffer (per module, depth ``reorder_depth`` D, default 8). A message past a gap is
held; the gap is waited for until D later messages are held or ``gap_timeout_intervals``
reporting intervals (default 2) have passed since the first of them was received, then it is
skipped and counted ``lost``. MQTT with a single publisher per topic and QoS 1 delivers in
order except around redelivery after a reconnect, so reordering is rare and shallow; D = 8
absorbs a burst of redeliveries while holding at most 8 intervals of data, and the 2-interval
timeout bounds the added latency when a message really is lost (well below the staleness
threshold of 3 intervals, so a gap never makes a live module look stale). The first message
of a module sets its baseline and is released at once.

Module restart. A ``seq`` below the expected one whose ``interval_start`` is at or after the
newest ``interval_end`` seen from the module is a restart of the module (its sequence began
again at 0), not a late message: held messages are released (gaps counted ``lost``), the
baseline is reset and ``restarts`` is counted.

Clock skew. ``offset = now - interval_end`` (s) is the time from the end of the interval, on
the module's clock, to its receipt, on the ingest's clock: the module's publish delay plus
broker latency plus the clock difference. With NTP-disciplined clocks (error of order 10 ms)
and a healthy broker (latency of order 10 ms) it stays well under a second; the default
tolerance of 5 s is far above that noise, so it flags a clock that is really off (an
unsynchronised module is usually minutes or hours off) or a backlog delivered seconds late,
without flagging ordinary jitter. A skewed message is **accepted and flagged**, not rejected:
its counts (sifted bits, errors, secret bits) are the module's measurements whatever its clock
says, and dropping them would make a link with a bad clock look dead and lose key accounting.
Ordering never uses timestamps (only ``seq``), so a bad clock cannot reorder the stream. The
flag is counted (``skewed``) and visible in :meth:`LinkStream.source_status`.

Staleness. A module is ``"stale"`` when more than ``stale_intervals`` (K, default 3) of its
reporting intervals have passed since its last accepted message (interval = median
``interval_end - interval_start`` of its recent messages), or when the upstream was reported
lost (:meth:`LinkStream.mark_upstream_lost`) after its last message; ``"never-seen"`` before
its first accepted message. One missing message is normal loss; three in a row is an outage.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from qkdtwin.errors import ConfigError
from qkdtwin.interfaces.link_telemetry import TOPIC_ROOT, LinkTelemetry, parse_link_telemetry

__all__ = [
    "DEFAULT_GAP_TIMEOUT_INTERVALS",
    "DEFAULT_REORDER_DEPTH",
    "DEFAULT_SKEW_TOLERANCE_S",
    "DEFAULT_STALE_INTERVALS",
    "LinkStream",
    "LinkStreamSnapshot",
    "Rejection",
    "SourceState",
    "SourceStatus",
    "StreamCounters",
    "perf_topic_module",
]

#: Reorder buffer depth per module (messages).
DEFAULT_REORDER_DEPTH = 8
#: A gap is skipped after this many reporting intervals.
DEFAULT_GAP_TIMEOUT_INTERVALS = 2.0
#: Largest accepted ``|now - interval_end|`` before a message is flagged skewed, s.
DEFAULT_SKEW_TOLERANCE_S = 5.0
#: A source is stale after this many reporting intervals without a message.
DEFAULT_STALE_INTERVALS = 3.0

SourceState = Literal["ok", "stale", "never-seen"]
RejectReason = Literal[
    "malformed", "unknown_link", "version_mismatch", "duplicate", "late", "topic_mismatch"
]

_ROOT_PARTS = TOPIC_ROOT.split("/")
_RELEASED_MEMORY = 256  # released seqs remembered per module for duplicate detection
_RECENT_REJECTIONS = 64
_MAX_DETAIL = 200


def perf_topic_module(topic: str) -> str | None:
    """Return the module ID of a ``qkdtwin/link/v1/<module_id>/perf`` topic, else ``None``."""
    parts = topic.split("/")
    if len(parts) != len(_ROOT_PARTS) + 2 or parts[: len(_ROOT_PARTS)] != _ROOT_PARTS:
        return None
    if parts[-1] != "perf" or not parts[-2]:
        return None
    return parts[-2]


@dataclass(frozen=True, slots=True)
class StreamCounters:
    """Counts of one module or of the whole stream (messages, except ``lost``).

    Attributes
    ----------
    accepted
        Messages that passed every check (released or held).
    released
        Messages handed out by :meth:`LinkStream.offer` or :meth:`LinkStream.tick`.
    malformed
        Not JSON, not an object, or a schema violation.
    unknown_link
        Valid messages of a module or link the stream does not know.
    version_mismatch
        Messages of another ``schema_version``.
    duplicate
        A ``(module_id, seq)`` already released or held.
    late
        ``seq`` below the next expected one and not a duplicate (its slot was skipped).
    skewed
        Accepted messages with ``|now - interval_end|`` above the tolerance.
    reordered
        Accepted messages that arrived after a higher ``seq`` of the same module.
    lost
        Sequence numbers skipped (never received in time).
    topic_mismatch
        Not a perf topic, or the payload's ``module_id`` differs from the topic's.
    restarts
        Module restarts detected (sequence began again).
    """

    accepted: int = 0
    released: int = 0
    malformed: int = 0
    unknown_link: int = 0
    version_mismatch: int = 0
    duplicate: int = 0
    late: int = 0
    skewed: int = 0
    reordered: int = 0
    lost: int = 0
    topic_mismatch: int = 0
    restarts: int = 0

    @property
    def rejected(self) -> int:
        """Messages refused, all reasons together."""
        return (
            self.malformed
            + self.unknown_link
            + self.version_mismatch
            + self.duplicate
            + self.late
            + self.topic_mismatch
        )


_COUNTER_NAMES = tuple(f.name for f in fields(StreamCounters))


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused message (kept for diagnosis: the most recent 64).

    Attributes
    ----------
    t
        Receive time, Unix s.
    module_id
        The module the topic names, if any.
    reason
        The counter it went to.
    detail
        One line: what was wrong.
    """

    t: float
    module_id: str | None
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class LinkStreamSnapshot:
    """Counters of a :class:`LinkStream` at one moment.

    Attributes
    ----------
    total
        Counters over every message offered.
    modules
        Counters per module ID, for messages attributable to a known module (refused messages
        whose topic names an unknown module count only in ``total``, so garbage cannot grow
        this mapping).
    versions
        Offending ``schema_version`` values (as JSON text, ``"2"``, ``"null"``) to counts.
    recent
        The most recent refusals, oldest first.
    offered
        Messages offered in total.
    """

    total: StreamCounters
    modules: dict[str, StreamCounters]
    versions: dict[str, int]
    recent: tuple[Rejection, ...]
    offered: int


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Health of one QKD module as seen by the stream.

    Attributes
    ----------
    module_id, link_id
        The module and its link (``None`` if never seen in link-set mode).
    status
        ``"ok"``, ``"stale"`` or ``"never-seen"``.
    last_receive_t
        Receive time of its last accepted message, Unix s.
    age_s
        ``now - last_receive_t``, s.
    interval_s
        Its reporting interval (median of recent ``interval_end - interval_start``), s.
    last_released_seq
        ``seq`` of the last released message.
    buffered
        Messages held in its reorder buffer.
    clock_offset_s
        ``now - interval_end`` of its last accepted message, s (receipt delay plus clock
        difference; negative: the module's clock is ahead).
    skewed
        Whether that offset exceeded the tolerance.
    """

    module_id: str
    link_id: str | None
    status: SourceState
    last_receive_t: float | None = None
    age_s: float | None = None
    interval_s: float | None = None
    last_released_seq: int | None = None
    buffered: int = 0
    clock_offset_s: float | None = None
    skewed: bool = False


class _Counts(Counter[str]):
    """Mutable counters of one module or of the stream (names of :class:`StreamCounters`)."""

    def add(self, name: str, n: int = 1) -> None:
        self[name] += n

    def frozen(self) -> StreamCounters:
        return StreamCounters(**{n: self[n] for n in _COUNTER_NAMES})


@dataclass
class _Module:
    link_id: str
    counts: _Counts = field(default_factory=_Counts)
    next_seq: int | None = None
    max_seq: int | None = None
    newest_end: float | None = None
    buffer: dict[int, tuple[LinkTelemetry, float]] = field(default_factory=dict)
    released: deque[int] = field(default_factory=lambda: deque(maxlen=_RELEASED_MEMORY))
    released_set: set[int] = field(default_factory=set)
    last_released: int | None = None
    last_t: float | None = None
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=9))
    offset: float | None = None
    skewed: bool = False

    def interval_s(self) -> float | None:
        return statistics.median(self.durations) if self.durations else None


class LinkStream:
    """Validate, de-duplicate and order link telemetry; track counters and staleness.

    Parameters
    ----------
    known
        The links the twin knows: a mapping ``module_id -> link_id`` (a message from another
        module, or naming another link, is ``unknown_link``), or an iterable of link IDs
        (any module may report for one of these links; modules are learnt from their first
        valid message).
    reorder_depth
        Messages held per module while waiting for a gap (>= 1).
    gap_timeout_intervals
        Reporting intervals a gap is waited for (> 0), counted from the receipt of the first
        message held behind it.
    skew_tolerance_s
        Largest ``|now - interval_end|`` not flagged as skewed, s (> 0).
    stale_intervals
        Reporting intervals without an accepted message after which a module is stale (> 0).
    max_modules
        Link-set mode: most modules learnt; a message of a further new module is
        ``unknown_link`` (forged module IDs cannot grow memory without bound).

    Raises
    ------
    ConfigError
        For a parameter out of range or an empty ``known``.

    Notes
    -----
    Not thread-safe: feed it from one thread (or under a lock). See the module docstring for
    the checks, the defaults and their reasons.
    """

    def __init__(
        self,
        known: Mapping[str, str] | Iterable[str],
        *,
        reorder_depth: int = DEFAULT_REORDER_DEPTH,
        gap_timeout_intervals: float = DEFAULT_GAP_TIMEOUT_INTERVALS,
        skew_tolerance_s: float = DEFAULT_SKEW_TOLERANCE_S,
        stale_intervals: float = DEFAULT_STALE_INTERVALS,
        max_modules: int = 4096,
    ) -> None:
        if isinstance(reorder_depth, bool) or not isinstance(reorder_depth, int):
            raise ConfigError("reorder_depth must be an integer", field="reorder_depth")
        if reorder_depth < 1:
            raise ConfigError(
                f"reorder_depth must be >= 1, got {reorder_depth}",
                field="reorder_depth",
                value=reorder_depth,
                allowed=">= 1",
            )
        for name, value in (
            ("gap_timeout_intervals", gap_timeout_intervals),
            ("skew_tolerance_s", skew_tolerance_s),
            ("stale_intervals", stale_intervals),
        ):
            if not (isinstance(value, int | float) and value > 0 and value < float("inf")):
                raise ConfigError(
                    f"{name} must be a finite number > 0, got {value!r}",
                    field=name,
                    value=value,
                    allowed="> 0",
                )
        self._map: dict[str, str] | None
        if isinstance(known, Mapping):
            self._map = {str(k): str(v) for k, v in known.items()}
            self._links = frozenset(self._map.values())
        else:
            if isinstance(known, str):
                raise ConfigError("known must be a mapping or an iterable of link IDs")
            self._map = None
            self._links = frozenset(str(x) for x in known)
        if not self._links:
            raise ConfigError("known must name at least one link", field="known")
        self.reorder_depth = reorder_depth
        self.gap_timeout_intervals = float(gap_timeout_intervals)
        self.skew_tolerance_s = float(skew_tolerance_s)
        self.stale_intervals = float(stale_intervals)
        self.max_modules = max_modules
        self._modules: dict[str, _Module] = {}
        if self._map is not None:
            self._modules = {m: _Module(link) for m, link in self._map.items()}
        self._total = _Counts()
        self._versions: dict[str, int] = {}
        self._recent: deque[Rejection] = deque(maxlen=_RECENT_REJECTIONS)
        self._offered = 0
        self._upstream_lost_at: float | None = None

    # -- feeding ---------------------------------------------------------------------------
    def offer(self, topic: str, payload: bytes, now: float) -> list[LinkTelemetry]:
        """Offer one MQTT message; return the messages released by it, in order.

        Gaps whose timeout passed by ``now`` (in any module) are skipped first, as by
        :meth:`tick`. Never raises for a bad message: it is counted and refused.

        Parameters
        ----------
        topic
            The MQTT topic it arrived on.
        payload
            The raw payload (UTF-8 JSON).
        now
            Receive time, Unix s (the ingest's clock).

        Returns
        -------
        list of LinkTelemetry
            Released messages: per module in ``seq`` order, without gaps except skipped ones.
        """
        out = self.tick(now)
        self._offered += 1
        out.extend(self._offer(topic, payload, now))
        return out

    def offer_many(self, messages: Iterable[tuple[str, bytes]], now: float) -> list[LinkTelemetry]:
        """Offer several ``(topic, payload)`` messages received at ``now``; return the released.

        The same as :meth:`offer` on each in turn, with the gap timeouts checked once (no gap
        can time out between messages of the same instant): one tick of a self-simulated
        network with 1,000 links costs one scan of the modules, not one per message.
        """
        return list(self.offer_each(messages, now))

    def offer_each(
        self, messages: Iterable[tuple[str, bytes]], now: float
    ) -> Iterator[LinkTelemetry]:
        """:meth:`offer_many`, yielding each released message as soon as it is released.

        A caller that uses each message and lets it go keeps one message alive at a time: with
        the whole tick's list (1,000 links: ~10,000 objects) alive until its end, the garbage
        collector promoted every message to its oldest generation, where it died a moment
        later and brought the next full collection closer. Consume it to the end: the
        messages not yet iterated over are not offered.
        """
        yield from self.tick(now)
        for topic, payload in messages:
            self._offered += 1
            yield from self._offer(topic, payload, now)

    def tick(self, now: float) -> list[LinkTelemetry]:
        """Skip the gaps whose timeout has passed by ``now``; return what that releases.

        Call it periodically when messages may stop arriving (a module that falls silent
        behind a gap would otherwise keep its held messages).
        """
        out: list[LinkTelemetry] = []
        for st in self._modules.values():
            while st.buffer:
                interval = st.interval_s()
                oldest = min(t for _m, t in st.buffer.values())
                if interval is None or now - oldest < self.gap_timeout_intervals * interval:
                    break
                out.extend(self._skip(st))
        return out

    def mark_upstream_lost(self, now: float) -> None:
        """Record that the transport lost its broker at ``now``.

        Every module is stale from then until its next accepted message.
        """
        self._upstream_lost_at = now

    def _bump(self, st: _Module, name: str, n: int) -> None:
        st.counts.add(name, n)
        self._total.add(name, n)

    def _reject(self, module: str | None, reason: RejectReason, detail: str, now: float) -> None:
        self._total.add(reason)
        if module is not None and module in self._modules:
            self._modules[module].counts.add(reason)
        self._recent.append(Rejection(now, module, reason, detail[:_MAX_DETAIL]))

    def _offer(self, topic: object, payload: object, now: float) -> list[LinkTelemetry]:
        topic_s = topic if isinstance(topic, str) else repr(topic)
        mid = perf_topic_module(topic_s)
        if mid is None:
            self._reject(None, "topic_mismatch", f"not a perf topic: {topic_s!r}", now)
            return []
        src = mid if mid in self._modules else None
        try:
            if not isinstance(payload, bytes | bytearray | str):
                raise ConfigError("payload is not bytes", field="payload")
            msg = parse_link_telemetry(
                bytes(payload) if isinstance(payload, bytearray) else payload
            )
        except ConfigError as exc:
            if exc.field == "schema_version":
                try:
                    key = json.dumps(exc.value)
                except (TypeError, ValueError):
                    key = repr(exc.value)
                self._versions[key] = self._versions.get(key, 0) + 1
                self._reject(src, "version_mismatch", f"schema_version {key}", now)
            else:
                self._reject(src, "malformed", str(exc), now)
            return []
        except Exception as exc:  # parse_link_telemetry promises ConfigError; be safe anyway
            self._reject(src, "malformed", f"{type(exc).__name__}: {exc}", now)
            return []
        if msg.module_id != mid:
            self._reject(
                src, "topic_mismatch", f"topic names {mid!r}, payload {msg.module_id!r}", now
            )
            return []
        if self._map is not None:
            expected = self._map.get(mid)
            if expected != msg.link_id:
                why = "unknown module" if expected is None else f"module belongs to {expected!r}"
                self._reject(src, "unknown_link", f"link {msg.link_id!r}: {why}", now)
                return []
        elif msg.link_id not in self._links:
            self._reject(src, "unknown_link", f"unknown link {msg.link_id!r}", now)
            return []
        st = self._modules.get(mid)
        if st is None:
            if len(self._modules) >= self.max_modules:
                self._reject(None, "unknown_link", f"module {mid!r}: max_modules reached", now)
                return []
            st = self._modules[mid] = _Module(msg.link_id)
        return self._sequence(mid, st, msg, now)

    def _sequence(
        self, mid: str, st: _Module, msg: LinkTelemetry, now: float
    ) -> list[LinkTelemetry]:
        out: list[LinkTelemetry] = []
        s = msg.seq
        if (
            st.next_seq is not None
            and s < st.next_seq
            and st.newest_end is not None
            and msg.interval_start >= st.newest_end
        ):
            # A restart: the sequence began again, on later intervals. Flush and rebase.
            while st.buffer:
                out.extend(self._skip(st))
            st.next_seq = st.max_seq = st.newest_end = st.last_released = None
            st.released.clear()
            st.released_set.clear()
            self._bump(st, "restarts", 1)
        if s in st.buffer or s in st.released_set:
            self._reject(mid, "duplicate", f"seq {s} already received", now)
            return out
        if st.next_seq is not None and s < st.next_seq:
            self._reject(mid, "late", f"seq {s} < next expected {st.next_seq}", now)
            return out
        # Accepted.
        self._bump(st, "accepted", 1)
        st.last_t = now
        st.durations.append(msg.duration_s)
        st.offset = now - msg.interval_end
        st.skewed = abs(st.offset) > self.skew_tolerance_s
        if st.skewed:
            self._bump(st, "skewed", 1)
        if st.max_seq is not None and s < st.max_seq:
            self._bump(st, "reordered", 1)
        st.max_seq = s if st.max_seq is None else max(st.max_seq, s)
        st.newest_end = (
            msg.interval_end if st.newest_end is None else max(st.newest_end, msg.interval_end)
        )
        if st.next_seq is None:
            st.next_seq = s
        st.buffer[s] = (msg, now)
        out.extend(self._drain(st))
        if len(st.buffer) >= self.reorder_depth:
            out.extend(self._skip(st))
        return out

    def _drain(self, st: _Module) -> list[LinkTelemetry]:
        out: list[LinkTelemetry] = []
        assert st.next_seq is not None
        while st.next_seq in st.buffer:
            msg, _t = st.buffer.pop(st.next_seq)
            out.append(msg)
            if len(st.released) == st.released.maxlen:
                st.released_set.discard(st.released[0])
            st.released.append(st.next_seq)
            st.released_set.add(st.next_seq)
            st.last_released = st.next_seq
            st.next_seq += 1
        self._bump(st, "released", len(out))
        return out

    def _skip(self, st: _Module) -> list[LinkTelemetry]:
        """Give up the gap before the lowest held message; release what follows."""
        assert st.next_seq is not None
        assert st.buffer
        lowest = min(st.buffer)
        lost = lowest - st.next_seq
        self._bump(st, "lost", lost)
        st.next_seq = lowest
        return self._drain(st)

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self, *, modules: bool = True) -> LinkStreamSnapshot:
        """Return the counters (total and per module), offending versions, recent refusals.

        ``modules=False`` leaves the per-module counters out (empty): a state built every
        interval at 1,000 links needs only the totals.
        """
        return LinkStreamSnapshot(
            total=self._total.frozen(),
            modules=(
                {m: st.counts.frozen() for m, st in sorted(self._modules.items())}
                if modules
                else {}
            ),
            versions=dict(self._versions),
            recent=tuple(self._recent),
            offered=self._offered,
        )

    @property
    def modules(self) -> tuple[str, ...]:
        """The known module IDs (configured, or learnt in link-set mode), sorted."""
        return tuple(sorted(self._modules))

    def source_status(self, module_id: str, now: float) -> SourceStatus:
        """Return the health of one module at ``now``.

        ``.status`` is ``"ok"``, ``"stale"`` or ``"never-seen"``; the other fields say why.

        Raises
        ------
        ConfigError
            In mapping mode, for a module that is not configured. (In link-set mode an
            unknown module is simply ``"never-seen"``.)
        """
        st = self._modules.get(module_id)
        if st is None:
            if self._map is not None:
                raise ConfigError(
                    f"unknown module {module_id!r}", field="module_id", value=module_id
                )
            return SourceStatus(module_id, None, "never-seen")
        if st.last_t is None:
            return SourceStatus(module_id, st.link_id, "never-seen")
        interval = st.interval_s()
        age = now - st.last_t
        stale = (interval is not None and age > self.stale_intervals * interval) or (
            self._upstream_lost_at is not None and st.last_t <= self._upstream_lost_at
        )
        return SourceStatus(
            module_id=module_id,
            link_id=st.link_id,
            status="stale" if stale else "ok",
            last_receive_t=st.last_t,
            age_s=age,
            interval_s=interval,
            last_released_seq=st.last_released,
            buffered=len(st.buffer),
            clock_offset_s=st.offset,
            skewed=st.skewed,
        )

    def statuses(self, now: float) -> dict[str, SourceStatus]:
        """Return :meth:`source_status` of every known module, by module ID."""
        return {m: self.source_status(m, now) for m in self.modules}

    def stale_sources(self, now: float) -> list[str]:
        """Return the module IDs that are ``"stale"`` at ``now`` (sorted)."""
        return [m for m, s in self.statuses(now).items() if s.status == "stale"]
