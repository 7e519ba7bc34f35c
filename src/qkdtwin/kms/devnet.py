"""A development KME network on loopback: PKI, stores, feeders, peers and HTTPS servers.

:class:`DevNetwork` starts one ETSI GS QKD 014 KME per ID, each a separate mutual-TLS server
with its own stores, joined by simulated QKD links (one :class:`~qkdtwin.kms.feeder.LinkFeeder`
per link, the pool split per direction) and speaking the KME-to-KME protocol of
:mod:`qkdtwin.kms.peering` over HTTPS. ``qkdtwin kms dev-pair`` is a two-KME instance of it;
tests use longer chains for key relay.

Example::

    with DevNetwork(tmp, ["kme-a", "kme-b", "kme-c"], [("kme-a", "kme-b"), ("kme-b", "kme-c")],
                    {"sae-a": "kme-a", "sae-c": "kme-c"}) as net:
        net.url("kme-a"), net.pki.saes["sae-a"]
        net.pki.operators["twin"]       # operator certificate for GET /kme/v1/links
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import FastAPI

from qkdtwin.errors import ConfigError
from qkdtwin.kms._listen import PreboundServer, listen_socket
from qkdtwin.kms.api import KmeConfig, create_app
from qkdtwin.kms.feeder import KeyMaterialSource, LinkFeeder
from qkdtwin.kms.kek import load_kek
from qkdtwin.kms.peering import KmeNetwork, KmeNode, PeerClient
from qkdtwin.kms.store import KeyStore
from qkdtwin.kms.tls import Pki, RunningServer, init_pki, make_server

__all__ = ["DevNetwork"]

#: Maps ``(kme_id, store name)`` to a store URL; names are a neighbour's KME ID or "relayed".
StoreUrl = Callable[[str, str], str]


class DevNetwork:
    """KMEs on loopback joined by simulated QKD links.

    Parameters
    ----------
    directory
        Where the fresh PKI (and the default SQLite stores) go.
    kme_ids
        The KMEs.
    links
        The QKD links, as pairs of KME IDs.
    saes
        Every SAE ID mapped to its KME.
    ports
        Fixed ports per KME (missing or 0: any free port).
    store_url
        Store URL for ``(kme_id, name)``; default SQLite files ``<kme>-<name>.db`` in
        ``directory``.
    rate_bps
        Secret key rate of every link (bit/s).
    initial_keys
        Keys pushed into every link at start, so the network is usable at once.
    source
        Factory of each link's key material source (default: CSPRNG material).
    run_feeders
        Start the feeders' background threads (``False``: the links hold only
        ``initial_keys``, e.g. for tests that count keys exactly).
    operator_ids
        Operators that get a certificate (``pki.operators``) for the operator interface
        ``GET /kme/v1/links`` of every KME.
    max_sae_id_count
        Most ``additional_slave_SAE_IDs`` per ``enc_keys`` request (0: no multicast), as
        :class:`~qkdtwin.kms.api.KmeConfig`.
    wrap
        Wrap key material at rest with the PKI's key-encryption key (``kek.bin``, mode 0600;
        :mod:`qkdtwin.kms.kek`). ``False`` stores it unwrapped (tests that look for raw key
        bytes in the store files).
    kme_options
        More :class:`~qkdtwin.kms.api.KmeConfig` fields for every KME (e.g. the admission
        limits ``max_active_requests``, ``max_queued_requests``, ``queue_timeout_s``).
    now
        Clock of every store (seconds since the epoch; default ``time.time``), for tests
        that move time forward (reservation TTL, retry window).
    max_key_count
        Capacity of every store, keys (:class:`~qkdtwin.kms.store.KeyStore`).

    Raises
    ------
    ConfigError
        If a link or SAE names an unknown KME.
    """

    def __init__(
        self,
        directory: Path,
        kme_ids: Sequence[str],
        links: Sequence[tuple[str, str]],
        saes: Mapping[str, str],
        *,
        ports: Mapping[str, int] | None = None,
        store_url: StoreUrl | None = None,
        rate_bps: float = 1_000.0,
        initial_keys: int = 100,
        source: Callable[[tuple[str, str]], KeyMaterialSource] | None = None,
        run_feeders: bool = True,
        operator_ids: Sequence[str] = ("twin",),
        max_sae_id_count: int = 0,
        wrap: bool = True,
        kme_options: Mapping[str, Any] | None = None,
        now: Callable[[], float] = time.time,
        max_key_count: int = 100_000,
    ) -> None:
        known = set(kme_ids)
        for a, b in links:
            if a not in known or b not in known:
                raise ConfigError(f"link {a}-{b} names an unknown KME", field="links")
        for sae, kme in saes.items():
            if kme not in known:
                raise ConfigError(f"SAE {sae} sits behind unknown KME {kme}", field="saes")
        self.directory = directory
        self.kme_ids = list(kme_ids)
        self.pki: Pki = init_pki(
            directory, kme_ids=self.kme_ids, sae_ids=list(saes), operator_ids=operator_ids
        )
        self.network = KmeNetwork(kmes=dict.fromkeys(self.kme_ids, ""), links=list(links))
        self.saes = dict(saes)
        kek = load_kek(self.pki.kek) if wrap and self.pki.kek is not None else None
        self.wrapped = kek is not None
        self.max_sae_id_count = int(max_sae_id_count)
        self._ports = dict(ports or {})
        url_of = store_url or (lambda kme, name: f"sqlite:///{directory / f'{kme}-{name}.db'}")
        self.stores: dict[str, dict[str, KeyStore]] = {k: {} for k in self.kme_ids}
        opened: dict[str, KeyStore] = {}
        for kme in self.kme_ids:
            names = [*self.network.neighbours(kme), "relayed"]
            for name in names:
                url = url_of(kme, name)
                # PostgreSQL keeps old row versions until VACUUM: epoch wrap keys there
                epochs = directory / "epochs" if kek and not url.startswith("sqlite") else None
                store = opened.get(url) or KeyStore(
                    url, kek=kek, epoch_dir=epochs, now=now, max_key_count=max_key_count
                )
                opened[url] = store
                self.stores[kme][name] = store
        self._distinct = list(opened.values())
        self.feeders = [
            LinkFeeder(
                [self.stores[a][b], self.stores[b][a]],
                rate_bps,
                owners=(a, b),
                source=source((a, b)) if source else None,
            )
            for a, b in self.network.links
        ]
        self.initial_keys = initial_keys
        self.run_feeders = run_feeders
        self.kme_options = dict(kme_options or {})
        self.nodes: dict[str, KmeNode] = {}
        self.apps: dict[str, FastAPI] = {}
        self.servers: dict[str, RunningServer] = {}
        self._peer_clients: list[PeerClient] = []

    def url(self, kme_id: str) -> str:
        """Return the base URL of a running KME."""
        return self.network.kmes[kme_id]

    def start(self) -> DevNetwork:
        """Fill the links, start every KME server and the feeders; return ``self``.

        Raises
        ------
        ConfigError
            If a KME's port is in use (``127.0.0.1:8443 is in use (...)``); nothing is left
            running then.
        """
        try:
            for feeder in self.feeders:
                feeder.push(self.initial_keys)
            for kme in self.kme_ids:
                cert, key = self.pki.kmes[kme]
                peers = PeerClient(cert, key, self.pki.ca_cert)
                self._peer_clients.append(peers)
                node = KmeNode(
                    kme,
                    self.network,
                    links={n: self.stores[kme][n] for n in self.network.neighbours(kme)},
                    relayed=self.stores[kme]["relayed"],
                    peers=peers,
                )
                self.nodes[kme] = node
                config = KmeConfig(
                    kme_id=kme,
                    saes=self.saes,
                    max_sae_id_count=self.max_sae_id_count,
                    **self.kme_options,
                )
                app = create_app(config, node=node)
                self.apps[kme] = app
                # Bound here, not in uvicorn: a port in use is a ConfigError with the reason.
                sock = listen_socket("127.0.0.1", self._ports.get(kme, 0))
                srv = make_server(
                    app,
                    host="127.0.0.1",
                    port=self._ports.get(kme, 0),
                    certfile=cert,
                    keyfile=key,
                    ca_certs=self.pki.ca_cert,
                )
                self.servers[kme] = RunningServer(PreboundServer(srv.config, [sock])).start()
                self.network.kmes[kme] = f"https://127.0.0.1:{self.servers[kme].port}"
            if self.run_feeders:
                for feeder in self.feeders:
                    feeder.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop feeders and servers and close every store (idempotent)."""
        for feeder in self.feeders:
            feeder.stop()
        for peers in self._peer_clients:  # close client connections first: clean shutdown
            peers.close()
        self._peer_clients.clear()
        for srv in self.servers.values():
            srv.stop()
        self.servers.clear()
        for store in self._distinct:
            store.close()

    def __enter__(self) -> DevNetwork:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()
