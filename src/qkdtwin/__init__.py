"""qkdtwin: a digital twin of a quantum-secured industrial IoT network.

The package is layered (see ``docs/architecture.md``): :mod:`qkdtwin.qkd` is the physical and
protocol layer (sources, channels, detectors, protocols, attacks, key rates); later layers
(network, kms, iot, twin) build on it and never the other way round.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """Read ``__version__`` from the installed metadata on first use, not at import.

    ``importlib.metadata`` scans ``sys.path`` for the distribution, which every ``qkdtwin``
    command would otherwise pay at start-up; only ``--version`` and callers that ask need it.
    """
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("qkdtwin")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
