"""Link-engine throughput and memory benchmark; writes BENCHMARKS.md.

Measures, on one process and one core:

* pulses per second of ``simulate_link`` for BB84 and decoy-state BB84 at 25 km (``gys``),
  statistics only (no bits kept);
* peak resident memory of a whole run at 10^7 and 10^9 pulses (each in a fresh subprocess, so
  the peak belongs to that run alone) — memory must stay flat as the pulse count grows.

The comparison with an existing Python QKD simulator (SeQUeNCe) across regimes is
``benchmarks/sequence_regimes.py`` (its own BENCHMARKS.md section).

Usage::

    python benchmarks/link_throughput.py [--write BENCHMARKS.md] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_CHILD = r"""
import json, resource, sys, time
import numpy as np
from qkdtwin.qkd import build_link_model, simulate_link
protocol, distance = sys.argv[1], float(sys.argv[2])
pulses, seed = int(float(sys.argv[3])), int(sys.argv[4])
model = build_link_model(protocol, distance, "gys")
simulate_link(protocol, model, 2_000_000, np.random.default_rng(0))  # warm-up
t = time.perf_counter()
res = simulate_link(protocol, model, pulses, np.random.default_rng(seed))
elapsed = time.perf_counter() - t
print(json.dumps({"protocol": protocol, "pulses": pulses, "elapsed_s": elapsed,
                  "pulses_per_s": pulses / elapsed, "qber": res.qber,
                  "sifted_bits": res.sifted_bits,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(protocol: str, pulses: float, distance: float = 25.0, seed: int = 1) -> dict:
    """Run one simulation in a fresh single-threaded interpreter pinned to one core."""
    env = os.environ | SINGLE_THREAD
    cmd = [
        sys.executable,
        "-c",
        _CHILD,
        protocol,
        str(distance),
        str(int(pulses)),
        str(seed),
    ]
    if sys.platform.startswith("linux"):
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="Markdown file to (re)write with the results")
    ap.add_argument("--quick", action="store_true", help="Smaller sizes (smoke test)")
    args = ap.parse_args()

    thr_pulses = 2e7 if args.quick else 2e8
    mem_sizes = (1e6, 1e7) if args.quick else (1e7, 1e9)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    throughput = [run_child(p, thr_pulses) for p in ("bb84", "decoy-bb84")]
    for r in throughput:
        print(f"{r['protocol']}: {r['pulses_per_s']:.3g} pulses/s", file=sys.stderr)
    memory = [run_child("decoy-bb84", n) for n in mem_sizes]
    for r in memory:
        print(
            f"decoy-bb84 {r['pulses']:.0e} pulses: peak RSS {r['peak_rss_mib']:.0f} MiB",
            file=sys.stderr,
        )
    result = {
        "machine": machine(),
        "date": started,
        "throughput": throughput,
        "memory": memory,
    }
    print(json.dumps(result, indent=2))
    if args.write:
        write_markdown(args.write, result)


def write_markdown(path: Path, r: dict) -> None:
    lines = [
        "## Link engine throughput (25 km, `gys` preset, statistics only)",
        "",
        "`python benchmarks/link_throughput.py --write BENCHMARKS.md`; one process pinned to one",
        "core (`taskset -c 0`, BLAS/OpenMP threads = 1).",
        "",
        f"- Machine: {r['machine']}",
        f"- Date: {r['date']}",
        "- Caches: none applies to the timed calls: with the `gys` detector (no dead time) the",
        "  engine runs no numba kernel (the compiled dead-time filter is off) and no FFT; each",
        "  process makes one untimed 2x10^6-pulse call first.",
        "",
        "| protocol | pulses | wall time (s) | pulses/s | QBER |",
        "|---|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {t['protocol']} | {t['pulses']:.0e} | {t['elapsed_s']:.2f} | "
        f"{t['pulses_per_s']:.3g} | {t['qber']:.4f} |"
        for t in r["throughput"]
    )
    lines += [
        "",
        "Target (issue #2): >= 2x10^7 decoy-BB84 pulses per second on one core.",
        "",
        "## Peak memory of a whole run (decoy-state BB84, fresh process each)",
        "",
        "Same command, machine, date and caches as above: each row is one fresh process (the",
        "untimed 2x10^6-pulse call, then the timed run); wall time = the timed run, peak RSS =",
        "the whole process.",
        "",
        "| pulses | wall time (s) | peak RSS (MiB) |",
        "|---:|---:|---:|",
    ]
    for m in r["memory"]:
        lines.append(f"| {m['pulses']:.0e} | {m['elapsed_s']:.1f} | {m['peak_rss_mib']:.0f} |")
    lines += [
        "",
        "The engine streams fixed chunks of 2^20 pulses, so memory does not grow with",
        "the pulse count (it includes the interpreter, NumPy and SciPy).",
        "",
    ]
    write_section(path, "link", "\n".join(lines))


if __name__ == "__main__":
    main()
