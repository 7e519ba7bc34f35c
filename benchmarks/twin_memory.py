"""Resident memory of the served self-simulated twin vs its size, over its first minutes.

Usage: ``python benchmarks/twin_memory.py [--links 100,300,1000] [--devices 10]
[--marks 60,300,600] [--write BENCHMARKS.md]``.

The twins of every size are served at once (``qkdtwin twin serve --speed 1``, the scenarios of
``twin_scale.py``) and each one's ``VmRSS`` is read from ``/proc`` after it started and at each
mark (wall seconds after the last one started), with its tick. The sizes share the machine's
cores, so the larger twins may tick less than once a second: the tick column says how far each
got. Memory grows with the windows a twin keeps (the detectors' and estimators' 600-s windows,
the history), so the last mark is the one to compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
import yaml  # noqa: E402

from _report import write_section  # noqa: E402
from _serve import serve  # noqa: E402
from twin_scale import SHAPES, parse_sizes, rss_mib, scenario  # noqa: E402


def measure(links: list[int], devices: int, marks: list[float]) -> list[dict[str, Any]]:
    """Serve one twin per size, read each one's RSS at start and at every mark."""
    procs = []
    rows: list[dict[str, Any]] = []
    try:
        for n in links:
            work = Path(tempfile.mkdtemp(prefix=f"twin-memory-{n}-"))
            path = work / "scenario.yaml"
            path.write_text(yaml.safe_dump(scenario(n, devices)))
            t = time.perf_counter()
            proc, url = serve(path, work)
            procs.append(proc)
            rows.append(
                {"size": n, "proc": proc, "url": url, "start_s": time.perf_counter() - t,
                 "rss_start": rss_mib(proc.pid), "marks": []}
            )  # fmt: skip
            print(f"{n} links: started in {rows[-1]['start_s']:.0f} s", flush=True)
        t0 = time.perf_counter()
        for mark in marks:
            time.sleep(max(0.0, mark - (time.perf_counter() - t0)))
            for r in rows:
                st = httpx.get(f"{r['url']}/api/state?compact=true", timeout=120).json()
                r["links"] = len(st["links"])
                r["devices"] = st.get("devices_count", len(st.get("devices", [])))
                r["marks"].append((mark, int(st["tick"]), rss_mib(r["proc"].pid)))
                print(f"{r['links']} links at {mark:.0f} s: {r['marks'][-1]}", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
    for r in rows:
        del r["proc"], r["url"]
    return rows


def report(rows: list[dict[str, Any]], marks: list[float], cmd: str) -> str:
    head = " | ".join(f"RSS at {m:.0f} s (tick)" for m in marks)
    lines = [
        f"| links | devices | start (s) | RSS at start (MiB) | {head} |",
        "|---:|---:|---:|---:|" + "---:|" * len(marks),
    ]
    for r in rows:
        cells = " | ".join(f"{rss:,.0f} ({tick})" for _m, tick, rss in r["marks"])
        lines.append(
            f"| {r['links']:,} | {r['devices']:,} | {r['start_s']:.0f} | {r['rss_start']:,.0f} "
            f"| {cells} |"
        )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"""## Live twin's memory vs size (`benchmarks/twin_memory.py`)

The served self-simulated twin (`qkdtwin twin serve --speed 1`, the scenarios of
`twin_scale.py`: hierarchical, 10 km links, telemetry on the in-memory bus, one key epoch per
gateway every 600 s), one process per size, all served at once; resident memory (`VmRSS`,
MiB) after start and at each mark (wall seconds after the last twin started), with the tick the
twin had reached (the sizes share the cores: a tick count below the mark means that twin ran
behind). The detectors' and estimators' windows fill over the first 600 ticks.

{chr(10).join(lines)}

Command: `{cmd}`; {when}. Machine: {platform.processor() or platform.machine()},
{os.cpu_count()} cores (shared by the three twins), Python {platform.python_version()}.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", default="100,300,1000")
    ap.add_argument("--devices", type=int, default=10, help="devices per gateway")
    ap.add_argument("--marks", default="60,300,600", help="wall seconds after the last start")
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    links = parse_sizes(ap, args.links, [12, *SHAPES])
    try:
        marks = sorted(float(x) for x in args.marks.split(","))
    except ValueError:
        ap.error(f"--marks takes comma-separated seconds, got {args.marks!r}")
    if args.devices < 0 or marks[0] < 0:
        ap.error("--devices and --marks must not be negative")
    rows = measure(links, args.devices, marks)
    cmd = "python benchmarks/twin_memory.py " + " ".join(sys.argv[1:])
    md = report(rows, marks, cmd.strip())
    print(md)
    if args.write:
        write_section(args.write, "twin_memory", md)


if __name__ == "__main__":
    main()
