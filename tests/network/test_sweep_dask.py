"""``network sweep --scheduler``: the same rows as the local pool, resumable, on a Dask cluster."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import distributed  # a dev dependency (the `cluster` extra): these tests must run, not skip
import pytest
import yaml

from qkdtwin.cli import main

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
        dashboard_address=None,
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
