"""KME-to-KME protocol over real HTTPS with mutual TLS: mirroring, pool split, relay, routing.

Three KMEs in a triangle (``kme-a``, ``kme-b``, ``kme-c``; links a-b, b-c, a-c), one SAE
behind each, started in-process by :class:`qkdtwin.kms.devnet.DevNetwork`. The feeders are
not started (``initial_keys`` only), so pool sizes are exact.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qkdtwin.errors import KeyExhaustedError, KmsError
from qkdtwin.kms.client import KmeClient
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.peering import KmeNetwork

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

KMES = ["kme-a", "kme-b", "kme-c"]
LINKS = [("kme-a", "kme-b"), ("kme-b", "kme-c"), ("kme-a", "kme-c")]
SAES = {"sae-a": "kme-a", "sae-b": "kme-b", "sae-c": "kme-c"}
INITIAL = 40


@pytest.fixture
def net(tmp_path: Path) -> Iterator[DevNetwork]:
    # No feeder threads: every pool holds exactly INITIAL keys.
    network = DevNetwork(tmp_path, KMES, LINKS, SAES, initial_keys=INITIAL, run_feeders=False)
    with network:
        yield network


def client(net: DevNetwork, sae: str) -> KmeClient:
    cert, key = net.pki.saes[sae]
    return KmeClient(net.url(SAES[sae]), cert, key, net.pki.ca_cert)


def available(net: DevNetwork, kme: str, peer: str) -> int:
    return net.stores[kme][peer].available_count()


def test_neighbour_keys_are_mirrored_over_https(net: DevNetwork) -> None:
    with client(net, "sae-a") as a, client(net, "sae-b") as b:
        keys = a.get_keys("sae-b", number=5)
        same = b.get_keys_with_ids("sae-a", [k.key_id for k in keys])
    assert [k.material for k in same] == [k.material for k in keys]
    actions = {r["key_id"]: r["action"] for r in net.stores["kme-b"]["kme-a"].audit_log()}
    assert all(actions[k.key_id] == "dec" for k in keys)  # last action at kme-b: delivered
    mirrored = [r for r in net.stores["kme-b"]["kme-a"].audit_log() if r["action"] == "sync"]
    assert {r["key_id"] for r in mirrored} == {k.key_id for k in keys}


def test_each_end_hands_out_only_the_keys_it_owns(net: DevNetwork) -> None:
    """Concurrent enc_keys in both directions of one link never pick the same key."""
    got: dict[str, list[str]] = {"sae-a": [], "sae-b": []}
    errors: list[Exception] = []

    def run(sae: str, slave: str) -> None:
        try:
            with client(net, sae) as c:
                for _ in range(INITIAL // 2):
                    got[sae] += [k.key_id for k in c.get_keys(slave)]
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("sae-a", "sae-b")),
        threading.Thread(target=run, args=("sae-b", "sae-a")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    # Each end owns exactly half of the pool: all of it was handed out, none twice.
    assert len(got["sae-a"]) == len(got["sae-b"]) == INITIAL // 2
    assert not set(got["sae-a"]) & set(got["sae-b"])
    with client(net, "sae-a") as a, pytest.raises(KeyExhaustedError):
        a.get_keys("sae-b")
    assert available(net, "kme-a", "kme-b") == available(net, "kme-b", "kme-a") == 0


def test_relay_around_a_down_link(net: DevNetwork) -> None:
    """With a-c down, a key for sae-c travels a -> b -> c; both ends get it, each hop pays."""
    net.nodes["kme-a"].set_link_down("kme-c")
    with client(net, "sae-a") as a, client(net, "sae-c") as c:
        keys = a.get_keys("sae-c", number=3)
        same = c.get_keys_with_ids("sae-a", [k.key_id for k in keys])
    assert [k.material for k in same] == [k.material for k in keys]
    # One link key per relayed key and hop, consumed at both ends of each hop.
    for kme, peer in [
        ("kme-a", "kme-b"),
        ("kme-b", "kme-a"),
        ("kme-b", "kme-c"),
        ("kme-c", "kme-b"),
    ]:
        assert available(net, kme, peer) == INITIAL - 3, (kme, peer)
    # The direct a-c link was not touched, and kme-b keeps no end-to-end key.
    assert available(net, "kme-a", "kme-c") == available(net, "kme-c", "kme-a") == INITIAL
    assert net.stores["kme-b"]["relayed"].audit_log() == []
    relays = [r for r in net.stores["kme-b"]["kme-a"].audit_log() if r["action"] == "relay"]
    assert len(relays) == 3


def test_direct_link_used_when_up(net: DevNetwork) -> None:
    with client(net, "sae-a") as a:
        a.get_keys("sae-c", number=2)
    assert available(net, "kme-a", "kme-b") == INITIAL  # no relay through b
    assert net.nodes["kme-a"].route("kme-c") == ["kme-a", "kme-c"]


def test_failed_relay_leaves_no_key_anywhere(net: DevNetwork) -> None:
    """The b-c hop has no key: sae-a gets 503; no end-to-end key exists at a or c."""
    net.nodes["kme-a"].set_link_down("kme-c")
    for store in (net.stores["kme-b"]["kme-c"], net.stores["kme-c"]["kme-b"]):
        while store.available_count():
            store.consume("test-drain", 8)
    with client(net, "sae-a") as a, pytest.raises(KeyExhaustedError, match="relay"):
        a.get_keys("sae-c", number=2)
    assert net.stores["kme-a"]["relayed"].audit_log() == []
    assert net.stores["kme-c"]["relayed"].audit_log() == []
    # The first hop's pads were consumed (sent ciphertext is never re-padded) and accounted.
    assert available(net, "kme-a", "kme-b") == INITIAL - 2


def test_no_route_is_503(net: DevNetwork) -> None:
    net.nodes["kme-a"].set_link_down("kme-c")
    net.nodes["kme-a"].set_link_down("kme-b")
    with client(net, "sae-a") as a, pytest.raises(KeyExhaustedError):
        a.get_keys("sae-c")
    with client(net, "sae-a") as a, pytest.raises(KeyExhaustedError):
        a.get_keys("sae-b")


def test_mirror_failure_revokes_the_local_reservation(net: DevNetwork) -> None:
    net.servers["kme-b"].stop()
    with client(net, "sae-a") as a, pytest.raises(KeyExhaustedError, match="mirror"):
        a.get_keys("sae-b", number=2)
    log = net.stores["kme-a"]["kme-b"].audit_log()
    revoked = {r["key_id"] for r in log if r["action"] == "revoke"}
    assert len(revoked) == 2
    assert all(net.stores["kme-a"]["kme-b"].key_info(k).state == "erased" for k in revoked)


def test_peer_endpoints_refuse_saes(net: DevNetwork) -> None:
    import ssl

    cert, key = net.pki.saes["sae-a"]
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    body = {"master_SAE_ID": "sae-a", "slave_SAE_IDs": ["sae-b"], "key_IDs": ["x"], "size": 256}
    with httpx.Client(base_url=net.url("kme-b"), verify=ctx) as http:
        resp = http.post("/kme/v1/reservations", json=body)
    assert resp.status_code == 401
    assert set(resp.json()) == {"message", "details"}
    # and they are not in the published (ETSI) OpenAPI document
    with httpx.Client(base_url=net.url("kme-b"), verify=ctx) as http:
        assert "/kme/v1/relay" not in http.get("/openapi.json").json()["paths"]


def test_status_counts_keys_this_kme_can_hand_out(net: DevNetwork) -> None:
    with client(net, "sae-a") as a:
        assert a.status("sae-b")["stored_key_count"] == INITIAL // 2  # its own half
        net.nodes["kme-a"].set_link_down("kme-c")
        assert a.status("sae-c")["stored_key_count"] == INITIAL // 2  # first hop a-b
        assert a.status("sae-c")["target_KME_ID"] == "kme-c"


def test_route_finding_is_shortest_over_live_links() -> None:
    net = KmeNetwork(
        kmes=dict.fromkeys("abcde", ""),
        links=[("a", "b"), ("b", "c"), ("c", "d"), ("a", "e"), ("e", "d")],
    )
    assert net.route("a", "d") == ["a", "e", "d"]
    assert net.route("a", "d", down=[("e", "d")]) == ["a", "b", "c", "d"]
    with pytest.raises(KeyExhaustedError):
        net.route("a", "d", down=[("e", "d"), ("b", "c")])
    with pytest.raises(ValueError, match="itself"):
        KmeNetwork(kmes={"a": ""}, links=[("a", "a")])


def test_unknown_kme_in_network_is_an_error(tmp_path: Path) -> None:
    from qkdtwin.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown KME"):
        DevNetwork(tmp_path, ["a"], [("a", "b")], {})
    assert issubclass(KeyExhaustedError, KmsError)
