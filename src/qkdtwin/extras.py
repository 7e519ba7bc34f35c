"""Optional dependencies, grouped in extras: which extra a layer needs, one clear error if missing.

``pip install qkdtwin`` gives the numerical layers (QKD link engine and post-processing, the
key-network engine, teleportation); the services need extras (``pyproject.toml``):

* ``kms``: the ETSI GS QKD 014 key management service (FastAPI, uvicorn, httpx, SQLAlchemy);
* ``postgres``: PostgreSQL key stores (psycopg; with ``kms``);
* ``iot``: encrypted IIoT telemetry over MQTT and its KME key sources (paho, amqtt; with
  ``kms``);
* ``sparkplug``: the Sparkplug B 3.0 telemetry mode (protobuf; with ``iot``);
* ``plots``: figures, ``--plot`` and ``reproduce`` (matplotlib);
* ``twin``: the digital twin and its dashboard (threadpoolctl; with ``kms``, ``iot``, ``plots``);
* ``fftw``: FFTW privacy amplification (pyfftw; GPL, so never pulled in by ``all``);
* ``cluster``: network sweeps on a Dask cluster;
* ``notebook``: running the example notebooks headless (nbclient, ipykernel);
* ``all``: every extra but ``fftw``.

A layer that needs an extra calls :func:`require_extra` when it is imported, so a missing
dependency is reported as :class:`MissingExtraError` naming the extra to install (the CLI
prints it as one line and exits with status 2), not as a traceback from deep inside.
"""

from __future__ import annotations

import importlib.util

from qkdtwin.errors import QkdTwinError

__all__ = ["EXTRAS", "MissingExtraError", "extra_for_module", "require_extra"]

#: Top-level modules of each extra (what :func:`require_extra` checks, in this order).
EXTRAS: dict[str, tuple[str, ...]] = {
    "kms": (
        "fastapi",
        "uvicorn",
        "h11",
        "httpx",
        "sqlalchemy",
        "fastapi_offline",
        "prometheus_client",
    ),
    "postgres": ("psycopg",),
    "iot": ("paho", "amqtt"),
    "sparkplug": ("google.protobuf",),
    "plots": ("matplotlib",),
    "twin": ("threadpoolctl",),
    "fftw": ("pyfftw",),
    "cluster": ("dask", "distributed"),
    "notebook": ("nbclient", "nbformat", "ipykernel"),
}


class MissingExtraError(QkdTwinError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, extra: str, module: str, what: str) -> None:
        super().__init__(
            f"{what} needs the optional dependency {module!r}: "
            f"pip install 'qkdtwin[{extra}]' (or 'qkdtwin[all]')"
        )
        self.extra, self.module = extra, module


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked (None)
        return True


def require_extra(*extras: str, what: str) -> None:
    """Raise :class:`MissingExtraError` if a module of one of ``extras`` is not installed.

    Parameters
    ----------
    extras
        Names of :data:`EXTRAS`.
    what
        The layer or command that needs them, for the message (e.g. ``"qkdtwin.kms"``).
    """
    for extra in extras:
        for module in EXTRAS[extra]:
            if _missing(module):
                raise MissingExtraError(extra, module, what)


def extra_for_module(name: str | None) -> str | None:
    """Return the extra that brings module ``name`` (or one of its parents), if any."""
    if not name:
        return None
    for extra, modules in EXTRAS.items():
        for module in modules:
            if name == module or name.startswith(module + "."):
                return extra
    return None
