"""The dashboard of a twin of a thousand links, in chromium: regions, search, worst first."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from qkdtwin.twin import Twin
from qkdtwin.twin.runner import ServiceThread

from .test_live import CHROMIUM, LAYOUT_JS, ROOT, SCREENS, SIZES

# a few minutes of one worker (building and calibrating a 1,044-link twin with 10,000 devices,
# two window sizes): run by `make test-slow` and `make bench`, so that `make test` stays
# within its few minutes
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: 4 metros x 10 OLTs x 25 gateways: 1,044 links, 1,000 gateways, 1,000 key pools.
SHAPE = (4, 10, 25)
WORST_N, TABLE_ROWS, DEVICE_ROWS = 8, 25, 60  # as in web/app.js
DEVICES_PER_GATEWAY = 10  # 10,000 devices


def big_scenario() -> dict[str, Any]:
    m, o, g = SHAPE
    gws = [f"GW{i}.{j}.{k}" for i in range(m) for j in range(o) for k in range(g)]
    return {
        "topology": {
            "builder": "hierarchical",
            "params": {"metros": m, "olts_per_metro": o, "gateways_per_olt": g, "olt_rate": 10.0},
        },
        "demands": [{"src": gw, "dst": "M0", "rate": 1.0 / len(gws)} for gw in gws],
        "pool_capacity": 200,
        "keys_per_service": 10,
        "policy": "ttd-balance",
        "duration": 1000.0,
        "seed": 1,
        # short calibration runs, no post-processing: the page is under test, not the physics
        "twin": {
            "speed": 1.0,
            "calibration_pulses": 200_000,
            "postprocess": False,
            # 10,000 devices sending through the embedded broker (one key epoch per gateway
            # every 10 min, as in benchmarks/twin_scale.py: the ring links relay ~7 keys/s)
            "aggregator": "M0",
            "devices_per_gateway": DEVICES_PER_GATEWAY,
            "telemetry": {"broker": "memory", "rekey_seconds": 600.0},
            "link_defaults": {"length_km": 10.0},
        },
    }


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Iterator[ServiceThread]:
    twin = Twin(big_scenario(), data_dir=tmp_path_factory.mktemp("big"))
    svc = ServiceThread(twin, port=0).start()
    yield svc
    svc.stop()
    twin.close()


def _series(page: Any, chart: str) -> tuple[set[str], set[str]]:
    named = set(
        page.locator(f"#{chart}-legend .legend-item").evaluate_all(
            "els => els.map(e => e.dataset.series)"
        )
    )
    drawn = set(
        page.locator(f"#{chart} polyline").evaluate_all("els => els.map(e => e.dataset.series)")
    )
    return named, drawn


def _fits(page: Any, height: int, width: int) -> None:
    layout = page.evaluate(LAYOUT_JS)
    assert layout["page"] <= 0, layout
    assert layout["cards"] == [], layout
    top, bottom, left, right = layout["alarms"]
    assert top >= 0, layout
    assert bottom <= height, layout
    assert left >= 0, layout
    assert right <= width, layout


@pytest.mark.browser
@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_dashboard_at_a_thousand_links(big: ServiceThread, width: int, height: int) -> None:
    url = big.url
    st = httpx.get(f"{url}/api/state", timeout=60).json()
    n_links = len(st["links"])
    assert n_links == 1044
    metros = sorted(n["id"] for n in st["nodes"] if n["role"] == "metro")
    target = "GW2.3.4-OLT2.3"
    screens = SCREENS / f"scale-{width}x{height}"
    screens.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            # the aggregated map: one disc per region (metro), no node drawn one by one
            expect(page.locator("#topology g.region")).to_have_count(len(metros), timeout=30_000)
            assert page.locator("#topology g.node").count() == 0
            expect(page.locator("#kpi-conn")).to_have_text("live", timeout=30_000)
            expect(page.locator("#topo-crumb")).to_contain_text(f"{n_links} links")
            # the worst links first, a page of them; the charts draw the worst few, and every
            # drawn series has its legend entry
            expect(page.locator("#links-table tbody tr")).to_have_count(TABLE_ROWS)
            expect(page.locator("#links-note")).to_contain_text(f"of {n_links} links")
            expect(page.locator("#chart-qber-legend .legend-item")).to_have_count(WORST_N)
            named, drawn = _series(page, "chart-qber")
            assert named == drawn
            assert len(named) == WORST_N
            expect(page.locator("#pools-table tbody tr")).to_have_count(TABLE_ROWS)
            # the devices: one page of them, worst first, and their count (the gateways'
            # first keys are relayed one after another: readings arrive over minutes)
            expect(page.locator("#devices-table tbody tr")).to_have_count(
                DEVICE_ROWS, timeout=300_000
            )
            expect(page.locator("#iot-summary")).to_contain_text(re.compile(r"^\d+ devices \("))
            shown = int(page.locator("#iot-summary").inner_text().split(" devices", 1)[0])
            assert DEVICE_ROWS <= shown <= DEVICES_PER_GATEWAY * SHAPE[0] * SHAPE[1] * SHAPE[2]
            _fits(page, height, width)
            page.screenshot(path=str(screens / "1-regions.png"), full_page=False)
            # an attack: the link heads the table, its region's disc turns red, it is charted
            r = httpx.post(f"{url}/api/links/{target}/attack", json={"fraction": 1.0}, timeout=60)
            r.raise_for_status()
            expect(page.locator("#links-table tbody tr").first).to_have_attribute(
                "data-link", target, timeout=20_000
            )
            expect(page.locator('#topology g.region[data-region="M2"]')).to_have_attribute(
                "data-severity", "3"
            )
            expect(
                page.locator(f'#chart-qber-legend .legend-item[data-series="{target}"]')
            ).to_have_count(1)
            expect(page.locator(f'#alarms li.active[data-link="{target}"]')).to_have_count(1)
            named, drawn = _series(page, "chart-qber")
            assert named == drawn
            assert target in named
            _fits(page, height, width)
            page.screenshot(path=str(screens / "2-alarm.png"), full_page=False)
            # drill down into the region: its nodes and links, the attacked one in alarm
            page.locator('#topology g.region[data-region="M2"]').click()
            region_nodes = 1 + SHAPE[1] + SHAPE[1] * SHAPE[2]
            expect(page.locator("#topology g.node")).to_have_count(region_nodes)
            expect(page.locator(f'#topology .link[data-link="{target}"]')).to_have_attribute(
                "data-status", "alarm"
            )
            expect(page.locator("#topo-crumb")).to_contain_text("region M2")
            _fits(page, height, width)
            page.screenshot(path=str(screens / "3-region.png"), full_page=False)
            page.click("#topo-back")
            expect(page.locator("#topology g.region")).to_have_count(len(metros))
            # search: the table lists the matching links; Enter shows the region of the match
            page.fill("#link-search", "GW1.2.3")
            expect(page.locator("#links-table tbody tr")).to_have_count(1)
            expect(page.locator("#links-table tbody tr").first).to_have_attribute(
                "data-link", "GW1.2.3-OLT1.2"
            )
            page.press("#link-search", "Enter")
            expect(page.locator("#topo-crumb")).to_contain_text("region M1")
            # series on demand: a click on a row pins the link's series in the charts
            page.locator("#links-table tbody tr").first.click()
            expect(
                page.locator('#chart-qber-legend .legend-item[data-series="GW1.2.3-OLT1.2"]')
            ).to_have_count(1)
            named, drawn = _series(page, "chart-rate")
            assert named == drawn
            assert "GW1.2.3-OLT1.2" in named
            _fits(page, height, width)
            page.fill("#link-search", "")
            httpx.post(f"{url}/api/links/{target}/clear", timeout=60).raise_for_status()
        finally:
            browser.close()
    assert errors == []
    if os.environ.get("QKDTWIN_UPDATE_DOCS_SCREENSHOT"):
        for shot, name in (("1-regions", "scale-regions"), ("3-region", "scale-region")):
            shutil.copy(
                screens / f"{shot}.png",
                ROOT / "docs" / "img" / f"twin-dashboard-{name}-{width}x{height}.png",
            )
