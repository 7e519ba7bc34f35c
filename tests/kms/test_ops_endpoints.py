"""A KME's operations endpoints over mutual TLS: health, readiness, and metrics for operators."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qkdtwin.kms.client import KmeClient
from qkdtwin.kms.devnet import DevNetwork

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

SAES = {"sae-a": "kme-a", "sae-b": "kme-b"}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[DevNetwork]:
    n = DevNetwork(
        tmp_path, ["kme-a", "kme-b"], [("kme-a", "kme-b")], SAES, initial_keys=30,
        run_feeders=False,
    )  # fmt: skip
    with n:
        yield n


def _http(net: DevNetwork, who: tuple[Path, Path]) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(who[0]), str(who[1]))
    return httpx.Client(base_url=net.url("kme-a"), verify=ctx)


def test_metrics_match_the_operator_counts_and_need_an_operator(net: DevNetwork) -> None:
    cert, key = net.pki.saes["sae-a"]
    with KmeClient(net.url("kme-a"), cert, key, net.pki.ca_cert) as sae:
        keys = sae.get_keys("sae-b", number=4)
    with _http(net, net.pki.operators["twin"]) as op:
        assert op.get("/healthz").json() == {"status": "ok"}
        r = op.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready", "reasons": []})
        m = op.get("/metrics")
        assert m.status_code == 200
        links = op.get("/kme/v1/links").json()["links"]
    fams = {f.name: f for f in text_string_to_metric_families(m.text)}

    def by_peer(name: str) -> dict[str, float]:
        return {s.labels["peer"]: s.value for s in fams[name].samples}

    want = {lk["peer"]: lk for lk in links}
    assert by_peer("qkdtwin_kme_link_available_keys") == {
        p: float(lk["available"]) for p, lk in want.items()
    }
    assert by_peer("qkdtwin_kme_link_delivered_keys_total")["kme-b"] == float(
        want["kme-b"]["delivered_total"]
    )
    assert want["kme-b"]["delivered_total"] >= 4
    assert by_peer("qkdtwin_kme_link_enabled") == {"kme-b": 1.0}
    # never key material: none of the delivered keys' bytes or IDs appear
    for k in keys:
        assert k.key_id not in m.text
        assert k.material.hex() not in m.text


def test_metrics_refuse_sae_and_peer_certificates(net: DevNetwork) -> None:
    for who in (net.pki.saes["sae-a"], net.pki.kmes["kme-b"]):
        with _http(net, who) as c:
            r = c.get("/metrics")
            assert r.status_code == 401
            assert "qkdtwin_" not in r.text
            assert c.get("/healthz").status_code == 200  # liveness is for everyone


def test_freeze_startup_objects_hides_them_from_full_collections() -> None:
    """After the freeze, a full collection no longer walks start-up's objects, and start-up's
    garbage (a reference cycle nobody holds) was collected first, not frozen."""
    import gc
    import weakref

    from qkdtwin.ops import freeze_startup_objects

    class Node:
        pass

    a, b = Node(), Node()
    a.peer, b.peer = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    try:
        freeze_startup_objects()
        assert gone() is None
        assert gc.get_freeze_count() > 10_000  # modules, schemas, caches of this process
        tracked = len(gc.get_objects())
        assert tracked < gc.get_freeze_count()
    finally:
        gc.unfreeze()
