"""Replications of the 10^6-gateway scenario on a local Dask cluster: 1 worker, then 2.

The scenario is ``examples/network-national-1e6.yaml`` (national topology 10 x 10 x 10 x 1000,
every gateway to the core server C0, each OLT offered 100% of its budget, Adaptive Key Residue,
C = 200, X = 10, 10^7 requests); a replication is one seed, i.e. one point of a sweep with no
grid. Each configuration starts a fresh ``distributed.LocalCluster`` of worker *processes* with
one thread each (one replication per worker at a time) and runs the sweep through
``run_sweep(..., scheduler=...)``, exactly what ``qkdtwin network sweep --scheduler`` does.

Every worker does the same number of replications in both configurations (``--per-worker``,
default 2: 2 with one worker, 4 with two), so each worker's start-up (imports, loading the
compiled kernels) weighs the same in both and the speed-up compares like with like.

Measured: wall time of the sweep (cluster already up; its start-up is reported apart), each
replication's compute time on its worker (Dask's task stream), the engine time in the rows
(``elapsed_s``), and each worker process's peak RSS (``ru_maxrss`` read in the worker after the
run, with ``client.run``: the high-water mark of the process, not a sample).

Usage::

    python benchmarks/network_replications.py [--write BENCHMARKS.md] [--quick]

``--quick`` uses a 10^4-gateway network (5 x 4 x 5 x 100) and 10^6 requests (about a minute).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402

SCENARIO = ROOT / "examples" / "network-national-1e6.yaml"
#: Worker processes per configuration; each does --per-worker replications (default 2).
WORKERS = (1, 2)
#: --quick: 10^4 gateways, 10^6 requests.
QUICK_SHAPE = {"cores": 5, "metros_per_core": 4, "olts_per_metro": 5, "gateways_per_olt": 100}
QUICK_SERVICES = 1_000_000


def scenario(quick: bool) -> dict[str, Any]:
    """The 10^6-gateway scenario (or its 10^4-gateway --quick version), as a mapping."""
    scen: dict[str, Any] = yaml.safe_load(SCENARIO.read_text())
    if quick:
        scen["topology"]["params"].update(QUICK_SHAPE)
        scen["services"] = QUICK_SERVICES
    p = scen["topology"]["params"]
    olts = p["cores"] * p["metros_per_core"] * p["olts_per_metro"]
    # every OLT offered 100% of its budget V: OLTs * V keys per time unit = OLTs * V / X services
    scen["hub_demand"]["total_rate"] = olts * p["olt_rate"] / scen["keys_per_service"]
    return scen


def _gateways(scen: dict[str, Any]) -> int:
    p = scen["topology"]["params"]
    return int(p["cores"] * p["metros_per_core"] * p["olts_per_metro"] * p["gateways_per_olt"])


def _usage() -> tuple[int, float]:
    """Peak resident memory (bytes; Linux ru_maxrss is in KiB) and CPU seconds of this process."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime


def run_config(
    workers: int, replications: int, scen: dict[str, Any], workdir: Path, memory_limit: str
) -> dict[str, Any]:
    """Run ``replications`` seeds on a fresh local cluster of ``workers`` processes."""
    import dask
    import distributed

    from qkdtwin.network.sweep import Sweep, run_sweep

    sweep: Sweep = {"base": copy.deepcopy(scen), "grid": {}, "seeds": [*range(1, replications + 1)]}
    out = workdir / f"replications-{workers}w.csv"
    out.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with (
        # the measured rows ran while the engine's event loop still held the GIL for the whole
        # run (minutes at 10^6 gateways on a busy core), so the worker sent no heartbeat and
        # the default worker-ttl (5 minutes) restarted it mid-replication. The loops release
        # the GIL now (nogil); the TTL stays off so that a rerun measures the same way.
        dask.config.set({"distributed.scheduler.worker-ttl": None}),
        distributed.LocalCluster(
            n_workers=workers,
            processes=True,
            threads_per_worker=1,
            memory_limit=memory_limit,
            dashboard_address="127.0.0.1:0",
            protocol="tcp://",
            host="127.0.0.1",
            scheduler_port=0,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        start_s = time.perf_counter() - t0
        idle = client.run(_usage)
        with distributed.get_task_stream(client) as stream:
            t = time.perf_counter()
            summary = run_sweep(sweep, out, scheduler=cluster.scheduler_address)
            wall_s = time.perf_counter() - t
        used = client.run(_usage)
        tasks = [
            {
                "worker": task["worker"],
                "compute_s": sum(
                    s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"
                ),
            }
            for task in stream.data
            if str(task["key"]).startswith("run_point")
        ]
    load_after = os.getloadavg()[0]
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert summary["computed"] == replications == len(rows), (summary, len(rows))
    return {
        "workers": workers,
        "replications": replications,
        "cluster_start_s": start_s,
        "wall_s": wall_s,
        "replications_per_hour": replications * 3600.0 / wall_s,
        "task_s": [t["compute_s"] for t in tasks],
        "engine_s": [float(r["elapsed_s"]) for r in rows],
        "success_rate": [float(r["success_rate"]) for r in rows],
        "idle_rss_bytes": sorted(v[0] for v in idle.values()),
        "peak_rss_bytes": sorted(v[0] for v in used.values()),
        # CPU seconds each worker process got during the sweep: / wall = its share of a core
        "worker_cpu_s": sorted(used[w][1] - idle[w][1] for w in used if w in idle),
        "load_before": load_before,
        "load_after": load_after,
    }


def _machine() -> str:
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible{mem}, Python {platform.python_version()}"


def _num(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def report(data: dict[str, Any], quick: bool) -> str:
    import distributed

    scen = data["scenario"]
    runs = data["runs"]
    base = runs[0]["replications_per_hour"]
    gib = 2**30
    quick_flag = " --quick" if quick else ""
    if data.get("per_worker", 2) != 2:
        quick_flag += f" --per-worker {data['per_worker']}"
    params = scen["topology"]["params"]
    shape = "x".join(str(v) for k, v in params.items() if k != "olt_rate")
    lines = [
        "## Replications on a local Dask cluster (`benchmarks/network_replications.py`)",
        "",
        f"`python benchmarks/network_replications.py --write BENCHMARKS.md{quick_flag}`; "
        f"{data['machine']}, dask/distributed {distributed.__version__}, {data['date']}. "
        "**The 2 cores are shared with other jobs** (1-minute load average before -> after "
        "each run in the table): 2 worker processes on 2 busy cores cannot show a clean 2x.",
        "",
        f"Scenario `examples/network-national-1e6.yaml`{' (--quick: shrunk)' if quick else ''}: "
        f"{_gateways(scen):,} gateways (national {shape}), hub demand to C0 with each OLT "
        f"offered 100% of V = {params['olt_rate']:g} "
        f"(total_rate {scen['hub_demand']['total_rate']:g}), {scen['policy']}, "
        f"C = {scen['pool_capacity']:g}, X = {scen['keys_per_service']:g}, "
        f"{scen['services']:,} requests per replication; one replication = one seed = one row. "
        "A fresh `LocalCluster` of worker processes per configuration, 1 thread each (one "
        f"replication per worker at a time), memory limit {data['memory_limit']} per worker; "
        "the sweep runs through `run_sweep(..., scheduler=...)` as `qkdtwin network sweep "
        f"--scheduler` does. {data.get('per_worker', 2)} replication(s) per worker in both "
        "rows, so the per-worker start-up (imports, loading the compiled kernels) weighs the "
        "same in both. The scheduler's `worker-ttl` is off: when these rows were measured the "
        "engine held the GIL for the whole run, so a worker sent no heartbeat during a "
        "replication, and with the default 5 minutes a first attempt on this busy machine had "
        "workers restarted mid-replication. The event loops now release the GIL (numba "
        "`nogil`), so heartbeats go on during a replication. Numba: nothing is warmed in a "
        "worker before the sweep; its first replication loads the kernels from numba's "
        "on-disk cache, or compiles them if it is cold (`make venv` warms it; a later edit of "
        "their modules makes it cold; the run does not record which), inside `wall` and "
        "`replication on its worker`; "
        "`engine` excludes it (`simulate` loads the event loop before timing it).",
        "",
        "| workers | replications | wall (s) | replications/hour | speed-up "
        "| replication on its worker (s) | engine (s) | peak RSS per worker (GiB) "
        "| worker CPU / wall | cluster start (s) | load before -> after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        task = r["task_s"] or [float("nan")]
        cpu = ", ".join(f"{c / r['wall_s']:.2f}" for c in r.get("worker_cpu_s", []))
        lines.append(
            f"| {r['workers']} | {r['replications']} | {_num(r['wall_s'])} "
            f"| {r['replications_per_hour']:.0f} | {r['replications_per_hour'] / base:.2f}x "
            f"| {_num(statistics.mean(task))} ({_num(min(task))}-{_num(max(task))}) "
            f"| {_num(statistics.mean(r['engine_s']))} "
            f"| {', '.join(f'{b / gib:.2f}' for b in r['peak_rss_bytes'])} "
            f"| {cpu or '-'} | {r['cluster_start_s']:.1f} "
            f"| {r['load_before']:.1f} -> {r['load_after']:.1f} |"
        )
    idle_rss = max(b for r in runs for b in r["idle_rss_bytes"])
    lines += [
        "",
        "`wall` = the sweep from submission to the last row written, cluster already up; "
        "`replication on its worker` = compute time of each task (Dask task stream: build the "
        "network and its relay paths, then simulate), mean (min-max); `engine` = the rows' "
        "`elapsed_s` (the event loop alone); peak RSS = each worker process's `ru_maxrss` "
        f"after the run (an idle worker: {idle_rss / gib:.2f} GiB); worker CPU / wall = CPU "
        "seconds each worker process got during the sweep over the wall time (1.00 = a core "
        "of its own throughout). Replications per hour = replications x 3600 / wall; speed-up "
        "relative to 1 worker.",
        *(["", data["notes"]] if data.get("notes") else []),
        "",
        "**The method for more** (N machines, each with qkdtwin and `dask[distributed]` "
        "installed, the same versions everywhere): start a scheduler on one host, "
        "`DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL=1h dask scheduler --port 8786`; on each "
        "machine start workers with one thread per replication and memory for one "
        "replication each (about 2.6 GB peak at 10^6 gateways), e.g. `dask worker "
        "tcp://HOST:8786 --nworkers K --nthreads 1 --memory-limit 6GiB` with K <= cores "
        "and K x 6 GiB <= RAM; then on the client `qkdtwin network sweep "
        "examples/sweep-national-replications.yaml --out national.csv "
        "--scheduler tcp://HOST:8786` (more seeds: `seeds:` in the sweep file). The CSV lives "
        "with the client; rows are appended as replications finish, and rerunning the same "
        "command computes only the seeds missing from it (a lost worker's replication is "
        "rescheduled by Dask; a killed client loses only the replications not yet written). "
        "Replications are independent, so the expected rate is about (total worker processes) "
        "x the one-worker rate while each worker has a core and its memory of its own; to "
        "measure it, rerun this script's configurations with `dask worker` processes on the "
        "machines instead of a `LocalCluster`.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--memory-limit",
        default="6GiB",
        help="per worker (a 10^6-gateway replication peaks at about 2.6 GB)",
    )
    ap.add_argument("--per-worker", type=int, default=2, help="replications per worker (default 2)")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    ap.add_argument(
        "--from-json", type=Path, default=None, help="only rewrite the report from such a file"
    )
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        text = report(data, data.get("quick", False))
        print(text)
        if args.write:
            write_section(args.write, "network_replications", text)
        return
    scen = scenario(args.quick)
    runs = []
    with tempfile.TemporaryDirectory(prefix="network_replications-") as tmp:
        for workers in WORKERS:
            replications = workers * args.per_worker
            r = run_config(workers, replications, scen, Path(tmp), args.memory_limit)
            runs.append(r)
            print(
                f"{workers} worker(s), {replications} replications: wall {r['wall_s']:.1f} s, "
                f"{r['replications_per_hour']:.0f}/h, tasks {[round(t) for t in r['task_s']]} s, "
                f"peak RSS {[round(b / 2**30, 2) for b in r['peak_rss_bytes']]} GiB, "
                f"load {r['load_before']:.1f} -> {r['load_after']:.1f}",
                flush=True,
            )
    data = {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "memory_limit": args.memory_limit,
        "quick": args.quick,
        "per_worker": args.per_worker,
        "scenario": scen,
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    text = report(data, args.quick)
    print(text)
    if args.write:
        write_section(args.write, "network_replications", text)


if __name__ == "__main__":
    main()
