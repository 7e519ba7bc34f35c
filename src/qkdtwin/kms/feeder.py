"""Key supply: a feeder that pushes the keys of a simulated QKD link into key stores.

The pace comes from the link engine: :func:`qkdtwin.qkd.analytic_key_rate` gives the secret key
rate in bit/s of a link model, and the feeder adds ``rate_bps * dt`` bits of key per tick, cut
into keys of ``key_size_bits``, with the same key_IDs and material in every store it feeds.
Where the key material comes from is the feeder's ``source``:

* :class:`RandomKeySource` (default): the operating system's CSPRNG, standing in for the
  final key at the analytic rate (cheap; what ``kms dev-pair`` uses unless told otherwise).
* :class:`PipelineKeySource`: the real thing. It simulates blocks of pulses with the link
  engine, runs the post-processing chain (sifting, parameter estimation, Cascade,
  verification, Toeplitz privacy amplification; :mod:`qkdtwin.qkd.postprocess`) and hands
  out Alice's and Bob's final keys, which verification proved identical. The pace is then
  the block's own secret key rate (final bits over the block's duration at the source's
  repetition rate), and each end's store gets its own party's key.

With ``owners``, each pushed batch is split between the link's two KMEs (alternate keys):
a KME hands out through ``enc_keys`` only the keys it owns, and the other end serves them
after the mirrored reservation (:mod:`qkdtwin.kms.peering`), so the two ends never reserve
the same key at once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.kms.store import KeyStore

__all__ = [
    "KeyMaterialSource",
    "LinkFeeder",
    "PipelineKeySource",
    "RandomKeySource",
    "import_key_file",
    "link_rate_bps",
    "read_key_file",
]


class KeyMaterialSource(Protocol):
    """Where a feeder's key material comes from: both ends' copies of ``n_bytes`` bytes."""

    def take(self, n_bytes: int) -> tuple[bytes, bytes]:
        """Return ``n_bytes`` of final key as seen by the two ends (identical)."""
        ...


class RandomKeySource:
    """CSPRNG material (``os.urandom``) standing in for a link's final key."""

    def take(self, n_bytes: int) -> tuple[bytes, bytes]:
        """Return the same ``n_bytes`` random bytes for both ends."""
        b = os.urandom(n_bytes)
        return b, b


@dataclass
class PipelineKeySource:
    """Final keys from the link engine and the full post-processing chain, block by block.

    Parameters
    ----------
    protocol, distance_km, preset
        The link (see :func:`qkdtwin.qkd.build_link_model`).
    pulses_per_block
        Pulses simulated per block; a block yields its finite-key final key (none if the
        block is too small for the finite-key bound, which the first block reveals).
    seed
        Seed of the block sequence (block ``i`` uses ``[seed, i]``).

    Attributes
    ----------
    blocks, final_bits, discarded_blocks
        Blocks run, final key bits produced, blocks dropped (aborted or not verified).
    simulated_s
        Link time the blocks represent (pulses over the repetition rate), in seconds.
    """

    protocol: str = "decoy-bb84"
    distance_km: float = 20.0
    preset: str = "gys"
    pulses_per_block: int = 100_000_000
    seed: int = 0
    blocks: int = 0
    final_bits: int = 0
    discarded_blocks: int = 0
    simulated_s: float = 0.0
    _alice: bytearray = field(default_factory=bytearray, repr=False)
    _bob: bytearray = field(default_factory=bytearray, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run_block(self) -> int:
        """Simulate and post-process one block; return the final key bits it added."""
        from qkdtwin.qkd import build_link_model, simulate_link
        from qkdtwin.qkd.postprocess import postprocess

        model = build_link_model(self.protocol, self.distance_km, self.preset)
        rng = np.random.default_rng([self.seed, self.blocks])
        res = simulate_link(self.protocol, model, self.pulses_per_block, rng, keep_bits=True)
        pp = postprocess(res, model, np.random.default_rng([self.seed, self.blocks, 1]))
        self.blocks += 1
        self.simulated_s += self.pulses_per_block / model.repetition_rate_hz
        if pp.aborted or not pp.keys_identical or pp.final_key_bits < 8:
            self.discarded_blocks += 1
            return 0
        n = pp.final_key_bits - pp.final_key_bits % 8
        with self._lock:
            self._alice += np.packbits(pp.alice_key[:n]).tobytes()
            self._bob += np.packbits(pp.bob_key[:n]).tobytes()
        self.final_bits += n
        return n

    @property
    def rate_bps(self) -> float:
        """Measured secret key rate so far (final bits per second of link time)."""
        return self.final_bits / self.simulated_s if self.simulated_s else 0.0

    def buffered_bytes(self) -> int:
        """Return the final key bytes produced and not yet taken."""
        with self._lock:
            return len(self._alice)

    def take(self, n_bytes: int) -> tuple[bytes, bytes]:
        """Return the next ``n_bytes`` of Alice's and Bob's final key, running blocks as needed.

        Raises
        ------
        ConfigError
            If ten blocks in a row yield no key (the link cannot produce key).
        """
        idle = 0
        while self.buffered_bytes() < n_bytes:
            if self.run_block() == 0:
                idle += 1
                if idle >= 10:
                    raise ConfigError(
                        f"the {self.protocol} link at {self.distance_km} km produced no final "
                        f"key in 10 blocks of {self.pulses_per_block} pulses",
                        field="pulses_per_block",
                    )
            else:
                idle = 0
        with self._lock:
            a, b = bytes(self._alice[:n_bytes]), bytes(self._bob[:n_bytes])
            del self._alice[:n_bytes], self._bob[:n_bytes]
        return a, b


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
    source
        Where the material comes from (default :class:`RandomKeySource`). With a
        :class:`PipelineKeySource` and two stores, the first store gets Alice's copy and the
        second Bob's.
    owners
        The KME IDs of the link's two ends: each batch is split between them (alternate
        keys), see the module docstring. ``None``: unowned keys.
    """

    def __init__(
        self,
        stores: Sequence[KeyStore],
        rate_bps: float,
        *,
        key_size_bits: int = 256,
        now: Callable[[], float] = time.monotonic,
        source: KeyMaterialSource | None = None,
        owners: Sequence[str] | None = None,
    ) -> None:
        if rate_bps <= 0:
            raise ConfigError(f"rate_bps must be > 0, got {rate_bps}", field="rate_bps")
        if key_size_bits < 8 or key_size_bits % 8:
            raise ConfigError("key_size_bits must be a positive multiple of 8")
        if owners is not None and len(owners) != 2:
            raise ConfigError("owners names the two KMEs of the link", field="owners")
        self.stores = list(stores)
        self.source: KeyMaterialSource = source or RandomKeySource()
        self.owners = list(owners) if owners is not None else None
        self.rate_bps = rate_bps
        self.key_size_bits = key_size_bits
        self._now = now
        self._last = now()
        self._bits = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def push(self, count: int) -> int:
        """Push ``count`` fresh keys into every store now; return how many the first accepted."""
        size = self.key_size_bits // 8
        near, far = self.source.take(count * size)
        ids = [str(uuid.uuid4()) for _ in range(count)]
        copies = [near if i == 0 else far for i in range(len(self.stores))]
        added = []
        for store, blob in zip(self.stores, copies, strict=True):
            keys = [(k, blob[i * size : (i + 1) * size]) for i, k in enumerate(ids)]
            if self.owners is None:
                added.append(store.add_keys(keys))
            else:
                added.append(
                    store.add_keys(keys[0::2], owner=self.owners[0])
                    + store.add_keys(keys[1::2], owner=self.owners[1])
                )
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


def import_key_file(
    stores: Sequence[KeyStore], path: Path | str, *, owners: Sequence[str] | None = None
) -> int:
    """Add the keys of a ``KEY_ID HEX`` file to every store; return how many the first took.

    With ``owners`` (the link's two KME IDs), alternate keys are owned by each end, as
    :class:`LinkFeeder` does.

    Raises
    ------
    ConfigError
        As :func:`read_key_file`, and nothing is added then.
    """
    keys = read_key_file(path)
    if owners is None:
        added = [s.add_keys(keys) for s in stores]
    else:
        added = [
            s.add_keys(keys[0::2], owner=owners[0]) + s.add_keys(keys[1::2], owner=owners[1])
            for s in stores
        ]
    return added[0] if added else 0
