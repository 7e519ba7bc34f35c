"""Gluing the ingest stages together: :class:`IngestRouter`.

The router is the ``on_payload``/``on_state`` target of an
:class:`~qkdtwin.twin.ingest.mqtt_source.MqttIngest` (or of a
:class:`~qkdtwin.twin.ingest.record.Replayer`): it records every message, sends link
telemetry to the :class:`~qkdtwin.twin.ingest.link_stream.LinkStream`, IIoT traffic
(``qkdtwin/v1/...`` or Sparkplug B ``spBv1.0/...``) to the
:class:`~qkdtwin.twin.ingest.iot_stream.IotMetadataStream`, and queues the released link
telemetry for the twin (:meth:`IngestRouter.drain`). When the MQTT connection is lost it marks
every link source stale. It serialises the stages with one lock (MQTT callbacks arrive on
paho's thread) and never raises from a callback.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from qkdtwin.interfaces.link_telemetry import TOPIC_ROOT as LINK_TOPIC_ROOT
from qkdtwin.interfaces.link_telemetry import LinkTelemetry
from qkdtwin.iot.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE
from qkdtwin.iot.transport import TOPIC_ROOT as IOT_TOPIC_ROOT
from qkdtwin.twin.ingest.iot_stream import IotMetadataStream
from qkdtwin.twin.ingest.link_stream import LinkStream
from qkdtwin.twin.ingest.record import Record, Recorder

__all__ = ["IngestRouter", "RouterStats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouterStats:
    """Counters of an :class:`IngestRouter`.

    Attributes
    ----------
    link_messages, state_messages, iot_messages, other_messages
        Messages routed to the link stream, link birth/death messages (not used yet), IIoT
        messages, and messages of no known tree.
    record_errors
        Messages that could not be recorded (disk full...).
    dropped
        Released telemetry dropped because the queue was full (nobody drained it).
    """

    link_messages: int
    state_messages: int
    iot_messages: int
    other_messages: int
    record_errors: int
    dropped: int


class IngestRouter:
    """Route MQTT payloads to the ingest stages; record them; queue the released telemetry.

    Parameters
    ----------
    links
        The link-telemetry stage.
    iot
        The IIoT metadata stage (``None``: IIoT messages are only counted).
    recorder
        Where to record every payload (``None``: no recording).
    on_telemetry
        Called (under the router's lock) with the messages each payload released, instead
        of queueing them.
    max_queue
        Most released messages kept for :meth:`drain`; older ones are dropped and counted.
    """

    def __init__(
        self,
        links: LinkStream,
        iot: IotMetadataStream | None = None,
        *,
        recorder: Recorder | None = None,
        on_telemetry: Callable[[list[LinkTelemetry]], None] | None = None,
        max_queue: int = 100_000,
    ) -> None:
        self.links = links
        self.iot = iot
        self.recorder = recorder
        self._on_telemetry = on_telemetry
        self._queue: deque[LinkTelemetry] = deque()
        self._max_queue = max_queue
        self.lock = threading.Lock()
        self._link = self._state = self._iot = self._other = 0
        self._record_errors = self._dropped = 0

    def on_payload(self, topic: str, payload: bytes, t: float) -> None:
        """Record and route one message received at ``t`` (Unix s); never raises."""
        with self.lock:
            if self.recorder is not None:
                try:
                    self.recorder.record_mqtt(topic, payload, t)
                except Exception as exc:
                    self._record_errors += 1
                    log.warning("cannot record a message: %s", exc)
            self._route(topic, payload, t)

    def _route(self, topic: str, payload: bytes, t: float) -> None:
        try:
            if topic.startswith(LINK_TOPIC_ROOT + "/"):
                if topic.endswith("/state"):
                    self._state += 1
                    return
                self._link += 1
                released = self.links.offer(topic, payload, t)
                self._release(released)
            elif topic.startswith((IOT_TOPIC_ROOT + "/", SPARKPLUG_NAMESPACE + "/")):
                self._iot += 1
                if self.iot is not None:
                    self.iot.offer(topic, payload, t)
            else:
                self._other += 1
        except Exception:  # the stages never raise on input; a bug must not stop the ingest
            log.exception("ingest stage failed on a message of %r", topic)

    def _release(self, released: list[LinkTelemetry]) -> None:
        if not released:
            return
        if self._on_telemetry is not None:
            self._on_telemetry(released)
            return
        self._queue.extend(released)
        while len(self._queue) > self._max_queue:
            self._queue.popleft()
            self._dropped += 1

    def on_state(self, state: str, t: float) -> None:
        """Take the MQTT source's connection state: anything but connected marks sources stale."""
        if state != "connected":
            with self.lock:
                self.links.mark_upstream_lost(t)

    def tick(self, now: float) -> None:
        """Skip timed-out gaps of the link stream (call it periodically)."""
        with self.lock:
            self._release(self.links.tick(now))

    def drain(self) -> list[LinkTelemetry]:
        """Return and forget the released link telemetry queued so far."""
        with self.lock:
            out = list(self._queue)
            self._queue.clear()
            return out

    def replay(self, records: Iterable[Record]) -> int:
        """Route recorded MQTT records (without recording them again); return how many."""
        n = 0
        for rec in records:
            if rec.kind == "mqtt" and rec.topic is not None and rec.payload is not None:
                with self.lock:
                    self._route(rec.topic, rec.payload, rec.t)
                n += 1
        return n

    def stats(self) -> RouterStats:
        """Return the counters."""
        with self.lock:
            return RouterStats(
                self._link, self._state, self._iot, self._other, self._record_errors, self._dropped
            )
