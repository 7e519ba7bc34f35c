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
import threading
from collections.abc import Callable
from pathlib import Path

from qkdtwin.errors import ConfigError

__all__ = ["KEK_BYTES", "EpochKeys", "create_kek", "kek_check", "load_kek"]

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
    r"""Return a check value of a KEK (HMAC-SHA-256 of a fixed label; it reveals nothing).

    Examples
    --------
    >>> kek_check(bytes(32)) == kek_check(bytes(32)) != kek_check(b"\x01" * 32)
    True

    (HMAC pads its key with zeros to the hash's block size, so the all-zero keys of 16 and 32
    bytes give the same value; a KEK is random, never all zeros.)
    """
    return hmac.new(kek, b"qkdtwin kek check v1", hashlib.sha256).hexdigest()[:32]


class EpochKeys:
    """Wrap keys of a store, one per epoch, in files outside the database (crypto-shredding).

    An ``UPDATE ... SET material = NULL`` on PostgreSQL leaves the old row version, wrapped
    material included, until VACUUM reclaims it; a copy of the disk and of the KEK file would
    unwrap it meanwhile. With epoch keys, material is wrapped with the key of the epoch it was
    written in (``epoch = floor(t / epoch_s)``): 32 random bytes in ``directory/epoch-<n>.key``
    (mode 0600). The store re-wraps its surviving keys out of old epochs
    (:meth:`KeyStore.rotate_epochs`) and then destroys those epochs' files (overwritten with
    zeros, synced, unlinked), after which no old row version of them can be unwrapped by
    anyone. A destroyed key stays in memory for ``grace_s`` (a request that read a row just
    before the re-wrap still unwraps it); it is never written anywhere again.

    Parameters
    ----------
    directory
        One directory per store (:meth:`KeyStore.epoch_dir` names it by the store's ID).
    epoch_s
        Length of an epoch, s.
    now
        Clock, s since the epoch.
    """

    def __init__(
        self, directory: Path, epoch_s: float, now: Callable[[], float], grace_s: float = 60.0
    ) -> None:
        if not epoch_s > 0:
            raise ConfigError("epoch_s must be > 0", field="epoch_s", value=epoch_s)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.epoch_s = float(epoch_s)
        self.grace_s = grace_s
        self._now = now
        self._lock = threading.Lock()
        self._cache: dict[int, bytes] = {}
        self._doomed: dict[int, float] = {}  # epoch -> time its key leaves memory

    def _path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch}.key"

    def current_epoch(self) -> int:
        """Return the epoch of now."""
        return int(self._now() // self.epoch_s)

    def current(self) -> tuple[int, bytes]:
        """Return ``(epoch, key)`` of now; the key file is created (0600) on first use."""
        epoch = self.current_epoch()
        with self._lock:
            key = self._cache.get(epoch)
            if key is None:
                path = self._path(epoch)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    key = path.read_bytes()
                else:
                    key = os.urandom(KEK_BYTES)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(key)
                        fh.flush()
                        os.fsync(fh.fileno())
                self._cache[epoch] = key
        return epoch, key

    def get(self, epoch: int) -> bytes:
        """Return the key of ``epoch``.

        Raises
        ------
        ConfigError
            If its file was destroyed (and its grace period is over) or is unreadable.
        """
        with self._lock:
            self._forget_expired()
            key = self._cache.get(epoch)
            if key is not None:
                return key
            try:
                key = self._path(epoch).read_bytes()
            except OSError:
                raise ConfigError(
                    f"the wrap key of epoch {epoch} is destroyed: its keys are unrecoverable",
                    field="kek_file",
                ) from None
            self._cache[epoch] = key
            return key

    def epochs_on_disk(self) -> list[int]:
        """Epochs whose key file exists, sorted."""
        out = []
        for p in self.directory.glob("epoch-*.key"):
            try:
                out.append(int(p.stem.removeprefix("epoch-")))
            except ValueError:
                continue
        return sorted(out)

    def destroy_before(self, epoch: int) -> list[int]:
        """Destroy the key files of every epoch before ``epoch``; return those epochs."""
        gone = []
        with self._lock:
            for e in self.epochs_on_disk():
                if e >= epoch:
                    continue
                path = self._path(e)
                try:
                    size = path.stat().st_size
                    with open(path, "r+b") as fh:
                        fh.write(bytes(size))
                        fh.flush()
                        os.fsync(fh.fileno())
                    path.unlink()
                except OSError:
                    continue
                self._doomed[e] = self._now() + self.grace_s
                gone.append(e)
        return gone

    def _forget_expired(self) -> None:
        now = self._now()
        for e, until in list(self._doomed.items()):
            if now >= until:
                self._cache.pop(e, None)
                del self._doomed[e]
