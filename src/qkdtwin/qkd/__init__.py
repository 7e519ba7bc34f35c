"""Physical layer and protocols of QKD links.

Build a link with :func:`build_link_model` (or from the parts: a source, a
:class:`FiberChannel`, a :class:`ThresholdDetector`), then either simulate it pulse by pulse
with :func:`simulate_link` or ask for its analytic key rate with :func:`analytic_key_rate`.

Examples
--------
>>> import numpy as np
>>> from qkdtwin.qkd import build_link_model, simulate_link, analytic_key_rate
>>> model = build_link_model("decoy-bb84", 50.0, "gys")
>>> analytic_key_rate("decoy-bb84", model).rate_per_pulse > 0
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qkdtwin.qkd.attacks import (
        Attack,
        InterceptResend,
        NoAttack,
        PhotonNumberSplitting,
        parse_attack,
    )
    from qkdtwin.qkd.channel import FiberChannel, db_to_transmittance, transmittance_to_db
    from qkdtwin.qkd.detector import ThresholdDetector
    from qkdtwin.qkd.keyrate import (
        CvParameters,
        KeyRate,
        analytic_key_rate,
        binary_entropy,
        max_distance,
        plob_bound,
    )
    from qkdtwin.qkd.link import LinkResult, simulate_link
    from qkdtwin.qkd.model import LinkModel, build_link_model
    from qkdtwin.qkd.presets import PRESETS, Preset, get_preset
    from qkdtwin.qkd.protocols import ALL_PROTOCOLS, SIMULATED_PROTOCOLS, canonical_protocol
    from qkdtwin.qkd.source import EntangledPairSource, SinglePhotonSource, WeakCoherentSource
    from qkdtwin.qkd.statistics import EntangledStats, PrepareMeasureStats

#: Where each public name lives. The package imports a module on first use of one of its
#: names, so that ``qkdtwin link rate`` never loads the pulse-by-pulse engine or the attacks.
_EXPORTS = {
    "qkdtwin.qkd.attacks": (
        "Attack",
        "InterceptResend",
        "NoAttack",
        "PhotonNumberSplitting",
        "parse_attack",
    ),
    "qkdtwin.qkd.channel": ("FiberChannel", "db_to_transmittance", "transmittance_to_db"),
    "qkdtwin.qkd.detector": ("ThresholdDetector",),
    "qkdtwin.qkd.keyrate": (
        "CvParameters",
        "KeyRate",
        "analytic_key_rate",
        "binary_entropy",
        "max_distance",
        "plob_bound",
    ),
    "qkdtwin.qkd.link": ("LinkResult", "simulate_link"),
    "qkdtwin.qkd.model": ("LinkModel", "build_link_model"),
    "qkdtwin.qkd.presets": ("PRESETS", "Preset", "get_preset"),
    "qkdtwin.qkd.protocols": ("ALL_PROTOCOLS", "SIMULATED_PROTOCOLS", "canonical_protocol"),
    "qkdtwin.qkd.source": ("EntangledPairSource", "SinglePhotonSource", "WeakCoherentSource"),
    "qkdtwin.qkd.statistics": ("EntangledStats", "PrepareMeasureStats"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
#: Submodules that an ``import qkdtwin.qkd`` used to load, still reachable as attributes.
_SUBMODULES = frozenset(
    {
        "attacks",
        "channel",
        "detection",
        "detector",
        "keyrate",
        "link",
        "model",
        "presets",
        "protocols",
        "sampling",
        "source",
        "statistics",
    }
)


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule) of :mod:`qkdtwin.qkd` on first use."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ALL_PROTOCOLS",
    "PRESETS",
    "SIMULATED_PROTOCOLS",
    "Attack",
    "CvParameters",
    "EntangledPairSource",
    "EntangledStats",
    "FiberChannel",
    "InterceptResend",
    "KeyRate",
    "LinkModel",
    "LinkResult",
    "NoAttack",
    "PhotonNumberSplitting",
    "PrepareMeasureStats",
    "Preset",
    "SinglePhotonSource",
    "ThresholdDetector",
    "WeakCoherentSource",
    "analytic_key_rate",
    "binary_entropy",
    "build_link_model",
    "canonical_protocol",
    "db_to_transmittance",
    "get_preset",
    "max_distance",
    "parse_attack",
    "plob_bound",
    "simulate_link",
    "transmittance_to_db",
]
