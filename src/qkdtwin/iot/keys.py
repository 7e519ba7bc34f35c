"""Key hierarchy and key sources of the IIoT telemetry: a re-export module.

The former ``qkdtwin/iot/keys.py`` was split; every name it exported is still importable here:

* :mod:`qkdtwin.iot.key_derivation`: the hybrid QKD + ML-KEM-768 key hierarchy (HKDF master
  and sender keys, their inputs), the ML-KEM wrappers and the epochs (:class:`EpochKeys`,
  :func:`start_epoch`, :func:`open_epoch`);
* :mod:`qkdtwin.iot.key_sources`: :class:`QkdKeySource` and its implementations
  (:class:`KmeKeySource`, :class:`StoreKeySource`, :class:`GatedKeySource`) and the fed key
  supplies :class:`LocalKeyPair` and :class:`DevKmePair`;
* :mod:`qkdtwin.kms.devpairs`: the two KMEs on loopback behind :class:`DevKmePair`
  (:class:`~qkdtwin.kms.devpairs.DevKmeLink`), so that the IIoT layer starts no server itself.
"""

from __future__ import annotations

from qkdtwin.iot.key_derivation import (
    ALGORITHMS,
    MODES,
    QKD_KEY_BITS,
    EpochKeys,
    Mode,
    derive_master_key,
    derive_sender_key,
    master_kdf_inputs,
    mlkem_decapsulate,
    mlkem_encapsulate,
    mlkem_keypair,
    open_epoch,
    sender_kdf_inputs,
    start_epoch,
)
from qkdtwin.iot.key_sources import (
    DevKmePair,
    GatedKeySource,
    KmeKeySource,
    LocalKeyPair,
    QkdKeySource,
    StoreKeySource,
)

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
