"""The ``qkdtwin`` command line.

Every computing command has ``--json`` (one JSON object on stdout and nothing else). Errors in
user input print one line on stderr and exit with status 2 — the mapping from exceptions to
exit codes lives in :func:`main` and nowhere else.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from qkdtwin import __version__
from qkdtwin._cli_common import JsonOpt, emit_json
from qkdtwin.cli_iot import iot_app
from qkdtwin.cli_kms import kms_app
from qkdtwin.cli_network import network_app, reproduce_app
from qkdtwin.cli_plant import plant_app
from qkdtwin.cli_teleport import teleport_app
from qkdtwin.cli_twin import twin_app
from qkdtwin.config import parse_count, parse_float_list, parse_range
from qkdtwin.errors import ConfigError, QkdTwinError, SimulationError
from qkdtwin.extras import extra_for_module

app = typer.Typer(
    name="qkdtwin",
    help="Digital twin of a quantum-secured industrial IoT network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
link_app = typer.Typer(
    help="QKD links: pulse-by-pulse simulation, analytic key rates, maximum distance.",
    no_args_is_help=True,
)
app.add_typer(link_app, name="link")
app.add_typer(teleport_app, name="teleport")
app.add_typer(network_app, name="network")
app.add_typer(reproduce_app, name="reproduce")
app.add_typer(kms_app, name="kms")
app.add_typer(iot_app, name="iot")
app.add_typer(twin_app, name="twin")
app.add_typer(plant_app, name="plant")

EXIT_USAGE = 2


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"qkdtwin {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            is_eager=True,
            callback=_version_callback,
        ),
    ] = False,
) -> None:
    """Digital twin of a quantum-secured industrial IoT network."""


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


# --------------------------------------------------------------------------- shared options
ProtocolOpt = Annotated[
    str,
    typer.Option("--protocol", "-p", help="bb84, decoy-bb84, sarg04, bbm92, e91, cv-gg02 or plob."),
]
PresetOpt = Annotated[str, typer.Option("--preset", help="Parameter set (see `link presets`).")]
MuOpt = Annotated[
    float | None,
    typer.Option("--mu", help="Signal mean photon number (pair number for bbm92/e91)."),
]
DecoysOpt = Annotated[
    str | None, typer.Option("--decoys", help="Decoy intensities, e.g. '0.1,0' (decoy-bb84).")
]
DecoyProbOpt = Annotated[
    str | None,
    typer.Option(
        "--decoy-probabilities", help="Probabilities of signal and each decoy, e.g. '0.8,0.1,0.1'."
    ),
]
EffOpt = Annotated[
    float | None, typer.Option("--efficiency", help="Bob's detection efficiency, in (0, 1].")
]
DarkOpt = Annotated[
    float | None, typer.Option("--dark-count-prob", help="Dark-count probability per gate.")
]
MisOpt = Annotated[float | None, typer.Option("--misalignment", help="Misalignment e_d.")]
AttOpt = Annotated[
    float | None, typer.Option("--attenuation-db-per-km", help="Fibre attenuation (dB/km).")
]
InsOpt = Annotated[
    float | None, typer.Option("--insertion-loss-db", help="Extra insertion loss (dB).")
]
RepOpt = Annotated[
    float | None, typer.Option("--repetition-rate-hz", help="Pulse repetition rate (Hz).")
]
SpsOpt = Annotated[
    bool, typer.Option("--single-photon", help="Ideal single-photon source (bb84, sarg04).")
]
DecoyBoundOpt = Annotated[
    str | None,
    typer.Option(
        "--decoy-bound",
        help="decoy-bb84: 'vacuum-weak' (default: what a system with a vacuum and one weak"
        " decoy, the preset's, can prove) or 'infinite' (infinitely many decoys, the true"
        " single-photon yield: Lo-Ma-Chen's curve).",
    ),
]
#: The CLI's names of the decoy bounds -> analytic_key_rate's ``decoys``.
DECOY_BOUNDS = {"vacuum-weak": "vacuum+weak", "infinite": "infinite"}


def _decoy_bound(value: str | None, names: list[str]) -> tuple[str, str]:
    """Return ``--decoy-bound``'s name and :func:`analytic_key_rate`'s ``decoys`` for it."""
    if value is None:
        return "vacuum-weak", DECOY_BOUNDS["vacuum-weak"]
    if "decoy-bb84" not in names:
        raise ConfigError(
            "--decoy-bound only applies to --protocol decoy-bb84", field="decoy-bound"
        )
    key = value.strip().lower()
    if key not in DECOY_BOUNDS:
        raise ConfigError(
            f"--decoy-bound must be one of {', '.join(DECOY_BOUNDS)}, got {value!r}",
            field="decoy-bound",
            value=value,
            allowed=", ".join(DECOY_BOUNDS),
        )
    return key, DECOY_BOUNDS[key]


# CV-QKD (cv-gg02) system; defaults: Lodewyck et al. 2007 hardware, V_A optimised per distance
CvVaOpt = Annotated[
    str | None,
    typer.Option(
        "--cv-va",
        help="cv-gg02 modulation variance V_A (shot-noise units) or 'optimal' (default:"
        " optimal at each distance).",
    ),
]
CvXiOpt = Annotated[
    float | None,
    typer.Option("--cv-xi", help="cv-gg02 excess noise, input-referred, SNU (default 0.005)."),
]
CvBetaOpt = Annotated[
    float | None,
    typer.Option("--cv-beta", help="cv-gg02 reconciliation efficiency (default 0.898)."),
]
CvEtaOpt = Annotated[
    float | None,
    typer.Option("--cv-eta", help="cv-gg02 homodyne/heterodyne efficiency (default 0.606)."),
]
CvVelOpt = Annotated[
    float | None,
    typer.Option("--cv-vel", help="cv-gg02 electronic noise, SNU (default 0.041)."),
]
CvDetOpt = Annotated[
    str | None,
    typer.Option("--cv-detection", help="cv-gg02 detection: homodyne (default) or heterodyne."),
]


def _cv_params(
    names: list[str],
    v_a: str | None,
    xi: float | None,
    beta: float | None,
    eta: float | None,
    v_el: float | None,
    detection: str | None,
) -> Any:
    """Build the CV system from the --cv-* options (None when none is given)."""
    given = {
        "--cv-va": v_a,
        "--cv-xi": xi,
        "--cv-beta": beta,
        "--cv-eta": eta,
        "--cv-vel": v_el,
        "--cv-detection": detection,
    }
    used = [k for k, x in given.items() if x is not None]
    if not used:
        return None
    if "cv-gg02" not in names:
        raise ConfigError(
            f"{', '.join(used)} only apply to --protocol cv-gg02", field=used[0].lstrip("-")
        )
    from qkdtwin.qkd import CvParameters

    kw: dict[str, Any] = {}
    if v_a is not None:
        if v_a.strip().lower() == "optimal":
            kw["v_a"] = "optimal"
        else:
            try:
                kw["v_a"] = float(v_a)
            except ValueError:
                raise ConfigError(
                    f"--cv-va must be a number > 0 or 'optimal', got {v_a!r}", field="cv-va"
                ) from None
    numbers = {"xi": xi, "beta": beta, "eta_det": eta, "v_el": v_el}
    kw.update({key: x for key, x in numbers.items() if x is not None})
    if detection is not None:
        kw["detection"] = detection
    return CvParameters(**kw)


def _model(
    protocol: str,
    distance_km: float,
    preset: str,
    *,
    mu: float | None = None,
    decoys: str | None = None,
    decoy_probabilities: str | None = None,
    efficiency: float | None = None,
    dark_count_prob: float | None = None,
    misalignment: float | None = None,
    attenuation_db_per_km: float | None = None,
    insertion_loss_db: float | None = None,
    repetition_rate_hz: float | None = None,
    single_photon: bool = False,
    dead_time_s: float = 0.0,
    afterpulse_prob: float = 0.0,
) -> Any:
    from qkdtwin.qkd import ThresholdDetector, build_link_model, get_preset

    p = get_preset(preset)
    if attenuation_db_per_km is not None:
        p = replace(p, attenuation_db_per_km=attenuation_db_per_km)
    if insertion_loss_db is not None:
        p = replace(p, insertion_loss_db=insertion_loss_db)
    base = p.detector()
    det = ThresholdDetector(
        efficiency=base.efficiency if efficiency is None else efficiency,
        dark_count_prob=base.dark_count_prob if dark_count_prob is None else dark_count_prob,
        misalignment=base.misalignment if misalignment is None else misalignment,
        dead_time_s=dead_time_s,
        afterpulse_prob=afterpulse_prob,
    )
    return build_link_model(
        protocol,
        distance_km,
        p,
        mu=mu,
        decoys=parse_float_list(decoys, field="decoys") if decoys is not None else None,
        decoy_probabilities=(
            parse_float_list(decoy_probabilities, field="decoy_probabilities")
            if decoy_probabilities is not None
            else None
        ),
        single_photon=single_photon,
        detector=det,
        repetition_rate_hz=repetition_rate_hz,
    )


def _protocols(spec: str) -> list[str]:
    from qkdtwin.qkd.protocols import ALL_PROTOCOLS, canonical_protocol

    if spec.strip().lower() == "all":
        return list(ALL_PROTOCOLS)
    return [canonical_protocol(s) for s in spec.split(",") if s.strip()]


# --------------------------------------------------------------------------- link simulate
@link_app.command("simulate")
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
    mu: MuOpt = None,
    decoys: DecoysOpt = None,
    decoy_probabilities: DecoyProbOpt = None,
    efficiency: EffOpt = None,
    dark_count_prob: DarkOpt = None,
    misalignment: MisOpt = None,
    attenuation_db_per_km: AttOpt = None,
    insertion_loss_db: InsOpt = None,
    repetition_rate_hz: RepOpt = None,
    single_photon: SpsOpt = False,
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
    name = _protocols(protocol)[0] if "," not in protocol else protocol
    if name in ("cv-gg02", "plob"):
        raise SimulationError(
            f"{name} has no pulse-by-pulse simulation; use `qkdtwin link rate` for its "
            "analytic rate"
        )
    model = _model(
        protocol,
        distance_km,
        preset,
        mu=mu,
        decoys=decoys,
        decoy_probabilities=decoy_probabilities,
        efficiency=efficiency,
        dark_count_prob=dark_count_prob,
        misalignment=misalignment,
        attenuation_db_per_km=attenuation_db_per_km,
        insertion_loss_db=insertion_loss_db,
        repetition_rate_hz=repetition_rate_hz,
        single_photon=single_photon,
        dead_time_s=dead_time_s,
        afterpulse_prob=afterpulse_prob,
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
    out = res.to_dict() | {"preset": preset, "seed": seed}
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
def link_rate(
    protocol: ProtocolOpt = "decoy-bb84",
    distance_km: Annotated[
        str, typer.Option("--distance-km", help="Distances START:STOP[:STEP] km (inclusive).")
    ] = "0:200:10",
    preset: PresetOpt = "gys",
    mu: MuOpt = None,
    decoys: DecoysOpt = None,
    efficiency: EffOpt = None,
    dark_count_prob: DarkOpt = None,
    misalignment: MisOpt = None,
    attenuation_db_per_km: AttOpt = None,
    insertion_loss_db: InsOpt = None,
    repetition_rate_hz: RepOpt = None,
    single_photon: SpsOpt = False,
    decoy_bound: DecoyBoundOpt = None,
    cv_va: CvVaOpt = None,
    cv_xi: CvXiOpt = None,
    cv_beta: CvBetaOpt = None,
    cv_eta: CvEtaOpt = None,
    cv_vel: CvVelOpt = None,
    cv_detection: CvDetOpt = None,
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

    names = _protocols(protocol)
    cv = _cv_params(names, cv_va, cv_xi, cv_beta, cv_eta, cv_vel, cv_detection)
    decoy_bound, bound = _decoy_bound(decoy_bound, names)
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
            model = _model(
                name,
                float(d),
                preset,
                mu=mu,
                decoys=decoys,
                efficiency=efficiency,
                dark_count_prob=dark_count_prob,
                misalignment=misalignment,
                attenuation_db_per_km=attenuation_db_per_km,
                insertion_loss_db=insertion_loss_db,
                repetition_rate_hz=repetition_rate_hz,
                single_photon=single_photon,
            )
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
def link_max_distance(
    protocol: ProtocolOpt = "decoy-bb84",
    preset: PresetOpt = "gys",
    mu: MuOpt = None,
    decoys: DecoysOpt = None,
    efficiency: EffOpt = None,
    dark_count_prob: DarkOpt = None,
    misalignment: MisOpt = None,
    attenuation_db_per_km: AttOpt = None,
    single_photon: SpsOpt = False,
    decoy_bound: DecoyBoundOpt = None,
    cv_va: CvVaOpt = None,
    cv_xi: CvXiOpt = None,
    cv_beta: CvBetaOpt = None,
    cv_eta: CvEtaOpt = None,
    cv_vel: CvVelOpt = None,
    cv_detection: CvDetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Longest fibre over which the protocol still yields a positive key rate.

    decoy-bb84 uses the vacuum + weak decoy bound by default (the preset's decoys, nu = 0.1
    for gys: 139.1 km); --decoy-bound infinite gives Lo-Ma-Chen's infinite-decoy figure
    (142.0 km).
    """
    from qkdtwin.qkd import max_distance

    (name,) = _protocols(protocol) if "," not in protocol else (None,)
    if name is None:
        raise ConfigError("max-distance takes one protocol", field="protocol", value=protocol)
    cv = _cv_params([name], cv_va, cv_xi, cv_beta, cv_eta, cv_vel, cv_detection)
    decoy_bound, bound = _decoy_bound(decoy_bound, [name])
    base = _model(
        name,
        0.0,
        preset,
        mu=mu,
        decoys=decoys,
        efficiency=efficiency,
        dark_count_prob=dark_count_prob,
        misalignment=misalignment,
        attenuation_db_per_km=attenuation_db_per_km,
        single_photon=single_photon,
    )
    optimize = mu is None and name in ("bb84", "sarg04") and not single_photon
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


# --------------------------------------------------------------------------- postprocess
post_app = typer.Typer(
    help="Classical post-processing: Cascade reconciliation.", no_args_is_help=True
)
app.add_typer(post_app, name="postprocess")


@post_app.command("bench")
def postprocess_bench(
    frame_bits: Annotated[int, typer.Option("--frame-bits", help="Frame size (bits).")] = 100_000,
    qber: Annotated[float, typer.Option("--qber", help="Error rate of the frames.")] = 0.02,
    variant: Annotated[
        str, typer.Option("--reconciliation", help="Cascade variant or 'all'.")
    ] = "all",
    frames: Annotated[int, typer.Option("--frames", help="Frames per variant.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Reconcile synthetic frames (binary symmetric errors) and report f, FER, throughput."""
    import time as _time

    from qkdtwin.qkd.postprocess import CASCADE_VARIANTS, reconcile
    from qkdtwin.qkd.postprocess.finite_key import h2

    if not 0.0 < qber < 0.5:
        raise ConfigError(
            f"qber must be in (0, 0.5), got {qber}", field="qber", value=qber, allowed="(0, 0.5)"
        )
    if frame_bits < 64 or frames < 1:
        raise ConfigError("frame_bits must be >= 64 and frames >= 1", field="frame_bits")
    names = list(CASCADE_VARIANTS) if variant == "all" else [variant]
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for name in names:
        leaked = failed = 0
        errors_total = 0
        elapsed = 0.0
        for _ in range(frames):
            a = rng.integers(0, 2, frame_bits, dtype=np.uint8)
            flips = rng.random(frame_bits) < qber
            b = a ^ flips.astype(np.uint8)
            errors_total += int(flips.sum())
            t = _time.perf_counter()
            res = reconcile(a, b, qber, variant=name, rng=rng)
            elapsed += _time.perf_counter() - t
            leaked += res.leaked_bits
            failed += int(not np.array_equal(res.corrected, a))
        q_true = errors_total / (frames * frame_bits)
        rows.append(
            {
                "reconciliation": name,
                "frame_bits": frame_bits,
                "qber": qber,
                "frames": frames,
                "efficiency": leaked / (frames * frame_bits * h2(q_true)) if q_true > 0 else None,
                "frame_error_rate": failed / frames,
                "bits_per_s": frames * frame_bits / elapsed if elapsed > 0 else None,
            }
        )
    if as_json:
        emit_json({"results": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "variant",
        "f",
        "FER",
        "Mbit/s",
        title=f"Cascade, {frame_bits} bits, QBER {qber:g}, {frames} frames",
    )
    for r in rows:
        eff, bps = r["efficiency"], r["bits_per_s"]
        table.add_row(
            r["reconciliation"],
            f"{eff:.4f}" if eff else "-",
            f"{r['frame_error_rate']:.3f}",
            f"{bps / 1e6:.2f}" if bps else "-",
        )
    Console().print(table)


# --------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every qkdtwin and usage error to one stderr line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="qkdtwin", standalone_mode=False)
    except QkdTwinError as exc:
        sys.stderr.write(f"qkdtwin: error: {exc}\n")
        return EXIT_USAGE
    except ModuleNotFoundError as exc:  # an optional dependency a command reached lazily
        extra = extra_for_module(exc.name)
        if extra is None:
            raise
        sys.stderr.write(
            f"qkdtwin: error: this command needs the optional dependency {exc.name!r}: "
            f"pip install 'qkdtwin[{extra}]' (or 'qkdtwin[all]')\n"
        )
        return EXIT_USAGE
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.TyperException as exc:  # usage errors (unknown option, bad integer, ...)
        sys.stderr.write(f"qkdtwin: error: {exc.format_message()}\n")
        return EXIT_USAGE
    except typer.Abort:
        sys.stderr.write("qkdtwin: aborted\n")
        return 130
    return 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry_point()
