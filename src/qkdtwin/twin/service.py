"""The twin service: REST API, server-sent events and the dashboard, in one FastAPI app.

Routes (all documented in the OpenAPI schema at ``/openapi.json``, browsable at ``/docs``):

* ``GET /`` the dashboard (HTML, JavaScript and CSS served from the package: no internet);
* ``GET /api/state`` the whole live state: ``links`` (``id``, ``qber``, ``key_rate_bps``,
  ``status``, ...), ``pools``, ``kmes``, ``devices``, ``alarms``, ``network``, ``nodes``;
* ``GET /api/links``, ``GET /api/links/{link}``, ``POST /api/links/{link}/attack``
  (``{"type": "intercept-resend", "fraction": 0.5}``), ``POST /api/links/{link}/clear``;
* ``GET /api/alarms``, ``GET /api/alarms/{id}``;
* ``POST /api/what-if`` (``{"set": {"V": 4, "C": 400}, "policy": "adaptive-key-residue"}``);
* ``GET /api/history`` (``?series=NAME&series=...`` or ``?prefix=link:``), ``GET /api/devices``
  (``?offset=&limit=`` pages, ``?gateway=NODE``, ``?health=fault``: 10,000 devices at 1,000
  gateways are not one response);
* ``GET /api/events`` the live event stream (``text/event-stream``): one ``tick`` event per
  tick with the compact state, and ``attack``, ``alarm``, ``clear``, ``restored``, ``what-if``.

Bad input never stops the live loop: an unknown link, attack type or what-if parameter, or an
out-of-range value is answered with HTTP 400 ``{"error", "field", "message"}`` (domain checks)
or 422 (schema checks, FastAPI's body naming the field).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from qkdtwin.ops import (
    StateCollector,
    _install_error_handler,
    install_health_routes,
    service_app,
)
from qkdtwin.twin.alarms import AlarmRecord
from qkdtwin.twin.loop import LinkState, Twin, TwinState, TwinWhatIf
from qkdtwin.twin.results import DeviceReading, TelemetrySummary
from qkdtwin.twin.sse import event_stream

__all__ = ["AttackRequest", "WhatIfRequest", "create_twin_app", "web_dir"]


def web_dir() -> Path:
    """Directory of the dashboard's static files inside the package."""
    return Path(str(resources.files("qkdtwin.twin").joinpath("web")))


class AttackRequest(BaseModel):
    """Body of ``POST /api/links/{link}/attack``."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(default="intercept-resend", description="intercept-resend or pns")
    fraction: float = Field(
        default=1.0, ge=0.0, le=1.0, description="fraction of pulses Eve attacks"
    )


class WhatIfRequest(BaseModel):
    """Body of ``POST /api/what-if``."""

    model_config = ConfigDict(extra="forbid")
    set: dict[str, float] = Field(
        default_factory=dict, description="changed parameters: V, C, X, load, duration"
    )
    policy: str | None = Field(default=None, description="allocation policy to predict with")
    seed: int | None = Field(default=None, ge=0, description="seed of the prediction")
    start: Literal["present", "scenario"] = Field(
        default="present",
        description="start from the pools' current levels or from the scenario's initial fill",
    )
    window_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "compare on the same horizon: predict for as long as the live window of this many"
            " seconds covers, and show the live rates over that window (without set.duration)"
        ),
    )


class DevicesView(TypedDict):
    """Body of ``GET /api/devices``: one page of the devices that pass the filters."""

    telemetry: TelemetrySummary
    total: int
    offset: int
    limit: int | None
    devices: list[DeviceReading]


#: The response models of the JSON routes: a plain object, as documented. Without one, FastAPI
#: would build the model from the handler's TypedDict (pydantic refuses ``typing.TypedDict``
#: before Python 3.12, and the schema and the response validation would change).
_OBJECT: Any = dict[str, Any]
_OBJECTS: Any = list[dict[str, Any]]


def _twin_ready(twin: Twin, run: bool) -> tuple[bool, list[str]]:
    """Ready when the engine ticks (its thread runs; tests that step it by hand: always)."""
    thread = getattr(twin, "_thread", None)
    if run and (thread is None or not thread.is_alive()):
        return False, ["the twin's engine is not running"]
    return True, []


def _twin_gauges(twin: Twin) -> list[tuple[str, str, list[str], list[tuple[list[str], float]]]]:
    """Return the live twin's state as Prometheus gauges (read at scrape time)."""
    st = twin.state(compact=True)
    links = st["links"]
    pools = st["pools"]
    return [
        ("qkdtwin_link_qber", "QBER of the link's last block.", ["link"],
         [([lk["id"]], lk["qber"]) for lk in links if lk["qber"] is not None]),
        ("qkdtwin_link_key_rate_bps", "Secret key rate of the link, bit/s.", ["link"],
         [([lk["id"]], lk["key_rate_bps"]) for lk in links]),
        ("qkdtwin_link_up", "1 when the link is up, 0 in alarm or cut.", ["link"],
         [([lk["id"]], 1.0 if lk["status"] == "up" else 0.0) for lk in links]),
        ("qkdtwin_pool_keys", "Keys in the pool of a device pair.", ["pool"],
         [([p["id"]], p["level"]) for p in pools]),
        ("qkdtwin_pool_services_total", "Services requested from the pool since start.",
         ["pool"], [([p["id"]], p["requests"]) for p in pools]),
        ("qkdtwin_pool_services_served_total", "Services served by the pool since start.",
         ["pool"], [([p["id"]], p["successes"]) for p in pools]),
        ("qkdtwin_alarms_active", "Alarms not yet cleared.", [], [([], st["active_alarms"])]),
        ("qkdtwin_alarms_total", "Alarms raised since start.", [], [([], len(st["alarms"]))]),
        ("qkdtwin_tick", "Ticks of the twin's engine since start.", [], [([], st["tick"])]),
    ]  # fmt: skip


def create_twin_app(twin: Twin, *, run: bool = True) -> FastAPI:
    """Build the service around ``twin``.

    Parameters
    ----------
    twin
        The live twin.
    run
        Start the twin's tick thread when the app starts and stop it when the app stops (tests
        pass ``False`` and call :meth:`Twin.step` themselves).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run:
            twin.start()
        try:
            yield
        finally:
            if run:
                twin.stop()

    app = service_app(
        title="qkdtwin live twin",
        version="1",
        description="Digital twin of a quantum-secured IIoT network: state, attacks, what-if.",
        lifespan=lifespan,
    )
    app.state.twin = twin
    install_health_routes(
        app,
        ready=lambda: _twin_ready(twin, run),
        collector=StateCollector(lambda: _twin_gauges(twin)),
    )

    _install_error_handler(app)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(web_dir() / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=web_dir()), name="static")

    @app.get("/api/state", summary="The whole live state", response_model=_OBJECT)
    def get_state(
        compact: Annotated[
            bool,
            Query(
                description="Leave the device list out (its size in devices_count), as the "
                "event stream does: with 10,000 devices the list is most of the state"
            ),
        ] = False,
    ) -> TwinState:
        return twin.state(compact=compact)

    @app.get(
        "/api/links",
        summary="Every QKD link: QBER, key rate, status, attack, keys",
        response_model=_OBJECTS,
    )
    def get_links() -> list[LinkState]:
        return list(twin.state(compact=True)["links"])

    @app.get("/api/links/{link}", summary="One link", response_model=_OBJECT)
    def get_link(link: str) -> LinkState:
        lid = twin.resolve_link(link)
        return next(x for x in twin.state(compact=True)["links"] if x["id"] == lid)

    @app.post(
        "/api/links/{link}/attack", summary="Inject an attack on a link", response_model=_OBJECT
    )
    def post_attack(link: str, body: AttackRequest) -> LinkState:
        return twin.attack(link, body.type, body.fraction)

    @app.post(
        "/api/links/{link}/clear", summary="Clear the attack on a link", response_model=_OBJECT
    )
    def post_clear(link: str) -> LinkState:
        return twin.clear(link)

    @app.get("/api/alarms", summary="The alarm log, newest first", response_model=_OBJECTS)
    def get_alarms(active: bool | None = None) -> list[AlarmRecord]:
        out = twin.alarms.to_list()
        return [a for a in out if active is None or a["active"] == active]

    @app.get(
        "/api/alarms/{alarm_id}",
        summary="One alarm and the twin's response",
        response_model=_OBJECT,
    )
    def get_alarm(alarm_id: int) -> AlarmRecord:
        return twin.alarm(alarm_id).to_dict()

    @app.post(
        "/api/what-if",
        summary="Predict success rates with changed parameters",
        response_model=_OBJECT,
    )
    def post_what_if(body: WhatIfRequest) -> TwinWhatIf:
        return twin.what_if(
            body.set,
            policy=body.policy,
            seed=body.seed,
            start=body.start,
            window_s=body.window_s,
        )

    @app.get("/api/history", summary="Time series kept by the twin", response_model=_OBJECT)
    def get_history(
        series: list[str] | None = Query(default=None),  # noqa: B008
        prefix: str | None = None,
    ) -> dict[str, list[list[float | None]]]:
        return twin.history.get(series, prefix)

    @app.get(
        "/api/devices",
        summary="IIoT devices: latest telemetry and health",
        response_model=_OBJECT,
    )
    def get_devices(
        offset: Annotated[int, Query(ge=0, description="First device of the page")] = 0,
        limit: Annotated[
            int | None, Query(ge=1, le=100_000, description="Devices per page (all if omitted)")
        ] = None,
        gateway: Annotated[str | None, Query(description="Only this gateway's devices")] = None,
        health: Annotated[
            Literal["ok", "fault", "drift"] | None, Query(description="Only this health")
        ] = None,
    ) -> DevicesView:
        tel, total, page = twin.device_page(
            offset=offset, limit=limit, gateway=gateway, health=health
        )
        return {
            "telemetry": tel,
            "total": total,
            "offset": offset,
            "limit": limit,
            "devices": page,
        }

    @app.get("/api/events", summary="Live events (server-sent events)")
    async def events(request: Request) -> StreamingResponse:
        return event_stream(
            request,
            twin.subscribe,
            twin.unsubscribe,
            first=lambda: {"type": "tick", "state": twin.state(compact=True)},
        )

    _ = (get_state, get_links, get_link, post_attack, post_clear, get_alarms, get_alarm)
    _ = (post_what_if, get_history, get_devices, events, index)
    return app
