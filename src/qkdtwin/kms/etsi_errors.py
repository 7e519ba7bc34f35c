"""The one map between the KMS's errors and ETSI GS QKD 014 HTTP status codes.

ETSI GS QKD 014 answers a bad request with 400, an unauthorised SAE with 401 and a KME that
cannot serve (no key, overload, a store fault) with 503. The server side (the KME's error
handlers, the peer endpoint's per-reservation results) turns an error into its status with
:func:`etsi_status`; the client side (the SAE client, the KME-to-KME client, the mirror
batcher) turns a status back into the error class with :func:`error_class`.
"""

from __future__ import annotations

from qkdtwin.errors import KeyAccessError, KeyExhaustedError, KmsError, KmsRequestError

__all__ = ["STATUS_OF_ERROR", "error_class", "etsi_status"]

#: Each error class and its status code; a subclass is matched by its base's entry.
STATUS_OF_ERROR: tuple[tuple[type[KmsError], int], ...] = (
    (KmsRequestError, 400),
    (KeyAccessError, 401),
    (KeyExhaustedError, 503),
)


def etsi_status(exc: KmsError, default: int) -> int:
    """Return the status code of ``exc`` (``default`` for a KmsError outside the map)."""
    return next((code for cls, code in STATUS_OF_ERROR if isinstance(exc, cls)), default)


def error_class(status: int, default: type[KmsError]) -> type[KmsError]:
    """Return the error class of an ETSI status code (``default`` for any other code)."""
    return next((cls for cls, code in STATUS_OF_ERROR if code == status), default)
