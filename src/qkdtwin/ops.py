"""Operations endpoints shared by the HTTP services: offline API docs, health, metrics.

Industrial networks are often air-gapped and run their own monitoring. Every qkdtwin service
built with :func:`service_app` serves

* ``/docs`` and ``/redoc`` with **local** assets (``fastapi-offline``: Swagger UI and ReDoc
  bundled in the package, no CDN), so the API page works with no network;

and :func:`install_health_routes` adds

* ``GET /healthz``: liveness, 200 while the process serves requests;
* ``GET /readyz``: readiness from the service's own check (its sources connected, or its
  engine running), 200 or 503 with the reasons;
* ``GET /metrics``: the Prometheus text exposition format from the app's **own** registry
  (several apps share a process: every KME of a development network, the twin beside them),
  filled at scrape time by the service's collector, plus a histogram of request latencies per
  route. Metrics never carry key material.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from typing import Any

from qkdtwin.extras import require_extra

require_extra("kms", what="qkdtwin.ops")

import anyio.to_thread  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest  # noqa: E402
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

__all__ = [
    "ReadyCheck",
    "StateCollector",
    "freeze_startup_objects",
    "install_health_routes",
    "service_app",
]

#: Returns ``(ready, reasons)``: whether the service can do its job, and why not.
ReadyCheck = Callable[[], tuple[bool, list[str]]]


def service_app(**kwargs: Any) -> FastAPI:
    """Return a FastAPI app whose ``/docs`` and ``/redoc`` use bundled assets (no CDN)."""
    from fastapi_offline import FastAPIOffline

    app: FastAPI = FastAPIOffline(**kwargs)
    return app


def _install_error_handler(app: FastAPI) -> None:
    """Answer every :class:`~qkdtwin.errors.QkdTwinError` a route raises with 400 and its fields.

    The body is ``{"error": <class name>, "field": <the offending field or null>, "message":
    <the error's text>}``: how the twin, attached-twin and plant-control services report a
    refused request (the KMEs answer with ETSI Error objects instead).
    """
    from qkdtwin.errors import QkdTwinError

    @app.exception_handler(QkdTwinError)
    async def _on_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            status_code=400,
            content={
                "error": type(exc).__name__,
                "field": getattr(exc, "field", None),
                "message": str(exc),
            },
        )


class StateCollector(Collector):
    """A Prometheus collector that asks ``gauges`` for ``(name, help, labels, samples)``.

    ``gauges()`` returns an iterable of ``(name, help, label_names, [(label_values, value)])``
    read from the service's state at scrape time, so a metric is never staler than the
    state it reports.
    """

    def __init__(
        self,
        gauges: Callable[[], Iterable[tuple[str, str, list[str], list[tuple[list[str], float]]]]],
    ) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        """Yield one gauge family per entry of the state, read now."""
        for name, help_text, labels, samples in self._gauges():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in samples:
                family.add_metric(values, float(value))
            yield family


def install_health_routes(
    app: FastAPI,
    *,
    ready: ReadyCheck,
    collector: Collector | None = None,
    prefix: str = "qkdtwin",
    guard: Callable[[Request], Any] | None = None,
    time_requests: bool = True,
    in_schema: bool = True,
) -> CollectorRegistry:
    """Add ``/healthz``, ``/readyz`` and ``/metrics`` to ``app``; return its metric registry.

    Parameters
    ----------
    app
        The service.
    ready
        The readiness check (:data:`ReadyCheck`).
    collector
        Metrics read from the service's state at scrape time (e.g. :class:`StateCollector`).
    prefix
        Prefix of the request-latency histogram's name.
    guard
        Awaitable check run before ``/metrics`` answers (a KME's operator certificate); it
        raises to refuse.
    time_requests
        Add the request-latency histogram (an HTTP middleware). The KMEs leave it off: their
        admission control and erasure act on the raw ASGI response, which a
        ``BaseHTTPMiddleware`` would wrap.
    in_schema
        List the three routes in the app's OpenAPI document (the KMEs keep theirs to the
        ETSI paths and the operator interface).
    """
    registry = CollectorRegistry(auto_describe=True)
    if collector is not None:
        registry.register(collector)
    if time_requests:
        latency = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "HTTP request latency by route and status class, seconds.",
            ["route", "code"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

        @app.middleware("http")
        async def _time_requests(request: Request, call_next: Any) -> Response:
            t0 = time.perf_counter()
            response: Response = await call_next(request)
            route = request.scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            latency.labels(path, f"{response.status_code // 100}xx").observe(
                time.perf_counter() - t0
            )
            return response

    @app.get("/healthz", include_in_schema=in_schema, tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=in_schema, tags=["operations"], response_model=None)
    def readyz() -> JSONResponse:
        """Readiness: 200 when the service can do its job, else 503 with the reasons."""
        ok, reasons = ready()
        return JSONResponse(
            status_code=200 if ok else 503,
            content={"status": "ready" if ok else "not ready", "reasons": reasons},
        )

    @app.get("/metrics", include_in_schema=in_schema, tags=["operations"], response_model=None)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition format (this app's registry only)."""
        if guard is not None:
            await guard(request)
        # the collectors read stores and state: off the event loop
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return registry


def freeze_startup_objects() -> None:
    """Move every object start-up made out of the garbage collector's sight; call once serving.

    A serving process holds a few hundred thousand long-lived objects (modules, FastAPI's and
    pydantic's schemas, SQLAlchemy's metadata and caches) that are never garbage. Each full
    collection walked them all with the event loop stopped: 50-60 ms, which put those stalls
    in the p99 of a KME's ``enc_keys`` (``benchmarks/kms_roundtrip.py``, open loop at 5,000
    keys/s, two KME processes: p99 44-56 ms before, 37-40 ms after). :func:`gc.freeze` keeps
    them in a permanent generation, so a full collection looks only at objects made while
    serving. Garbage left by start-up is collected first, so that none of it is kept.
    """
    gc.collect()
    gc.freeze()
