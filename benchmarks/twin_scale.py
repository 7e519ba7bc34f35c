"""Tick time and CPU of the self-simulated live twin vs links and devices.

Usage: ``python benchmarks/twin_scale.py [--write BENCHMARKS.md] [--quick] [--seconds 40]
[--links 12,100,300,1000] [--devices 0,10]``.

Each point runs ``qkdtwin twin serve --speed 1`` (one tick per wall second) as its own process
while this script holds the dashboard's event stream (``/api/events``) open, as a browser would.
After a warm-up (99 % of the KME stores filled to 90 % of ``kme_max_keys`` and, with devices,
no reading queued: the steady state; until then every delivery writes thousands of keys and
gateways send their backlog) it measures, over ``--seconds`` of wall time:

* CPU of the twin process: (utime + stime) from ``/proc/PID/stat``, in cores (target < 1);
* the tick's own duration (p50 / p99 / max), as the twin reports it in ``/api/state``;
* ticks per second achieved (1.0: the twin keeps up).

Topologies: the seed network (12 links) and hierarchical ones (a metro ring, OLT uplinks, and
gateways under each OLT, 10 km links): 100 links (4 metros x 4 OLTs x 5 gateways), 308
(4 x 4 x 18), 1,044 (4 x 10 x 25: 1,000 gateways). Devices: ``devices_per_gateway`` IIoT
devices under each gateway (0: telemetry off), on the in-process bus.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from _serve import LOG, NUMBA_NOTE, serve, tail

TICKS = os.sysconf("SC_CLK_TCK")
SHAPES = {100: (4, 4, 5), 300: (4, 4, 18), 1000: (4, 10, 25)}


class _Drain:
    """Hold the event stream open and read it as a browser would, keeping nothing.

    (``qkdtwin.twin.runner.EventListener`` keeps and parses every event: at 1,000 links ~0.5 MB
    of state a second, 2 GB of this process after ten minutes.)
    """

    def __init__(self, url: str) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._resp = self._client.send(self._client.build_request("GET", url), stream=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            for _ in self._resp.iter_raw():
                pass

    def close(self) -> None:
        self._resp.close()
        self._client.close()


def parse_sizes(ap: argparse.ArgumentParser, text: str, allowed: Iterable[int]) -> list[int]:
    """``"100,300"`` -> ``[100, 300]``; anything else (or a size not in ``allowed``) ends the
    program with one line on stderr and exit code 2 (``ap.error``)."""
    ok = sorted(allowed)
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        ap.error(f"sizes are comma-separated integers from {ok}, got {text!r}")
    bad = [n for n in sizes if n not in ok]
    if bad:
        ap.error(f"sizes must be among {ok}, got {bad}")
    return sizes


def rss_mib(pid: int) -> float:
    """Resident memory of the twin process at the end of the window (``VmRSS``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def hierarchical_network(links: int) -> dict[str, Any]:
    """The network part of a hierarchical point (``SHAPES``): every gateway -> the metro M0."""
    m, o, g = SHAPES[links]
    gws = [f"GW{i}.{j}.{k}" for i in range(m) for j in range(o) for k in range(g)]
    return {
        "topology": {
            "builder": "hierarchical",
            "params": {"metros": m, "olts_per_metro": o, "gateways_per_olt": g, "olt_rate": 10.0},
        },
        "demands": [{"src": gw, "dst": "M0", "rate": 1.0 / len(gws)} for gw in gws],
        "pool_capacity": 200,
        "keys_per_service": 10,
        "policy": "ttd-balance",
        "duration": 1000.0,
        "seed": 1,
    }


def scenario(links: int, devices: int) -> dict[str, Any]:
    """The scenario of one point: the seed at 12 links, hierarchical otherwise."""
    if links == 12:
        from qkdtwin.twin import default_scenario_path

        data: dict[str, Any] = yaml.safe_load(default_scenario_path().read_text())
        data["twin"]["devices_per_gateway"] = devices
        data["twin"]["telemetry"] = {"broker": "memory"}
        return data
    return {
        **hierarchical_network(links),
        "twin": {
            "aggregator": "M0",
            "devices_per_gateway": devices,
            "link_defaults": {"length_km": 10.0},
            # one key epoch per gateway every 10 min: the metro ring's 10-km links make ~3.5
            # keys/s each, and every relay to the aggregator M0 crosses one of its two ring
            # links, so with the default 60-s epochs 1,000 gateways would ask ~17 relays/s of
            # ~7 and queue their readings for ever (the twin shows that; a benchmark of the
            # steady state must not be one)
            "telemetry": {"broker": "memory", "rekey_seconds": 600.0},
        },
    }


def run_point(links: int, devices: int, seconds: float, warmup: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="twin-scale-"))
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario(links, devices)))
    t_start = time.perf_counter()
    proc, url = serve(path, work)
    try:
        while True:
            try:
                st = httpx.get(f"{url}/api/state?compact=true", timeout=120).json()
                break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise RuntimeError(tail(work / LOG)) from None
                time.sleep(0.5)
        start_s = time.perf_counter() - t_start
        listener = _Drain(f"{url}/api/events")
        cap = 2000
        deadline = time.monotonic() + warmup
        full, n_full = False, 0
        while time.monotonic() < deadline:
            time.sleep(2.0)
            st = httpx.get(f"{url}/api/state?compact=true", timeout=120).json()
            n_full = sum(lk["keys"]["available"] >= 0.9 * cap for lk in st["links"])
            # all but the 1 % of stores that relays keep drawing on (with devices, the metro
            # ring links next to the aggregator: every relay crosses one of them), and every
            # gateway's queued readings sent (all keyed, the backlog of the first minutes gone)
            full = n_full >= 0.99 * len(st["links"]) and not st["telemetry"].get("queued")
            if full and st["tick"] >= 20:
                break
        tick0 = st["tick"]
        c0, w0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(seconds)
        c1, w1 = cpu_seconds(proc.pid), time.perf_counter()
        st = httpx.get(f"{url}/api/state?compact=true", timeout=120).json()
        n = min(int(st["tick"] - tick0), 60)
        window = st["loop"]["step_ms_last"][-n:] if n > 0 else []
        listener.close()
        return {
            "links": len(st["links"]),
            "gateways": sum(1 for x in st["nodes"] if x["role"] == "edge_gateway"),
            "devices": st.get("devices_count", len(st.get("devices", []))),
            "devices_per_gateway": devices,
            "cpu": (c1 - c0) / (w1 - w0),
            "ticks_per_s": (st["tick"] - tick0) / (w1 - w0),
            "p50": float(np.percentile(window, 50)) if window else float("nan"),
            "p99": float(np.percentile(window, 99)) if window else float("nan"),
            "max": max(window) if window else float("nan"),
            "steady": full,
            "stores_full": f"{n_full}/{len(st['links'])}",
            "start_s": start_s,
            "load": load(),
            "seconds": w1 - w0,
            "rss_mib": rss_mib(proc.pid),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _mib(x: float | None) -> str:
    """A row's resident memory; rows measured before it was recorded show '-'."""
    return "-" if x is None or x != x else f"{x:,.0f}"


HEAD = (
    "| links | gateways | devices | CPU (cores) | ticks/s | tick ms p50 / p99 / max "
    "| stores full | start s | RSS (MiB) | load 1/5/15 min | measured |"
    "\n|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---|---|"
)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for dpg in sorted({r["devices_per_gateway"] for r in rows}):
        pts = sorted((r for r in rows if r["devices_per_gateway"] == dpg), key=lambda r: r["links"])
        xs = [r["links"] for r in pts]
        label = "telemetry off" if dpg == 0 else f"{dpg} devices / gateway"
        ax1.plot(xs, [r["p50"] for r in pts], "o-", label=f"p50, {label}")
        ax1.plot(xs, [r["max"] for r in pts], "x--", label=f"max, {label}")
        ax2.plot(xs, [r["cpu"] for r in pts], "o-", label=label)
    ax1.axhline(1000, color="grey", lw=0.8, ls=":")
    ax2.axhline(1.0, color="grey", lw=0.8, ls=":")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("QKD links")
        ax.legend(fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("tick time, ms (budget 1000)")
    ax2.set_ylabel("twin process CPU, cores")
    fig.suptitle("Live twin, self-simulated, 1 tick per second")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--warmup", type=float, default=120.0, help="most warm-up s, < 1,000 links")
    ap.add_argument("--warmup-big", type=float, default=360.0, help="most warm-up s, 1,000 links")
    ap.add_argument("--links", default="12,100,300,1000")
    ap.add_argument("--devices", default="0,10", help="devices per gateway, comma separated")
    ap.add_argument(
        "--devices-up-to",
        type=int,
        default=1000,
        help="run the points with devices only up to this many links (telemetry sessions: one "
        "per gateway, each a full IIoT pipeline)",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the points already in benchmarks/results/twin_scale.json (each point is "
        "saved there as it ends) and measure only the others",
    )
    args = ap.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    warmup = 30.0 if args.quick else args.warmup
    link_counts = [12, 100] if args.quick else [int(x) for x in args.links.split(",")]
    devs = [int(x) for x in args.devices.split(",")]
    saved = Path(__file__).resolve().parent / "results" / "twin_scale.json"
    done = json.loads(saved.read_text()) if args.resume and saved.exists() else []
    rows = []
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for links in link_counts:
        for d in devs:
            if d and links > args.devices_up_to:
                continue
            old = [r for r in done if r["points"] == [links, d]]
            if old:
                rows.append(old[0])
                continue
            r = run_point(links, d, seconds, warmup if links < 1000 else args.warmup_big)
            r["points"] = [links, d]
            r["when"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            print(r, flush=True)
            rows.append(r)
            done = [x for x in done if x["points"] != [links, d]] + [r]
            saved.parent.mkdir(exist_ok=True)
            saved.write_text(json.dumps(done, indent=1))
    lines = [
        f"| {r['links']} | {r['gateways']} | {r['devices']} | {r['cpu']:.3f} | "
        f"{r['ticks_per_s']:.2f} | {r['p50']:.0f} / {r['p99']:.0f} / {r['max']:.0f} | "
        f"{'yes' if r['steady'] else 'no'} ({r.get('stores_full', '-')}) | {r['start_s']:.0f} "
        f"| {_mib(r.get('rss_mib'))} | {r['load']} "
        f"| {r.get('when', when)} |"
        for r in rows
    ]
    more = (
        f"\nPoints with devices: up to {args.devices_up_to:,} links (`--devices-up-to`); for "
        "1,000 links with devices see docs/twin.md, section 'Performance at scale'.\n"
        if args.devices_up_to < max(link_counts)
        else ""
    )
    img = Path(__file__).resolve().parent.parent / "docs" / "img" / "twin_scale.png"
    plot(rows, img)
    machine = platform.processor() or platform.machine()
    cmd = "python benchmarks/twin_scale.py " + " ".join(sys.argv[1:])
    md = f"""## Live twin at scale (`benchmarks/twin_scale.py`)

The self-simulated twin (`qkdtwin twin serve --speed 1`, one tick per wall second: every link's
block, KME deliveries, key pools, policy re-plan, history, the event stream held open by this
script) vs its size. CPU = the twin process's CPU time over {seconds:g} s of wall time, in
cores (target < 1 at 1,000 links); tick ms = the tick's own duration as the twin reports it,
p50 / p99 / max over the same window. Measured after a warm-up; "stores full" says whether every KME
store had filled by then (a 10-km link makes ~3.5 keys/s, so a 2,000-key store takes ~10 min;
until then each delivery writes and wraps the link's new keys into both its stores, so rows
with "no" include that fill; in brackets: stores at >= 90 % of their capacity, where known;
"yes" needs 99 % of them, since relays keep drawing on the ring links next to the
aggregator) and, with devices, no gateway had readings queued (every gateway
keyed, the backlog of the first minutes sent: at 1,000 gateways the first 2,000 relays take
~5 minutes through the metro ring). Devices: IIoT devices under each gateway on the in-process bus,
each sending one 256-byte reading per tick, sealed and checked end to end (0 = telemetry
off); a gateway starts a key epoch (one relayed end-to-end key) every 600 s, which the metro
ring's links can supply at 1,000 gateways. Load = the machine's load average when the point
ended (a shared machine: CPU time is the robust number, wall times stretch with the load).

{HEAD}
{chr(10).join(lines)}
{more}
![tick time and CPU vs links](docs/img/twin_scale.png)

Command: `{cmd}`; {when}. Machine: {machine}, {os.cpu_count()} cores, Python
{platform.python_version()}. {NUMBA_NOTE}
"""
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_section

        write_section(args.write, "twin_scale", md)
    print(md)


if __name__ == "__main__":
    main()
