"""``qkdtwin teleport``: the seed's controlled teleportation and its decoy-photon check.

Commands:

* ``run`` — teleport random two-qubit messages, optionally with channel noise or without
  the controller's result; reports the sampled fidelities and the exact expected value.
* ``eavesdrop`` — simulate the decoy check against intercept-resend (or entangle-and-measure)
  for a range of decoy counts; reports simulated, derived and the paper's probabilities.
* ``table`` — print Bob's correction for every measurement branch, derived by simulation.

Bad input raises :class:`~qkdtwin.errors.ConfigError` (or a subclass); :func:`qkdtwin.cli.main`
turns it into one stderr line and exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from qkdtwin.cli.common import JsonOpt, emit_json
from qkdtwin.config import parse_count, parse_range
from qkdtwin.errors import ConfigError

__all__ = ["teleport_app"]

teleport_app = typer.Typer(
    help="Controlled two-qubit teleportation (GHZ5 + Bell channel) and its decoy-photon check.",
    no_args_is_help=True,
)

TrialsOpt = Annotated[str, typer.Option("--trials", "-n", help="Number of trials (1e4 ok).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
PlotOpt = Annotated[
    Path | None, typer.Option("--plot", help="Write a figure (.png, .svg or .pdf).")
]
CharlieOpt = Annotated[
    str, typer.Option("--charlie-basis", help="Charlie's measurement: x (default), y or ghz.")
]


def _check_plot(plot: Path | None) -> None:
    from qkdtwin._plotting import PLOT_SUFFIXES

    if plot is not None and plot.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(
            f"plot file must end in {', '.join(PLOT_SUFFIXES)}, got {plot.name!r}",
            field="plot",
            value=str(plot),
            allowed=", ".join(PLOT_SUFFIXES),
        )


# --------------------------------------------------------------------------- run
@teleport_app.command("run")
def teleport_run(
    trials: TrialsOpt = "1000",
    noise: Annotated[
        str | None,
        typer.Option(
            "--noise",
            help="MODEL:P on each channel particle; MODEL is "
            "depolarizing, dephasing or amplitude-damping, P in [0, 1].",
        ),
    ] = None,
    no_controller: Annotated[
        bool, typer.Option("--no-controller", help="Charlie withholds his measurement result.")
    ] = False,
    charlie_basis: CharlieOpt = "x",
    seed: SeedOpt = 1,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Teleport Haar-random two-qubit messages and report Bob's fidelity."""
    from qkdtwin.teleport import expected_fidelity, parse_noise, run_trials
    from qkdtwin.teleport.controlled import CHANNEL_PARTICLES

    n = parse_count(trials, field="trials")
    model = parse_noise(noise)
    _check_plot(plot)
    controller = not no_controller
    rng = np.random.default_rng(seed)
    kwargs: dict[str, Any] = {
        "noise": model,
        "controller": controller,
        "charlie_basis": charlie_basis,
    }
    expected = expected_fidelity(**kwargs)
    if as_json or n < 5000:
        res = run_trials(n, rng, **kwargs)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("teleporting", total=n)
            res = run_trials(
                n, rng, progress=lambda done: bar.update(task, completed=done), **kwargs
            )
    out = res.to_dict() | {
        "fidelity_expected": expected,
        "noisy_particles": list(CHANNEL_PARTICLES) if model is not None else [],
        "seed": seed,
    }
    if plot is not None:
        _plot_run(res.fidelities, plot, out, model)
    if as_json:
        emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    who = "with Charlie's result" if controller else "Charlie withholds his result"
    noise_text = model.describe() if model is not None else "none"
    t = Table(title=f"controlled teleportation, {who}, noise: {noise_text}", show_header=False)
    for key in (
        "trials",
        "fidelity_mean",
        "fidelity_stderr",
        "fidelity_min",
        "fidelity_max",
        "fidelity_expected",
    ):
        val = out[key]
        t.add_row(key, f"{val:.6g}" if isinstance(val, float) else str(val))
    Console().print(t)
    if plot is not None:
        typer.echo(f"plot written to {plot}")


def _plot_run(fidelities: Any, plot: Path, out: dict[str, Any], model: Any) -> None:
    from qkdtwin.teleport import noise_sweep
    from qkdtwin.teleport.plots import plot_fidelity_run

    sweep = None
    marker = None
    if model is not None:
        grid = sorted({i / 10 for i in range(11)} | {model.strength})
        sweep = noise_sweep(
            grid, [model.name], controller=out["controller"], charlie_basis=out["charlie_basis"]
        )
        marker = (model.strength, out["fidelity_mean"], out["fidelity_stderr"], "this run (±2σ)")
    who = "with controller" if out["controller"] else "without controller"
    plot_fidelity_run(
        fidelities,
        plot,
        title=f"{out['trials']} trials, {who}",
        expected=out["fidelity_expected"],
        sweep=sweep,
        marker=marker,
    )


# --------------------------------------------------------------------------- eavesdrop
@teleport_app.command("eavesdrop")
def teleport_eavesdrop(
    decoys: Annotated[
        str, typer.Option("--decoys", help="Decoy counts START:STOP[:STEP] (inclusive).")
    ] = "1:10",
    trials: TrialsOpt = "10000",
    attack: Annotated[
        str,
        typer.Option(
            "--attack",
            help="intercept-resend[:random|z|x] or entangle-measure[:STRENGTH in [0, 1]].",
        ),
    ] = "intercept-resend",
    fraction: Annotated[
        float, typer.Option("--fraction", help="Fraction of particles Eve attacks, in [0, 1].")
    ] = 1.0,
    seed: SeedOpt = 1,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Probability that the decoy check detects Eve, against the number of decoys."""
    from qkdtwin.teleport.decoy import (
        detection_curve,
        error_probability,
        eve_guess_probability,
        parse_eve_attack,
    )

    values = parse_range(decoys, field="decoys")
    if np.any(values < 0) or np.any(values != np.round(values)):
        raise ConfigError(
            f"decoys must be whole numbers >= 0, got {decoys!r}",
            field="decoys",
            value=decoys,
            allowed="whole numbers >= 0",
        )
    n = parse_count(trials, field="trials")
    eve = parse_eve_attack(attack, fraction)
    _check_plot(plot)
    rng = np.random.default_rng(seed)
    points = [e.to_dict() for e in detection_curve([int(s) for s in values], n, rng, eve)]
    out = {
        "attack": eve.describe(),
        "fraction": eve.fraction,
        "trials": n,
        "seed": seed,
        "error_per_decoy": error_probability(eve),
        "eve_guess_probability": eve_guess_probability(eve),
        "points": points,
    }
    if plot is not None:
        from qkdtwin.teleport.plots import plot_detection

        plot_detection(
            points, plot, title=f"Decoy check against {eve.describe()} (fraction {eve.fraction:g})"
        )
    if as_json:
        emit_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "decoys S",
        "simulated",
        "± stderr",
        "derived 1-(1-e)^S",
        "paper 1-0.25^S",
        title=f"detection probability, {eve.describe()}, fraction {eve.fraction:g}, "
        f"e = {out['error_per_decoy']:.4g} per decoy",
    )
    for p in points:
        t.add_row(
            str(p["decoys"]),
            f"{p['detection_probability']:.4f}",
            f"{p['stderr']:.4f}",
            f"{p['analytic']:.4f}",
            f"{p['paper']:.6f}",
        )
    Console().print(t)
    if plot is not None:
        typer.echo(f"plot written to {plot}")


# --------------------------------------------------------------------------- table
@teleport_app.command("table")
def teleport_table(charlie_basis: CharlieOpt = "x", as_json: JsonOpt = False) -> None:
    """Bob's correction for every outcome of Alice and Charlie, derived by simulation."""
    from qkdtwin.teleport import derive_corrections

    table = derive_corrections(charlie_basis)
    data = table.to_dict()
    if as_json:
        emit_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "#",
        "Alice (A,5)",
        "Alice (B,7)",
        "Charlie (1,3,6)",
        "p",
        "Bob on 2",
        "Bob on 4",
        title=f"Bob's corrections (Charlie measures in the {charlie_basis} basis); "
        "'S*X' means X first, then S",
    )
    for i, r in enumerate(data["rows"], 1):
        t.add_row(
            str(i),
            r["alice_a5"],
            r["alice_b7"],
            r["charlie"],
            f"{r['probability']:.6g}",
            r["correction"]["2"],
            r["correction"]["4"],
        )
    console = Console()
    console.print(t)
    w = Table(
        "Alice (A,5)",
        "Alice (B,7)",
        "Bob on 2",
        "Bob on 4",
        title="without Charlie's result (best correction from Alice's bits alone)",
    )
    for u in data["without_controller"]:
        w.add_row(u["alice_a5"], u["alice_b7"], u["correction"]["2"], u["correction"]["4"])
    console.print(w)
