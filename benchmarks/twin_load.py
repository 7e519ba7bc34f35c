"""CPU use and event-to-dashboard latency of the live twin at 1 update per second.

Usage: ``python benchmarks/twin_load.py [--write BENCHMARKS.md] [--seconds 30] [--quick]``.

For each topology the twin runs as its own process (``qkdtwin twin serve``, speed 1: one tick
of the link engines, KMEs, key pools, telemetry and history per wall-clock second) while this
script plays the dashboard: it holds the event stream (``/api/events``) open. Measured:

* CPU of the twin process: (utime + stime) from ``/proc/PID/stat`` over a wall interval, as a
  fraction of one core;
* event-to-dashboard latency: from sending ``POST /api/links/L/attack`` to receiving the
  ``alarm`` event on the stream (attack and clear on several links in turn);
* alarm-to-reroute time: measured inside the twin (alarm raised -> new relay paths in effect),
  read from the alarm records;
* the tick's own duration (p50 / p99) as reported by the twin in ``/api/state``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from _serve import LOG, NUMBA_NOTE, serve, tail
from qkdtwin.twin.runner import EventListener

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def big_scenario(broker: str = "mqtt://127.0.0.1:1883") -> dict:
    """100 links (4 metro ring + 16 OLT uplinks + 80 access), 80 gateways, 13 devices each."""
    gws = [f"GW{m}.{o}.{g}" for m in range(4) for o in range(4) for g in range(5)]
    return {
        "topology": {
            "builder": "hierarchical",
            "params": {"metros": 4, "olts_per_metro": 4, "gateways_per_olt": 5, "olt_rate": 10.0},
        },
        "demands": [{"src": gw, "dst": "M0", "rate": 1.0 / len(gws)} for gw in gws],
        "pool_capacity": 200,
        "keys_per_service": 10,
        "policy": "ttd-balance",
        "duration": 1000.0,
        "seed": 1,
        "twin": {
            "aggregator": "M0",
            "devices_per_gateway": 13,
            "link_defaults": {"length_km": 10.0},
            "telemetry": {"broker": broker},
        },
    }


def seed_scenario() -> dict:
    from qkdtwin.twin import default_scenario_path

    return yaml.safe_load(default_scenario_path().read_text())


def run_case(
    name: str, scenario: dict, seconds: float, attacks: list[str], warmup: float = 120.0
) -> dict:
    work = Path(tempfile.mkdtemp(prefix="twin-bench-"))
    path = work / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    proc, url = serve(path, work)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                st = httpx.get(f"{url}/api/state", timeout=5).json()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(tail(work / LOG)) from None
                time.sleep(0.2)
        listener = EventListener(url).start()
        # warm up: compiled policy kernels, first KME deliveries, every gateway's first key
        want = sum(1 for n in st["nodes"] if n["role"] == "edge_gateway") * int(
            scenario["twin"]["devices_per_gateway"]
        )
        deadline = time.monotonic() + warmup
        time.sleep(5.0)
        while time.monotonic() < deadline:
            st = httpx.get(f"{url}/api/state", timeout=10).json()
            if len(st["devices"]) >= want and st["telemetry"].get("queued") == 0:
                break
            time.sleep(1.0)
        c0, w0 = cpu_seconds(proc.pid), time.perf_counter()
        t_sim0 = httpx.get(f"{url}/api/state", timeout=10).json()["t"]
        time.sleep(seconds)
        c1, w1 = cpu_seconds(proc.pid), time.perf_counter()
        st = httpx.get(f"{url}/api/state", timeout=10).json()
        window = st["loop"]["step_ms_last"][-int(seconds) :]
        cpu = (c1 - c0) / (w1 - w0)
        ticks = st["t"] - t_sim0
        lat, rer = [], []
        for link in attacks:
            mark = len(listener.events)
            t0 = time.perf_counter()
            r = httpx.post(f"{url}/api/links/{link}/attack", json={"fraction": 1.0}, timeout=30)
            r.raise_for_status()
            lid = r.json()["id"]
            t_ev, ev = listener.wait_for(
                lambda e, lid=lid: e.get("type") == "alarm" and e["alarm"]["link"] == lid, 30, mark
            )
            lat.append((t_ev - t0) * 1e3)
            rer.append(ev["alarm"]["reroute_ms"])
            httpx.post(f"{url}/api/links/{lid}/clear", timeout=30).raise_for_status()
            time.sleep(1.0)
        # a plain state change: the next tick after a request, tick publish -> client
        tick_lat = []
        for _ in range(5):
            mark = len(listener.events)
            t_ev, ev = listener.wait_for(lambda e: e.get("type") == "tick", 10, mark)
            tick_lat.append(
                (time.time() - ev["wall_time"]) * 1e3 - (time.perf_counter() - t_ev) * 1e3
            )
        listener.stop()
        return {
            "name": name,
            "links": len(st["links"]),
            "pools": len(st["pools"]),
            "devices": len(st["devices"]),
            "broker": scenario["twin"].get("telemetry", {}).get("broker", "embedded"),
            "delivered": st["telemetry"].get("delivered"),
            "telemetry": st["telemetry"].get("enabled", False),
            "cpu": cpu,
            "ticks_per_s": ticks / (w1 - w0),
            "step_p50": statistics.median(window),
            "step_max": max(window),
            "lat_med": statistics.median(lat),
            "lat_max": max(lat),
            "reroute_med": statistics.median(rer),
            "reroute_max": max(rer),
            "tick_lat_med": statistics.median(tick_lat),
            "seconds": w1 - w0,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


HEAD = (
    "| topology | links | pools | devices | CPU (cores) | ticks/s | tick ms p50 / max "
    "| event -> dashboard ms | alarm -> reroute ms | tick -> client ms |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 8.0 if args.quick else args.seconds
    cases = [
        run_case(
            "seed (12 links, 6 gateways)",
            seed_scenario(),
            seconds,
            ["M1-M2", "M2-M3", "OLT1-GW1.1", "M1-M3", "M3-OLT3"],
        ),
        run_case(
            "hierarchical (100 links, 80 gateways)",
            big_scenario(),
            seconds,
            ["M0-M1", "M1-M2", "M0-OLT0.0", "OLT1.1-GW1.1.1", "M2-M3"],
        ),
    ]
    rows = [
        f"| {c['name']}, broker {c['broker']} | {c['links']} | {c['pools']} | "
        f"{c['devices']} | {c['cpu']:.3f} | "
        f"{c['ticks_per_s']:.2f} | {c['step_p50']:.1f} / {c['step_max']:.1f} | "
        f"{c['lat_med']:.0f} / {c['lat_max']:.0f} | "
        f"{c['reroute_med']:.2f} / {c['reroute_max']:.2f} | {c['tick_lat_med']:.1f} |"
        for c in cases
    ]
    tel = all(c["telemetry"] for c in cases)
    machine = platform.processor() or platform.machine()
    cmd = " ".join(["python benchmarks/twin_load.py", *sys.argv[1:]])
    md = f"""## Live twin (`benchmarks/twin_load.py`)

The twin as its own process (`qkdtwin twin serve --speed 1`: one update per second of every link
engine block, KME delivery, key pool, policy re-plan, history row and event-stream message),
with this script holding the dashboard's event stream open. CPU = process CPU time over
{seconds:g} s of wall time, in cores (target < 0.5). Event -> dashboard = `POST .../attack` sent
to the `alarm` event received on `/api/events` (target < 200 ms), median / max of 5 attacks.
Alarm -> reroute = measured inside the twin (alarm raised to new relay paths in effect).
Telemetry {"on" if tel else "off (qkdtwin.iot not available when measured)"}.

{HEAD}
{chr(10).join(rows)}

Command: `{cmd}`; {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}. Machine: {machine},
{os.cpu_count()} cores, Python {platform.python_version()}. {NUMBA_NOTE}
"""
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_section

        write_section(args.write, "twin", md)
    print(md)


if __name__ == "__main__":
    main()
