"""The paper's algorithm under both readings of its line 21, against the static split and ours.

Fig. 4 and Fig. 5 settings of docs/reproduction.md (seed network, X = 10 keys per service,
pools start full, load 1000 = 1000 expected services in a window of T = 1000), at load 1000
only, with two demand patterns: symmetric (the paper's: uniform over the 15 gateway pairs) and
skewed (pair weights 1/rank, the busiest OLT's budget ~6x over-subscribed). Every policy runs on
the same arrivals per seed (``default_rng([seed, 0])``, seeds 100-129, none used to tune any
policy), so the margins are paired: mean ± standard error over the seeds, percentage points.

Readings of line 21 ("update v_in^x and v_out^x", after the minimum of line 20):
``adaptive-key-residue`` = no resplit (an OLT's unused offer stays unspent);
``adaptive-key-residue-resplit`` = each OLT's remainder re-split among its pools until nothing
changes (docs/adaptive-key-residue.md).

``python benchmarks/akr_readings.py [--seeds 30] [--write BENCHMARKS.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402
from qkdtwin.network import seed_topology, simulate, skewed_demands, uniform_demands  # noqa: E402
from qkdtwin.network.relay import relay_costs  # noqa: E402

SECTION = "akr-readings"
POLICIES = ("static", "adaptive-key-residue", "adaptive-key-residue-resplit", "ttd-balance")
SHORT = {
    "static": "static",
    "adaptive-key-residue": "AKR (no resplit)",
    "adaptive-key-residue-resplit": "AKR (resplit)",
    "ttd-balance": "ttd-balance (ours)",
}
#: (figure, C, V)
SETTINGS = [("Fig. 4", c, 2.0) for c in (200, 400, 600, 800, 1000)] + [
    ("Fig. 5", 200, v) for v in (1.0, 3.0, 4.0, 5.0, 6.0)
]
#: (reading of the first, reading of the second): the margins reported, first minus second.
MARGINS = [
    ("adaptive-key-residue-resplit", "adaptive-key-residue"),
    ("adaptive-key-residue", "static"),
    ("adaptive-key-residue-resplit", "static"),
    ("ttd-balance", "adaptive-key-residue"),
    ("ttd-balance", "adaptive-key-residue-resplit"),
]


def run(seeds: range) -> list[dict[str, object]]:
    rows = []
    for fig, cap, v in SETTINGS:
        topo = seed_topology(v)
        uniform = uniform_demands(topo, 1.0)
        for pattern, demands in (("symmetric", uniform), ("skewed", skewed_demands(topo, 1.0))):
            costs = relay_costs(topo, [(d.src, d.dst) for d in demands])
            rates = {
                pol: np.array(
                    [
                        simulate(
                            topo,
                            demands,
                            pool_capacity=cap,
                            keys_per_service=10,
                            policy=pol,
                            rng=np.random.default_rng([seed, 0]),
                            duration=1000.0,
                            costs=costs,
                        ).success_rate
                        for seed in seeds
                    ]
                )
                for pol in POLICIES
            }
            rows.append({"fig": fig, "C": cap, "V": v, "pattern": pattern, "rates": rates})
    return rows


def _margin(a: np.ndarray, b: np.ndarray) -> str:
    d = 100.0 * (a - b)
    if np.all(d == 0):
        return "0"
    se = d.std(ddof=1) / np.sqrt(d.size)
    mark = "**" if abs(d.mean()) > 2 * se else ""
    return f"{mark}{d.mean():+.2f} ± {se:.2f}{mark}"


def report(rows: list[dict[str, object]], seeds: range, took_s: float) -> str:
    lines = [
        "## The paper's algorithm, both readings of line 21 (`benchmarks/akr_readings.py`)",
        "",
        f"`python benchmarks/akr_readings.py --write BENCHMARKS.md`; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; took {took_s:.0f} s.",
        "",
        "Seed network, X = 10, pools start full, load 1000 (window T = 1000), seeds "
        f"{seeds.start}-{seeds.stop - 1} ({len(seeds)}; none used to tune a policy), every "
        "policy on the same arrivals per seed. *AKR (no resplit)* = `adaptive-key-residue`, "
        "*AKR (resplit)* = `adaptive-key-residue-resplit` (docs/adaptive-key-residue.md, line "
        "21). Success rate, mean over the seeds:",
        "",
        "| setting | C | V | demand | " + " | ".join(SHORT[p] for p in POLICIES) + " |",
        "|---|---:|---:|---|" + "---:|" * len(POLICIES),
    ]
    for r in rows:
        rates = r["rates"]
        assert isinstance(rates, dict)
        lines.append(
            f"| {r['fig']} | {r['C']} | {r['V']:g} | {r['pattern']} | "
            + " | ".join(f"{rates[p].mean():.4f}" for p in POLICIES)
            + " |"
        )
    lines += [
        "",
        "Paired margins, percentage points (mean ± standard error; **bold**: beyond 2 standard "
        "errors):",
        "",
        "| setting | C | V | demand | "
        + " | ".join(f"{SHORT[a]} − {SHORT[b]}" for a, b in MARGINS)
        + " |",
        "|---|---:|---:|---|" + "---:|" * len(MARGINS),
    ]
    for r in rows:
        rates = r["rates"]
        assert isinstance(rates, dict)
        lines.append(
            f"| {r['fig']} | {r['C']} | {r['V']:g} | {r['pattern']} | "
            + " | ".join(_margin(rates[a], rates[b]) for a, b in MARGINS)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    seeds = range(100, 100 + args.seeds)
    t0 = time.time()
    rows = run(seeds)
    md = report(rows, seeds, time.time() - t0)
    print(md)
    if args.write is not None:
        write_section(args.write, SECTION, md)


if __name__ == "__main__":
    main()
