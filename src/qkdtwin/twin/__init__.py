"""The live digital twin: one service over links, KMEs, key pools, IIoT devices and alarms.

Two modes. *Attached* (the digital twin proper): :class:`AttachedTwin` builds its state only
from what a network exposes (link telemetry, IIoT metadata, KME operator polls), estimates each
link with :class:`LinkEstimator` and watches it with :class:`LinkDetector`;
:class:`AttachedRunner` runs it live from an attach file (:func:`load_attach_file`),
:func:`replay` from a recording, :func:`create_attached_app` serves it. *Self-simulated*
(teaching, what-if): :class:`Twin` (``step()``, ``attack()``, ``clear()``, ``what_if()``,
``state()``), :func:`create_twin_app`, :func:`load_twin_scenario`. See ``docs/twin.md`` and
``docs/plant.md``.
"""

from __future__ import annotations

from qkdtwin.extras import require_extra

require_extra("kms", "iot", "twin", what="qkdtwin.twin")

from qkdtwin.twin.alarms import Alarm, AlarmLog  # noqa: E402
from qkdtwin.twin.attach import AttachFile, load_attach_file  # noqa: E402
from qkdtwin.twin.attached import AttachedTwin  # noqa: E402
from qkdtwin.twin.attached_runner import AttachedRunner, replay  # noqa: E402
from qkdtwin.twin.attached_service import create_attached_app  # noqa: E402
from qkdtwin.twin.config import (  # noqa: E402
    LinkPhysics,
    TwinScenario,
    TwinSettings,
    default_scenario_path,
    load_twin_scenario,
)
from qkdtwin.twin.detect import DetectionAlarm, DetectorConfig, LinkDetector  # noqa: E402
from qkdtwin.twin.estimate import IntervalObservation, LinkEstimate, LinkEstimator, fit_link  # noqa: E402
from qkdtwin.twin.keynet import KeyNetwork, topology_without  # noqa: E402
from qkdtwin.twin.links import ATTACK_TYPES, Block, LinkEngine, link_id, make_attack, windowed_qber  # noqa: E402
from qkdtwin.twin.loop import TelemetryComponent, Twin  # noqa: E402
from qkdtwin.twin.models import AlarmView, AttachedState, LinkStatus, LinkView  # noqa: E402
from qkdtwin.twin.runner import EventListener, ServiceThread, run_tour  # noqa: E402
from qkdtwin.twin.service import create_twin_app  # noqa: E402
from qkdtwin.twin.state import History, TwinDatabase  # noqa: E402
from qkdtwin.twin.whatif import WHATIF_PARAMS, parse_sets, what_if  # noqa: E402

__all__ = [
    "ATTACK_TYPES",
    "WHATIF_PARAMS",
    "Alarm",
    "AlarmLog",
    "AlarmView",
    "AttachFile",
    "AttachedRunner",
    "AttachedState",
    "AttachedTwin",
    "Block",
    "DetectionAlarm",
    "DetectorConfig",
    "EventListener",
    "History",
    "IntervalObservation",
    "KeyNetwork",
    "LinkDetector",
    "LinkEngine",
    "LinkEstimate",
    "LinkEstimator",
    "LinkPhysics",
    "LinkStatus",
    "LinkView",
    "ServiceThread",
    "TelemetryComponent",
    "Twin",
    "TwinDatabase",
    "TwinScenario",
    "TwinSettings",
    "create_attached_app",
    "create_twin_app",
    "default_scenario_path",
    "fit_link",
    "link_id",
    "load_attach_file",
    "load_twin_scenario",
    "make_attack",
    "parse_sets",
    "replay",
    "run_tour",
    "topology_without",
    "what_if",
    "windowed_qber",
]


def __getattr__(name: str) -> object:
    """``create_app``: the old name of :func:`create_twin_app`, deprecated.

    It clashed with :func:`qkdtwin.kms.create_app` (a KME's REST API).
    """
    if name == "create_app":
        import warnings

        warnings.warn(
            "qkdtwin.twin.create_app is deprecated: use create_twin_app",
            DeprecationWarning,
            stacklevel=2,
        )
        return create_twin_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
