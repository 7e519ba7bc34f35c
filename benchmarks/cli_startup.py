"""CLI start-up benchmark: ``qkdtwin link rate`` against a bare ``import numpy, scipy.optimize``.

Both run as fresh interpreters, interleaved (their order alternating from round to round, so
a machine that slows down or speeds up weighs on both alike), after warm-up runs that also
fill numba's cache and the page cache. The figure of merit is the difference of the medians
of wall time: what the command costs on top of the scientific stack it cannot avoid.

Where the environment forbids bytecode caches (``PYTHONDONTWRITEBYTECODE``, as in some
sandboxes: every module of the source tree is compiled on every run), a second pair of series
runs with the caches in a temporary ``PYTHONPYCACHEPREFIX``, as an installed package has them.

Usage::

    python benchmarks/cli_startup.py [--runs 15] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

#: The command of the issue, after ``qkdtwin``.
ARGS = [
    "link",
    "rate",
    "--protocol",
    "decoy-bb84",
    "--distance-km",
    "50",
    "--preset",
    "gys",
    "--json",
]
BARE = [sys.executable, "-c", "import numpy, scipy.optimize"]
#: The issue's target: the command within this many seconds of the bare import.
TARGET_S = 0.15


def qkdtwin_command() -> list[str]:
    """The ``qkdtwin`` console script beside this interpreter, else ``python -m qkdtwin``."""
    script = Path(sys.executable).with_name("qkdtwin")
    if script.is_file():
        return [str(script)]
    found = shutil.which("qkdtwin")
    return [found] if found else [sys.executable, "-m", "qkdtwin"]


def wall_time(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from start to exit of ``argv``; raise if it fails."""
    t = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return elapsed


def measure(runs: int, envs: dict[str, dict[str, str]], warmup: int = 2) -> dict[str, Any]:
    """Wall times of the bare import and of the command in each environment of ``envs``.

    ``runs`` interleaved rounds: each round runs every (environment, program) pair once, in
    an order that is reversed every other round.
    """
    command = [*qkdtwin_command(), *ARGS]
    pairs = [
        (mode, what, argv) for mode in envs for what, argv in (("bare", BARE), ("command", command))
    ]
    for _ in range(warmup):  # numba's cache, the page cache, bytecode caches
        for mode, _what, argv in pairs:
            wall_time(argv, envs[mode])
    times: dict[tuple[str, str], list[float]] = {(m, w): [] for m, w, _ in pairs}
    for i in range(runs):
        for mode, what, argv in pairs if i % 2 == 0 else pairs[::-1]:
            times[mode, what].append(wall_time(argv, envs[mode]))
    return {
        mode: {
            "bare": statistics.median(times[mode, "bare"]),
            "command": statistics.median(times[mode, "command"]),
        }
        for mode in envs
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="interleaved rounds (>= 10)")
    ap.add_argument("--write", type=Path, default=None, help="rewrite this BENCHMARKS.md section")
    args = ap.parse_args()
    if args.runs < 10:
        ap.error("--runs must be >= 10")
    envs = {"as run": dict(os.environ)}
    with tempfile.TemporaryDirectory(prefix="qkdtwin-pyc-") as pyc:
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            envs["bytecode cached"] = cached | {"PYTHONPYCACHEPREFIX": pyc}
        medians = measure(args.runs, envs)
    shown = " ".join(["qkdtwin", *ARGS])
    rows = []
    for mode, m in medians.items():
        diff = m["command"] - m["bare"]
        verdict = "within" if diff <= TARGET_S else "over"
        print(
            f"{mode}: bare import {m['bare']:.3f} s, command {m['command']:.3f} s, "
            f"difference {diff:.3f} s ({verdict} the {TARGET_S} s target)"
        )
        rows.append(f"| {mode} | {m['bare']:.3f} | {m['command']:.3f} | {diff:.3f} |")
    print(f"medians of {args.runs} interleaved rounds; command: {shown}")
    if args.write:
        machine = platform.processor() or platform.machine()
        cores = os.cpu_count()
        prose = (
            f'`{shown}` against a bare `python -c "import numpy, scipy.optimize"`: fresh '
            f"interpreters, {args.runs} interleaved rounds after 2 warm-up runs of each (numba's "
            "cache and the page cache warm); median wall time per run, in seconds. Target: the "
            f"command within {TARGET_S} s of the bare import. The subcommands are imported "
            "lazily: this command loads the CLI's root and link modules and the QKD layer's key "
            "rate modules, no other layer."
        )
        if len(medians) > 1:
            prose += (
                " This environment sets `PYTHONDONTWRITEBYTECODE` (every module of the source "
                "tree compiled on every run); the `bytecode cached` row keeps the caches in a "
                "temporary `PYTHONPYCACHEPREFIX`, as an installed package has them."
            )
        lines = [
            "## CLI start-up",
            "",
            textwrap.fill(prose, width=95, break_long_words=False, break_on_hyphens=False),
            "",
            "| bytecode | bare import | command | difference |",
            "|---|---|---|---|",
            *rows,
            "",
            "`python benchmarks/cli_startup.py --write BENCHMARKS.md`; "
            f"{machine}, {cores} cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        ]
        write_section(args.write, "cli-startup", "\n".join(lines))


if __name__ == "__main__":
    main()
