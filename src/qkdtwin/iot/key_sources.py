"""Key sources of the IIoT telemetry: where the gateway and the aggregator get QKD keys.

:class:`QkdKeySource` is the small protocol the gateway (ETSI master SAE, ``enc_keys``) and the
aggregator (slave SAE, ``dec_keys``) use. Two implementations have the same semantics: a key
is handed to the receiver once, and an unknown key_ID raises :class:`KmsRequestError`:

* :class:`KmeKeySource` over :class:`qkdtwin.kms.client.KmeClient` (ETSI 014 over mutual TLS);
* :class:`StoreKeySource` over two :class:`qkdtwin.kms.KeyStore` objects fed with the same keys
  (the in-process pair; each reservation is mirrored in the peer store, as ``kms dev-pair``).

:class:`GatedKeySource` wraps either and can cut the supply (the gateway then fails closed).
:class:`LocalKeyPair` (two stores in process) and :class:`DevKmePair` (two KMEs on loopback)
are complete, fed key supplies with a source for each side; the KMEs of :class:`DevKmePair`
are started by :class:`qkdtwin.kms.devpairs.DevKmeLink`, never by this layer. How a QKD key
becomes the epoch's keys is :mod:`qkdtwin.iot.key_derivation`. Key material always comes from
the operating system's CSPRNG and is deliberately *not* seeded.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from qkdtwin.errors import ConfigError, KeyExhaustedError, KmsRequestError
from qkdtwin.iot.key_derivation import QKD_KEY_BITS

if TYPE_CHECKING:
    from qkdtwin.kms.client import KmeClient
    from qkdtwin.kms.devpairs import DevKmeLink
    from qkdtwin.kms.store import KeyStore

__all__ = [
    "DevKmePair",
    "GatedKeySource",
    "KmeKeySource",
    "LocalKeyPair",
    "QkdKeySource",
    "StoreKeySource",
]


@runtime_checkable
class QkdKeySource(Protocol):
    """Where the telemetry gets QKD keys: ``new_key`` (gateway), ``key_by_id`` (aggregator).

    Implementations raise :class:`~qkdtwin.errors.KeyExhaustedError` (or another
    :class:`~qkdtwin.errors.KmsError`) when no key can be had, and
    :class:`~qkdtwin.errors.KmsRequestError` for an unknown key_ID or one already handed out.
    """

    def new_key(self, size_bits: int) -> tuple[str, bytes]:
        """Return a fresh ``(key_ID, key)`` of ``size_bits`` bits (master SAE, enc_keys)."""
        ...

    def key_by_id(self, key_id: str) -> bytes:
        """Return the key with this key_ID (slave SAE, dec_keys); once per key_ID."""
        ...


class _BatchingSource:
    """Shared logic: draw keys in batches of ``batch`` and hand each out once.

    ``reserved_bits`` counts every bit taken from the pool (prefetched included), so reports
    can state what the telemetry cost the QKD network; ``delivered_bits`` what was used.
    """

    def __init__(self, batch: int) -> None:
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}", field="batch", value=batch)
        self.batch = batch
        self.reserved_bits = 0
        self.delivered_bits = 0
        self._buffer: dict[int, list[tuple[str, bytes]]] = {}
        self._handed: set[str] = set()
        self._lock = threading.Lock()

    def _draw(self, number: int, size_bits: int) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def _fetch(self, key_id: str) -> bytes:
        raise NotImplementedError

    def new_key(self, size_bits: int) -> tuple[str, bytes]:
        """Return a fresh key; refill the local batch with one ETSI request when empty."""
        with self._lock:
            buf = self._buffer.setdefault(size_bits, [])
            if not buf:
                keys = self._draw(self.batch, size_bits)
                self.reserved_bits += size_bits * len(keys)
                buf.extend(reversed(keys))
            key_id, material = buf.pop()
            self.delivered_bits += size_bits
            return key_id, material

    def key_by_id(self, key_id: str) -> bytes:
        """Return the key with ``key_id`` once; a second request is refused."""
        with self._lock:
            if key_id in self._handed:
                raise KmsRequestError(
                    "key already delivered", details=[{"key_ID": key_id, "reason": "delivered"}]
                )
            material = self._fetch(key_id)
            self._handed.add(key_id)
            self.delivered_bits += 8 * len(material)
            return material


class KmeKeySource(_BatchingSource):
    """A :class:`QkdKeySource` over a KME's ETSI GS QKD 014 REST API (mutual TLS).

    Parameters
    ----------
    client
        A :class:`qkdtwin.kms.client.KmeClient` authenticated as this SAE.
    peer_sae_id
        The other SAE: the slave for :meth:`new_key` (``enc_keys``), the master for
        :meth:`key_by_id` (``dec_keys``).
    batch
        Keys per ``enc_keys`` request (``number``); the rest wait in memory for later epochs.
    additional_slaves
        Further slave SAEs entitled to every key drawn (ETSI ``additional_slave_SAE_IDs``,
        e.g. a digital twin granted the aggregator's readings); they must sit behind the
        slave's KME, which must allow multicast (``max_sae_id_count``).
    """

    def __init__(
        self,
        client: KmeClient,
        peer_sae_id: str,
        *,
        batch: int = 8,
        additional_slaves: Sequence[str] = (),
    ) -> None:
        super().__init__(batch)
        self.client = client
        self.peer_sae_id = peer_sae_id
        self.additional_slaves = tuple(additional_slaves)

    def _draw(self, number: int, size_bits: int) -> list[tuple[str, bytes]]:
        keys = self.client.get_keys(
            self.peer_sae_id,
            number=number,
            size=size_bits,
            additional_slave_sae_ids=self.additional_slaves,
        )
        return [(k.key_id, k.material) for k in keys]

    def _fetch(self, key_id: str) -> bytes:
        return self.client.get_keys_with_ids(self.peer_sae_id, [key_id])[0].material


class StoreKeySource(_BatchingSource):
    """A :class:`QkdKeySource` straight over KME key stores, in process (no HTTP, no TLS).

    Parameters
    ----------
    store
        This SAE's KME store.
    sae_id, peer_sae_id
        This SAE and the other one.
    mirror
        Master side only: the peer KME's store, in which every reservation is mirrored (the
        KME-to-KME synchronisation of ``kms dev-pair``), so the receiver finds the key_IDs.
    batch
        Keys per reservation.
    """

    def __init__(
        self,
        store: KeyStore,
        sae_id: str,
        peer_sae_id: str,
        *,
        mirror: KeyStore | None = None,
        batch: int = 8,
    ) -> None:
        super().__init__(batch)
        self.store = store
        self.mirror = mirror
        self.sae_id = sae_id
        self.peer_sae_id = peer_sae_id

    def _draw(self, number: int, size_bits: int) -> list[tuple[str, bytes]]:
        keys = self.store.reserve(self.sae_id, [self.peer_sae_id], number, size_bits)
        if self.mirror is not None and self.mirror is not self.store:
            self.mirror.reserve(
                self.sae_id, [self.peer_sae_id], number, size_bits, key_ids=[k.key_id for k in keys]
            )
        return [(k.key_id, k.material) for k in keys]

    def _fetch(self, key_id: str) -> bytes:
        try:
            uuid.UUID(key_id)
        except ValueError as exc:
            raise KmsRequestError("malformed key_ID", details=[{"key_ID": key_id}]) from exc
        return self.store.fetch(self.sae_id, [key_id], master_sae_id=self.peer_sae_id)[0].material


class GatedKeySource:
    """Wrap a :class:`QkdKeySource` with a switch that cuts the supply (a link under attack).

    While :attr:`open` is false, :meth:`new_key` raises :class:`KeyExhaustedError`; the
    receiver side (:meth:`key_by_id`) keeps working so keys already issued still decrypt.
    """

    def __init__(self, inner: QkdKeySource) -> None:
        self.inner = inner
        self.open = True

    def cut(self) -> None:
        """Stop the supply: every later :meth:`new_key` raises KeyExhaustedError."""
        self.open = False

    def restore(self) -> None:
        """Resume the supply."""
        self.open = True

    def new_key(self, size_bits: int) -> tuple[str, bytes]:
        """Return the inner source's key, or raise KeyExhaustedError while cut."""
        if not self.open:
            raise KeyExhaustedError("QKD key supply cut", details=[{"available": 0}])
        return self.inner.new_key(size_bits)

    def key_by_id(self, key_id: str) -> bytes:
        """Pass through to the inner source."""
        return self.inner.key_by_id(key_id)

    @property
    def reserved_bits(self) -> int:
        """Bits drawn from the pool by the inner source (0 if it does not count)."""
        return int(getattr(self.inner, "reserved_bits", 0))

    @property
    def delivered_bits(self) -> int:
        """Bits handed out by the inner source (0 if it does not count)."""
        return int(getattr(self.inner, "delivered_bits", 0))


# --------------------------------------------------------------------------- key supplies
class _KeyPairBase:
    """The in-process key supply's plumbing: two stores, a feeder, SAE IDs."""

    MASTER_SAE = "sae-a"
    SLAVE_SAE = "sae-b"

    def __init__(
        self, directory: Path | None, *, distance_km: float, initial_keys: int, batch: int
    ) -> None:
        from qkdtwin.kms import KeyStore
        from qkdtwin.kms.devpairs import dev_workdir
        from qkdtwin.kms.feeder import LinkFeeder, link_rate_bps

        self._tmp, self.directory = dev_workdir(directory, initial_keys)
        self.batch = batch
        from qkdtwin.kms.kek import create_kek, load_kek

        kek = load_kek(create_kek(self.directory / "kek.bin"))  # wrapped at rest, as a KME's
        self.store_a = KeyStore(f"sqlite:///{self.directory / 'kme-a.db'}", kek=kek)
        self.store_b = KeyStore(f"sqlite:///{self.directory / 'kme-b.db'}", kek=kek)
        self.rate_bps = link_rate_bps("decoy-bb84", distance_km)
        self.feeder = LinkFeeder(
            [self.store_a, self.store_b], self.rate_bps, key_size_bits=QKD_KEY_BITS
        )
        if initial_keys:
            self.feeder.push(initial_keys)
        self._closed = False

    def close(self) -> None:
        """Stop the feeder and close the stores (and remove a temporary directory)."""
        if self._closed:
            return
        self._closed = True
        self.feeder.stop()
        self.store_a.close()
        self.store_b.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class LocalKeyPair(_KeyPairBase):
    """An in-process key supply: two KME stores fed identically, and their key sources.

    Parameters
    ----------
    directory
        Where the two SQLite stores live (a temporary directory if ``None``).
    distance_km
        Length of the simulated decoy-BB84 link whose key rate paces the feeder.
    initial_keys
        Keys pushed into both stores at once (so the pair is usable immediately).
    batch
        Keys per reservation of the gateway's source.
    feed
        Start the feeder's background thread (keys then arrive at the link's rate).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        distance_km: float = 20.0,
        initial_keys: int = 256,
        batch: int = 8,
        feed: bool = True,
    ) -> None:
        super().__init__(directory, distance_km=distance_km, initial_keys=initial_keys, batch=batch)
        self.gateway_source = StoreKeySource(
            self.store_a, self.MASTER_SAE, self.SLAVE_SAE, mirror=self.store_b, batch=batch
        )
        self.aggregator_source = StoreKeySource(self.store_b, self.SLAVE_SAE, self.MASTER_SAE)
        if feed:
            self.feeder.start()

    def __enter__(self) -> LocalKeyPair:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class DevKmePair:
    """Two real KMEs on loopback (ETSI GS QKD 014 over mutual TLS), fed by a simulated link.

    What ``qkdtwin kms dev-pair`` runs (:class:`qkdtwin.kms.devnet.DevNetwork`): a fresh
    development PKI in ``directory``, a store per KME, the feeder pushing the same keys into
    both (the pool split per direction), each ``enc_keys`` reservation mirrored at the peer
    KME over HTTPS. :attr:`gateway_source` is ``sae-a`` (master) talking to ``kme-a``;
    :attr:`aggregator_source` is ``sae-b`` (slave) talking to ``kme-b``. The KMEs and their
    clients are a :class:`qkdtwin.kms.devpairs.DevKmeLink` (:attr:`kmes`); this class wraps
    the two clients in :class:`KmeKeySource` objects.

    Parameters
    ----------
    directory
        Where the PKI and the stores go (a temporary directory if ``None``).
    distance_km
        Length of the simulated decoy-BB84 link whose key rate paces the feeder.
    initial_keys
        Keys the gateway can use at once: the link gets twice as many, since its pool is
        split per direction and ``kme-a`` hands out only the half it owns.
    batch
        Keys per ``enc_keys`` request of the gateway's source.
    feed
        Run the feeder (keys then keep arriving at the link's rate).

    Raises
    ------
    KmsError
        If a KME does not start.
    """

    MASTER_SAE = "sae-a"
    SLAVE_SAE = "sae-b"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        distance_km: float = 20.0,
        initial_keys: int = 256,
        batch: int = 8,
        feed: bool = True,
    ) -> None:
        from qkdtwin.kms.devpairs import DevKmeLink

        if batch < 1:  # before any KME starts: a bad value leaves nothing running
            raise ConfigError(f"batch must be >= 1, got {batch}", field="batch", value=batch)
        self.kmes: DevKmeLink = DevKmeLink(
            directory,
            distance_km=distance_km,
            initial_keys=initial_keys,
            feed=feed,
            master_sae=self.MASTER_SAE,
            slave_sae=self.SLAVE_SAE,
        )
        self.batch = batch
        self.directory = self.kmes.directory
        self.rate_bps = self.kmes.rate_bps
        self.network = self.kmes.network
        self.store_a = self.kmes.store_a
        self.store_b = self.kmes.store_b
        self.urls = self.kmes.urls
        self.gateway_source = KmeKeySource(self.kmes.master_client, self.SLAVE_SAE, batch=batch)
        self.aggregator_source = KmeKeySource(self.kmes.slave_client, self.MASTER_SAE)

    def close(self) -> None:
        """Close the clients, stop both KMEs and the feeder, close the stores."""
        self.kmes.close()

    def __enter__(self) -> DevKmePair:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
