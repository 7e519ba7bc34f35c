"""qkdtwin: a digital twin of a quantum-secured industrial IoT network.

The package is layered (see ``docs/architecture.md``): :mod:`qkdtwin.qkd` is the physical and
protocol layer (sources, channels, detectors, protocols, attacks, key rates); later layers
(network, kms, iot, twin) build on it and never the other way round.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qkdtwin")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
