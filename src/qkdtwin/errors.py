"""The one exception tree of qkdtwin.

Every error that qkdtwin raises on purpose derives from :class:`QkdTwinError`, so callers can
catch the whole library with one ``except`` clause and the CLI can turn any of them into one
line on stderr with exit code 2 (see :func:`qkdtwin.cli.main`)::

    QkdTwinError
    ├── ConfigError               bad input: a parameter out of range, an unknown name
    │   ├── UnknownNameError      an unknown protocol, preset or attack name
    │   └── RangeSyntaxError      a malformed ``START:STOP[:STEP]`` range
    ├── ReconciliationError       a post-processing protocol broke: a malformed message
    └── SimulationError           a model cannot produce the requested quantity

Context travels as keyword attributes (``field``, ``value``, ``allowed``) so services can build
structured error bodies without parsing messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "QkdTwinError",
    "RangeSyntaxError",
    "ReconciliationError",
    "SimulationError",
    "UnknownNameError",
]


class QkdTwinError(Exception):
    """Base class of every error raised on purpose by qkdtwin."""


class ConfigError(QkdTwinError, ValueError):
    """Raised when an input value is invalid: out of range, wrong type or inconsistent.

    Parameters
    ----------
    message
        Human-readable, one line, names the field and what is allowed.
    field
        Name of the offending parameter (``"distance_km"``), when there is one.
    value
        The rejected value.
    allowed
        A short description of the allowed values (``">= 0"``, ``"(0, 1]"``).
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = allowed


class UnknownNameError(ConfigError):
    """Raised when a protocol, preset, attack or other named choice does not exist."""


class RangeSyntaxError(ConfigError):
    """Raised when a ``START:STOP[:STEP]`` range string is malformed or empty."""


class ReconciliationError(QkdTwinError):
    """Raised when an information-reconciliation exchange breaks its protocol.

    For example a parity request for a range outside the key or for a permutation that was
    never announced, or an answer whose length does not match the request. Bad *input* to a
    reconciliation (empty keys, a QBER outside (0, 0.5)) is a :class:`ConfigError` instead.
    """


class SimulationError(QkdTwinError):
    """Raised when a model cannot produce the requested quantity (e.g. simulating CV-QKD)."""
