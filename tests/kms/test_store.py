from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qkdtwin.errors import ConfigError, KeyAccessError, KeyExhaustedError, KmsRequestError
from qkdtwin.kms import RETRY_WINDOW_S, KeyStore

from .conftest import FakeClock


def _keys(n: int, nbytes: int = 32) -> list[tuple[str, bytes]]:
    return [(str(uuid.uuid4()), os.urandom(nbytes)) for _ in range(n)]


@pytest.fixture(params=[True, False], ids=["pooled", "unpooled"])
def keep(request: pytest.FixtureRequest) -> bool:
    """``keep_connections``: the pooled store (servers) and the unpooled one (the live twin's
    thousands of stores, which share one SQLite dialect and compiled-statement cache)."""
    return bool(request.param)


@pytest.fixture
def store(db_url: str, clock: FakeClock, keep: bool) -> Iterator[KeyStore]:
    s = KeyStore(db_url, now=clock, max_key_count=1000, keep_connections=keep)
    yield s
    s.close()


def test_reserve_then_fetch_once(store: KeyStore) -> None:
    supplied = dict(_keys(5))
    assert store.add_keys(supplied.items()) == 5
    got = store.reserve("sae-a", ["sae-b"], 3, 256)
    assert len(got) == 3
    assert all(supplied[k.key_id] == k.material for k in got)
    assert store.available_count() == 2
    again = store.fetch("sae-b", [k.key_id for k in got], master_sae_id="sae-a")
    assert again == got
    assert [e["action"] for e in store.audit_log()] == ["enc"] * 3 + ["dec"] * 3


def test_truncates_to_requested_size(store: KeyStore) -> None:
    store.add_keys(_keys(1, 128))
    (k,) = store.reserve("a", ["b"], 1, 64)
    assert len(k.material) == 8
    assert store.fetch("b", [k.key_id])[0].material == k.material


def test_retry_window_then_refused(store: KeyStore, clock: FakeClock) -> None:
    store.add_keys(_keys(1))
    (k,) = store.reserve("a", ["b"], 1, 256)
    store.fetch("b", [k.key_id])
    clock.t += RETRY_WINDOW_S - 0.5
    assert store.fetch("b", [k.key_id]) == [k]  # idempotent retry
    clock.t += 1.0
    with pytest.raises(KmsRequestError, match="already delivered"):
        store.fetch("b", [k.key_id])
    assert store.erase_delivered() == 1
    assert store.raw_material(k.key_id) is None
    info = store.key_info(k.key_id)
    assert info is not None
    assert info.state == "erased"


def test_fetch_errors_consume_nothing(store: KeyStore) -> None:
    store.add_keys(_keys(3))
    k1, k2 = store.reserve("a", ["b"], 2, 256)
    with pytest.raises(KmsRequestError, match="unknown"):
        store.fetch("b", [k1.key_id, str(uuid.uuid4())])
    with pytest.raises(KeyAccessError):
        store.fetch("c", [k1.key_id])
    with pytest.raises(KeyAccessError):
        store.fetch("b", [k1.key_id], master_sae_id="x")
    with pytest.raises(KmsRequestError, match="repeated"):
        store.fetch("b", [k1.key_id, k1.key_id])
    # none of those consumed anything: a later fetch long after still works
    assert [e["action"] for e in store.audit_log()] == ["enc", "enc"]
    assert store.fetch("b", [k1.key_id, k2.key_id]) == [k1, k2]


def test_exhausted_reserves_nothing(store: KeyStore) -> None:
    store.add_keys(_keys(2))
    with pytest.raises(KeyExhaustedError):
        store.reserve("a", ["b"], 3, 256)
    assert store.available_count() == 2
    with pytest.raises(KeyExhaustedError):
        store.reserve("a", ["b"], 1, 512)


def test_ttl_expiry(store: KeyStore, clock: FakeClock, db_url: str) -> None:
    s = KeyStore(db_url, now=clock, ttl_s=10.0)
    try:
        s.add_keys(_keys(2))
        clock.t += 11.0
        assert s.available_count() == 0
        with pytest.raises(KeyExhaustedError):
            s.reserve("a", ["b"], 1, 256)
        assert s.expire() == 2
    finally:
        s.close()


def test_max_key_count(db_url: str, clock: FakeClock) -> None:
    s = KeyStore(db_url, now=clock, max_key_count=4)
    try:
        assert s.add_keys(_keys(3)) == 3
        assert s.add_keys(_keys(3)) == 1
        assert s.available_count() == 4
    finally:
        s.close()


def test_multicast_each_slave_once(store: KeyStore, clock: FakeClock) -> None:
    store.add_keys(_keys(1))
    (k,) = store.reserve("a", ["b", "c"], 1, 256)
    assert store.fetch("b", [k.key_id]) == [k]
    clock.t += 10
    assert store.erase_delivered() == 0  # c has not fetched it yet
    assert store.fetch("c", [k.key_id]) == [k]
    clock.t += 10
    assert store.erase_delivered() == 1


def test_wrapping_at_rest(sqlite_url: str, clock: FakeClock) -> None:
    kek = os.urandom(32)
    s = KeyStore(sqlite_url, now=clock, kek=kek)
    try:
        ((kid, material),) = supplied = _keys(1)
        s.add_keys(supplied)
        blob = s.raw_material(kid)
        assert blob is not None
        assert material not in blob
        assert len(blob) == 12 + 32 + 16
        (k,) = s.reserve("a", ["b"], 1, 256)
        assert k.material == material
    finally:
        s.close()
    with pytest.raises(ConfigError):
        KeyStore(sqlite_url, kek=b"short")


def test_audit_never_holds_material(store: KeyStore) -> None:
    store.add_keys(_keys(1))
    (k,) = store.reserve("a", ["b"], 1, 256)
    store.fetch("b", [k.key_id])
    assert all(set(e) == {"at", "sae_id", "key_id", "action"} for e in store.audit_log())


def test_bad_supply_rejected(store: KeyStore) -> None:
    with pytest.raises(ConfigError):
        store.add_keys([("not-a-uuid", b"x")])
    with pytest.raises(ConfigError):
        store.add_keys([(str(uuid.uuid4()), b"")])


def test_concurrent_reservations_never_share_a_key(db_url: str, keep: bool) -> None:
    n_threads, per_thread = 8, 20
    s = KeyStore(db_url, max_key_count=10_000, keep_connections=keep)
    try:
        s.add_keys(_keys(n_threads * per_thread - 10))
        got: list[str] = []
        lock = threading.Lock()
        exhausted = []

        def worker() -> None:
            for _ in range(per_thread):
                try:
                    keys = s.reserve("a", ["b"], 1, 256)
                except KeyExhaustedError:
                    exhausted.append(1)
                    continue
                with lock:
                    got.extend(k.key_id for k in keys)

        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(got) == len(set(got)) == n_threads * per_thread - 10
        assert len(exhausted) == 10
        assert s.available_count() == 0
    finally:
        s.close()


def test_reserve_named_key_ids_mirrors_peer(db_url: str, tmp_path: Path) -> None:
    """KME-to-KME sync: the peer store reserves exactly the key_IDs the other end reserved."""
    a = KeyStore(db_url)
    b = KeyStore(f"sqlite:///{tmp_path / 'peer.db'}")  # the peer KME's own store
    try:
        keys = [(str(uuid.uuid4()), os.urandom(32)) for _ in range(6)]
        a.add_keys(keys)
        b.add_keys(keys)
        got = a.reserve("sae-a", ["sae-b"], 2, 128)
        mirrored = b.reserve("sae-a", ["sae-b"], 2, 128, key_ids=[k.key_id for k in got])
        assert sorted(mirrored, key=lambda k: k.key_id) == sorted(got, key=lambda k: k.key_id)
        assert b.fetch("sae-b", [k.key_id for k in got], master_sae_id="sae-a") == got
        assert [e["action"] for e in b.audit_log()] == ["sync", "sync", "dec", "dec"]
        with pytest.raises(KeyExhaustedError):  # already reserved at the peer
            b.reserve("sae-a", ["sae-b"], 1, 128, key_ids=[got[0].key_id])
    finally:
        a.close()
        b.close()


def test_incremental_erasure_matches_a_reference_model(
    db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """Random reserve/fetch/clock steps; after each erase_delivered, the erased set equals
    the rule applied from scratch: reserved, every slave fetched, the last fetch more than
    RETRY_WINDOW_S ago. A reopened store (no watermark) agrees too."""
    import random

    rnd = random.Random(5)
    s = KeyStore(db_url, now=clock)
    try:
        s.add_keys(_keys(60))
        slaves_of: dict[str, list[str]] = {}
        fetched_at: dict[tuple[str, str], float] = {}
        for step in range(80):
            op = rnd.random()
            if op < 0.3 and s.available_count():
                slaves = rnd.choice([["b"], ["b", "c"]])
                (k,) = s.reserve("a", slaves, 1, 256)
                slaves_of[k.key_id] = slaves
            elif op < 0.7 and slaves_of:
                key_id = rnd.choice(list(slaves_of))
                slave = rnd.choice(slaves_of[key_id])
                if (key_id, slave) not in fetched_at:
                    s.fetch(slave, [key_id])
                    fetched_at[key_id, slave] = clock.t
            else:
                clock.t += rnd.choice([0.5, 2.0, 4.0])
            if step % 5 == 4:
                store = s if step % 10 == 4 else KeyStore(db_url, now=clock)
                store.erase_delivered()
                expected = {
                    k
                    for k, slaves in slaves_of.items()
                    if all((k, sl) in fetched_at for sl in slaves)
                    and max(fetched_at[k, sl] for sl in slaves) <= clock.t - RETRY_WINDOW_S
                }
                erased = {k for k in slaves_of if s.key_info(k).state == "erased"}  # type: ignore[union-attr]
                assert erased == expected, step
                if store is not s:
                    store.close()
        assert expected  # the walk did erase keys
    finally:
        s.close()


def test_master_copies_erased_after_the_window_match_a_reference_model(
    db_url: str, clock: FakeClock
) -> None:
    """Random master-side reservations (slaves at the peer), hand-overs, undos and clock steps;
    after each erase_delivered, the erased set equals the rule applied from scratch: a copy
    still reserved whose reservation is more than RETRY_WINDOW_S old. An undone key reserved
    again is judged by its new reservation, not by the old one's pending-hand-over entry."""
    import random

    rnd = random.Random(11)
    s = KeyStore(db_url, now=clock)
    try:
        s.add_keys(_keys(40))
        reserved_at: dict[str, float] = {}  # the copies still reserved here, by reservation time
        erased: set[str] = set()
        for step in range(120):
            op = rnd.random()
            if op < 0.35 and s.available_count():
                n = min(s.available_count(), rnd.choice([1, 2]))
                for k in s.reserve("a", ["b"], n, 256, slaves_here=False):
                    reserved_at[k.key_id] = clock.t
            elif op < 0.5 and reserved_at:  # the response went out: handed over
                key_id = rnd.choice(list(reserved_at))
                assert s.erase_handed_over([key_id], "test") == 1
                del reserved_at[key_id]
                erased.add(key_id)
            elif op < 0.7 and reserved_at:  # the client went away: back to the pool
                key_id = rnd.choice(list(reserved_at))
                assert s.unreserve([key_id], "test").returned == [key_id]
                del reserved_at[key_id]
            else:
                clock.t += rnd.choice([0.5, 2.0, 4.0])
            if step % 4 == 3:
                s.erase_delivered()
                due = {k for k, t in reserved_at.items() if t <= clock.t - RETRY_WINDOW_S}
                erased |= due
                for k in due:
                    del reserved_at[k]
                states = {k: s.key_info(k).state for k in erased | set(reserved_at)}  # type: ignore[union-attr]
                assert {k for k, st in states.items() if st == "erased"} == erased, step
                assert all(states[k] == "reserved" for k in reserved_at), step
        assert len(erased) > 5  # the walk did erase copies
    finally:
        s.close()


def test_an_older_store_lists_its_pending_master_copies(sqlite_url: str, clock: FakeClock) -> None:
    """A store made before the hand-over table existed: its master-side copies still reserved
    are found when it is opened, and erased once the retry window has passed."""
    s = KeyStore(sqlite_url, now=clock)
    s.add_keys(_keys(10))
    copies = s.reserve("a", ["b"], 3, 256, slaves_here=False)
    mirrored = s.reserve("a", ["b"], 2, 256)  # slaves fetch here: not a master-side copy
    with s.engine.begin() as conn:  # as an older version left it
        conn.exec_driver_sql("DROP TABLE kms_handover")
    s.close()
    s = KeyStore(sqlite_url, now=clock)
    try:
        clock.t += RETRY_WINDOW_S + 1
        assert s.erase_delivered() == 3
        assert {s.key_info(k.key_id).state for k in copies} == {"erased"}  # type: ignore[union-attr]
        assert {s.key_info(k.key_id).state for k in mirrored} == {"reserved"}  # type: ignore[union-attr]
    finally:
        s.close()


def test_sqlite_checkpoints_off_the_commit_path(tmp_path: Path) -> None:
    """Auto-checkpoint is off; checkpoint() copies every WAL frame into the database."""
    from qkdtwin.kms.store import _CHECKPOINTER

    s = KeyStore(f"sqlite:///{tmp_path / 'k.db'}")
    # the process's checkpoint thread (every 0.5 s) would race this test's own checkpoint
    _CHECKPOINTER.discard(s)
    wal = tmp_path / "k.db-wal"
    try:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        s.add_keys(_keys(500))
        assert wal.stat().st_size > 0  # the commit wrote the WAL, nothing checkpointed it
        busy, log, done = s.checkpoint()
        assert busy == 0
        assert log == done > 0  # every frame of the WAL is in the database file
        assert wal.stat().st_size == 0  # and the WAL was truncated after it
    finally:
        s.close()
    s.close()  # idempotent


def _descriptors_on(path: Path) -> int:
    """Open file descriptors of this process on ``path`` or its -wal/-shm files (/proc)."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    fd_dir = Path("/proc/self/fd")
    n = 0
    for fd in fd_dir.iterdir():
        try:
            n += os.readlink(fd) in names
        except OSError:  # closed while listing
            continue
    return n


def _add_reserve_fetch(store: KeyStore, n: int) -> tuple[list[tuple[str, bytes]], list]:
    """Add ``n`` keys, reserve two and fetch them: a write, a reservation and reads."""
    keys = _keys(n)
    store.add_keys(keys)
    got = store.reserve("a", ["b"], 2, 256)
    assert store.fetch("b", [k.key_id for k in got]) == got
    assert store.available_count() == n - 2
    return keys, got


def test_a_store_that_keeps_no_connections_holds_no_descriptor_at_rest(
    tmp_path: Path, keep: bool
) -> None:
    """keep_connections=False: every transaction closes its connection, reads and writes alike.

    The reference is the kernel's own list of this process's descriptors; the pooled store
    (the default) is the control that shows the check can fail.
    """
    path = tmp_path / "s.db"
    store = KeyStore(f"sqlite:///{path}", keep_connections=keep)
    try:
        keys, got = _add_reserve_fetch(store, 4)
        store.checkpoint()
        held = _descriptors_on(path)
        if keep:
            assert held >= 3  # database + WAL of a kept connection, the shared memory
        else:
            assert held == 0
            # and the data is all there through fresh connections
            assert sorted(k.key_id for k in store.reserve("a", ["b"], 2, 256)) == sorted(
                k for k, _ in keys if k not in {g.key_id for g in got}
            )
            assert _descriptors_on(path) == 0
    finally:
        store.close()
    assert _descriptors_on(path) == 0


def test_a_postgresql_store_that_keeps_no_connections_holds_none_at_rest(
    pg_url: str, keep: bool
) -> None:
    """The same promise on PostgreSQL: the server's own list of sessions (pg_stat_activity,
    by this test's application_name) is the reference; the pooled store is the control."""
    import sqlalchemy as sa

    app = f"qkdtwin_test_{uuid.uuid4().hex[:8]}"
    store = KeyStore(f"{pg_url}&application_name={app}", keep_connections=keep)
    admin = sa.create_engine(pg_url)
    try:
        _add_reserve_fetch(store, 3)
        with admin.connect() as conn:
            held = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                {"a": app},
            ).scalar_one()
        assert (held >= 1) if keep else (held == 0)
    finally:
        store.close()
        admin.dispose()


def test_unpooled_sqlite_stores_compile_each_statement_once(tmp_path: Path, keep: bool) -> None:
    """SQLAlchemy keeps a statement's compiled form per engine: a twin's 4,000 stores held
    ~1,400 objects each for the garbage collector to walk. Unpooled SQLite stores share one
    dialect and one cache, so six stores doing the same work hold as many compiled statements
    as one; pooled stores (the control) hold one set per engine."""
    import gc

    from sqlalchemy.sql.compiler import Compiled

    def compiled_after(n: int) -> int:
        stores = [
            KeyStore(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}", keep_connections=keep)
            for _ in range(n)
        ]
        try:
            for st in stores:
                _add_reserve_fetch(st, 4)
            gc.collect()
            return sum(isinstance(o, Compiled) for o in gc.get_objects())
        finally:
            for st in stores:
                st.close()

    compiled_after(1)  # the statements of a first store, compiled once in any case
    one, six = compiled_after(1), compiled_after(6)
    if keep:
        assert six >= one + 5 * 5  # each engine compiles its own (~10 statements each)
    else:
        assert six == one
