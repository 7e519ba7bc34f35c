"""Envelope wire format: layout, round trip, tampering, nonce uniqueness, replay window."""

from __future__ import annotations

import os
import struct
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from qkdtwin.errors import (
    AuthenticationError,
    ConfigError,
    EnvelopeError,
    MalformedEnvelopeError,
    ReplayError,
)
from qkdtwin.iot.envelope import (
    KIND_DEVICE,
    ReplayWindow,
    Sealer,
    iter_records,
    open_envelope,
    parse_header,
    seal_envelope,
)

KEY = bytes(range(32))
KID = str(uuid.UUID(int=0x1234))


def seal(pt: bytes = b"hello", seq: int = 7, sender: str = "dev-1") -> bytes:
    return seal_envelope(
        AESGCM(KEY), pt, mode=1, kind=KIND_DEVICE, key_id=KID, epoch=9, seq=seq, sender_id=sender
    )


def test_layout_matches_the_documented_bytes():
    rec = seal(b"abc", seq=7, sender="dev-1")
    assert rec[0] == 1
    assert rec[1] == 1
    assert rec[2] == 3
    assert rec[3] == 5
    assert rec[4:20] == uuid.UUID(KID).bytes
    assert struct.unpack(">I", rec[20:24])[0] == 9
    assert struct.unpack(">Q", rec[24:32])[0] == 7
    assert struct.unpack(">I", rec[32:36])[0] == 3 + 16
    assert rec[36:41] == b"dev-1"
    nonce = bytes(4) + (7).to_bytes(8, "big")
    assert AESGCM(KEY).decrypt(nonce, rec[41:], rec[:41]) == b"abc"  # independent open
    assert len(rec) == 36 + 5 + 3 + 16


@given(st.binary(max_size=2048), st.integers(1, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_open_seal_round_trip(pt, seq, epoch):
    rec = seal_envelope(
        AESGCM(KEY), pt, mode=2, kind=KIND_DEVICE, key_id=KID, epoch=epoch, seq=seq, sender_id="s"
    )
    ((header, body),) = list(iter_records(rec))
    assert (header.seq, header.epoch, header.key_id_str, header.mode) == (seq, epoch, KID, 2)
    assert open_envelope(AESGCM(KEY), header, body) == pt


def open_all(data: bytes) -> list[bytes]:
    return [open_envelope(AESGCM(KEY), h, b) for h, b in iter_records(data)]


def test_every_byte_flip_is_rejected():
    rec = seal(os.urandom(40))
    for i in range(len(rec)):
        for bit in (0x01, 0x80):
            bad = bytearray(rec)
            bad[i] ^= bit
            with pytest.raises(EnvelopeError):
                open_all(bytes(bad))


def test_wrong_key_is_an_opaque_authentication_error():
    ((header, body),) = list(iter_records(seal()))
    with pytest.raises(AuthenticationError) as info:
        open_envelope(AESGCM(os.urandom(32)), header, body)
    assert info.value.reason == "auth_failed"
    assert str(info.value) == "envelope authentication failed"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r[:20], "truncated"),
        (lambda r: bytes([2]) + r[1:], "bad_version"),
        (lambda r: r[:1] + bytes([9]) + r[2:], "bad_mode"),
        (lambda r: r[:2] + bytes([7]) + r[3:], "bad_kind"),
        (lambda r: r[:3] + bytes([0]) + r[4:], "bad_sender"),
        (lambda r: r[:3] + bytes([65]) + r[4:], "bad_sender"),
        (lambda r: r[:36] + b"d v-1" + r[41:], "bad_sender"),
        (lambda r: r[:32] + (8).to_bytes(4, "big") + r[36:], "bad_length"),
        (lambda r: r[:32] + (2**30).to_bytes(4, "big") + r[36:], "bad_length"),
        (lambda r: r[:-1], "truncated"),
    ],
)
def test_malformed_fields_have_clear_reasons(mutate, reason):
    with pytest.raises(MalformedEnvelopeError) as info:
        parse_header(mutate(seal()))
    assert info.value.reason == reason


def test_sealer_never_repeats_a_nonce_and_stops_at_its_limit():
    sealer = Sealer(
        AESGCM(KEY), mode=1, kind=KIND_DEVICE, key_id=KID, epoch=1, sender_id="d", max_records=500
    )
    seqs = [parse_header(sealer.seal(b"x"))[0].seq for _ in range(500)]
    assert seqs == list(range(1, 501))  # nonce = 0^32 || seq: all distinct under this key
    with pytest.raises(ConfigError):
        sealer.seal(b"x")


def test_seal_rejects_bad_fields():
    with pytest.raises(ConfigError):
        seal(sender="bad id")
    with pytest.raises(ConfigError):
        seal(seq=0)


def test_replay_window():
    w = ReplayWindow(64)
    for s in (1, 2, 5, 3):
        w.check(s)
        w.commit(s)
    for s in (1, 2, 3, 5):
        with pytest.raises(ReplayError) as info:
            w.check(s)
        assert info.value.reason == "replay"
    w.check(4)  # reordered but inside the window: accepted once
    w.commit(4)
    w.check(200)
    w.commit(200)
    with pytest.raises(ReplayError) as info:
        w.check(136)  # 200 - 136 = 64: just outside the window
    assert info.value.reason == "too_old"
    w.check(137)
