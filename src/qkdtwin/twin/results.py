"""Typed shapes of the IIoT telemetry results shared by the live twin and its telemetry layer.

They are :class:`~typing.TypedDict` s: at run time plain dicts (JSON as they are), to the type
checker the exact keys. The other results are typed next to the code that builds them
(:mod:`qkdtwin.twin.loop`, :mod:`qkdtwin.twin.alarms`, :mod:`qkdtwin.twin.whatif`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NotRequired, Required, TypedDict, final

__all__ = [
    "DeviceReading",
    "TelemetryCounts",
    "TelemetryOff",
    "TelemetryOn",
    "TelemetryReport",
    "TelemetrySummary",
]


class DeviceReading(TypedDict):
    """The latest verified reading of one IIoT device, and its health."""

    device_id: str
    gateway: str
    kind: str
    t: float
    values: dict[str, float]
    health: str


class TelemetryCounts(TypedDict, total=False):
    """One telemetry interval's counts, summed over the gateways.

    A telemetry component reports all of them, or only ``error`` when its interval failed
    (a third-party component may report fewer).
    """

    sessions: int
    sent: int
    delivered: int
    decrypt_failures: int
    queued: int
    qkd_key_bits_consumed: int
    rejected: dict[str, int]
    dropped: dict[str, int]
    key_failures: dict[str, int]
    gateways_cut: int
    aggregator: str
    errors: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    error: str


class TelemetryReport(TelemetryCounts, total=False):
    """What a telemetry component returns for one interval: the counts and ``devices``."""

    #: Device ID -> its latest reading (a plain dict, or a mapping that builds each reading
    #: when asked, as :class:`~qkdtwin.twin.device_table.DeviceTable` does).
    devices: Mapping[str, DeviceReading]


@final
class TelemetryOff(TypedDict):
    """The twin runs without IIoT telemetry (``reason``: when the IIoT layer is missing)."""

    enabled: Literal[False]
    reason: NotRequired[str]


class TelemetryOn(TelemetryCounts, total=False):
    """The twin runs IIoT telemetry: the last interval's counts (none before the first)."""

    enabled: Required[Literal[True]]


#: The telemetry part of the twin's state.
TelemetrySummary = TelemetryOff | TelemetryOn
