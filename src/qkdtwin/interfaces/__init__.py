"""The interfaces the physical network speaks to the twin: link telemetry over MQTT.

See :mod:`qkdtwin.interfaces.link_telemetry` (schema, topics, validation) and
``docs/plant.md``.
"""

from __future__ import annotations

from qkdtwin.interfaces.link_telemetry import (
    SCHEMA_VERSION,
    TOPIC_ROOT,
    DetectorMonitor,
    IntensityCounts,
    LinkTelemetry,
    PhysPerf,
    QkdlPerformance,
    json_schema,
    parse_link_telemetry,
    perf_topic,
    schema_path,
    state_topic,
)

__all__ = [
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "DetectorMonitor",
    "IntensityCounts",
    "LinkTelemetry",
    "PhysPerf",
    "QkdlPerformance",
    "json_schema",
    "parse_link_telemetry",
    "perf_topic",
    "schema_path",
    "state_topic",
]
