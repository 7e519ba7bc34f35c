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
to HTTP lives in :func:`_install_error_handlers` and nowhere else.

The caller's SAE ID comes from :func:`caller_sae_id`, which reads the ``qkdtwin.sae_id`` entry
that the mutual-TLS server (:mod:`qkdtwin.kms.tls`) puts in the ASGI scope from the verified
client certificate. Unit tests override that dependency to use the in-process transport.
"""

# ruff: noqa: N815  (the ETSI object fields are mixedCase by the standard: key_ID, slave_SAE_ID)

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from qkdtwin.errors import (
    ConfigError,
    KeyAccessError,
    KeyExhaustedError,
    KmsError,
    KmsRequestError,
)
from qkdtwin.kms.operator import install_operator_routes
from qkdtwin.kms.peering import KmeNode, install_peer_routes
from qkdtwin.kms.store import DeliveredKey, KeyStore

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
        Largest ``number`` in one request.
    max_key_count
        Most keys the store holds.
    max_sae_id_count
        Most ``additional_slave_SAE_IDs`` in one request (0: no multicast).
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
    """ETSI GS QKD 014 Key request object."""

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
    """One entry of a Key IDs object."""

    key_ID: str
    key_ID_extension: dict[str, Any] | None = None


class KeyIDs(BaseModel):
    """ETSI GS QKD 014 Key IDs object."""

    key_IDs: list[KeyID]
    key_IDs_extension: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """ETSI GS QKD 014 Error object."""

    message: str
    details: list[dict[str, Any]] | None = None


def caller_sae_id(request: Request) -> str:
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


def _install_error_handlers(app: FastAPI) -> None:
    """Map qkdtwin errors and request validation to ETSI Error bodies (the one place)."""
    codes: list[tuple[type[KmsError], int]] = [
        (KmsRequestError, 400),
        (KeyAccessError, 401),
        (KeyExhaustedError, 503),
    ]

    async def kms_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KmsError)
        status = next((c for cls, c in codes if isinstance(exc, cls)), 400)
        return JSONResponse(
            status_code=status, content={"message": exc.message, "details": exc.details}
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

    app.add_exception_handler(KmsError, kms_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


#: Seconds between two runs of :meth:`KeyStore.erase_delivered` triggered by ``enc_keys``.
ERASE_INTERVAL_S = 1.0


#: Mirrors a reservation at the peer KME: ``(master, slaves, key_IDs, size_bits)``.
PeerSync = Callable[[str, list[str], list[str], int], None]


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
        network protocol.
    node
        This KME's stores and peers in a KME network (:mod:`qkdtwin.kms.peering`): keys for
        a slave behind a neighbour KME come from that link's pool and are mirrored there over
        HTTPS, keys for a slave further away are relayed hop by hop. Replaces ``store``.

    Returns
    -------
    FastAPI
    """
    app = FastAPI(
        title="qkdtwin KME (ETSI GS QKD 014 v1.1.1)",
        version="1.1.1",
        docs_url=None,
        redoc_url=None,
    )
    if (store is None) == (node is None):
        raise ConfigError("create_app needs a store or a node, not both", field="store")
    app.state.config = config
    app.state.store = store
    app.state.node = node
    _install_error_handlers(app)
    if node is not None:
        install_peer_routes(app, node)
    install_operator_routes(
        app, config.kme_id, node=node, store=store, responses={401: {"model": ErrorBody}}
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

    def enc(master: str, slave: str, req: KeyRequest) -> KeyContainer:
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
            keys = node.reserve_for(master, slaves, slave_kmes.pop(), number, size)
            return _container(keys)
        assert store is not None
        keys = store.reserve(master, slaves, number, size)
        if sync is not None:
            sync(master, slaves, [k.key_id for k in keys], size)
        return _container(keys)

    def dec(slave: str, master: str, key_ids: list[str]) -> KeyContainer:
        check_caller(slave)
        check_peer(master, "master_SAE_ID")
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
    def get_status(slave_SAE_ID: str, caller: Caller) -> Status:
        """Status of the key pool shared with ``slave_SAE_ID``."""
        return status(caller, slave_SAE_ID)

    @app.get(
        "/api/v1/keys/{slave_SAE_ID}/enc_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    def get_enc_keys(
        slave_SAE_ID: str,
        caller: Caller,
        number: Annotated[int | None, Query()] = None,
        size: Annotated[int | None, Query()] = None,
    ) -> KeyContainer:
        """Get keys as master SAE (simple request)."""
        return enc(caller, slave_SAE_ID, KeyRequest(number=number, size=size))

    @app.post(
        "/api/v1/keys/{slave_SAE_ID}/enc_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    def post_enc_keys(slave_SAE_ID: str, caller: Caller, body: KeyRequest) -> KeyContainer:
        """Get keys as master SAE (Key request object)."""
        return enc(caller, slave_SAE_ID, body)

    @app.get(
        "/api/v1/keys/{master_SAE_ID}/dec_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    def get_dec_keys(
        master_SAE_ID: str, caller: Caller, key_ID: Annotated[str, Query()]
    ) -> KeyContainer:
        """Get one key by ID as slave SAE."""
        return dec(caller, master_SAE_ID, [key_ID])

    @app.post(
        "/api/v1/keys/{master_SAE_ID}/dec_keys",
        response_model=KeyContainer,
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    def post_dec_keys(master_SAE_ID: str, caller: Caller, body: KeyIDs) -> KeyContainer:
        """Get keys by ID as slave SAE (Key IDs object)."""
        return dec(caller, master_SAE_ID, [k.key_ID for k in body.key_IDs])

    def openapi() -> dict[str, Any]:
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
