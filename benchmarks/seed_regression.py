"""The seed topology, today's engine against the engine before the incremental allocation work.

Issue 20 asks that the incremental policies leave the seed paper's 15-pool network no slower
than it was. This runs the same work (seed topology, uniform demands, C = 200, X = 10, the same
arrivals) under the code of a base revision and under the working tree, in fresh processes
that alternate (base, head, base, head, ...), so both see the same machine load. Each process
imports its own tree, runs 1,000 requests to load (or compile) its kernels, then times the
run; numba caches are warm in every timed run.

Usage::

    python benchmarks/seed_regression.py [--base eb5bda8] [--rounds 5] [--write BENCHMARKS.md]
    python benchmarks/seed_regression.py --from-json --write BENCHMARKS.md

The base tree is exported with ``git archive`` into a temporary directory and put first on
``PYTHONPATH`` of its processes. Results also go to ``benchmarks/results/seed_regression.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402
from network_scale import POLICIES  # noqa: E402

#: The last commit before the by-class event loops (d52d608): per-pool Adaptive Key Residue.
BASE = "eb5bda8"
REQUESTS = {"ttd-balance": 300_000}
DEFAULT_REQUESTS = 2_000_000

CHILD = r"""
import json, sys, time
import numpy as np
import qkdtwin
from qkdtwin.network import seed_topology, simulate, uniform_demands
policy, n = sys.argv[1], int(sys.argv[2])
topo = seed_topology(2.0)
demands = uniform_demands(topo, 1.0)
kw = {"pool_capacity": 200, "keys_per_service": 10, "policy": policy}
simulate(topo, demands, rng=np.random.default_rng(0), services=1000, **kw)  # load the kernels
t = time.perf_counter()
res = simulate(topo, demands, rng=np.random.default_rng(1), services=n, **kw)
total = time.perf_counter() - t
print(json.dumps({"engine_req_s": n / res.elapsed_s, "e2e_req_s": n / total,
                  "success": res.success_rate, "where": qkdtwin.__file__}))
"""


def _run(src: Path, policy: str, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, policy, str(n)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if not row["where"].startswith(str(src)):
        raise RuntimeError(f"child imported {row['where']}, not the tree under {src}")
    return row


def measure(base: str, rounds: int, policies: tuple[str, ...] = POLICIES) -> dict:
    rev = subprocess.run(
        ["git", "rev-parse", "--short", base], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True,
        cwd=ROOT,
    ).stdout.strip()  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", rev, "src"], check=True, capture_output=True, cwd=ROOT
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {"base": Path(tmp) / "src", "head": ROOT / "src"}
        for policy in policies:
            n = REQUESTS.get(policy, DEFAULT_REQUESTS)
            got: dict[str, list[dict]] = {"base": [], "head": []}
            _run(trees["base"], policy, 1000)  # compile the base tree's kernels, untimed
            for _ in range(rounds):
                for name in ("base", "head"):
                    got[name].append(_run(trees[name], policy, n))
            row: dict[str, Any] = {
                "policy": policy,
                "requests": n,
                "rounds": rounds,
                "head": head,
                "base": rev,
            }
            for name in ("base", "head"):
                row[f"{name}_runs"] = [r["engine_req_s"] for r in got[name]]
                row[f"{name}_engine"] = statistics.median(row[f"{name}_runs"])
                row[f"{name}_e2e"] = statistics.median(r["e2e_req_s"] for r in got[name])
                row[f"{name}_success"] = got[name][0]["success"]
            row["ratio_engine"] = row["head_engine"] / row["base_engine"]
            row["ratio_e2e"] = row["head_e2e"] / row["base_e2e"]
            # each round's head over the base run just before it: the spread of the ratio
            pairs = [h / b for h, b in zip(row["head_runs"], row["base_runs"], strict=True)]
            row["ratio_min"], row["ratio_max"] = min(pairs), max(pairs)
            rows.append(row)
            print(
                f"{policy:<30} base {row['base_engine']:>12,.0f}  head {row['head_engine']:>12,.0f}"
                f"  engine x{row['ratio_engine']:.2f}  end-to-end x{row['ratio_e2e']:.2f}",
                flush=True,
            )
    return {
        "base": rev,
        "head": head,
        "rounds": rounds,
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": os.getloadavg()[0],
    }


def _spread(row: dict) -> str:
    if "ratio_min" not in row:
        return "-"
    return f"{row['ratio_min']:.2f} - {row['ratio_max']:.2f}"


def report(data: dict) -> str:
    lines = [
        "## Seed topology: today against before the incremental allocation "
        "(`benchmarks/seed_regression.py`)",
        "",
        f"`python benchmarks/seed_regression.py --base {data['base']} --rounds {data['rounds']} "
        f"--write BENCHMARKS.md`; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores visible (one used), Python {platform.python_version()}, "
        f"{data['date']}; load average at the end {data['load']:.1f}. Base = `{data['base']}` "
        f"(the engine before the by-class event loops), head = `{data['head']}` plus the "
        "working tree. Seed topology, uniform demands, C = 200, X = 10, the same arrivals in "
        f"both; {data['rounds']} fresh processes each, alternating base and head; numba cache "
        "warm in every timed run (1,000 requests first). Medians; `engine` = the compiled event "
        "loop, `end-to-end` adds arrival generation and result assembly.",
        "",
        "| policy | requests | base engine req/s | head engine req/s | head / base (engine) "
        "| per round (min - max) | head / base (end-to-end) | success base / head |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    lines.extend(
        f"| {r['policy']} | {r['requests']:,} | {r['base_engine']:,.0f} "
        f"| {r['head_engine']:,.0f} | {r['ratio_engine']:.2f} "
        f"| {_spread(r)} | {r['ratio_e2e']:.2f} "
        f"| {r['base_success']:.4f} / {r['head_success']:.4f} |"
        for r in data["rows"]
    )
    if data.get("remeasured"):
        rounds = {r["policy"]: r.get("rounds", data["rounds"]) for r in data["rows"]}
        heads = {r["policy"]: r.get("head", data["head"]) for r in data["rows"]}
        lines += [
            "",
            "Rows re-measured since (`--only POLICY --rounds N`, same command otherwise): "
            + ", ".join(
                f"{k} on {v} ({rounds[k]} rounds, head `{heads.get(k, '?')}`)"
                for k, v in data["remeasured"].items()
            )
            + ".",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--only",
        choices=POLICIES,
        action="append",
        default=None,
        help="measure these policies only and merge them into the saved results",
    )
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument(
        "--from-json",
        action="store_true",
        help="rewrite the report from benchmarks/results/seed_regression.json",
    )
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    known = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"],
        capture_output=True,
        cwd=ROOT,
    )
    if not args.from_json and known.returncode != 0:
        ap.error(f"--base {args.base!r} is not a commit of this repository")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    if args.from_json:
        data = json.loads((out / "seed_regression.json").read_text())
    else:
        data = measure(args.base, args.rounds, tuple(args.only or POLICIES))
        saved = out / "seed_regression.json"
        if args.only and saved.exists():  # keep the other policies' rows
            old = json.loads(saved.read_text())
            new = {r["policy"]: r for r in data["rows"]}
            data["rows"] = [new.pop(r["policy"], r) for r in old["rows"]] + list(new.values())
            data["remeasured"] = {**old.get("remeasured", {})}
            for p in args.only:
                data["remeasured"][p] = data["date"]
            # the header describes the full run; a re-measured row names its own revisions
            for key in ("date", "rounds", "head", "base", "load"):
                data[key] = old[key]
        saved.write_text(json.dumps(data, indent=1))
    text = report(data)
    print(text)
    if args.write is not None:
        write_section(args.write, "seed_regression", text)


if __name__ == "__main__":
    main()
