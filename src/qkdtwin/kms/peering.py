"""KME-to-KME protocol: reservation mirroring and hop-by-hop key relay over mutual TLS.

A KME (:class:`KmeNode`) knows the KME network it belongs to (:class:`KmeNetwork`: every
KME's URL and the QKD links between KMEs) and holds one key store per QKD link it terminates
(``links``: neighbour KME ID -> the pool of that link) plus one store for keys relayed to or
from non-neighbours (``relayed``). When its master SAE calls ``enc_keys`` for a slave SAE
behind KME ``X``:

* ``X`` is this KME: the keys come from ``local`` (both SAEs behind one KME).
* ``X`` is a neighbour: keys are reserved in the link's pool, taking only keys **this KME
  owns** (the feeder splits each link's pool per direction, so the two ends never pick the
  same key), then mirrored at ``X`` with ``POST /kme/v1/reservations``; ``X`` reserves
  exactly those key_IDs for the same master and slaves. If the mirror fails, the local
  reservation is revoked (erased, audited ``revoke``) and the SAE gets 503: no key is
  usable at one end only.
* otherwise: the keys are relayed along the shortest route of live links (networkx):
  ``POST /kme/v1/relay`` hop by hop, each hop one-time-padding the keys with link keys that
  both its ends consume (:func:`qkdtwin.kms.relay`'s scheme, over the network). The
  destination installs them as reserved for the slaves; only after it answered does the
  source install and return them. A failure anywhere leaves no key at either end (a late
  failure at the source is compensated with ``POST /kme/v1/revocations`` at the destination).

A reservation whose master SAE never received the response (its client went away; see
:mod:`qkdtwin.kms.admission`) is undone with :meth:`KmeNode.undo_reservation`: a mirrored
one goes back to the pool at both ends (``POST /kme/v1/reservations/undo`` at the peer
first, which refuses keys a slave already fetched; a key not returned there is erased here
too), a relayed one is revoked at both ends (``POST /kme/v1/revocations``).

The peer endpoints run their store work on their own thread limiter
(:class:`~qkdtwin.kms.admission.ThreadLimiter`), apart from the SAE requests and outside
their admission control, so that two KMEs whose SAE workers all wait for each other's
mirrors still answer those mirrors.

The peer endpoints are not part of ETSI GS QKD 014 (which defines only the SAE-facing API),
so they are left out of the published OpenAPI document. A peer is authenticated by the KME
ID in its certificate (SAN URI ``urn:qkdtwin:kme:<ID>``, see :mod:`qkdtwin.kms.tls`) and must
be a KME of the configured network; every other caller gets 401.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import httpx
import networkx as nx
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from qkdtwin.errors import (
    ConfigError,
    KeyAccessError,
    KeyExhaustedError,
    KmsError,
    KmsRequestError,
)
from qkdtwin.kms.admission import DEFAULT_PEER_THREADS, ThreadLimiter
from qkdtwin.kms.etsi_errors import error_class, etsi_status
from qkdtwin.kms.mirror import MirrorBatcher
from qkdtwin.kms.quota import QuotaState, RelayQuota
from qkdtwin.kms.store import HANDED_OVER_AUDIT_BY, DeliveredKey, KeyStore, UnreserveResult

__all__ = [
    "CLIENT_GONE_AUDIT_BY",
    "SCOPE_KME_KEY",
    "KmeNetwork",
    "KmeNode",
    "PeerClient",
    "install_peer_routes",
]

SCOPE_KME_KEY = "qkdtwin.kme_id"
#: ``sae_id`` of the audit rows of a reservation undone because its master SAE went away.
CLIENT_GONE_AUDIT_BY = "client-gone"

log = logging.getLogger("qkdtwin.kms")


class KmeNetwork(BaseModel):
    """The KME network as every KME sees it.

    Parameters
    ----------
    kmes
        Every KME ID mapped to its base URL (``https://host:port``).
    links
        The QKD links between KMEs, as pairs of KME IDs (undirected).
    """

    model_config = ConfigDict(extra="forbid")

    kmes: dict[str, str] = Field(default_factory=dict)
    links: list[tuple[str, str]] = Field(default_factory=list)

    @field_validator("links")
    @classmethod
    def _no_self_links(cls, links: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for a, b in links:
            if a == b:
                raise ValueError(f"link {a}-{b} joins a KME to itself")
        return links

    def neighbours(self, kme_id: str) -> list[str]:
        """Return the KMEs that share a QKD link with ``kme_id``."""
        return sorted(
            {b for a, b in self.links if a == kme_id} | {a for a, b in self.links if b == kme_id}
        )

    def route(
        self, source: str, destination: str, down: Sequence[tuple[str, str]] = ()
    ) -> list[str]:
        """Shortest path of KMEs from ``source`` to ``destination`` over links not ``down``.

        Raises
        ------
        KeyExhaustedError
            If no route of live links exists (no key can be delivered: the ETSI 503 case).
        """
        graph = nx.Graph()
        graph.add_nodes_from(self.kmes)
        dead = {frozenset(d) for d in down}
        graph.add_edges_from((a, b) for a, b in self.links if frozenset((a, b)) not in dead)
        try:
            return list(nx.shortest_path(graph, source, destination))
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            raise KeyExhaustedError(
                f"no route of QKD links from {source} to {destination}",
                details=[{"source_KME_ID": source, "target_KME_ID": destination}],
            ) from None


class PeerClient:
    """HTTPS client from one KME to the others, authenticated by the KME's own certificate.

    Thread-safe (one httpx client per peer URL, created on first use).
    """

    def __init__(self, cert: Path, key: Path, ca: Path, *, timeout_s: float = 10.0) -> None:
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert), str(key))
        self._timeout_s = timeout_s
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def post(
        self, base_url: str, path: str, body: dict[str, Any], *, peer: str | None = None
    ) -> dict[str, Any]:  # the peer's JSON answer, passed through (its shape is per path)
        """POST ``body`` to a peer; return its JSON answer.

        The error raised names the peer by its KME ID (``peer``) only: its URL, the transport
        error and the peer's own message go to the log (logger ``qkdtwin.kms``), never into
        an error that may reach an SAE.

        Raises
        ------
        KmsError
            The peer's refusal (400/401/503 mapped as in :class:`~qkdtwin.kms.client.KmeClient`,
            another 5xx as 503, another status as plain :class:`KmsError`), or
            :class:`KeyExhaustedError` (503) when the peer is unreachable or its answer is
            malformed.
        """
        details = [] if peer is None else [{"KME_ID": peer}]
        with self._lock:
            client = self._clients.get(base_url)
            if client is None:
                # idle connections expire before the peer's keep-alive timeout (5 s by
                # default), so a request never goes out on one the peer is closing
                client = httpx.Client(
                    base_url=base_url,
                    verify=self._ctx,
                    timeout=self._timeout_s,
                    limits=httpx.Limits(keepalive_expiry=2.0),
                )
                self._clients[base_url] = client
        try:
            resp = client.post(path, json=body)
        except httpx.HTTPError as exc:
            log.warning(
                "peer KME %s at %s unreachable (POST %s): %s: %s",
                peer,
                base_url,
                path,
                type(exc).__name__,
                exc,
            )
            raise KeyExhaustedError("the peer KME is unreachable", details=details) from exc
        if resp.status_code == 200:
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            log.warning("peer KME %s at %s: malformed answer to POST %s", peer, base_url, path)
            raise KeyExhaustedError("the peer KME sent a malformed answer", details=details)
        try:
            err = resp.json()
        except ValueError:
            err = {"message": resp.text}
        log.warning(
            "peer KME %s at %s refused POST %s with %d: %s",
            peer,
            base_url,
            path,
            resp.status_code,
            err.get("message", "") if isinstance(err, dict) else err,
        )
        default = KeyExhaustedError if resp.status_code >= 500 else KmsError
        cls = error_class(resp.status_code, default)
        raise cls(
            f"the peer KME refused the request ({resp.status_code})",
            details=[*details, {"status": resp.status_code}],
        )

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class KmeNode:
    """One KME's key stores and its view of the KME network.

    Parameters
    ----------
    kme_id
        This KME's ID (a key of ``network.kmes``).
    network
        The KME network.
    links
        Neighbour KME ID -> the store holding the pool of the QKD link to it.
    relayed
        Store for end-to-end keys relayed to or from non-neighbours (``None``: no relay).
    local
        Store for SAE pairs both behind this KME (``None``: refused).
    peers
        How to reach the other KMEs.

    Raises
    ------
    ConfigError
        If ``links`` names a KME that is not a neighbour in ``network``.
    """

    def __init__(
        self,
        kme_id: str,
        network: KmeNetwork,
        *,
        links: Mapping[str, KeyStore],
        peers: PeerClient,
        relayed: KeyStore | None = None,
        local: KeyStore | None = None,
    ) -> None:
        neighbours = set(network.neighbours(kme_id))
        extra = set(links) - neighbours
        if extra:
            raise ConfigError(
                f"link stores for KMEs that are not neighbours of {kme_id}: {sorted(extra)}",
                field="links",
            )
        self.kme_id = kme_id
        self.network = network
        self.links = dict(links)
        self.relayed = relayed
        self.local = local
        self.peers = peers
        self.down: set[frozenset[str]] = set()
        #: Relay quotas per destination KME (:meth:`set_relay_quota`).
        self.relay_quotas: dict[str, RelayQuota] = {}
        self._mirrors: dict[str, MirrorBatcher] = {}
        self._mirrors_lock = threading.Lock()

    def mirror_batcher(self, peer: str) -> MirrorBatcher:
        """Return the batcher of mirror requests to ``peer`` (:mod:`qkdtwin.kms.mirror`)."""
        with self._mirrors_lock:
            b = self._mirrors.get(peer)
            if b is None:
                url = self.network.kmes[peer]

                def one(body: dict[str, Any], url: str = url, peer: str = peer) -> Any:
                    return self.peers.post(url, "/kme/v1/reservations", body, peer=peer)

                # the peer's answer per reservation, passed through (MirrorBatcher reads it)
                def many(
                    bodies: list[dict[str, Any]], url: str = url, peer: str = peer
                ) -> list[dict[str, Any]]:
                    answer = self.peers.post(
                        url, "/kme/v1/reservations/batch", {"reservations": bodies}, peer=peer
                    )
                    results = answer.get("results")
                    if not isinstance(results, list):
                        raise KeyExhaustedError("the peer KME sent a malformed answer")
                    return [r if isinstance(r, dict) else {"ok": False} for r in results]

                b = self._mirrors[peer] = MirrorBatcher(one, many)
            return b

    # -- routing -------------------------------------------------------------------------

    def set_link_down(self, peer: str, down: bool = True) -> None:
        """Mark the link to ``peer`` (or any link, as a pair) as out of service for routing."""
        pair = frozenset((self.kme_id, peer))
        (self.down.add if down else self.down.discard)(pair)

    def set_pair_down(self, a: str, b: str, down: bool = True) -> None:
        """Mark any link ``a``-``b`` of the network out of service for this KME's relays.

        What an operator (the twin's closed loop) tells every KME about a link it disabled at
        its two ends, so that relays are routed around it from their source.

        Raises
        ------
        KmsRequestError
            If ``a``-``b`` is not a link of the network.
        """
        if (a, b) not in self.network.links and (b, a) not in self.network.links:
            raise KmsRequestError("no such QKD link", details=[{"link": f"{a}-{b}"}])
        pair = frozenset((a, b))
        (self.down.add if down else self.down.discard)(pair)

    def pair_enabled(self, a: str, b: str) -> bool:
        """Return whether this KME routes relays over the link ``a``-``b``."""
        return frozenset((a, b)) not in self.down

    def link_enabled(self, peer: str) -> bool:
        """Return whether the link to ``peer`` is in service (not :meth:`set_link_down`)."""
        return frozenset((self.kme_id, peer)) not in self.down

    def store_for(self, other_kme: str) -> KeyStore:
        """Return the store holding keys shared with SAEs behind ``other_kme``.

        Raises
        ------
        KmsRequestError
            If this KME cannot serve that pair at all.
        """
        if other_kme == self.kme_id and self.local is not None:
            return self.local
        if other_kme in self.links:
            return self.links[other_kme]
        if other_kme in self.network.kmes and other_kme != self.kme_id and self.relayed:
            return self.relayed
        raise KmsRequestError(
            "no key pool with that SAE's KME", details=[{"target_KME_ID": other_kme}]
        )

    def available_count(self, other_kme: str, size_bits: int) -> int:
        """Return how many keys this KME could hand out now for SAEs behind ``other_kme``.

        For a relayed pair this is the bottleneck of the route's link pools, in keys of
        ``size_bits`` (each relayed key consumes one link key per hop).
        """
        if other_kme == self.kme_id or other_kme in self.links:
            owner = None if other_kme == self.kme_id else self.kme_id
            return self.store_for(other_kme).available_count(size_bits, owner=owner)
        try:
            route = self.route(other_kme)
        except KeyExhaustedError:
            return 0
        return self.links[route[1]].available_count(size_bits, owner=self.kme_id)

    def stores(self) -> list[KeyStore]:
        """Return every distinct store of this KME."""
        all_ = [*self.links.values(), self.relayed, self.local]
        return list(dict.fromkeys(s for s in all_ if s is not None))

    def fetch_store(self, master_kme: str, key_ids: Sequence[str]) -> KeyStore:
        """Return the store of the keys ``key_ids`` issued by a master behind ``master_kme``.

        Keys of a neighbour usually sit in the link's pool, but they were relayed when the
        direct link was down; the first key_ID decides.
        """
        store = self.store_for(master_kme)
        if (
            self.relayed is not None
            and store is not self.relayed
            and key_ids
            and store.key_info(key_ids[0]) is None
            and self.relayed.key_info(key_ids[0]) is not None
        ):
            return self.relayed
        return store

    def route(self, destination: str) -> list[str]:
        """Return the current route to ``destination`` (see :meth:`KmeNetwork.route`)."""
        down = [tuple(sorted(p)) for p in self.down]
        return self.network.route(self.kme_id, destination, down)  # type: ignore[arg-type]

    # -- master side ---------------------------------------------------------------------

    def erase_handed_over(self, key_ids: Sequence[str]) -> int:
        """Erase this KME's master-side copies of keys whose slaves fetch at another KME.

        Called once the master SAE has its ``enc_keys`` response (mirrored reservations and
        relays' source copies: :meth:`KeyStore.erase_handed_over`); returns how many.
        """
        return sum(st.erase_handed_over(key_ids, HANDED_OVER_AUDIT_BY) for st in self.stores())

    def reserve_for(
        self, master: str, slaves: list[str], slave_kme: str, number: int, size_bits: int
    ) -> list[DeliveredKey]:
        """Reserve ``number`` keys for ``master`` and ``slaves`` (all behind ``slave_kme``).

        Raises
        ------
        KeyExhaustedError
            Not enough keys, no route, or a peer KME that could not take part (nothing is
            handed out).
        KmsRequestError
            If the pair cannot be served by this KME.
        """
        if slave_kme == self.kme_id:
            return self.store_for(slave_kme).reserve(master, slaves, number, size_bits)
        if slave_kme in self.links and frozenset((self.kme_id, slave_kme)) not in self.down:
            return self._reserve_mirrored(master, slaves, slave_kme, number, size_bits)
        if self.relayed is None:
            raise KmsRequestError(
                "no key pool with that SAE's KME", details=[{"target_KME_ID": slave_kme}]
            )
        route = self.route(slave_kme)
        quota = self.relay_quotas.get(slave_kme)
        if quota is not None:
            wait = quota.take(number)
            if wait > 0:
                raise KeyExhaustedError(
                    f"relay quota toward {slave_kme} spent",
                    details=[
                        {
                            "relay_quota": slave_kme,
                            "keys_per_s": quota.keys_per_s,
                            "burst": quota.burst,
                        }
                    ],
                    retry_after_s=wait,
                )
        return self._relay_out(master, slaves, route, number, size_bits)

    def set_relay_quota(
        self, destination: str, keys_per_s: float | None, burst: int | None = None
    ) -> QuotaState | None:
        """Limit the keys relayed from here toward ``destination`` (``None``: no limit).

        See :mod:`qkdtwin.kms.quota`; returns the new quota's state.

        Raises
        ------
        KmsRequestError
            For an unknown destination or this KME itself.
        ConfigError
            For a bad rate or burst.
        """
        if destination not in self.network.kmes or destination == self.kme_id:
            raise KmsRequestError("unknown destination KME", details=[{"destination": destination}])
        if keys_per_s is None:
            self.relay_quotas.pop(destination, None)
            return None
        quota = RelayQuota(destination, keys_per_s, burst)
        self.relay_quotas[destination] = quota
        return quota.state()

    def _reserve_mirrored(
        self, master: str, slaves: list[str], peer: str, number: int, size_bits: int
    ) -> list[DeliveredKey]:
        if frozenset((self.kme_id, peer)) in self.down:
            raise KeyExhaustedError(
                "the QKD link to the slave's KME is out of service", details=[{"link": peer}]
            )
        store = self.links[peer]
        keys = store.reserve(
            master, slaves, number, size_bits, owner=self.kme_id, slaves_here=False
        )
        ids = [k.key_id for k in keys]
        try:
            # concurrent mirrors to the same peer go out together (one HTTPS round trip)
            self.mirror_batcher(peer).mirror(
                {
                    "master_SAE_ID": master,
                    "slave_SAE_IDs": slaves,
                    "key_IDs": ids,
                    "size": size_bits,
                }
            )
        except KmsError as exc:
            store.revoke(ids, by=f"mirror-failed:{peer}")
            log.warning("mirroring %d keys at peer KME %s failed: %s", len(ids), peer, exc)
            raise KeyExhaustedError(
                f"peer KME {peer} could not mirror the reservation",
                details=[{"target_KME_ID": peer}],
            ) from exc
        return keys

    def undo_reservation(self, slave_kme: str, key_ids: Sequence[str]) -> None:
        """Undo a :meth:`reserve_for` whose keys the master SAE never received.

        Called when the master's client went away before the ``enc_keys`` response was
        sent. Keys for a local pair go back to the pool. A mirrored reservation is undone at
        the peer first (``POST /kme/v1/reservations/undo``); the keys it returned to its
        pool go back to the pool here too, every other one (refused there because a slave
        had fetched it, unknown there, or the peer unreachable) is erased here (audited
        ``revoke``): wasted, never delivered twice. A relayed reservation is revoked here
        and at the destination (``POST /kme/v1/revocations``), as a failed relay is; its
        link pads are spent. Audited under :data:`CLIENT_GONE_AUDIT_BY`.
        """
        ids = list(key_ids)
        if not ids:
            return
        if slave_kme == self.kme_id:
            self.store_for(slave_kme).unreserve(ids, CLIENT_GONE_AUDIT_BY)
            return
        link = self.links.get(slave_kme)
        if link is not None and link.key_info(ids[0]) is not None:
            self._undo_mirrored(slave_kme, link, ids)
            return
        if self.relayed is None:
            return
        self.relayed.revoke(ids, CLIENT_GONE_AUDIT_BY)
        try:
            self.peers.post(
                self.network.kmes[slave_kme],
                "/kme/v1/revocations",
                {"key_IDs": ids},
                peer=slave_kme,
            )
        except KmsError as exc:
            log.error(
                "revoking %d undelivered relayed keys at %s failed, they stay reserved there "
                "until their reservation TTL: %s",
                len(ids),
                slave_kme,
                exc,
            )

    def _undo_mirrored(self, peer: str, store: KeyStore, ids: list[str]) -> None:
        returned: set[str] = set()
        try:
            answer = self.peers.post(
                self.network.kmes[peer], "/kme/v1/reservations/undo", {"key_IDs": ids}, peer=peer
            )
            listed = answer.get("returned")
            if not isinstance(listed, list):
                raise KeyExhaustedError("the peer KME sent a malformed answer")
            returned = {k for k in listed if isinstance(k, str)}
        except KmsError as exc:
            log.error(
                "undoing %d keys at peer KME %s failed; erased here, they stay reserved there "
                "until their reservation TTL: %s",
                len(ids),
                peer,
                exc,
            )
        back = [k for k in ids if k in returned]
        lost = [k for k in ids if k not in returned]
        if back:
            store.unreserve(back, CLIENT_GONE_AUDIT_BY)
        if lost:
            store.revoke(lost, f"undo-failed:{peer}")

    def _relay_out(
        self, master: str, slaves: list[str], route: list[str], number: int, size_bits: int
    ) -> list[DeliveredKey]:
        assert self.relayed is not None
        keys = [(str(uuid.uuid4()), os.urandom(size_bits // 8)) for _ in range(number)]
        relay_id = str(uuid.uuid4())
        try:
            self._forward(relay_id, route, 0, master, slaves, size_bits, keys)
        except KmsError as exc:  # nothing was installed anywhere: the SAE may retry
            log.warning("relay %s along %s failed: %s", relay_id, "-".join(route), exc)
            raise KeyExhaustedError(
                f"key relay along {'-'.join(route)} failed",
                details=[{"route": route}],
            ) from exc
        try:
            self.relayed.install_reserved(keys, master, slaves, delivered_to_master=True)
        except Exception as exc:  # a refusal or a store error: undo the destination's copy
            try:
                self.peers.post(
                    self.network.kmes[route[-1]],
                    "/kme/v1/revocations",
                    {"key_IDs": [k for k, _ in keys], "relay_ID": relay_id},
                    peer=route[-1],
                )
            except KmsError as undo:
                log.error(
                    "relay %s: revoking its keys at %s failed, they stay reserved there: %s",
                    relay_id,
                    route[-1],
                    undo,
                )
            if not isinstance(exc, KmsError):
                raise  # a store error: the API's 503
            log.warning("relay %s: relayed keys could not be stored here: %s", relay_id, exc)
            raise KeyExhaustedError(
                "relayed keys could not be stored", details=[{"route": route}]
            ) from exc
        return [DeliveredKey(k, m) for k, m in keys]

    def _forward(
        self,
        relay_id: str,
        route: list[str],
        position: int,
        master: str,
        slaves: list[str],
        size_bits: int,
        keys: list[tuple[str, bytes]],
    ) -> None:
        """Pad ``keys`` with link keys toward ``route[position + 1]`` and send them there."""
        nxt = route[position + 1]
        if frozenset((self.kme_id, nxt)) in self.down:
            raise KeyExhaustedError(f"the QKD link {self.kme_id}-{nxt} is out of service")
        link = self.links[nxt]
        by = f"relay:{relay_id}"
        items = []
        for key_id, material in keys:  # each pad is consumed (erased) before it is used
            pad = link.consume(by, size_bits)
            items.append(
                {
                    "key_ID": key_id,
                    "link_key_ID": pad.key_id,
                    "ciphertext": base64.b64encode(_xor(material, pad.material)).decode(),
                }
            )
        self.peers.post(
            self.network.kmes[nxt],
            "/kme/v1/relay",
            {
                "relay_ID": relay_id,
                "route": route,
                "master_SAE_ID": master,
                "slave_SAE_IDs": slaves,
                "size": size_bits,
                "keys": items,
            },
            peer=nxt,
        )

    # -- peer side -----------------------------------------------------------------------

    def accept_reservation(self, caller: str, body: ReservationBody) -> None:
        """Mirror a neighbour's reservation in the shared link pool."""
        store = self.links.get(caller)
        if store is None:
            raise KeyAccessError("no QKD link with the calling KME", details=[{"KME_ID": caller}])
        if not self.link_enabled(caller):
            raise KeyExhaustedError(
                "the QKD link to the calling KME is out of service", details=[{"link": caller}]
            )
        store.reserve(
            body.master_SAE_ID,
            body.slave_SAE_IDs,
            len(body.key_IDs),
            body.size,
            key_ids=body.key_IDs,
        )

    def accept_relay(self, caller: str, body: RelayBody) -> None:
        """Recover the keys a neighbour padded, then forward them or install them here."""
        route = body.route
        if self.kme_id not in route or route.index(self.kme_id) == 0:
            raise KmsRequestError("this KME is not on the relay route")
        pos = route.index(self.kme_id)
        if route[pos - 1] != caller or caller not in self.links:
            raise KeyAccessError("relay hop from a KME that is not the previous hop")
        link = self.links[caller]
        by = f"relay:{body.relay_ID}"
        keys = []
        for item in body.keys:
            pad = link.consume(by, body.size, key_ids=[item.link_key_ID])
            cipher = base64.b64decode(item.ciphertext)
            if len(cipher) != body.size // 8:
                raise KmsRequestError("ciphertext length does not match size")
            keys.append((item.key_ID, _xor(cipher, pad.material)))
        if pos == len(route) - 1:
            if self.relayed is None:
                raise KmsRequestError("this KME does not terminate relayed keys")
            self.relayed.install_reserved(
                keys, body.master_SAE_ID, body.slave_SAE_IDs, delivered_to_master=False
            )
        else:
            self._forward(
                body.relay_ID, route, pos, body.master_SAE_ID, body.slave_SAE_IDs, body.size, keys
            )

    def accept_reservations(
        self, caller: str, bodies: list[ReservationBody]
    ) -> list[MirrorOutcome]:
        """Mirror several reservations of a neighbour; the outcome of each, in order.

        A refusal of one (keys unknown or not available, the link out of service) does not
        affect the others: ``{"ok": false, "status": 400|401|503, "message": ...}``. A store
        failure fails the whole request (the caller revokes every reservation of it).
        """
        out: list[MirrorOutcome] = []
        for body in bodies:
            try:
                self.accept_reservation(caller, body)
            except KmsError as exc:
                status = etsi_status(exc, 503)
                out.append({"ok": False, "status": status, "message": str(exc)})
            else:
                out.append({"ok": True})
        return out

    def accept_undo(self, caller: str, key_ids: list[str]) -> UnreserveResult:
        """Undo mirrored reservations of the calling neighbour (its master never got them).

        Only keys reserved here for slaves behind this KME (a mirror) are touched: this
        KME's own master-side copies in the link pool are not the caller's to undo. A key a
        slave already fetched is erased, not returned (:meth:`KeyStore.unreserve`).
        """
        store = self.links.get(caller)
        if store is None:
            raise KeyAccessError("no QKD link with the calling KME", details=[{"KME_ID": caller}])
        return store.unreserve(key_ids, f"undo-by:{caller}", mirrored_only=True)

    def accept_revocation(self, caller: str, key_ids: list[str]) -> int:
        """Erase relayed keys whose source could not complete the relay."""
        if self.relayed is None:
            return 0
        return self.relayed.revoke(key_ids, by=f"revoked-by:{caller}")


class MirrorOutcome(TypedDict):
    """Outcome of one mirrored reservation (:meth:`KmeNode.accept_reservations`).

    ``status`` and ``message`` only when refused (``ok`` false).
    """

    ok: bool
    status: NotRequired[int]
    message: NotRequired[str]


class ReservationBody(BaseModel):
    """``POST /kme/v1/reservations``: mirror a reservation made at the peer KME."""

    model_config = ConfigDict(extra="forbid")

    master_SAE_ID: str  # noqa: N815 - ETSI naming
    slave_SAE_IDs: list[str]  # noqa: N815
    key_IDs: list[str] = Field(min_length=1)  # noqa: N815
    size: int = Field(ge=8, multiple_of=8)


class ReservationBatchBody(BaseModel):
    """``POST /kme/v1/reservations/batch``: several mirrors at once (:mod:`qkdtwin.kms.mirror`)."""

    model_config = ConfigDict(extra="forbid")

    reservations: list[ReservationBody] = Field(min_length=1, max_length=512)


class RelayItem(BaseModel):
    """One relayed key on one hop: its end-to-end ID, the pad's link key_ID, the ciphertext."""

    key_ID: str  # noqa: N815
    link_key_ID: str  # noqa: N815
    ciphertext: str


class RelayBody(BaseModel):
    """``POST /kme/v1/relay``: keys one-time-padded with link keys of the previous hop."""

    model_config = ConfigDict(extra="forbid")

    relay_ID: str  # noqa: N815
    route: list[str] = Field(min_length=2)
    master_SAE_ID: str  # noqa: N815
    slave_SAE_IDs: list[str]  # noqa: N815
    size: int = Field(ge=8, multiple_of=8)
    keys: list[RelayItem] = Field(min_length=1)


class UndoBody(BaseModel):
    """``POST /kme/v1/reservations/undo``: return a mirrored reservation's keys to the pool."""

    model_config = ConfigDict(extra="forbid")

    key_IDs: list[str] = Field(min_length=1)  # noqa: N815


class RevocationBody(BaseModel):
    """``POST /kme/v1/revocations``: erase relayed keys that the source could not deliver."""

    model_config = ConfigDict(extra="forbid")

    key_IDs: list[str]  # noqa: N815
    relay_ID: str | None = None  # noqa: N815


def _caller_kme(request: Request, node: KmeNode) -> str:
    kme = request.scope.get(SCOPE_KME_KEY)
    if not kme or kme not in node.network.kmes or kme == node.kme_id:
        raise KeyAccessError("peer endpoints are for the KMEs of this network")
    return str(kme)


def install_peer_routes(app: FastAPI, node: KmeNode, threads: ThreadLimiter | None = None) -> None:
    """Add the KME-to-KME endpoints (left out of the OpenAPI document) to ``app``.

    Their store work runs on ``threads`` (default: a limiter of their own with
    :data:`~qkdtwin.kms.admission.DEFAULT_PEER_THREADS` threads), never on the threads of
    the SAE requests, and they are not subject to the SAE admission control.
    """
    run = (threads or ThreadLimiter(DEFAULT_PEER_THREADS)).run

    # The handlers keep ``dict[str, Any]``: FastAPI turns a return annotation into a response
    # model that it validates every answer against; these answers go out as they are built.

    @app.post("/kme/v1/reservations", include_in_schema=False)
    async def reservations(request: Request, body: ReservationBody) -> dict[str, Any]:
        await run(node.accept_reservation, _caller_kme(request, node), body)
        return {"key_IDs": body.key_IDs}

    @app.post("/kme/v1/reservations/batch", include_in_schema=False)
    async def reservations_batch(request: Request, body: ReservationBatchBody) -> dict[str, Any]:
        caller = _caller_kme(request, node)
        return {"results": await run(node.accept_reservations, caller, body.reservations)}

    @app.post("/kme/v1/reservations/undo", include_in_schema=False)
    async def undo(request: Request, body: UndoBody) -> dict[str, Any]:
        done = await run(node.accept_undo, _caller_kme(request, node), body.key_IDs)
        return {"returned": done.returned, "erased": done.erased}

    @app.post("/kme/v1/relay", include_in_schema=False)
    async def relay(request: Request, body: RelayBody) -> dict[str, Any]:
        await run(node.accept_relay, _caller_kme(request, node), body)
        return {"relay_ID": body.relay_ID, "keys": len(body.keys)}

    @app.post("/kme/v1/revocations", include_in_schema=False)
    async def revocations(request: Request, body: RevocationBody) -> dict[str, Any]:
        return {
            "revoked": await run(node.accept_revocation, _caller_kme(request, node), body.key_IDs)
        }
