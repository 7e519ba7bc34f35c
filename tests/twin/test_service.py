from __future__ import annotations

from typing import Any

import anyio
import httpx
import numpy as np
import pytest

from qkdtwin.network import seed_topology, simulate, uniform_demands
from qkdtwin.twin.service import create_twin_app


class Client:
    """In-process client of the service (ASGI transport, no socket)."""

    def __init__(self, twin) -> None:
        self.twin = twin
        self.app = create_twin_app(twin, run=False)

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://twin") as c:
                return await c.request(method, url, **kw)

        return anyio.run(go)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)


@pytest.fixture
def client(make_twin) -> Client:
    twin = make_twin()
    twin.step()
    return Client(twin)


def test_state_has_the_documented_shape(client) -> None:
    r = client.get("/api/state")
    assert r.status_code == 200
    st = r.json()
    assert {"links", "pools", "devices", "alarms", "nodes", "kmes", "network"} <= set(st)
    assert len(st["links"]) == 12
    assert len(st["nodes"]) == 12
    assert len(st["pools"]) == 15
    for ln in st["links"]:
        assert {"id", "qber", "key_rate_bps", "status"} <= set(ln)
        assert ln["status"] == "up"
        assert 0.0 < ln["qber"] < 0.08
        assert ln["key_rate_bps"] > 0
    twin = client.twin
    assert st["links"][0]["qber"] == twin.links[st["links"][0]["id"]].blocks[-1].qber


def test_attack_raises_alarm_and_clear_restores(client) -> None:
    r = client.post("/api/links/M2-M1/attack", json={"type": "intercept-resend", "fraction": 1})
    assert r.status_code == 200
    assert r.json()["id"] == "M1-M2"
    assert r.json()["status"] == "alarm"
    alarms = client.get("/api/alarms").json()
    assert [a["link"] for a in alarms] == ["M1-M2"]
    assert alarms[0]["active"]
    one = client.get(f"/api/alarms/{alarms[0]['id']}").json()
    assert [e["what"] for e in one["events"]] == ["raised", "key_discarded", "rerouted"]
    link = client.get("/api/links/M1-M2").json()
    assert link["status"] == "alarm"
    assert link["attack"] == "intercept-resend:1"
    st = client.get("/api/state").json()
    assert st["network"]["links_down"] == ["M1-M2"]
    assert st["active_alarms"] == 1
    r = client.post("/api/links/M1-M2/clear")
    assert r.status_code == 200
    assert r.json()["status"] == "up"
    assert client.get("/api/alarms?active=true").json() == []


def test_what_if_endpoint_matches_engine(client) -> None:
    # from the present: the engine started from the pools' levels now (clipped to the new C)
    levels = {(p.src, p.dst): min(p.level, 400.0) for p in client.twin.keynet.pools()}
    r = client.post("/api/what-if", json={"set": {"V": 4, "C": 400}, "policy": "static"})
    assert r.status_code == 200
    d = r.json()

    def ref(**kw):
        return simulate(
            seed_topology(olt_rate=4.0),
            uniform_demands(seed_topology(), 1.0),
            pool_capacity=400,
            keys_per_service=10,
            policy="static",
            rng=np.random.default_rng(1),
            duration=1000.0,
            **kw,
        ).success_rate

    assert d["params"]["start"] == "present"
    assert d["success_rate"] == ref(initial_levels=levels)
    assert d["live"]["success_rate"] == client.twin.keynet.success_rate()
    # the live window of the prediction's length (as much of it as the twin has lived)
    w = d["live"]["window"]
    assert (w["of_horizon_s"], w["seconds"]) == (1000.0, min(1000.0, client.twin.t))
    assert len(d["pools"]) == 15
    r = client.post(
        "/api/what-if", json={"set": {"V": 4, "C": 400}, "policy": "static", "start": "scenario"}
    )
    assert r.json()["success_rate"] == ref()


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "field"),
    [
        ("post", "/api/links/M1-X/attack", {"fraction": 0.5}, 400, "link"),
        ("post", "/api/links/M1-M2/attack", {"type": "blinding"}, 400, "type"),
        ("post", "/api/links/M1-M2/attack", {"fraction": 1.5}, 422, "fraction"),
        ("post", "/api/links/M1-M2/attack", {"fraction": "lots"}, 422, "fraction"),
        ("post", "/api/links/M1-M2/attack", {"speed": 1}, 422, "speed"),
        ("post", "/api/links/nowhere/clear", None, 400, "link"),
        ("post", "/api/what-if", {"set": {"Q": 1}}, 400, "set.Q"),
        ("post", "/api/what-if", {"set": {"C": 0}}, 400, "set.C"),
        ("post", "/api/what-if", {"set": {"X": 500}}, 400, "set.X"),
        ("post", "/api/what-if", {"policy": "best"}, 400, "policy"),
        ("post", "/api/what-if", {"set": {"V": "high"}}, 422, "V"),
        ("get", "/api/alarms/99", None, 400, "alarm_id"),
    ],
)
def test_bad_input_gets_named_field(client, method, url, body, status, field) -> None:
    r = client.request(method.upper(), url, json=body)
    assert r.status_code == status, r.text
    d = r.json()
    if status == 400:
        assert d["field"] == field
        assert d["message"]
    else:
        assert field in d["detail"][0]["loc"]
    # the live loop keeps running
    client.twin.step()
    assert client.get("/api/state").status_code == 200


def test_history_and_devices_and_openapi(client) -> None:
    client.twin.step()
    h = client.get("/api/history", params={"series": ["link:M1-M2:qber", "net:success_cum"]})
    d = h.json()
    assert set(d) == {"link:M1-M2:qber", "net:success_cum"}
    assert [p[0] for p in d["link:M1-M2:qber"]] == [1.0, 2.0]
    pre = client.get("/api/history", params={"prefix": "pool:"}).json()
    assert len(pre) == 30
    dev = client.get("/api/devices").json()
    assert dev["telemetry"]["enabled"] is False
    assert dev["devices"] == []
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/state",
        "/api/links/{link}/attack",
        "/api/what-if",
        "/api/alarms",
        "/api/events",
        "/api/history",
    ):
        assert path in spec["paths"]
    page = client.get("/")
    assert page.status_code == 200
    assert "/static/app.js" in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200
    assert "EventSource" in js.text
    assert "http" not in client.get("/static/style.css").text  # nothing fetched from outside


def test_operations_endpoints(client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")  # a twin stepped by hand is ready
    assert (r.status_code, r.json()["status"]) == (200, "ready")
    client.get("/api/state")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    st = client.twin.state(compact=True)
    qber = {s.labels["link"]: s.value for s in families["qkdtwin_link_qber"].samples}
    assert qber == {lk["id"]: lk["qber"] for lk in st["links"]}
    pools = {s.labels["pool"]: s.value for s in families["qkdtwin_pool_keys"].samples}
    assert pools == {p["id"]: p["level"] for p in st["pools"]}
    assert families["qkdtwin_alarms_active"].samples[0].value == 0
    # the request-latency histogram saw the /api/state request
    hist = families["qkdtwin_http_request_duration_seconds"]
    counts = [s for s in hist.samples if s.name.endswith("_count")]
    assert any(s.labels["route"] == "/api/state" and s.value >= 1 for s in counts)


def test_the_api_docs_page_needs_no_network(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    import re

    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    assert all(not a.startswith("http") for a in assets), assets  # no CDN
    for a in assets:
        if a.endswith((".js", ".css")):
            assert client.get(a).status_code == 200, a


def test_a_twin_whose_engine_is_not_running_is_not_ready(make_twin) -> None:
    from qkdtwin.twin.service import create_twin_app

    twin = make_twin()

    async def go() -> httpx.Response:
        app = create_twin_app(twin, run=True)  # ASGITransport runs no lifespan: no tick thread
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://twin") as c:
            return await c.get("/readyz")

    r = anyio.run(go)
    assert r.status_code == 503
    assert r.json()["reasons"] == ["the twin's engine is not running"]


def test_what_if_on_the_live_window_compares_equal_horizons(client) -> None:
    """window_s: the prediction runs for as long as the live window covers, the live rates are
    counted over that same window, per pool and overall, and the state's KPIs agree."""
    twin = client.twin
    for _ in range(5):
        twin.step(2.0)
    levels = {(p.src, p.dst): p.level for p in twin.keynet.pools()}
    d = client.post("/api/what-if", json={"policy": "static", "window_s": 60}).json()
    lived = twin.t  # the twin has lived less than the 60 s window
    assert lived < 60
    assert d["params"]["duration"] == pytest.approx(lived)
    assert d["live"]["window"]["seconds"] == pytest.approx(lived)
    assert d["live"]["window"]["of_horizon_s"] == pytest.approx(lived)
    ref = simulate(
        seed_topology(),
        uniform_demands(seed_topology(), 1.0),
        pool_capacity=twin.keynet.capacity,
        keys_per_service=twin.keynet.keys,
        policy="static",
        rng=np.random.default_rng(1),
        duration=lived,
        initial_levels=levels,
    )
    assert d["success_rate"] == ref.success_rate
    # the whole run so far is inside the window: window and since-start rates coincide
    assert d["live"]["window"]["success_rate"] == twin.keynet.success_rate()
    for p in d["pools"]:
        assert p["live_window_success_rate"] == p["live_success_rate"]
    st = client.get("/api/state").json()["network"]
    minute = next(w for w in st["windows"] if w["seconds"] == 60)
    assert minute["lived_s"] == pytest.approx(lived)
    assert (minute["requests"], minute["successes"]) == (st["requests"], st["successes"])
    bad = client.post("/api/what-if", json={"window_s": 0})
    assert bad.status_code == 422


def test_devices_are_paged_and_filtered(make_twin) -> None:
    from .conftest import seed_dict

    twin = make_twin(
        seed_dict(
            devices_per_gateway=4,
            kme_feed_every=1,
            telemetry={"broker": "memory", "fault_rate_per_s": 0.05, "drift_rate_per_s": 0.05},
        ),
        telemetry=True,
    )
    for _ in range(8):
        twin.step()
    c = Client(twin)
    full = c.get("/api/devices").json()
    everyone = full["devices"]
    assert full["total"] == len(everyone) == 24
    assert full["limit"] is None
    # pages are slices of the same order, and cover every device once
    pages = [
        c.get("/api/devices", params={"offset": o, "limit": 5}).json() for o in range(0, 24, 5)
    ]
    assert [d for p in pages for d in p["devices"]] == everyone
    assert all(p["total"] == 24 for p in pages)
    assert c.get("/api/devices", params={"offset": 30, "limit": 5}).json()["devices"] == []
    gw = c.get("/api/devices", params={"gateway": "GW2.1"}).json()
    assert gw["total"] == 4
    assert gw["devices"] == [d for d in everyone if d["gateway"] == "GW2.1"]
    by_health = {
        h: c.get("/api/devices", params={"health": h}).json() for h in ("ok", "fault", "drift")
    }
    for h, page in by_health.items():
        assert page["devices"] == [d for d in everyone if d["health"] == h]
        assert page["total"] == len(page["devices"])
    assert sum(p["total"] for p in by_health.values()) == 24
    # bad input: one error naming the parameter, the loop keeps running
    r = c.get("/api/devices", params={"gateway": "GW9.9"})
    assert r.status_code == 400
    assert r.json()["field"] == "gateway"
    for bad in ({"health": "sick"}, {"limit": 0}, {"offset": -1}, {"limit": "many"}):
        r = c.get("/api/devices", params=bad)
        assert r.status_code == 422, bad
        assert next(iter(bad)) in r.text
    twin.step()


def test_compact_state_leaves_the_devices_out(make_twin) -> None:
    from .conftest import seed_dict

    twin = make_twin(
        seed_dict(devices_per_gateway=2, kme_feed_every=1, telemetry={"broker": "memory"}),
        telemetry=True,
    )
    for _ in range(3):
        twin.step()
    c = Client(twin)
    full = c.get("/api/state").json()
    small = c.get("/api/state", params={"compact": "true"}).json()
    assert len(full["devices"]) == 12
    assert "devices" not in small
    assert small["devices_count"] == 12
    assert small["links"] == full["links"]
    assert c.get("/api/state", params={"compact": "maybe"}).status_code == 422
