"""``qkdtwin kms``: ETSI GS QKD 014 key management entities on the command line.

Commands:

* ``kms pki init DIR [--kme ID]... [--sae ID]... [--json]`` — development CA, KME (server)
  and SAE (client) certificates in DIR.
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
    as_json: JsonOpt = False,
) -> None:
    """Create a development CA and certificates for KMEs and SAEs (SAE ID in CN and SAN URI)."""
    from qkdtwin.kms.tls import init_pki

    pki = init_pki(directory, kme_ids=kme or ["kme-a", "kme-b"], sae_ids=sae or ["sae-a", "sae-b"])
    out = {
        "ca_cert": str(pki.ca_cert),
        "kmes": {k: {"cert": str(c), "key": str(p)} for k, (c, p) in pki.kmes.items()},
        "saes": {k: {"cert": str(c), "key": str(p)} for k, (c, p) in pki.saes.items()},
    }
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"CA: {pki.ca_cert}; KMEs: {', '.join(pki.kmes)}; SAEs: {', '.join(pki.saes)}")


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
    store = KeyStore(cfg.db, kek=kek, max_key_count=kme.max_key_count, ttl_s=cfg.ttl_s)
    server = make_server(
        create_app(kme, store),
        host=cfg.host,
        port=cfg.port,
        certfile=cfg.cert,
        keyfile=cfg.key,
        ca_certs=cfg.ca,
    )
    try:
        server.run()
    finally:
        store.close()


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


def _mirror(peer: Any) -> Any:
    """Return a ``sync`` hook that reserves the same key_IDs in the peer KME's store."""

    def sync(master: str, slaves: list[str], key_ids: list[str], size_bits: int) -> None:
        peer.reserve(master, slaves, len(key_ids), size_bits, key_ids=key_ids)

    return sync


@kms_app.command("dev-pair")
def dev_pair(
    directory: Annotated[Path, typer.Argument(help="Directory for the fresh PKI and store.")],
    port_a: Annotated[int, typer.Option("--port-a", help="Port of kme-a (0: any).")] = 0,
    port_b: Annotated[int, typer.Option("--port-b", help="Port of kme-b (0: any).")] = 0,
    db: Annotated[
        str | None, typer.Option("--db", help="Store URL of kme-a (default: SQLite in DIR).")
    ] = None,
    db_b: Annotated[
        str | None,
        typer.Option("--db-b", help="Store URL of kme-b (default: SQLite in DIR, or --db)."),
    ] = None,
    distance_km: Annotated[float, typer.Option("--distance-km", help="Link length.")] = 20.0,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--import-keys", help="'KEY_ID HEX' file (link simulate --keys-out) to load first."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Two KMEs on loopback joined by a simulated decoy-BB84 link, until interrupted.

    Each KME has its own store (``kme-a.db``, ``kme-b.db`` in DIR, or ``--db``/``--db-b``);
    the feeder pushes the same keys into both, and each ``enc_keys`` reservation is mirrored
    in the peer's store (see docs/kms.md). ``--db`` alone puts both KMEs on one store.
    """
    from qkdtwin.kms import KeyStore, KmeConfig, create_app
    from qkdtwin.kms.feeder import LinkFeeder, link_rate_bps
    from qkdtwin.kms.tls import RunningServer, init_pki, make_server

    pki = init_pki(directory, kme_ids=["kme-a", "kme-b"], sae_ids=["sae-a", "sae-b"])
    url_a = db or f"sqlite:///{directory / 'kme-a.db'}"
    url_b = db_b or db or f"sqlite:///{directory / 'kme-b.db'}"
    store_a = KeyStore(url_a)
    store_b = store_a if url_b == url_a else KeyStore(url_b)
    stores = {"kme-a": store_a, "kme-b": store_b}
    feeder = LinkFeeder(
        list(dict.fromkeys(stores.values())), link_rate_bps("decoy-bb84", distance_km)
    )
    if key_file is not None:
        from qkdtwin.kms.feeder import import_key_file

        import_key_file(feeder.stores, key_file)
    feeder.push(100)  # a starting pool so the pair is usable at once
    saes = {"sae-a": "kme-a", "sae-b": "kme-b"}
    servers: list[RunningServer] = []
    try:
        for kme_id, port in (("kme-a", port_a), ("kme-b", port_b)):
            cert, key = pki.kmes[kme_id]
            peer = stores["kme-b" if kme_id == "kme-a" else "kme-a"]
            app = create_app(
                KmeConfig(kme_id=kme_id, saes=saes),
                stores[kme_id],
                sync=None if peer is stores[kme_id] else _mirror(peer),
            )
            srv = make_server(
                app, host="127.0.0.1", port=port, certfile=cert, keyfile=key, ca_certs=pki.ca_cert
            )
            servers.append(RunningServer(srv).start())
        feeder.start()
        info = {
            "kme_a_url": f"https://127.0.0.1:{servers[0].port}",
            "kme_b_url": f"https://127.0.0.1:{servers[1].port}",
            "ca_cert": str(pki.ca_cert),
            **{
                sae.replace("-", "_"): {"sae_id": sae, "cert": str(c), "key": str(k)}
                for sae, (c, k) in pki.saes.items()
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
        feeder.stop()
        for s in servers:
            s.stop()
        for st in dict.fromkeys(stores.values()):
            st.close()
