"""Per-destination relay quotas: the token bucket, and the operator route on a KME chain."""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qkdtwin.errors import ConfigError, KeyAccessError, KeyExhaustedError, KmsError
from qkdtwin.kms.client import KmeClient, OperatorClient
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.quota import RelayQuota

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

# A chain: sae-a's keys for sae-c are relayed a -> b -> c; sae-b sits on a's direct link.
KMES = ["kme-a", "kme-b", "kme-c"]
LINKS = [("kme-a", "kme-b"), ("kme-b", "kme-c")]
SAES = {"sae-a": "kme-a", "sae-b": "kme-b", "sae-c": "kme-c"}
INITIAL = 40


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_against_its_arithmetic() -> None:
    clock = _Clock()
    q = RelayQuota("kme-c", keys_per_s=2.0, burst=5, clock=clock)
    assert q.take(5) == 0.0  # starts full
    # empty: 3 keys need 3 / 2 = 1.5 s of refill
    assert q.take(3) == pytest.approx(1.5)
    clock.t += 1.0  # 2 tokens back
    assert q.take(3) == pytest.approx(0.5)
    assert q.take(2) == 0.0
    clock.t += 100.0  # refills to the burst, never beyond
    assert q.state().tokens == pytest.approx(5.0)
    assert q.take(6) == math.inf  # larger than the burst: never
    st = q.state()
    assert (st.granted_keys, st.refused_requests) == (7, 3)


def test_zero_rate_and_bad_settings() -> None:
    q = RelayQuota("kme-c", keys_per_s=0.0, burst=1, clock=_Clock())
    assert q.take(1) == 0.0
    assert q.take(1) == math.inf  # nothing ever comes back
    assert RelayQuota("x", 0.2).burst == 1  # default burst: 1 s of quota, at least 1 key
    assert RelayQuota("x", 7.5).burst == 8
    for rate, burst in ((-1.0, None), (math.nan, None), (math.inf, None), (1.0, 0)):
        with pytest.raises(ConfigError):
            RelayQuota("x", rate, burst)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[DevNetwork]:
    n = DevNetwork(tmp_path, KMES, LINKS, SAES, initial_keys=INITIAL, run_feeders=False)
    with n:
        yield n


def _op(net: DevNetwork, kme: str, who: tuple[Path, Path] | None = None) -> OperatorClient:
    cert, key = who or net.pki.operators["twin"]
    return OperatorClient(net.url(kme), cert, key, net.pki.ca_cert)


def _sae(net: DevNetwork, sae: str) -> KmeClient:
    cert, key = net.pki.saes[sae]
    return KmeClient(net.url(SAES[sae]), cert, key, net.pki.ca_cert)


def _available(net: DevNetwork, kme: str, peer: str) -> int:
    return net.stores[kme][peer].counters().available


def test_a_spent_quota_refuses_relays_before_any_link_key_is_used(net: DevNetwork) -> None:
    with _op(net, "kme-a") as op:
        ans = op.set_relay_quota("kme-c", 0.01, burst=3)  # 3 keys, then one per 100 s
    assert ans["quota"]["burst"] == 3
    assert ans["quota"]["tokens"] == pytest.approx(3.0)
    with _sae(net, "sae-a") as a:
        assert len(a.get_keys("sae-c", number=3)) == 3  # the burst
        before = {
            (k, p): _available(net, k, p) for k, p in (("kme-a", "kme-b"), ("kme-b", "kme-c"))
        }
        with pytest.raises(KeyExhaustedError, match="relay quota"):
            a.get_keys("sae-c", number=1)
        # refused before the relay: no pad consumed on any hop
        after = {k: _available(net, *k) for k in before}
        assert after == before
        # the direct link is not a relay: never limited
        assert len(a.get_keys("sae-b", number=5)) == 5
    # the 503 says when to come back: (1 - tokens) / 0.01 s, about 100 s
    cert, key = net.pki.saes["sae-a"]
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    with httpx.Client(base_url=net.url("kme-a"), verify=ctx) as h:
        r = h.post("/api/v1/keys/sae-c/enc_keys", json={"number": 1})
    assert r.status_code == 503
    assert 90 <= int(r.headers["Retry-After"]) <= 101
    assert r.json()["details"][0]["relay_quota"] == "kme-c"
    with _op(net, "kme-a") as op:
        (q,) = op.relay_quotas()
        assert (q["granted_keys"], q["refused_requests"]) == (3, 2)
        assert op.set_relay_quota("kme-c", None)["quota"] is None  # removed
        assert op.relay_quotas() == []
    with _sae(net, "sae-a") as a:
        assert len(a.get_keys("sae-c", number=2)) == 2  # relays flow again
    audit = [r for r in net.stores["kme-a"]["relayed"].audit_log() if r["key_id"] == "-"]
    assert [r["action"] for r in audit] == ["relay-quota", "relay-quota"]
    assert {r["sae_id"] for r in audit} == {"operator:twin"}


def test_quota_route_refuses_non_operators_and_bad_input(net: DevNetwork) -> None:
    for who in (net.pki.saes["sae-a"], net.pki.kmes["kme-b"]):
        with _op(net, "kme-a", who) as c, pytest.raises(KeyAccessError):
            c.set_relay_quota("kme-c", 1.0)
    assert net.nodes["kme-a"].relay_quotas == {}
    with _op(net, "kme-a") as op:
        for dest in ("kme-z", "kme-a"):  # unknown, and itself
            with pytest.raises(KmsError, match="400"):
                op.set_relay_quota(dest, 1.0)
        cert, key = net.pki.operators["twin"]
        ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
        ctx.load_cert_chain(str(cert), str(key))
        with httpx.Client(base_url=net.url("kme-a"), verify=ctx) as h:
            for body in (
                {"keys_per_s": -1},
                {"keys_per_s": "5"},
                {"keys_per_s": 1, "burst": 0},
                {"keys_per_s": 1, "extra": 1},
                {"keys_per_s": None, "burst": 3},
                {},
            ):
                r = h.post("/kme/v1/relays/kme-c/quota", json=body)
                assert r.status_code in (400, 422), body
                assert "message" in r.json()
    assert net.nodes["kme-a"].relay_quotas == {}
