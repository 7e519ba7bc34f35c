"""``qkdtwin network`` and ``qkdtwin reproduce``: JSON contracts and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qkdtwin.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

TWO_NODE = {
    "nodes": [{"name": "a", "role": "edge_gateway"}, {"name": "b", "role": "olt"}],
    "links": [{"a": "a", "b": "b", "key_rate": 1.0}],
    "demands": [{"src": "a", "dst": "b", "rate": 0.08}],
    "pool_capacity": 100,
    "keys_per_service": 10,
    "policy": "static",
    "services": 20000,
    "seed": 1,
}


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_node_json_contract(capsys, tmp_path):
    code, out, err = run_cli(capsys, "network", "run", write(tmp_path, TWO_NODE), "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("services", "successes", "success_rate", "pools", "elapsed_s", "events_per_s"):
        assert key in data
    assert data["services"] == 20000
    assert 0.9 < data["success_rate"] <= 1.0
    assert data["pools"][0]["src"] == "a"


@pytest.mark.parametrize("example", ["network-two-node.yaml", "network-seed.yaml"])
def test_examples_run(capsys, example):
    code, out, err = run_cli(capsys, "network", "run", EXAMPLES / example, "--json")
    assert code == 0, err
    assert json.loads(out)["services"] > 0


def test_text_output_and_overrides(capsys, tmp_path):
    path = write(tmp_path, TWO_NODE)
    code, out, _ = run_cli(capsys, "network", "run", path, "--policy", "akr", "--seed", "3")
    assert code == 0
    assert "adaptive-key-residue" in out


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"demands": [{"src": "a", "dst": "zz", "rate": 1.0}]}, "zz"),
        ({"policy": "random"}, "policy"),
        ({"pool_capacity": 0}, "pool_capacity"),
        ({"pool_capacity": -5}, "pool_capacity"),
        ({"links": [{"a": "a", "b": "b", "key_rate": 0}]}, "key_rate"),
        ({"demands": [{"src": "a", "dst": "b", "rate": -1}]}, "rate"),
        ({"services": None}, "services"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, tmp_path, change, field):
    data = dict(TWO_NODE) | change
    data = {k: v for k, v in data.items() if v is not None}
    code, out, err = run_cli(capsys, "network", "run", write(tmp_path, data), "--json")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("qkdtwin: error:")
    assert field in err


def test_disconnected_demand(capsys, tmp_path):
    data = dict(TWO_NODE)
    data["nodes"] = [*TWO_NODE["nodes"], {"name": "c", "role": "edge_gateway"}]
    data["demands"] = [{"src": "a", "dst": "c", "rate": 1.0}]
    code, _, err = run_cli(capsys, "network", "run", write(tmp_path, data))
    assert code == 2
    assert "disconnected" in err
    assert err.count("\n") == 1


def test_missing_and_malformed_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "network", "run", tmp_path / "nope.yaml")
    assert code == 2
    assert err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [a\n")
    code, _, err = run_cli(capsys, "network", "run", bad)
    assert code == 2
    assert err.count("\n") == 1


def test_reproduce_fig5_small(capsys, tmp_path):
    code, out, err = run_cli(
        capsys,
        "reproduce",
        "fig5",
        "--seeds",
        "2",
        "--policies",
        "static,akr",
        "--out",
        tmp_path,
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert (tmp_path / "fig5.csv").exists()
    assert (tmp_path / "fig5.png").exists()
    assert (tmp_path / "fig5.pdf").read_bytes().startswith(b"%PDF")
    rows = [r for r in data["points"] if r["policy"] == "static" and r["value"] == 2.0]
    rates = [r["success_rate"] for r in sorted(rows, key=lambda r: r["load"])]
    assert rates[0] > rates[-1]  # success falls with load
    at_max = {r["value"]: r["success_rate"] for r in data["at_max_load"] if r["policy"] == "static"}
    assert at_max[6.0] > at_max[1.0]  # and grows with V
    # the per-run rows behind every mean: their mean is the CSV's mean
    import csv

    with (tmp_path / "fig5_seeds.csv").open(newline="") as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == 2 * len(data["points"])
    for p in data["points"][:5]:
        mine = [
            float(r["success_rate"])
            for r in runs
            if (r["policy"], float(r["value"]), float(r["load"])) == (p["policy"], p["value"],
                                                                        p["load"])
        ]  # fmt: skip
        assert len(mine) == 2
        assert sum(mine) / 2 == pytest.approx(p["success_rate"], abs=2e-6)


def test_reproduce_unknown_policy(capsys):
    code, _, err = run_cli(capsys, "reproduce", "fig4", "--policies", "nope", "--json")
    assert code == 2
    assert "policy" in err


def test_compare_architectures_small(capsys):
    # node budget 10, core links 10, 10 devices per edge node; pair demand 0.02 services x 10
    # keys = 0.2 keys per pool per time unit. Independent capacity bounds (min cut over the
    # demand): the KME spends 2 keys per delivered key, so it carries 10 / (2 * 0.2) = 25 pools
    # = 50 devices; a distributed node carries 10 / 0.2 = 50 pools > its 10 devices, and each
    # mesh link carries <= 10 devices' pairs, so distributed never binds.
    args = ["--node-rate", "10", "--core-rate", "10", "--fanout", "10", "--start", "20"]
    code, out, err = run_cli(
        capsys, "network", "compare-architectures", *args, "--max-devices", "320", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data["served"]) == {"centralized", "distributed", "hierarchical", "hybrid"}
    assert data["served"]["centralized"] == 40  # 40 <= 50 < 80
    assert not data["capped"]["centralized"]
    assert data["served"]["distributed"] == 320
    assert data["capped"]["distributed"]
    # the centralized search stopped at its first failure, below target
    last = [r for r in data["rows"] if r["architecture"] == "centralized"][-1]
    assert (last["devices"], last["success_rate"] < 0.99) == (80, True)
    cost = {r["architecture"]: r["key_cost_per_device"] for r in data["rows"] if r["devices"] == 80}
    # keys per device per time unit = 0.1 (own share of its pair) x relay hops per pair
    hops = {r["architecture"]: r["mean_hops"] for r in data["rows"] if r["devices"] == 80}
    assert cost["distributed"] == pytest.approx(0.1 * hops["distributed"], rel=0.05)
    assert cost["hierarchical"] > cost["distributed"]  # more relay hops, more key per device


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--start", "1"], "sizes"),
        (["--max-devices", "10"], "sizes"),
        (["--target", "0"], "target"),
        (["--core-rate", "0"], "core_rate"),
    ],
)
def test_compare_architectures_bad_input(capsys, args, field):
    code, _, err = run_cli(capsys, "network", "compare-architectures", *args)
    assert code == 2
    assert field in err
    assert err.count("\n") == 1


def test_sweep_resumable_and_parallel(capsys, tmp_path):
    sweep = {
        "base": str(EXAMPLES / "network-seed.yaml"),
        "grid": {"pool_capacity": [200, 400], "policy": ["static", "ttd"]},
        "seeds": 2,
    }
    path = write(tmp_path, sweep, "sweep.yaml")
    out = tmp_path / "r.csv"
    code, stdout, err = run_cli(capsys, "network", "sweep", path, "--out", out, "--json")
    assert code == 0, err
    assert json.loads(stdout) == {"points": 8, "skipped": 0, "computed": 8, "out": str(out)}
    lines = out.read_text().splitlines()
    assert len(lines) == 9
    sweep["grid"]["pool_capacity"].append(600)
    path = write(tmp_path, sweep, "sweep.yaml")
    code, stdout, err = run_cli(
        capsys, "network", "sweep", path, "--out", out, "--workers", "2", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["skipped"] == 8
    assert json.loads(stdout)["computed"] == 4
    assert len(out.read_text().splitlines()) == 13
    # tidy: one column per parameter, values as they are (pandas reads it unchanged)
    import csv

    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:2] == ["point", "seed"]
    assert set(list(rows[0])[2:4]) == {"pool_capacity", "policy"}
    assert {(r["pool_capacity"], r["policy"]) for r in rows} == {
        (c, p) for c in ("200", "400", "600") for p in ("static", "ttd")
    }
    # a results file of another sweep is refused, not mixed
    other = dict(sweep, grid={"policy": ["static"]})
    path = write(tmp_path, other, "other.yaml")
    code, _, err = run_cli(capsys, "network", "sweep", path, "--out", out)
    assert code == 2
    assert "columns" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("sweep", "field"),
    [
        ({"base": "nope.yaml", "grid": {}}, "base"),
        ({"base": {"pool_capacity": 1}, "grid": {"pool_capacity": 5}}, "grid"),
        ({"base": {"pool_capacity": 1}, "grid": {}, "seeds": 0}, "seeds"),
        ({"base": {"pool_capacity": 1}, "grids": {}}, "grids"),
    ],
)
def test_malformed_sweep(capsys, tmp_path, sweep, field):
    path = write(tmp_path, sweep, "sweep.yaml")
    code, _, err = run_cli(capsys, "network", "sweep", path, "--out", tmp_path / "o.csv")
    assert code == 2
    assert field in err
    assert err.count("\n") == 1


def test_sweep_bad_point_names_field(capsys, tmp_path):
    sweep = {"base": str(EXAMPLES / "network-seed.yaml"), "grid": {"pool_capacity": [-1]}}
    path = write(tmp_path, sweep, "sweep.yaml")
    code, _, err = run_cli(capsys, "network", "sweep", path, "--out", tmp_path / "o.csv")
    assert code == 2
    assert "pool_capacity" in err


def test_hardware_of_small_topologies_counted_by_hand():
    from qkdtwin.network.architectures import hardware
    from qkdtwin.network.topology import (
        centralized_topology,
        distributed_topology,
        hierarchical_topology,
    )

    # 4 access links of 5 km
    assert hardware(centralized_topology(4, node_rate=1.0)) == {
        "links": 4, "modules": 8, "fiber_km": 20.0,
    }  # fmt: skip
    # 3 mesh links of 30 km + 6 access links of 5 km
    assert hardware(distributed_topology(3, 2, node_rate=1.0)) == {
        "links": 9, "modules": 18, "fiber_km": 120.0,
    }  # fmt: skip
    # 1 backbone link (30) + 2 metro-OLT uplinks (15) + 4 access links (5)
    assert hardware(hierarchical_topology(2, 1, 2)) == {
        "links": 7, "modules": 14, "fiber_km": 80.0,
    }  # fmt: skip


def test_within_budget_takes_the_largest_size_served_inside_it():
    from qkdtwin.network.architectures import within_budget

    rows = [
        {"architecture": "a", "devices": 100, "modules": 200, "success_rate": 1.0},
        {"architecture": "a", "devices": 200, "modules": 500, "success_rate": 1.0},
        {"architecture": "a", "devices": 400, "modules": 900, "success_rate": 0.5},
        {"architecture": "b", "devices": 100, "modules": 600, "success_rate": 1.0},
    ]
    got = within_budget(rows, "modules", [300, 1000], 0.99)
    assert got == {"300": {"a": 100, "b": 0}, "1000": {"a": 200, "b": 100}}


def test_traffic_patterns_shape_the_demand():
    import numpy as np

    from qkdtwin.network.architectures import _demands, build_architecture

    topo = build_architecture("hierarchical", 400, node_rate=10, core_rate=10, fanout=100)
    gws = topo.nodes_with_role("edge_gateway")
    rng = np.random.default_rng(0)
    local = _demands(topo, gws, "local", 0.01, rng)
    site = {g: next(iter(topo.graph.neighbors(g))) for g in gws}
    assert all(site[d.src] == site[d.dst] for d in local)  # within one OLT
    assert sum(d.rate for d in local) == pytest.approx(0.01 * len(gws))  # same keys per device
    central = _demands(topo, gws, "central", 0.01, rng)
    assert {d.dst for d in central} == {gws[0]}
    assert len(central) == len(gws) - 1


def test_local_traffic_lets_the_hierarchy_scale(capsys):
    args = ["--node-rate", "10", "--core-rate", "10", "--fanout", "10", "--start", "20",
            "--max-devices", "320", "--json"]  # fmt: skip
    served = {}
    for traffic in ("uniform", "local"):
        code, out, err = run_cli(
            capsys, "network", "compare-architectures", *args, "--traffic", traffic
        )
        assert code == 0, err
        data = json.loads(out)
        assert data["traffic"] == traffic
        served[traffic] = data["served"]
        rows = data["rows"]
        assert all({"links", "modules", "fiber_km"} <= set(r) for r in rows)
        assert set(data["equal_modules"]) == {"1000", "10000", "100000"}
    # east-west traffic crosses the small metro ring; kept within the OLT it never does
    assert served["local"]["hierarchical"] == 320 > served["uniform"]["hierarchical"]
