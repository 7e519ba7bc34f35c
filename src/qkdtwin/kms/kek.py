"""Key-encryption keys (KEKs): key material is wrapped at rest by default.

A KEK is 32 random bytes in a file of mode 0600 (``kms pki init`` and ``kms dev-pair`` write
``kek.bin`` beside the certificates; ``kms serve`` reads the config's ``kek_file``). A store
then keeps every key as ``nonce || AES-256-GCM(kek, nonce, key, aad=key_ID)``, so a copy of the
database, of its WAL or of a backup exposes no key without the KEK file.

A store remembers whether it was created with wrapping, and a check value of its KEK
(:func:`kek_check`): opening a wrapped store without its KEK, with another KEK, or an unwrapped
store with a KEK is one :class:`~qkdtwin.errors.ConfigError` that says so, never a failed
decryption at the first ``dec_keys``. An existing unwrapped store stays unwrapped (open it
without ``kek_file``, or import its keys into a new wrapped store).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from qkdtwin.errors import ConfigError

__all__ = ["KEK_BYTES", "create_kek", "kek_check", "load_kek"]

#: Length of the KEKs this module makes (AES-256).
KEK_BYTES = 32


def create_kek(path: Path) -> Path:
    """Write a fresh random KEK to ``path`` (mode 0600) unless one is there; return ``path``.

    An existing KEK is never overwritten: the stores wrapped with it would become unreadable.

    Raises
    ------
    ConfigError
        If the file cannot be written.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        load_kek(path)  # an existing file must be a usable KEK
        return path
    except OSError as exc:
        raise ConfigError(
            f"cannot create the key-encryption key {str(path)!r}: {exc.strerror}",
            field="kek_file",
            value=str(path),
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(KEK_BYTES))
    return path


def load_kek(path: Path) -> bytes:
    """Read a KEK file (16, 24 or 32 bytes).

    Raises
    ------
    ConfigError
        If the file is missing, unreadable, of another length, or readable by other users
        (group or world permission bits set).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key-encryption key {str(path)!r}: {exc.strerror}",
            field="kek_file",
            value=str(path),
        ) from None
    if len(data) not in (16, 24, 32):
        raise ConfigError(
            f"the key-encryption key {str(path)!r} holds {len(data)} bytes, not 16, 24 or 32",
            field="kek_file",
            value=str(path),
        )
    if mode & 0o077:
        raise ConfigError(
            f"the key-encryption key {str(path)!r} is readable by others (mode {mode:o}); "
            f"run chmod 600 on it",
            field="kek_file",
            value=str(path),
        )
    return data


def kek_check(kek: bytes) -> str:
    """Return a check value of a KEK (HMAC-SHA-256 of a fixed label; it reveals nothing).

    Examples
    --------
    >>> kek_check(bytes(32)) == kek_check(bytes(32)) != kek_check(bytes(16))
    True
    """
    return hmac.new(kek, b"qkdtwin kek check v1", hashlib.sha256).hexdigest()[:32]
