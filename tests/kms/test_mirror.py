"""Mirrors of concurrent reservations go to the peer KME in batches."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qkdtwin.errors import KeyExhaustedError, KmsError
from qkdtwin.kms.client import KmeClient
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.mirror import MAX_BATCH_KEYS, MirrorBatcher

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


def _body(i: int, n: int = 1) -> dict:
    return {"master_SAE_ID": "m", "slave_SAE_IDs": ["s"], "key_IDs": [f"{i}-{k}" for k in
            range(n)], "size": 256}  # fmt: skip


def test_mirrors_arriving_during_a_flight_go_out_together_and_keep_their_outcomes():
    release = threading.Event()
    sent: list[list[int]] = []

    def one(body):
        sent.append([int(body["key_IDs"][0].split("-")[0])])
        release.wait(5)  # the first mirror is in flight while the others arrive

    def many(bodies):
        ids = [int(b["key_IDs"][0].split("-")[0]) for b in bodies]
        sent.append(ids)
        return [{"ok": i != 3} | ({} if i != 3 else {"status": 400, "message": "no"})
                for i in ids]  # fmt: skip

    b = MirrorBatcher(one, many)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(b.mirror, _body(0))
        time.sleep(0.1)
        rest = {i: pool.submit(b.mirror, _body(i)) for i in range(1, 8)}
        time.sleep(0.2)
        release.set()
        first.result(5)
        outcomes = {}
        for i, f in rest.items():
            try:
                f.result(5)
                outcomes[i] = "ok"
            except KmsError as exc:
                outcomes[i] = type(exc).__name__
    assert sent[0] == [0]
    assert sorted(sent[1]) == list(range(1, 8))  # one batch for the seven that waited
    assert outcomes == {i: ("KmsRequestError" if i == 3 else "ok") for i in range(1, 8)}
    assert (b.batches, b.mirrored) == (2, 8)


def test_a_transport_failure_fails_every_mirror_of_its_batch():
    release = threading.Event()

    def one(_body):
        release.wait(5)

    def many(_bodies):
        raise KeyExhaustedError("the peer KME is unreachable")

    b = MirrorBatcher(one, many)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(b.mirror, _body(0))
        time.sleep(0.1)
        rest = [pool.submit(b.mirror, _body(i)) for i in range(1, 4)]
        time.sleep(0.2)
        release.set()
        first.result(5)
        for f in rest:
            with pytest.raises(KeyExhaustedError):
                f.result(5)
    # and the batcher is free again: a lone mirror goes through
    b.mirror(_body(9))


def test_batches_are_bounded_by_key_ids():
    gate = threading.Event()
    sizes: list[int] = []

    def one(body):
        sizes.append(len(body["key_IDs"]))
        gate.wait(5)

    def many(bodies):
        sizes.append(sum(len(b["key_IDs"]) for b in bodies))
        return [{"ok": True}] * len(bodies)

    b = MirrorBatcher(one, many)
    with ThreadPoolExecutor(16) as pool:
        fs = [pool.submit(b.mirror, _body(0, 1))]
        time.sleep(0.1)
        fs += [pool.submit(b.mirror, _body(i, 100)) for i in range(1, 16)]
        time.sleep(0.2)
        gate.set()
        for f in fs:
            f.result(5)
    assert all(s <= MAX_BATCH_KEYS for s in sizes)
    assert sum(sizes) == 1 + 15 * 100


def test_concurrent_enc_keys_through_real_kmes_share_mirror_requests(tmp_path):
    saes = {f"sae-a{i}": "kme-a" for i in range(16)} | {"sae-b": "kme-b"}
    # a queue wait long enough that a busy CI machine never answers 503 (admission control
    # is tested in test_admission.py; here every request must get its keys)
    net = DevNetwork(tmp_path, ["kme-a", "kme-b"], [("kme-a", "kme-b")], saes,
                     initial_keys=2000, run_feeders=False,
                     kme_options={"queue_timeout_s": 60.0}).start()  # fmt: skip
    try:

        def client(i: int) -> list:
            cert, key = net.pki.saes[f"sae-a{i}"]
            got = []
            with KmeClient(net.url("kme-a"), cert, key, net.pki.ca_cert) as c:
                for _ in range(10):
                    got += c.get_keys("sae-b", number=2)
            return got

        with ThreadPoolExecutor(16) as pool:
            keys = [k for ks in pool.map(client, range(16)) for k in ks]
        assert len({k.key_id for k in keys}) == 320  # never a key twice
        batcher = net.nodes["kme-a"].mirror_batcher("kme-b")
        assert batcher.mirrored == 160
        assert batcher.batches < 160  # some mirrors shared a request
        # every mirrored key is reserved at kme-b (for sae-b to fetch)
        mirror = net.stores["kme-b"]["kme-a"]
        assert all(mirror.key_info(k.key_id).state == "reserved" for k in keys)
        # a key already mirrored is refused, reported for that reservation only
        node = net.nodes["kme-b"]
        from qkdtwin.kms.peering import ReservationBody

        out = node.accept_reservations(
            "kme-a",
            [ReservationBody(master_SAE_ID="sae-a0", slave_SAE_IDs=["sae-b"],
                             key_IDs=[keys[0].key_id], size=256)],
        )  # fmt: skip
        assert out[0]["ok"] is False
        assert out[0]["status"] in (400, 503)
    finally:
        net.stop()
