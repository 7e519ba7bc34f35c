"""CPU of the attached twin per reporting interval vs the number of links it watches.

Usage: ``python benchmarks/twin_attached_scale.py [--write BENCHMARKS.md] [--links 100,300,1000]
[--warmup 650] [--intervals 60]``, and ``--live [--links 1000] [--cases plant,kmes,iot]`` for
the twin as its own process on Mosquitto (section ``twin_attached_live``, below).

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

``--live``: the same network as two processes on a private Mosquitto, measured as the section
"twin-attach" measures 100 links (``benchmarks/twin_attach.py``'s ``run_cpu_case``): the plant
(``plant`` case: ``Plant(kmes=False, iot=False)``, link telemetry only, at the full rate;
``feed``: the same plus ``GatewayFeed``'s IIoT frames, ``--devices`` per gateway, published
on the same broker;
``kmes``: ``qkdtwin plant serve --no-iot``, one KME per node, which the twin polls, staggered;
``iot``: ``qkdtwin plant serve`` with ``--devices`` devices per gateway) and ``qkdtwin twin
serve --attach`` on the plant's attach file. CPU of each process from ``/proc``; the plant's
speed (plant seconds per wall second) says how much of the load the twin actually got.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
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
from twin_scale import SHAPES, hierarchical_network, parse_sizes  # noqa: E402


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


class GatewayFeed:
    """The IIoT traffic of ``devices`` devices per gateway, as the twin's broker would carry it.

    Fixed scheme (one sealed aggregate of all a gateway's readings per interval: "device
    readings batched per gateway per interval"), pqc-only keys (ML-KEM-768 to the aggregator:
    no KME needed; the frame layout the twin reads is the same in every mode), a rekey every
    600 s of plant time. One NDATA frame per gateway per interval on
    ``qkdtwin/v1/<group>/NDATA/<gateway>``. The twin, without an aggregator grant, reads the
    envelopes' headers (``IotMetadataStream``).
    """

    def __init__(self, gateways: list[str], devices: int, clock: Any, group: str) -> None:
        import numpy as np

        from qkdtwin.iot.fleet_share import SharedFleet
        from qkdtwin.iot.gateway import EdgeGateway
        from qkdtwin.iot.key_derivation import mlkem_keypair
        from qkdtwin.iot.transport import topic

        kem = mlkem_keypair().public_key()
        groups = [[f"{gw}.d{j}" for j in range(devices)] for gw in gateways]
        self.fleet = SharedFleet(groups, np.random.default_rng(7))
        self.gateways = [
            EdgeGateway(
                gw,
                scheme="fixed",
                mode="pqc-only",
                key_source=None,
                kem_public_key=kem,
                rekey_seconds=600.0,
                now=clock,
            )
            for gw in gateways
        ]
        self.topics = [topic(group, "NDATA", gw) for gw in gateways]

    def step(self, dt_s: float) -> list[tuple[str, bytes]]:
        """One interval of every device, sealed and framed by its gateway."""
        self.fleet.step(dt_s)
        out: list[tuple[str, bytes]] = []
        for part, gw, tp in zip(self.fleet.parts, self.gateways, self.topics, strict=True):
            out.extend((tp, frame) for frame in gw.process(part.step(dt_s)).frames)
        return out


def run_point(links: int, warmup: int, intervals: int, devices: int = 0) -> dict[str, Any]:
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
    feed = None
    if devices:
        graph = plant.scenario.topology.graph
        gws = sorted(n for n, role in graph.nodes(data="role") if role == "edge_gateway")
        feed = GatewayFeed(gws, devices, lambda: plant.t, "plant")
        doc["iot"] = {"group": "plant", "aggregator": "M0", "edges": {gw: gw for gw in gws}}
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
        if feed is not None:
            sink.extend(feed.step(plant.cfg.reporting_interval_s))
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
    iot = twin.iot.snapshot(plant.clock_epoch + plant.t)
    twin.close()
    return {
        "devices": devices * len(feed.gateways) if feed is not None else 0,
        "iot_edges": len(iot.edges),
        "iot_records": sum(e.records for e in iot.edges.values()),
        "iot_malformed": iot.malformed,
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


def _iot_cell(r: dict[str, Any]) -> str:
    if not r.get("devices"):
        return "0"
    return (
        f"{r['devices']:,} ({r['iot_edges']:,} gateways, {r['iot_records']:,} records, "
        f"{r['iot_malformed']} malformed)"
    )


HEAD = (
    "| links | devices (IIoT frames) | estimate_every | twin CPU (cores) "
    "| per interval ms p50 / max | per link, us | plant ms | alarms | load 1/5/15 min |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---|"
)


LIVE_CASES = ("plant", "feed", "kmes", "iot")

#: The ``feed`` case's plant process: ``Plant(kmes=False, iot=False)`` plus the IIoT frames of
#: ``GatewayFeed`` (argv[4] devices per gateway), published on the same broker once per
#: reporting interval of plant time; the attach file gains the ``iot`` section.
FEED_PLANT = f"""
import json, sys, threading, time
import yaml
sys.path.insert(0, {str(HERE)!r})
from qkdtwin.iot.transport import connect_transport, parse_broker
from qkdtwin.plant import Plant
from twin_attached_scale import GatewayFeed
plant = Plant(sys.argv[1], sys.argv[2], broker=sys.argv[3], kmes=False, iot=False).start()
graph = plant.scenario.topology.graph
gws = sorted(n for n, role in graph.nodes(data="role") if role == "edge_gateway")
feed = GatewayFeed(gws, int(sys.argv[4]), lambda: plant.t, "plant")
info = plant.describe()
doc = yaml.safe_load(open(info["attach_file"]))
doc["iot"] = {{"group": "plant", "aggregator": "M0", "edges": {{g: g for g in gws}}}}
open(info["attach_file"], "w").write(yaml.safe_dump(doc, sort_keys=False))
bus = connect_transport(parse_broker(sys.argv[3]), client_id="iot-feed")
dt = plant.cfg.reporting_interval_s
def run():
    nxt = time.monotonic()
    while True:
        for topic, frame in feed.step(dt):
            bus.publish(topic, frame)
        nxt += dt / plant.speed
        time.sleep(max(0.0, nxt - time.monotonic()))
threading.Thread(target=run, daemon=True).start()
print(json.dumps(info), flush=True)
while True:
    time.sleep(1.0)
"""


def live_rows(
    links: list[int], cases: list[str], devices: int, warmup: float, seconds: float
) -> list[dict[str, Any]]:
    """Run each case of ``--live`` at each size; rows as ``twin_attach.run_cpu_case`` gives."""
    import yaml

    from twin_attach import NO_KME_PLANT, run_cpu_case

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    rows = []
    scn_dir = Path(tempfile.mkdtemp(prefix="twin-attached-live-"))
    for n in links:
        for case in cases:
            scn = scenario(n)
            scn["plant"]["devices_per_gateway"] = devices if case == "iot" else 0
            path = scn_dir / f"plant-{n}-{case}.yaml"
            path.write_text(yaml.safe_dump(scn, sort_keys=False))
            name = f"{n} links, {case}"
            code = FEED_PLANT.replace("int(sys.argv[4])", str(devices))
            row = run_cpu_case(
                name,
                path,
                case == "iot",
                warmup,
                seconds,
                log,
                kmes=case in ("kmes", "iot"),
                plant_code=code if case == "feed" else NO_KME_PLANT,
            )
            row["feed_devices"] = devices * row.get("gateways", 0) if case == "feed" else 0
            row["case"] = case
            row["size"] = n
            row["devices_per_gateway"] = scn["plant"]["devices_per_gateway"]
            rows.append(row)
            print(row, flush=True)
    return rows


def _mib(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.0f}"


LIVE_HEAD = (
    "| links | plant process | KMEs | devices | twin CPU (cores) | twin RSS (MiB) | plant CPU "
    "| Mosquitto CPU "
    "| plant speed | links reporting / with estimate / KMEs ok / devices seen "
    "| link messages per s accepted | alarms |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
)
LIVE_KIND = {
    "plant": "`Plant(kmes=False, iot=False)`",
    "feed": "`Plant(kmes=False, iot=False)` + IIoT frames",
    "kmes": "`plant serve --no-iot`",
    "iot": "`plant serve`",
}


def live_section(rows: list[dict[str, Any]], warmup: float, seconds: float, cmd: str) -> str:
    """The ``twin_attached_live`` section of BENCHMARKS.md."""
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append(
                f"| {r.get('links', '?')} | {LIVE_KIND[r['case']]} | - | - | failed: "
                f"{r['error']} | | | | | | | |"
            )
            continue
        acc = r["accepted_per_s"]
        link_msgs = acc.get("accepted", 0.0)
        lines.append(
            f"| {r['links']:,} | {LIVE_KIND[r['case']]} | {r['kmes']:,} "
            f"| {max(r['devices_per_gateway'] * r['gateways'], r['feed_devices']):,} "
            f"| **{r['twin_cpu']:.3f}** | {_mib(r.get('twin_rss_mib'))} "
            f"| {r['plant_cpu']:.3f} | {r['broker_cpu']:.3f} | {r['plant_speed']:.2f} "
            f"| {r['links_ok']} / {r['links_est']} / {r['kmes_ok']} / {r['devices']} "
            f"| {link_msgs:.1f} (skewed {acc.get('skewed', 0.0):.1f}) | {r['alarms']} |"
        )
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes = sorted({int(r["size"]) for r in rows if "size" in r})
    shapes = ", ".join(f"{n}: {' x '.join(map(str, SHAPES[n]))}" for n in sizes) or "-"
    title = "Attached twin at scale, as its own process on Mosquitto"
    return f"""## {title} (`benchmarks/twin_attached_scale.py --live`)

Two processes on a private Mosquitto per row, as in section 4 of "Attached twin against the
plant": the plant and `qkdtwin twin serve --attach` on its attach file (the twin polls every
KME, staggered, and the key status of the gateways' SAE pairs when listed). CPU = (utime +
stime) of each process over the same {seconds:.0f} s of wall time after {warmup:.0f} s of
warm-up, in cores; plant speed = plant seconds per wall second over that window (below 1 the
plant could not keep real time on this machine and the twin got that share of the load).
Hierarchical networks as in the in-process section ({shapes}), GYS links of 10 km, detector
monitor.
The `feed` row adds the IIoT traffic of N devices per gateway as `GatewayFeed` makes it (one
sealed aggregate per gateway per interval, fixed scheme, pqc-only keys: no KME needed; see the
in-process section), published by the plant process on the same broker; the twin, without an
aggregator grant, reads the envelopes' headers ("devices seen" counts the IIoT senders it
tracks: in the fixed scheme a sender is the gateway). Without KMEs (`KMEs` 0) the twin polls
nothing; the `kmes` and `iot` cases start the plant with one KME per node, which at 1,000
links this machine cannot run in real time (docs/twin.md, "Performance at scale").

{LIVE_HEAD}
{chr(10).join(lines)}

Command: `{cmd}`; {when}. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()}
cores (shared by the plant, Mosquitto and the twin), Python {platform.python_version()}.
Numba: neither process calls a jitted function.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--links", default=None, help="sizes (default 100,300,1000; --live: 1000)")
    ap.add_argument("--warmup", type=int, default=650)
    ap.add_argument("--intervals", type=int, default=60)
    ap.add_argument(
        "--points",
        default=None,
        help="in process: LINKS:DEVICES_PER_GATEWAY,... (IIoT frames fed per gateway)",
    )
    ap.add_argument("--live", action="store_true", help="two processes on Mosquitto")
    ap.add_argument(
        "--cases", default=",".join(LIVE_CASES), help="--live: " + ", ".join(LIVE_CASES)
    )
    ap.add_argument("--devices", type=int, default=10, help="--live iot: devices per gateway")
    ap.add_argument("--live-warmup", type=float, default=120.0, help="--live: s before timing")
    ap.add_argument("--live-seconds", type=float, default=60.0, help="--live: s timed")
    args = ap.parse_args()
    if args.live:
        cases = args.cases.split(",")
        if not set(cases) <= set(LIVE_CASES):
            ap.error(f"--cases takes {', '.join(LIVE_CASES)}")
        sizes = parse_sizes(ap, args.links or "1000", SHAPES)
        rows = live_rows(sizes, cases, args.devices, args.live_warmup, args.live_seconds)
        cmd = "python benchmarks/twin_attached_scale.py " + " ".join(sys.argv[1:])
        md = live_section(rows, args.live_warmup, args.live_seconds, cmd)
        if args.write:
            from _report import write_section

            write_section(args.write, "twin_attached_live", md)
        print(md)
        return
    if args.points:
        points = []
        for item in args.points.split(","):
            size, _, devs = item.partition(":")
            if not devs.isdigit():
                ap.error(f"--points takes LINKS:DEVICES_PER_GATEWAY,..., got {item!r}")
            points.append((parse_sizes(ap, size, SHAPES)[0], int(devs)))
    else:
        points = [(n, 0) for n in parse_sizes(ap, args.links or "100,300,1000", SHAPES)]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for links, devices in points:
        r = run_point(links, args.warmup, args.intervals, devices)
        print(r, flush=True)
        rows.append(r)
    lines = [
        f"| {r['links']:,} | {_iot_cell(r)} | {r['estimate_every']} | {r['cpu_ms'] / 1e3:.3f} | "
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
serving. Devices: with `--points LINKS:N`, N devices per gateway whose readings each gateway
seals as one aggregate per interval (fixed scheme, "device readings batched per gateway per
interval"; pqc-only keys, rekey every 600 s) and publishes as one NDATA frame, fed to the twin
with the link telemetry; the twin (no aggregator grant) reads the envelopes' headers; the
column counts the gateways and records the twin saw by the end. The devices' sampling and
sealing are the plant's CPU.

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
