"""``qkdtwin kms``: ETSI GS QKD 014 key management entities on the command line.

Commands:

* ``kms pki init DIR [--kme ID]... [--sae ID]... [--operator ID]... [--json]`` — development
  CA, KME (server), SAE (client) and operator (client of ``GET /kme/v1/links``) certificates
  in DIR.
* ``kms serve --config KME.yaml`` — one KME over HTTPS with mutual TLS (format in
  :class:`ServeConfig`).
* ``kms status|get-keys|get-keys-with-ids`` — an ETSI 014 client, authenticated by
  ``--cert/--key`` and trusting ``--ca``; prints one JSON object.
* ``kms dev-pair DIR [--port-a P] [--port-b P] [--db URL] [--json]`` — a fresh PKI in DIR and
  two KMEs on loopback (``sae-a`` behind ``kme-a``, ``sae-b`` behind ``kme-b``) fed by a
  simulated decoy-BB84 link; runs until interrupted.

Bad input and KME refusals raise :class:`~qkdtwin.errors.QkdTwinError`;
:func:`qkdtwin.cli.main` turns them into one stderr line and exit status 2.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, ValidationError

from qkdtwin._cli_common import JsonOpt, emit_json
from qkdtwin.errors import ConfigError

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
        kek_file: null                # optional file holding a 16/24/32-byte KEK
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
    port: int = 8443
    db: str = "sqlite:///kme.db"
    cert: Path
    key: Path
    ca: Path
    kek_file: Path | None = None
    ttl_s: float | None = None
    kme: dict[str, Any]
    network: dict[str, Any] | None = None
    link_dbs: dict[str, str] = {}
    relayed_db: str | None = None


def _load_serve_config(path: Path) -> ServeConfig:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field="config") from exc
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {loc}: {first['msg']}", field=loc) from exc


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
    }
    if as_json:
        emit_json(out)
    else:
        typer.echo(
            f"CA: {pki.ca_cert}; KMEs: {', '.join(pki.kmes)}; SAEs: {', '.join(pki.saes)}; "
            f"operators: {', '.join(pki.operators)}"
        )


@kms_app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", help="KME YAML file.")],
) -> None:
    """Run one KME over HTTPS with mutual TLS until interrupted."""
    from qkdtwin.kms import KeyStore, KmeConfig, create_app
    from qkdtwin.kms.tls import make_server

    cfg = _load_serve_config(config)
    try:
        kme = KmeConfig.model_validate(cfg.kme)
    except ValidationError as exc:
        raise ConfigError(f"{config}: kme: {exc.errors()[0]['msg']}", field="kme") from exc
    kek = cfg.kek_file.read_bytes() if cfg.kek_file is not None else None

    def open_store(url: str) -> KeyStore:
        return KeyStore(url, kek=kek, max_key_count=kme.max_key_count, ttl_s=cfg.ttl_s)

    store = open_store(cfg.db)
    stores = [store]
    node = None
    if cfg.network is not None:
        from qkdtwin.kms.peering import KmeNetwork, KmeNode, PeerClient

        try:
            network = KmeNetwork.model_validate(cfg.network)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{config}: network.{loc}: {first['msg']}", field="network") from exc
        missing = set(network.neighbours(kme.kme_id)) - set(cfg.link_dbs)
        if missing:
            raise ConfigError(
                f"{config}: link_dbs lacks the link pool of neighbour(s) {sorted(missing)}",
                field="link_dbs",
            )
        links = {peer: open_store(url) for peer, url in cfg.link_dbs.items()}
        relayed = open_store(cfg.relayed_db) if cfg.relayed_db else None
        stores += [*links.values(), *([relayed] if relayed else [])]
        node = KmeNode(
            kme.kme_id,
            network,
            links=links,
            relayed=relayed,
            local=store,
            peers=PeerClient(cfg.cert, cfg.key, cfg.ca),
        )
    server = make_server(
        create_app(kme, None if node else store, node=node),
        host=cfg.host,
        port=cfg.port,
        certfile=cfg.cert,
        keyfile=cfg.key,
        ca_certs=cfg.ca,
    )
    try:
        server.run()
    finally:
        if node is not None:
            node.peers.close()
        for st in stores:
            st.close()


CertOpt = Annotated[Path, typer.Option("--cert", help="SAE certificate (PEM).")]
KeyOpt = Annotated[Path, typer.Option("--key", help="SAE private key (PEM).")]
CaOpt = Annotated[Path, typer.Option("--ca", help="CA that signed the KME (PEM).")]
UrlOpt = Annotated[str, typer.Option("--kme", help="KME base URL, https://host:port.")]


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
    from qkdtwin.kms.client import KmeClient

    with KmeClient(kme, cert, key, ca) as c:
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
    from qkdtwin.kms.client import KmeClient

    with KmeClient(kme, cert, key, ca) as c:
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
    from qkdtwin.kms.client import KmeClient

    with KmeClient(kme, cert, key, ca) as c:
        emit_json(_keys_json(c.get_keys_with_ids(master_sae_id, key_ids)))


@kms_app.command("import-keys")
def import_keys(
    key_file: Annotated[
        Path, typer.Argument(help="'KEY_ID HEX' lines (link simulate --keys-out).")
    ],
    db: Annotated[
        list[str], typer.Option("--db", help="Store URL; repeat for both ends of the link.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Import keys from a device key file into one or more KME stores."""
    from qkdtwin.kms import KeyStore
    from qkdtwin.kms.feeder import import_key_file

    stores = [KeyStore(u) for u in db]
    try:
        added = import_key_file(stores, key_file)
    finally:
        for st in stores:
            st.close()
    if as_json:
        emit_json({"imported": added})
    else:
        typer.echo(f"imported {added} keys")


def _per_kme_url(url: str, kme: str) -> str:
    """Derive one KME's own store from a single ``--db`` URL.

    PostgreSQL: the schema ``qkdtwin_<kme>`` of that database (created if missing), via the
    connection's ``search_path``; SQLite: the file ``<stem>-<kme>.db`` beside the given one.

    Raises
    ------
    ConfigError
        For another kind of URL.
    """
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"--db: not a database URL: {url!r}", field="db") from exc
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "kme.db")
        suffix = path.suffix or ".db"
        return f"sqlite:///{path.with_name(f'{path.stem}-{kme}{suffix}')}"
    if parsed.get_backend_name() == "postgresql":
        schema = "qkdtwin_" + kme.replace("-", "_")
        driver = parsed.set(drivername="postgresql+psycopg")
        try:
            engine = sa.create_engine(driver)
            with engine.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            engine.dispose()
        except SQLAlchemyError as exc:
            raise ConfigError(f"--db: cannot prepare schema {schema}: {exc}", field="db") from exc
        query = dict(parsed.query)
        query["options"] = f"-csearch_path={schema}"
        return driver.set(query=query).render_as_string(hide_password=False)
    raise ConfigError(f"--db must be sqlite:/// or postgresql://, got {url!r}", field="db")


@kms_app.command("dev-pair")
def dev_pair(
    directory: Annotated[Path, typer.Argument(help="Directory for the fresh PKI and store.")],
    port_a: Annotated[int, typer.Option("--port-a", help="Port of kme-a (0: any).")] = 0,
    port_b: Annotated[int, typer.Option("--port-b", help="Port of kme-b (0: any).")] = 0,
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
            help="Key material: random (CSPRNG at the analytic rate) or pipeline (link engine"
            " + post-processing, at the measured finite-key rate).",
        ),
    ] = "random",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pipeline feeder.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Two KMEs on loopback joined by a simulated decoy-BB84 link, until interrupted.

    Each KME has its own store (``kme-a.db`` and ``kme-b.db`` in DIR, or
    ``--db``/``--db-b``); the feeder pushes the same keys into both, each end owning half of
    them, and each ``enc_keys`` reservation is mirrored at the peer KME over HTTPS
    (``POST /kme/v1/reservations``, see docs/kms.md).
    """
    from qkdtwin.kms.devnet import DevNetwork
    from qkdtwin.kms.feeder import PipelineKeySource, import_key_file, link_rate_bps

    if db is None and db_b is not None:
        raise ConfigError("--db-b needs --db (the store of kme-a)", field="db_b")
    if db is not None and db_b is None:
        db, db_b = _per_kme_url(db, "kme-a"), _per_kme_url(db, "kme-b")
    if feed not in ("random", "pipeline"):
        raise ConfigError(f"--feed must be random or pipeline, got {feed!r}", field="feed")
    urls = {("kme-a", "kme-b"): db, ("kme-b", "kme-a"): db_b}

    def store_url(kme: str, name: str) -> str:
        url = urls.get((kme, name))
        file = f"{kme}.db" if (kme, name) in urls else f"{kme}-{name}.db"
        return url or f"sqlite:///{directory / file}"

    rate = link_rate_bps("decoy-bb84", distance_km)
    source = None
    if feed == "pipeline":
        pipeline = PipelineKeySource("decoy-bb84", distance_km, "gys", seed=seed)
        pipeline.run_block()  # measure the block's secret key rate before serving
        rate = pipeline.rate_bps or rate

        def source(_link: tuple[str, str]) -> PipelineKeySource:
            return pipeline

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
    )
    try:
        if key_file is not None:
            link = [net.stores["kme-a"]["kme-b"], net.stores["kme-b"]["kme-a"]]
            import_key_file(link, key_file, owners=("kme-a", "kme-b"))
        net.start()
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
            emit_json(info)
        else:
            typer.echo(f"kme-a {info['kme_a_url']}  kme-b {info['kme_b_url']}  (Ctrl-C to stop)")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        net.stop()
