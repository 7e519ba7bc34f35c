"""Attach-mode ingest: the twin's state from what a real network exposes, and nothing else.

Three inputs, each robust to bad data (a malformed, unknown, duplicated, late or skewed
message, or a silent KME, is counted and never stops the twin):

* link telemetry of the QKD modules over MQTT (``qkdtwin/link/v1/<module_id>/perf``):
  :class:`LinkStream` validates, de-duplicates and orders it and tracks each module's
  staleness;
* the clear metadata of the IIoT envelopes over MQTT (topics and record headers):
  :class:`IotMetadataStream`; and, only when the attach file grants the twin an aggregator SAE
  identity, the decrypted readings: :class:`IotReadings`;
* the KMEs' operator endpoint ``GET /kme/v1/links`` over mutual TLS: :class:`KmePoller`.

:class:`MqttIngest` subscribes to both MQTT trees, :class:`IngestRouter` feeds the stages,
:class:`Recorder` writes every input with its receive time and :class:`Replayer` plays a
recording back, deterministically, because every stage takes the receive time explicitly.
"""

from __future__ import annotations

from qkdtwin.twin.ingest.iot_readings import DeviceReading, IotReadings
from qkdtwin.twin.ingest.iot_stream import (
    EdgeMetadata,
    IotHealth,
    IotMetadataSnapshot,
    IotMetadataStream,
    SenderMetadata,
)
from qkdtwin.twin.ingest.kme_poller import (
    LINKS_PATH,
    MAX_POLLS_PER_S,
    KmeEndpoint,
    KmeKeyCounts,
    KmeLinkCounters,
    KmeLinksResponse,
    KmePoller,
    KmePollResult,
    KmeState,
    PollErrorKind,
    RawPoll,
    poll_schedule,
    poll_slots,
)
from qkdtwin.twin.ingest.link_stream import (
    DEFAULT_GAP_TIMEOUT_INTERVALS,
    DEFAULT_REORDER_DEPTH,
    DEFAULT_SKEW_TOLERANCE_S,
    DEFAULT_STALE_INTERVALS,
    LinkStream,
    LinkStreamSnapshot,
    Rejection,
    SourceState,
    SourceStatus,
    StreamCounters,
    perf_topic_module,
)
from qkdtwin.twin.ingest.mqtt_source import (
    DEFAULT_TOPICS,
    ConnectionState,
    MqttIngest,
    MqttIngestStats,
    ingest_topics,
)
from qkdtwin.twin.ingest.record import (
    BadLine,
    Record,
    Recorder,
    RecordLog,
    Replayer,
    read_records,
)
from qkdtwin.twin.ingest.router import IngestRouter, RouterStats

__all__ = [
    "DEFAULT_GAP_TIMEOUT_INTERVALS",
    "DEFAULT_REORDER_DEPTH",
    "DEFAULT_SKEW_TOLERANCE_S",
    "DEFAULT_STALE_INTERVALS",
    "DEFAULT_TOPICS",
    "LINKS_PATH",
    "MAX_POLLS_PER_S",
    "BadLine",
    "ConnectionState",
    "DeviceReading",
    "EdgeMetadata",
    "IngestRouter",
    "IotHealth",
    "IotMetadataSnapshot",
    "IotMetadataStream",
    "IotReadings",
    "KmeEndpoint",
    "KmeKeyCounts",
    "KmeLinkCounters",
    "KmeLinksResponse",
    "KmePollResult",
    "KmePoller",
    "KmeState",
    "LinkStream",
    "LinkStreamSnapshot",
    "MqttIngest",
    "MqttIngestStats",
    "PollErrorKind",
    "RawPoll",
    "Record",
    "RecordLog",
    "Recorder",
    "Rejection",
    "Replayer",
    "RouterStats",
    "SenderMetadata",
    "SourceState",
    "SourceStatus",
    "StreamCounters",
    "ingest_topics",
    "perf_topic_module",
    "poll_schedule",
    "poll_slots",
    "read_records",
]
