"""``qkdtwin link``: one QKD link simulated pulse by pulse, its analytic key rate, its reach.

Commands:

* ``link simulate`` — a pulse-by-pulse simulation (optionally with an attack and the whole
  post-processing chain) and the secret key rate from its statistics.
* ``link rate`` — the analytic secret key rate against distance, for one protocol, a comma
  list or ``all``.
* ``link max-distance`` — the longest fibre with a positive key rate.
* ``link presets`` — the named parameter sets.

The link's source, detector and fibre options are one
:class:`~qkdtwin.cli.link_options.LinkOptions`, the CV-QKD system one
:class:`~qkdtwin.cli.link_options.CvOptions`. Bad input raises
:class:`~qkdtwin.errors.ConfigError`; :func:`qkdtwin.cli.main` turns it into one stderr line
and exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from qkdtwin.cli.common import JsonOpt, emit_json
from qkdtwin.cli.link_options import (
    DEFAULT_CV,
    DEFAULT_LINK,
    CvOptions,
    DecoyBoundOpt,
    LinkOptions,
    PresetOpt,
    ProtocolOpt,
    protocols,
    resolve_decoy_bound,
)
from qkdtwin.cli.options import Without, with_option_groups
from qkdtwin.config import parse_count, parse_range
from qkdtwin.errors import ConfigError, SimulationError

__all__ = ["FASTEST_PULSES_PER_S", "MAX_UNFORCED_RUN_S", "guard_run_time", "link_app"]

link_app = typer.Typer(
    help="QKD links: pulse-by-pulse simulation, analytic key rates, maximum distance.",
    no_args_is_help=True,
)

#: Pulses per second of the fastest simulation on one core (plain BB84, BENCHMARKS.md): the
#: run-time guard's optimistic rate, so that it only stops runs that are surely too long.
FASTEST_PULSES_PER_S = 2e8
#: Longest run, s, that ``link simulate`` starts without ``--force``.
MAX_UNFORCED_RUN_S = 3600.0


def _duration_text(seconds: float) -> str:
    """Say how long ``seconds`` is, in the largest unit that keeps the number readable."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600)):
        if seconds >= size:
            return f"{seconds / size:,.3g} {unit}"
    return f"{seconds / 60:.3g} minutes"


def guard_run_time(pulses: int, force: bool) -> None:
    """Refuse a pulse count whose run time is clearly a typo, unless ``--force``.

    The estimate uses the fastest measured rate (:data:`FASTEST_PULSES_PER_S`), so every
    refused run would take at least that long.
    """
    seconds = pulses / FASTEST_PULSES_PER_S
    if seconds > MAX_UNFORCED_RUN_S and not force:
        raise ConfigError(
            f"--pulses {pulses:.3g} would take at least {_duration_text(seconds)} "
            f"(at {FASTEST_PULSES_PER_S:.0e} pulses/s, the fastest measured); "
            "pass --force to run it anyway",
            field="pulses",
            value=pulses,
        )


# --------------------------------------------------------------------------- link simulate
@link_app.command("simulate")
@with_option_groups
def link_simulate(
    protocol: ProtocolOpt = "decoy-bb84",
    distance_km: Annotated[float, typer.Option("--distance-km", help="Fibre length (km).")] = 25.0,
    pulses: Annotated[str, typer.Option("--pulses", "-n", help="Pulses to send (1e7 ok).")] = "1e7",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Run even when --pulses would take more than an hour (see help)."
        ),
    ] = False,
    preset: PresetOpt = "gys",
    attack: Annotated[
        str | None,
        typer.Option("--attack", help="none, intercept-resend[:FRACTION] or pns."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    link: LinkOptions = DEFAULT_LINK,
    dead_time_s: Annotated[
        float, typer.Option("--dead-time-s", help="Detector dead time (s).")
    ] = 0.0,
    afterpulse_prob: Annotated[
        float, typer.Option("--afterpulse-prob", help="Afterpulse probability per click.")
    ] = 0.0,
    bits_out: Annotated[
        Path | None,
        typer.Option("--bits-out", help="Write the sifted bits of Alice and Bob (.npz)."),
    ] = None,
    do_postprocess: Annotated[
        bool,
        typer.Option("--postprocess", help="Run estimation, Cascade, verification and PA."),
    ] = False,
    reconciliation: Annotated[
        str, typer.Option("--reconciliation", help="Cascade variant (see `postprocess bench`).")
    ] = "option8-bpi",
    frame_bits: Annotated[
        int, typer.Option("--frame-bits", help="Reconciliation frame size (bits).")
    ] = 100_000,
    eps_sec: Annotated[float, typer.Option("--eps-sec", help="Secrecy parameter.")] = 1e-10,
    eps_cor: Annotated[float, typer.Option("--eps-cor", help="Correctness parameter.")] = 1e-15,
    failed_frames: Annotated[
        str,
        typer.Option(
            "--failed-frames",
            help="A frame that fails verification: 'disclose' (its bits count as leaked) or"
            " 'abort' (no key from the block).",
        ),
    ] = "disclose",
    keys_out: Annotated[
        Path | None,
        typer.Option("--keys-out", help="Write the final keys, 'KEY_ID HEX' per line."),
    ] = None,
    key_size: Annotated[int, typer.Option("--key-size", help="Bits per key in --keys-out.")] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a link pulse by pulse and compute its secret key rate from the statistics."""
    from qkdtwin.qkd import parse_attack, simulate_link

    n = parse_count(pulses)
    guard_run_time(n, force)
    name = protocols(protocol)[0] if "," not in protocol else protocol
    if name in ("cv-gg02", "plob"):
        raise SimulationError(
            f"{name} has no pulse-by-pulse simulation; use `qkdtwin link rate` for its "
            "analytic rate"
        )
    model = link.model(
        protocol, distance_km, preset, dead_time_s=dead_time_s, afterpulse_prob=afterpulse_prob
    )
    att = parse_attack(attack)
    rng = np.random.default_rng(seed)
    if keys_out is not None and not do_postprocess:
        raise ConfigError("--keys-out needs --postprocess", field="keys_out")
    pp_config = None
    if do_postprocess:
        from qkdtwin.qkd.postprocess import PostprocessConfig

        pp_config = PostprocessConfig(
            reconciliation=reconciliation,
            frame_bits=frame_bits,
            eps_sec=eps_sec,
            eps_cor=eps_cor,
            failed_frames=failed_frames,
        )
        if key_size < 8 or key_size % 8:
            raise ConfigError(
                f"key size must be a positive multiple of 8, got {key_size}",
                field="key_size",
                value=key_size,
            )
    keep = bits_out is not None or do_postprocess
    if as_json or n < 5_000_000:
        res = simulate_link(protocol, model, n, rng, attack=att, keep_bits=keep)
    else:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("simulating pulses", total=n)
            res = simulate_link(
                protocol,
                model,
                n,
                rng,
                attack=att,
                keep_bits=keep,
                progress=lambda done: bar.update(task, completed=done),
            )
    if bits_out is not None and res.alice_bits is not None and res.bob_bits is not None:
        try:
            np.savez_compressed(bits_out, alice=res.alice_bits, bob=res.bob_bits)
        except OSError as exc:
            raise ConfigError(
                f"cannot write {bits_out}: {exc.strerror}", field="bits_out", value=str(bits_out)
            ) from None
    out: dict[str, Any] = res.to_dict() | {"preset": preset, "seed": seed}
    if res.protocol not in ("cv-gg02", "plob"):
        from qkdtwin.qkd.postprocess import finite_key_estimate

        # the secure figure of this block, next to the asymptotic diagnostic
        out["finite_key"] = finite_key_estimate(res, model, eps_sec=eps_sec, eps_cor=eps_cor)
    if pp_config is not None:
        from qkdtwin.qkd.postprocess import postprocess, write_keys

        pp = postprocess(res, model, np.random.default_rng([seed, 1]), pp_config)
        out["postprocess"] = pp.to_dict()
        if keys_out is not None:
            if not pp.keys_identical:  # pragma: no cover - verification prevents it
                raise ConfigError("final keys differ; refusing to write them", field="keys_out")
            out["postprocess"]["keys_written"] = write_keys(
                keys_out, pp.alice_key, np.random.default_rng([seed, 2]), key_size
            )
    if as_json:
        emit_json(out)
        return
    _print_simulation(out)


def _print_simulation(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(
        title=f"{out['protocol']} over {out['distance_km']:g} km ({out['preset']}), "
        f"attack: {out['attack']}",
        show_header=False,
    )
    labels = {
        "secret_key_rate_per_pulse": "asymptotic rate on these counts, bits/pulse (diagnostic)",
        "secret_key_rate_per_signal_pulse": "  same, bits/signal pulse (diagnostic)",
        "analytic_rate_per_pulse": "analytic rate, no attack, bits/pulse",
        "analytic_rate_per_signal_pulse": "  same, bits/signal pulse",
        "secret_key_rate_bps": "asymptotic rate on these counts, bit/s (diagnostic)",
    }
    for key in (
        "pulses",
        "detections",
        "sifted_bits",
        "qber",
        "secret_key_rate_per_pulse",
        "secret_key_rate_per_signal_pulse",
        "analytic_rate_per_pulse",
        "analytic_rate_per_signal_pulse",
        "secret_key_rate_bps",
        "elapsed_s",
        "pulses_per_s",
    ):
        val = out[key]
        t.add_row(labels.get(key, key), f"{val:.6g}" if isinstance(val, float) else str(val))
    fk = out.get("finite_key")
    if fk is not None:
        bits = "n/a" if fk["bits"] is None else str(fk["bits"])
        t.add_row(
            f"secure key of this block, bits ({fk['analysis']}, eps_sec {fk['eps_sec']:g},"
            f" eps_cor {fk['eps_cor']:g})",
            bits,
        )
    for key in ("eve_known_fraction", "chsh_s"):
        if key in out:
            t.add_row(key, f"{out[key]:.4g}")
    console.print(t)
    if "per_intensity" in out:
        ti = Table("intensity", "sent", "detected", "gain", "qber")
        for row in out["per_intensity"]:
            ti.add_row(
                f"{row['intensity']:g}",
                str(row["sent"]),
                str(row["detected"]),
                f"{row['gain']:.4g}",
                f"{row['qber']:.4g}",
            )
        console.print(ti)
    if "postprocess" in out:
        pp = out["postprocess"]
        tp = Table(title="post-processing", show_header=False)
        for key in (
            "sifted_bits",
            "key_bits_in",
            "qber_estimate",
            "leaked_bits",
            "reconciliation_efficiency",
            "frames",
            "frame_error_rate",
            "verified",
            "final_key_bits",
            "keys_identical",
            "secret_key_rate_bps",
            "aborted",
            "abort_reason",
            "elapsed_s",
        ):
            val = pp.get(key)
            tp.add_row(key, f"{val:.6g}" if isinstance(val, float) else str(val))
        console.print(tp)
    if "decoy_estimates" in out:
        d = out["decoy_estimates"]
        console.print(
            f"decoy estimates: Y1 >= {d['y1_lower']:.4g} (true {d['y1_true']:.4g}), "
            f"e1 <= {d['e1_upper']:.4g} (true {d['e1_true']:.4g})"
        )


# --------------------------------------------------------------------------- link rate
@link_app.command("rate")
@with_option_groups
def link_rate(
    protocol: ProtocolOpt = "decoy-bb84",
    distance_km: Annotated[
        str, typer.Option("--distance-km", help="Distances START:STOP[:STEP] km (inclusive).")
    ] = "0:200:10",
    preset: PresetOpt = "gys",
    link: Annotated[LinkOptions, Without("decoy_probabilities")] = DEFAULT_LINK,
    decoy_bound: DecoyBoundOpt = None,
    cv_options: CvOptions = DEFAULT_CV,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a key-rate plot (.png, .svg or .pdf).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Analytic secret key rate against distance; PROTOCOL may be a comma list or 'all'.

    cv-gg02 optimises its modulation variance at each distance unless --cv-va fixes it; its
    rate is computed down to a transmittance of 1e-10 (beyond: null in JSON, n/a in the table).
    """
    from qkdtwin.qkd import CvParameters, analytic_key_rate
    from qkdtwin.qkd.keyrate import GG02_MIN_TRANSMITTANCE

    names = protocols(protocol)
    cv = cv_options.params(names)
    decoy_bound, bound = resolve_decoy_bound(decoy_bound, names)
    distances = parse_range(distance_km, field="distance_km")
    if distances.min() < 0:
        raise ConfigError(
            f"distance_km must be >= 0, got {distance_km!r}",
            field="distance_km",
            value=distance_km,
            allowed=">= 0",
        )
    curves: list[dict[str, Any]] = []
    for name in names:
        points = []
        for d in distances:
            # built per distance: without decoys the best intensity depends on the distance
            model = link.model(name, float(d), preset)
            if name == "cv-gg02" and model.transmittance < GG02_MIN_TRANSMITTANCE:
                point: dict[str, Any] = {
                    "distance_km": float(d),
                    "rate_per_pulse": None,
                    "rate_bps": None,
                    "v_a": None,
                }
            else:
                kr = analytic_key_rate(
                    name, model, cv=cv if name == "cv-gg02" else None, decoys=bound
                )
                point = {
                    "distance_km": float(d),
                    "rate_per_pulse": float(kr.rate_per_pulse),
                    "rate_bps": float(kr.rate_bps),
                }
                if name == "cv-gg02":
                    point["v_a"] = kr.v_a
            points.append(point)
        curve: dict[str, Any] = {"protocol": name, "preset": preset, "points": points}
        if name == "decoy-bb84":
            curve["decoy_bound"] = decoy_bound
        if name == "cv-gg02":
            p = cv if cv is not None else CvParameters()
            curve["cv"] = {
                "v_a": p.v_a,
                "xi": p.xi,
                "beta": p.beta,
                "eta_det": p.eta_det,
                "v_el": p.v_el,
                "detection": p.detection,
            }
        curves.append(curve)
    if plot is not None:
        from qkdtwin.qkd.plots import plot_rate_curves

        plot_rate_curves(curves, plot, title=f"Secret key rate vs distance ({preset})")
    if as_json:
        emit_json(curves[0] if len(curves) == 1 else {"preset": preset, "curves": curves})
        return
    from rich.console import Console
    from rich.table import Table

    title = f"secret key rate (bits/pulse), preset {preset}"
    if "decoy-bb84" in names:
        title += f", decoy bound {decoy_bound}"
    table = Table("distance_km", *[c["protocol"] for c in curves], title=title)

    def cell(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3e}"

    for i, d in enumerate(distances):
        table.add_row(f"{d:g}", *[cell(c["points"][i]["rate_per_pulse"]) for c in curves])
    console = Console()
    console.width = max(console.width, 14 + 12 * len(curves))
    console.print(table)
    if plot is not None:
        typer.echo(f"plot written to {plot}")


# --------------------------------------------------------------------------- max distance
@link_app.command("max-distance")
@with_option_groups
def link_max_distance(
    protocol: ProtocolOpt = "decoy-bb84",
    preset: PresetOpt = "gys",
    link: Annotated[
        LinkOptions,
        Without("decoy_probabilities", "insertion_loss_db", "repetition_rate_hz"),
    ] = DEFAULT_LINK,
    decoy_bound: DecoyBoundOpt = None,
    cv_options: CvOptions = DEFAULT_CV,
    as_json: JsonOpt = False,
) -> None:
    """Longest fibre over which the protocol still yields a positive key rate.

    decoy-bb84 uses the vacuum + weak decoy bound by default (the preset's decoys, nu = 0.1
    for gys: 139.1 km); --decoy-bound infinite gives Lo-Ma-Chen's infinite-decoy figure
    (142.0 km).
    """
    from qkdtwin.qkd import max_distance

    (name,) = protocols(protocol) if "," not in protocol else (None,)
    if name is None:
        raise ConfigError("max-distance takes one protocol", field="protocol", value=protocol)
    cv = cv_options.params([name])
    decoy_bound, bound = resolve_decoy_bound(decoy_bound, [name])
    base = link.model(name, 0.0, preset)
    optimize = link.mu is None and name in ("bb84", "sarg04") and not link.single_photon
    beyond = None
    try:
        dist = max_distance(
            name, base, optimize_mu=optimize, decoys=bound, **({"cv": cv} if cv else {})
        )
    except SimulationError:
        if name != "cv-gg02":
            raise
        from qkdtwin.qkd.keyrate import gg02_range_km

        # positive as far as the GG02 formula is computed: a result, not an error
        dist, beyond = None, gg02_range_km(base)
    tag = f", decoy bound {decoy_bound}" if name == "decoy-bb84" else ""
    if as_json:
        out: dict[str, Any] = {"protocol": name, "preset": preset, "max_distance_km": dist}
        if name == "decoy-bb84":
            out["decoy_bound"] = decoy_bound
        if beyond is not None:
            out["positive_beyond_km"] = beyond
        emit_json(out)
        return
    if beyond is not None:
        typer.echo(
            f"{name} ({preset}): key rate still positive at {beyond:.0f} km, where the GG02 "
            "model's numerical range ends (transmittance 1e-10); the reach is set by the "
            "excess noise and the reconciliation efficiency (--cv-xi, --cv-beta)"
        )
        return
    typer.echo(
        f"{name} ({preset}{tag}): maximum distance {dist:.2f} km"
        if dist is not None
        else f"{name} ({preset}{tag}): no finite maximum distance"
    )


# --------------------------------------------------------------------------- presets
@link_app.command("presets")
def link_presets(as_json: JsonOpt = False) -> None:
    """List the named parameter sets and their sources."""
    from dataclasses import asdict

    from qkdtwin.qkd import PRESETS

    rows = [asdict(p) for p in PRESETS.values()]
    if as_json:
        emit_json({"presets": rows})
        return
    for r in rows:
        typer.echo(f"{r['name']}: {r['description']}\n    {r['reference']}")
