"""``qkdtwin plant``: run the stand-in physical network and inject events into it.

Commands:

* ``plant serve SCENARIO.yaml [--speed S] [--data-dir DIR] [--broker URL] [--mqtt-ca FILE]
  [--mqtt-cert FILE --mqtt-key FILE] [--port P] [--duration S] [--no-iot] [--json]`` — run
  the plant (modules, KMEs, IIoT devices, control endpoint); with ``--json`` it prints one
  JSON line first (``control_url``, ``mqtt_url``, ``kmes``, ``attach_file``), then nothing
  until it stops. ``--broker mqtts://[USER[:PASSWORD]@]HOST:PORT`` publishes over TLS (the
  password may be in ``QKDTWIN_MQTT_PASSWORD`` instead); the attach file carries the URL
  without the password and the TLS files;
* ``plant attack LINK --url CONTROL_URL --type intercept-resend|pns|fiber-tap|detector-blinding|
  faked-state --fraction F``, ``plant clear LINK --url``, ``plant cut LINK --url``,
  ``plant drift LINK --loss-db D --url`` — events on a running plant;
* ``plant truth --url CONTROL_URL [--json]`` — its ground truth (tests and benchmarks only).

Bad input raises :class:`~qkdtwin.errors.ConfigError`; the CLI prints one line, exit status 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from qkdtwin.cli.common import JsonOpt, check_fraction, emit_json, request_json
from qkdtwin.errors import ConfigError

__all__ = ["plant_app"]

plant_app = typer.Typer(
    help="The plant: a stand-in for the QKD-secured IIoT network an operator owns.",
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str, typer.Option("--url", help="Control URL of a running plant (plant serve prints it).")
]
LinkArg = Annotated[str, typer.Argument(help="Link id, 'A-B' in either order.")]


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    return request_json(method, url, body, what="the plant")


@plant_app.command("serve")
def plant_serve(
    scenario: Annotated[Path, typer.Argument(help="Plant scenario YAML.")],
    speed: Annotated[
        float, typer.Option("--speed", help="Plant seconds per wall-clock second.")
    ] = 1.0,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="PKI, KME stores and the attach file (default: temp)."),
    ] = None,
    broker: Annotated[
        str,
        typer.Option(
            "--broker",
            help="'embedded', mqtt://[USER[:PASSWORD]@]HOST:PORT (e.g. Mosquitto) or "
            "mqtts://... (TLS); the password may be given in QKDTWIN_MQTT_PASSWORD instead.",
        ),
    ] = "embedded",
    mqtt_ca: Annotated[
        Path | None, typer.Option("--mqtt-ca", help="mqtts: CA of the broker's certificate.")
    ] = None,
    mqtt_cert: Annotated[
        Path | None, typer.Option("--mqtt-cert", help="mqtts: client certificate (PEM).")
    ] = None,
    mqtt_key: Annotated[
        Path | None, typer.Option("--mqtt-key", help="mqtts: client key (PEM).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface of the control endpoint.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option("--port", help="Port of the control endpoint (0: any free port).")
    ] = 0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many wall seconds.")
    ] = None,
    iot: Annotated[
        bool, typer.Option("--iot/--no-iot", help="Run the IIoT gateways and devices.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Run the plant; print where its interfaces are and the twin's attach file."""
    import tempfile

    from qkdtwin.plant import Plant

    if not (0 <= port <= 65535):
        raise ConfigError(f"port must be in [0, 65535], got {port}", field="port", value=port)
    if duration is not None and duration <= 0:
        raise ConfigError(f"duration must be > 0, got {duration}", field="duration")
    plant = Plant(
        scenario,
        data_dir or Path(tempfile.mkdtemp(prefix="qkdtwin-plant-")),
        speed=speed,
        broker=broker,
        mqtt_ca=mqtt_ca,
        mqtt_cert=mqtt_cert,
        mqtt_key=mqtt_key,
        iot=iot,
        host=host,
        control_port=port,
    )
    try:
        plant.start()
        info = plant.describe()
        if as_json:
            emit_json(info)
            sys.stdout.flush()
        else:
            typer.echo(
                f"qkdtwin plant: {info['modules']} QKD modules, {len(info['kmes'])} KMEs, "
                f"speed x{speed:g}"
            )
            typer.echo(f"  control   {info['control_url']}   (events in, truth out)")
            typer.echo(f"  MQTT      {info['mqtt_url']}")
            typer.echo(f"  attach    {info['attach_file']}")
            typer.echo(f"  twin:     qkdtwin twin serve --attach {info['attach_file']}")
            typer.echo("  Ctrl-C stops" if duration is None else f"  running for {duration:g} s")
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        plant.stop()


def _print_link(d: dict[str, Any], what: str) -> None:
    att = d.get("attack")
    loss = d.get("loss_db")
    attack = "none" if not att else "{}:{:g}".format(att["type"], att["fraction"])
    loss_txt = "cut" if loss is None else f"{loss:.2f} dB"
    typer.echo(f"{what} {d['id']}: loss {loss_txt}, attack {attack}")


@plant_app.command("attack")
def plant_attack(
    link: LinkArg,
    url: UrlOpt = "http://127.0.0.1:8100",
    kind: Annotated[
        str,
        typer.Option(
            "--type", help="intercept-resend, pns, fiber-tap, detector-blinding or faked-state."
        ),
    ] = "intercept-resend",
    fraction: Annotated[
        float, typer.Option("--fraction", help="Fraction of pulses (or power) attacked, [0, 1].")
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Start an attack on a link of a running plant."""
    check_fraction(fraction)
    d = _request(
        "POST", f"{url.rstrip('/')}/links/{link}/attack", {"type": kind, "fraction": fraction}
    )
    emit_json(d) if as_json else _print_link(d, "attacked")


@plant_app.command("clear")
def plant_clear(
    link: LinkArg, url: UrlOpt = "http://127.0.0.1:8100", as_json: JsonOpt = False
) -> None:
    """End the attack on a link (and repair a cut)."""
    d = _request("POST", f"{url.rstrip('/')}/links/{link}/clear", {})
    emit_json(d) if as_json else _print_link(d, "cleared")


@plant_app.command("cut")
def plant_cut(
    link: LinkArg, url: UrlOpt = "http://127.0.0.1:8100", as_json: JsonOpt = False
) -> None:
    """Cut a link's fibre."""
    d = _request("POST", f"{url.rstrip('/')}/links/{link}/cut", {})
    emit_json(d) if as_json else _print_link(d, "cut")


@plant_app.command("drift")
def plant_drift(
    link: LinkArg,
    loss_db: Annotated[float, typer.Option("--loss-db", help="Loss step, dB (negative: repair).")],
    url: UrlOpt = "http://127.0.0.1:8100",
    as_json: JsonOpt = False,
) -> None:
    """Add a loss step to a link."""
    d = _request("POST", f"{url.rstrip('/')}/links/{link}/drift", {"loss_db": loss_db})
    emit_json(d) if as_json else _print_link(d, "drifted")


@plant_app.command("truth")
def plant_truth(url: UrlOpt = "http://127.0.0.1:8100", as_json: JsonOpt = False) -> None:
    """Print the plant's ground truth (tests and benchmarks only; the twin never reads it)."""
    d = _request("GET", f"{url.rstrip('/')}/truth")
    if as_json:
        emit_json(d)
        return
    typer.echo(f"plant time {d['t']:.0f} s")
    for lk in d["links"]:
        _print_link(lk, " ")
