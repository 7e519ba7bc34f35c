"""Whole-process wall time of the README's commands, from a cold and from a warm cache.

Every command of the README's tour that ends on its own (servers and Ctrl-C commands, the
attacks sent to a serving plant and the replay of a served twin's recording are left out) runs
as a fresh process:

* **warm**: numba's on-disk cache and Python's bytecode caches as ``make venv`` leaves them
  (median of ``--runs`` runs, after one untimed run);
* **cold**: a new empty ``NUMBA_CACHE_DIR`` and ``PYTHONPYCACHEPREFIX`` for the run, so every
  compiled kernel is compiled again and every module byte-compiled again: what the very first
  run after a clone costs without ``make venv``'s warm-up.

Usage::

    python benchmarks/readme_commands.py [--runs 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

QKDTWIN = str(Path(sys.executable).with_name("qkdtwin"))

#: The README's commands (after ``qkdtwin``) that end on their own; ``{out}`` is a scratch dir.
COMMANDS = [
    "link rate --protocol all --distance-km 0:300:10 --preset gys --plot {out}/rate.png",
    "link max-distance --protocol decoy-bb84 --preset gys --json",
    "link max-distance --protocol decoy-bb84 --preset gys --decoy-bound infinite",
    "link simulate --protocol decoy-bb84 --distance-km 50 --pulses 1e8 --seed 1",
    "link simulate --protocol bb84 --distance-km 25 --pulses 2e7 --attack intercept-resend:1",
    "link simulate --protocol decoy-bb84 --distance-km 60 --pulses 1e8 --attack pns",
    "link simulate --protocol e91 --distance-km 20 --pulses 5e7",
    "link simulate --protocol decoy-bb84 --distance-km 25 --pulses 1e7 --preset boaron2018 "
    "--postprocess --keys-out {out}/keys.txt --json",
    "postprocess bench --frame-bits 100000 --qber 0.02",
    "teleport table",
    "teleport run --trials 2000",
    "teleport run --trials 2000 --no-controller",
    "teleport eavesdrop --decoys 1:10 --trials 20000 --plot {out}/decoys.png",
    "network run examples/network-seed.yaml --json",
    "reproduce fig4 --out {out}/fig4",
    "network sweep examples/network-sweep.yaml --out {out}/sweep.csv",
    "kms get-keys --help",
    "iot run --scheme fixed --devices 100 --messages 20 --json",
    "iot run --scheme mobile --devices 100 --messages 20 --broker mqtt://127.0.0.1:1883 --json",
    "twin demo",
]


def _run(cmd: str, env: dict[str, str], out: Path) -> float:
    args = [QKDTWIN, *shlex.split(cmd.format(out=out))]
    sweep = out / "sweep.csv"
    if sweep.exists():  # a sweep resumes: start it from an empty file every time
        sweep.unlink()
    t = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"qkdtwin {cmd}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return wall


def measure(runs: int) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        base = dict(os.environ)
        for cmd in COMMANDS:
            _run(cmd, base, out)  # untimed: fills the caches (warm) and the page cache
            warm = [_run(cmd, base, out) for _ in range(runs)]
            with tempfile.TemporaryDirectory() as numba_dir, tempfile.TemporaryDirectory() as pyc:
                cold_env = base | {"NUMBA_CACHE_DIR": numba_dir, "PYTHONPYCACHEPREFIX": pyc}
                cold = _run(cmd, cold_env, out)
            row: dict[str, float | str] = {
                "command": f"qkdtwin {cmd.format(out='out')}",
                "warm_s": statistics.median(warm),
                "cold_s": cold,
            }
            rows.append(row)
            print(f"{row['warm_s']:7.2f} s warm {cold:7.2f} s cold  {row['command']}", flush=True)
    return rows


def report(rows: list[dict[str, float | str]], runs: int) -> str:
    lines = [
        "## The README's commands, whole process (`benchmarks/readme_commands.py`)",
        "",
        f"`python benchmarks/readme_commands.py --runs {runs} --write BENCHMARKS.md`; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        f"Wall time of a fresh `qkdtwin` process. **warm**: numba and bytecode caches as "
        f"`make venv` leaves them (it compiles every numba kernel once), median of {runs} runs "
        "after an untimed one. **cold**: an empty `NUMBA_CACHE_DIR` and `PYTHONPYCACHEPREFIX` "
        "(every kernel compiled, every module byte-compiled): a first run without "
        "`make venv`'s warm-up. Left out: the commands that serve until Ctrl-C (`kms "
        "dev-pair`, `twin attach-demo --serve`, `plant serve`, `twin serve`), the `plant "
        "attack` calls to a serving plant, and `twin serve --replay`, which replays the "
        "recording a served attached twin made.",
        "",
        "| command | warm (s) | cold (s) | cold - warm (s) |",
        "|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| `{r['command']}` | {r['warm_s']:.2f} | {r['cold_s']:.2f} "
        f"| {float(r['cold_s']) - float(r['warm_s']):.2f} |"
        for r in rows
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    rows = measure(args.runs)
    text = report(rows, args.runs)
    print(text)
    if args.write:
        write_section(args.write, "readme_commands", text)


if __name__ == "__main__":
    main()
