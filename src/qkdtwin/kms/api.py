"""ETSI GS QKD 014 v1.1.1 REST API of one KME (FastAPI).

Endpoints (``{..._SAE_ID}`` is the *other* SAE; the caller is identified by its certificate)::

    GET       /api/v1/keys/{slave_SAE_ID}/status     Status
    GET/POST  /api/v1/keys/{slave_SAE_ID}/enc_keys   Key request -> Key container (master)
    GET/POST  /api/v1/keys/{master_SAE_ID}/dec_keys  Key IDs -> Key container (slave)

Outside ETSI GS QKD 014, every KME also answers ``GET /kme/v1/links`` to operator
certificates only (key counts per QKD link, :mod:`qkdtwin.kms.operator`); the KME-to-KME
endpoints of :mod:`qkdtwin.kms.peering` are added when the KME belongs to a network.

Every refusal is an ETSI Error object ``{"message": ..., "details": [...]}`` with status 400
(bad request, unknown SAE or key_ID, already delivered), 401 (unknown caller, or a key_ID not
issued to the caller) or 503 (not enough keys). The mapping from :class:`~qkdtwin.errors.KmsError`
to HTTP lives in :func:`_install_error_handlers` and nowhere else. A failing key store
(lost connection, full disk, ...) gives 503 with ``Retry-After`` when retrying may help, any
other unexpected exception 500, both as ETSI Error bodies that name nothing internal (the
detail goes to the log, logger ``qkdtwin.kms``).

Limits (``KmeConfig``, "Limits" in ``docs/kms.md``): a body above ``max_body_bytes`` gets 413
before it is parsed (:mod:`qkdtwin.kms.limits`), JSON bodies are validated strictly (``"3"``
is not a number), and ``dec_keys`` takes at most ``max_key_per_request`` key_IDs.

Admission control ("Admission control" in ``docs/kms.md``, :mod:`qkdtwin.kms.admission`): at
most ``max_active_requests`` SAE requests are served at once and ``max_queued_requests`` wait
(each at most ``queue_timeout_s``); beyond, 503 with ``Retry-After`` at once. A request whose
client has gone is not served. An ``enc_keys`` reservation whose client went away before
the response was sent is undone (:meth:`KeyStore.unreserve`, and at the peer KME through
:meth:`KmeNode.undo_reservation`) instead of being left reserved for nobody. The SAE routes
run their store work on a thread limiter of ``max_active_requests`` threads; the peer and
operator routes bypass admission and run on their own (``peer_threads``).

The caller's SAE ID comes from :func:`caller_sae_id`, which reads the ``qkdtwin.sae_id`` entry
that the mutual-TLS server (:mod:`qkdtwin.kms.tls`) puts in the ASGI scope from the verified
client certificate. Unit tests override that dependency to use the in-process transport.
"""

# ruff: noqa: N815  (the ETSI object fields are mixedCase by the standard: key_ID, slave_SAE_ID)

from __future__ import annotations

import base64
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from qkdtwin.errors import (
    ConfigError,
    KeyAccessError,
    KmsError,
    KmsRequestError,
)
from qkdtwin.kms.admission import (
    DEFAULT_MAX_ACTIVE_REQUESTS,
    DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_PEER_THREADS,
    DEFAULT_QUEUE_TIMEOUT_S,
    SCOPE_TICKET_KEY,
    AdmissionGate,
    SaeAdmission,
    ThreadLimiter,
    Ticket,
)
from qkdtwin.kms.etsi_errors import etsi_status
from qkdtwin.kms.handover import Eraser, HandOverEraser
from qkdtwin.kms.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from qkdtwin.kms.operator import (
    caller_operator_id,
    install_operator_routes,
    links_response,
    store_health,
)
from qkdtwin.kms.peering import CLIENT_GONE_AUDIT_BY, KmeNode, install_peer_routes
from qkdtwin.kms.store import (
    HANDED_OVER_AUDIT_BY,
    STORE_ERRORS,
    DeliveredKey,
    KeyStore,
    describe_error,
    is_transient_store_error,
)
from qkdtwin.kms.tls import (
    HEADER_TIMEOUT_S,
    KEEP_ALIVE_TIMEOUT_S,
    MAX_CONNECTIONS,
    TLS_HANDSHAKE_TIMEOUT_S,
)
from qkdtwin.ops import StateCollector, install_health_routes

__all__ = [
    "ErrorBody",
    "Key",
    "KeyContainer",
    "KeyIDs",
    "KeyRequest",
    "KmeConfig",
    "Status",
    "caller_sae_id",
    "create_app",
]

SCOPE_SAE_KEY = "qkdtwin.sae_id"


class KmeConfig(BaseModel):
    """Settings of one KME.

    Parameters
    ----------
    kme_id
        This KME's ID (``source_KME_ID`` of the Status object).
    saes
        Every known SAE ID mapped to the ID of the KME it sits behind. SAEs behind this KME
        may call it; the others may be named as slaves.
    key_size, min_key_size, max_key_size
        Default, smallest and largest key size in bits (multiples of 8).
    max_key_per_request
        Largest ``number`` in one request, and most key_IDs in one ``dec_keys`` request.
    max_key_count
        Most keys the store holds.
    max_sae_id_count
        Most ``additional_slave_SAE_IDs`` in one request (0: no multicast).
    max_body_bytes
        Largest request body in bytes (default 64 KiB); larger ones get 413 before they are
        parsed (:class:`qkdtwin.kms.limits.BodySizeLimit`). It must hold the largest KME-to-KME
        relay body (about 300 bytes per key at 1024 bits, times ``max_key_per_request``).
    tls_handshake_timeout_s, header_timeout_s, keep_alive_timeout_s, max_connections
        Limits of the TLS server (:func:`qkdtwin.kms.tls.make_server` reads them from here):
        seconds for the TLS handshake, seconds from the first byte of a request (or from the
        end of the handshake) until its headers are complete, seconds an idle connection is
        kept after a response, and most connections served at once (the next request gets 503
        with an ETSI Error body). See "Limits" in ``docs/kms.md``.
    max_active_requests, max_queued_requests, queue_timeout_s
        Admission control of SAE requests (``/api/v1/keys/...``): most served at once
        (default 16), most waiting for a slot (default 64), longest wait in seconds (default
        1.0). Beyond the queue, or after the wait, 503 with ``Retry-After: 1`` at once. See
        "Admission control" in ``docs/kms.md``.
    peer_threads
        Threads for KME-to-KME and operator requests (default 16), apart from the SAE
        requests' ``max_active_requests`` threads; those requests bypass admission control.
    """

    model_config = ConfigDict(extra="forbid")

    kme_id: str
    saes: dict[str, str]
    key_size: int = Field(256, ge=8, multiple_of=8)
    min_key_size: int = Field(64, ge=8, multiple_of=8)
    max_key_size: int = Field(1024, ge=8, multiple_of=8)
    max_key_per_request: int = Field(128, ge=1)
    max_key_count: int = Field(100_000, ge=1)
    max_sae_id_count: int = Field(0, ge=0)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1)
    tls_handshake_timeout_s: float = Field(TLS_HANDSHAKE_TIMEOUT_S, gt=0)
    header_timeout_s: float = Field(HEADER_TIMEOUT_S, gt=0)
    keep_alive_timeout_s: float = Field(KEEP_ALIVE_TIMEOUT_S, gt=0)
    max_connections: int = Field(MAX_CONNECTIONS, ge=1)
    max_active_requests: int = Field(DEFAULT_MAX_ACTIVE_REQUESTS, ge=1)
    max_queued_requests: int = Field(DEFAULT_MAX_QUEUED_REQUESTS, ge=0)
    queue_timeout_s: float = Field(DEFAULT_QUEUE_TIMEOUT_S, gt=0)
    peer_threads: int = Field(DEFAULT_PEER_THREADS, ge=1)

    @model_validator(mode="after")
    def _sizes_ordered(self) -> KmeConfig:
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("need min_key_size <= key_size <= max_key_size")
        return self


class Status(BaseModel):
    """ETSI GS QKD 014 Status object."""

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int
    status_extension: dict[str, Any] | None = None


class KeyRequest(BaseModel):
    """ETSI GS QKD 014 Key request object.

    Strict: a JSON body must give numbers as JSON numbers and IDs as strings (``"3"`` for
    ``number`` is refused with 400); the query form of ``GET enc_keys`` is converted first.
    """

    model_config = ConfigDict(strict=True)

    number: int | None = None
    size: int | None = None
    additional_slave_SAE_IDs: list[str] | None = None
    extension_mandatory: list[dict[str, Any]] | None = None
    extension_optional: list[dict[str, Any]] | None = None


class Key(BaseModel):
    """One entry of a Key container: ``key`` is base64."""

    key_ID: str
    key_ID_extension: dict[str, Any] | None = None
    key: str
    key_extension: dict[str, Any] | None = None


class KeyContainer(BaseModel):
    """ETSI GS QKD 014 Key container object."""

    keys: list[Key]
    key_container_extension: dict[str, Any] | None = None


class KeyID(BaseModel):
    """One entry of a Key IDs object (strict, as :class:`KeyRequest`)."""

    model_config = ConfigDict(strict=True)

    key_ID: str
    key_ID_extension: dict[str, Any] | None = None


class KeyIDs(BaseModel):
    """ETSI GS QKD 014 Key IDs object (strict, as :class:`KeyRequest`)."""

    model_config = ConfigDict(strict=True)

    key_IDs: list[KeyID]
    key_IDs_extension: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """ETSI GS QKD 014 Error object."""

    message: str
    details: list[dict[str, Any]] | None = None


async def caller_sae_id(request: Request) -> str:
    """Return the SAE ID of the caller, taken from its verified TLS client certificate.

    Raises
    ------
    KeyAccessError
        If the connection carries no verified client certificate.
    """
    sae = request.scope.get(SCOPE_SAE_KEY)
    if not sae:
        raise KeyAccessError("no verified client certificate")
    return str(sae)


# Module level: with postponed annotations FastAPI resolves ``Caller`` from module globals.
Caller = Annotated[str, Depends(caller_sae_id)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


def _container(keys: list[DeliveredKey]) -> KeyContainer:
    return KeyContainer(
        keys=[Key(key_ID=k.key_id, key=base64.b64encode(k.material).decode()) for k in keys]
    )


#: ``Retry-After`` seconds of a 503 caused by a transient key store error.
STORE_RETRY_AFTER_S = 1

log = logging.getLogger("qkdtwin.kms")

_Scope = MutableMapping[str, Any]
_Asgi = Callable[[_Scope, Any, Any], Any]


class _InternalErrorBody:
    """ASGI middleware: any unexpected exception becomes a 500 ETSI Error body.

    Starlette's own last resort answers a plain-text 500 and re-raises; this one logs the
    traceback (logger ``qkdtwin.kms``) and answers ``{"message": "internal error", "details":
    []}``, nothing about the exception. If the response had already started, it re-raises
    (the server then closes the connection).
    """

    def __init__(self, app: _Asgi) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("%s %s: unexpected error", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = JSONResponse(
                status_code=500, content={"message": "internal error", "details": []}
            )
            await body(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    """Map qkdtwin errors and request validation to ETSI Error bodies (the one place).

    Key store errors (:data:`~qkdtwin.kms.store.STORE_ERRORS`) give 503, with ``Retry-After``
    when they are transient; any other unexpected exception gives 500. Neither body says
    more than that: the detail goes to the log (logger ``qkdtwin.kms``).
    """

    async def kms_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KmsError)
        status = etsi_status(exc, 400)
        wait = exc.retry_after_s
        headers = None
        if wait is not None and math.isfinite(wait):
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        return JSONResponse(
            status_code=status,
            content={"message": exc.message, "details": exc.details},
            headers=headers,
        )

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "reason": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(
            status_code=400, content={"message": "malformed request", "details": details}
        )

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own refusals (an unparsable body, 404, 405) as ETSI Error bodies too.
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            status_code=exc.status_code,
            content={"message": str(exc.detail), "details": []},
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        # The database failed (lost connection, lock timeout, full disk, read-only file):
        # the transaction was rolled back, nothing was reserved or delivered. The detail goes
        # to the log only; the body says nothing about the store's URL, files or SQL.
        transient = is_transient_store_error(exc)
        log.warning(
            "%s %s: key store error (%s): %s",
            request.method,
            request.url.path,
            "transient" if transient else "persistent",
            describe_error(exc),
        )
        headers = {"Retry-After": str(STORE_RETRY_AFTER_S)} if transient else None
        return JSONResponse(
            status_code=503,
            content={"message": "key store unavailable; no key was delivered", "details": []},
            headers=headers,
        )

    app.add_exception_handler(KmsError, kms_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for cls in STORE_ERRORS:
        app.add_exception_handler(cls, store_error)
    app.add_middleware(_InternalErrorBody)


#: Seconds between two runs of :meth:`KeyStore.erase_delivered` triggered by ``enc_keys``.
ERASE_INTERVAL_S = 1.0


#: Mirrors a reservation at the peer KME: ``(master, slaves, key_IDs, size_bits)``.
PeerSync = Callable[[str, list[str], list[str], int], None]


@dataclass(frozen=True)
class _Reservation:
    """An ``enc_keys`` reservation: its keys, how to undo it, what to erase once it is sent."""

    keys: list[DeliveredKey]
    undo: Callable[[], object]
    #: erases the master-side copies once the response is sent (None: nothing to erase)
    hand_over: Eraser | None


def _client_gone_response() -> JSONResponse:
    # Never seen: the client has gone, the server writes nothing. A body all the same, so
    # that the route's answer is well-formed whatever happens.
    return JSONResponse(
        status_code=503,
        content={"message": "the client went away; no key was delivered", "details": []},
    )


def create_app(
    config: KmeConfig,
    store: KeyStore | None = None,
    *,
    sync: PeerSync | None = None,
    node: KmeNode | None = None,
) -> FastAPI:
    """Build the ETSI GS QKD 014 application of one KME.

    Parameters
    ----------
    config
        The KME's settings.
    store
        Its key store (shared with the SAEs' pairs it serves).
    sync
        Called after each ``enc_keys`` reservation, before the keys are returned, so the
        slave's KME (with its own store) reserves the same key_IDs. If it raises a
        :class:`KmsError`, the request fails with that error and the keys stay reserved here
        and undelivered (wasted, never handed out twice). In-process only; ``node`` is the
        network protocol. A reservation whose client went away is revoked here (the mirror
        cannot be undone through ``sync``; it is erased at its reservation TTL).
    node
        This KME's stores and peers in a KME network (:mod:`qkdtwin.kms.peering`): keys for
        a slave behind a neighbour KME come from that link's pool and are mirrored there over
        HTTPS, keys for a slave further away are relayed hop by hop. Replaces ``store``.

    Returns
    -------
    FastAPI
    """
    if (store is None) == (node is None):
        raise ConfigError("create_app needs a store or a node, not both", field="store")
    served = node.stores() if node is not None else [store]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A running server erases what it will not deliver again every second, whether or
        # not requests arrive (in-process test clients without lifespan do not).
        for st in served:
            assert st is not None
            st.start_sweeping()
        yield

    app = FastAPI(
        title="qkdtwin KME (ETSI GS QKD 014 v1.1.1)",
        version="1.1.1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    gate = AdmissionGate(
        config.max_active_requests, config.max_queued_requests, config.queue_timeout_s
    )
    sae_threads = ThreadLimiter(config.max_active_requests)
    # master-side copies erased once sent, in transactions shared by concurrent responses
    handed_over = HandOverEraser(sae_threads.run)
    app.state.handed_over = handed_over

    def erase_store_copies(key_ids: Sequence[str]) -> int:
        assert store is not None
        return store.erase_handed_over(key_ids, HANDED_OVER_AUDIT_BY)

    peer_threads = ThreadLimiter(config.peer_threads)
    app.state.config = config
    app.state.store = store
    app.state.node = node
    app.state.admission = gate
    # Inside the body limit: SAE requests pass admission control (the body already bounded).
    app.add_middleware(SaeAdmission, gate=gate)
    # Around every route: an oversize body is refused (413) before anything parses it.
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    _install_error_handlers(app)
    if node is not None:
        install_peer_routes(app, node, peer_threads)
    install_operator_routes(
        app,
        config.kme_id,
        node=node,
        store=store,
        responses={401: {"model": ErrorBody}},
        threads=peer_threads,
        admission=gate.counts,
    )

    def ready() -> tuple[bool, list[str]]:
        health = store_health([st for st in served if st is not None])
        if health.checkpoint_failing:
            return False, [f"store checkpoints failing: {health.last_checkpoint_error}"]
        return True, []

    def gauges() -> list[tuple[str, str, list[str], list[tuple[list[str], float]]]]:
        res = links_response(config.kme_id, node=node, store=store, admission=gate.counts())
        links = [(lk.peer or "-", lk) for lk in res.links]
        adm = res.admission
        failures = res.store.checkpoint_failures if res.store is not None else 0
        return [
            ("qkdtwin_kme_link_available_keys", "Unexpired keys in the link's store.", ["peer"],
             [([p], lk.available) for p, lk in links]),
            ("qkdtwin_kme_link_reserved_keys", "Keys reserved for SAEs, not yet erased.",
             ["peer"], [([p], lk.reserved) for p, lk in links]),
            ("qkdtwin_kme_link_added_keys_total", "Keys ever stored.", ["peer"],
             [([p], lk.added_total) for p, lk in links]),
            ("qkdtwin_kme_link_delivered_keys_total", "Keys that left the pool for use.",
             ["peer"], [([p], lk.delivered_total) for p, lk in links]),
            ("qkdtwin_kme_link_enabled", "1 when the link delivers keys, 0 when disabled.",
             ["peer"], [([p], 1.0 if lk.enabled else 0.0) for p, lk in links]),
            ("qkdtwin_kme_requests_active", "SAE requests being served.", [],
             [([], adm.active)] if adm else []),
            ("qkdtwin_kme_requests_queued", "SAE requests waiting for a slot.", [],
             [([], adm.queued)] if adm else []),
            ("qkdtwin_kme_requests_rejected_total", "SAE requests refused with 503 (queue "
             "full or wait too long).", [],
             [([], adm.rejected_total + adm.timed_out_total)] if adm else []),
            ("qkdtwin_kme_store_checkpoint_failures_total", "WAL checkpoints that failed.",
             [], [([], failures)]),
        ]  # fmt: skip

    # /healthz, /readyz; /metrics for operator certificates only, never key material
    install_health_routes(
        app,
        ready=ready,
        collector=StateCollector(gauges),
        guard=caller_operator_id,
        time_requests=False,
        in_schema=False,
    )

    def pool_count(slave: str, size_bits: int) -> int:
        if node is not None:
            return node.available_count(config.saes[slave], size_bits)
        assert store is not None
        return store.available_count(size_bits)

    def erase_delivered() -> None:
        for st in node.stores() if node is not None else [store]:
            assert st is not None
            st.erase_delivered()

    def check_caller(sae: str) -> None:
        if config.saes.get(sae) != config.kme_id:
            raise KeyAccessError("SAE not registered at this KME", details=[{"SAE_ID": sae}])

    def check_peer(sae: str, field: str) -> None:
        if sae not in config.saes:
            raise KmsRequestError(f"unknown {field}", details=[{field: sae}])

    def status(master: str, slave: str) -> Status:
        check_caller(master)
        check_peer(slave, "slave_SAE_ID")
        return Status(
            source_KME_ID=config.kme_id,
            target_KME_ID=config.saes[slave],
            master_SAE_ID=master,
            slave_SAE_ID=slave,
            key_size=config.key_size,
            stored_key_count=pool_count(slave, config.key_size),
            max_key_count=config.max_key_count,
            max_key_per_request=config.max_key_per_request,
            max_key_size=config.max_key_size,
            min_key_size=config.min_key_size,
            max_SAE_ID_count=config.max_sae_id_count,
        )

    last_erase = [float("-inf")]

    def enc(master: str, slave: str, req: KeyRequest) -> _Reservation:
        check_caller(master)
        check_peer(slave, "slave_SAE_ID")
        number = 1 if req.number is None else req.number
        size = config.key_size if req.size is None else req.size
        if not 1 <= number <= config.max_key_per_request:
            raise KmsRequestError(
                "number must be between 1 and max_key_per_request",
                details=[{"number": number, "max_key_per_request": config.max_key_per_request}],
            )
        if size % 8 or not config.min_key_size <= size <= config.max_key_size:
            raise KmsRequestError(
                "size must be a multiple of 8 between min_key_size and max_key_size",
                details=[
                    {
                        "size": size,
                        "min_key_size": config.min_key_size,
                        "max_key_size": config.max_key_size,
                    }
                ],
            )
        extra = list(req.additional_slave_SAE_IDs or [])
        if len(extra) > config.max_sae_id_count:
            raise KmsRequestError(
                "too many additional_slave_SAE_IDs",
                details=[{"max_SAE_ID_count": config.max_sae_id_count}],
            )
        for s in extra:
            check_peer(s, "additional_slave_SAE_ID")
        if req.extension_mandatory:
            # We support no extension, so any mandatory one makes the request unserviceable.
            raise KmsRequestError(
                "not all extension_mandatory parameters are supported",
                details=[{"extension_unsupported": list(e)} for e in req.extension_mandatory],
            )
        slaves = list(dict.fromkeys([slave, *extra]))
        # Erasure scans the reserved keys, so run it at most once per second of store time
        # rather than on every request (a key may outlive its retry window by up to 1 s).
        now = time.time() if store is None else store.now()
        if now - last_erase[0] >= ERASE_INTERVAL_S:
            last_erase[0] = now
            erase_delivered()
        if node is not None:
            slave_kmes = {config.saes[s] for s in slaves}
            if len(slave_kmes) != 1:
                raise KmsRequestError(
                    "all slave SAEs of one request must sit behind the same KME",
                    details=[{"slave_KME_IDs": sorted(slave_kmes)}],
                )
            slave_kme = slave_kmes.pop()
            keys = node.reserve_for(master, slaves, slave_kme, number, size)
            ids = [k.key_id for k in keys]
            return _Reservation(
                keys,
                undo=lambda: node.undo_reservation(slave_kme, ids),
                # the slaves fetch at their own KME: once the response is sent, nothing here
                # delivers these keys again (erase_delivered catches a failed response later)
                hand_over=None if slave_kme == node.kme_id else node.erase_handed_over,
            )
        assert store is not None
        keys = store.reserve(master, slaves, number, size, slaves_here=sync is None)
        ids = [k.key_id for k in keys]
        if sync is None:
            return _Reservation(
                keys, undo=lambda: store.unreserve(ids, CLIENT_GONE_AUDIT_BY), hand_over=None
            )
        sync(master, slaves, ids, size)
        return _Reservation(
            keys,
            undo=lambda: store.revoke(ids, CLIENT_GONE_AUDIT_BY),
            hand_over=erase_store_copies,
        )

    async def undo_unsent(res: _Reservation, master: str, when: str) -> None:
        try:
            await sae_threads.run(res.undo)
        except Exception:  # the keys stay reserved: the master copy goes after the retry window
            log.exception(
                "undoing %d keys for %s (client gone %s) failed", len(res.keys), master, when
            )
            return
        gate.count("undone")
        log.info(
            "client of %s went away %s: its %d reserved keys were undone",
            master,
            when,
            len(res.keys),
        )

    async def enc_keys(
        request: Request, master: str, slave: str, req: KeyRequest, background: BackgroundTasks
    ) -> KeyContainer | Response:
        ticket: Ticket | None = request.scope.get(SCOPE_TICKET_KEY)
        res = await sae_threads.run(enc, master, slave, req)
        if ticket is not None:
            ticket.watch = True  # the final response body tells whether it was written
            if await ticket.client_gone():
                await undo_unsent(res, master, "before the response")
                return _client_gone_response()

        async def after_response() -> None:
            # Runs once the response went to the server: written (handed over: erase the
            # master-side copy) or dropped because the client had gone (undo).
            if ticket is not None and ticket.dropped:
                await undo_unsent(res, master, "as the response was sent")
            elif res.hand_over is not None:
                await handed_over.submit(res.hand_over, [k.key_id for k in res.keys])

        background.add_task(after_response)
        return _container(res.keys)

    def dec(slave: str, master: str, key_ids: list[str]) -> KeyContainer:
        check_caller(slave)
        check_peer(master, "master_SAE_ID")
        # Bounded before the store is touched: fetch holds its write lock for the whole list.
        if len(key_ids) > config.max_key_per_request:
            raise KmsRequestError(
                "too many key_IDs: at most max_key_per_request per request",
                details=[
                    {"key_IDs": len(key_ids), "max_key_per_request": config.max_key_per_request}
                ],
            )
        if node is not None:
            source = node.fetch_store(config.saes[master], key_ids)
            return _container(source.fetch(slave, key_ids, master_sae_id=master))
        assert store is not None
        return _container(store.fetch(slave, key_ids, master_sae_id=master))

    # response_model_exclude_none: an absent optional field (the *_extension objects) is
    # left out, not sent as null, which the standard's Object type does not allow.
    @app.get(
        "/api/v1/keys/{slave_SAE_ID}/status",
        response_model=Status,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def get_status(slave_SAE_ID: str, caller: Caller) -> Status:
        """Status of the key pool shared with ``slave_SAE_ID``."""
        return await sae_threads.run(status, caller, slave_SAE_ID)

    @app.get(
        "/api/v1/keys/{slave_SAE_ID}/enc_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def get_enc_keys(
        request: Request,
        slave_SAE_ID: str,
        caller: Caller,
        background: BackgroundTasks,
        number: Annotated[int | None, Query()] = None,
        size: Annotated[int | None, Query()] = None,
    ) -> KeyContainer | Response:
        """Get keys as master SAE (simple request)."""
        req = KeyRequest(number=number, size=size)
        return await enc_keys(request, caller, slave_SAE_ID, req, background)

    @app.post(
        "/api/v1/keys/{slave_SAE_ID}/enc_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def post_enc_keys(
        request: Request,
        slave_SAE_ID: str,
        caller: Caller,
        body: KeyRequest,
        background: BackgroundTasks,
    ) -> KeyContainer | Response:
        """Get keys as master SAE (Key request object)."""
        return await enc_keys(request, caller, slave_SAE_ID, body, background)

    @app.get(
        "/api/v1/keys/{master_SAE_ID}/dec_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def get_dec_keys(
        master_SAE_ID: str, caller: Caller, key_ID: Annotated[str, Query()]
    ) -> KeyContainer:
        """Get one key by ID as slave SAE."""
        return await sae_threads.run(dec, caller, master_SAE_ID, [key_ID])

    @app.post(
        "/api/v1/keys/{master_SAE_ID}/dec_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def post_dec_keys(master_SAE_ID: str, caller: Caller, body: KeyIDs) -> KeyContainer:
        """Get keys by ID as slave SAE (Key IDs object)."""
        return await sae_threads.run(dec, caller, master_SAE_ID, [k.key_ID for k in body.key_IDs])

    def openapi() -> dict[str, Any]:  # an OpenAPI document (JSON Schema), not a fixed shape
        # FastAPI documents a 422 for every route with parameters; ours are answered with
        # 400 and an ETSI Error body (_install_error_handlers), so drop the 422 and its schemas.
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)  # caches this very dict in app.openapi_schema
        for item in schema["paths"].values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
