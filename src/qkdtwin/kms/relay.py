"""Key relay through trusted intermediate KMEs (hop-by-hop one-time pad).

Two SAEs whose KMEs share no QKD link get a key relayed along a path of KMEs
``K0 - K1 - ... - Kn``, each adjacent pair sharing a link key pool (the same key_IDs and
material at both ends, as :class:`~qkdtwin.kms.feeder.LinkFeeder` supplies them)::

    K0: draws the end-to-end key K (CSPRNG)
    hop i (K_i -> K_i+1): K_i consumes link key L_i, sends (id(L_i), K xor L_i);
                          K_i+1 consumes the same L_i and recovers K
    K0 and Kn: store K under one new key_ID, so their SAEs fetch it through ETSI 014

Every intermediate KME sees K in the clear: the nodes must be trusted (the standard
trusted-node model). Each link key is used once, for exactly ``size_bits`` bits, and never
again (consumed at both ends of its link, audited with action ``relay``).

**All or nothing.** K is installed at the two ends only after every hop succeeded; if the
second installation fails, the first is compensated (:meth:`KeyStore.discard`). A hop that
fails midway leaves no end-to-end key anywhere. Link keys consumed before the failure stay
consumed: a pad that encrypted a transmitted ciphertext must never be reused, so they are
reported in :attr:`RelayError.consumed`, not returned to the pool.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qkdtwin.errors import KmsError
from qkdtwin.kms.store import KeyStore

__all__ = ["Hop", "RelayError", "RelayResult", "relay_key"]

log = logging.getLogger("qkdtwin.kms")


@dataclass(frozen=True)
class Hop:
    """One QKD link of the path: the link-key stores of its left and right KMEs."""

    left_kme: str
    right_kme: str
    left: KeyStore
    right: KeyStore


@dataclass(frozen=True)
class RelayResult:
    """A relayed key: its ID, material and the link key consumed per hop ``(hop, key_ID)``."""

    key_id: str
    material: bytes
    consumed: list[tuple[int, str]] = field(default_factory=list)


class RelayError(KmsError):
    """A relay failed; nothing was installed. ``consumed`` lists the link keys used up."""

    def __init__(self, message: str, *, hop: int, consumed: list[tuple[int, str]]) -> None:
        super().__init__(message, details=[{"hop": hop, "consumed": len(consumed)}])
        self.hop = hop
        self.consumed = consumed


#: Carries ``(hop index, link key_ID, ciphertext)`` from K_i to K_i+1; tests inject failures.
Transport = Callable[[int, str, bytes], tuple[str, bytes]]


def _direct(_hop: int, key_id: str, ciphertext: bytes) -> tuple[str, bytes]:
    return key_id, ciphertext


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _reason(exc: BaseException) -> str:
    """Say why a step failed, for a :class:`RelayError` message.

    A KMS refusal's own message (written for SAEs), else a generic statement: the exception
    text, which may hold paths or addresses, goes to the log only.
    """
    return exc.message if isinstance(exc, KmsError) else "transport error"


def relay_key(
    hops: Sequence[Hop],
    source: KeyStore,
    destination: KeyStore,
    *,
    size_bits: int = 256,
    transport: Transport = _direct,
) -> RelayResult:
    """Relay a fresh ``size_bits`` key from the first KME of ``hops`` to the last.

    Parameters
    ----------
    hops
        The links of the path in order (at least one).
    source, destination
        The stores where the end KMEs install the relayed key as ``available`` (for
        ``enc_keys``/``dec_keys`` by their SAEs).
    size_bits
        Key size, a positive multiple of 8.
    transport
        How a hop's ``(link key_ID, ciphertext)`` reaches the next KME.

    Returns
    -------
    RelayResult

    Raises
    ------
    RelayError
        If a hop fails (no link key, a transport error, a mismatching link key) or the
        installation fails; no end-to-end key is left installed.

    Examples
    --------
    >>> import tempfile, pathlib, os, uuid
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> a, b = (KeyStore(f"sqlite:///{d / n}.db") for n in "ab")
    >>> link = [(str(uuid.uuid4()), os.urandom(32))]
    >>> _ = a.add_keys(link), b.add_keys(link)
    >>> src, dst = (KeyStore(f"sqlite:///{d / n}.db") for n in ("sa", "sb"))
    >>> r = relay_key([Hop("kme-a", "kme-b", a, b)], src, dst)
    >>> dst.available_count(), src.available_count(), a.available_count()
    (1, 1, 0)
    >>> for s in (a, b, src, dst):
    ...     s.close()
    """
    if not hops:
        raise KmsError("a relay needs at least one hop")
    if size_bits < 8 or size_bits % 8:
        raise KmsError("size_bits must be a positive multiple of 8")
    relay_id = str(uuid.uuid4())
    by = f"relay:{relay_id}"
    key = os.urandom(size_bits // 8)
    consumed: list[tuple[int, str]] = []
    for i, hop in enumerate(hops):
        try:
            pad = hop.left.consume(by, size_bits)
            consumed.append((i, pad.key_id))
            link_id, ciphertext = transport(i, pad.key_id, _xor(key, pad.material))
            far = hop.right.consume(by, size_bits, key_ids=[link_id])
            recovered = _xor(ciphertext, far.material)
        except (KmsError, OSError) as exc:
            log.warning("relay %s failed at hop %d: %s", relay_id, i, exc)
            raise RelayError(
                f"relay failed at hop {i} ({hop.left_kme} -> {hop.right_kme}): {_reason(exc)}",
                hop=i,
                consumed=consumed,
            ) from exc
        if recovered != key:  # the two ends of the link hold different material
            raise RelayError(f"link key mismatch at hop {i}", hop=i, consumed=consumed)
    try:
        if source.add_keys([(relay_id, key)]) != 1:
            raise KmsError("source store full")
    except KmsError as exc:
        raise RelayError(
            f"install at source failed: {_reason(exc)}", hop=len(hops), consumed=consumed
        ) from exc
    try:
        if destination.add_keys([(relay_id, key)]) != 1:
            raise KmsError("destination store full")
    except KmsError as exc:
        source.discard([relay_id], by)  # compensation: no half-delivered key
        raise RelayError(
            f"install at destination failed: {_reason(exc)}", hop=len(hops), consumed=consumed
        ) from exc
    return RelayResult(relay_id, key, consumed)
