"""``qkdtwin twin``: the live digital twin service, its dashboard, and commands that drive it.

Commands:

* ``twin serve [--scenario FILE] [--host H] [--port P] [--speed X] [--data-dir DIR]
  [--db URL] [--duration S] [--no-telemetry]`` — run the twin and its dashboard; prints the
  URL; serves until Ctrl-C (or for ``--duration`` seconds).
* ``twin attack LINK --url URL [--type intercept-resend|pns] [--fraction F] [--json]`` and
  ``twin clear LINK --url URL [--json]`` — inject or clear an attack on a running twin.
* ``twin what-if [--set V=4 --set C=400 ...] [--policy NAME] [--url URL | --scenario FILE]
  [--json]`` — predict success rates on the running twin's current network (or on a scenario).
* ``twin state --url URL [--json]`` — links, pools and alarms of a running twin.
* ``twin serve --attach ATTACH.yaml [--record FILE]`` / ``twin serve --replay FILE`` — the twin
  of a network it does not own (state only from the network's telemetry and KMEs), live or
  from a recording;
* ``twin attach-demo [--speed S] [--serve]`` — a plant process, an attached twin, a PNS attack
  and a fibre tap injected on the plant, each detected from the statistics alone.
* ``twin demo [--scenario FILE] [--port P] [--speed X] [--link L] [--fraction F] [--serve]
  [--json]`` — the bounded tour: start, inject an attack, show the alarm and the rerouting, run
  a what-if, clear, print the measured times, stop (``--serve``: keep serving afterwards).

Bad input raises :class:`~qkdtwin.errors.ConfigError` (also for an HTTP 400/422 answer of the
service, with the server's message); :func:`qkdtwin.cli.main` prints one line, exit status 2.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from qkdtwin.cli.common import JsonOpt, check_fraction, emit_json, request_json
from qkdtwin.errors import ConfigError

__all__ = ["twin_app"]

twin_app = typer.Typer(
    help="The live digital twin: service, dashboard, attacks, what-if.", no_args_is_help=True
)

ScenarioOpt = Annotated[
    Path | None,
    typer.Option("--scenario", help="Twin scenario YAML (default: the seed topology)."),
]
UrlOpt = Annotated[str, typer.Option("--url", help="Base URL of a running twin service.")]
SpeedOpt = Annotated[
    float | None, typer.Option("--speed", help="Simulated seconds per wall-clock second.")
]


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    return request_json(method, url, body, what="the twin")


def _make_twin(
    scenario: Path | None,
    data_dir: Path | None,
    db: str | None,
    speed: float | None,
    telemetry: bool,
) -> Any:
    from qkdtwin.twin import Twin

    ddir = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="qkdtwin-twin-"))
    return Twin(scenario, data_dir=ddir, db_url=db, speed=speed, telemetry=telemetry)


@twin_app.command("serve")
def twin_serve(
    scenario: ScenarioOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8000,
    speed: SpeedOpt = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="KME stores and history database; a restart with the same directory keeps "
            "the recent past.",
        ),
    ] = Path("out/twin"),
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="History/alarm database URL (sqlite:///... or postgresql://...)."
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many wall seconds.")
    ] = None,
    telemetry: Annotated[
        bool, typer.Option("--telemetry/--no-telemetry", help="Run the IIoT telemetry.")
    ] = True,
    attach: Annotated[
        Path | None,
        typer.Option(
            "--attach",
            help="Attach to a network: its attach file (plant serve writes one). The twin's "
            "state then comes only from the network's telemetry and KMEs.",
        ),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option("--record", help="With --attach: record every input (JSON Lines)."),
    ] = None,
    replay_file: Annotated[
        Path | None,
        typer.Option("--replay", help="Replay a recording (made with --record) into the twin."),
    ] = None,
    arl_days: Annotated[
        float,
        typer.Option("--arl-days", help="False-alarm average run length per link, days."),
    ] = 30.0,
    window_s: Annotated[
        float, typer.Option("--window-s", help="Estimation window, s of network time.")
    ] = 60.0,
    actuate: Annotated[
        str,
        typer.Option(
            "--actuate",
            help="Closed loop on the KMEs (attach mode): off (default: plan and log the"
            " actions only) or on (disable an alarmed link at both KMEs, discard its keys"
            " since the change point, re-enable it on recovery). A replay never acts.",
        ),
    ] = "off",
    as_json: JsonOpt = False,
) -> None:
    """Run the live twin and its dashboard; print the dashboard URL.

    Without --attach or --replay the twin simulates its own links (teaching, what-if).
    """
    from qkdtwin.ops import freeze_startup_objects
    from qkdtwin.twin.runner import ServiceThread

    if not (0 <= port <= 65535):
        raise ConfigError(f"port must be in [0, 65535], got {port}", field="port", value=port)
    if duration is not None and duration <= 0:
        raise ConfigError(f"duration must be > 0, got {duration}", field="duration")
    if not (0.0 < arl_days <= 1e6):
        raise ConfigError(f"arl-days must be in (0, 1e6], got {arl_days}", field="arl_days")
    if not (1.0 <= window_s <= 86_400.0):
        raise ConfigError(f"window-s must be in [1, 86400], got {window_s}", field="window_s")
    if record is not None and attach is None:
        raise ConfigError("--record needs --attach", field="record")
    if actuate not in ("off", "on"):
        raise ConfigError(f"--actuate must be off or on, got {actuate!r}", field="actuate")
    if actuate == "on" and attach is None:
        raise ConfigError("--actuate on needs --attach (a replay never acts)", field="actuate")
    if attach is not None or replay_file is not None:
        if replay_file is not None and record is not None:
            raise ConfigError("--record and --replay exclude each other", field="record")
        _serve_attached(
            attach,
            replay_file,
            record,
            host,
            port,
            duration,
            speed,
            {"arl_days": arl_days, "window_s": window_s},
            actuate,
            as_json,
        )
        return
    twin = _make_twin(scenario, data_dir, db, speed, telemetry)
    svc = ServiceThread(twin, host, port)
    try:
        svc.start()
        # the twin's own model (links, pools, engines: ~3 million objects at 1,000 links) is
        # long-lived; keep full collections from walking it at every tick
        freeze_startup_objects()
        typer.echo(f"qkdtwin twin: dashboard at {svc.url}/  (API docs {svc.url}/docs)", err=False)
        typer.echo(
            f"  scenario {twin.scenario.source}, {len(twin.links)} links, "
            f"speed x{twin.cfg.speed:g}; Ctrl-C stops"
            if duration is None
            else f"  serving for {duration:g} s",
        )
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        svc.stop()
        twin.close()


def _serve_attached(
    attach: Path | None,
    replay_file: Path | None,
    record: Path | None,
    host: str,
    port: int,
    duration: float | None,
    speed: float | None,
    opts: dict[str, Any],
    actuate: str,
    as_json: bool,
) -> None:
    """``twin serve --attach`` / ``--replay``: an attached twin, live or from a recording."""
    from qkdtwin.kms.tls import serve_in_thread
    from qkdtwin.ops import freeze_startup_objects
    from qkdtwin.twin.attached_runner import AttachedRunner, replay
    from qkdtwin.twin.attached_service import create_attached_app

    deadline = None if duration is None else time.monotonic() + duration
    if replay_file is not None:
        twin = replay(replay_file, attach=attach, speed=speed, **opts)
        st = twin.state()
        if as_json:
            emit_json(
                {
                    "replayed": str(replay_file),
                    "t": st.t,
                    "alarms": [
                        {"link": a.link, "kind": a.kind, "raised_at": a.raised_at}
                        for a in reversed(st.alarms)
                    ],
                    "links": [
                        {"id": lk.id, "status": lk.status.value, "loss_db": lk.estimate.loss_db}
                        for lk in st.links
                    ],
                }
            )
        else:
            typer.echo(f"replayed {replay_file}: {len(st.alarms)} alarms")
            for a in reversed(st.alarms):
                typer.echo(f"  {a.link}: {a.kind} raised at {a.raised_at:.1f}")
        if duration is None and as_json:
            return
        http = serve_in_thread(create_attached_app(twin), host, port)
        typer.echo(f"  dashboard of the replayed state at http://{host}:{http.port}/")
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            http.stop()
        return
    assert attach is not None
    runner = AttachedRunner(attach, host=host, port=port, record=record, actuate=actuate, **opts)
    try:
        runner.start()
        freeze_startup_objects()
        n = len(runner.attach.links)
        if as_json:
            emit_json({"url": runner.url, "links": n, "kmes": len(runner.attach.kmes)})
            sys.stdout.flush()
        else:
            typer.echo(
                f"qkdtwin twin (attached to {runner.attach.name}): dashboard at {runner.url}/"
            )
            typer.echo(
                f"  {n} links from {runner.attach.broker}, {len(runner.attach.kmes)} KMEs polled"
                + (f", recording to {record}" if record else "")
            )
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()


@twin_app.command("attack")
def twin_attack(
    link: Annotated[str, typer.Argument(help="Link id, 'A-B' in either order.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    kind: Annotated[
        str, typer.Option("--type", help="intercept-resend or pns.")
    ] = "intercept-resend",
    fraction: Annotated[
        float, typer.Option("--fraction", help="Fraction of pulses attacked, in [0, 1].")
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Inject an attack on a link of a running twin."""
    check_fraction(fraction)
    d = _request(
        "POST",
        f"{url.rstrip('/')}/api/links/{link}/attack",
        {"type": kind, "fraction": fraction},
    )
    if as_json:
        emit_json(d)
    else:
        q = d.get("alarm_qber")
        typer.echo(
            f"attack {d['attack']} on {d['id']}: QBER {q:.2%}, status {d['status']}"
            if q is not None
            else f"attack {d['attack']} on {d['id']}: status {d['status']}"
        )


@twin_app.command("clear")
def twin_clear(
    link: Annotated[str, typer.Argument(help="Link id, 'A-B' in either order.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    as_json: JsonOpt = False,
) -> None:
    """Clear the attack on a link of a running twin."""
    d = _request("POST", f"{url.rstrip('/')}/api/links/{link}/clear", {})
    if as_json:
        emit_json(d)
    else:
        typer.echo(f"cleared {d['id']}: status {d['status']}")


def _print_what_if(d: dict[str, Any]) -> None:
    p = d["params"]
    live = d["live"]["success_rate"]
    pred = d["success_rate"]
    typer.echo(
        f"what-if policy={p['policy']} C={p['C']:g} X={p['X']:g}"
        + (f" V={p['V']:g}" if p["V"] is not None else "")
        + f" load={p['load']:g}/s duration={p['duration']:g} s"
        + (f" links down: {', '.join(p['links_down'])}" if p["links_down"] else "")
    )

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    start = "present levels" if p.get("start") == "present" else "initial fill"
    window = d["live"].get("window")
    typer.echo(f"  predicted over the next {p['duration']:g} s from the {start}: {fmt(pred)}")
    if window is not None:
        typer.echo(
            f"  live over the last {window['seconds']:g} s (of {window['of_horizon_s']:g}): "
            f"{fmt(window['success_rate'])}   since start: {fmt(live)}"
        )
    else:
        typer.echo(f"  live: {fmt(live)}")
    typer.echo(f"  {'pair':<16} {'predicted':>10} {'live (since start)':>18}")
    for row in d["pools"]:
        typer.echo(
            f"  {row['id']:<16} {fmt(row['success_rate']):>10} {fmt(row['live_success_rate']):>18}"
        )
    if d["unreachable"]:
        typer.echo(f"  unreachable: {', '.join(d['unreachable'])}")


@twin_app.command("what-if")
def twin_what_if(
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME=VALUE; names V, C, X, load, duration (repeatable)."),
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Policy to predict with (default: live).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the prediction.")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Running twin (default: run on --scenario).")
    ] = None,
    scenario: ScenarioOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict success rates with changed parameters, side by side with the live ones."""
    from qkdtwin.twin.whatif import parse_sets

    parsed = parse_sets(sets or [])
    if url is not None:
        body: dict[str, Any] = {"set": parsed}
        if policy is not None:
            body["policy"] = policy
        if seed is not None:
            body["seed"] = seed
        d = _request("POST", f"{url.rstrip('/')}/api/what-if", body)
    else:
        # no running twin: the scenario's network with every link up, nothing live to compare
        from qkdtwin.twin.config import load_twin_scenario
        from qkdtwin.twin.whatif import what_if

        net = load_twin_scenario(scenario).network
        topo = net.build_topology()
        d = what_if(
            topo,
            net.build_demands(topo),
            set(),
            pool_capacity=net.pool_capacity,
            keys_per_service=net.keys_per_service,
            policy=policy or net.policy,
            duration=net.duration or 1000.0,
            seed=net.seed if seed is None else seed,
            overrides=parsed,
            initial_fill=net.initial_fill,
            generation=net.generation,
        )
        d["live"] = {"success_rate": None, "policy": net.policy}
        for row in d["pools"]:
            row["live_success_rate"] = None
    if as_json:
        emit_json(d)
    else:
        _print_what_if(d)


@twin_app.command("state")
def twin_state(url: UrlOpt = "http://127.0.0.1:8000", as_json: JsonOpt = False) -> None:
    """Links, network and alarms of a running twin."""
    d = _request("GET", f"{url.rstrip('/')}/api/state")
    if as_json:
        emit_json(d)
        return
    typer.echo(
        f"t={d['t']:g} s  success={d['network']['success_rate']}  alarms={d['active_alarms']}"
    )
    for ln in d["links"]:
        q = "-" if ln["qber"] is None else f"{ln['qber']:.2%}"
        typer.echo(
            f"  {ln['id']:<14} {ln['status']:<10} QBER {q:>7}  {ln['key_rate_bps']:9.0f} bit/s"
        )


def _value_text(value: Any) -> str:
    """Format one event field for people: 4 significant digits, lists joined."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + _fields_text(value) + "}"
    return str(value)


def _fields_text(fields: dict[str, Any]) -> str:
    """``key value, key value``; empty for no fields."""
    return ", ".join(f"{k} {_value_text(v)}" for k, v in fields.items())


@twin_app.command("demo")
def twin_demo(
    scenario: ScenarioOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8000,
    speed: SpeedOpt = 5.0,
    link: Annotated[str, typer.Option("--link", help="Link to attack.")] = "M1-M2",
    fraction: Annotated[float, typer.Option("--fraction", help="Attacked fraction.")] = 1.0,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving after the tour.")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="KME stores and history database.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the tour: start the twin, inject an attack, watch alarm and reroute, run a what-if."""
    from qkdtwin.twin.runner import ServiceThread, run_tour

    check_fraction(fraction)
    twin = _make_twin(scenario, data_dir, None, speed, True)
    svc = ServiceThread(twin, host, port)
    try:
        svc.start()
        if not as_json:
            typer.echo(f"qkdtwin twin: dashboard at {svc.url}/")
        time.sleep(3.0 * twin.cfg.tick_s / twin.cfg.speed)
        res = run_tour(svc.url, link=link, fraction=fraction)
        if as_json:
            emit_json({"url": svc.url, **res})
        else:
            a = res["alarm"]
            typer.echo(f"== attack: intercept-resend {fraction:g} on {res['link']}")
            typer.echo(f"   alarm #{a['id']}: {a['message']}")
            for ev in a["events"]:
                extra = {k: v for k, v in ev.items() if k not in ("what", "t_sim", "wall_time")}
                typer.echo(f"   t={ev['t_sim']:g} s  {ev['what']}  {_fields_text(extra)}")
            typer.echo(
                f"   event -> dashboard {res['event_to_dashboard_ms']:.1f} ms, "
                f"alarm -> reroute {res['alarm_to_reroute_ms']:.2f} ms"
            )
            typer.echo("== what-if (V=4, C=400) on the network as it is now:")
            _print_what_if(res["what_if"])
            typer.echo(f"== attack cleared; link restored in {res['restore_ms']:.1f} ms")
        if serve:
            typer.echo(f"serving at {svc.url}/ ; Ctrl-C stops")
            while True:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        svc.stop()
        twin.close()


@twin_app.command("attach-demo")
def twin_attach_demo(
    scenario: Annotated[
        Path | None,
        typer.Option("--scenario", help="Plant scenario (default: the seed topology)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Twin dashboard port (0: any).")] = 8000,
    speed: Annotated[
        float, typer.Option("--speed", help="Plant seconds per wall-clock second.")
    ] = 10.0,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Plant PKI, KME stores, attach file.")
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep the dashboard up after the tour.")
    ] = False,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Longest wait for calibration or an alarm, s.")
    ] = 180.0,
    as_json: JsonOpt = False,
    actuate: Annotated[
        str,
        typer.Option(
            "--actuate",
            help="Closed loop on the plant's KMEs: on (default in the demo) or off (log only).",
        ),
    ] = "on",
) -> None:
    """Run a plant process and an attached twin; a PNS attack and a fibre tap are detected."""
    from dataclasses import asdict

    from qkdtwin.attach_tour import run_attach_tour

    if actuate not in ("off", "on"):
        raise ConfigError(f"--actuate must be off or on, got {actuate!r}", field="actuate")

    if not (0 <= port <= 65535):
        raise ConfigError(f"port must be in [0, 65535], got {port}", field="port", value=port)
    if not (0.0 < speed <= 100.0):
        raise ConfigError(f"speed must be in (0, 100], got {speed}", field="speed")
    ddir = data_dir or Path(tempfile.mkdtemp(prefix="qkdtwin-attach-"))

    def keep(runner: Any, result: Any) -> None:
        if serve:
            typer.echo(f"serving the attached twin at {runner.url}/ ; Ctrl-C stops")
            try:
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass

    res = run_attach_tour(
        scenario=scenario,
        data_dir=ddir,
        speed=speed,
        port=port,
        timeout_s=timeout_s,
        actuate=actuate,
        keep=keep,
        log=(lambda _s: None) if as_json else typer.echo,
    )
    if as_json:
        emit_json(asdict(res))
