r"""Key derivation of the IIoT telemetry: the hybrid QKD + ML-KEM-768 hierarchy, HKDF, epochs.

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

This module holds the derivations (:func:`derive_master_key`, :func:`derive_sender_key` and
their HKDF inputs), the ML-KEM-768 wrappers and the epochs (:class:`EpochKeys`,
:func:`start_epoch` on the sender, :func:`open_epoch` on the receiver). Where the QKD keys come
from is :mod:`qkdtwin.iot.key_sources`. Cryptographic randomness (ML-KEM) always comes from the
operating system's CSPRNG and is deliberately *not* seeded.

>>> key = derive_master_key("qkd-only", qkd_key=bytes(32), kem_secret=b"", link_id="edge-1",
...                         epoch=1, key_id=None, kem_ciphertext=b"")
>>> len(key), len(derive_sender_key(key, "qkd-only", link_id="edge-1", epoch=1, key_id=None,
...                                 sender_id="dev-1"))
(32, 32)
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qkdtwin.errors import ConfigError, KmsRequestError

if TYPE_CHECKING:
    from qkdtwin.iot.key_sources import QkdKeySource

__all__ = [
    "ALGORITHMS",
    "MODES",
    "QKD_KEY_BITS",
    "EpochKeys",
    "Mode",
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


def _epoch_keys(
    mode: str,
    link_id: str,
    epoch: int,
    key_id: str | None,
    qkd_key: bytes,
    kem_secret: bytes,
    kem_ciphertext: bytes,
) -> EpochKeys:
    """Derive an epoch's master key from its secrets; the same at both ends of the link."""
    master = derive_master_key(
        mode,
        qkd_key=qkd_key,
        kem_secret=kem_secret,
        link_id=link_id,
        epoch=epoch,
        key_id=key_id,
        kem_ciphertext=kem_ciphertext,
    )
    return EpochKeys(
        mode, link_id, epoch, key_id, kem_ciphertext, master, qkd_bits=8 * len(qkd_key)
    )


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
    return _epoch_keys(mode, link_id, epoch, key_id, qkd_key, secret, ct)


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
    return _epoch_keys(mode, link_id, epoch, key_id, qkd_key, secret, kem_ciphertext)
