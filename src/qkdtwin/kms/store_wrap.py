"""Wrapping of key material at rest for the KME key store (:mod:`qkdtwin.kms.store`).

A store with a key-encryption key keeps each key's material as
``nonce || AES-GCM(kek, nonce, key, aad=key_id)``; with epoch keys
(:class:`~qkdtwin.kms.kek.EpochKeys`) as ``_EPOCH_MARK || epoch || nonce || AES-GCM(epoch
key, nonce, key, aad=key_id|epoch)``. The functions here take the store's AEAD and epoch keys
as arguments; without a KEK (``aead`` is ``None``) material is stored as it is.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qkdtwin.errors import ConfigError
from qkdtwin.kms.kek import EpochKeys

#: First byte of a blob wrapped with an epoch key (then 4 bytes of epoch, nonce, ciphertext).
_EPOCH_MARK = b"\x01"


def wrap_material(
    aead: AESGCM | None, epochs: EpochKeys | None, key_id: str, material: bytes
) -> bytes:
    """Wrap one key's material for storage: with the current epoch's key, else the KEK."""
    if aead is None:
        return material
    nonce = os.urandom(12)
    if epochs is not None:
        epoch, key = epochs.current()
        tag = epoch.to_bytes(4, "big")
        ct = AESGCM(key).encrypt(nonce, material, key_id.encode() + b"|" + tag)
        return _EPOCH_MARK + tag + nonce + ct
    return nonce + aead.encrypt(nonce, material, key_id.encode())


def blob_epoch(blob: bytes) -> int | None:
    """Return the epoch of an epoch-wrapped blob (``None``: wrapped with the KEK)."""
    if blob[:1] == _EPOCH_MARK and len(blob) >= 1 + 4 + 12 + 16 + 1:
        return int.from_bytes(blob[1:5], "big")
    return None


def unwrap_material(
    aead: AESGCM | None, epochs: EpochKeys | None, key_id: str, blob: bytes
) -> bytes:
    """Return the material of a stored blob (:func:`wrap_material` undone)."""
    if aead is None:
        return blob
    epoch = blob_epoch(blob) if epochs is not None else None
    if epoch is not None and epochs is not None:
        try:
            key = epochs.get(epoch)
            return AESGCM(key).decrypt(blob[5:17], blob[17:], key_id.encode() + b"|" + blob[1:5])
        except (InvalidTag, ConfigError):
            pass  # a KEK-wrapped blob whose random nonce starts with the mark
    return aead.decrypt(blob[:12], blob[12:], key_id.encode())
