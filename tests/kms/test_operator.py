"""The operator interface ``GET /kme/v1/links`` and the key counters behind it.

Network tests run three KMEs in a chain (``kme-a`` - ``kme-b`` - ``kme-c``, one SAE behind
each) over real mutual TLS with :class:`~qkdtwin.kms.devnet.DevNetwork`, feeders off, so
counts are exact. After every step the operator's answer of every KME is compared with the
stores' own counts, their key tables and their audit logs (:func:`_assert_consistent`).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from qkdtwin.errors import ConfigError, KeyAccessError, KmsError
from qkdtwin.kms import KeyStore, KmeConfig, create_app
from qkdtwin.kms.client import KmeClient, KmeUnreachableError, OperatorClient
from qkdtwin.kms.devnet import DevNetwork
from qkdtwin.kms.operator import KeyCountsModel, KmeLinksResponse, LinkCounts
from qkdtwin.kms.store import DELIVERY_ACTIONS, DISCARD_ACTIONS, KeyCounts
from qkdtwin.kms.tls import (
    RunningServer,
    init_pki,
    issue_certificate,
    make_server,
    operator_id_from_certificate,
    sae_id_from_certificate,
)

from .conftest import FakeClock

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

KMES = ["kme-a", "kme-b", "kme-c"]
LINKS = [("kme-a", "kme-b"), ("kme-b", "kme-c")]
SAES = {"sae-a": "kme-a", "sae-b": "kme-b", "sae-c": "kme-c"}
INITIAL = 40


@pytest.fixture
def net(tmp_path: Path) -> Iterator[DevNetwork]:
    network = DevNetwork(tmp_path, KMES, LINKS, SAES, initial_keys=INITIAL, run_feeders=False)
    with network:
        yield network


def _sae(net: DevNetwork, sae: str) -> KmeClient:
    cert, key = net.pki.saes[sae]
    return KmeClient(net.url(SAES[sae]), cert, key, net.pki.ca_cert)


def _links(net: DevNetwork, kme: str) -> KmeLinksResponse:
    cert, key = net.pki.operators["twin"]
    with OperatorClient(net.url(kme), cert, key, net.pki.ca_cert) as op:
        return op.links()


def _table(store: KeyStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT state, COUNT(*) FROM kms_keys GROUP BY state").all()
    return {str(s): int(n) for s, n in rows}


def _assert_store(
    counts: KeyCountsModel | LinkCounts | KeyCounts, store: KeyStore, owner: str | None
) -> None:
    """One store's reported counts against its own counts, key table and audit log."""
    table = _table(store)
    actions = [e["action"] for e in store.audit_log()]
    assert counts.available == store.available_count()
    assert counts.owned == store.available_count(owner=owner)
    assert counts.reserved == table.get("reserved", 0)
    assert counts.added_total == sum(table.values())
    assert counts.delivered_total == sum(a in DELIVERY_ACTIONS for a in actions)
    assert counts.discarded_total == sum(a in DISCARD_ACTIONS for a in actions)
    assert counts.erased_total == table.get("erased", 0) + table.get("expired", 0)
    # Flow balance: every key added is still available, or was delivered, or discarded.
    assert counts.added_total == (
        table.get("available", 0) + counts.delivered_total + counts.discarded_total
    )


def _assert_consistent(net: DevNetwork) -> dict[str, KmeLinksResponse]:
    """Ask every KME as operator; check each link and relayed store; return the answers."""
    out = {}
    for kme in KMES:
        resp = _links(net, kme)
        assert resp.kme_id == kme
        assert [link.peer for link in resp.links] == net.network.neighbours(kme)
        for link in resp.links:
            assert link.peer is not None
            assert link.enabled == net.nodes[kme].link_enabled(link.peer)
            _assert_store(link, net.stores[kme][link.peer], kme)
        assert resp.relayed is not None
        _assert_store(resp.relayed, net.stores[kme]["relayed"], None)
        out[kme] = resp
    return out


def _link(resp: KmeLinksResponse, peer: str) -> LinkCounts:
    return next(link for link in resp.links if link.peer == peer)


def _wait_reserved(store: KeyStore, n: int, timeout_s: float = 5.0) -> None:
    """Wait for the master-side copies' erasure (a task run after the response is sent)."""
    deadline = time.monotonic() + timeout_s
    while store.counters().reserved != n:
        assert time.monotonic() < deadline, store.counters()
        time.sleep(0.02)


def test_operator_counts_follow_enc_dec_relay_and_discard(net: DevNetwork) -> None:
    start = _assert_consistent(net)
    ab = _link(start["kme-a"], "kme-b")
    assert (ab.available, ab.owned, ab.added_total, ab.delivered_total) == (
        INITIAL,
        INITIAL // 2,
        INITIAL,
        0,
    )
    assert ab.enabled

    # enc_keys to a neighbour: reserved at kme-a (enc), mirrored at kme-b (sync).
    with _sae(net, "sae-a") as a, _sae(net, "sae-b") as b:
        keys = a.get_keys("sae-b", number=3)
        # the master has its keys: kme-a's copies are erased, kme-b's wait for the slave
        _wait_reserved(net.stores["kme-a"]["kme-b"], 0)
        mid = _assert_consistent(net)
        for kme, peer, reserved in (("kme-a", "kme-b", 0), ("kme-b", "kme-a", 3)):
            link = _link(mid[kme], peer)
            assert (link.delivered_total, link.reserved, link.available) == (
                3,
                reserved,
                INITIAL - 3,
            )
        assert _link(mid["kme-a"], "kme-b").erased_total == 3
        assert _link(mid["kme-a"], "kme-b").owned == INITIAL // 2 - 3  # kme-a's half paid
        assert _link(mid["kme-b"], "kme-a").owned == INITIAL // 2
        # dec_keys: the slave's copy of a key already counted is not a new delivery.
        b.get_keys_with_ids("sae-a", [k.key_id for k in keys])
    after_dec = _assert_consistent(net)
    assert _link(after_dec["kme-b"], "kme-a").delivered_total == 3

    # Relay a -> b -> c: one pad per key and hop at both ends; end-to-end keys at a and c.
    with _sae(net, "sae-a") as a, _sae(net, "sae-c") as c:
        relayed = a.get_keys("sae-c", number=2)
        c.get_keys_with_ids("sae-a", [k.key_id for k in relayed])
    _wait_reserved(net.stores["kme-a"]["relayed"], 0)
    after_relay = _assert_consistent(net)
    for kme, peer, before in (
        ("kme-a", "kme-b", 3),
        ("kme-b", "kme-a", 3),
        ("kme-b", "kme-c", 0),
        ("kme-c", "kme-b", 0),
    ):
        link = _link(after_relay[kme], peer)
        assert link.delivered_total == before + 2, (kme, peer)
        assert link.erased_total >= 2
    # the source's copies are erased once the master has them; the destination's after
    # the slave fetched them and the retry window passed
    for kme, reserved in (("kme-a", 0), ("kme-c", 2)):
        rel = after_relay[kme].relayed
        assert rel is not None
        assert (rel.added_total, rel.delivered_total, rel.reserved) == (2, 2, reserved)
    assert after_relay["kme-b"].relayed == KeyCountsModel.of(
        net.stores["kme-b"]["relayed"].counters()
    )
    assert after_relay["kme-b"].relayed.added_total == 0

    # Discard: available keys only; a consumed and an unknown key_ID are neither counted
    # nor audited.
    store = net.stores["kme-b"]["kme-c"]
    pad = next(e["key_id"] for e in store.audit_log() if e["action"] == "relay")
    victims = [k.key_id for k in store.reserve("probe", ["x"], 1, 8, owner="kme-b")]
    store.revoke(victims, by="test")  # a revoked reservation stays delivered, is erased
    with store.engine.connect() as conn:
        free = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT key_id FROM kms_keys WHERE state = 'available' ORDER BY seq LIMIT 4"
            )
        ]
    assert store.discard([*free, pad, str(uuid.uuid4())], by="twin:alarm") == 4
    final = _assert_consistent(net)
    bc = _link(final["kme-b"], "kme-c")
    assert (bc.discarded_total, bc.delivered_total) == (4, 3)
    assert bc.available == INITIAL - 2 - 1 - 4
    assert [e["action"] for e in store.audit_log()].count("discard") == 4


def test_enabled_follows_set_link_down(net: DevNetwork) -> None:
    net.nodes["kme-b"].set_link_down("kme-c")
    assert not _link(_links(net, "kme-b"), "kme-c").enabled
    assert _link(_links(net, "kme-b"), "kme-a").enabled
    assert _link(_links(net, "kme-c"), "kme-b").enabled  # kme-c's own view
    net.nodes["kme-b"].set_link_down("kme-c", down=False)
    assert _link(_links(net, "kme-b"), "kme-c").enabled


def _raw_get(net: DevNetwork, kme: str, cert: Path, key: Path, path: str) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    with httpx.Client(base_url=net.url(kme), verify=ctx, timeout=10.0) as http:
        return http.get(path)


def test_sae_and_peer_kme_certificates_get_401(net: DevNetwork) -> None:
    for cert, key in (net.pki.saes["sae-b"], net.pki.kmes["kme-a"], net.pki.kmes["kme-b"]):
        resp = _raw_get(net, "kme-b", cert, key, "/kme/v1/links")
        assert resp.status_code == 401
        assert resp.json() == {"message": "not authorised", "details": []}  # no information
    with (
        OperatorClient(net.url("kme-b"), *net.pki.saes["sae-b"], net.pki.ca_cert) as op,
        pytest.raises(KeyAccessError, match=net.url("kme-b")),
    ):
        op.links()
    # ... and an operator certificate is neither an SAE nor a peer KME.
    op_cert, op_key = net.pki.operators["twin"]
    assert _raw_get(net, "kme-a", op_cert, op_key, "/api/v1/keys/sae-b/status").status_code == 401
    body = {"master_SAE_ID": "x", "slave_SAE_IDs": ["y"], "key_IDs": ["z"], "size": 8}
    ctx = ssl.create_default_context(cafile=str(net.pki.ca_cert))
    ctx.load_cert_chain(str(op_cert), str(op_key))
    with httpx.Client(base_url=net.url("kme-b"), verify=ctx) as http:
        assert http.post("/kme/v1/reservations", json=body).status_code == 401


def test_certificate_from_another_ca_is_refused_at_handshake(
    net: DevNetwork, tmp_path: Path
) -> None:
    other = init_pki(tmp_path / "other", kme_ids=["kme-x"], sae_ids=[], operator_ids=["twin"])
    cert, key = other.operators["twin"]
    with (
        OperatorClient(net.url("kme-b"), cert, key, net.pki.ca_cert) as op,
        pytest.raises(KmeUnreachableError, match=net.url("kme-b")) as info,
    ):
        op.links()
    assert isinstance(info.value.__cause__, httpx.TransportError)  # no HTTP answer at all
    # and the KME's certificate is not trusted by a client that trusts only the other CA
    own_cert, own_key = net.pki.operators["twin"]
    with (
        OperatorClient(net.url("kme-b"), own_cert, own_key, other.ca_cert) as op,
        pytest.raises(KmeUnreachableError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        op.links()


def test_links_route_is_in_the_openapi_document(net: DevNetwork) -> None:
    cert, key = net.pki.operators["twin"]
    doc = _raw_get(net, "kme-a", cert, key, "/openapi.json").json()
    op = doc["paths"]["/kme/v1/links"]["get"]
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/KmeLinksResponse"}
    assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    link = doc["components"]["schemas"]["LinkCounts"]
    assert set(link["properties"]) == {
        "peer",
        "enabled",
        "available",
        "owned",
        "reserved",
        "added_total",
        "delivered_total",
        "erased_total",
        "discarded_total",
    }
    assert set(doc["components"]["schemas"]["KmeLinksResponse"]["required"]) == {
        "kme_id",
        "time",
        "links",
        "relayed",
    }


def test_single_store_kme_reports_one_pseudo_link(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki", kme_ids=["kme-1"], sae_ids=["sae-a"])
    store = KeyStore(f"sqlite:///{tmp_path / 'kme.db'}")
    try:
        store.add_keys([(str(uuid.uuid4()), os.urandom(32)) for _ in range(7)])
        store.reserve("sae-a", ["sae-b"], 2, 256)
        app = create_app(KmeConfig(kme_id="kme-1", saes={"sae-a": "kme-1"}), store)
        cert, key = pki.kmes["kme-1"]
        server = make_server(
            app, host="127.0.0.1", port=0, certfile=cert, keyfile=key, ca_certs=pki.ca_cert
        )
        with RunningServer(server) as running:
            url = f"https://127.0.0.1:{running.port}"
            with OperatorClient(url, *pki.operators["twin"], pki.ca_cert) as op:
                resp = op.links()
    finally:
        store.close()
    assert resp.kme_id == "kme-1"
    assert resp.relayed is None
    (link,) = resp.links
    assert (link.peer, link.enabled) == (None, True)
    assert (link.available, link.reserved, link.added_total, link.delivered_total) == (5, 2, 7, 2)


def test_unreachable_url_error_names_the_url(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, kme_ids=["kme-1"], sae_ids=[])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    with (
        OperatorClient(url, *pki.operators["twin"], pki.ca_cert, timeout_s=2.0) as op,
        pytest.raises(KmeUnreachableError) as info,
    ):
        op.links()
    assert f"{url}/kme/v1/links" in str(info.value)
    assert info.value.url == f"{url}/kme/v1/links"
    assert isinstance(info.value, KmsError)
    with pytest.raises(ConfigError, match="operator TLS"):
        OperatorClient(url, tmp_path / "missing.pem", tmp_path / "missing.key", pki.ca_cert)


# -- store counters on SQLite and PostgreSQL ----------------------------------------------


def _keys(n: int) -> list[tuple[str, bytes]]:
    return [(str(uuid.uuid4()), os.urandom(32)) for _ in range(n)]


def test_store_counters_follow_every_transition(db_url: str, clock: FakeClock) -> None:
    from qkdtwin.kms import RETRY_WINDOW_S

    s = KeyStore(db_url, now=clock, ttl_s=100.0)
    try:
        s.add_keys(_keys(6), owner="kme-a")
        s.add_keys(_keys(4), owner="kme-b")
        s.add_keys(_keys(2))
        _assert_store(s.counters(owner="kme-a"), s, "kme-a")
        assert s.counters(owner="kme-a").owned == 8
        got = s.reserve("sae-a", ["sae-b"], 3, 256, owner="kme-a")  # enc
        s.reserve("sae-b", ["sae-a"], 1, 256, key_ids=[_free(s, "kme-b")])  # sync (mirror)
        s.fetch("sae-b", [k.key_id for k in got])  # dec: no new delivery
        s.consume("relay:r1", 256)  # relay pad
        s.install_reserved(_keys(2), "sae-a", ["sae-c"], delivered_to_master=True)
        s.revoke([got[0].key_id], by="mirror-failed")
        s.discard([_free(s, None)], by="test")
        c = s.counters(owner="kme-a")
        _assert_store(c, s, "kme-a")
        assert (c.added_total, c.delivered_total, c.discarded_total) == (14, 3 + 1 + 1 + 2, 1)
        clock.t += RETRY_WINDOW_S + 1
        # the two fetched, unrevoked keys and the relay's two source copies (no slave here)
        assert s.erase_delivered() == 4
        _assert_store(s.counters(), s, None)
        # TTL passed: the keys leave 'available' before expire() marks them...
        clock.t += 200.0
        stale = s.counters(owner="kme-a")
        assert (stale.available, stale.owned) == (0, 0)
        _assert_store(stale, s, "kme-a")
        # ...and expire() counts them as discarded (audited 'expire').
        left = _table(s)["available"]
        assert left > 0
        assert s.expire() == left
        done = s.counters(owner="kme-a")
        _assert_store(done, s, "kme-a")
        assert done.discarded_total == 1 + left
        assert done.erased_total == done.added_total - done.reserved
    finally:
        s.close()


def _free(s: KeyStore, owner: str | None) -> str:
    where = "owner IS NULL" if owner is None else f"owner = '{owner}'"
    with s.engine.connect() as conn:
        row = conn.exec_driver_sql(
            f"SELECT key_id FROM kms_keys WHERE state = 'available' AND {where} ORDER BY seq"
        ).first()
    assert row is not None
    return str(row[0])


def test_counters_survive_a_reopen_and_are_backfilled(db_url: str) -> None:
    s = KeyStore(db_url)
    s.add_keys(_keys(10), owner="kme-a")
    s.reserve("sae-a", ["sae-b"], 2, 256, owner="kme-a")
    s.consume("relay:x", 256)
    s.discard([_free(s, "kme-a")], by="test")
    before = s.counters(owner="kme-a")
    s.close()
    s = KeyStore(db_url)
    try:
        assert s.counters(owner="kme-a") == before
        assert (before.added_total, before.delivered_total, before.discarded_total) == (10, 3, 1)
        # A store written before the counters existed: they are rebuilt at open.
        with s.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE kms_counters")
    finally:
        s.close()
    s = KeyStore(db_url)
    try:
        assert s.counters(owner="kme-a") == before
        _assert_store(before, s, "kme-a")
    finally:
        s.close()


# -- certificates and the PKI command ----------------------------------------------------


def test_operator_certificates_name_one_role(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, kme_ids=["kme-1"], sae_ids=["sae-a"], operator_ids=["twin", "ops"])
    assert set(pki.operators) == {"twin", "ops"}

    def load(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    op = load(pki.operators["ops"][0])
    assert operator_id_from_certificate(op) == "ops"
    assert sae_id_from_certificate(op) is None  # no CN fallback for an operator
    assert operator_id_from_certificate(load(pki.saes["sae-a"][0])) is None
    assert operator_id_from_certificate(load(pki.kmes["kme-1"][0])) is None
    eku = op.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = load(pki.ca_cert)
    assert op.issuer == ca.subject
    op.verify_directly_issued_by(ca)
    assert pki.operators["ops"][1].stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="operator"):
        issue_certificate("x", sae_id="a", operator_id="b")
    with pytest.raises(ConfigError, match="unique"):
        init_pki(tmp_path / "dup", sae_ids=["twin"], operator_ids=["twin"])
    with pytest.raises(ConfigError):
        init_pki(tmp_path / "ca", kme_ids=["ca"], sae_ids=[])


def test_pki_init_writes_operator_files(tmp_path: Path) -> None:
    from qkdtwin.cli.kms import kms_app

    runner = CliRunner()
    res = runner.invoke(kms_app, ["pki", "init", str(tmp_path), "--operator", "ops", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["operators"]) == {"ops"}
    cert, key = Path(out["operators"]["ops"]["cert"]), Path(out["operators"]["ops"]["key"])
    assert (cert.name, key.name) == ("operator-ops.pem", "operator-ops.key")
    assert key.stat().st_mode & 0o777 == 0o600
    assert operator_id_from_certificate(x509.load_pem_x509_certificate(cert.read_bytes())) == (
        "ops"
    )
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert isinstance(load_pem_private_key(key.read_bytes(), None), ec.EllipticCurvePrivateKey)
    default = runner.invoke(kms_app, ["pki", "init", str(tmp_path / "d"), "--json"])
    assert set(json.loads(default.stdout)["operators"]) == {"twin"}


def test_counters_exact_under_concurrent_writers(db_url: str) -> None:
    """Threads reserving, consuming and discarding at once: counters equal the log, no deadlock."""
    import threading

    s = KeyStore(db_url, max_key_count=10_000)
    try:
        s.add_keys(_keys(400), owner="kme-a")
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for _ in range(10):
                    s.reserve(f"sae-{i}", ["sae-b"], 2, 256, owner="kme-a")
                    s.consume(f"relay:{i}", 256)
                    s.add_keys(_keys(1), owner="kme-a")
                    s.discard([_free(s, "kme-a")], by=f"t{i}")
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        c = s.counters(owner="kme-a")
        _assert_store(c, s, "kme-a")
        assert (c.added_total, c.delivered_total) == (480, 8 * 10 * 3)
        assert c.discarded_total <= 80  # two threads may pick the same free key: one wins
    finally:
        s.close()
