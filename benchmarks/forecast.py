"""Key-supply forecasts against simulated stores: interval coverage, error, warning quality.

Each case is a KME store with Poisson supply ``lambda_s`` and Poisson consumption
``lambda_c`` (keys/s), simulated second by second. The forecaster sees what the attached twin
sees: the consumption through a polled ``delivered_total`` counter over a 300 s window
(:class:`qkdtwin.twin.forecast.ConsumptionTracker`, one poll per second), the supply as an
estimate with a relative error (the calibrated key rate: drawn around the truth with the stated
standard error, which is also passed to the forecast). At the end of the window it forecasts
from the level then; the store is then simulated on until it empties (or the horizon ends).

Reported per case: coverage of the 90 % interval (share of realised depletion times inside it),
the median relative error of the median forecast, and the warnings (lead 300 s, probability
0.5): precision (warned stores that empty within the lead) and recall (stores that empty
within the lead and were warned).

``python benchmarks/forecast.py [--seeds N] [--write BENCHMARKS.md]``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qkdtwin.twin.forecast import ConsumptionTracker, forecast_depletion  # noqa: E402

WINDOW_S = 300
LEAD_S = 300.0
CASES = [
    # (name, level at forecast time, supply, consumption, supply relative SE)
    ("draining fast", 600, 2.0, 6.0, 0.02),
    ("draining slowly", 2000, 4.0, 5.0, 0.02),
    ("empty near the 300 s lead", 900, 2.0, 5.0, 0.02),
    ("balanced", 800, 5.0, 5.0, 0.02),
    ("filling", 300, 6.0, 5.0, 0.02),
    ("draining, supply 10 % off", 1500, 4.0, 6.0, 0.10),
]


def run_case(level: int, lam_s: float, lam_c: float, rel_se: float, seeds: int, horizon: int):
    rng = np.random.default_rng([level, int(lam_s * 100), int(lam_c * 100), seeds])
    covered = inside_n = 0
    errors = []
    warned = warned_ok = emptied_lead = emptied_lead_warned = 0
    for seed in range(seeds):
        tr = ConsumptionTracker(WINDOW_S)
        total = 0
        for t in range(WINDOW_S + 1):
            tr.observe(float(t), total)
            total += int(rng.poisson(lam_c))
        rate, var, se = tr.rate()
        supply_hat = lam_s * (1.0 + rel_se * rng.standard_normal())
        f = forecast_depletion(
            level,
            max(supply_hat, 0.0),
            rate,
            supply_se=rel_se * lam_s,
            consumption_se=se,
            consumption_var_per_s=var,
            lead_s=LEAD_S,
            rng=seed,
        )
        steps = rng.poisson(lam_s, horizon) - rng.poisson(lam_c, horizon)
        path = level + np.cumsum(steps)
        hit = np.flatnonzero(path <= 0)
        realised = float(hit[0] + 1) if hit.size else math.inf
        lo, hi = f.ttd_interval_s
        inside_n += 1
        covered += lo <= realised <= hi
        if math.isfinite(realised) and math.isfinite(f.ttd_s):
            errors.append(abs(f.ttd_s - realised) / realised)
        if f.warning:
            warned += 1
            warned_ok += realised <= LEAD_S
        if realised <= LEAD_S:
            emptied_lead += 1
            emptied_lead_warned += f.warning
    return {
        "coverage": covered / inside_n,
        "median_rel_error": float(np.median(errors)) if errors else math.nan,
        "warned": warned,
        "precision": warned_ok / warned if warned else math.nan,
        "emptied_within_lead": emptied_lead,
        "recall": emptied_lead_warned / emptied_lead if emptied_lead else math.nan,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=500)
    ap.add_argument("--horizon", type=int, default=20_000, help="simulated seconds after")
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for name, level, lam_s, lam_c, rel in CASES:
        r = run_case(level, lam_s, lam_c, rel, args.seeds, args.horizon)
        rows.append((name, level, lam_s, lam_c, rel, r))
        print(f"{name}: {r}", file=sys.stderr)
    total = time.perf_counter() - t0

    def pct(x: float) -> str:
        return "-" if math.isnan(x) else f"{100 * x:.1f} %"

    lines = [
        "| case | keys | supply, keys/s | consumption, keys/s | supply SE | 90 % interval "
        "covers | median error of the median | warnings (precision) | emptied within 300 s "
        "(warned) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, level, lam_s, lam_c, rel, r in rows:
        lines.append(
            f"| {name} | {level} | {lam_s:g} | {lam_c:g} | {100 * rel:g} % "
            f"| {pct(r['coverage'])} | {pct(r['median_rel_error'])} "
            f"| {r['warned']} ({pct(r['precision'])}) "
            f"| {r['emptied_within_lead']} ({pct(r['recall'])}) |"
        )
    exe = Path(sys.executable)
    py = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"
    md = f"""## Key-supply forecasts (`benchmarks/forecast.py`)

`{py} benchmarks/forecast.py {" ".join(sys.argv[1:])}`; {platform.processor() or "CPU"},
{os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__};
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; {total:.0f} s.

Stores with Poisson supply and consumption simulated second by second, {args.seeds} seeds per
case; the forecaster sees the consumption through a polled counter (300 s window, one poll per
second) and the supply as an estimate with the stated relative standard error (also passed to
it), forecasts at the end of the window, and the store runs on for up to {args.horizon} s.
Warnings: probability >= 0.5 of emptying within 300 s. Precision = warned stores that did empty
within 300 s; the rest are the false warnings.

{chr(10).join(lines)}
"""
    print(md)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_section

        write_section(args.write, "forecast", md)


if __name__ == "__main__":
    main()
