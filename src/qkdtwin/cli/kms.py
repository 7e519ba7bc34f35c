"""``qkdtwin kms``: ETSI GS QKD 014 key management entities on the command line.

Commands:

* ``kms pki init DIR [--kme ID]... [--sae ID]... [--operator ID]... [--json]`` — development
  CA, KME (server), SAE (client) and operator (client of ``GET /kme/v1/links``) certificates
  in DIR.
* ``kms serve --config KME.yaml [--json]`` — one KME over HTTPS with mutual TLS (format in
  :class:`ServeConfig`); prints the URL it listens on once it accepts connections.
* ``kms status|get-keys|get-keys-with-ids`` — an ETSI 014 client, authenticated by
  ``--cert/--key`` and trusting ``--ca``; prints one JSON object.
* ``kms dev-pair DIR [--port-a P] [--port-b P] [--db URL] [--feed random|pipeline|none]
  [--json]`` — a fresh PKI in DIR and two KMEs on loopback (``sae-a`` behind ``kme-a``,
  ``sae-b`` behind ``kme-b``) fed by a simulated decoy-BB84 link; runs until interrupted.

Bad input and KME refusals raise :class:`~qkdtwin.errors.QkdTwinError`;
:func:`qkdtwin.cli.main` turns them into one stderr line and exit status 2. Bad input is
checked before anything starts: a missing certificate, key, CA, config or key file (the
message names the path, and ``kms pki init`` when a PKI file is missing), a store URL that
is neither ``sqlite:///PATH`` nor ``postgresql://...`` or cannot be opened, a KME URL that
is not ``https://HOST:PORT``, and a port in use.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qkdtwin.cli.common import JsonOpt, emit_json
from qkdtwin.cli.kms_checks import (
    check_kme_url,
    check_store_url,
    check_tls_files,
    one_line,
    open_key_store,
    per_kme_url,
    reason,
    require_file,
    store_error,
)
from qkdtwin.errors import ConfigError

if TYPE_CHECKING:
    from qkdtwin.kms import KeyStore

__all__ = ["ServeConfig", "kms_app"]

kms_app = typer.Typer(
    help="Key management (ETSI GS QKD 014 KMEs over mutual TLS).", no_args_is_help=True
)
pki_app = typer.Typer(help="Development PKI for KMEs and SAEs.", no_args_is_help=True)
kms_app.add_typer(pki_app, name="pki")


class ServeConfig(BaseModel):
    """The ``KME.yaml`` of ``qkdtwin kms serve``.

    Example::

        host: 127.0.0.1
        port: 8443
        db: sqlite:///kme-a.db        # or postgresql://user@host/db
        cert: pki/kme-a.pem
        key: pki/kme-a.key
        ca: pki/ca.pem
        kek_file: pki/kek.bin         # KEK (16/24/32 bytes, 0600; `kms pki init` writes it);
                                      # null: material unwrapped
        epoch_dir: null               # per-epoch wrap keys (crypto-shredding); default with a
                                      # kek_file and a PostgreSQL store: <kek_file dir>/epochs
        epoch_s: 600                  # length of a wrap-key epoch, s
        ttl_s: null                   # optional key lifetime in seconds
        kme:                          # qkdtwin.kms.KmeConfig
          kme_id: kme-a
          saes: {sae-a: kme-a, sae-b: kme-b}
        network:                      # optional: a KME network (qkdtwin.kms.peering)
          kmes: {kme-a: "https://127.0.0.1:8443", kme-b: "https://127.0.0.1:8444"}
          links: [[kme-a, kme-b]]
        link_dbs: {kme-b: "sqlite:///kme-a-kme-b.db"}   # each QKD link's pool, by neighbour
        relayed_db: sqlite:///kme-a-relayed.db          # keys relayed to/from non-neighbours

    Without ``network`` the KME serves every pair from ``db`` (one shared pool). With it,
    ``db`` holds only pairs of SAEs both behind this KME, each neighbour's link pool is its
    ``link_dbs`` entry, and keys for farther KMEs are relayed (``relayed_db``).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)
    db: str = "sqlite:///kme.db"
    cert: Path
    key: Path
    ca: Path
    kek_file: Path | None = None
    epoch_dir: Path | None = None
    epoch_s: float = Field(600.0, gt=0)
    ttl_s: float | None = None
    kme: dict[str, Any]
    network: dict[str, Any] | None = None
    link_dbs: dict[str, str] = {}
    relayed_db: str | None = None


def _announce(line: str | dict[str, Any]) -> None:
    """Print one human line or one JSON line on stdout, and flush (a reader waits for it)."""
    if isinstance(line, dict):
        emit_json(line)
    else:
        typer.echo(line)
    sys.stdout.flush()


def _load_serve_config(path: Path) -> ServeConfig:
    import yaml

    require_file(path, "--config")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path} ({reason(exc)})", field="config") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})", field="config") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings (see examples/kms-kme-a.yaml)",
            field="config",
        )
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {loc}: {one_line(first['msg'])}", field=loc) from exc


@pki_app.command("init")
def pki_init(
    directory: Annotated[Path, typer.Argument(help="Directory for the PEM files.")],
    kme: Annotated[list[str] | None, typer.Option("--kme", help="KME ID (repeatable).")] = None,
    sae: Annotated[list[str] | None, typer.Option("--sae", help="SAE ID (repeatable).")] = None,
    operator: Annotated[
        list[str] | None,
        typer.Option(
            "--operator",
            help="Operator ID (repeatable; default: twin). Its certificate may read the"
            " operator interface GET /kme/v1/links of every KME.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a development CA and certificates for KMEs, SAEs and operators.

    SAE certificates carry the SAE ID in CN and SAN URI (``urn:qkdtwin:sae:ID``); operator
    certificates (``operator-ID.pem``/``.key``) the SAN URI ``urn:qkdtwin:operator:ID``.
    """
    from qkdtwin.kms.tls import init_pki

    pki = init_pki(
        directory,
        kme_ids=kme or ["kme-a", "kme-b"],
        sae_ids=sae or ["sae-a", "sae-b"],
        operator_ids=operator or ["twin"],
    )

    def files(ids: dict[str, tuple[Path, Path]]) -> dict[str, dict[str, str]]:
        return {k: {"cert": str(c), "key": str(p)} for k, (c, p) in ids.items()}

    out = {
        "ca_cert": str(pki.ca_cert),
        "kmes": files(pki.kmes),
        "saes": files(pki.saes),
        "operators": files(pki.operators),
        "kek": str(pki.kek),
    }
    if as_json:
        emit_json(out)
    else:
        typer.echo(
            f"CA: {pki.ca_cert}; KMEs: {', '.join(pki.kmes)}; SAEs: {', '.join(pki.saes)}; "
            f"operators: {', '.join(pki.operators)}; key-encryption key: {pki.kek}"
        )


@kms_app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", help="KME YAML file.")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Once listening, print one JSON line (url, kme_id, host, port, pid), not a"
            " human line.",
        ),
    ] = False,
) -> None:
    """Run one KME over HTTPS with mutual TLS until interrupted.

    Once it accepts connections it prints the URL it listens on (one line; with ``--json``
    one JSON object). Missing certificates, a bad store URL or a port in use end with one
    error line and exit status 2 before anything starts.
    """
    from qkdtwin.kms import KmeConfig, create_app
    from qkdtwin.kms._listen import PreboundServer, listen_socket
    from qkdtwin.kms.tls import make_server
    from qkdtwin.ops import freeze_startup_objects

    cfg = _load_serve_config(config)
    try:
        kme = KmeConfig.model_validate(cfg.kme)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = one_line(first["msg"])
        where = f"kme.{loc}" if loc else "kme"
        raise ConfigError(f"{config}: {where}: {msg}", field=where) from exc
    network = None
    if cfg.network is not None:
        from qkdtwin.kms.peering import KmeNetwork

        try:
            network = KmeNetwork.model_validate(cfg.network)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = one_line(first["msg"])
            raise ConfigError(f"{config}: network.{loc}: {msg}", field="network") from exc
        missing = set(network.neighbours(kme.kme_id)) - set(cfg.link_dbs)
        if missing:
            raise ConfigError(
                f"{config}: link_dbs lacks the link pool of neighbour(s) {sorted(missing)}",
                field="link_dbs",
            )
    check_tls_files(
        (f"{config}: cert", cfg.cert), (f"{config}: key", cfg.key), (f"{config}: ca", cfg.ca)
    )
    kek = None
    if cfg.kek_file is not None:
        require_file(cfg.kek_file, f"{config}: kek_file")
        from qkdtwin.kms.kek import load_kek

        try:
            kek = load_kek(cfg.kek_file)
        except ConfigError as exc:
            raise ConfigError(f"{config}: kek_file: {exc}", field="kek_file") from None
    urls = [
        (f"{config}: db", cfg.db),
        *((f"{config}: link_dbs.{peer}", u) for peer, u in cfg.link_dbs.items()),
        *([(f"{config}: relayed_db", cfg.relayed_db)] if cfg.relayed_db else []),
    ]
    for what, url in urls:
        check_store_url(url, what)

    sock = listen_socket(cfg.host, cfg.port)  # before any store: a port in use changes nothing
    stores: list[KeyStore] = []
    node = None

    def open_store(url: str, what: str) -> KeyStore:
        # PostgreSQL keeps old row versions until VACUUM: wrap with epoch keys there
        epoch_dir = cfg.epoch_dir
        if epoch_dir is None and kek is not None and cfg.kek_file and url.startswith("postgres"):
            epoch_dir = cfg.kek_file.parent / "epochs"
        st = open_key_store(
            url,
            what,
            kek=kek,
            max_key_count=kme.max_key_count,
            ttl_s=cfg.ttl_s,
            epoch_dir=epoch_dir,
            epoch_s=cfg.epoch_s,
        )
        stores.append(st)
        return st

    try:
        store = open_store(cfg.db, f"{config}: db")
        if network is not None:
            from qkdtwin.kms.peering import KmeNode, PeerClient

            links = {
                peer: open_store(url, f"{config}: link_dbs.{peer}")
                for peer, url in cfg.link_dbs.items()
            }
            relayed = (
                open_store(cfg.relayed_db, f"{config}: relayed_db") if cfg.relayed_db else None
            )
            node = KmeNode(
                kme.kme_id,
                network,
                links=links,
                relayed=relayed,
                local=store,
                peers=PeerClient(cfg.cert, cfg.key, cfg.ca),
            )
        port = int(sock.getsockname()[1])
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        url = f"https://{host}:{port}"

        def announce() -> None:
            freeze_startup_objects()
            info = {"url": url, "kme_id": kme.kme_id, "host": cfg.host, "port": port}
            if as_json:
                _announce({**info, "pid": os.getpid()})
            else:
                _announce(f"{kme.kme_id} listening on {url} (Ctrl-C to stop)")

        app = create_app(kme, None if node else store, node=node)
        server_config = make_server(
            app, host=cfg.host, port=port, certfile=cfg.cert, keyfile=cfg.key, ca_certs=cfg.ca
        ).config
        try:
            server_config.load()  # the TLS context, here rather than inside the event loop
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                f"{config}: cannot set up TLS from cert {cfg.cert}, key {cfg.key} and ca"
                f" {cfg.ca} ({reason(exc)})",
                field="cert",
            ) from exc
        PreboundServer(server_config, [sock], on_started=announce).run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly; exit 0
        pass
    finally:
        sock.close()
        if node is not None:
            node.peers.close()
        for st in stores:
            st.close()


CertOpt = Annotated[Path, typer.Option("--cert", help="SAE certificate (PEM).")]
KeyOpt = Annotated[Path, typer.Option("--key", help="SAE private key (PEM).")]
CaOpt = Annotated[Path, typer.Option("--ca", help="CA that signed the KME (PEM).")]
UrlOpt = Annotated[str, typer.Option("--kme", help="KME base URL, https://host:port.")]


def _client(kme: str, cert: Path, key: Path, ca: Path) -> Any:
    """Return a :class:`~qkdtwin.kms.client.KmeClient`, after checking its URL and files."""
    from qkdtwin.kms.client import KmeClient

    check_kme_url(kme)
    check_tls_files(("--cert", cert), ("--key", key), ("--ca", ca))
    return KmeClient(kme, cert, key, ca)


def _keys_json(keys: list[Any]) -> dict[str, Any]:
    return {
        "keys": [{"key_ID": k.key_id, "key": base64.b64encode(k.material).decode()} for k in keys]
    }


@kms_app.command("status")
def status(
    slave_sae_id: Annotated[str, typer.Argument(help="The slave SAE ID.")],
    kme: UrlOpt,
    cert: CertOpt,
    key: KeyOpt,
    ca: CaOpt,
) -> None:
    """Print the ETSI Status object for the pool shared with SLAVE_SAE_ID."""
    with _client(kme, cert, key, ca) as c:
        emit_json(c.status(slave_sae_id))


@kms_app.command("get-keys")
def get_keys(
    slave_sae_id: Annotated[str, typer.Argument(help="The slave SAE ID.")],
    kme: UrlOpt,
    cert: CertOpt,
    key: KeyOpt,
    ca: CaOpt,
    number: Annotated[int, typer.Option("--number", "-n", help="How many keys.")] = 1,
    size: Annotated[int | None, typer.Option("--size", help="Key size in bits.")] = None,
) -> None:
    """Get new keys as master SAE; print the Key container."""
    with _client(kme, cert, key, ca) as c:
        emit_json(_keys_json(c.get_keys(slave_sae_id, number=number, size=size)))


@kms_app.command("get-keys-with-ids")
def get_keys_with_ids(
    master_sae_id: Annotated[str, typer.Argument(help="The master SAE ID.")],
    key_ids: Annotated[list[str], typer.Argument(help="key_IDs received by the master.")],
    kme: UrlOpt,
    cert: CertOpt,
    key: KeyOpt,
    ca: CaOpt,
) -> None:
    """Get keys by ID as slave SAE; print the Key container."""
    with _client(kme, cert, key, ca) as c:
        emit_json(_keys_json(c.get_keys_with_ids(master_sae_id, key_ids)))


@kms_app.command("import-keys")
def import_keys(
    key_file: Annotated[
        Path, typer.Argument(help="'KEY_ID HEX' lines (link simulate --keys-out).")
    ],
    db: Annotated[
        list[str], typer.Option("--db", help="Store URL; repeat for both ends of the link.")
    ],
    kek_file: Annotated[
        Path | None,
        typer.Option(
            "--kek-file",
            help="Key-encryption key of the stores (kek.bin of `kms pki init`); without it"
            " a new store is unwrapped and a wrapped store is refused.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import keys from a device key file into one or more KME stores."""
    from qkdtwin.kms.feeder import import_key_file, read_key_file
    from qkdtwin.kms.kek import load_kek

    require_file(key_file, "KEY_FILE")
    read_key_file(key_file)  # a malformed file: an error before any store is created
    kek = None
    if kek_file is not None:
        require_file(kek_file, "--kek-file")
        kek = load_kek(kek_file)
    for url in db:
        check_store_url(url, "--db")
    stores: list[KeyStore] = []
    try:
        stores.extend(open_key_store(url, "--db", kek=kek) for url in db)
        added = import_key_file(stores, key_file)
    finally:
        for st in stores:
            st.close()
    if as_json:
        emit_json({"imported": added})
    else:
        typer.echo(f"imported {added} keys")


@kms_app.command("dev-pair")
def dev_pair(
    directory: Annotated[Path, typer.Argument(help="Directory for the fresh PKI and store.")],
    port_a: Annotated[
        int, typer.Option("--port-a", min=0, max=65535, help="Port of kme-a (0: any).")
    ] = 0,
    port_b: Annotated[
        int, typer.Option("--port-b", min=0, max=65535, help="Port of kme-b (0: any).")
    ] = 0,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Store URL of kme-a; alone, both KMEs get their own store derived from it"
            " (SQLite: <stem>-kme-a.db / -kme-b.db; PostgreSQL: schemas qkdtwin_kme_a/_b).",
        ),
    ] = None,
    db_b: Annotated[
        str | None,
        typer.Option("--db-b", help="Store URL of kme-b (with --db)."),
    ] = None,
    distance_km: Annotated[float, typer.Option("--distance-km", help="Link length.")] = 20.0,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--import-keys", help="'KEY_ID HEX' file (link simulate --keys-out) to load first."
        ),
    ] = None,
    feed: Annotated[
        str,
        typer.Option(
            "--feed",
            help="Key material: random (CSPRNG at the analytic rate), pipeline (link engine"
            " + post-processing, at the measured finite-key rate) or none (no feeder: the"
            " stores hold only the --import-keys keys).",
        ),
    ] = "random",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pipeline feeder.")] = 0,
    no_wrap: Annotated[
        bool,
        typer.Option(
            "--no-wrap",
            help="Store key material unwrapped (tests that search the store files for key"
            " bytes); by default it is wrapped with DIR/kek.bin (AES-256-GCM, mode 0600).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Two KMEs on loopback joined by a simulated decoy-BB84 link, until interrupted.

    Each KME has its own store (``kme-a.db`` and ``kme-b.db`` in DIR, or
    ``--db``/``--db-b``); the feeder pushes the same keys into both, each end owning half of
    them, and each ``enc_keys`` reservation is mirrored at the peer KME over HTTPS
    (``POST /kme/v1/reservations``, see docs/kms.md). With ``--feed none`` there is no
    feeder: the stores hold exactly the ``--import-keys`` keys (or none).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from qkdtwin.kms.devnet import DevNetwork
    from qkdtwin.kms.feeder import (
        PipelineKeySource,
        import_key_file,
        link_rate_bps,
        read_key_file,
    )
    from qkdtwin.ops import freeze_startup_objects

    if feed not in ("random", "pipeline", "none"):
        raise ConfigError(
            f"--feed must be random, pipeline or none, got {feed!r}", field="feed", value=feed
        )
    if db is None and db_b is not None:
        raise ConfigError("--db-b needs --db (the store of kme-a)", field="db_b")
    if key_file is not None:
        require_file(key_file, "--import-keys")
        read_key_file(key_file)  # a malformed file: an error before the PKI is made
    labels: dict[str, str] = {}  # store URL -> the option that gave it, for messages
    if db is not None and db_b is not None:
        check_store_url(db, "--db")
        check_store_url(db_b, "--db-b")
        labels = {db: "--db", db_b: "--db-b"}
    elif db is not None:
        db, db_b = per_kme_url(db, "kme-a"), per_kme_url(db, "kme-b")
        labels = {db: "--db", db_b: "--db"}
    urls = {("kme-a", "kme-b"): db, ("kme-b", "kme-a"): db_b}
    asked: list[str] = []  # the store URLs handed out, the failing one last

    def store_url(kme: str, name: str) -> str:
        url = urls.get((kme, name))
        file = f"{kme}.db" if (kme, name) in urls else f"{kme}-{name}.db"
        asked.append(url or f"sqlite:///{directory / file}")
        return asked[-1]

    rate = 1_000.0 if feed == "none" else link_rate_bps("decoy-bb84", distance_km)
    source = None
    if feed == "pipeline":
        pipeline = PipelineKeySource("decoy-bb84", distance_km, "gys", seed=seed)
        pipeline.run_block()  # measure the block's secret key rate before serving
        rate = pipeline.rate_bps or rate

        def source(_link: tuple[str, str]) -> PipelineKeySource:
            return pipeline

    try:
        net = DevNetwork(
            directory,
            ["kme-a", "kme-b"],
            [("kme-a", "kme-b")],
            {"sae-a": "kme-a", "sae-b": "kme-b"},
            ports={"kme-a": port_a, "kme-b": port_b},
            store_url=store_url,
            rate_bps=rate,
            initial_keys=100 if feed == "random" else 0,
            source=source,
            run_feeders=feed != "none",
            wrap=not no_wrap,
        )
    except SQLAlchemyError as exc:  # a store URL that parses but cannot be opened
        url = asked[-1] if asked else str(directory)
        raise store_error(labels.get(url, "store"), url, exc) from None
    try:
        if key_file is not None:
            link = [net.stores["kme-a"]["kme-b"], net.stores["kme-b"]["kme-a"]]
            import_key_file(link, key_file, owners=("kme-a", "kme-b"))
        net.start()
        freeze_startup_objects()
        info = {
            "kme_a_url": net.url("kme-a"),
            "kme_b_url": net.url("kme-b"),
            "ca_cert": str(net.pki.ca_cert),
            **{
                sae.replace("-", "_"): {"sae_id": sae, "cert": str(c), "key": str(k)}
                for sae, (c, k) in net.pki.saes.items()
            },
        }
        if as_json:
            _announce(info)
        else:
            _announce(f"kme-a {info['kme_a_url']}  kme-b {info['kme_b_url']}  (Ctrl-C to stop)")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        net.stop()
