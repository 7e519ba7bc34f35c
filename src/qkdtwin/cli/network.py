"""``qkdtwin network`` and ``qkdtwin reproduce``: the key-network twin on the command line.

Commands:

* ``network run SCENARIO.yaml [--json]`` — simulate a scenario file (format in
  :mod:`qkdtwin.network.scenario`); JSON keys ``services, successes, success_rate, pools,
  elapsed_s, events_per_s`` and more.
* ``network compare-architectures`` — grows the centralized, distributed, hierarchical and
  hybrid families until the success rate falls below a target; largest size served and key
  cost per device.
* ``network sweep SWEEP.yaml --out CSV [--workers N] [--scheduler tcp://HOST:PORT]`` — a
  resumable grid of scenario runs on local processes or a Dask cluster.
* ``reproduce fig4|fig5 [--out DIR] [--seeds N] [--json]`` — the seed paper's Figures 4 and 5
  for every policy side by side: CSV and PNG with 95 % confidence intervals over seeds.

Bad input raises :class:`~qkdtwin.errors.ConfigError`; :func:`qkdtwin.cli.main` turns it into
one stderr line and exit status 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from qkdtwin.cli.common import JsonOpt, emit_json

__all__ = ["network_app", "reproduce_app"]

network_app = typer.Typer(
    help="Key network twin: key pools, trusted relays, allocation policies.",
    no_args_is_help=True,
)
reproduce_app = typer.Typer(
    help="Reproduce the seed paper's figures (success rate vs load).", no_args_is_help=True
)


@network_app.command("run")
def network_run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    policy: Annotated[
        str | None, typer.Option("--policy", help="Override the scenario's policy.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the seed.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a scenario file exactly (discrete events) and report success and key use."""
    from qkdtwin.network.scenario import load_scenario, run_scenario

    sc = load_scenario(scenario)
    if policy is not None or seed is not None:
        data = sc.model_dump()
        if policy is not None:
            data["policy"] = policy
        if seed is not None:
            data["seed"] = seed
        sc = load_scenario(data)
    res = run_scenario(sc)
    out = res.to_dict() | {"seed": sc.seed}
    if as_json:
        emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"policy {res.policy}: {res.successes}/{res.services} services served "
        f"(success rate {res.success_rate:.4f}) over {res.duration:.6g} time units; "
        f"{out['events_per_s'] or 0:.3g} events/s"
    )
    table = Table("pool", "hops", "requests", "success", "generated", "dropped", "final")
    for p in res.pools:
        table.add_row(
            f"{p.src}-{p.dst}",
            str(p.hops),
            str(p.requests),
            f"{p.success_rate:.4f}",
            f"{p.generated:.6g}",
            f"{p.dropped:.6g}",
            f"{p.final_level:.6g}",
        )
    console.print(table)


def _reproduce(figure: str, out: Path | None, seeds: int, policies: str, as_json: bool) -> None:
    from qkdtwin.network.policies import POLICIES, canonical_policy
    from qkdtwin.network.reproduce import reproduce_figure, write_figure

    names = (
        list(POLICIES)
        if policies.strip().lower() == "all"
        else [canonical_policy(p) for p in policies.split(",") if p.strip()]
    )
    start = time.perf_counter()
    if as_json:
        points = reproduce_figure(figure, seeds=seeds, policies=names)
    else:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"reproducing {figure}", total=None)
            points = reproduce_figure(
                figure,
                seeds=seeds,
                policies=names,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    elapsed = time.perf_counter() - start
    files: dict[str, str] = {}
    if out is not None:
        files = write_figure(points, out, figure)
    at_max = [p.row() for p in points if p.load == max(q.load for q in points)]
    result: dict[str, Any] = {
        "figure": figure,
        "seeds": seeds,
        "policies": names,
        "elapsed_s": elapsed,
        "files": files,
        "at_max_load": at_max,
        "points": [p.row() for p in points],
    }
    if as_json:
        emit_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    param = points[0].param
    values = list(dict.fromkeys(p.value for p in points))
    table = Table(
        param,
        *names,
        title=f"{figure}: success rate at load {at_max[0]['load']:g} (mean over {seeds} seeds)",
    )
    for val in values:
        table.add_row(
            f"{val:g}",
            *[
                f"{r['success_rate']:.4f}"
                for n in names
                for r in at_max
                if r["value"] == val and r["policy"] == n
            ],
        )
    Console().print(table)
    if files:
        typer.echo(f"wrote {files['csv']} and {files['png']} in {elapsed:.1f} s")


OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for CSV and PNG.")]
SeedsOpt = Annotated[int, typer.Option("--seeds", help="Independent runs per point.")]
PoliciesOpt = Annotated[str, typer.Option("--policies", help="Comma list or 'all'.")]


@reproduce_app.command("fig4")
def reproduce_fig4(
    out: OutOpt = None,
    seeds: SeedsOpt = 10,
    policies: PoliciesOpt = "all",
    as_json: JsonOpt = False,
) -> None:
    """Figure 4: success rate vs load for C = 200..1000 (V = 2, X = 10)."""
    _reproduce("fig4", out, seeds, policies, as_json)


@reproduce_app.command("fig5")
def reproduce_fig5(
    out: OutOpt = None,
    seeds: SeedsOpt = 10,
    policies: PoliciesOpt = "all",
    as_json: JsonOpt = False,
) -> None:
    """Figure 5: success rate vs load for V = 1..6 (C = 200, X = 10)."""
    _reproduce("fig5", out, seeds, policies, as_json)


@network_app.command("compare-architectures")
def network_compare_architectures(
    target: Annotated[
        float, typer.Option("--target", help="Success rate to count as served.")
    ] = 0.99,
    start: Annotated[int, typer.Option("--start", help="First number of devices.")] = 100,
    max_devices: Annotated[
        int, typer.Option("--max-devices", help="Stop doubling at this many devices.")
    ] = 25_600,
    node_rate: Annotated[
        float, typer.Option("--node-rate", help="Key budget of each edge QKD node (keys/time).")
    ] = 100.0,
    core_rate: Annotated[
        float, typer.Option("--core-rate", help="Key rate of each core link (keys/time).")
    ] = 100.0,
    fanout: Annotated[int, typer.Option("--fanout", help="Devices per edge QKD node.")] = 100,
    service_rate: Annotated[
        float, typer.Option("--service-rate", help="Services per device and time unit.")
    ] = 0.01,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    traffic: Annotated[
        str,
        typer.Option(
            "--traffic",
            help="uniform (random device pairs), local (pairs within an edge node's site) or"
            " central (every device to one server).",
        ),
    ] = "uniform",
    as_json: JsonOpt = False,
) -> None:
    """Grow each architecture until it no longer serves its devices; report the largest size.

    Every row gives the hardware it took (QKD links, modules, fibre-km), and the result is
    re-read at equal module count and at equal fibre-km.
    """
    from qkdtwin.network.architectures import compare_architectures

    res = compare_architectures(
        traffic=traffic,
        target=target,
        start=start,
        max_devices=max_devices,
        node_rate=node_rate,
        core_rate=core_rate,
        fanout=fanout,
        service_rate=service_rate,
        seed=seed,
    )
    if as_json:
        emit_json(res)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "architecture",
        "devices",
        "QKD nodes",
        "links",
        "modules",
        "fibre-km",
        "success",
        "hops",
        "key cost/device",
        title=f"success rate and key cost (keys per device per time unit), target {target:g},"
        f" {res['traffic']} traffic",
    )
    for r in res["rows"]:
        table.add_row(
            r["architecture"],
            str(r["devices"]),
            str(r["qkd_nodes"]),
            str(r["links"]),
            str(r["modules"]),
            f"{r['fiber_km']:,.0f}",
            f"{r['success_rate']:.4f}",
            f"{r['mean_hops']:.2f}",
            f"{r['key_cost_per_device']:.4g}",
        )
    console = Console()
    console.print(table)
    for arch, n in res["served"].items():
        more = " (still served at --max-devices)" if res["capped"][arch] else ""
        console.print(f"{arch}: serves {n} devices at success >= {target:g}{more}")
    budgets = ((res["equal_modules"], "QKD modules"), (res["equal_fiber_km"], "fibre-km"))
    for within, what in budgets:
        archs = list(res["served"])
        t = Table(
            f"{what} budget",
            *archs,
            title=f"devices served at equal hardware ({what}; within --max-devices)",
        )
        for budget, best in within.items():
            t.add_row(budget, *[str(best.get(a, 0)) for a in archs])
        console.print(t)


@network_app.command("sweep")
def network_sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML file.")],
    out: Annotated[Path, typer.Option("--out", help="Results CSV (appended, resumable).")],
    workers: Annotated[int, typer.Option("--workers", help="Local worker processes.")] = 1,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Dask scheduler, tcp://HOST:PORT.")
    ] = None,
    scheduler_timeout: Annotated[
        float,
        typer.Option("--scheduler-timeout", help="Seconds to wait for the Dask scheduler."),
    ] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Run every grid point x seed of a sweep; points already in --out are skipped."""
    from qkdtwin.network.sweep import finished_points, load_sweep, run_sweep

    sweep = load_sweep(sweep_file)
    finished_points(sweep, out)  # a results file of another sweep: one line, before anything
    if as_json:
        summary = run_sweep(
            sweep, out, workers=workers, scheduler=scheduler, scheduler_timeout=scheduler_timeout
        )
    else:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("sweep", total=None)
            summary = run_sweep(
                sweep,
                out,
                workers=workers,
                scheduler=scheduler,
                scheduler_timeout=scheduler_timeout,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    summary_out: dict[str, Any] = dict(summary) | {"out": str(out)}
    if as_json:
        emit_json(summary_out)
        return
    typer.echo(
        f"{summary['computed']} points computed, {summary['skipped']} already in {out} "
        f"({summary['points']} in all)"
    )
