"""The telemetry envelope: a versioned binary record sealed with AES-256-GCM.

Wire format, version 1 (all integers big-endian)::

    offset  size  field
    0       1     version       = 1
    1       1     mode          1 hybrid, 2 qkd-only, 3 pqc-only
    2       1     kind          1 rekey (KEX), 2 aggregate (fixed scheme), 3 device (mobile)
    3       1     sender length L, 1..64
    4       16    key_ID        the QKD key's UUID (16 zero bytes in pqc-only mode)
    20      4     epoch         rekey epoch of the link, u32
    24      8     seq           sequence number of the sender in this epoch, u64 (0 for KEX)
    32      4     body length B ciphertext plus the 16-byte GCM tag, 16 <= B <= 16 MiB
    36      L     sender ID     ASCII [A-Za-z0-9._-]: device ID (mobile) or gateway ID
    36+L    B     body          AES-256-GCM(key, nonce, plaintext, aad = bytes 0 .. 36+L-1)

The header (bytes ``0 .. 36+L-1``) is the GCM associated data, so changing any header byte
makes authentication fail. The 12-byte nonce is not sent: ``nonce = 0x00000000 || seq (u64)``.
A KEX record carries ``ML-KEM ciphertext (1088 bytes, empty in qkd-only) || tag`` where the
tag is GCM over an empty plaintext with ``aad = header || ML-KEM ciphertext`` under the
epoch's key-confirmation key; it announces the epoch and proves the sender holds its master.

Records are self-delimiting; an MQTT message (a *frame*) is one or more records back to back.

Nonce uniqueness: every key is specific to one (link, epoch, key_ID, sender), because the HKDF
info binds all four (:mod:`qkdtwin.iot.keys`); :class:`Sealer` is the only producer of
sequence numbers for its key, starts at 1, increments by one per record and refuses to go
past :data:`MAX_SEQ`; so a (key, nonce) pair never repeats. See ``docs/iot.md``.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qkdtwin.errors import AuthenticationError, ConfigError, MalformedEnvelopeError, ReplayError

__all__ = [
    "HEADER_SIZE",
    "KIND_AGGREGATE",
    "KIND_DEVICE",
    "KIND_KEX",
    "MAX_BODY",
    "MAX_SEQ",
    "TAG_SIZE",
    "VERSION",
    "Header",
    "ReplayWindow",
    "Sealer",
    "check_sender_id",
    "iter_records",
    "kex_ciphertext",
    "open_envelope",
    "open_kex",
    "parse_header",
    "seal_envelope",
    "seal_kex",
]

VERSION = 1
KIND_KEX, KIND_AGGREGATE, KIND_DEVICE = 1, 2, 3
_KINDS = {KIND_KEX, KIND_AGGREGATE, KIND_DEVICE}
_MODES = {1, 2, 3}
TAG_SIZE = 16
#: Fixed part of the header, before the sender ID (bytes).
HEADER_SIZE = 36
#: Largest body (ciphertext + tag) accepted, bytes.
MAX_BODY = 16 * 1024 * 1024
#: Largest sequence number a sealer issues; the gateway rekeys long before.
MAX_SEQ = 2**64 - 1
_FIXED = struct.Struct("!BBBB16sIQI")
_SENDER_RE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_NIL_KEY_ID = bytes(16)


def check_sender_id(sender_id: str) -> bytes:
    """Return ``sender_id`` as ASCII bytes; it must match ``[A-Za-z0-9._-]{1,64}``.

    Raises
    ------
    ConfigError
        Otherwise (IDs also appear in MQTT topics, so the alphabet is restricted).
    """
    raw = sender_id.encode("utf-8", "replace")
    if not _SENDER_RE.fullmatch(raw):
        raise ConfigError(
            f"IDs must match [A-Za-z0-9._-]{{1,64}}, got {sender_id!r}",
            field="sender_id",
            value=sender_id,
        )
    return raw


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed envelope header (see the module docstring for the byte layout)."""

    version: int
    mode: int
    kind: int
    key_id: bytes
    epoch: int
    seq: int
    body_length: int
    sender_id: str
    aad: bytes

    @property
    def key_id_str(self) -> str | None:
        """The key_ID as a UUID string, ``None`` for the nil ID of pqc-only mode."""
        if self.key_id == _NIL_KEY_ID:
            return None
        return str(uuid.UUID(bytes=self.key_id))


def _key_id_raw(key_id: str | None) -> bytes:
    if key_id is None:
        return _NIL_KEY_ID
    return uuid.UUID(key_id).bytes


def _build_header(
    mode: int, kind: int, key_id: bytes, epoch: int, seq: int, body_len: int, sender: bytes
) -> bytes:
    return _FIXED.pack(VERSION, mode, kind, len(sender), key_id, epoch, seq, body_len) + sender


def parse_header(data: bytes | memoryview, offset: int = 0) -> tuple[Header, int]:
    """Parse the header of the record starting at ``offset``; return it and the record's end.

    Raises
    ------
    MalformedEnvelopeError
        With ``reason`` ``"truncated"``, ``"bad_version"``, ``"bad_mode"``, ``"bad_kind"``,
        ``"bad_sender"`` or ``"bad_length"``.
    """
    if len(data) - offset < HEADER_SIZE:
        raise MalformedEnvelopeError("envelope shorter than its header", reason="truncated")
    version, mode, kind, slen, key_id, epoch, seq, blen = _FIXED.unpack_from(data, offset)
    if version != VERSION:
        raise MalformedEnvelopeError(f"unknown envelope version {version}", reason="bad_version")
    if mode not in _MODES:
        raise MalformedEnvelopeError(f"unknown mode code {mode}", reason="bad_mode")
    if kind not in _KINDS:
        raise MalformedEnvelopeError(f"unknown record kind {kind}", reason="bad_kind")
    if not 1 <= slen <= 64:
        raise MalformedEnvelopeError("sender ID length out of 1..64", reason="bad_sender")
    if not TAG_SIZE <= blen <= MAX_BODY:
        raise MalformedEnvelopeError("body length out of range", reason="bad_length")
    end_header = offset + HEADER_SIZE + slen
    end = end_header + blen
    if end > len(data):
        raise MalformedEnvelopeError("record longer than the data", reason="truncated")
    sender = bytes(data[offset + HEADER_SIZE : end_header])
    if not _SENDER_RE.fullmatch(sender):
        raise MalformedEnvelopeError(
            "sender ID has characters outside [A-Za-z0-9._-]", reason="bad_sender"
        )
    aad = bytes(data[offset:end_header])
    return Header(version, mode, kind, key_id, epoch, seq, blen, sender.decode(), aad), end


def iter_records(frame: bytes) -> Iterator[tuple[Header, bytes]]:
    """Yield ``(header, body)`` for each record of a frame.

    Raises
    ------
    MalformedEnvelopeError
        At the first malformed record (the rest of the frame cannot be delimited).
    """
    view = memoryview(frame)
    offset = 0
    if not frame:
        raise MalformedEnvelopeError("empty frame", reason="truncated")
    while offset < len(frame):
        header, end = parse_header(view, offset)
        yield header, bytes(view[end - header.body_length : end])
        offset = end


def seal_envelope(
    aead: AESGCM,
    plaintext: bytes,
    *,
    mode: int,
    kind: int,
    key_id: str | None,
    epoch: int,
    seq: int,
    sender_id: str,
) -> bytes:
    """Seal ``plaintext`` into one record (low level: prefer :class:`Sealer`).

    The caller guarantees that ``seq`` is never reused under the key of ``aead``.

    Raises
    ------
    ConfigError
        For a field out of range (mode, kind, sender ID, epoch, seq, size).
    """
    sender = check_sender_id(sender_id)
    if mode not in _MODES or kind not in (KIND_AGGREGATE, KIND_DEVICE):
        raise ConfigError("mode must be 1..3 and kind 2 or 3", field="kind", value=kind)
    if not 0 <= epoch < 2**32 or not 1 <= seq <= MAX_SEQ:
        raise ConfigError("epoch must fit u32 and seq be in 1..2^64-1", field="seq", value=seq)
    if len(plaintext) + TAG_SIZE > MAX_BODY:
        raise ConfigError("plaintext too large for one envelope", field="plaintext")
    header = _build_header(
        mode, kind, _key_id_raw(key_id), epoch, seq, len(plaintext) + TAG_SIZE, sender
    )
    return header + aead.encrypt(_NONCE_PREFIX + seq.to_bytes(8, "big"), plaintext, header)


def open_envelope(aead: AESGCM, header: Header, body: bytes) -> bytes:
    """Authenticate and decrypt one record's body; return the plaintext.

    Raises
    ------
    AuthenticationError
        If the tag does not verify (any change to header or body, or the wrong key). The
        error does not say which.
    """
    try:
        return aead.decrypt(_NONCE_PREFIX + header.seq.to_bytes(8, "big"), body, header.aad)
    except InvalidTag:
        raise AuthenticationError("envelope authentication failed", reason="auth_failed") from None


def seal_kex(
    confirm: AESGCM, *, mode: int, key_id: str | None, epoch: int, sender_id: str, kem_ct: bytes
) -> bytes:
    """Build the rekey record of an epoch: ML-KEM ciphertext plus a key-confirmation tag."""
    sender = check_sender_id(sender_id)
    header = _build_header(
        mode, KIND_KEX, _key_id_raw(key_id), epoch, 0, len(kem_ct) + TAG_SIZE, sender
    )
    return header + kem_ct + confirm.encrypt(bytes(12), b"", header + kem_ct)


def kex_ciphertext(body: bytes) -> bytes:
    """Return the ML-KEM ciphertext carried by a KEX record's body (may be empty)."""
    return body[:-TAG_SIZE]


def open_kex(confirm: AESGCM, header: Header, body: bytes) -> None:
    """Verify the key-confirmation tag of a KEX record.

    Raises
    ------
    AuthenticationError
        If the tag does not verify: the sender does not hold the epoch's master key.
    """
    try:
        confirm.decrypt(bytes(12), body[-TAG_SIZE:], header.aad + body[:-TAG_SIZE])
    except InvalidTag:
        raise AuthenticationError("rekey confirmation failed", reason="auth_failed") from None


class Sealer:
    """Seals the records of one sender under one key, issuing sequence numbers itself.

    The only way to obtain a sequence number is :meth:`seal`, which increments it, so a nonce
    cannot repeat under this key; past ``max_records`` records it refuses (rekey first).

    Parameters
    ----------
    aead
        The sender's AES-256-GCM context for this epoch.
    mode, kind, key_id, epoch, sender_id
        Header fields (see the module docstring).
    max_records
        Most records under this key (<= :data:`MAX_SEQ`).
    """

    __slots__ = ("_aead", "_prefix", "max_records", "seq")

    def __init__(
        self,
        aead: AESGCM,
        *,
        mode: int,
        kind: int,
        key_id: str | None,
        epoch: int,
        sender_id: str,
        max_records: int = MAX_SEQ,
    ) -> None:
        sender = check_sender_id(sender_id)
        if kind not in (KIND_AGGREGATE, KIND_DEVICE) or mode not in _MODES:
            raise ConfigError("kind must be 2 or 3 and mode 1..3", field="kind", value=kind)
        if not 0 <= epoch < 2**32 or not 1 <= max_records <= MAX_SEQ:
            raise ConfigError("epoch must fit u32, max_records 1..2^64-1", field="epoch")
        self._aead = aead
        self._prefix = (mode, kind, _key_id_raw(key_id), epoch, sender)
        self.max_records = max_records
        self.seq = 0

    def seal(self, plaintext: bytes) -> bytes:
        """Seal ``plaintext`` with the next sequence number; return the record.

        Raises
        ------
        ConfigError
            If ``max_records`` records were sealed already (the key must be replaced), or the
            plaintext is too large.
        """
        if self.seq >= self.max_records:
            raise ConfigError("sealer exhausted: rekey before sealing more", field="seq")
        if len(plaintext) + TAG_SIZE > MAX_BODY:
            raise ConfigError("plaintext too large for one envelope", field="plaintext")
        self.seq += 1
        seq = self.seq
        mode, kind, key_id, epoch, sender = self._prefix
        header = _FIXED.pack(
            VERSION, mode, kind, len(sender), key_id, epoch, seq, len(plaintext) + TAG_SIZE
        )
        header += sender
        return header + self._aead.encrypt(
            _NONCE_PREFIX + seq.to_bytes(8, "big"), plaintext, header
        )


class ReplayWindow:
    """Sliding anti-replay window of one sender and epoch (RFC 4303 style bitmap).

    A sequence number is accepted once; numbers more than ``size - 1`` below the highest
    accepted are refused as too old. :meth:`check` runs before decryption, :meth:`commit`
    only after the record authenticated, so forged records cannot move the window.
    """

    __slots__ = ("bitmap", "highest", "size")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ConfigError(f"replay window must be >= 1, got {size}", field="replay_window")
        self.size = size
        self.highest = 0
        self.bitmap = 0

    def check(self, seq: int) -> None:
        """Raise :class:`ReplayError` if ``seq`` was accepted before or is below the window."""
        if seq > self.highest:
            return
        diff = self.highest - seq
        if diff >= self.size or seq == 0:
            raise ReplayError(f"sequence number {seq} below the replay window", reason="too_old")
        if (self.bitmap >> diff) & 1:
            raise ReplayError(f"sequence number {seq} replayed", reason="replay")

    def commit(self, seq: int) -> None:
        """Mark ``seq`` as accepted (after :meth:`check` and authentication)."""
        if seq > self.highest:
            shift = seq - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1)
            self.highest = seq
        else:
            self.bitmap |= 1 << (self.highest - seq)
