"""CPU of the attached twin per reporting interval vs the number of links it watches.

Usage: ``python benchmarks/twin_attached_scale.py [--write BENCHMARKS.md] [--links 100,300,1000]
[--warmup 650] [--intervals 60]``.

The attached twin (:class:`qkdtwin.twin.attached.AttachedTwin`) is fed in process by an
offline plant (:class:`qkdtwin.plant.Plant` without KMEs, IIoT or MQTT: its modules' link
telemetry goes straight to :meth:`AttachedTwin.on_mqtt` with the receive time an MQTT
delivery 50 ms later would have), and the dashboard's state is built once per interval, as the
event stream does. So the figure is the twin's own work per interval (ingest, estimates,
detectors, state), without the MQTT client's thread or the KME polls, which the section
"twin-attach" measures at 100 links with real processes. Each point runs ``--warmup`` intervals
first (the detectors' 600-s reference windows fill; until then every refit designs new
thresholds), then times ``--intervals`` intervals with ``time.process_time`` (the twin's calls
only; the plant's step is timed apart). As the served twin does once serving, the start-up
objects are frozen out of the garbage collector (``qkdtwin.ops.freeze_startup_objects``).
Topologies as in ``twin_scale.py``: hierarchical with 10 km links under a metro ring (100:
4 x 4 x 5, 300: 4 x 4 x 18, 1,000: 4 x 10 x 25).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from qkdtwin.ops import freeze_startup_objects  # noqa: E402
from qkdtwin.plant import Plant  # noqa: E402
from qkdtwin.twin.attach import load_attach_file  # noqa: E402
from qkdtwin.twin.attached import AttachedTwin  # noqa: E402
from twin_scale import hierarchical_network  # noqa: E402


def scenario(links: int) -> dict[str, Any]:
    return {
        **hierarchical_network(links),
        "plant": {
            "reporting_interval_s": 1.0,
            "link_defaults": {"preset": "gys", "length_km": 10.0},
            "detector_monitor": True,
            "devices_per_gateway": 0,
            "aggregator": "M0",
        },
    }


def run_point(links: int, warmup: int, intervals: int) -> dict[str, Any]:
    sink: list[tuple[str, bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="twin-attached-scale-"))
    plant = Plant(
        scenario(links),
        work / "plant",
        broker=None,
        kmes=False,
        iot=False,
        seed=1,
        publish=lambda t, b: sink.append((t, b)),
    )
    doc = plant.attach_document()
    doc["broker"] = "mqtt://127.0.0.1:1"  # never connected: this script feeds the twin
    twin = AttachedTwin(load_attach_file(doc))
    # as `qkdtwin twin serve --attach` does once serving: start-up objects (the plant's and
    # the twin's) out of the collector's full collections
    freeze_startup_objects()
    per: list[float] = []
    plant_cpu = 0.0
    alarms = 0
    for i in range(warmup + intervals):
        c = time.process_time()
        plant.step()
        c1 = time.process_time()
        t_recv = plant.clock_epoch + plant.t + 0.05
        for topic, payload in sink:
            twin.on_mqtt(topic, payload, t_recv)
        sink.clear()
        twin.tick(t_recv)
        st = twin.state()
        c2 = time.process_time()
        if i >= warmup:
            per.append(c2 - c1)
            plant_cpu += c1 - c
            alarms = len(st.alarms)
    per.sort()
    mean = sum(per) / len(per)
    twin.close()
    return {
        "links": len(twin.links),  # 4 x 10 x 25 has 1,044 links (1,000 gateways)
        "estimate_every": twin.estimate_every,
        "cpu_ms": 1e3 * mean,
        "p50_ms": 1e3 * per[len(per) // 2],
        "max_ms": 1e3 * per[-1],
        "per_link_us": 1e6 * mean / links,
        "plant_ms": 1e3 * plant_cpu / len(per),
        "alarms": alarms,
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


HEAD = (
    "| links | estimate_every | twin CPU (cores) | per interval ms p50 / max | per link, us "
    "| plant ms | alarms | load 1/5/15 min |\n|---:|---:|---:|---:|---:|---:|---:|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--links", default="100,300,1000")
    ap.add_argument("--warmup", type=int, default=650)
    ap.add_argument("--intervals", type=int, default=60)
    args = ap.parse_args()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for links in (int(x) for x in args.links.split(",")):
        r = run_point(links, args.warmup, args.intervals)
        print(r, flush=True)
        rows.append(r)
    lines = [
        f"| {r['links']:,} | {r['estimate_every']} | {r['cpu_ms'] / 1e3:.3f} | "
        f"{r['p50_ms']:.0f} / {r['max_ms']:.0f} | {r['per_link_us']:.0f} | "
        f"{r['plant_ms']:.0f} | {r['alarms']} | {r['load']} |"
        for r in rows
    ]
    cmd = "python benchmarks/twin_attached_scale.py " + " ".join(sys.argv[1:])
    md = f"""## Attached twin at scale (`benchmarks/twin_attached_scale.py`)

The attached twin's own CPU per reporting interval (1 s of network time) vs the links it
watches, fed in process by an offline plant (no MQTT client thread, no KME polls: see the
module docstring), the dashboard's state built once per interval, after {args.warmup}
intervals of warm-up (the detectors' reference windows full), over {args.intervals} intervals.
CPU (cores) = mean CPU seconds per interval: below 1 the twin keeps one update per second on
one core. `estimate_every` = intervals between refits of a link's displayed estimate (default:
ceil(links / 100), staggered). Plant = the offline plant's CPU per interval, for scale (not
part of the twin). Alarms = alarms raised by the end (clean links: false alarms). Start-up
objects are frozen out of the garbage collector, as `qkdtwin twin serve --attach` does once
serving.

{HEAD}
{chr(10).join(lines)}

Command: `{cmd}`; {when}. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()}
cores (shared), Python {platform.python_version()}. Numba: the attached twin calls no jitted
function.
"""
    if args.write:
        from _report import write_section

        write_section(args.write, "twin_attached_scale", md)
    print(md)


if __name__ == "__main__":
    main()
