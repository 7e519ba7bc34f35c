"""IIoT devices in the twin: encrypted telemetry from :mod:`qkdtwin.iot`, keys from the twin's KMEs.

The twin consumes the IIoT layer through one narrow interface, :class:`TelemetryComponent`
(``run_interval(twin) -> summary``): every tick it runs one telemetry interval and stores the
interval's report (sent, delivered, decrypt failures, rejections, latency, and the latest
reading and health of every device) in its state. :func:`build_telemetry` builds the component
from the scenario when :mod:`qkdtwin.iot` is installed, and returns ``None`` (telemetry off,
shown as such on the dashboard) when it is not.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qkdtwin.twin.loop import TelemetryComponent, Twin

__all__ = ["build_telemetry", "iot_available"]


def iot_available() -> bool:
    """Return whether :mod:`qkdtwin.iot` is installed and offers the telemetry session."""
    if importlib.util.find_spec("qkdtwin.iot") is None:
        return False
    try:
        from qkdtwin.iot import TelemetryConfig, TelemetrySession  # noqa: F401
    except ImportError:
        return False
    return True


def build_telemetry(twin: Twin) -> TelemetryComponent | None:
    """Build the telemetry component of ``twin`` (``None`` when :mod:`qkdtwin.iot` is absent)."""
    if not iot_available():
        twin.telemetry_summary = {
            "enabled": False,
            "reason": "qkdtwin.iot (TelemetrySession) is not available",
        }
        return None
    from qkdtwin.twin.telemetry import IotTelemetry

    return IotTelemetry(twin)
