"""Admission control of SAE requests, and the accounting of keys under overload.

Unit tests of :class:`~qkdtwin.kms.admission.AdmissionGate` and
:meth:`~qkdtwin.kms.store.KeyStore.unreserve`; then a KME pair (:class:`DevNetwork`, both
KMEs in this process over real mutual TLS, feeders off, material unwrapped) hammered by
many SAE clients with short timeouts from a separate process (``sae_load.py``), in one
direction and in both at once. Afterwards every key is accounted for, per direction, at the
master's KME (link store ``SA``) and the slave's (``SB``):

* **consumed** ``C``: keys that left the pool at ``SA`` (audit ``enc`` minus ``undo``);
* **received** ``R``: key_IDs the clients actually got (none twice);
* **sent** ``S``: keys whose response the server wrote (``erase`` under
  ``store:handed-over`` at ``SA``, run only after a response that was not dropped);
* **stranded** ``T = S - R``: written but never read (the client gave up in between);
* **wasted** ``W``: consumed keys revoked (a failed mirror or undo);
* **unaccounted** ``U = C - R - T - W``: keys that left the pool for a client that never got
  them and were neither undone nor handed over: the failure this admission control removes.

``U`` must be 0, ``T`` at most 1 % of ``C``, and every key owned by the master's KME is in
exactly one place: available (at both ends), received, stranded or wasted. The slave then
fetches every received key (same material), and once the reservation TTL passes (the stores'
clock is moved forward) the stranded keys are erased at ``SB``, audited ``stale``.

The 256-client runs are marked ``slow``; the 64-client runs are in ``make test``. Last, one
request at a time: what a client sees at a full KME or after the queue wait, that peer
mirrors and the operator pass a full KME, and each undo path (mirrored, relayed, failed or
refused at the peer, a single-store KME) with its audit rows at both ends.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from qkdtwin.errors import KmsRequestError
from qkdtwin.kms import KmeConfig, create_app
from qkdtwin.kms.admission import AdmissionGate
from qkdtwin.kms.client import KmeClient, OperatorClient
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.store import RETRY_WINDOW_AUDIT_BY, KeyStore

from .conftest import FakeClock

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

log = logging.getLogger("qkdtwin.tests.admission")

LOAD = Path(__file__).with_name("sae_load.py")
KMES = ["kme-a", "kme-b"]
SAES = {"sae-a": "kme-a", "sae-b": "kme-b"}
PEER_OF = {"kme-a": "kme-b", "kme-b": "kme-a"}
MASTER_OF = {"kme-a": "sae-a", "kme-b": "sae-b"}
HANDED_OVER = "store:handed-over"
LIMITS = {"max_active_requests": 16, "max_queued_requests": 64, "queue_timeout_s": 1.0}


# -- the gate and the store, in isolation -------------------------------------------------------


def test_gate_admits_queues_and_refuses() -> None:
    gate = AdmissionGate(max_active=2, max_queued=1, queue_timeout_s=0.3)

    async def main() -> None:
        assert await gate.acquire() is None
        assert await gate.acquire() is None
        results: list[str | None] = []

        async def queued() -> None:
            results.append(await gate.acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(queued)
            await anyio.sleep(0.05)
            assert gate.counts().queued == 1
            assert await gate.acquire() == "full"  # the queue holds one
            gate.release()  # the slot goes to the waiter, not back to the pool
        assert results == [None]
        assert gate.counts().active == 2
        t = time.monotonic()
        assert await gate.acquire() == "timeout"
        assert 0.25 < time.monotonic() - t < 1.0
        gate.release()
        gate.release()
        c = gate.counts()
        assert (c.active, c.queued) == (0, 0)
        assert (c.admitted_total, c.rejected_total, c.timed_out_total) == (3, 1, 1)

    anyio.run(main)


def test_gate_hands_slots_to_the_newest_waiter() -> None:
    gate = AdmissionGate(max_active=1, max_queued=10, queue_timeout_s=5.0)
    order: list[int] = []

    async def main() -> None:
        assert await gate.acquire() is None

        async def waiter(i: int) -> None:
            assert await gate.acquire() is None
            order.append(i)
            await anyio.sleep(0.01)
            gate.release()

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(waiter, i)
                await anyio.sleep(0.01)
            gate.release()
        assert gate.counts().active == 0

    anyio.run(main)
    assert order == [4, 3, 2, 1, 0]  # last in, first out: see AdmissionGate


def _uuids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_unreserve_returns_keys_and_keeps_the_balance(db_url: str, clock: FakeClock) -> None:
    store = KeyStore(db_url, now=clock)
    try:
        store.add_keys([(k, bytes(range(32))) for k in _uuids(10)], owner="kme-a")
        keys = store.reserve("sae-a", ["sae-b"], 4, 128, owner="kme-a")
        ids = [k.key_id for k in keys]
        store.fetch("sae-b", ids[:1], master_sae_id="sae-a")  # a slave has this one
        done = store.unreserve([*ids, str(uuid.uuid4())], "client-gone")
        assert sorted(done.returned) == sorted(ids[1:])
        assert done.erased == ids[:1]  # never back in the pool: a slave may hold it
        c = store.counters(owner="kme-a")
        assert (c.available, c.owned, c.reserved) == (9, 9, 0)
        assert c.delivered_total == 1
        assert c.erased_total == 1
        assert c.added_total == c.available + c.delivered_total + c.discarded_total
        actions = [(r["key_id"], r["action"]) for r in store.audit_log()]
        assert [a for k, a in actions if k == ids[1]] == ["enc", "undo"]
        assert [a for k, a in actions if k == ids[0]] == ["enc", "dec", "revoke"]
        with pytest.raises(KmsRequestError, match="unknown key_ID"):
            store.fetch("sae-b", ids[1:2], master_sae_id="sae-a")  # the grants are gone
        # back in the pool, truncated to the size reserved, and reservable again
        again = store.reserve("sae-a", ["sae-b"], 9, 128, owner="kme-a")
        assert set(ids[1:]) <= {k.key_id for k in again}
        assert all(len(k.material) == 16 for k in again if k.key_id in ids)
        assert store.unreserve([], "x").returned == []
        # a reopened store (counters backfilled from the audit log) agrees
        store.close()
        store = KeyStore(db_url, now=clock)
        c2 = store.counters(owner="kme-a")
        assert c2.delivered_total == c.delivered_total + 9
    finally:
        store.close()


def test_unreserve_mirrored_only_leaves_own_copies_alone(sqlite_url: str) -> None:
    store = KeyStore(sqlite_url)
    try:
        store.add_keys([(k, b"k" * 32) for k in _uuids(4)])
        own = store.reserve("sae-b", ["sae-a"], 2, 256, slaves_here=False)  # a master copy
        left = [k.key_id for k in own]
        mirror = store.reserve("sae-a", ["sae-b"], 2, 256)  # slaves fetch here: a mirror
        mirror_ids = [k.key_id for k in mirror]
        done = store.unreserve([*left, *mirror_ids], "undo-by:kme-a", mirrored_only=True)
        assert sorted(done.returned) == sorted(mirror_ids)
        assert done.erased == []
        assert all(store.key_info(k).state == "reserved" for k in left)  # type: ignore[union-attr]
    finally:
        store.close()


# -- the KME pair under load --------------------------------------------------------------------


class OffsetClock:
    """Wall-clock time plus a settable offset (moves every store's time forward at once)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock_ahead() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def pair(tmp_path: Path, clock_ahead: OffsetClock) -> Iterator[DevNetwork]:
    net = DevNetwork(
        tmp_path,
        KMES,
        [("kme-a", "kme-b")],
        SAES,
        initial_keys=12_000,
        run_feeders=False,
        wrap=False,
        kme_options=LIMITS,
        now=clock_ahead,
    )
    with net:
        yield net


def _client(net: DevNetwork, sae: str) -> KmeClient:
    cert, key = net.pki.saes[sae]
    return KmeClient(net.url(SAES[sae]), cert, key, net.pki.ca_cert, timeout_s=10.0)


def _run_load(
    net: DevNetwork,
    tmp_path: Path,
    masters: list[str],
    clients: int,
    duration_s: float,
    seed: int,
) -> dict[str, Any]:
    groups = []
    for kme in masters:
        sae = MASTER_OF[kme]
        cert, key = net.pki.saes[sae]
        groups.append(
            {
                "port": net.servers[kme].port,
                "cert": str(cert),
                "key": str(key),
                "slave": MASTER_OF[PEER_OF[kme]],
                "clients": clients // len(masters),
                "number": 2,
            }
        )
    plan = {
        "groups": groups,
        "ca": str(net.pki.ca_cert),
        "duration_s": duration_s,
        "timeout_min_s": 0.5,
        "timeout_max_s": 3.0,
        "seed": seed,
    }
    plan_file, out_file = tmp_path / "plan.json", tmp_path / "load.json"
    plan_file.write_text(json.dumps(plan))
    t = time.monotonic()
    # The run must end: a deadlock between the KMEs would show as a timeout here.
    subprocess.run(
        [sys.executable, str(LOAD), str(plan_file), str(out_file)],
        check=True,
        timeout=duration_s + 30,
    )
    result: dict[str, Any] = json.loads(out_file.read_text())
    result["elapsed_s"] = time.monotonic() - t
    result["masters"] = masters
    return result


def _wait_idle(net: DevNetwork, timeout_s: float = 30.0) -> None:
    """Wait until no KME serves or queues an SAE request (undo work included)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = [net.apps[k].state.admission.counts() for k in KMES]
        if all(c.active == 0 and c.queued == 0 for c in counts):
            return
        time.sleep(0.05)
    raise AssertionError(f"KMEs still busy: {counts}")


@dataclass
class Accounting:
    master: str
    consumed: int
    received: int
    stranded: int
    wasted: int
    unaccounted: int
    undone: int
    requests: int
    ok: int
    busy: int
    timeouts: int
    late: int
    other: int
    goodput_keys_s: float
    busy_share: float
    stranded_ids: set[str] = field(repr=False)
    received_ids: set[str] = field(repr=False)


def _account(net: DevNetwork, load: dict[str, Any], kme: str) -> Accounting:
    """Check and return the accounting of the direction whose master sits behind ``kme``."""
    peer = PEER_OF[kme]
    sa, sb = net.stores[kme][peer], net.stores[peer][kme]
    group = load["masters"].index(kme)
    reqs = [r for r in load["requests"] if r["group"] == group]
    by_outcome = collections.Counter(r["outcome"] for r in reqs)
    # every request was answered within its timeout (as the client's asyncio.wait_for saw
    # it: an answer that arrived by then but was read a little later is late, not lost),
    # or counted timed out
    late = [r for r in reqs if r["outcome"] != "timeout" and r["latency"] > r["timeout"]]
    assert all(r["latency"] <= r["timeout"] + 1.0 for r in late), late[:3]
    assert by_outcome["error"] == 0, [r for r in reqs if r["outcome"] == "error"][:3]
    got = [(k, m) for r in reqs if r["outcome"] == "ok" for k, m in r["keys"]]
    received = {k for k, _ in got}
    assert len(received) == len(got), "a key_ID was received twice"

    audit = sa.audit_log()
    net_enc: collections.Counter[str] = collections.Counter()
    sent: set[str] = set()
    revoked: set[str] = set()
    undone = 0
    # this direction's rows only: SA also mirrors the other direction (sync, undo-by:<peer>)
    mine = {r["key_id"] for r in audit if r["action"] == "enc"}
    for row in (r for r in audit if r["key_id"] in mine):
        if row["action"] == "enc":
            net_enc[row["key_id"]] += 1
        elif row["action"] == "undo":
            net_enc[row["key_id"]] -= 1
            undone += 1
        elif row["action"] == "erase" and row["sae_id"] == HANDED_OVER:
            sent.add(row["key_id"])
        elif row["action"] == "revoke":
            revoked.add(row["key_id"])
    assert set(net_enc.values()) <= {0, 1}
    consumed = {k for k, n in net_enc.items() if n == 1}
    assert received <= sent <= consumed
    stranded = sent - received
    wasted = (consumed - sent) & revoked
    unaccounted = consumed - received - stranded - wasted
    retry_window = {r["key_id"] for r in audit if r["sae_id"] == RETRY_WINDOW_AUDIT_BY}
    assert not unaccounted, (len(unaccounted), len(unaccounted & retry_window))

    # every key this direction owns is in exactly one place, and both ends agree
    available_a = set(_ids_in_state(sa, "available", owner=kme))
    owned = {r["key_id"] for r in audit if r["action"] == "enc"} | available_a
    available_b = set(_ids_in_state(sb, "available", owner=kme))
    assert available_a == available_b
    places = [available_a, received, stranded, wasted]
    assert sum(len(p) for p in places) == len(set().union(*places)) == len(owned)
    assert len(owned) == net.initial_keys // 2  # the pool split per direction

    # the slave gets exactly what its master got; the stranded keys wait at SB ...
    slave, master = MASTER_OF[peer], MASTER_OF[kme]
    material = dict(got)
    ids = sorted(received)
    for i in range(0, len(ids), 128):
        for fetched in sb.fetch(slave, ids[i : i + 128], master_sae_id=master):
            assert base64.b64encode(fetched.material).decode() == material[fetched.key_id]
    batches: dict[float, list[str]] = collections.defaultdict(list)
    reserved_at = {r["key_id"]: r["at"] for r in audit if r["action"] == "enc"}
    for k in stranded:
        batches[reserved_at[k]].append(k)
    for at, batch in sorted(batches.items()):
        log.warning(
            "stranded batch of %s: %d keys reserved at %.3f, sent, never read: %s",
            master,
            len(batch),
            at,
            batch,
        )
    wall = load["wall_s"]
    return Accounting(
        master=kme,
        consumed=len(consumed),
        received=len(received),
        stranded=len(stranded),
        wasted=len(wasted),
        unaccounted=len(unaccounted),
        undone=undone,
        requests=len(reqs),
        ok=by_outcome["ok"],
        busy=by_outcome["busy"],
        timeouts=by_outcome["timeout"],
        late=len(late),
        other=by_outcome["503"],
        goodput_keys_s=len(received) / wall,
        busy_share=by_outcome["busy"] / max(1, len(reqs)),
        stranded_ids=stranded,
        received_ids=received,
    )


def _stranded_erased_at_ttl(net: DevNetwork, clock: OffsetClock, results: list[Accounting]) -> None:
    """Move the stores' time past the reservation TTL: the stranded keys go (audit stale)."""
    for acc in results:
        sb = net.stores[PEER_OF[acc.master]][acc.master]
        for k in acc.stranded_ids:
            assert sb.key_info(k).state == "reserved"  # type: ignore[union-attr]
    ttl = net.stores["kme-a"]["kme-b"].reserved_ttl_s
    assert ttl is not None
    clock.offset += ttl + 10
    for acc in results:
        sb = net.stores[PEER_OF[acc.master]][acc.master]
        sb.sweep()
        stale = {r["key_id"] for r in sb.audit_log() if r["action"] == "stale"}
        assert acc.stranded_ids <= stale
        gone = acc.stranded_ids | acc.received_ids
        assert all(sb.key_info(k).state == "erased" for k in gone)  # type: ignore[union-attr]


def _ids_in_state(store: KeyStore, state: str, *, owner: str) -> list[str]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT key_id FROM kms_keys WHERE state = ? AND owner = ?", (state, owner)
        ).all()
    return [r[0] for r in rows]


def _still_serves(net: DevNetwork) -> None:
    for kme in KMES:
        slave = MASTER_OF[PEER_OF[kme]]
        with _client(net, MASTER_OF[kme]) as c, _client(net, slave) as s:
            keys = c.get_keys(slave, number=1)
            assert s.get_keys_with_ids(MASTER_OF[kme], [keys[0].key_id])[0] == keys[0]
        cert, key = net.pki.operators["twin"]
        with OperatorClient(net.url(kme), cert, key, net.pki.ca_cert) as op:
            stats = op.links().admission
        assert stats is not None
        assert stats.active == 0


def _overload(
    net: DevNetwork,
    tmp_path: Path,
    clock: OffsetClock,
    masters: list[str],
    clients: int,
    duration_s: float,
    seed: int,
    stranded_share: float = 0.01,
) -> list[Accounting]:
    load = _run_load(net, tmp_path, masters, clients, duration_s, seed)
    assert load["elapsed_s"] < duration_s + 20  # no deadlock: the run ended
    _wait_idle(net)
    # every direction's slave fetches first: moving the clock expires all reservations
    results = [_account(net, load, kme) for kme in masters]
    _stranded_erased_at_ttl(net, clock, results)
    for acc in results:
        log.warning("accounting: %s", acc)
        assert acc.unaccounted == 0
        assert acc.stranded <= stranded_share * acc.consumed, acc
        assert acc.ok > 0, acc  # some requests were served ...
    _still_serves(net)  # ... and both KMEs still serve afterwards
    stats = [net.apps[k].state.admission.counts() for k in KMES]
    log.warning("admission: %s", stats)
    return results


# The short runs below consume ~350 keys, where one stranded request of 2 keys is already
# 0.6 %: they bound the stranded share at 2 % (under a loaded CI machine a second request may
# time out between write and read). The 1 % is checked at scale, by the 256-client
# runs (slow) and by benchmarks/kms_overload.py (0.76 % and 0.41 % measured).
FAST_STRANDED_SHARE = 0.02


def test_overload_one_direction(pair: DevNetwork, tmp_path: Path, clock_ahead: OffsetClock) -> None:
    (acc,) = _overload(
        pair, tmp_path, clock_ahead, ["kme-a"], 64, 4.0, seed=1, stranded_share=FAST_STRANDED_SHARE
    )
    assert acc.timeouts + acc.ok + acc.busy == acc.requests


def test_overload_both_directions(
    pair: DevNetwork, tmp_path: Path, clock_ahead: OffsetClock
) -> None:
    _overload(
        pair,
        tmp_path,
        clock_ahead,
        ["kme-a", "kme-b"],
        64,
        4.0,
        seed=2,
        stranded_share=FAST_STRANDED_SHARE,
    )


@pytest.mark.slow
def test_overload_256_clients_one_direction(
    pair: DevNetwork, tmp_path: Path, clock_ahead: OffsetClock
) -> None:
    (acc,) = _overload(pair, tmp_path, clock_ahead, ["kme-a"], 256, 10.0, seed=3)
    assert acc.busy > 0  # overload is answered with 503, not with a queue


@pytest.mark.slow
def test_overload_256_clients_both_directions(
    pair: DevNetwork, tmp_path: Path, clock_ahead: OffsetClock
) -> None:
    results = _overload(pair, tmp_path, clock_ahead, ["kme-a", "kme-b"], 256, 10.0, seed=4)
    assert all(acc.busy > 0 for acc in results)


# -- what a client sees, and the undo paths, one request at a time ------------------------------


def _post(
    net: DevNetwork, kme: str, cert: Path, key: Path, path: str, body: dict[str, Any]
) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    with httpx.Client(base_url=net.url(kme), verify=ctx, timeout=10.0) as http:
        return http.post(path, json=body)


def _send_and_leave(net: DevNetwork, sae: str, slave: str, number: int, after_s: float) -> None:
    """Send ``enc_keys`` over a raw TLS connection and close it after ``after_s`` unread."""
    cert, key = net.pki.saes[sae]
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    host, port = "127.0.0.1", net.servers[SAES[sae]].port
    data = json.dumps({"number": number}).encode()
    with (
        socket.create_connection((host, port)) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"POST /api/v1/keys/%s/enc_keys HTTP/1.1\r\nhost: x\r\ncontent-type: "
            b"application/json\r\ncontent-length: %d\r\n\r\n%s" % (slave.encode(), len(data), data)
        )
        time.sleep(after_s)


def _get_one(net: DevNetwork, sae: str, slave: str) -> None:
    with _client(net, sae) as c:
        c.get_keys(slave, 1)


def _slow_reserve(
    monkeypatch: pytest.MonkeyPatch, net: DevNetwork, kme: str, delay_s: float
) -> None:
    """Make ``kme``'s reservations take ``delay_s`` longer (after the keys are reserved)."""
    node = net.nodes[kme]
    reserve = node.reserve_for

    def slow(*args: Any, **kwargs: Any) -> Any:
        keys = reserve(*args, **kwargs)
        time.sleep(delay_s)
        return keys

    monkeypatch.setattr(node, "reserve_for", slow)


def _actions(store: KeyStore) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for r in store.audit_log():
        out[r["key_id"]].append((r["action"], r["sae_id"]))
    return out


@pytest.fixture
def small(tmp_path: Path) -> Iterator[DevNetwork]:
    """A pair with one SAE slot per KME and no queue; 40 keys per link."""
    net = DevNetwork(
        tmp_path,
        KMES,
        [("kme-a", "kme-b")],
        SAES,
        initial_keys=40,
        run_feeders=False,
        wrap=False,
        kme_options={"max_active_requests": 1, "max_queued_requests": 0},
    )
    with net:
        yield net


def test_reservation_of_a_client_gone_is_undone_at_both_ends(
    small: DevNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_reserve(monkeypatch, small, "kme-a", 0.6)
    sa, sb = small.stores["kme-a"]["kme-b"], small.stores["kme-b"]["kme-a"]
    _send_and_leave(small, "sae-a", "sae-b", 3, after_s=0.2)  # gone before the response
    _wait_idle(small)
    by_key = _actions(sa)
    undone = [k for k, acts in by_key.items() if ("undo", "client-gone") in acts]
    assert len(undone) == 3
    assert all(by_key[k] == [("enc", "sae-a"), ("undo", "client-gone")] for k in undone)
    at_b = _actions(sb)
    assert all(at_b[k] == [("sync", "sae-a"), ("undo", "undo-by:kme-a")] for k in undone)
    for store in (sa, sb):  # back in the pool at both ends, the balance kept
        assert all(store.key_info(k).state == "available" for k in undone)  # type: ignore[union-attr]
        c = store.counters(owner="kme-a")
        assert (c.available, c.reserved, c.delivered_total) == (40, 0, 0)
    assert small.apps["kme-a"].state.admission.counts().undone_total == 1
    # the keys are handed out again, whole, to the next request
    with _client(small, "sae-a") as a, _client(small, "sae-b") as b:
        keys = a.get_keys("sae-b", number=3)
        assert [k.key_id for k in keys] == sorted(undone, key=[*by_key].index)
        assert b.get_keys_with_ids("sae-a", [k.key_id for k in keys]) == keys


def test_relayed_reservation_of_a_client_gone_is_revoked_along_the_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saes = {"sae-a": "kme-a", "sae-c": "kme-c"}
    links = [("kme-a", "kme-b"), ("kme-b", "kme-c")]
    with DevNetwork(
        tmp_path, ["kme-a", "kme-b", "kme-c"], links, saes, initial_keys=20, run_feeders=False
    ) as net:
        _slow_reserve(monkeypatch, net, "kme-a", 0.6)
        cert, key = net.pki.saes["sae-a"]
        ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
        ctx.load_cert_chain(str(cert), str(key))
        with (
            socket.create_connection(("127.0.0.1", net.servers["kme-a"].port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /api/v1/keys/sae-c/enc_keys?number=2 HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.2)
        _wait_idle(net)
        src, dst = net.stores["kme-a"]["relayed"], net.stores["kme-c"]["relayed"]
        at_a, at_c = _actions(src), _actions(dst)
        assert len(at_a) == len(at_c) == 2
        for k in at_a:
            assert at_a[k] == [("enc", "sae-a"), ("revoke", "client-gone")]
            assert at_c[k] == [("sync", "sae-a"), ("revoke", "revoked-by:kme-a")]
            assert src.key_info(k).state == dst.key_info(k).state == "erased"  # type: ignore[union-attr]


def test_failed_undo_at_the_peer_erases_both_copies(small: DevNetwork) -> None:
    node = small.nodes["kme-a"]
    sa, sb = small.stores["kme-a"]["kme-b"], small.stores["kme-b"]["kme-a"]
    keys = node.reserve_for("sae-a", ["sae-b"], "kme-b", 4, 256)
    ids = [k.key_id for k in keys]
    # the slave somehow fetched one already: the peer refuses to return it
    sb.fetch("sae-b", ids[:1], master_sae_id="sae-a")
    node.undo_reservation("kme-b", ids)
    assert [sb.key_info(k).state for k in ids] == ["erased"] + ["available"] * 3  # type: ignore[union-attr]
    assert [sa.key_info(k).state for k in ids] == ["erased"] + ["available"] * 3  # type: ignore[union-attr]
    assert _actions(sa)[ids[0]][-1] == ("revoke", "undo-failed:kme-b")
    assert _actions(sb)[ids[0]][-1] == ("revoke", "undo-by:kme-a")
    # the peer unreachable: erased here, left reserved there until its reservation TTL
    keys = node.reserve_for("sae-a", ["sae-b"], "kme-b", 2, 256)
    ids = [k.key_id for k in keys]
    url = small.network.kmes["kme-b"]
    small.network.kmes["kme-b"] = "https://127.0.0.1:1"
    try:
        node.undo_reservation("kme-b", ids)
    finally:
        small.network.kmes["kme-b"] = url
    assert all(sa.key_info(k).state == "erased" for k in ids)  # type: ignore[union-attr]
    assert all(sb.key_info(k).state == "reserved" for k in ids)  # type: ignore[union-attr]
    for store in (sa, sb):
        c = store.counters()
        assert c.added_total == c.available + c.delivered_total + c.discarded_total


def test_undo_endpoint_is_for_peer_kmes_only(small: DevNetwork) -> None:
    node = small.nodes["kme-a"]
    ids = [k.key_id for k in node.reserve_for("sae-a", ["sae-b"], "kme-b", 2, 256)]
    body = {"key_IDs": ids}
    for cert, key in (small.pki.saes["sae-b"], small.pki.operators["twin"]):
        r = _post(small, "kme-b", cert, key, "/kme/v1/reservations/undo", body)
        assert r.status_code == 401
        assert set(r.json()) == {"message", "details"}
    # kme-b cannot undo its own master-side copies through kme-a either: only mirrors
    own = [k.key_id for k in small.nodes["kme-b"].reserve_for("sae-b", ["sae-a"], "kme-a", 1, 256)]
    cert, key = small.pki.kmes["kme-a"]
    r = _post(small, "kme-b", cert, key, "/kme/v1/reservations/undo", {"key_IDs": [*ids, *own]})
    assert r.status_code == 200
    assert sorted(r.json()["returned"]) == sorted(ids)
    assert small.stores["kme-b"]["kme-a"].key_info(own[0]).state == "reserved"  # type: ignore[union-attr]
    r = _post(small, "kme-b", cert, key, "/kme/v1/reservations/undo", {"key_IDs": []})
    assert r.status_code == 400


def test_full_kme_answers_503_at_once_and_peers_still_pass(
    small: DevNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kme-b's one SAE slot is busy: its SAEs get 503, kme-a's mirrors and the operator not."""
    _slow_reserve(monkeypatch, small, "kme-b", 1.5)
    busy = threading.Thread(target=_get_one, args=(small, "sae-b", "sae-a"))
    busy.start()
    try:
        deadline = time.monotonic() + 5
        while small.apps["kme-b"].state.admission.counts().active == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        cert, key = small.pki.saes["sae-b"]
        t = time.monotonic()
        r = _post(small, "kme-b", cert, key, "/api/v1/keys/sae-a/enc_keys", {"number": 1})
        assert time.monotonic() - t < 1.0  # at once, not after the slot frees
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json() == {
            "message": "too many requests queued at this KME; retry later",
            "details": [{"max_active_requests": 1, "max_queued_requests": 0}],
        }
        with _client(small, "sae-a") as a:  # mirrored at kme-b, past its SAE admission
            assert len(a.get_keys("sae-b", number=2)) == 2
        op_cert, op_key = small.pki.operators["twin"]
        with OperatorClient(small.url("kme-b"), op_cert, op_key, small.pki.ca_cert) as op:
            stats = op.links().admission
        assert stats is not None
        assert (stats.active, stats.rejected_total) == (1, 1)
    finally:
        busy.join(10)


def test_queue_wait_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"max_active_requests": 1, "max_queued_requests": 4, "queue_timeout_s": 0.3}
    with DevNetwork(
        tmp_path,
        KMES,
        [("kme-a", "kme-b")],
        SAES,
        initial_keys=20,
        run_feeders=False,
        kme_options=options,
    ) as net:
        _slow_reserve(monkeypatch, net, "kme-a", 1.2)
        busy = threading.Thread(target=_get_one, args=(net, "sae-a", "sae-b"))
        busy.start()
        try:
            while net.apps["kme-a"].state.admission.counts().active == 0:
                time.sleep(0.01)
            cert, key = net.pki.saes["sae-a"]
            t = time.monotonic()
            r = _post(net, "kme-a", cert, key, "/api/v1/keys/sae-b/enc_keys", {"number": 1})
            assert 0.25 < time.monotonic() - t < 1.0
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert r.json()["details"] == [{"queue_timeout_s": 0.3}]
        finally:
            busy.join(10)
        assert net.apps["kme-a"].state.admission.counts().timed_out_total == 1


def test_request_whose_client_left_the_queue_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"max_active_requests": 1, "max_queued_requests": 4, "queue_timeout_s": 5.0}
    with DevNetwork(
        tmp_path,
        KMES,
        [("kme-a", "kme-b")],
        SAES,
        initial_keys=20,
        run_feeders=False,
        kme_options=options,
    ) as net:
        _slow_reserve(monkeypatch, net, "kme-a", 0.8)
        busy = threading.Thread(target=_get_one, args=(net, "sae-a", "sae-b"))
        busy.start()
        try:
            while net.apps["kme-a"].state.admission.counts().active == 0:
                time.sleep(0.01)
            _send_and_leave(net, "sae-a", "sae-b", 5, after_s=0.2)  # queued, then gone
        finally:
            busy.join(10)
        _wait_idle(net)
        counts = net.apps["kme-a"].state.admission.counts()
        assert (counts.admitted_total, counts.abandoned_total) == (2, 1)
        enc = [r for r in net.stores["kme-a"]["kme-b"].audit_log() if r["action"] == "enc"]
        assert len(enc) == 1  # only the first request touched the store


@pytest.mark.parametrize("gone_at", ["after the reservation", "as the response is written"])
def test_single_store_kme_undoes_a_reservation_nobody_received(
    sqlite_url: str, gone_at: str
) -> None:
    """Without the TLS server's probe, the receive channel tells the KME its client left.

    The client leaves right after the keys are reserved (the route's check sees it), or
    only between that check and the write (the final body finds it gone: dropped, undone
    after the response instead of the master-side erasure).
    """
    store = KeyStore(sqlite_url)
    store.add_keys([(str(uuid.uuid4()), b"k" * 32) for _ in range(5)])
    config = KmeConfig(kme_id="kme-1", saes={"sae-a": "kme-1", "sae-b": "kme-1"})
    app = create_app(config, store)
    reserved = threading.Event()
    reserve = store.reserve

    def watched(*args: Any, **kwargs: Any) -> Any:
        keys = reserve(*args, **kwargs)
        reserved.set()  # the client leaves as soon as the keys are reserved
        return keys

    store.reserve = watched  # type: ignore[method-assign]
    sent: list[MutableMapping[str, Any]] = []
    body = json.dumps({"number": 2}).encode()
    delivered = [False]

    polls = [0]
    # each check of the connection is one receive() in a cancelled scope: the first is the
    # admission's (before the store), the second the route's, the third the final body's
    first_gone = 2 if gone_at == "after the reservation" else 3

    async def receive() -> MutableMapping[str, Any]:
        if not delivered[0]:
            delivered[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        polls[0] += 1
        if reserved.is_set() and polls[0] >= first_gone:
            return {"type": "http.disconnect"}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/api/v1/keys/sae-b/enc_keys",
        "raw_path": b"/api/v1/keys/sae-b/enc_keys",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "qkdtwin.sae_id": "sae-a",
    }
    try:
        anyio.run(app, scope, receive, send)
        assert polls[0] == (3 if gone_at == "as the response is written" else 2)
        # the answer nobody reads: a 503, or the keys dropped by the server
        assert sent[0]["status"] == (503 if gone_at == "after the reservation" else 200)
        assert app.state.admission.counts().undone_total == 1
        actions = [r["action"] for r in store.audit_log()]
        assert actions == ["enc", "enc", "undo", "undo"]
        c = store.counters()
        assert (c.available, c.reserved, c.delivered_total) == (5, 0, 0)
    finally:
        store.close()
