"""Key hierarchy: the hybrid combiner against an independent HKDF, ML-KEM, key sources."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qkdtwin.errors import ConfigError, KeyExhaustedError, KmsRequestError
from qkdtwin.iot import DevKmePair, GatedKeySource, LocalKeyPair, derive_master_key
from qkdtwin.iot.keys import (
    derive_sender_key,
    mlkem_decapsulate,
    mlkem_encapsulate,
    mlkem_keypair,
    open_epoch,
    start_epoch,
)

ALG = {
    "hybrid": b"QKD-256+ML-KEM-768/HKDF-SHA384/HKDF-SHA256/AES-256-GCM",
    "qkd-only": b"QKD-256/HKDF-SHA384/HKDF-SHA256/AES-256-GCM",
    "pqc-only": b"ML-KEM-768/HKDF-SHA384/HKDF-SHA256/AES-256-GCM",
}


def lp(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def reference_master(mode, qkd, ss, link, epoch, key_id, ct):
    """The documented derivation, written out byte by byte from docs/iot.md."""
    ep = epoch.to_bytes(4, "big")
    salt = b"qkdtwin-iot/v1 master" + lp(link.encode()) + ep
    info = (
        lp(b"master")
        + lp(ALG[mode])
        + lp(link.encode())
        + ep
        + lp(uuid.UUID(key_id).bytes if key_id else b"")
        + lp(hashlib.sha256(ct).digest() if ct else b"")
    )
    return HKDF(hashes.SHA384(), 32, salt, info).derive(qkd + ss)


def test_hybrid_master_equals_independent_hkdf():
    qkd = os.urandom(32)
    priv = mlkem.MLKEM768PrivateKey.generate()
    ss, ct = priv.public_key().encapsulate()
    kid = str(uuid.uuid4())
    got = derive_master_key(
        "hybrid",
        qkd_key=qkd,
        kem_secret=ss,
        link_id="edge-7",
        epoch=3,
        key_id=kid,
        kem_ciphertext=ct,
    )
    assert got == reference_master("hybrid", qkd, ss, "edge-7", 3, kid, ct)
    assert len(got) == 32
    # the combiner depends on both inputs
    assert got != derive_master_key(
        "hybrid",
        qkd_key=os.urandom(32),
        kem_secret=ss,
        link_id="edge-7",
        epoch=3,
        key_id=kid,
        kem_ciphertext=ct,
    )


@pytest.mark.parametrize("mode", ["qkd-only", "pqc-only"])
def test_single_source_modes_equal_independent_hkdf(mode):
    qkd = os.urandom(32) if mode == "qkd-only" else b""
    ss, ct = (b"", b"") if mode == "qkd-only" else mlkem_encapsulate(mlkem_keypair().public_key())
    kid = str(uuid.uuid4()) if mode == "qkd-only" else None
    got = derive_master_key(
        mode, qkd_key=qkd, kem_secret=ss, link_id="gw", epoch=1, key_id=kid, kem_ciphertext=ct
    )
    assert got == reference_master(mode, qkd, ss, "gw", 1, kid, ct)


def test_mode_inputs_checked():
    with pytest.raises(ConfigError):
        derive_master_key(
            "hybrid",
            qkd_key=b"k" * 32,
            kem_secret=b"",
            link_id="a",
            epoch=1,
            key_id=None,
            kem_ciphertext=b"",
        )
    with pytest.raises(ConfigError):
        derive_master_key(
            "nope",
            qkd_key=b"k",
            kem_secret=b"",
            link_id="a",
            epoch=1,
            key_id=None,
            kem_ciphertext=b"",
        )


def test_device_key_equals_independent_hkdf_and_is_bound_to_context():
    master = os.urandom(32)
    kid = str(uuid.uuid4())
    got = derive_sender_key(
        master, "hybrid", link_id="edge-1", epoch=5, key_id=kid, sender_id="edge-1.d00002"
    )
    ep = (5).to_bytes(4, "big")
    salt = b"qkdtwin-iot/v1 sender" + lp(b"edge-1") + ep
    info = (
        lp(b"sender")
        + lp(ALG["hybrid"])
        + lp(b"edge-1")
        + ep
        + lp(uuid.UUID(kid).bytes)
        + lp(b"edge-1.d00002")
    )
    assert got == HKDF(hashes.SHA256(), 32, salt, info).derive(master)
    others = {
        derive_sender_key(
            master, "hybrid", link_id="edge-1", epoch=6, key_id=kid, sender_id="edge-1.d00002"
        ),
        derive_sender_key(
            master, "hybrid", link_id="edge-1", epoch=5, key_id=kid, sender_id="edge-1.d00003"
        ),
        derive_sender_key(
            master, "hybrid", link_id="edge-2", epoch=5, key_id=kid, sender_id="edge-1.d00002"
        ),
        derive_sender_key(
            master, "qkd-only", link_id="edge-1", epoch=5, key_id=kid, sender_id="edge-1.d00002"
        ),
    }
    assert got not in others
    assert len(others) == 4


def test_mlkem_round_trip_and_implicit_rejection():
    priv = mlkem_keypair()
    ss, ct = mlkem_encapsulate(priv.public_key())
    assert len(ss) == 32
    assert len(ct) == 1088
    assert mlkem_decapsulate(priv, ct) == ss
    forged = bytes([ct[0] ^ 1]) + ct[1:]
    assert mlkem_decapsulate(priv, forged) != ss  # FIPS 203 implicit rejection
    seed = bytes(range(64))
    assert mlkem_keypair(seed).public_key().public_bytes_raw() == (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    )
    with pytest.raises(ConfigError):
        mlkem_keypair(b"short")


@pytest.fixture(params=["local", "kme"])
def supply(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalKeyPair | DevKmePair]:
    cls = LocalKeyPair if request.param == "local" else DevKmePair
    with cls(tmp_path / request.param, initial_keys=6, feed=False, batch=3) as s:
        yield s


def test_sources_same_semantics(supply):
    gw, agg = supply.gateway_source, supply.aggregator_source
    kid, key = gw.new_key(256)
    assert len(key) == 32
    assert uuid.UUID(kid)
    assert gw.reserved_bits == 3 * 256  # one enc_keys request for a batch of 3
    assert agg.key_by_id(kid) == key
    with pytest.raises(KmsRequestError):
        agg.key_by_id(kid)  # handed out once
    with pytest.raises(KmsRequestError):
        agg.key_by_id(str(uuid.uuid4()))  # unknown key_ID
    kid2, key2 = gw.new_key(256)
    assert kid2 != kid
    assert key2 != key
    assert gw.reserved_bits == 3 * 256  # served from the batch, no new request
    for _ in range(4):
        gw.new_key(256)
    with pytest.raises(KeyExhaustedError):
        gw.new_key(256)  # 6 keys in the pool, 7th asked


def test_epoch_round_trip_through_store_pair(pair):
    priv = mlkem_keypair()
    tx = start_epoch("hybrid", pair.gateway_source, priv.public_key(), link_id="edge-1", epoch=1)
    rx = open_epoch(
        "hybrid",
        pair.aggregator_source,
        priv,
        link_id="edge-1",
        epoch=1,
        key_id=tx.key_id,
        kem_ciphertext=tx.kem_ciphertext,
    )
    assert rx.master == tx.master
    assert tx.qkd_bits == 256
    assert pair.store_b.audit_log()[-1]["action"] == "dec"


def test_gated_source_cuts_and_restores(pair):
    gated = GatedKeySource(pair.gateway_source)
    gated.new_key(256)
    gated.cut()
    with pytest.raises(KeyExhaustedError):
        gated.new_key(256)
    gated.restore()
    assert len(gated.new_key(256)[1]) == 32


def test_a_dev_pair_with_a_bad_batch_starts_nothing(tmp_path) -> None:
    """The value is checked before any KME starts: no server is left running, no directory."""
    import threading

    from qkdtwin.errors import ConfigError
    from qkdtwin.iot.keys import DevKmePair

    threads = {t.name for t in threading.enumerate()}
    with pytest.raises(ConfigError, match="batch"):
        DevKmePair(tmp_path / "pair", batch=0)
    assert {t.name for t in threading.enumerate()} <= threads
    assert not (tmp_path / "pair").exists()
