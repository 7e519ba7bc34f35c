"""Resuming a sweep whose results file was cut short by a kill (between a write and a flush)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.network import sweep as sweep_mod
from qkdtwin.network.sweep import Sweep, SweepPoint, expand_sweep, finished_points, run_sweep

_BASE: dict[str, Any] = {
    "topology": {
        "builder": "national",
        "params": {"cores": 1, "metros_per_core": 1, "olts_per_metro": 2, "gateways_per_olt": 3},
    },
    "hub_demand": {"dst": "C0", "total_rate": 2.0},
    "pool_capacity": 200,
    "keys_per_service": 10,
    "policy": "adaptive-key-residue",
    "services": 300,
}
#: A mapping value is written as JSON: a quoted CSV cell with commas and doubled quotes.
SWEEP: Sweep = {
    "base": _BASE,
    "grid": {
        "pool_capacity": [100, 200],
        "hub_demand": [{"dst": "C0", "total_rate": 2.0}, {"dst": "C0", "total_rate": 3.5}],
    },
    "seeds": [1, 2],
}


def _fake_row(point: SweepPoint) -> dict[str, Any]:
    """A deterministic row (elapsed_s included), so files can be compared byte for byte."""
    return {
        "point": point["point"],
        "seed": point["seed"],
        **{k: sweep_mod._cell(v) for k, v in point["params"].items()},
        "services": 100 * point["seed"],
        "successes": 99 * point["seed"],
        "success_rate": 0.99,
        "key_utilization": 0.5,
        "elapsed_s": 0.25,
    }


@pytest.fixture
def reference(tmp_path, monkeypatch) -> bytes:
    monkeypatch.setattr(sweep_mod, "run_point", _fake_row)
    out = tmp_path / "reference.csv"
    assert run_sweep(SWEEP, out)["computed"] == 8
    return out.read_bytes()


def _complete_rows(data: bytes) -> list[str]:
    """Points of the rows that end in a line break, as a reader that knows the format sees."""
    lines = data.split(b"\r\n")[1:-1]  # header, ..., the (possibly empty) unterminated rest
    return [line.split(b",", 1)[0].decode() for line in lines]


def test_every_cut_resumes_to_the_same_file(tmp_path, reference, monkeypatch) -> None:
    # the file killed at every byte: only rows with their line break count as finished, the
    # partial rest is cut off, and the resumed run writes exactly the reference file
    assert b'"{""dst"": ""C0"", ""total_rate"": 2.0}"' in reference  # quoted cells are tested
    monkeypatch.setattr(sweep_mod, "run_point", _fake_row)
    out = tmp_path / "cut.csv"
    for cut in range(len(reference) + 1):
        out.write_bytes(reference[:cut])
        complete = _complete_rows(reference[:cut]) if b"\r\n" in reference[:cut] else []
        assert finished_points(SWEEP, out) == set(complete), cut
        summary = run_sweep(SWEEP, out)
        assert (summary["skipped"], summary["computed"]) == (len(complete), 8 - len(complete))
        assert out.read_bytes() == reference, cut


def test_partial_last_row_with_every_column_is_not_finished(tmp_path, reference) -> None:
    # cut inside the last cell (elapsed_s "0.25" -> "0.2"): every column is there but the line
    # break is not, so the row may be incomplete: it is run again, not trusted
    last_point = _complete_rows(reference)[-1]
    out = tmp_path / "o.csv"
    out.write_bytes(reference[: -len(b"5\r\n")])
    assert last_point not in finished_points(SWEEP, out)
    assert len(finished_points(SWEEP, out)) == 7


def test_partial_row_is_cut_before_the_real_run_appends(tmp_path) -> None:
    # the real run_point, not the fake: the cut row is recomputed and the file parses cleanly
    out = tmp_path / "o.csv"
    run_sweep(SWEEP, out)
    full = out.read_bytes()
    out.write_bytes(full[: len(full) - 20])
    summary = run_sweep(SWEEP, out)
    assert (summary["skipped"], summary["computed"]) == (7, 1)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["point"] for r in rows) == sorted(p["point"] for p in expand_sweep(SWEEP))
    assert all(None not in r.values() and None not in r for r in rows)
    assert out.read_bytes().endswith(b"\r\n")


def test_another_sweeps_file_is_still_refused(tmp_path, reference) -> None:
    out = tmp_path / "o.csv"
    out.write_bytes(reference)
    other: Sweep = {"base": _BASE, "grid": {"policy": ["static"]}, "seeds": [1]}
    with pytest.raises(ConfigError, match="another sweep"):
        finished_points(other, out)
    # a partial first line that is not a prefix of this sweep's header is not ours either
    Path(out).write_bytes(b"name,val")
    with pytest.raises(ConfigError, match="another sweep"):
        run_sweep(SWEEP, out)
    assert out.read_bytes() == b"name,val"
