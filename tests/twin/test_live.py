"""The twin served over real HTTP: event stream, CLI against it, and the dashboard in chromium."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from qkdtwin.cli import main
from qkdtwin.twin import Twin
from qkdtwin.twin.runner import EventListener, ServiceThread

from .conftest import seed_dict

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENS = ROOT / "out" / "twin-screens"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[ServiceThread]:
    # the default embedded MQTT broker carries the telemetry of 6 gateways x 2 devices
    twin = Twin(seed_dict(speed=4.0), data_dir=tmp_path_factory.mktemp("live"), telemetry=True)
    svc = ServiceThread(twin, port=0).start()
    yield svc
    svc.stop()
    twin.close()


def test_event_stream_delivers_ticks_and_alarms(service) -> None:
    ev = EventListener(service.url).start()
    try:
        _, first = ev.wait_for(lambda e: e["type"] == "tick", 10)
        t0 = first["state"]["t"]
        _, later = ev.wait_for(lambda e: e["type"] == "tick" and e["state"]["t"] > t0, 10)
        assert later["state"]["tick"] > first["state"]["tick"]
        mark = len(ev.events)
        r = httpx.post(f"{service.url}/api/links/M2-M3/attack", json={"fraction": 1.0})
        assert r.status_code == 200
        _, alarm = ev.wait_for(lambda e: e["type"] == "alarm", 10, mark)
        assert alarm["alarm"]["link"] == "M2-M3"

        def shows_alarm(e: dict) -> bool:
            # a tick whose state was built before the attack may still arrive after the
            # alarm (ticks are published outside the twin's lock): wait for the stream to
            # show it, as a dashboard does
            links = e["state"]["links"] if e["type"] == "tick" else []
            return any(x["id"] == "M2-M3" and x["status"] == "alarm" for x in links)

        ev.wait_for(shows_alarm, 10, mark)
        mark = len(ev.events)
        httpx.post(f"{service.url}/api/links/M2-M3/clear")
        _, rest = ev.wait_for(lambda e: e["type"] == "restored", 10, mark)
        assert rest["alarm"]["link"] == "M2-M3"
        assert rest["alarm"]["active"] is False
    finally:
        ev.stop()


def test_cli_drives_the_running_twin(service, capsys) -> None:
    url = service.url
    assert main(["twin", "attack", "M3-M1", "--url", url, "--fraction", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["id"] == "M1-M3"
    assert d["status"] == "alarm"
    assert main(["twin", "state", "--url", url]) == 0
    assert "M1-M3" in capsys.readouterr().out
    assert main(["twin", "what-if", "--url", url, "--set", "V=4", "--set", "C=400", "--json"]) == 0
    wi = json.loads(capsys.readouterr().out)
    assert wi["params"]["links_down"] == ["M1-M3"]
    assert wi["params"]["V"] == 4.0
    assert main(["twin", "clear", "M1-M3", "--url", url]) == 0
    assert "status up" in capsys.readouterr().out
    for argv in (
        ["twin", "attack", "M1-M9", "--url", url],
        ["twin", "attack", "M1-M2", "--url", url, "--type", "blinding"],
        ["twin", "attack", "M1-M2", "--url", url, "--fraction", "2"],
        ["twin", "what-if", "--url", url, "--set", "Q=1"],
        ["twin", "what-if", "--url", url, "--policy", "best"],
        ["twin", "clear", "M1-M2", "--url", "http://127.0.0.1:9"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("qkdtwin: error:")
        assert err.count("\n") == 1
    assert httpx.get(f"{url}/api/state").json()["network"]["links_down"] == []


SIZES = [(1280, 800), (1920, 1080)]

# The page's layout, measured in the browser: horizontal overflow of the document and of each
# card (a table wider than its card is cut, even where the card scrolls), and the alarm card's box.
LAYOUT_JS = """() => {
    window.scrollTo(0, 0);  // as the page opens: the alarm card must be visible unscrolled
    const doc = document.documentElement;
    const cards = [...document.querySelectorAll('.card')]
        .filter(c => c.scrollWidth > c.clientWidth + 1)
        .map(c => `${c.id || c.querySelector('h2').textContent}: `
                  + `${c.scrollWidth - c.clientWidth} px`);
    const a = document.querySelector('#alarms-card').getBoundingClientRect();
    return {page: doc.scrollWidth - window.innerWidth, cards,
            alarms: [a.top, a.bottom, a.left, a.right]};
}"""


@pytest.mark.browser
@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_dashboard_in_chromium(service, width: int, height: int) -> None:
    screens = SCREENS / f"{width}x{height}"
    screens.mkdir(parents=True, exist_ok=True)
    nodes = {n["id"] for n in httpx.get(f"{service.url}/api/state").json()["nodes"]}
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on(
                "console",
                lambda m: (
                    errors.append(f"{m.text} {m.location.get('url')}")
                    if m.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(service.url + "/")
            expect(page.locator("#topology g.node")).to_have_count(len(nodes))
            drawn = set(
                page.locator("#topology g.node").evaluate_all("els => els.map(e => e.dataset.node)")
            )
            assert drawn == nodes
            expect(page.locator("#kpi-conn")).to_have_text("live")
            line = page.locator('#topology .link[data-link="M1-M2"]')
            expect(line).to_have_attribute("data-status", "up")
            # encrypted telemetry arrives: every device is listed with its latest reading
            expect(page.locator("#devices-table tbody tr")).to_have_count(12, timeout=20_000)
            expect(page.locator("#iot-summary")).to_contain_text("12 devices")
            # no QBER label's box crosses its own link: sample the link's curve, none of its
            # points may fall inside the label's bounding box
            crossed = page.evaluate(
                """() => [...document.querySelectorAll('#topology text.lbl')].filter(t => {
                    const p = document.querySelector(
                        `#topology .link[data-link="${t.dataset.link}"]`);
                    const b = t.getBBox(), n = 60, L = p.getTotalLength();
                    for (let i = 0; i <= n; i++) {
                        const q = p.getPointAtLength(L * i / n);
                        if (q.x >= b.x && q.x <= b.x + b.width && q.y >= b.y
                            && q.y <= b.y + b.height) return true;
                    }
                    return false;
                }).map(t => t.dataset.link)"""
            )
            assert page.locator("#topology text.lbl").count() == len(nodes)  # 12 links
            assert crossed == []
            # every chart: one legend entry per drawn series, ticks with units, labelled axes
            links = {lk["id"] for lk in httpx.get(f"{service.url}/api/links").json()}
            expect(page.locator("#chart-qber-legend .legend-item")).to_have_count(len(links))
            named = set(
                page.locator("#chart-qber-legend .legend-item").evaluate_all(
                    "els => els.map(e => e.dataset.series)"
                )
            )
            drawn_series = set(
                page.locator("#chart-qber polyline").evaluate_all(
                    "els => els.map(e => e.dataset.series)"
                )
            )
            assert named == drawn_series == links
            ticks = page.locator("#chart-qber text.ytick").all_text_contents()
            assert len(ticks) == 5
            assert all(t.endswith(" %") for t in ticks)
            expect(page.locator("#chart-qber text.thr-label")).to_have_text("alarm threshold 8 %")
            expect(page.locator("#chart-rate text.axis-label").first).to_have_text("twin time (s)")
            expect(page.locator("#chart-rate text.axis-label").nth(1)).to_contain_text("bit/s")
            # clicking a legend entry isolates its line; clicking again shows all
            page.locator('#chart-qber-legend .legend-item[data-series="M1-M2"]').click()
            expect(page.locator('#chart-qber polyline[data-series="M1-M2"]')).to_have_attribute(
                "opacity", "1"
            )
            expect(page.locator('#chart-qber polyline[data-series="M2-M3"]')).to_have_attribute(
                "opacity", "0.12"
            )
            page.locator('#chart-qber-legend .legend-item[data-series="M1-M2"]').click()
            expect(page.locator('#chart-qber polyline[data-series="M2-M3"]')).to_have_attribute(
                "opacity", "1"
            )
            # the pools chart: one legend entry per pool series the twin keeps (up to 30)
            hist = httpx.get(f"{service.url}/api/history", params={"prefix": "pool:"}).json()
            levels = [k for k in hist if k.endswith(":level")]
            expect(page.locator("#chart-pools-legend .legend-item")).to_have_count(
                min(30, len(levels))
            )
            # windowed KPIs beside the one since start
            expect(page.locator("#kpi-success-min")).to_contain_text("%")
            expect(page.locator("#kpi-success-hour")).to_contain_text("%")
            # the relay routes are drawn: every link that carries a route has its line
            state = httpx.get(f"{service.url}/api/state").json()
            hops = {
                "-".join(sorted(pl["path"][k : k + 2]))
                for pl in state["pools"]
                if pl["path"]
                for k in range(len(pl["path"]) - 1)
            }
            routed = set(
                page.locator("#topology .route:not(.detour)").evaluate_all(
                    "els => els.map(e => e.dataset.link)"
                )
            )
            assert routed == hops
            expect(page.locator("#topology .route.detour")).to_have_count(0)
            # it fits: no horizontal overflow, the alarm card inside the viewport
            layout = page.evaluate(LAYOUT_JS)
            assert layout["page"] <= 0, layout
            assert layout["cards"] == [], layout
            top, bottom, left, right = layout["alarms"]
            assert top >= 0, layout
            assert bottom <= height, layout
            assert left >= 0, layout
            assert right <= width, layout
            page.screenshot(path=str(screens / "1-loaded.png"), full_page=True)
            # inject an attack from the dashboard: the link turns red, the alarm is listed
            page.select_option("#attack-link", "M1-M2")
            page.fill("#attack-fraction", "1")
            page.click("#attack-btn")
            expect(line).to_have_attribute("data-status", "alarm")
            stroke = page.evaluate(
                """() => getComputedStyle(
                    document.querySelector('#topology .link[data-link="M1-M2"]')).stroke"""
            )
            assert stroke == "rgb(229, 72, 77)"  # --alarm red
            alarm = page.locator('#alarms li.active[data-link="M1-M2"]')
            expect(alarm).to_have_count(1)
            expect(alarm).to_contain_text("QBER")
            # the rerouted pairs' detours are drawn: around M1-M2, through M3
            detours = page.locator("#topology .route.detour")
            expect(detours.first).to_be_attached()
            paths = detours.evaluate_all("els => els.map(e => e.dataset.path.split(','))")
            rerouted = [
                pl for pl in httpx.get(f"{service.url}/api/state").json()["pools"] if pl["rerouted"]
            ]
            assert len(paths) == len(rerouted) > 0
            for path in paths:
                hops = {"-".join(sorted(path[k : k + 2])) for k in range(len(path) - 1)}
                assert "M1-M2" not in hops, path
                assert "M3" in path, path
            # the alarm card, now with the alarm, is still in view
            top, bottom, *_ = page.evaluate(LAYOUT_JS)["alarms"]
            assert top >= 0
            assert bottom <= height
            page.screenshot(path=str(screens / "2-alarm.png"), full_page=False)
            # a what-if shows its result next to the live values
            page.fill("#wi-V", "4")
            page.fill("#wi-C", "400")
            page.click("#whatif-btn")
            expect(page.locator("#whatif-summary")).to_contain_text("predicted")
            expect(page.locator("#whatif-table tbody tr")).to_have_count(15)
            expect(page.locator("#whatif-summary")).to_contain_text("links down: M1-M2")
            # compared on the same horizon: next N s predicted against the last N s lived
            heads = page.locator("#whatif-table th").all_text_contents()
            assert heads[1].startswith("predicted, next ")
            assert heads[2].startswith("live, last ")
            horizon = heads[1].removeprefix("predicted, next ")
            assert horizon == heads[2].removeprefix("live, last ")
            assert page.evaluate(LAYOUT_JS)["cards"] == []
            page.screenshot(path=str(screens / "3-what-if.png"), full_page=True)
            assert errors == []  # nothing went wrong in the page so far
            # a bad value is reported, the page keeps working (the browser logs the 422)
            page.fill("#attack-fraction", "3")
            page.click("#attack-btn")
            expect(page.locator("#attack-msg")).to_contain_text("fraction")
            page.fill("#attack-fraction", "1")
            page.click("#clear-btn")
            expect(line).to_have_attribute("data-status", "up")
            page.screenshot(path=str(screens / "4-cleared.png"), full_page=True)
        finally:
            browser.close()
    assert all("status of 422" in e and e.endswith("/M1-M2/attack") for e in errors), errors
    if os.environ.get("QKDTWIN_UPDATE_DOCS_SCREENSHOT"):
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        for shot, name in (("2-alarm", "alarm"), ("3-what-if", "what-if")):
            shutil.copy(
                screens / f"{shot}.png",
                ROOT / "docs" / "img" / f"twin-dashboard-{name}-{width}x{height}.png",
            )


@pytest.mark.browser
def test_api_docs_page_works_offline(service) -> None:
    """/docs renders Swagger UI from the twin's own assets: every request to another host is
    refused, and none is even attempted."""
    elsewhere: list[str] = []
    errors: list[str] = []

    def gate(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(service.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", gate)
            page.goto(service.url + "/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("qkdtwin")
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            paths = page.locator(".opblock-summary-path").all_text_contents()
            assert "/api/what-if" in [x.replace("\u200b", "") for x in paths]
            page.screenshot(path=str(SCREENS / "api-docs-offline.png"))
        finally:
            browser.close()
    assert elsewhere == []
    assert errors == []


def test_cli_what_if_on_a_scenario_file_equals_engine(tmp_path, capsys) -> None:
    import numpy as np
    import yaml

    from qkdtwin.network import seed_topology, simulate, uniform_demands

    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(seed_dict()))
    assert (
        main(
            [
                "twin",
                "what-if",
                "--scenario",
                str(path),
                "--set",
                "C=300",
                "--policy",
                "proportional",
                "--seed",
                "5",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    ref = simulate(
        seed_topology(),
        uniform_demands(seed_topology(), 1.0),
        pool_capacity=300,
        keys_per_service=10,
        policy="proportional",
        rng=np.random.default_rng(5),
        duration=1000.0,
    )
    assert d["success_rate"] == ref.success_rate
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(seed_dict(speed=-1)))
    assert main(["twin", "serve", "--scenario", str(bad), "--port", "0"]) == 2
    assert "twin.speed" in capsys.readouterr().err
    assert main(["twin", "serve", "--scenario", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read scenario" in capsys.readouterr().err
    assert main(["twin", "what-if", "--set", "V=0"]) == 2
    assert "set.V" not in capsys.readouterr().out


def test_cli_demo_runs_the_tour_and_stops(tmp_path, capsys) -> None:
    argv = ["twin", "demo", "--port", "0", "--speed", "20", "--data-dir", str(tmp_path), "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["link"] == "M1-M2"
    assert d["alarm"]["link"] == "M1-M2"
    assert [e["what"] for e in d["alarm"]["events"]] == [
        "raised",
        "key_discarded",
        "rerouted",
        "attack_cleared",
        "restored",
    ][: len(d["alarm"]["events"])]
    assert d["event_to_dashboard_ms"] > 0
    assert d["alarm_to_reroute_ms"] >= 0
    assert d["what_if"]["params"]["links_down"] == ["M1-M2"]
    st = {x["id"]: x["status"] for x in d["state"]["links"]}
    assert st["M1-M2"] == "up"


def test_cli_serve_prints_url_and_stops_after_duration(tmp_path, capsys) -> None:
    argv = [
        "twin",
        "serve",
        "--port",
        "0",
        "--duration",
        "1",
        "--no-telemetry",
        "--data-dir",
        str(tmp_path / "serve"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dashboard at http://127.0.0.1:" in out
    assert (tmp_path / "serve" / "twin.db").exists()
