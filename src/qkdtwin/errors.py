"""The one exception tree of qkdtwin.

Every error that qkdtwin raises on purpose derives from :class:`QkdTwinError`, so callers can
catch the whole library with one ``except`` clause and the CLI can turn any of them into one
line on stderr with exit code 2 (see :func:`qkdtwin.cli.main`)::

    QkdTwinError
    ├── ConfigError               bad input: a parameter out of range, an unknown name
    │   ├── UnknownNameError      an unknown protocol, preset or attack name
    │   └── RangeSyntaxError      a malformed ``START:STOP[:STEP]`` range
    ├── KmsError                  the key management service refused a request
    │   ├── KmsRequestError       a malformed or out-of-range key request (HTTP 400)
    │   ├── KeyAccessError        the caller may not have these keys (HTTP 401)
    │   └── KeyExhaustedError     not enough keys available (HTTP 503)
    ├── EnvelopeError             a telemetry envelope was refused (``reason``: counted label)
    │   ├── MalformedEnvelopeError  a header field is malformed (version, mode, length, ID)
    │   ├── AuthenticationError     the AES-GCM tag did not verify (opaque: never says why)
    │   └── ReplayError             a sequence number already seen, or older than the window
    ├── TransportError            the MQTT broker cannot be reached or refused the client
    ├── ReconciliationError       a post-processing protocol broke: a malformed message
    └── SimulationError           a model cannot produce the requested quantity

Context travels as keyword attributes (``field``, ``value``, ``allowed``) so services can build
structured error bodies without parsing messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "EnvelopeError",
    "KeyAccessError",
    "KeyExhaustedError",
    "KmsError",
    "KmsRequestError",
    "MalformedEnvelopeError",
    "QkdTwinError",
    "RangeSyntaxError",
    "ReconciliationError",
    "ReplayError",
    "SimulationError",
    "TransportError",
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

    @classmethod
    def from_validation(
        cls,
        exc: Any,
        *,
        prefix: str = "",
        template: str = "{field}: {msg}",
        default_field: str = "input",
    ) -> ConfigError:
        """Turn a pydantic ``ValidationError`` into one error naming the first bad field.

        Parameters
        ----------
        exc
            The ``ValidationError`` (anything with pydantic's ``errors()``).
        prefix
            Prepended to the field path (``"plant."`` gives ``plant.drift.0.kind``).
        template
            The message, with ``{field}`` and ``{msg}`` (pydantic's message without its
            ``"Value error, "`` prefix).
        default_field
            The field named when the error is about the whole object.
        """
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = prefix + loc if loc else (prefix.rstrip(".") or default_field)
        msg = str(err["msg"]).removeprefix("Value error, ")
        return cls(template.format(field=field, msg=msg), field=field, value=err.get("input"))


class UnknownNameError(ConfigError):
    """Raised when a protocol, preset, attack or other named choice does not exist."""


class RangeSyntaxError(ConfigError):
    """Raised when a ``START:STOP[:STEP]`` range string is malformed or empty."""


class KmsError(QkdTwinError):
    """Base class of the refusals of the key management service (:mod:`qkdtwin.kms`).

    Parameters
    ----------
    message
        Human-readable, one line; becomes the ``message`` of the ETSI 014 Error object.
    details
        Extra entries for the Error object's ``details`` array (no key material, ever).
    retry_after_s
        When a retry may succeed, after how many seconds (the KME's ``Retry-After``
        header); ``None``: no advice.
    """

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.retry_after_s = retry_after_s


class KmsRequestError(KmsError):
    """Raised when a key request is malformed or out of range (ETSI GS QKD 014: HTTP 400).

    Also raised for an unknown SAE ID or key_ID, and for a key already delivered.
    """


class KeyAccessError(KmsError):
    """Raised when the caller may not obtain the requested keys (ETSI GS QKD 014: HTTP 401).

    For example ``dec_keys`` for a key_ID that was not issued with the caller as a slave.
    """


class KeyExhaustedError(KmsError):
    """Raised when a key store holds fewer suitable keys than requested (HTTP 503)."""


class EnvelopeError(QkdTwinError):
    """Raised when a telemetry envelope (:mod:`qkdtwin.iot.envelope`) is refused.

    Parameters
    ----------
    message
        Human-readable, one line; never contains key material or plaintext.
    reason
        A short stable label that the aggregator counts (``"unknown_key_id"``,
        ``"wrong_epoch"``, ``"malformed"``, ...).
    """

    def __init__(self, message: str, *, reason: str = "rejected") -> None:
        super().__init__(message)
        self.reason = reason


class MalformedEnvelopeError(EnvelopeError):
    """Raised when an envelope cannot be parsed: bad version, mode, kind, length or sender ID."""


class AuthenticationError(EnvelopeError):
    """Raised when AES-GCM authentication fails: tampered header or ciphertext, or wrong key.

    Deliberately opaque: it never says which byte or check failed.
    """


class ReplayError(EnvelopeError):
    """Raised when a sequence number was accepted before or lies below the replay window."""


class TransportError(QkdTwinError):
    """Raised when the MQTT broker of the telemetry (:mod:`qkdtwin.iot`) cannot be reached.

    Also raised when it refuses the connection or a subscription, or does not answer in time.
    """


class ReconciliationError(QkdTwinError):
    """Raised when an information-reconciliation exchange breaks its protocol.

    For example a parity request for a range outside the key or for a permutation that was
    never announced, or an answer whose length does not match the request. Bad *input* to a
    reconciliation (empty keys, a QBER outside (0, 0.5)) is a :class:`ConfigError` instead.
    """


class SimulationError(QkdTwinError):
    """Raised when a model cannot produce the requested quantity (e.g. simulating CV-QKD)."""
