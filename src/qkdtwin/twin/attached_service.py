"""The attached twin's service: typed REST API, server-sent events and its dashboard.

Routes (every body is a pydantic model of :mod:`qkdtwin.twin.models`, in ``/openapi.json``):

| route | what |
|---|---|
| ``GET /`` | the dashboard: topology, every link's estimated loss with its interval, alarms |
| ``GET /api/state`` | :class:`~qkdtwin.twin.models.AttachedState` |
| ``GET /api/links``, ``GET /api/links/{link}`` | links: status, estimate, source health |
| ``POST /api/links/{link}/rebaseline`` | accept the link's present behaviour as normal |
| ``GET /api/alarms[?active=true]``, ``GET /api/alarms/{id}`` | alarms, newest first |
| ``GET /api/history?link=L`` | ``[[t, loss_db, low, high, qber], ...]`` per link |
| ``GET /api/events`` | server-sent events: ``alarm``, ``restored``, ``tick`` |

An unknown link or alarm is answered ``400 {"error", "field", "message"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from qkdtwin.errors import UnknownNameError
from qkdtwin.network.topology import resolve_link
from qkdtwin.ops import (
    StateCollector,
    _install_error_handler,
    install_health_routes,
    service_app,
)
from qkdtwin.twin.attached import AttachedTwin, AttachedWhatIf
from qkdtwin.twin.models import AlarmView, AttachedState, LinkView
from qkdtwin.twin.service import WhatIfRequest, web_dir
from qkdtwin.twin.sse import event_stream

__all__ = ["create_attached_app"]


def _attached_ready(twin: AttachedTwin) -> tuple[bool, list[str]]:
    """Ready when every link's telemetry and every KME's polls are current."""
    st = twin.state()
    reasons = [f"link {lk.id}: telemetry {lk.source}" for lk in st.links if lk.source != "ok"]
    reasons += [f"KME {k.node}: {k.status}" for k in st.kmes if k.status != "ok"]
    return not reasons, reasons


def _attached_gauges(
    twin: AttachedTwin,
) -> list[tuple[str, str, list[str], list[tuple[list[str], float]]]]:
    """Return the attached twin's estimates and alarms as Prometheus gauges."""
    st = twin.state()
    est = [(lk.id, lk.estimate) for lk in st.links]
    stores = [(k.node, kl) for k in st.kmes for kl in k.links if kl.peer is not None]
    return [
        ("qkdtwin_link_qber_estimate", "Estimated signal QBER over the window.", ["link"],
         [([i], e.qber) for i, e in est if e.qber is not None]),
        ("qkdtwin_link_key_rate_estimate_bps", "Estimated secret key rate, bit/s.", ["link"],
         [([i], e.key_rate_bps) for i, e in est if e.key_rate_bps is not None]),
        ("qkdtwin_link_loss_estimate_db", "Estimated link loss, dB.", ["link"],
         [([i], e.loss_db) for i, e in est if e.loss_db is not None]),
        ("qkdtwin_link_up", "1 when the link is up, 0 in alarm or recovering.", ["link"],
         [([lk.id], 1.0 if lk.status == "up" else 0.0) for lk in st.links]),
        ("qkdtwin_kme_store_available_keys", "Keys in a KME's link store.", ["kme", "peer"],
         [([n, str(kl.peer)], kl.available) for n, kl in stores]),
        ("qkdtwin_kme_store_delivered_keys_total", "Keys delivered from a KME's link store.",
         ["kme", "peer"], [([n, str(kl.peer)], kl.delivered_total) for n, kl in stores]),
        ("qkdtwin_alarms_active", "Alarms not yet cleared.", [], [([], st.active_alarms)]),
        ("qkdtwin_alarms_total", "Alarms raised since start.", [], [([], len(st.alarms))]),
    ]  # fmt: skip


def create_attached_app(twin: AttachedTwin) -> FastAPI:
    """Build the service around an attached twin (its inputs are driven from outside)."""
    app = service_app(
        title="qkdtwin attached twin",
        version="1",
        description="Digital twin of an attached QKD-secured IIoT network: estimates with "
        "intervals, alarms from statistics alone. Nothing here is the network's truth.",
    )
    app.state.twin = twin
    install_health_routes(
        app,
        ready=lambda: _attached_ready(twin),
        collector=StateCollector(lambda: _attached_gauges(twin)),
    )

    _install_error_handler(app)

    def resolve(link: str) -> str:
        lid = resolve_link(link, set(twin.links))
        if lid is None:
            raise UnknownNameError(
                f"unknown link {link!r}; links: {', '.join(sorted(twin.links))}",
                field="link",
                value=link,
            )
        return lid

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(web_dir() / "attached.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=web_dir()), name="static")

    @app.get("/api/state", summary="The whole state", response_model=AttachedState)
    def get_state() -> AttachedState:
        return twin.state()

    @app.get("/api/links", summary="Every link", response_model=list[LinkView])
    def get_links() -> list[LinkView]:
        return twin.state().links

    @app.get("/api/links/{link}", summary="One link", response_model=LinkView)
    def get_link(link: str) -> LinkView:
        lid = resolve(link)
        return next(x for x in twin.state().links if x.id == lid)

    @app.post(
        "/api/links/{link}/rebaseline",
        summary="Accept the link's present behaviour as its new normal",
        response_model=LinkView,
    )
    def post_rebaseline(link: str) -> LinkView:
        return twin.rebaseline(resolve(link))

    @app.post(
        "/api/what-if",
        summary="Predict the pools' success rates from the present",
        # a plain object, as documented (not a model built from the handler's TypedDict)
        response_model=dict[str, Any],
    )
    def post_what_if(body: WhatIfRequest) -> AttachedWhatIf:
        return twin.what_if(body.set, policy=body.policy, seed=body.seed, start=body.start)

    @app.get("/api/alarms", summary="Alarms, newest first", response_model=list[AlarmView])
    def get_alarms(active: bool | None = None) -> list[AlarmView]:
        return [a for a in twin.state().alarms if active is None or a.active == active]

    @app.get("/api/alarms/{alarm_id}", summary="One alarm", response_model=AlarmView)
    def get_alarm(alarm_id: int) -> AlarmView:
        for a in twin.state().alarms:
            if a.id == alarm_id:
                return a
        raise UnknownNameError(f"no alarm {alarm_id}", field="alarm_id", value=alarm_id)

    @app.get("/api/history", summary="Estimated loss (with interval) and QBER per interval")
    def get_history(link: str | None = None) -> dict[str, list[list[float | None]]]:
        ids = [resolve(link)] if link else list(twin.links)
        return {lid: [list(row) for row in twin.history(lid)] for lid in ids}

    @app.get("/api/events", summary="Live events (server-sent events)")
    async def events(request: Request) -> StreamingResponse:
        return event_stream(request, twin.subscribe, twin.unsubscribe)

    _ = (get_state, get_links, get_link, post_rebaseline, get_alarms, get_alarm, get_history)
    _ = (events, index)
    return app
