"""Quantum-secured IIoT telemetry: hybrid QKD + ML-KEM keys, fixed and mobile schemes, MQTT.

Recipes: :class:`TelemetrySession` with :class:`TelemetryConfig` (devices -> gateway -> MQTT ->
aggregator), key supplies :class:`DevKmePair` (real ETSI GS QKD 014 KMEs on loopback) and
:class:`LocalKeyPair` (in process), :class:`GatedKeySource` to cut a key supply,
:class:`SharedFleet` to step the devices of many sessions as one fleet. Lower level:
:mod:`qkdtwin.iot.keys` (key hierarchy), :mod:`qkdtwin.iot.envelope` (wire format),
:mod:`qkdtwin.iot.devices`, :mod:`qkdtwin.iot.gateway`, :mod:`qkdtwin.iot.aggregator`,
:mod:`qkdtwin.iot.transport`. The optional Sparkplug B 3.0 mode
(``TelemetryConfig(topic_style="sparkplug")``, extra ``qkdtwin[sparkplug]``):
:mod:`qkdtwin.iot.sparkplug` (topics, protobuf codec, ``seq``), :class:`SparkplugEdgeNode`
(the publishing side) and :class:`SparkplugHost` / :class:`SparkplugReceiver` (the receiving
side). See ``docs/iot.md``.
"""

from __future__ import annotations

from qkdtwin.extras import require_extra

require_extra("kms", "iot", what="qkdtwin.iot")

from qkdtwin.iot.aggregator import Aggregator  # noqa: E402
from qkdtwin.iot.devices import KINDS, DeviceFleet, Reading  # noqa: E402
from qkdtwin.iot.envelope import Header, ReplayWindow, Sealer, open_envelope, seal_envelope  # noqa: E402
from qkdtwin.iot.fleet_share import FleetPart, SharedFleet  # noqa: E402
from qkdtwin.iot.gateway import EdgeGateway  # noqa: E402
from qkdtwin.iot.key_derivation import EpochKeys, derive_master_key, derive_sender_key  # noqa: E402
from qkdtwin.iot.key_sources import (  # noqa: E402
    DevKmePair,
    GatedKeySource,
    KmeKeySource,
    LocalKeyPair,
    QkdKeySource,
    StoreKeySource,
)
from qkdtwin.iot.latest import LatestReadings  # noqa: E402
from qkdtwin.iot.session import IntervalReport, TelemetryConfig, TelemetrySession  # noqa: E402
from qkdtwin.iot.sparkplug_edge import SparkplugEdgeNode  # noqa: E402
from qkdtwin.iot.sparkplug_host import SparkplugHost, SparkplugReceiver  # noqa: E402
from qkdtwin.iot.transport import EmbeddedBroker, MemoryBus, MqttTransport  # noqa: E402

__all__ = [
    "KINDS",
    "Aggregator",
    "DevKmePair",
    "DeviceFleet",
    "EdgeGateway",
    "EmbeddedBroker",
    "EpochKeys",
    "FleetPart",
    "GatedKeySource",
    "Header",
    "IntervalReport",
    "KmeKeySource",
    "LatestReadings",
    "LocalKeyPair",
    "MemoryBus",
    "MqttTransport",
    "QkdKeySource",
    "Reading",
    "ReplayWindow",
    "Sealer",
    "SharedFleet",
    "SparkplugEdgeNode",
    "SparkplugHost",
    "SparkplugReceiver",
    "StoreKeySource",
    "TelemetryConfig",
    "TelemetrySession",
    "derive_master_key",
    "derive_sender_key",
    "open_envelope",
    "seal_envelope",
]
