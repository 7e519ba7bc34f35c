"""``qkdtwin teleport``: JSON contracts and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from qkdtwin.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_json_contract(capsys):
    code, out, err = run_cli(capsys, "teleport", "run", "--trials", "50", "--seed", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("trials", "fidelity_mean", "fidelity_min", "fidelity_expected", "controller"):
        assert key in data
    assert data["trials"] == 50
    assert data["controller"] is True
    assert data["fidelity_mean"] == pytest.approx(1.0)
    assert data["fidelity_min"] == pytest.approx(1.0)


def test_run_no_controller_and_noise(capsys):
    code, out, _ = run_cli(
        capsys, "teleport", "run", "--trials", "400", "--no-controller", "--json"
    )
    data = json.loads(out)
    assert code == 0
    assert data["controller"] is False
    assert data["fidelity_expected"] == pytest.approx(0.6)
    assert abs(data["fidelity_mean"] - 0.6) < 5 * data["fidelity_stderr"]
    code, out, _ = run_cli(
        capsys, "teleport", "run", "--trials", "20", "--noise", "dephasing:0.1", "--json"
    )
    data = json.loads(out)
    assert code == 0
    assert data["noise"] == {"model": "dephasing", "strength": 0.1}
    assert data["fidelity_expected"] < 1


def test_run_is_reproducible(capsys):
    args = (
        "teleport",
        "run",
        "--trials",
        "30",
        "--noise",
        "depolarizing:0.2",
        "--seed",
        "9",
        "--json",
    )
    _, a, _ = run_cli(capsys, *args)
    _, b, _ = run_cli(capsys, *args)
    assert json.loads(a) == json.loads(b)


def test_run_plot_and_text(capsys, tmp_path):
    png = tmp_path / "run.png"
    code, out, _ = run_cli(
        capsys,
        "teleport",
        "run",
        "--trials",
        "20",
        "--noise",
        "amplitude-damping:0.3",
        "--plot",
        str(png),
    )
    assert code == 0
    assert png.stat().st_size > 1000
    assert "fidelity_mean" in out


def test_eavesdrop_json_contract(capsys, tmp_path):
    png = tmp_path / "det.png"
    code, out, err = run_cli(
        capsys,
        "teleport",
        "eavesdrop",
        "--decoys",
        "1:4",
        "--trials",
        "4000",
        "--json",
        "--plot",
        str(png),
    )
    assert code == 0, err
    data = json.loads(out)
    assert [p["decoys"] for p in data["points"]] == [1, 2, 3, 4]
    for p in data["points"]:
        assert {"decoys", "detection_probability", "analytic", "paper"} <= set(p)
        assert p["analytic"] == pytest.approx(1 - 0.75 ** p["decoys"])
        assert abs(p["detection_probability"] - p["analytic"]) < 5 * max(p["stderr"], 1e-3)
    assert png.stat().st_size > 1000


def test_eavesdrop_text_and_attack(capsys):
    code, out, _ = run_cli(
        capsys,
        "teleport",
        "eavesdrop",
        "--decoys",
        "2",
        "--trials",
        "500",
        "--attack",
        "entangle-measure:0.5",
    )
    assert code == 0
    assert "entangle-measure" in out


def test_table_json(capsys):
    code, out, _ = run_cli(capsys, "teleport", "table", "--json")
    data = json.loads(out)
    assert code == 0
    assert len(data["rows"]) == 128
    assert data["rows"][0] == {
        "alice_a5": "Phi+",
        "alice_b7": "Phi+",
        "charlie": "+++",
        "probability": pytest.approx(1 / 128),
        "correction": {"2": "I", "4": "I"},
    }
    assert len(data["without_controller"]) == 16
    code, out, _ = run_cli(capsys, "teleport", "table")
    assert code == 0
    assert "Bob on 2" in out


@pytest.mark.parametrize(
    "args",
    [
        ("teleport", "run", "--trials", "0"),
        ("teleport", "run", "--trials", "-3"),
        ("teleport", "run", "--trials", "abc"),
        ("teleport", "run", "--noise", "depolarizing:1.5"),
        ("teleport", "run", "--noise", "dephasing:-0.1"),
        ("teleport", "run", "--noise", "bitflip:0.1"),
        ("teleport", "run", "--noise", "depolarizing"),
        ("teleport", "run", "--charlie-basis", "w"),
        ("teleport", "run", "--plot", "x.jpg"),
        ("teleport", "eavesdrop", "--decoys", "1:"),
        ("teleport", "eavesdrop", "--decoys", "5:1"),
        ("teleport", "eavesdrop", "--decoys", "a:b"),
        ("teleport", "eavesdrop", "--decoys", "1.5:3"),
        ("teleport", "eavesdrop", "--trials", "0"),
        ("teleport", "eavesdrop", "--attack", "pns"),
        ("teleport", "eavesdrop", "--fraction", "2"),
        ("teleport", "table", "--charlie-basis", "z"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("qkdtwin: error: ")
