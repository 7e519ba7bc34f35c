"""qkdtwin against SeQUeNCe across regimes: same physics, engine and whole-process time.

The link engine's cost grows with the number of detections, SeQUeNCe's (a discrete-event
simulator that follows every photon) with the number of pulse slots and photons, so a single
speed ratio depends on the regime. This script runs BB84 with the *same physics* in both
simulators over detection probabilities per pulse from ~1e-4 to ~1e-1 and pulse counts 1e5 to
1e7, and measures for each (regime, pulse count):

* **engine time**: the simulation call only. SeQUeNCe: ``Timeline.run()`` (emission,
  propagation, detection, sifting; see ``benchmarks/external/bb84_sequence.py``). qkdtwin:
  ``simulate_link`` in a fresh interpreter after one untimed warm-up call (which loads the numba
  cache); "+pp" adds ``postprocess`` (estimation, Cascade, verification, privacy amplification)
  on the kept sifted bits;
* **whole process**: wall time of a fresh subprocess, interpreter start and imports included:
  ``.bench-venv/bin/python benchmarks/external/bb84_sequence.py ...`` against
  ``.venv/bin/qkdtwin link simulate ... --json`` (and ``... --postprocess --json``).

Runs are interleaved (each repeat walks sizes and regimes, alternating which simulator goes
first) and medians over the repeats are reported. Each regime's expected detection probability
per pulse is computed analytically and compared with what each simulator measured (2 x sifted
bits / pulses); a mismatch beyond statistics aborts the run.

Usage::

    python benchmarks/sequence_regimes.py [--quick] [--repeats 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

SEQ_PY = ROOT / ".bench-venv" / "bin" / "python"
SEQ_SCRIPT = ROOT / "benchmarks" / "external" / "bb84_sequence.py"
SEQ_SETUP = ROOT / "benchmarks" / "external" / "setup.sh"
QKDTWIN = Path(sys.executable).parent / "qkdtwin"
RESULTS = ROOT / "benchmarks" / "results" / "sequence_regimes.json"
PLOT = ROOT / "docs" / "img" / "sequence_ratio.png"

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}

# Physics common to every regime (the point: 80 MHz, e_d 1.5 %, 40 ns dead time).
COMMON = {
    "rep_rate_hz": 8.0e7,
    "attenuation_db_per_km": 0.2,
    "misalignment": 0.015,
    "dark_count_hz": 100.0,  # per detector; SeQUeNCe: Poisson process in time
    "dead_time_s": 40e-9,
}
# (name, distance km, mu, detector efficiency); detection probability per pulse ~1e-4 .. 1e-1.
REGIMES = [
    ("A", 100.0, 0.1, 0.1),
    ("B", 100.0, 0.1, 0.9),
    ("C", 50.0, 0.1, 0.9),
    ("D", 10.0, 0.1, 0.9),  # the point
    ("E", 10.0, 0.2, 0.9),
]
BATCH = 10_000  # SeQUeNCe pulse slots per BB84 round (125 us at 80 MHz)
# qkdtwin's engine call takes milliseconds, so one scheduler hiccup on the shared machine can
# double it: each qkdtwin engine process times QK_INNER calls and reports their median
# (SeQUeNCe's runs take seconds and are timed once per process).
QK_INNER = 3
# Skip a SeQUeNCe run whose predicted engine time (median s/pulse of its runs so far in that
# regime x pulses) exceeds this. ~60 s was the plan; on the shared 2-core machine SeQUeNCe runs at
# ~1-2.5e5 pulses/s, so 1e7 pulses take 40-110 s and 120 s keeps them.
SEQ_CAP_S = 120.0

_QK_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from qkdtwin.qkd import ThresholdDetector, build_link_model, get_preset, simulate_link
from qkdtwin.qkd.postprocess import postprocess
from dataclasses import replace
t_imp = time.perf_counter() - t0
cfg = json.loads(sys.argv[1])
preset = replace(get_preset("gys"), attenuation_db_per_km=cfg["attenuation_db_per_km"],
                 insertion_loss_db=0.0)
det = ThresholdDetector(efficiency=cfg["efficiency"], dark_count_prob=cfg["dark_count_prob"],
                        misalignment=cfg["misalignment"], dead_time_s=cfg["dead_time_s"])
model = build_link_model("bb84", cfg["distance_km"], preset, mu=cfg["mu"], detector=det,
                         repetition_rate_hz=cfg["rep_rate_hz"])
n, seed, k = cfg["pulses"], cfg["seed"], cfg["inner"]
t = time.perf_counter()
simulate_link("bb84", model, min(n, 10**6), np.random.default_rng(seed + 10**6))  # warm-up
warm_s = time.perf_counter() - t
times = []
for i in range(k):  # k timed calls, median reported (the first one's result is kept)
    t = time.perf_counter()
    r = simulate_link("bb84", model, n, np.random.default_rng(seed + i * 10**7))
    times.append(time.perf_counter() - t)
    res = r if i == 0 else res
out = {"import_s": t_imp, "warmup_s": warm_s, "engine_s": sorted(times)[k // 2],
       "engine_all_s": times, "sifted_bits": res.sifted_bits, "qber": res.qber,
       "detections": res.detections, "detection_prob_measured": 2 * res.sifted_bits / n}
if cfg["pp"]:
    # untimed warm-up of the same size (Cascade's numba kernels load on first use)
    r2 = simulate_link("bb84", model, n, np.random.default_rng(seed + 2 * 10**6), keep_bits=True)
    postprocess(r2, model, np.random.default_rng([seed, 9]))
    runs = []
    for i in range(k):
        t = time.perf_counter()
        rk = simulate_link("bb84", model, n, np.random.default_rng(seed + i * 10**7),
                           keep_bits=True)
        t_sim = time.perf_counter() - t
        t = time.perf_counter()
        pp = postprocess(rk, model, np.random.default_rng([seed, 1]))
        runs.append((t_sim + time.perf_counter() - t, t_sim, pp.to_dict()))
    runs.sort(key=lambda x: x[0])
    tot, t_sim, d = runs[k // 2]
    out |= {"engine_keep_bits_s": t_sim, "pp_s": tot - t_sim, "engine_pp_s": tot,
            "engine_pp_all_s": [x[0] for x in runs],
            "pp_frames": d.get("frames"), "pp_aborted": d.get("aborted"),
            "pp_abort_reason": d.get("abort_reason"), "pp_final_key_bits": d.get("final_key_bits")}
print(json.dumps(out))
"""


def analytic(distance_km: float, mu: float, eff: float) -> dict:
    """Expected detection probability per pulse (both detectors, threshold, dead time)."""
    f = COMMON["rep_rate_hz"]
    eta = 10 ** (-COMMON["attenuation_db_per_km"] * distance_km / 10) * eff
    p_sig = 1 - math.exp(-mu * eta)
    p_dark = COMMON["dark_count_hz"] / f
    p0 = p_sig + 2 * p_dark
    d = dead_slots()
    q = p0 / 2
    p = 2 * q / (1 + d * q)  # non-paralysable per detector, renewal rate q / (1 + d q)
    e_d = COMMON["misalignment"]
    return {
        "p_det_no_dead_time": p0,
        "p_det": p,
        "qber": (e_d * p_sig + p_dark) / p0,
        "dead_slots": d,
    }


def dead_slots() -> int:
    """Slots blinded by a click in SeQUeNCe: k >= 1 with k * slot <= ceil(dead time) (ps)."""
    period_ps = math.ceil(COMMON["dead_time_s"] * 1e12)
    slot_ps = round(1e12 / COMMON["rep_rate_hz"])
    return period_ps // slot_ps


def qk_physics(distance_km: float, mu: float, eff: float) -> dict:
    """qkdtwin parameters for the same physics as SeQUeNCe's run."""
    from qkdtwin.qkd.detector import ThresholdDetector

    f = COMMON["rep_rate_hz"]
    gates = ThresholdDetector(eff, 0.0, dead_time_s=COMMON["dead_time_s"]).dead_gates(f)
    if gates != dead_slots():
        raise SystemExit(f"dead time: qkdtwin blinds {gates} gates, SeQUeNCe {dead_slots()}")
    return {
        "distance_km": distance_km,
        "mu": mu,
        "efficiency": eff,
        "attenuation_db_per_km": COMMON["attenuation_db_per_km"],
        # SeQUeNCe's dark counts are a Poisson process; per 12.5 ns slot that is
        # 1 - exp(-rate / f) per detector.
        "dark_count_prob": -math.expm1(-COMMON["dark_count_hz"] / f),
        "misalignment": COMMON["misalignment"],
        # both blind the slots k >= 1 with k/f < t (qkdtwin: ceil(t f) - 1; SeQUeNCe: k/f <=
        # its period in whole ps): 3 at 40 ns and 80 MHz (checked below)
        "dead_time_s": COMMON["dead_time_s"],
        "rep_rate_hz": f,
    }


def seq_cmd(distance_km: float, mu: float, eff: float, pulses: int, seed: int) -> list[str]:
    return [
        str(SEQ_PY),
        str(SEQ_SCRIPT),
        "--pulses",
        str(pulses),
        "--distance-km",
        str(distance_km),
        "--mu",
        str(mu),
        "--detector-efficiency",
        str(eff),
        "--rep-rate-hz",
        str(COMMON["rep_rate_hz"]),
        "--attenuation-db-per-km",
        str(COMMON["attenuation_db_per_km"]),
        "--dark-count-hz",
        str(COMMON["dark_count_hz"]),
        "--misalignment",
        str(COMMON["misalignment"]),
        "--dead-time-s",
        str(COMMON["dead_time_s"]),
        "--batch-pulses",
        str(BATCH),
        "--seed",
        str(seed),
    ]


def qk_cli_cmd(phys: dict, pulses: int, seed: int, pp: bool) -> list[str]:
    cmd = [
        str(QKDTWIN),
        "link",
        "simulate",
        "--protocol",
        "bb84",
        "--preset",
        "gys",
        "--distance-km",
        str(phys["distance_km"]),
        "--pulses",
        str(pulses),
        "--mu",
        str(phys["mu"]),
        "--efficiency",
        str(phys["efficiency"]),
        "--dark-count-prob",
        repr(phys["dark_count_prob"]),
        "--misalignment",
        str(phys["misalignment"]),
        "--attenuation-db-per-km",
        str(phys["attenuation_db_per_km"]),
        "--insertion-loss-db",
        "0",
        "--repetition-rate-hz",
        str(phys["rep_rate_hz"]),
        "--dead-time-s",
        repr(phys["dead_time_s"]),
        "--seed",
        str(seed),
        "--json",
    ]
    return [*cmd, "--postprocess"] if pp else cmd


def timed(cmd: list[str], env: dict | None = None, timeout: float = 600) -> tuple[dict, float]:
    """Run ``cmd`` in a fresh process; return its last JSON line and the wall time."""
    e = os.environ | SINGLE_THREAD | (env or {})
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def run_sequence(reg: tuple, pulses: int, seed: int) -> dict:
    _, dist, mu, eff = reg
    out, wall = timed(seq_cmd(dist, mu, eff, pulses, seed), timeout=300)
    return {
        "engine_s": out["elapsed_s"],
        "whole_s": wall,
        "import_s": out["import_s"],
        "sifted_bits": out["sifted_bits"],
        "qber": out["qber"],
        "detection_prob_measured": out["detection_prob_measured"],
        "pulses": out["pulses"],
        "photons": out["photons_emitted_total"],
        "events": out["events_executed"],
        "version": out["version"],
        "python": out["python"],
    }


def run_qkdtwin(reg: tuple, pulses: int, seed: int, cache_env: dict | None = None) -> dict:
    _, dist, mu, eff = reg
    phys = qk_physics(dist, mu, eff)
    cfg = phys | {"pulses": pulses, "seed": seed, "pp": True, "inner": QK_INNER}
    eng, _ = timed([sys.executable, "-c", _QK_CHILD, json.dumps(cfg)], env=cache_env)
    cli, wall = timed(qk_cli_cmd(phys, pulses, seed, pp=False), env=cache_env)
    clipp, wall_pp = timed(qk_cli_cmd(phys, pulses, seed, pp=True), env=cache_env)
    pp = clipp.get("postprocess", {})
    return eng | {
        "whole_s": wall,
        "whole_pp_s": wall_pp,
        "cli_engine_s": cli["elapsed_s"],
        "cli_pp_s": pp.get("elapsed_s"),
        "cli_pp_frames": pp.get("frames"),
        "cli_pp_aborted": pp.get("aborted"),
        "cli_pp_final_key_bits": pp.get("final_key_bits"),
        "cli_sifted_bits": cli["sifted_bits"],
    }


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy

    return (
        f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
        f"NumPy {numpy.__version__}, {platform.system()} {platform.release()}"
    )


def check_physics(rows: list[dict]) -> list[str]:
    """Pool sifted bits over repeats; both simulators must match the expectation (4 sigma)."""
    problems = []
    for r in rows:
        exp = r["analytic"]["p_det"] / 2 * r["pulses"]
        for sim in ("qkdtwin", "sequence"):
            runs = r["runs"][sim]
            if not runs:
                continue
            got = statistics.fmean(x["sifted_bits"] for x in runs)
            n = len(runs)
            # Poisson-like: sd of the mean of n counts ~ sqrt(exp / n); +1 for tiny counts.
            z = (got - exp) / math.sqrt(exp / n + 1.0 / n)
            r.setdefault("z", {})[sim] = z
            # 0.5 % model tolerance: qkdtwin squashes double clicks, SeQUeNCe drops them.
            if abs(z) > 4 and abs(got - exp) > 0.005 * exp:
                problems.append(
                    f"{r['regime']} {r['pulses']:.0e} {sim}: sifted {got:.1f} vs {exp:.1f} "
                    f"(z = {z:.1f})"
                )
    return problems


def med(runs: list[dict], key: str) -> float | None:
    vals = [x[key] for x in runs if x.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarise(rows: list[dict]) -> None:
    for r in rows:
        q, s = r["runs"]["qkdtwin"], r["runs"]["sequence"]
        m = {k: med(q, k) for k in ("engine_s", "engine_pp_s", "whole_s", "whole_pp_s")}
        m |= {"seq_engine_s": med(s, "engine_s"), "seq_whole_s": med(s, "whole_s")}
        if s:
            m["engine_ratio"] = m["seq_engine_s"] / m["engine_s"]
            m["whole_ratio"] = m["seq_whole_s"] / m["whole_s"]
            m["engine_ratio_pp"] = m["seq_engine_s"] / m["engine_pp_s"]
            m["whole_ratio_pp"] = m["seq_whole_s"] / m["whole_pp_s"]
        m["p_det_qkdtwin"] = statistics.fmean(x["detection_prob_measured"] for x in q)
        if s:
            m["p_det_sequence"] = statistics.fmean(x["detection_prob_measured"] for x in s)
        m["pp_frames"] = q[0].get("pp_frames")
        m["pp_aborted"] = q[0].get("pp_aborted")
        r["median"] = m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="Markdown file whose 'sequence' section to rewrite")
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: 2 regimes, 1e5 pulses, 1 repeat"
    )
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="do not run: re-make the plot and --write section from a results JSON",
    )
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--seq-cap-s",
        type=float,
        default=SEQ_CAP_S,
        help="skip SeQUeNCe runs predicted to take longer than this (engine seconds)",
    )
    ap.add_argument("--json", type=Path, default=None, help=f"raw results (default {RESULTS})")
    ap.add_argument("--plot", type=Path, default=None, help=f"ratio plot (default {PLOT})")
    args = ap.parse_args()

    if args.render:
        result = json.loads(args.render.read_text())
        plot_path = args.plot or PLOT
        plot(result, plot_path)
        if args.write:
            write_section(args.write, "sequence", markdown(result, plot_path))
        return
    sizes = [10**5] if args.quick else [10**5, 10**6, 10**7]
    repeats = args.repeats or (1 if args.quick else 3)
    regimes = [REGIMES[0], REGIMES[4]] if args.quick else REGIMES
    # --quick is a smoke test: its JSON goes to out/ (git-ignored), not next to the real results
    json_path = args.json or (
        ROOT / "out" / "sequence_regimes_quick.json" if args.quick else RESULTS
    )
    plot_path = args.plot or (None if args.quick else PLOT)

    setup = subprocess.run(["bash", str(SEQ_SETUP)], capture_output=True, text=True, check=False)
    if setup.returncode != 0:
        raise SystemExit(f"SeQUeNCe setup failed:\n{setup.stderr[-2000:]}")

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t_start = time.perf_counter()
    rows = [
        {
            "regime": name,
            "distance_km": dist,
            "mu": mu,
            "detector_efficiency": eff,
            "pulses": n,
            "analytic": analytic(dist, mu, eff),
            "qkdtwin_params": qk_physics(dist, mu, eff),
            "runs": {"qkdtwin": [], "sequence": []},
            "skipped": None,
        }
        for n in sizes
        for (name, dist, mu, eff) in regimes
    ]
    for reg in regimes:
        a = analytic(*reg[1:])
        print(
            f"regime {reg[0]}: {reg[1]:g} km, mu {reg[2]}, eta_det {reg[3]}: expected detection "
            f"probability per pulse {a['p_det']:.3g} ({a['p_det_no_dead_time']:.3g} without "
            f"dead time), QBER {a['qber']:.4f}",
            file=sys.stderr,
        )
    # Prime: numba cache and disk caches of both (untimed).
    timed(qk_cli_cmd(qk_physics(*REGIMES[3][1:]), 10**5, 99, pp=True))
    timed(seq_cmd(*REGIMES[3][1:], 10**4, 99))
    loads = [load()]
    seq_rate: dict[str, list[float]] = {}  # regime -> SeQUeNCe engine s per pulse, each run
    k = 0
    for rep in range(repeats):
        seed = rep + 1
        for row in rows:
            reg = next(r for r in regimes if r[0] == row["regime"])
            n = row["pulses"]
            rates = seq_rate.get(row["regime"])
            predicted = statistics.median(rates) * n if rates else 0.0
            do_seq = predicted <= args.seq_cap_s
            if not do_seq and row["skipped"] is None:
                row["skipped"] = (
                    f"predicted SeQUeNCe engine time {predicted:.0f} s > "
                    f"{args.seq_cap_s:.0f} s cap "
                    f"(median of its runs so far: {predicted / n * 1e6:.2f} s per 1e6 pulses)"
                )
            order = ["sequence", "qkdtwin"] if k % 2 == 0 else ["qkdtwin", "sequence"]
            k += 1
            for sim in order:
                if sim == "sequence" and do_seq:
                    r = run_sequence(reg, n, seed)
                    seq_rate.setdefault(row["regime"], []).append(r["engine_s"] / n)
                    row["runs"]["sequence"].append(r)
                elif sim == "qkdtwin":
                    row["runs"]["qkdtwin"].append(run_qkdtwin(reg, n, seed))
            q = row["runs"]["qkdtwin"][-1]
            s = row["runs"]["sequence"][-1] if row["runs"]["sequence"] and do_seq else None
            print(
                f"[rep {rep + 1}/{repeats}] {row['regime']} {n:.0e}: qkdtwin engine "
                f"{q['engine_s']:.4f} s (+pp {q['engine_pp_s']:.4f}), whole {q['whole_s']:.2f} s "
                f"(+pp {q['whole_pp_s']:.2f}); "
                + (
                    f"sequence engine {s['engine_s']:.2f} s, whole {s['whole_s']:.2f} s"
                    if s
                    else "sequence skipped"
                )
                + f"; load {load()}",
                file=sys.stderr,
            )
        loads.append(load())
    # One cold-cache qkdtwin run (empty NUMBA_CACHE_DIR: every kernel compiles) per repeat.
    cold = []
    cold_reg = REGIMES[3] if REGIMES[3] in regimes else regimes[-1]
    cold_n = sizes[-1]  # 1e7 in the full run: Cascade reconciles frames there, so it compiles
    for rep in range(0 if args.quick else repeats):  # --quick: no cold-cache runs
        tmp = tempfile.mkdtemp(prefix="numba-cold-")
        try:
            phys = qk_physics(*cold_reg[1:])
            env = {"NUMBA_CACHE_DIR": tmp}
            _, w = timed(qk_cli_cmd(phys, cold_n, rep + 1, pp=False), env=env)
            shutil.rmtree(tmp)
            tmp = tempfile.mkdtemp(prefix="numba-cold-")
            _, wpp = timed(qk_cli_cmd(phys, cold_n, rep + 1, pp=True), env={"NUMBA_CACHE_DIR": tmp})
            cold.append({"whole_s": w, "whole_pp_s": wpp})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    loads.append(load())

    summarise(rows)
    problems = check_physics(rows)
    seq_meta = next(
        (x for r in rows for x in r["runs"]["sequence"]), {"version": "?", "python": "?"}
    )
    result = {
        "machine": machine(),
        "date": started,
        "duration_s": time.perf_counter() - t_start,
        "command": "python benchmarks/sequence_regimes.py"
        + (" --quick" if args.quick else "")
        + (f" --repeats {repeats}" if args.repeats else "")
        + (f" --seq-cap-s {args.seq_cap_s:g}" if args.seq_cap_s != SEQ_CAP_S else "")
        + (f" --write {args.write}" if args.write else ""),
        "peer": {"name": "sequence", "version": seq_meta["version"], "python": seq_meta["python"]},
        "qkdtwin_numba_cache": "warm (primed by an untimed run; the engine child also makes an "
        "untimed warm-up call)",
        "common": COMMON,
        "batch_pulses_sequence": BATCH,
        "seq_cap_s": args.seq_cap_s,
        "repeats": repeats,
        "loadavg_1_5_15": loads,
        "physics_problems": problems,
        "cold_numba": {"regime": cold_reg[0], "pulses": cold_n, "runs": cold},
        "rows": rows,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {json_path}", file=sys.stderr)
    for r in rows:
        m = r["median"]
        print(
            f"{r['regime']} {r['pulses']:.0e} p_det {r['analytic']['p_det']:.3g} "
            f"(qkdtwin {m['p_det_qkdtwin']:.3g}, "
            f"sequence {m.get('p_det_sequence', float('nan')):.3g})"
            f" engine x{m.get('engine_ratio', float('nan')):.0f}"
            f" whole x{m.get('whole_ratio', float('nan')):.1f}",
            file=sys.stderr,
        )
    if problems:
        print("PHYSICS MISMATCH:\n  " + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(1)
    if plot_path:
        plot(result, plot_path)
    if args.write:
        write_section(args.write, "sequence", markdown(result, plot_path))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.2))
    sizes = sorted({r["pulses"] for r in result["rows"]})
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for c, n in zip(colors, sizes, strict=False):
        rs = [r for r in result["rows"] if r["pulses"] == n and "engine_ratio" in r["median"]]
        if not rs:
            continue
        x = [r["analytic"]["p_det"] for r in rs]
        ax.plot(x, [r["median"]["engine_ratio"] for r in rs], "o-", color=c,
                label=f"engine, {n:.0e} pulses")  # fmt: skip
        ax.plot(x, [r["median"]["whole_ratio"] for r in rs], "s--", color=c,
                label=f"whole process, {n:.0e} pulses")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("detection probability per pulse")
    ax.set_ylabel("SeQUeNCe time / qkdtwin time")
    peer = result["peer"]
    ax.set_title(
        f"BB84, same physics: qkdtwin vs SeQUeNCe {peer['version']} (Python {peer['python']})\n"
        f"numba cache warm; medians of {result['repeats']} interleaved repeats; "
        f"{result['date']}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def _fmt_r(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}x" if x >= 10 else f"{x:.2g}x"


def markdown(r: dict, plot_path: Path | None) -> str:
    peer = r["peer"]
    pv = f"sequence {peer['version']}"
    cache = "numba warm"
    rows = r["rows"]
    with_seq = [x for x in rows if "engine_ratio" in x["median"]]
    er = [x["median"]["engine_ratio"] for x in with_seq]
    wr = [x["median"]["whole_ratio"] for x in with_seq]
    # "with post-processing" headline: only rows where qkdtwin's Cascade really ran
    ran = [x for x in with_seq if not x["median"]["pp_aborted"] and x["median"]["pp_frames"]]
    erpp = [x["median"]["engine_ratio_pp"] for x in ran] or [math.nan]
    wrpp = [x["median"]["whole_ratio_pp"] for x in ran] or [math.nan]
    cmd = r["command"]
    if "--write" not in cmd:
        cmd += (
            "` and `python benchmarks/sequence_regimes.py --render "
            "benchmarks/results/sequence_regimes.json --write BENCHMARKS.md"
        )
    pdets = [x["analytic"]["p_det"] for x in rows]
    lo_w = min(with_seq, key=lambda x: x["median"]["whole_ratio"])
    c = r["common"]
    lines = [
        "## Against an existing Python QKD simulator (SeQUeNCe), across regimes",
        "",
        f"`{cmd}` (in one step in `make bench`); raw results in "
        "`benchmarks/results/sequence_regimes.json`.",
        "",
        f"- Machine: {r['machine']}; shared, load average (1/5/15 min) during the run: "
        + ", ".join(r["loadavg_1_5_15"]),
        f"- Date: {r['date']}; {r['repeats']} interleaved repeats (each walks sizes x regimes, "
        "alternating which simulator runs first), medians shown; one thread each.",
        f"- Peer: SeQUeNCe `{pv}` on Python {peer['python']} in the throwaway `.bench-venv` "
        "(`benchmarks/external/setup.sh`; version read from `importlib.metadata` in the run).",
        "- Caches: qkdtwin's numba on-disk cache warm (primed by an untimed run; the engine "
        "figure also follows an untimed warm-up call in the same process); a cold-cache figure "
        "is below. SeQUeNCe is pure Python (no JIT cache); both simulators' `.pyc` files were "
        "warm (untimed priming run of each).",
        "",
        "Same physics in both (BB84, weak coherent pulses, threshold detectors): "
        f"{c['rep_rate_hz']:.0e} Hz, {c['attenuation_db_per_km']} dB/km, misalignment "
        f"{c['misalignment'] * 100:g} % (SeQUeNCe polarisation fidelity 1 - 2 e_d), "
        f"{c['dark_count_hz']:g} dark counts/s per detector (SeQUeNCe: Poisson process; "
        "qkdtwin: 1 - exp(-rate/f) per gate), "
        f"{c['dead_time_s'] * 1e9:g} ns dead time (SeQUeNCe blinds the "
        f"{rows[0]['analytic']['dead_slots']} following slots, and so does qkdtwin, "
        "ceil(t f) - 1; the rows below were measured before qkdtwin's count was corrected from "
        "ceil(t f) and gave it 37.5 ns to blind the same 3). Regimes vary distance, mu and "
        "detector "
        "efficiency; the expected detection probability per pulse p_det (analytic, dead time "
        "included) agrees with what each simulator measured (2 x sifted bits / pulses, pooled "
        "over repeats, within 4 sigma).",
        "",
        "Engine = the simulation call only (SeQUeNCe `Timeline.run()`: emission, propagation, "
        "detection, sifting; qkdtwin `simulate_link`). Whole process = wall time of a fresh "
        "`bb84_sequence.py` / `qkdtwin link simulate --json` subprocess, interpreter start and "
        "imports included. Ratio = SeQUeNCe time / qkdtwin time.",
        "",
        f"**qkdtwin's engine is {min(er):,.0f}-{max(er):,.0f}x faster than {pv} across "
        f"detection probabilities {min(pdets):.1g}..{max(pdets):.1g} per pulse and "
        f"{min(x['pulses'] for x in with_seq):.0e}..{max(x['pulses'] for x in with_seq):.0e} "
        f"pulses; whole process {min(wr):.1f}-{max(wr):,.1f}x** (numba cache warm). "
        f"The whole-process ratio is lowest at {lo_w['pulses']:.0e} pulses, where qkdtwin's "
        f"{lo_w['median']['whole_s']:.1f} s are nearly all start-up (interpreter, imports of "
        "the CLI, loading the numba cache; its engine takes milliseconds), and grows with the "
        "pulse count. "
        "With qkdtwin also running the full post-processing (estimation, Cascade, "
        "verification, privacy amplification) and SeQUeNCe sifting only, in the "
        f"{len(ran)} runs where qkdtwin's Cascade reconciled frames ("
        + ", ".join(f"{x['regime']} {x['pulses']:.0e}" for x in ran)
        + f"; the others abort at parameter estimation): engine {min(erpp):,.0f}-"
        f"{max(erpp):,.0f}x, whole process {min(wrpp):.1f}-{max(wrpp):,.1f}x. "
        "This replaces the earlier single '730x' (detector efficiency 0.1 at 25 km, a warm "
        "qkdtwin at 2x10^8 pulses against SeQUeNCe at 10^6 pulses, engine only).",
        "",
    ]
    if plot_path:
        rel = os.path.relpath(plot_path, ROOT)
        lines += [f"![SeQUeNCe / qkdtwin time ratio vs detection probability]({rel})", ""]
    lines += [
        "| regime | p_det expected (qkdtwin / SeQUeNCe measured) | pulses | peer | cache | "
        "SeQUeNCe engine s | qkdtwin engine s | engine ratio | SeQUeNCe whole s | "
        "qkdtwin whole s | whole ratio |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for x in rows:
        m = x["median"]
        reg = (
            f"{x['regime']}: {x['distance_km']:g} km, mu {x['mu']:g}, "
            f"eta {x['detector_efficiency']:g}"
        )
        pd = f"{x['analytic']['p_det']:.2g} ({m['p_det_qkdtwin']:.2g} / " + (
            f"{m['p_det_sequence']:.2g})" if "p_det_sequence" in m else "-)"
        )
        if "engine_ratio" in m:
            seq = [_fmt_s(m["seq_engine_s"]), None, None, _fmt_s(m["seq_whole_s"])]
            lines.append(
                f"| {reg} | {pd} | {x['pulses']:.0e} | {pv} | {cache} | {seq[0]} | "
                f"{_fmt_s(m['engine_s'])} | {_fmt_r(m['engine_ratio'])} | {seq[3]} | "
                f"{_fmt_s(m['whole_s'])} | {_fmt_r(m['whole_ratio'])} |"
            )
        else:
            lines.append(
                f"| {reg} | {pd} | {x['pulses']:.0e} | {pv} (skipped) | {cache} | skipped | "
                f"{_fmt_s(m['engine_s'])} | - | skipped | {_fmt_s(m['whole_s'])} | - |"
            )
    skipped = [x for x in rows if x["skipped"]]
    if skipped:
        lines += [
            "",
            f"Skipped SeQUeNCe runs (cap: {r['seq_cap_s']:g} s of engine time each): "
            + "; ".join(f"{x['regime']} {x['pulses']:.0e}: {x['skipped']}" for x in skipped)
            + ".",
        ]
    lines += [
        "",
        "### With post-processing",
        "",
        "qkdtwin with its full post-processing chain against SeQUeNCe's sifting-only BB84 (the "
        "same SeQUeNCe runs as above). SeQUeNCe's own Cascade (`sequence.qkd.cascade`) is not "
        "run: it first discloses a whole 10 000-bit key to estimate the error rate and then "
        "corrects frames of 10 240 sifted bits, so below p_det ~1e-2 not one frame completes in "
        "1e7 pulses, it reorders BB84's batches (so the pulse accounting above no longer holds) "
        "and SeQUeNCe has no privacy amplification. These ratios are therefore a lower bound "
        "(qkdtwin does more work). 'pp' says whether qkdtwin's chain reconciled frames or "
        "aborted at parameter estimation (too few sifted bits for the finite-key bound).",
        "",
        "| regime | pulses | peer | cache | qkdtwin engine+pp s | engine ratio | "
        "qkdtwin whole+pp s | whole ratio | pp |",
        "|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for x in rows:
        m = x["median"]
        pp = (
            f"aborted ({x['runs']['qkdtwin'][0].get('pp_abort_reason')})"
            if m["pp_aborted"]
            else f"Cascade, {m['pp_frames']} frame(s)"
        )
        has = "engine_ratio_pp" in m
        lines.append(
            f"| {x['regime']} | {x['pulses']:.0e} | {pv if has else pv + ' (skipped)'} | "
            f"{cache} | {_fmt_s(m['engine_pp_s'])} | "
            f"{_fmt_r(m['engine_ratio_pp']) if has else '-'} | {_fmt_s(m['whole_pp_s'])} | "
            f"{_fmt_r(m['whole_ratio_pp']) if has else '-'} | {pp} |"
        )
    cold = r["cold_numba"]
    if cold["runs"]:
        w = statistics.median(x["whole_s"] for x in cold["runs"])
        wpp = statistics.median(x["whole_pp_s"] for x in cold["runs"])
        warm = next(
            (
                x["median"]
                for x in rows
                if x["regime"] == cold["regime"] and x["pulses"] == cold["pulses"]
            ),
            None,
        )
        lines += [
            "",
            f"Cold numba cache (empty `NUMBA_CACHE_DIR`, every kernel compiled): qkdtwin's "
            f"whole process for regime {cold['regime']} at {cold['pulses']:.0e} pulses takes "
            f"{w:.2f} s ({wpp:.2f} s with post-processing), median of {len(cold['runs'])}"
            + (
                f", against {warm['whole_s']:.2f} s ({warm['whole_pp_s']:.2f} s) warm"
                + (
                    f"; whole-process ratio with a cold cache {warm['seq_whole_s'] / w:.1f}x "
                    f"({warm['seq_whole_s'] / wpp:.1f}x with post-processing)"
                    if warm.get("seq_whole_s")
                    else ""
                )
                if warm
                else ""
            )
            + ".",
        ]
    per_size = []
    for n in sorted({x["pulses"] for x in with_seq}):
        xs = sorted((x for x in with_seq if x["pulses"] == n), key=lambda x: x["analytic"]["p_det"])
        per_size.append(
            f"at {n:.0e} pulses the engine ratio is "
            + ", ".join(
                f"{x['median']['engine_ratio']:,.0f}x ({x['analytic']['p_det']:.1g})" for x in xs
            )
        )
    lines += [
        "",
        "Where the ratio comes from: SeQUeNCe's cost is per pulse slot (a Poisson draw and a "
        "phase draw per slot in `LightSource.emit`, basis lists and the sifting loop in Python) "
        "plus per photon (an event each through fibre, beam splitter and detector), so it grows "
        "with mu more than with p_det; qkdtwin's engine is vectorised per chunk of 2^20 pulses "
        "and its cost grows with the detections (sifting, and the dead-time filter, a numba "
        "loop over click events). Measured, by p_det: " + "; ".join(per_size) + ". "
        "Timing notes: qkdtwin's engine figure is the median of "
        f"{QK_INNER} calls in one process (they take milliseconds, and one scheduler hiccup on "
        "the shared machine doubles one); SeQUeNCe's is one `Timeline.run()` per process. "
        "SeQUeNCe's Alice is switched off after the counted batches, so its time holds no "
        "uncounted pulses (see `benchmarks/external/README.md`).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
