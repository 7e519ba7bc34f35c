"""Key relay through a line of three KMEs: A - B - C (stores in-process)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from qkdtwin.errors import KmsError
from qkdtwin.kms import KeyStore
from qkdtwin.kms.relay import Hop, RelayError, relay_key


def _line(tmp: Path, keys_per_link: int = 4) -> dict[str, KeyStore]:
    """Link stores ab@A, ab@B, bc@B, bc@C (same IDs and material per link) and end stores."""
    s = {n: KeyStore(f"sqlite:///{tmp / n}.db") for n in ("ab_a", "ab_b", "bc_b", "bc_c", "a", "c")}
    for left, right in (("ab_a", "ab_b"), ("bc_b", "bc_c")):
        keys = [(str(uuid.uuid4()), os.urandom(32)) for _ in range(keys_per_link)]
        s[left].add_keys(keys)
        s[right].add_keys(keys)
    return s


def _hops(s: dict[str, KeyStore]) -> list[Hop]:
    return [
        Hop("kme-a", "kme-b", s["ab_a"], s["ab_b"]),
        Hop("kme-b", "kme-c", s["bc_b"], s["bc_c"]),
    ]


def test_relay_delivers_identical_key_and_accounts_each_hop(tmp_path: Path) -> None:
    s = _line(tmp_path)
    try:
        r = relay_key(_hops(s), s["a"], s["c"], size_bits=256)
        assert len(r.material) == 32
        # both ends hold the identical key under one ID, ready for enc_keys / dec_keys
        got_a = s["a"].reserve("sae-a", ["sae-c"], 1, 256)
        got_c = s["c"].reserve("sae-c", ["sae-a"], 1, 256)
        assert got_a[0] == got_c[0]
        assert got_a[0].key_id == r.key_id
        assert got_a[0].material == r.material
        # one link key consumed per hop, at both ends of that link, and audited
        assert [h for h, _ in r.consumed] == [0, 1]
        for name in ("ab_a", "ab_b", "bc_b", "bc_c"):
            assert s[name].available_count() == 3
            assert [e["action"] for e in s[name].audit_log()] == ["relay"]
        for hop, key_id in r.consumed:
            for name in (("ab_a", "ab_b"), ("bc_b", "bc_c"))[hop]:
                info = s[name].key_info(key_id)
                assert info is not None
                assert info.state == "erased"
                assert s[name].raw_material(key_id) is None  # a pad is never used twice
    finally:
        for st in s.values():
            st.close()


def test_failure_at_middle_hop_installs_nothing(tmp_path: Path) -> None:
    s = _line(tmp_path)
    try:

        def broken(hop: int, key_id: str, ciphertext: bytes) -> tuple[str, bytes]:
            if hop == 1:
                raise KmsError("link B-C down")
            return key_id, ciphertext

        with pytest.raises(RelayError) as exc:
            relay_key(_hops(s), s["a"], s["c"], transport=broken)
        assert exc.value.hop == 1
        assert [h for h, _ in exc.value.consumed] == [0, 1]
        assert s["a"].available_count() == 0
        assert s["c"].available_count() == 0
        # hop 0 completed: its link key is gone at both ends; hop 1's pad was used at B only
        assert s["ab_a"].available_count() == s["ab_b"].available_count() == 3
        assert s["bc_b"].available_count() == 3
        # the pad B used and never delivered is not reused; C's copy stays unused
        assert s["bc_c"].available_count() == 4
        # a later relay still works and both ends agree
        r = relay_key(_hops(s), s["a"], s["c"])
        assert s["a"].reserve("x", [], 1, 256)[0].material == r.material
    finally:
        for st in s.values():
            st.close()


def test_middle_link_exhausted(tmp_path: Path) -> None:
    s = _line(tmp_path, keys_per_link=1)
    try:
        relay_key(_hops(s), s["a"], s["c"])
        with pytest.raises(RelayError) as exc:
            relay_key(_hops(s), s["a"], s["c"])
        assert exc.value.hop == 0  # the first link is already out of keys
        assert s["a"].available_count() == 1
        assert s["c"].available_count() == 1
    finally:
        for st in s.values():
            st.close()


def test_tampered_ciphertext_is_detected_and_installs_nothing(tmp_path: Path) -> None:
    s = _line(tmp_path)
    try:

        def flip(hop: int, key_id: str, ciphertext: bytes) -> tuple[str, bytes]:
            return key_id, bytes([ciphertext[0] ^ 1]) + ciphertext[1:] if hop == 1 else ciphertext

        with pytest.raises(RelayError, match="mismatch at hop 1"):
            relay_key(_hops(s), s["a"], s["c"], transport=flip)
        assert s["a"].available_count() == 0
        assert s["c"].available_count() == 0
    finally:
        for st in s.values():
            st.close()


def test_destination_full_is_compensated_at_source(tmp_path: Path) -> None:
    s = _line(tmp_path)
    full = KeyStore(f"sqlite:///{tmp_path / 'full'}.db", max_key_count=1)
    full.add_keys([(str(uuid.uuid4()), os.urandom(32))])
    try:
        with pytest.raises(RelayError, match="destination"):
            relay_key(_hops(s), s["a"], full)
        assert s["a"].available_count() == 0
        assert full.available_count() == 1
    finally:
        full.close()
        for st in s.values():
            st.close()
