"""Key supply: a feeder that pushes the keys of a simulated QKD link into key stores.

The pace comes from the link engine: :func:`qkdtwin.qkd.analytic_key_rate` gives the secret key
rate in bit/s of a link model, and the feeder adds ``rate_bps * dt`` bits of key per tick, cut
into keys of ``key_size_bits``, with the same key_IDs and material in every store it feeds.
The material itself is drawn from the operating system's CSPRNG (``os.urandom``), standing in
for the link's post-processed final key; running the full post-processing pipeline per key is
not done yet (see ``docs/kms.md``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from qkdtwin.errors import ConfigError
from qkdtwin.kms.store import KeyStore

__all__ = ["LinkFeeder", "import_key_file", "link_rate_bps", "read_key_file"]


def link_rate_bps(protocol: str = "decoy-bb84", distance_km: float = 20.0) -> float:
    """Return the analytic secret key rate (bit/s) of a link built from the default preset.

    Raises
    ------
    ConfigError
        For an unknown protocol or a distance out of range (from :mod:`qkdtwin.qkd`).
    """
    from qkdtwin.qkd import analytic_key_rate, build_link_model

    return float(
        analytic_key_rate(protocol, build_link_model(protocol, distance_km, "gys")).rate_bps
    )


class LinkFeeder:
    """Push identical keys into the stores at both ends of a link, at ``rate_bps``.

    Parameters
    ----------
    stores
        The stores to feed (the same key_IDs and material go into each; a store shared by two
        KMEs is given once).
    rate_bps
        Secret key rate in bit/s (> 0).
    key_size_bits
        Size of each key, a positive multiple of 8.
    now
        Monotonic clock in seconds (injectable).
    """

    def __init__(
        self,
        stores: Sequence[KeyStore],
        rate_bps: float,
        *,
        key_size_bits: int = 256,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_bps <= 0:
            raise ConfigError(f"rate_bps must be > 0, got {rate_bps}", field="rate_bps")
        if key_size_bits < 8 or key_size_bits % 8:
            raise ConfigError("key_size_bits must be a positive multiple of 8")
        self.stores = list(stores)
        self.rate_bps = rate_bps
        self.key_size_bits = key_size_bits
        self._now = now
        self._last = now()
        self._bits = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def push(self, count: int) -> int:
        """Push ``count`` fresh keys into every store now; return how many the first accepted."""
        keys = [(str(uuid.uuid4()), os.urandom(self.key_size_bits // 8)) for _ in range(count)]
        added = [s.add_keys(keys) for s in self.stores]
        return added[0] if added else 0

    def tick(self) -> int:
        """Add the key produced since the last tick; return the number of keys pushed."""
        t = self._now()
        self._bits += self.rate_bps * (t - self._last)
        self._last = t
        count = int(self._bits // self.key_size_bits)
        if count:
            self._bits -= count * self.key_size_bits
            self.push(count)
        return count

    def start(self, interval_s: float = 0.5) -> None:
        """Tick every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.tick()

        self._thread = threading.Thread(target=run, daemon=True, name="kms-feeder")
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


def read_key_file(path: Path | str) -> list[tuple[str, bytes]]:
    """Read a device key file: one ``KEY_ID HEX`` per line (``qkdtwin link simulate --keys-out``).

    Blank lines and lines starting with ``#`` are skipped. Every key_ID must be a UUID and
    unique, every key non-empty hex.

    Raises
    ------
    ConfigError
        For an unreadable file or a malformed line (the line number is in the message).
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}", field="path") from exc
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'KEY_ID HEX'")
            key_id = str(uuid.UUID(parts[0]))
            material = bytes.fromhex(parts[1])
            if not material:
                raise ValueError("empty key")
            if key_id in seen:
                raise ValueError(f"duplicate key_ID {key_id}")
        except ValueError as exc:
            raise ConfigError(f"{path}:{n}: {exc}", field="path") from exc
        seen.add(key_id)
        keys.append((key_id, material))
    return keys


def import_key_file(stores: Sequence[KeyStore], path: Path | str) -> int:
    """Add the keys of a ``KEY_ID HEX`` file to every store; return how many the first took.

    Raises
    ------
    ConfigError
        As :func:`read_key_file`, and nothing is added then.
    """
    keys = read_key_file(path)
    added = [s.add_keys(keys) for s in stores]
    return added[0] if added else 0
