"""The command line: JSON contracts and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qkdtwin import __version__
from qkdtwin.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"qkdtwin {__version__}"


def test_console_script_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "qkdtwin", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("qkdtwin ")


def test_simulate_json_contract(capsys):
    code, out, err = run_cli(
        capsys,
        "link",
        "simulate",
        "--protocol",
        "decoy-bb84",
        "--distance-km",
        "25",
        "--pulses",
        "2e6",
        "--seed",
        "3",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    for key in (
        "protocol",
        "distance_km",
        "pulses",
        "detections",
        "sifted_bits",
        "qber",
        "secret_key_rate_per_pulse",
        "secret_key_rate_bps",
        "elapsed_s",
    ):
        assert key in data
    assert data["pulses"] == 2_000_000
    assert data["protocol"] == "decoy-bb84"
    assert 0 < data["sifted_bits"] <= data["detections"] <= data["pulses"]
    assert data["secret_key_rate_bps"] == pytest.approx(data["secret_key_rate_per_pulse"] * 2e6)
    # the analytic rate both ways, each next to the simulated rate of the same unit
    from qkdtwin.qkd import analytic_key_rate, build_link_model

    ana = analytic_key_rate("decoy-bb84", build_link_model("decoy-bb84", 25.0, "gys"))
    assert data["analytic_rate_per_signal_pulse"] == pytest.approx(ana.rate_per_pulse)
    assert data["analytic_rate_per_pulse"] == pytest.approx(
        ana.rate_per_pulse * data["signal_fraction"]
    )
    assert data["secret_key_rate_per_signal_pulse"] == pytest.approx(
        data["secret_key_rate_per_pulse"] / data["signal_fraction"]
    )
    # the secure figure of the block, named: 2x10^6 pulses are far too few for a key
    fk = data["finite_key"]
    assert fk["analysis"] == "Lim et al. 2014"
    assert (fk["bits"], fk["eps_sec"], fk["eps_cor"]) == (0, 1e-10, 1e-15)


def test_simulate_same_seed_is_reproducible(capsys):
    args = (
        "link",
        "simulate",
        "--protocol",
        "bb84",
        "--distance-km",
        "10",
        "--pulses",
        "300000",
        "--seed",
        "5",
        "--json",
    )
    _, a, _ = run_cli(capsys, *args)
    _, b, _ = run_cli(capsys, *args)
    da, db = json.loads(a), json.loads(b)
    for d in (da, db):
        d.pop("elapsed_s"), d.pop("pulses_per_s")
    assert da == db


def test_simulate_attack_option(capsys):
    code, out, _ = run_cli(
        capsys,
        "link",
        "simulate",
        "--protocol",
        "bb84",
        "--distance-km",
        "5",
        "--pulses",
        "1e6",
        "--attack",
        "intercept-resend:1",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["attack"] == "intercept-resend:1"
    assert 0.22 < data["qber"] < 0.32


def test_rate_json_contract_and_range(capsys):
    code, out, _ = run_cli(
        capsys, "link", "rate", "--protocol", "decoy-bb84", "--distance-km", "0:300:20", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["protocol"] == "decoy-bb84"
    assert data["preset"] == "gys"
    pts = data["points"]
    assert len(pts) == 16
    assert pts[0]["distance_km"] == 0
    assert pts[-1]["distance_km"] == 300
    assert pts[-1]["rate_per_pulse"] == 0.0
    assert pts[0]["rate_per_pulse"] > 0
    for p in pts:
        assert p["rate_bps"] == pytest.approx(p["rate_per_pulse"] * 2e6)


def test_rate_plot(tmp_path, capsys):
    png = tmp_path / "rate.png"
    code, _, err = run_cli(
        capsys, "link", "rate", "--protocol", "all", "--distance-km", "0:200:50", "--plot", str(png)
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_max_distance_json(capsys):
    code, out, _ = run_cli(capsys, "link", "max-distance", "--protocol", "decoy-bb84", "--json")
    assert code == 0
    d = json.loads(out)["max_distance_km"]
    assert 100 < d < 200


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("link", "simulate", "--distance-km", "-5"), "distance_km"),
        (("link", "simulate", "--mu", "0"), "mu"),
        (("link", "simulate", "--mu", "-0.2"), "mu"),
        (("link", "simulate", "--efficiency", "1.5"), "efficiency"),
        (("link", "simulate", "--efficiency", "0"), "efficiency"),
        (("link", "simulate", "--protocol", "bb85"), "unknown protocol"),
        (("link", "simulate", "--preset", "nope"), "unknown preset"),
        (("link", "simulate", "--pulses", "0"), "pulses"),
        (("link", "simulate", "--pulses", "many"), "pulses"),
        (("link", "simulate", "--attack", "teleport"), "unknown attack"),
        (("link", "simulate", "--attack", "intercept-resend:2"), "attack fraction"),
        (("link", "simulate", "--protocol", "cv-gg02"), "no pulse-by-pulse"),
        (("link", "rate", "--distance-km", "0:abc"), "malformed"),
        (("link", "rate", "--distance-km", "100:0:10"), "malformed"),
        (("link", "rate", "--distance-km", "-10:10"), "distance_km"),
        (("link", "rate", "--protocol", "foo"), "unknown protocol"),
        (("link", "max-distance", "--protocol", "bb84", "--preset", "x"), "unknown preset"),
        (("link", "simulate", "--no-such-option"), "no such option"),
        (("link", "simulate", "--seed", "x"), "seed"),
        (("link", "rate", "--protocol", "bb84", "--cv-xi", "0.1"), "only apply to"),
        (("link", "simulate", "--pulses", "1e20"), "--force"),
        (("link", "max-distance", "--protocol", "bb84", "--decoy-bound", "infinite"), "decoy"),
        (("link", "rate", "--protocol", "decoy-bb84", "--decoy-bound", "many"), "decoy-bound"),
        (("link", "rate", "--protocol", "cv-gg02", "--cv-va", "lots"), "--cv-va"),
        (("link", "rate", "--protocol", "cv-gg02", "--cv-va", "-1"), "v_a"),
        (("link", "rate", "--protocol", "cv-gg02", "--cv-beta", "1.5"), "beta"),
        (("link", "max-distance", "--protocol", "cv-gg02", "--cv-detection", "x"), "detection"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(capsys, args, needle):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in err


def test_bad_input_through_the_real_executable():
    proc = subprocess.run(
        [sys.executable, "-m", "qkdtwin", "link", "simulate", "--distance-km", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "distance_km" in proc.stderr


def test_rate_json_writes_infinite_plob_as_null(capsys):
    code, out, _ = run_cli(
        capsys, "link", "rate", "--protocol", "plob", "--distance-km", "0:10:10", "--json"
    )
    assert code == 0
    pts = json.loads(out)["points"]
    assert pts[0]["rate_per_pulse"] is None  # -log2(1 - 1) is infinite at 0 km
    assert pts[1]["rate_per_pulse"] > 0


def test_cv_options_reach_the_rate_and_the_reach(capsys):
    from qkdtwin.qkd import analytic_key_rate
    from qkdtwin.qkd.keyrate import CvParameters, optimal_v_a
    from qkdtwin.qkd.model import build_link_model

    code, out, _ = run_cli(capsys, "link", "rate", "-p", "cv-gg02", "--distance-km", "25:100:75",
                           "--cv-va", "18.5", "--cv-xi", "0.01", "--json")  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["cv"]["v_a"] == 18.5
    assert doc["cv"]["xi"] == 0.01
    model = build_link_model("cv-gg02", 25.0, "gys")
    want = analytic_key_rate("cv-gg02", model, cv=CvParameters(v_a=18.5, xi=0.01))
    assert doc["points"][0]["rate_per_pulse"] == pytest.approx(want.rate_per_pulse)
    assert doc["points"][1]["rate_per_pulse"] == 0.0  # V_A = 18.5 gives nothing at 100 km
    # by default the modulation is optimised at each distance, and reported
    code, out, _ = run_cli(capsys, "link", "rate", "-p", "cv-gg02", "--distance-km", "100",
                           "--json")  # fmt: skip
    pt = json.loads(out)["points"][0]
    va, k = optimal_v_a(build_link_model("cv-gg02", 100.0, "gys").transmittance)
    assert pt["v_a"] == pytest.approx(va)
    assert pt["rate_per_pulse"] == pytest.approx(k)
    assert json.loads(out)["cv"]["v_a"] == "optimal"
    # beyond the model's numerical range: null, not a number
    code, out, _ = run_cli(capsys, "link", "rate", "-p", "cv-gg02", "--distance-km", "600",
                           "--json")  # fmt: skip
    assert json.loads(out)["points"][0]["rate_per_pulse"] is None
    code, out, _ = run_cli(capsys, "link", "max-distance", "-p", "cv-gg02", "--json")
    doc = json.loads(out)
    assert doc["max_distance_km"] is None
    assert doc["positive_beyond_km"] > 400
    code, out, _ = run_cli(capsys, "link", "max-distance", "-p", "cv-gg02", "--cv-xi", "0.03",
                           "--json")  # fmt: skip
    assert 100 < json.loads(out)["max_distance_km"] < 300


def test_the_decoy_bound_is_chosen_and_named(capsys):
    from qkdtwin.qkd import analytic_key_rate, build_link_model, max_distance

    base = build_link_model("decoy-bb84", 0.0, "gys")
    for flag, decoys in ((None, "vacuum+weak"), ("vacuum-weak", "vacuum+weak"),
                         ("infinite", "infinite")):  # fmt: skip
        extra = () if flag is None else ("--decoy-bound", flag)
        code, out, _ = run_cli(capsys, "link", "max-distance", "-p", "decoy-bb84", *extra,
                               "--json")  # fmt: skip
        assert code == 0
        doc = json.loads(out)
        assert doc["decoy_bound"] == (flag or "vacuum-weak")
        assert doc["max_distance_km"] == pytest.approx(max_distance("decoy-bb84", base,
                                                                    decoys=decoys))  # fmt: skip
        code, out, _ = run_cli(capsys, "link", "rate", "-p", "decoy-bb84", "--distance-km",
                               "100", *extra, "--json")  # fmt: skip
        doc = json.loads(out)
        assert doc["decoy_bound"] == (flag or "vacuum-weak")
        want = analytic_key_rate("decoy-bb84", base.with_distance(100.0), decoys=decoys)
        assert doc["points"][0]["rate_per_pulse"] == pytest.approx(want.rate_per_pulse)
    # the infinite-decoy reach is Lo-Ma-Chen's ~142 km, the vacuum + weak one shorter
    code, out, _ = run_cli(capsys, "link", "max-distance", "-p", "decoy-bb84")
    assert code == 0
    assert "decoy bound vacuum-weak" in out
    assert "139.1" in out


def test_run_time_guard_and_quiet_flags(capsys):
    from qkdtwin.cli.link import FASTEST_PULSES_PER_S, MAX_UNFORCED_RUN_S, guard_run_time
    from qkdtwin.errors import ConfigError

    limit = int(FASTEST_PULSES_PER_S * MAX_UNFORCED_RUN_S)
    guard_run_time(limit, force=False)  # an hour at the fastest rate: allowed
    with pytest.raises(ConfigError, match=r"1\.58e\+04 years"):
        guard_run_time(10**20, force=False)  # 1e20 / 2e8 s = 15,844 years
    guard_run_time(10**20, force=True)
    code, out, _ = run_cli(capsys, "link", "simulate", "--help")
    assert code == 0
    assert "--force" in out
    assert "<bool>" not in out


def test_twin_demo_formats_event_fields():
    from qkdtwin.cli.twin import _fields_text

    text = _fields_text({"qber": 0.26202603282399545, "pools": ["A|B", "C|D"], "ok": True})
    assert text == "qber 0.262, pools [A|B, C|D], ok True"


def test_iot_latency_note_names_the_start_up():
    from qkdtwin.cli.iot import latency_note

    assert "5 %" in latency_note(20, 1)  # 20 intervals: the first holds 5 %
    assert "first interval" not in latency_note(200, 1)  # 0.5 %: below the p99
