"""The live digital twin: one service over links, KMEs, key pools, IIoT devices and alarms.

Recipes: :class:`Twin` (the live model; ``step()``, ``attack()``, ``clear()``, ``what_if()``,
``state()``), :func:`create_app` (its FastAPI service and dashboard), :func:`load_twin_scenario`
(scenario files). See ``docs/twin.md``.
"""

from __future__ import annotations

from qkdtwin.twin.alarms import Alarm, AlarmLog
from qkdtwin.twin.config import (
    LinkPhysics,
    TwinScenario,
    TwinSettings,
    default_scenario_path,
    load_twin_scenario,
)
from qkdtwin.twin.keynet import KeyNetwork, topology_without
from qkdtwin.twin.links import ATTACK_TYPES, Block, LinkEngine, link_id, make_attack, windowed_qber
from qkdtwin.twin.loop import TelemetryComponent, Twin
from qkdtwin.twin.runner import EventListener, ServiceThread, run_tour
from qkdtwin.twin.service import create_app
from qkdtwin.twin.state import History, TwinDatabase
from qkdtwin.twin.whatif import WHATIF_PARAMS, parse_sets, what_if

__all__ = [
    "ATTACK_TYPES",
    "WHATIF_PARAMS",
    "Alarm",
    "AlarmLog",
    "Block",
    "EventListener",
    "History",
    "KeyNetwork",
    "LinkEngine",
    "LinkPhysics",
    "ServiceThread",
    "TelemetryComponent",
    "Twin",
    "TwinDatabase",
    "TwinScenario",
    "TwinSettings",
    "create_app",
    "default_scenario_path",
    "link_id",
    "load_twin_scenario",
    "make_attack",
    "parse_sets",
    "run_tour",
    "topology_without",
    "what_if",
    "windowed_qber",
]
