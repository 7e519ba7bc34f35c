"""Operator interface of a KME: ``GET /kme/v1/links``, the key counts of every QKD link.

The digital twin's attach mode polls each KME of a real network about once per second.
ETSI GS QKD 014 cannot serve it: ``status`` answers only an SAE registered at the KME, about
one SAE pair, and reports a pool size but no consumption. This route answers an *operator*
instead, identified by the SAN URI ``urn:qkdtwin:operator:<ID>`` of its verified client
certificate (see :mod:`qkdtwin.kms.tls`); any other caller, an SAE or a peer KME included,
gets 401 with the API's ETSI Error body and nothing else.

For each QKD link the KME terminates it reports the gauges and cumulative counters of that
link's key store (:meth:`qkdtwin.kms.store.KeyStore.counters`; their definitions are in
:class:`qkdtwin.kms.store.KeyCounts`) and whether the KME considers the link usable
(:meth:`qkdtwin.kms.peering.KmeNode.set_link_down`). The twin reads consumption as the change
of ``delivered_total`` between two polls. A KME without a network (one store for every
pair) reports one pseudo-link with ``peer`` null. ``store`` reports the health of the
stores' background WAL checkpoints (:class:`StoreHealth`): a full disk shows there as
failures while the KME still answers. ``admission`` reports the KME's admission control of
SAE requests (:class:`AdmissionStats`, :mod:`qkdtwin.kms.admission`).

The counters cost a few rows per store to read, whatever the store's size. The route runs
on the KME's thread limiter for peer and operator requests, outside the SAE admission
control, so an overloaded KME still answers its operator.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from qkdtwin.errors import ConfigError, KeyAccessError, KmsRequestError
from qkdtwin.kms.admission import DEFAULT_PEER_THREADS, AdmissionCounts, ThreadLimiter
from qkdtwin.kms.peering import KmeNode
from qkdtwin.kms.quota import QuotaState
from qkdtwin.kms.store import KeyCounts, KeyStore

__all__ = [
    "LINKS_PATH",
    "SCOPE_OPERATOR_KEY",
    "AdmissionStats",
    "DiscardBody",
    "DiscardResponse",
    "KeyCountsModel",
    "KmeLinksResponse",
    "LinkCounts",
    "LinkStateBody",
    "LinkStateResponse",
    "RelayQuotaBody",
    "RelayQuotaResponse",
    "RelayQuotaView",
    "RelayQuotasResponse",
    "RouteStateResponse",
    "StoreHealth",
    "caller_operator_id",
    "install_operator_routes",
    "links_response",
    "store_health",
]

log = logging.getLogger("qkdtwin.kms")

SCOPE_OPERATOR_KEY = "qkdtwin.operator_id"
LINKS_PATH = "/kme/v1/links"


# The counters of one store, shared by both models (a link lists its peer first).
_Available = Annotated[int, Field(ge=0, description="Unexpired keys in the pool.")]
_Owned = Annotated[
    int,
    Field(ge=0, description="Available keys this KME may hand out itself (own and unowned)."),
]
_Reserved = Annotated[int, Field(ge=0, description="Keys reserved for SAEs, not yet erased.")]
_AddedTotal = Annotated[int, Field(ge=0, description="Keys ever stored.")]
_DeliveredTotal = Annotated[
    int,
    Field(ge=0, description="Keys that left the pool for use, each once (audit enc/sync/relay)."),
]
_ErasedTotal = Annotated[int, Field(ge=0, description="Keys whose material was dropped.")]
_DiscardedTotal = Annotated[
    int, Field(ge=0, description="Available keys erased unused (audit discard/expire).")
]


class LinkStateBody(BaseModel):
    """Body of ``POST /kme/v1/links/{peer}/state``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool


class LinkStateResponse(BaseModel):
    """Answer of ``POST /kme/v1/links/{peer}/state``: the link's state now."""

    kme_id: str
    peer: str
    enabled: bool


class RouteStateResponse(BaseModel):
    """Answer of ``POST /kme/v1/network/{a}/{b}/state``."""

    kme_id: str
    link: str
    enabled: bool


class DiscardBody(BaseModel):
    """Body of ``POST /kme/v1/links/{peer}/discard``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    since: float = Field(description="erase keys stored at or after this time, Unix s")


class DiscardResponse(BaseModel):
    """Answer of ``POST /kme/v1/links/{peer}/discard``."""

    kme_id: str
    peer: str
    since: float
    discarded: int


class RelayQuotaBody(BaseModel):
    """Body of ``POST /kme/v1/relays/{destination}/quota``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    keys_per_s: float | None = Field(
        ge=0,
        allow_inf_nan=False,
        description="relayed keys per second toward the destination; null removes the quota",
    )
    burst: int | None = Field(
        default=None, ge=1, description="most keys relayed at once (default: 1 s of quota)"
    )


class RelayQuotaView(BaseModel):
    """One relay quota of a KME: settings, tokens now, counts since it was set."""

    destination: str
    keys_per_s: float
    burst: int
    tokens: float = Field(description="keys that may be relayed right now")
    granted_keys: int
    refused_requests: int

    @classmethod
    def of(cls, q: QuotaState) -> RelayQuotaView:
        """Build the view of a quota's state."""
        return cls(**_fields(q))


class RelayQuotaResponse(BaseModel):
    """Answer of ``POST /kme/v1/relays/{destination}/quota``: the quota now (null: none)."""

    kme_id: str
    destination: str
    quota: RelayQuotaView | None


class RelayQuotasResponse(BaseModel):
    """Answer of ``GET /kme/v1/relays/quotas``."""

    kme_id: str
    quotas: list[RelayQuotaView]


class KeyCountsModel(BaseModel):
    """Key counts of one store: gauges now, totals since the store was created.

    Definitions in :class:`qkdtwin.kms.store.KeyCounts`.
    """

    model_config = ConfigDict(extra="forbid")

    available: _Available
    owned: _Owned
    reserved: _Reserved
    added_total: _AddedTotal
    delivered_total: _DeliveredTotal
    erased_total: _ErasedTotal
    discarded_total: _DiscardedTotal

    @classmethod
    def of(cls, counts: KeyCounts) -> KeyCountsModel:
        """Build the model from a store's :class:`~qkdtwin.kms.store.KeyCounts`."""
        return cls(**_fields(counts))


class LinkCounts(BaseModel):
    """One QKD link as its KME sees it: the peer, whether usable, the link store's counts."""

    model_config = ConfigDict(extra="forbid")

    peer: str | None = Field(
        description="The KME at the other end; null for the pseudo-link of a KME without a "
        "network (one store for every SAE pair)."
    )
    enabled: bool = Field(description="Whether this KME considers the link usable for routing.")
    available: _Available
    owned: _Owned
    reserved: _Reserved
    added_total: _AddedTotal
    delivered_total: _DeliveredTotal
    erased_total: _ErasedTotal
    discarded_total: _DiscardedTotal


def _fields(snapshot: Any) -> dict[str, Any]:
    """Return the fields of a dataclass snapshot (:class:`KeyCounts`, ...) by name."""
    return {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}


class StoreHealth(BaseModel):
    """Health of the background WAL checkpoints of a KME's SQLite stores, all together.

    See :meth:`qkdtwin.kms.store.KeyStore.checkpoint_health`; PostgreSQL stores run none and
    report zero.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint_failures: int = Field(
        ge=0, description="Failed WAL checkpoints since the stores were opened."
    )
    last_checkpoint_error: str | None = Field(
        description="The latest failure: error type and the database's message (no path, "
        "no SQL); null if none."
    )
    last_checkpoint_error_at: float | None = Field(
        description="When the latest failure happened (Unix seconds); null if none."
    )
    checkpoint_failing: bool = Field(
        description="Whether the latest checkpoint attempt of some store failed (its WAL "
        "grows until one succeeds)."
    )


class AdmissionStats(BaseModel):
    """Admission control of the KME's SAE requests since it started (:mod:`~qkdtwin.kms.admission`).

    Counts are requests.
    """

    model_config = ConfigDict(extra="forbid")

    active: int = Field(ge=0, description="SAE requests being served now.")
    queued: int = Field(ge=0, description="SAE requests waiting for a slot now.")
    admitted_total: int = Field(ge=0, description="SAE requests that got a slot.")
    rejected_total: int = Field(ge=0, description="503 at once: the queue was full.")
    timed_out_total: int = Field(ge=0, description="503 after queue_timeout_s in the queue.")
    abandoned_total: int = Field(
        ge=0, description="Admitted requests whose client had gone: dropped unserved."
    )
    undone_total: int = Field(
        ge=0,
        description="enc_keys reservations undone: the client went away before the response "
        "was sent (keys back to the pool, audit undo).",
    )

    @classmethod
    def of(cls, counts: AdmissionCounts) -> AdmissionStats:
        """Build the model from :class:`~qkdtwin.kms.admission.AdmissionCounts`."""
        return cls(**_fields(counts))


class KmeLinksResponse(BaseModel):
    """Answer of ``GET /kme/v1/links``."""

    model_config = ConfigDict(extra="forbid")

    kme_id: str
    time: float = Field(description="When the counts were read (Unix seconds).")
    links: list[LinkCounts]
    relayed: KeyCountsModel | None = Field(
        description="Counts of the store of end-to-end keys relayed to or from non-neighbours; "
        "null when this KME relays none."
    )
    store: StoreHealth | None = Field(
        default=None,
        description="Health of the key stores' background work (WAL checkpoints); null from "
        "KMEs that do not report it.",
    )
    admission: AdmissionStats | None = Field(
        default=None,
        description="Admission control of the SAE requests; null from KMEs that do not report it.",
    )


def store_health(stores: list[KeyStore]) -> StoreHealth:
    """Sum up the checkpoint health of ``stores`` (failures added, the latest error kept)."""
    healths = [s.checkpoint_health() for s in stores]
    latest = max(
        (h for h in healths if h.last_error_at is not None),
        key=lambda h: h.last_error_at or 0.0,
        default=None,
    )
    return StoreHealth(
        checkpoint_failures=sum(h.failures for h in healths),
        last_checkpoint_error=None if latest is None else latest.last_error,
        last_checkpoint_error_at=None if latest is None else latest.last_error_at,
        checkpoint_failing=any(h.failing for h in healths),
    )


async def caller_operator_id(request: Request) -> str:
    """Return the operator ID of the caller, from its verified TLS client certificate.

    Raises
    ------
    KeyAccessError
        For any caller without an operator certificate (an SAE, a peer KME, no certificate).
        The message says nothing about who may call.
    """
    operator = request.scope.get(SCOPE_OPERATOR_KEY)
    if not operator:
        raise KeyAccessError("not authorised")
    return str(operator)


Operator = Annotated[str, Depends(caller_operator_id)]


def links_response(
    kme_id: str,
    *,
    node: KmeNode | None = None,
    store: KeyStore | None = None,
    admission: AdmissionCounts | None = None,
) -> KmeLinksResponse:
    """Read the counts of every link store of a KME (``node``) or of its single ``store``.

    ``admission``: the KME's admission counts, reported as they are.
    """
    stats = None if admission is None else AdmissionStats.of(admission)
    if node is not None:
        links = [
            LinkCounts(
                peer=peer,
                enabled=node.link_enabled(peer),
                **_fields(st.counters(owner=kme_id)),
            )
            for peer, st in sorted(node.links.items())
        ]
        relayed = None if node.relayed is None else KeyCountsModel.of(node.relayed.counters())
        stores = [*node.links.values(), node.relayed]
        first = next((s for s in stores if s is not None), None)
        now = first.now() if first is not None else time.time()
        return KmeLinksResponse(
            kme_id=kme_id,
            time=now,
            links=links,
            relayed=relayed,
            store=store_health(node.stores()),
            admission=stats,
        )
    if store is None:
        raise ConfigError("links_response needs a node or a store", field="store")
    counts = _fields(store.counters(owner=kme_id))
    return KmeLinksResponse(
        kme_id=kme_id,
        time=store.now(),
        links=[LinkCounts(peer=None, enabled=True, **counts)],
        relayed=None,
        store=store_health([store]),
        admission=stats,
    )


def install_operator_routes(
    app: FastAPI,
    kme_id: str,
    *,
    node: KmeNode | None = None,
    store: KeyStore | None = None,
    responses: dict[int | str, dict[str, Any]] | None = None,
    threads: ThreadLimiter | None = None,
    admission: Callable[[], AdmissionCounts] | None = None,
) -> None:
    """Add ``GET /kme/v1/links`` (in the OpenAPI document) to a KME's ``app``.

    Parameters
    ----------
    app
        The KME's application; its error handlers turn :class:`KeyAccessError` into 401.
    kme_id
        This KME's ID.
    node, store
        The KME's network node, or its single store when it has none.
    responses
        Documented error responses (the API's ETSI Error body).
    threads
        Where the store reads run (default: a limiter of their own with
        :data:`~qkdtwin.kms.admission.DEFAULT_PEER_THREADS` threads); the KME passes its
        limiter for peer and operator requests.
    admission
        Reads the KME's admission counts (``None``: not reported).
    """
    run = (threads or ThreadLimiter(DEFAULT_PEER_THREADS)).run

    def read() -> KmeLinksResponse:
        counts = None if admission is None else admission()
        return links_response(kme_id, node=node, store=store, admission=counts)

    @app.get(
        LINKS_PATH,
        response_model=KmeLinksResponse,
        responses=responses or {},
        tags=["operator"],
    )
    async def get_links(_operator: Operator) -> KmeLinksResponse:
        """Key counts of every QKD link of this KME (operator certificates only)."""
        return await run(read)

    if node is None:
        return

    def link_store(peer: str) -> KeyStore:
        st = node.links.get(peer)
        if st is None:
            raise KmsRequestError(
                "no QKD link with that KME", details=[{"peer": peer, "links": sorted(node.links)}]
            )
        return st

    def set_state(operator: str, peer: str, enabled: bool) -> LinkStateResponse:
        st = link_store(peer)
        node.set_link_down(peer, not enabled)
        st.record_operation(f"operator:{operator}", "link-enable" if enabled else "link-disable")
        log.warning("operator %s %s the link to %s", operator,
                    "enabled" if enabled else "disabled", peer)  # fmt: skip
        return LinkStateResponse(kme_id=kme_id, peer=peer, enabled=node.link_enabled(peer))

    def discard(operator: str, peer: str, since: float) -> DiscardResponse:
        st = link_store(peer)
        n = st.discard_since(since, by=f"operator:{operator}")
        log.warning("operator %s discarded %d keys of the link to %s since %s", operator, n,
                    peer, since)  # fmt: skip
        return DiscardResponse(kme_id=kme_id, peer=peer, since=since, discarded=n)

    @app.post(
        LINKS_PATH + "/{peer}/state",
        response_model=LinkStateResponse,
        responses=responses or {},
        tags=["operator"],
    )
    async def post_link_state(
        peer: str, body: LinkStateBody, operator: Operator
    ) -> LinkStateResponse:
        """Stop (``enabled: false``) or resume key delivery and relaying over a link.

        In the spirit of ETSI GS QKD 015's ``qkdl_enable``; operator certificates only; served
        with the peer requests, outside the SAE admission control, so an overloaded KME still
        obeys. Audited (``link-disable`` / ``link-enable``) in the link store.
        """
        return await run(lambda: set_state(operator, peer, body.enabled))

    def set_route(operator: str, a: str, b: str, enabled: bool) -> RouteStateResponse:
        node.set_pair_down(a, b, not enabled)
        if node.relayed is not None:
            node.relayed.record_operation(
                f"operator:{operator}", "route-enable" if enabled else "route-disable"
            )
        log.warning("operator %s %s relays over %s-%s", operator,
                    "allowed" if enabled else "stopped", a, b)  # fmt: skip
        return RouteStateResponse(kme_id=kme_id, link=f"{a}-{b}", enabled=node.pair_enabled(a, b))

    @app.post(
        "/kme/v1/network/{a}/{b}/state",
        response_model=RouteStateResponse,
        responses=responses or {},
        tags=["operator"],
    )
    async def post_route_state(
        a: str, b: str, body: LinkStateBody, operator: Operator
    ) -> RouteStateResponse:
        """Stop or allow this KME's relays over any link ``a``-``b`` of the network.

        The ends of a disabled link stop it themselves (``/kme/v1/links/{peer}/state``); every
        other KME is told here, so relays are routed around it from their source. Audited
        (``route-disable`` / ``route-enable``) in the relay store.
        """
        return await run(lambda: set_route(operator, a, b, body.enabled))

    def set_quota(operator: str, destination: str, body: RelayQuotaBody) -> RelayQuotaResponse:
        if body.keys_per_s is None and body.burst is not None:
            raise KmsRequestError(
                "burst without keys_per_s", details=[{"burst": body.burst, "keys_per_s": None}]
            )
        state = node.set_relay_quota(destination, body.keys_per_s, body.burst)
        if node.relayed is not None:
            node.relayed.record_operation(f"operator:{operator}", "relay-quota")
        log.warning("operator %s set the relay quota toward %s to %s keys/s (burst %s)",
                    operator, destination, body.keys_per_s, body.burst)  # fmt: skip
        return RelayQuotaResponse(
            kme_id=kme_id,
            destination=destination,
            quota=None if state is None else RelayQuotaView.of(state),
        )

    @app.post(
        "/kme/v1/relays/{destination}/quota",
        response_model=RelayQuotaResponse,
        responses=responses or {},
        tags=["operator"],
    )
    async def post_relay_quota(
        destination: str, body: RelayQuotaBody, operator: Operator
    ) -> RelayQuotaResponse:
        """Limit the keys this KME relays toward ``destination`` (a token bucket).

        ``keys_per_s`` keys per second, at most ``burst`` at once; ``null`` removes the
        limit. A relay that finds too few tokens gets 503 with ``Retry-After`` before any link
        key is consumed; direct-link and local keys are never limited. Audited
        (``relay-quota``) in the relay store.
        """
        return await run(lambda: set_quota(operator, destination, body))

    @app.get(
        "/kme/v1/relays/quotas",
        response_model=RelayQuotasResponse,
        responses=responses or {},
        tags=["operator"],
    )
    async def get_relay_quotas(_operator: Operator) -> RelayQuotasResponse:
        """Return this KME's relay quotas, with their tokens and counts."""
        quotas = [RelayQuotaView.of(q.state()) for _, q in sorted(node.relay_quotas.items())]
        return RelayQuotasResponse(kme_id=kme_id, quotas=quotas)

    @app.post(
        LINKS_PATH + "/{peer}/discard",
        response_model=DiscardResponse,
        responses=responses or {},
        tags=["operator"],
    )
    async def post_discard(peer: str, body: DiscardBody, operator: Operator) -> DiscardResponse:
        """Erase the link's available keys stored at or after ``since`` (Unix s)."""
        return await run(lambda: discard(operator, peer, body.since))
