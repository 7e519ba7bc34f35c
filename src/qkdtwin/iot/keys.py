r"""Key hierarchy of the IIoT telemetry: QKD keys from a KME, ML-KEM-768, HKDF.

Layers (see ``docs/iot.md``)::

    QKD key (256 bit, by key_ID, ETSI GS QKD 014)   ML-KEM-768 shared secret (FIPS 203)
                     \\                                    /
          master_e = HKDF-SHA384(IKM = qkd_key || kem_secret, salt, info)   one per link, epoch
                     |
          k_(e,s)  = HKDF-SHA256(IKM = master_e, salt, info(sender s))    one per device (mobile)
                                                                           or gateway (fixed)

The combiner is the concatenate-then-KDF of ETSI TS 103 744 and NIST SP 800-56C rev. 2: the
master key stays secret while *either* input does. ``salt`` and ``info`` bind the link (edge
gateway ID), the epoch, the QKD key_ID, the sender (device or gateway), the mode and the
algorithms, and a SHA-256 hash of the ML-KEM ciphertext, so a key is never valid in another
context. Modes: ``hybrid`` (both inputs), ``qkd-only``, ``pqc-only``.

Key sources
-----------
:class:`QkdKeySource` is the small protocol the gateway (ETSI master SAE, ``enc_keys``) and the
aggregator (slave SAE, ``dec_keys``) use. Two implementations have the same semantics: a key
is handed to the receiver once, and an unknown key_ID raises :class:`KmsRequestError`:

* :class:`KmeKeySource` over :class:`qkdtwin.kms.client.KmeClient` (ETSI 014 over mutual TLS);
* :class:`StoreKeySource` over two :class:`qkdtwin.kms.KeyStore` objects fed with the same keys
  (the in-process pair; each reservation is mirrored in the peer store, as ``kms dev-pair``).

:class:`GatedKeySource` wraps either and can cut the supply (the gateway then fails closed).
:class:`DevKmePair` and :class:`LocalKeyPair` start a complete, fed key supply on loopback or in
process. Cryptographic randomness (ML-KEM, key material) always comes from the operating
system's CSPRNG and is deliberately *not* seeded.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qkdtwin.errors import ConfigError, KeyExhaustedError, KmsRequestError

if TYPE_CHECKING:
    from qkdtwin.kms.client import KmeClient
    from qkdtwin.kms.store import KeyStore

__all__ = [
    "ALGORITHMS",
    "MODES",
    "QKD_KEY_BITS",
    "DevKmePair",
    "EpochKeys",
    "GatedKeySource",
    "KmeKeySource",
    "LocalKeyPair",
    "Mode",
    "QkdKeySource",
    "StoreKeySource",
    "derive_master_key",
    "derive_sender_key",
    "master_kdf_inputs",
    "mlkem_decapsulate",
    "mlkem_encapsulate",
    "mlkem_keypair",
    "open_epoch",
    "sender_kdf_inputs",
    "start_epoch",
]

Mode = Literal["hybrid", "qkd-only", "pqc-only"]

#: The three key modes, with their code in the envelope header.
MODES: dict[str, int] = {"hybrid": 1, "qkd-only": 2, "pqc-only": 3}

#: Algorithm label bound into every derivation (changing any algorithm changes every key).
ALGORITHMS: dict[str, bytes] = {
    "hybrid": b"QKD-256+ML-KEM-768/HKDF-SHA384/HKDF-SHA256/AES-256-GCM",
    "qkd-only": b"QKD-256/HKDF-SHA384/HKDF-SHA256/AES-256-GCM",
    "pqc-only": b"ML-KEM-768/HKDF-SHA384/HKDF-SHA256/AES-256-GCM",
}

#: Size of each QKD key drawn from the KME, in bits.
QKD_KEY_BITS = 256

_LABEL = b"qkdtwin-iot/v1"


def _lp(data: bytes) -> bytes:
    """Length-prefix ``data`` (2 bytes, big-endian) so concatenated fields cannot collide."""
    return len(data).to_bytes(2, "big") + data


def _key_id_bytes(key_id: str | None) -> bytes:
    return b"" if key_id is None else uuid.UUID(key_id).bytes


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(
            f"mode must be one of {', '.join(MODES)}, got {mode!r}",
            field="mode",
            value=mode,
            allowed="|".join(MODES),
        )


def master_kdf_inputs(
    mode: str, *, link_id: str, epoch: int, key_id: str | None, kem_ciphertext: bytes
) -> tuple[bytes, bytes]:
    """Return the ``(salt, info)`` of the master-key HKDF for one link and epoch.

    ``salt = "qkdtwin-iot/v1 master" || lp(link_id) || epoch (u32)``;
    ``info = lp("master") || lp(algorithms) || lp(link_id) || epoch (u32) || lp(key_ID, 16 bytes
    or empty) || lp(SHA-256(ML-KEM ciphertext) or empty)``; ``lp`` is a 2-byte length prefix.
    """
    _check_mode(mode)
    ep = epoch.to_bytes(4, "big")
    link = link_id.encode()
    salt = _LABEL + b" master" + _lp(link) + ep
    ct_hash = hashlib.sha256(kem_ciphertext).digest() if kem_ciphertext else b""
    info = (
        _lp(b"master")
        + _lp(ALGORITHMS[mode])
        + _lp(link)
        + ep
        + _lp(_key_id_bytes(key_id))
        + _lp(ct_hash)
    )
    return salt, info


def derive_master_key(
    mode: str,
    *,
    qkd_key: bytes,
    kem_secret: bytes,
    link_id: str,
    epoch: int,
    key_id: str | None,
    kem_ciphertext: bytes,
) -> bytes:
    """Derive the 32-byte master key of one link and epoch (concatenate-then-KDF combiner).

    ``IKM = qkd_key || kem_secret`` (hybrid), ``qkd_key`` (qkd-only) or ``kem_secret``
    (pqc-only); HKDF-SHA384 (RFC 5869) with :func:`master_kdf_inputs`. The HKDF output is the
    secret as long as one of the two inputs is (ETSI TS 103 744, NIST SP 800-56C rev. 2).

    Raises
    ------
    ConfigError
        If an input required by the mode is empty or one it excludes is given.
    """
    _check_mode(mode)
    need_qkd, need_kem = mode != "pqc-only", mode != "qkd-only"
    if bool(qkd_key) != need_qkd or bool(kem_secret) != need_kem:
        raise ConfigError(f"mode {mode} needs qkd_key={need_qkd} and kem_secret={need_kem}")
    salt, info = master_kdf_inputs(
        mode, link_id=link_id, epoch=epoch, key_id=key_id, kem_ciphertext=kem_ciphertext
    )
    return HKDF(hashes.SHA384(), 32, salt, info).derive(qkd_key + kem_secret)


def sender_kdf_inputs(
    mode: str, purpose: str, *, link_id: str, epoch: int, key_id: str | None, sender_id: str
) -> tuple[bytes, bytes]:
    """Return the ``(salt, info)`` of the HKDF that derives a sender key from the master.

    ``salt = "qkdtwin-iot/v1 " purpose || lp(link_id) || epoch``; ``info = lp(purpose) ||
    lp(algorithms) || lp(link_id) || epoch || lp(key_ID) || lp(sender_id)``.
    """
    _check_mode(mode)
    ep = epoch.to_bytes(4, "big")
    link = link_id.encode()
    salt = _LABEL + b" " + purpose.encode() + _lp(link) + ep
    info = (
        _lp(purpose.encode())
        + _lp(ALGORITHMS[mode])
        + _lp(link)
        + ep
        + _lp(_key_id_bytes(key_id))
        + _lp(sender_id.encode())
    )
    return salt, info


def derive_sender_key(
    master: bytes,
    mode: str,
    *,
    link_id: str,
    epoch: int,
    key_id: str | None,
    sender_id: str,
    purpose: str = "sender",
) -> bytes:
    """Derive the 32-byte AES-256-GCM key of one sender (device or gateway) in one epoch.

    HKDF-SHA256 over the master key with :func:`sender_kdf_inputs`. ``purpose`` is
    ``"sender"`` for data and ``"kex"`` for the key-confirmation tag of a rekey record. One
    master key serves every device, so QKD key use does not grow with the number of devices;
    HKDF is one-way, so a device key reveals neither the master nor another device's key.
    """
    salt, info = sender_kdf_inputs(
        mode, purpose, link_id=link_id, epoch=epoch, key_id=key_id, sender_id=sender_id
    )
    return HKDF(hashes.SHA256(), 32, salt, info).derive(master)


# --------------------------------------------------------------------------- ML-KEM-768
def mlkem_keypair(seed: bytes | None = None) -> mlkem.MLKEM768PrivateKey:
    """Return an ML-KEM-768 decapsulation key (FIPS 203); from a 64-byte ``seed`` if given.

    Without a seed the key comes from the OS CSPRNG (the normal case); a seed is for test
    vectors only.
    """
    if seed is None:
        return mlkem.MLKEM768PrivateKey.generate()
    if len(seed) != 64:
        raise ConfigError("an ML-KEM seed is 64 bytes", field="seed", value=len(seed))
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)


def mlkem_encapsulate(public_key: mlkem.MLKEM768PublicKey) -> tuple[bytes, bytes]:
    """Encapsulate to ``public_key``: return ``(shared_secret 32 B, ciphertext 1088 B)``."""
    secret, ciphertext = public_key.encapsulate()
    return secret, ciphertext


def mlkem_decapsulate(private_key: mlkem.MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    """Decapsulate a 1088-byte ciphertext; a forged one yields an unrelated secret (FIPS 203).

    Raises
    ------
    ValueError
        If the ciphertext does not have the ML-KEM-768 length.
    """
    return private_key.decapsulate(ciphertext)


# --------------------------------------------------------------------------- key sources
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


# --------------------------------------------------------------------------- epochs
@dataclass
class EpochKeys:
    """The keys of one link (edge gateway) in one epoch, on either side.

    ``master`` never leaves this object; sender keys are derived on demand and cached as
    AES-GCM contexts.
    """

    mode: str
    link_id: str
    epoch: int
    key_id: str | None
    kem_ciphertext: bytes
    master: bytes = field(repr=False)
    qkd_bits: int = 0
    _aead: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    def sender_aead(self, sender_id: str) -> AESGCM:
        """Return the AES-256-GCM context of ``sender_id`` (derived once per epoch)."""
        ctx = self._aead.get(sender_id)
        if ctx is None:
            key = derive_sender_key(
                self.master,
                self.mode,
                link_id=self.link_id,
                epoch=self.epoch,
                key_id=self.key_id,
                sender_id=sender_id,
            )
            ctx = self._aead[sender_id] = AESGCM(key)
        return ctx

    def confirm_aead(self) -> AESGCM:
        """Return the AES-GCM context that authenticates this epoch's rekey record."""
        key = derive_sender_key(
            self.master,
            self.mode,
            link_id=self.link_id,
            epoch=self.epoch,
            key_id=self.key_id,
            sender_id=self.link_id,
            purpose="kex",
        )
        return AESGCM(key)


def start_epoch(
    mode: str,
    source: QkdKeySource | None,
    kem_public_key: mlkem.MLKEM768PublicKey | None,
    *,
    link_id: str,
    epoch: int,
) -> EpochKeys:
    """Sender side: draw a QKD key and/or encapsulate, and derive the epoch's master key.

    Raises
    ------
    KmsError
        (:class:`KeyExhaustedError` among them) when the QKD key cannot be had; the caller
        must then fail closed.
    ConfigError
        If the mode needs a source or public key that is missing.
    """
    _check_mode(mode)
    key_id: str | None = None
    qkd_key = b""
    if mode != "pqc-only":
        if source is None:
            raise ConfigError(f"mode {mode} needs a QKD key source", field="mode")
        key_id, qkd_key = source.new_key(QKD_KEY_BITS)
    secret = ct = b""
    if mode != "qkd-only":
        if kem_public_key is None:
            raise ConfigError(f"mode {mode} needs the aggregator's ML-KEM key", field="mode")
        secret, ct = mlkem_encapsulate(kem_public_key)
    master = derive_master_key(
        mode,
        qkd_key=qkd_key,
        kem_secret=secret,
        link_id=link_id,
        epoch=epoch,
        key_id=key_id,
        kem_ciphertext=ct,
    )
    return EpochKeys(mode, link_id, epoch, key_id, ct, master, qkd_bits=8 * len(qkd_key))


def open_epoch(
    mode: str,
    source: QkdKeySource | None,
    kem_private_key: mlkem.MLKEM768PrivateKey | None,
    *,
    link_id: str,
    epoch: int,
    key_id: str | None,
    kem_ciphertext: bytes,
) -> EpochKeys:
    """Receiver side: fetch the QKD key by key_ID and/or decapsulate; derive the master key.

    Raises
    ------
    KmsError
        If the key_ID is unknown to the KME or was already delivered.
    ValueError
        If the ML-KEM ciphertext has the wrong length.
    """
    _check_mode(mode)
    qkd_key = b""
    if mode != "pqc-only":
        if source is None or key_id is None:
            raise KmsRequestError("no QKD key_ID for a QKD mode")
        qkd_key = source.key_by_id(key_id)
    secret = b""
    if mode != "qkd-only":
        if kem_private_key is None:
            raise ConfigError(f"mode {mode} needs an ML-KEM private key", field="mode")
        secret = mlkem_decapsulate(kem_private_key, kem_ciphertext)
    master = derive_master_key(
        mode,
        qkd_key=qkd_key,
        kem_secret=secret,
        link_id=link_id,
        epoch=epoch,
        key_id=key_id,
        kem_ciphertext=kem_ciphertext,
    )
    return EpochKeys(mode, link_id, epoch, key_id, kem_ciphertext, master, 8 * len(qkd_key))


# --------------------------------------------------------------------------- key supplies
def _workdir(
    directory: Path | None, initial_keys: int
) -> tuple[tempfile.TemporaryDirectory[str] | None, Path]:
    """Check ``initial_keys``; return ``(temporary directory or None, the directory to use)``."""
    if initial_keys < 0:
        raise ConfigError("initial_keys must be >= 0", field="initial_keys")
    tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="iot-")
    path = Path(tmp.name) if tmp is not None else Path(directory or ".")
    path.mkdir(parents=True, exist_ok=True)
    return tmp, path


class _KeyPairBase:
    """Common part of the two fed key supplies: two stores, a feeder, SAE IDs."""

    MASTER_SAE = "sae-a"
    SLAVE_SAE = "sae-b"

    def __init__(
        self, directory: Path | None, *, distance_km: float, initial_keys: int, batch: int
    ) -> None:
        from qkdtwin.kms import KeyStore
        from qkdtwin.kms.feeder import LinkFeeder, link_rate_bps

        self._tmp, self.directory = _workdir(directory, initial_keys)
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
    :attr:`aggregator_source` is ``sae-b`` (slave) talking to ``kme-b``.

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
        from qkdtwin.kms.client import KmeClient
        from qkdtwin.kms.devnet import DevNetwork
        from qkdtwin.kms.feeder import link_rate_bps

        self._tmp, self.directory = _workdir(directory, initial_keys)
        self.batch = batch
        self.rate_bps = link_rate_bps("decoy-bb84", distance_km)
        self.network = DevNetwork(
            self.directory,
            ["kme-a", "kme-b"],
            [("kme-a", "kme-b")],
            {self.MASTER_SAE: "kme-a", self.SLAVE_SAE: "kme-b"},
            rate_bps=self.rate_bps,
            initial_keys=2 * initial_keys,
            run_feeders=feed,
        )
        self.store_a = self.network.stores["kme-a"]["kme-b"]
        self.store_b = self.network.stores["kme-b"]["kme-a"]
        self._clients: list[KmeClient] = []
        self._closed = False
        try:
            self.network.start()
            self.urls = [self.network.url("kme-a"), self.network.url("kme-b")]
            pki = self.network.pki
            gw = KmeClient(self.urls[0], *pki.saes[self.MASTER_SAE], pki.ca_cert)
            agg = KmeClient(self.urls[1], *pki.saes[self.SLAVE_SAE], pki.ca_cert)
            self._clients = [gw, agg]
        except BaseException:
            self.close()
            raise
        self.gateway_source = KmeKeySource(gw, self.SLAVE_SAE, batch=batch)
        self.aggregator_source = KmeKeySource(agg, self.MASTER_SAE)

    def close(self) -> None:
        """Close the clients, stop both KMEs and the feeder, close the stores."""
        if self._closed:
            return
        self._closed = True
        for c in self._clients:
            c.close()
        self.network.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> DevKmePair:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
