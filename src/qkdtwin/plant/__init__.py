"""The plant: a stand-in for the QKD-secured IIoT network an operator owns, with hidden truth.

Recipes: :class:`Plant` (the live process: QKD modules, KMEs, IIoT devices, control endpoint;
``qkdtwin plant serve``), :func:`load_plant_scenario` (scenario files with a ``plant:``
section), :class:`QkdModule` (one link's module), and the physics of
:mod:`qkdtwin.plant.physics` (exact per-interval count laws under attacks). See
``docs/plant.md``.
"""

from __future__ import annotations

from qkdtwin.extras import require_extra

require_extra("kms", "iot", what="qkdtwin.plant")

from qkdtwin.plant.control import LinkTruth, PlantTruth, create_control_app  # noqa: E402
from qkdtwin.plant.module import IntervalTruth, QkdModule  # noqa: E402
from qkdtwin.plant.physics import (  # noqa: E402
    ATTACK_KINDS,
    IntervalCounts,
    IntervalLaw,
    MonitorParams,
    PlantAttack,
    TrueLinkParams,
    draw_interval,
    draw_intervals,
    interval_law,
    module_secret_bits,
)
from qkdtwin.plant.runner import Plant, module_id_for  # noqa: E402
from qkdtwin.plant.scenario import (  # noqa: E402
    DriftSpec,
    EventSpec,
    LinkTruthSpec,
    PlantScenario,
    PlantSettings,
    load_plant_scenario,
)

__all__ = [
    "ATTACK_KINDS",
    "DriftSpec",
    "EventSpec",
    "IntervalCounts",
    "IntervalLaw",
    "IntervalTruth",
    "LinkTruth",
    "LinkTruthSpec",
    "MonitorParams",
    "Plant",
    "PlantAttack",
    "PlantScenario",
    "PlantSettings",
    "PlantTruth",
    "QkdModule",
    "TrueLinkParams",
    "create_control_app",
    "draw_interval",
    "draw_intervals",
    "interval_law",
    "load_plant_scenario",
    "module_id_for",
    "module_secret_bits",
]
