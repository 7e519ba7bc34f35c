"""``network sweep --scheduler``: the same rows as the local pool, resumable, on a Dask cluster."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed  # a dev dependency (the `cluster` extra): these tests must run, not skip
import pytest
import yaml

from qkdtwin.cli import main
from qkdtwin.network.sweep import expand_sweep, finished_points, load_sweep, run_sweep

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# elapsed_s is wall time, the only column allowed to differ between executors
_STABLE = [
    "point",
    "seed",
    "pool_capacity",
    "policy",
    "services",
    "successes",
    "success_rate",
    "key_utilization",
]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_point = {r["point"]: {k: r[k] for k in _STABLE} for r in rows}
    assert len(by_point) == len(rows), "a point was written twice"
    return by_point


def _sweep(capsys, *args: object) -> tuple[int, dict[str, object], str]:
    code = main(["network", "sweep", *(str(a) for a in args), "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


@pytest.fixture
def cluster():
    # In-process workers (processes=False) start in well under a second on 2 cores and leave no
    # child processes behind; protocol tcp:// (not the in-process default) makes the scheduler
    # listen on a real socket, so the CLI's Client connects to it as to a remote cluster.
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken by another cluster
        protocol="tcp://",
        host="127.0.0.1",
        scheduler_port=0,
    ) as c:
        yield c


def test_dask_matches_local_and_resumes(capsys, tmp_path, cluster):
    sweep = {
        "base": str(EXAMPLES / "network-seed.yaml"),
        "grid": {"pool_capacity": [200, 400], "policy": ["static", "akr", "ttd"]},
        "seeds": [3, 11],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    local, remote = tmp_path / "local.csv", tmp_path / "dask.csv"

    code, summary, err = _sweep(capsys, path, "--out", local)
    assert code == 0, err
    assert summary["computed"] == 12

    # first half of the grid on the cluster, then the whole grid: only the rest is computed
    half = dict(sweep, grid={"pool_capacity": [200], "policy": sweep["grid"]["policy"]})
    path.write_text(yaml.safe_dump(half))
    code, summary, err = _sweep(
        capsys, path, "--out", remote, "--scheduler", cluster.scheduler_address
    )
    assert code == 0, err
    assert (summary["computed"], summary["skipped"]) == (6, 0)
    path.write_text(yaml.safe_dump(sweep))
    code, summary, err = _sweep(
        capsys, path, "--out", remote, "--scheduler", cluster.scheduler_address
    )
    assert code == 0, err
    assert (summary["points"], summary["skipped"], summary["computed"]) == (12, 6, 6)

    assert _rows(remote) == _rows(local)
    # a third run has nothing left to do and does not touch the file
    before = remote.read_text()
    code, summary, err = _sweep(
        capsys, path, "--out", remote, "--scheduler", cluster.scheduler_address
    )
    assert code == 0, err
    assert (summary["skipped"], summary["computed"]) == (12, 0)
    assert remote.read_text() == before


def test_unreachable_scheduler_one_line_exit_2(capsys, tmp_path):
    sweep = {"base": str(EXAMPLES / "network-seed.yaml"), "grid": {"pool_capacity": [200]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    # port 9 (discard) on localhost: nothing listens, the connection is refused at once
    code, _, err = _sweep(
        capsys,
        path,
        "--out",
        tmp_path / "o.csv",
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--scheduler-timeout",
        "1",
    )
    assert code == 2
    assert "scheduler" in err
    assert err.count("\n") == 1


# -- a worker and the client killed mid-run, then the run restarted ---------------------------

#: A small national network (2 x 2 x 2 x 25 = 200 gateways, each OLT offered its budget), AKR;
#: one replication takes about a second, long enough to be killed in the middle of one.
_NATIONAL = {
    "topology": {
        "builder": "national",
        "params": {
            "cores": 2,
            "metros_per_core": 2,
            "olts_per_metro": 2,
            "gateways_per_olt": 25,
            "olt_rate": 10.0,
        },
    },
    "hub_demand": {"dst": "C0", "total_rate": 8.0},
    "pool_capacity": 200,
    "keys_per_service": 10,
    "policy": "adaptive-key-residue",
    "services": 1_000_000,
}
_REPLICA_STABLE = [c for c in _STABLE if c not in ("pool_capacity", "policy")]


def _replica_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_point = {r["point"]: {k: r[k] for k in _REPLICA_STABLE} for r in rows}
    assert len(by_point) == len(rows), "a point was written twice"
    return by_point


def _until(cond, what: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _point_of(run_spec: object) -> str | None:
    """The sweep point a task runs (its argument: the point's mapping), or None."""
    args = [*getattr(run_spec, "args", ()), *getattr(run_spec, "kwargs", {}).values()]
    for arg in args:
        value = getattr(arg, "value", arg)  # a literal argument may be wrapped (DataNode)
        if isinstance(value, dict) and "point" in value:
            return str(value["point"])
    return None


def _suspicious(dask_scheduler) -> dict[str, tuple[int, str]]:
    """Point -> (times its task was on a worker that died, its state now), on the scheduler."""
    return {
        str(_point_of(ts.run_spec)): (ts.suspicious, ts.state)
        for ts in dask_scheduler.tasks.values()
        if ts.suspicious
    }


def test_worker_and_client_killed_midrun_restart_finishes_each_point_once(capsys, tmp_path):
    path = tmp_path / "replications.yaml"
    path.write_text(yaml.safe_dump({"base": _NATIONAL, "seeds": 6}))
    sweep = load_sweep(path)
    everything = {p["point"] for p in expand_sweep(sweep)}
    out = tmp_path / "dask.csv"
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,  # real worker processes: one can be SIGKILLed like a lost machine
            threads_per_worker=1,  # one replication per worker at a time
            memory_limit="2GiB",
            dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken by another cluster
            protocol="tcp://",
            host="127.0.0.1",
            scheduler_port=0,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        addr = cluster.scheduler_address
        pids = client.run(os.getpid)  # worker address -> its process
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qkdtwin",
                "network",
                "sweep",
                path,
                "--out",
                out,
                *("--scheduler", addr),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # at least two replications written and work on a worker: kill that worker at once
            def busy() -> str | None:
                if cli.poll() is not None or len(finished_points(sweep, out)) < 2:
                    return None
                return next((w for w, keys in client.processing().items() if keys), None)

            worker = _until(busy, "two rows and a busy worker")
            os.kill(pids[worker], signal.SIGKILL)
            _until(
                lambda: client.run_on_scheduler(
                    lambda dask_scheduler: worker not in dask_scheduler.workers
                ),
                "the scheduler to drop the killed worker",
            )
            # the scheduler released the dead worker's replications for another worker, each
            # counted as suspicious once (one that killed 3 workers would fail as KilledWorker)
            killed = client.run_on_scheduler(_suspicious)
            assert killed, "the worker was killed with no replication on it"
            assert set(killed) <= everything
            assert {state for _, state in killed.values()} <= {
                "released", "waiting", "queued", "no-worker", "processing", "memory"
            }  # fmt: skip
            assert {n for n, _ in killed.values()} == {1}
        finally:
            cli.kill()  # the client dies too, mid-run
            _, err = cli.communicate(timeout=30)
        assert cli.returncode == -signal.SIGKILL, err.decode()
        before = finished_points(sweep, out)
        assert 2 <= len(before) < 6  # the restart has work left
        # each killed replication was either rescheduled on the survivor and written before the
        # client died, or left for the restart: never both, never neither (checked below)
        client.wait_for_workers(2, timeout=60)  # the nanny has restarted the killed worker
        code, summary, err = _sweep(capsys, path, "--out", out, "--scheduler", addr)
        assert code == 0, err
        counts = (summary["points"], summary["skipped"], summary["computed"])
        assert counts == (6, len(before), 6 - len(before))  # exactly the points not in the file

    remote = _replica_rows(out)  # each point exactly once
    assert set(remote) == everything
    assert set(killed) <= set(remote)
    local = tmp_path / "local.csv"
    assert run_sweep(sweep, local)["computed"] == 6  # the reference: one process, in order
    reference = _replica_rows(local)
    differing = {
        (row["seed"], col, row[col], reference[pt][col])
        for pt, row in remote.items()
        for col in row
        if row[col] != reference[pt][col]
    }
    assert not differing, sorted(differing)
