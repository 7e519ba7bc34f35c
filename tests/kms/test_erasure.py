"""Erasure that holds: no delivered key is left in a KME's store files, wrapped or not."""

from __future__ import annotations

import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.kms import KeyStore
from qkdtwin.kms import store as store_mod
from qkdtwin.kms.client import KmeClient
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.kek import create_kek, load_kek

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

SAES = {"sae-a": "kme-a", "sae-b": "kme-b"}


def _files(directory: Path) -> list[Path]:
    """Every store file a copy of the disk would hold: database, WAL, shared memory, journal."""
    return [p for p in directory.iterdir() if p.is_file() and ".db" in p.name]


def _found(directory: Path, needles: list[bytes]) -> list[bytes]:
    blobs = [p.read_bytes() for p in _files(directory)]
    return [n for n in needles if any(n in b for b in blobs)]


def _client(net: DevNetwork, sae: str) -> KmeClient:
    cert, key = net.pki.saes[sae]
    return KmeClient(net.url(SAES[sae]), cert, key, net.pki.ca_cert)


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _stored_blobs(store: KeyStore, key_ids: list[str]) -> list[bytes]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT material FROM kms_keys WHERE key_id IN (" + ",".join("?" * len(key_ids)) + ")",
            tuple(key_ids),
        ).all()
    return [bytes(r[0]) for r in rows if r[0] is not None]


@pytest.fixture
def short_retry_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # the sweeper erases a fetched key once the idempotent-retry window has passed
    monkeypatch.setattr(store_mod, "RETRY_WINDOW_S", 0.5)


@pytest.mark.parametrize("wrap", [False, True], ids=["unwrapped", "wrapped"])
def test_no_delivered_key_is_left_in_the_store_files(tmp_path, short_retry_window, wrap):
    net = DevNetwork(
        tmp_path, ["kme-a", "kme-b"], [("kme-a", "kme-b")], SAES,
        initial_keys=60, run_feeders=False, wrap=wrap,
    ).start()  # fmt: skip
    try:
        assert net.wrapped is wrap
        with _client(net, "sae-a") as a, _client(net, "sae-b") as b:
            keys = [k for _ in range(4) for k in a.get_keys("sae-b", number=5)]
            ids = [k.key_id for k in keys]
            materials = [k.material for k in keys]
            slave_store = net.stores["kme-b"]["kme-a"]
            blobs = _stored_blobs(slave_store, ids)  # what the slave's KME keeps meanwhile
            assert len(blobs) == len(ids)
            # the control: before the slave has them, the KME's files do hold them
            if wrap:
                assert _found(tmp_path, blobs)
                assert not _found(tmp_path, materials)
            else:
                assert _found(tmp_path, materials)
            got = b.get_keys_with_ids("sae-a", ids)
            assert [k.material for k in got] == materials
        # the master's copies go once it has its response, the slave's after the retry
        # window; the WAL is emptied after the next quiet checkpoint
        for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
            st = net.stores[kme][peer]
            _wait(lambda st=st: st.counters().reserved == 0, 10.0, f"erasure at {kme}")
        _wait(lambda: not _found(tmp_path, materials + blobs), 10.0, "delivered keys in the files")
        for p in _files(tmp_path):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        audit = net.stores["kme-a"]["kme-b"].audit_log()
        assert {e["action"] for e in audit if e["key_id"] in ids} == {"enc", "erase"}
    finally:
        net.stop()


def test_a_relays_source_copy_is_erased_once_the_master_has_it(tmp_path):
    saes = {"sae-a": "kme-a", "sae-c": "kme-c"}
    net = DevNetwork(
        tmp_path, ["kme-a", "kme-b", "kme-c"], [("kme-a", "kme-b"), ("kme-b", "kme-c")], saes,
        initial_keys=20, run_feeders=False,
    ).start()  # fmt: skip
    try:
        cert, key = net.pki.saes["sae-a"]
        with KmeClient(net.url("kme-a"), cert, key, net.pki.ca_cert) as a:
            keys = a.get_keys("sae-c", number=3)
        relayed = net.stores["kme-a"]["relayed"]
        _wait(lambda: relayed.counters().reserved == 0, 5.0, "source copies erased")
        assert all(relayed.raw_material(k.key_id) is None for k in keys)
        # the destination keeps them for the slave
        assert net.stores["kme-c"]["relayed"].counters().reserved == 3
    finally:
        net.stop()


def test_a_reservation_never_fetched_is_erased_after_its_ttl(tmp_path):
    now = [1000.0]
    st = KeyStore(f"sqlite:///{tmp_path / 's.db'}", reserved_ttl_s=60.0, now=lambda: now[0])
    try:
        st.add_keys([(str(uuid.uuid4()), os.urandom(32)) for _ in range(3)])
        (k,) = st.reserve("sae-a", ["sae-b"], 1, 256)
        now[0] += 59.0
        assert st.sweep() == 0
        now[0] += 2.0
        assert st.sweep() == 1
        assert st.raw_material(k.key_id) is None
        assert [e["action"] for e in st.audit_log() if e["key_id"] == k.key_id] == [
            "enc",
            "stale",
        ]
        assert st.counters().reserved == 0
        with pytest.raises(ConfigError):
            KeyStore(f"sqlite:///{tmp_path / 't.db'}", reserved_ttl_s=1.0)  # <= retry window
    finally:
        st.close()


def test_a_store_knows_its_key_encryption_key(tmp_path):
    k1 = load_kek(create_kek(tmp_path / "k1.bin"))
    k2 = load_kek(create_kek(tmp_path / "k2.bin"))
    assert stat.S_IMODE((tmp_path / "k1.bin").stat().st_mode) == 0o600
    create_kek(tmp_path / "k1.bin")
    assert load_kek(tmp_path / "k1.bin") == k1  # an existing KEK is kept
    wrapped = f"sqlite:///{tmp_path / 'w.db'}"
    KeyStore(wrapped, kek=k1).close()
    with pytest.raises(ConfigError, match="is wrapped"):
        KeyStore(wrapped)
    with pytest.raises(ConfigError, match="another key-encryption key"):
        KeyStore(wrapped, kek=k2)
    plain = f"sqlite:///{tmp_path / 'p.db'}"
    KeyStore(plain).close()
    with pytest.raises(ConfigError, match="without wrapping"):
        KeyStore(plain, kek=k1)
    loose = tmp_path / "loose.bin"
    loose.write_bytes(os.urandom(32))
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_kek(loose)
    short = tmp_path / "short.bin"
    short.write_bytes(b"x" * 5)
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="5 bytes"):
        load_kek(short)


def test_epoch_keys_leave_old_row_versions_unreadable(tmp_path, db_url):
    """What an old row version (PostgreSQL before VACUUM) holds can no longer be unwrapped."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    now = [1_000.0]
    kek = load_kek(create_kek(tmp_path / "kek.bin"))
    st = KeyStore(db_url, kek=kek, epoch_dir=tmp_path / "epochs", epoch_s=100.0,
                  now=lambda: now[0])  # fmt: skip
    try:
        keys = [(str(uuid.uuid4()), os.urandom(32)) for _ in range(10)]
        st.add_keys(keys)
        old = {k: st.raw_material(k) for k, _ in keys}  # what an old row version keeps
        epoch_dir = tmp_path / "epochs" / st.store_id()
        assert [p.name for p in epoch_dir.iterdir()] == ["epoch-10.key"]
        assert stat.S_IMODE((epoch_dir / "epoch-10.key").stat().st_mode) == 0o600
        now[0] += 100.0  # epoch 11: epoch 10 is the previous one, kept
        assert st.sweep() == 0
        assert (epoch_dir / "epoch-10.key").exists()
        now[0] += 100.0  # epoch 12: the survivors are re-wrapped, epoch 10's key destroyed
        st.sweep()
        assert not (epoch_dir / "epoch-10.key").exists()
        assert all(st.raw_material(k) != old[k] for k, _ in keys)
        # an attacker with a copy of the disk: every key file left, and the KEK itself
        candidates = [p.read_bytes() for p in epoch_dir.iterdir()] + [kek]
        for key_id, blob in old.items():
            for cand in candidates:
                for nonce, ct, aad in (
                    (blob[5:17], blob[17:], key_id.encode() + b"|" + blob[1:5]),
                    (blob[:12], blob[12:], key_id.encode()),
                ):
                    with pytest.raises(InvalidTag):
                        AESGCM(cand).decrypt(nonce, ct, aad)
        # the survivors are intact
        got = st.reserve("sae-a", ["sae-b"], 10, 256)
        assert sorted(k.material for k in got) == sorted(m for _, m in keys)
    finally:
        st.close()


def test_scrub_leaves_no_stale_copy_in_free_page_space(tmp_path):
    """SQLite keeps old copies of moved cells in pages' free gaps; a scrub rewrites them."""
    st = KeyStore(f"sqlite:///{tmp_path / 's.db'}", scrub_interval_s=None)
    try:
        keys = [(str(uuid.uuid4()), os.urandom(32)) for _ in range(3000)]
        st.add_keys(keys)
        gone: list[bytes] = []
        for _ in range(40):  # reservations handed over and erased, others undone: rows grow
            taken = st.reserve("sae-a", ["sae-b"], 25, 256, slaves_here=False)
            st.erase_handed_over([k.key_id for k in taken], "test")
            gone += [k.material for k in taken]
            back = st.reserve("sae-a", ["sae-b"], 10, 256, slaves_here=False)
            st.unreserve([k.key_id for k in back], "test")
        st.checkpoint()
        before = _found(tmp_path, gone)  # what secure_delete alone leaves (2 of 1000 here)
        st.scrub()
        assert not _found(tmp_path, gone), f"{len(before)} before the scrub"
        live = [m for _k, m in keys[-100:]]
        assert len(_found(tmp_path, live)) == 100  # the live keys are all still there
        assert st.counters().available == 3000 - len(gone)
    finally:
        st.close()
