"""The KMEs' actuation interface: stop a link's key delivery, discard its recent keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qkdtwin.errors import KeyAccessError, KeyExhaustedError, KmsError
from qkdtwin.kms.client import KmeClient, OperatorClient
from qkdtwin.kms.devnet import DevNetwork

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

SAES = {"sae-a": "kme-a", "sae-b": "kme-b"}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[DevNetwork]:
    n = DevNetwork(
        tmp_path, ["kme-a", "kme-b"], [("kme-a", "kme-b")], SAES, initial_keys=40,
        run_feeders=False,
    ).start()  # fmt: skip
    yield n
    n.stop()


def _op(net: DevNetwork, kme: str) -> OperatorClient:
    cert, key = net.pki.operators["twin"]
    return OperatorClient(net.url(kme), cert, key, net.pki.ca_cert)


def _sae(net: DevNetwork, sae: str) -> KmeClient:
    cert, key = net.pki.saes[sae]
    return KmeClient(net.url(SAES[sae]), cert, key, net.pki.ca_cert)


def _enabled(op: OperatorClient, peer: str) -> bool:
    return next(lk.enabled for lk in op.links().links if lk.peer == peer)


def test_a_disabled_link_delivers_nothing_until_it_is_enabled_again(net):
    with _op(net, "kme-a") as a, _op(net, "kme-b") as b, _sae(net, "sae-a") as sa:
        assert len(sa.get_keys("sae-b", number=2)) == 2
        t0 = time.perf_counter()
        assert a.set_link_state("kme-b", False) == {
            "kme_id": "kme-a", "peer": "kme-b", "enabled": False
        }  # fmt: skip
        assert b.set_link_state("kme-a", False)["enabled"] is False
        ack_s = time.perf_counter() - t0
        assert not _enabled(a, "kme-b")
        assert not _enabled(b, "kme-a")
        before = net.stores["kme-a"]["kme-b"].counters().delivered_total
        with pytest.raises(KeyExhaustedError):
            sa.get_keys("sae-b", number=1)
        with _sae(net, "sae-b") as sb, pytest.raises(KeyExhaustedError):
            sb.get_keys("sae-a", number=1)  # the other direction too
        for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
            assert net.stores[kme][peer].counters().delivered_total == before
        audit = [e for e in net.stores["kme-a"]["kme-b"].audit_log() if e["key_id"] == "-"]
        assert [(e["sae_id"], e["action"]) for e in audit] == [("operator:twin", "link-disable")]
        a.set_link_state("kme-b", True)
        b.set_link_state("kme-a", True)
        assert len(sa.get_keys("sae-b", number=1)) == 1
        assert ack_s < 2.0


def test_one_disabled_end_refuses_the_peers_mirror(net):
    with _op(net, "kme-b") as b, _sae(net, "sae-a") as sa:
        b.set_link_state("kme-a", False)  # only kme-b knows
        before = net.stores["kme-a"]["kme-b"].counters()
        with pytest.raises(KeyExhaustedError):
            sa.get_keys("sae-b", number=3)
        # the reservation at kme-a was revoked: nothing delivered, nothing left reserved
        after = net.stores["kme-a"]["kme-b"].counters()
        assert after.reserved == before.reserved


def test_discard_since_erases_the_keys_stored_since_then_at_that_end(net):
    st = net.stores["kme-a"]["kme-b"]
    cut = st.now()
    time.sleep(0.01)
    import os
    import uuid

    fresh = [(str(uuid.uuid4()), os.urandom(32)) for _ in range(5)]
    for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
        net.stores[kme][peer].add_keys(fresh)
    with _op(net, "kme-a") as a, _op(net, "kme-b") as b:
        assert a.discard_since("kme-b", cut)["discarded"] == 5
        assert b.discard_since("kme-a", cut)["discarded"] == 5
        assert a.discard_since("kme-b", cut)["discarded"] == 0
    for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
        s = net.stores[kme][peer]
        assert all(s.raw_material(k) is None for k, _ in fresh)
        assert s.counters().available == 40  # the older keys stay
        assert s.counters().discarded_total == 5


def test_actuation_needs_an_operator_certificate(net):
    for cert, key in (net.pki.saes["sae-a"], net.pki.kmes["kme-b"]):
        with OperatorClient(net.url("kme-a"), cert, key, net.pki.ca_cert) as c:
            with pytest.raises(KeyAccessError):
                c.set_link_state("kme-b", False)
            with pytest.raises(KeyAccessError):
                c.discard_since("kme-b", 0.0)
    with _op(net, "kme-a") as a:
        assert _enabled(a, "kme-b")  # nothing changed
        with pytest.raises(KmsError, match="400"):
            a.set_link_state("kme-z", False)
    cert, key = net.pki.operators["twin"]
    import ssl

    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    with httpx.Client(base_url=net.url("kme-a"), verify=ctx) as h:
        r = h.post("/kme/v1/links/kme-b/state", json={"enabled": "no"})
        assert r.status_code in (400, 422)
        assert "message" in r.json()
