"""The whole chain on simulated links: identical keys, exact accounting, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qkdtwin.cli import main
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.qkd import build_link_model, simulate_link
from qkdtwin.qkd.postprocess import PostprocessConfig, postprocess


@pytest.fixture(scope="module")
def decoy_run():
    model = build_link_model("decoy-bb84", 25.0, "boaron2018")
    res = simulate_link("decoy-bb84", model, 10**7, np.random.default_rng(1), keep_bits=True)
    return model, res


def test_decoy_chain_gives_identical_nonempty_keys(decoy_run):
    model, res = decoy_run
    pp = postprocess(res, model, np.random.default_rng(2), PostprocessConfig(frame_bits=20_000))
    assert not pp.aborted
    assert pp.keys_identical
    assert pp.final_key_bits > 1000
    assert np.array_equal(pp.alice_key, pp.bob_key)
    assert pp.frames == pp.key_bits_in // 20_000
    # the key is made of the Z-basis bits of every intensity
    z_bits = int(sum(r["detected_zz"] for r in res.details["per_intensity"]))
    assert pp.key_bits_in == z_bits
    assert 1.0 < pp.reconciliation_efficiency < 1.2
    assert pp.final_key_bits < pp.key_bits_in - pp.leaked_bits
    assert pp.secret_key_rate_bps == pytest.approx(
        pp.final_key_bits / (res.pulses / model.repetition_rate_hz)
    )


def _fail_frames(monkeypatch, which: set[int]) -> None:
    """Make verification fail on the frames numbered ``which`` (0-based), nothing else."""
    import dataclasses

    from qkdtwin.qkd.postprocess import pipeline

    real = pipeline.verify_keys
    calls = iter(range(10**9))

    def forced(*args, **kwargs):
        res = real(*args, **kwargs)
        return dataclasses.replace(res, verified=False) if next(calls) in which else res

    monkeypatch.setattr(pipeline, "verify_keys", forced)


def test_a_failed_frame_costs_its_bits_provably(decoy_run, monkeypatch):
    import math

    model, res = decoy_run
    cfg = PostprocessConfig(frame_bits=20_000)
    ok = postprocess(res, model, np.random.default_rng(2), cfg)
    _fail_frames(monkeypatch, {1})
    bad = postprocess(res, model, np.random.default_rng(2), cfg)
    assert bad.frames_failed == 1
    assert bad.keys_identical
    from qkdtwin.qkd.postprocess.pipeline import _frames

    start, stop = _frames(bad.key_bits_in, 20_000)[1]
    failed_bits = stop - start
    assert bad.details["failed_frames"] == {
        "treatment": "disclose", "frames": 1, "bits_counted_as_disclosed": failed_bits,
    }  # fmt: skip
    # Lim et al.'s length, recomputed here from its published form with the whole block's
    # bounds and the failed frame's bits counted as leaked (the chain rule)
    fk = bad.details["finite_key"]
    leak = bad.leaked_bits + bad.verification_bits + failed_bits
    want = math.floor(
        fk["s0"] + fk["s1"] * (1 - _h2(fk["phi"])) - leak
        - 6 * math.log2(21 / cfg.eps_sec) - math.log2(2 / cfg.eps_cor)
    )  # fmt: skip
    assert bad.final_key_bits == max(0, want)
    # same bounds and leakage as the clean run: exactly the failed bits fewer
    assert bad.leaked_bits == ok.leaked_bits
    assert bad.final_key_bits == max(0, ok.final_key_bits - failed_bits)
    # the old, unproven scaling by the fraction of frames kept would have given more
    kept = (bad.key_bits_in - failed_bits) / bad.key_bits_in
    assert bad.final_key_bits < math.floor(ok.final_key_bits * kept)


def test_the_finite_key_estimate_is_the_chain_with_the_model_leak(decoy_run):
    from qkdtwin.qkd.postprocess import finite_key_estimate

    model, res = decoy_run
    pp = postprocess(res, model, np.random.default_rng(2), PostprocessConfig(frame_bits=20_000))
    est = finite_key_estimate(res, model)
    assert est["analysis"] == "Lim et al. 2014"
    # same counts, same bound; the length is linear in the leak: the two differ by the
    # difference of their leaks (floor: within one bit)
    z = res.details["per_intensity"]
    n_z = sum(r["detected_zz"] for r in z)
    q = sum(r["errors_zz"] for r in z) / n_z
    assert est["leak_ec_bits"] == pytest.approx(model.ec_efficiency * n_z * _h2(q))
    real_leak = pp.leaked_bits + pp.verification_bits
    assert abs(est["bits"] - pp.final_key_bits - (real_leak - est["leak_ec_bits"])) <= 1


def test_a_failed_frame_aborts_the_block_when_asked(decoy_run, monkeypatch):
    model, res = decoy_run
    _fail_frames(monkeypatch, {0})
    cfg = PostprocessConfig(frame_bits=20_000, failed_frames="abort")
    pp = postprocess(res, model, np.random.default_rng(2), cfg)
    assert pp.aborted
    assert "failed verification" in (pp.abort_reason or "")
    assert pp.final_key_bits == 0


def _h2(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -p * np.log2(p) - (1 - p) * np.log2(1 - p)


def test_final_key_is_balanced(decoy_run):
    model, res = decoy_run
    pp = postprocess(res, model, np.random.default_rng(3))
    k = pp.alice_key
    assert abs(k.mean() - 0.5) < 5 * 0.5 / np.sqrt(k.size)


def test_bb84_single_photon_chain_uses_tomamichel():
    model = build_link_model("bb84", 10.0, "boaron2018", single_photon=True)
    res = simulate_link("bb84", model, 2 * 10**6, np.random.default_rng(4), keep_bits=True)
    pp = postprocess(res, model, np.random.default_rng(5))
    assert pp.details["finite_key"]["analysis"] == "Tomamichel et al. 2012"
    assert pp.keys_identical
    assert pp.final_key_bits > 0


def test_intercept_resend_aborts():
    model = build_link_model("bb84", 10.0, "boaron2018", single_photon=True)
    from qkdtwin.qkd import InterceptResend

    res = simulate_link(
        "bb84", model, 10**6, np.random.default_rng(6), keep_bits=True, attack=InterceptResend(1.0)
    )
    pp = postprocess(res, model, np.random.default_rng(7))
    assert pp.aborted
    assert "QBER" in pp.abort_reason
    assert pp.final_key_bits == 0


def test_needs_kept_bits_and_a_supported_protocol():
    model = build_link_model("bb84", 10.0)
    res = simulate_link("bb84", model, 10**4, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="keep_bits"):
        postprocess(res, model, np.random.default_rng(0))
    sarg = build_link_model("sarg04", 10.0)
    res2 = simulate_link("sarg04", sarg, 10**4, np.random.default_rng(0), keep_bits=True)
    with pytest.raises(ConfigError, match="finite-key"):
        postprocess(res2, sarg, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"reconciliation": "ldpc9"}, UnknownNameError),
        ({"eps_sec": 1.0}, ConfigError),
        ({"eps_cor": 0.0}, ConfigError),
        ({"frame_bits": 10}, ConfigError),
        ({"failed_frames": "ignore"}, ConfigError),
    ],
)
def test_config_validation(kwargs, exc):
    with pytest.raises(exc):
        PostprocessConfig(**kwargs)


def test_cli_postprocess_json_and_keys_file(tmp_path, capsys):
    keys = tmp_path / "keys.txt"
    code = main(
        [
            "link",
            "simulate",
            "--protocol",
            "decoy-bb84",
            "--distance-km",
            "25",
            "--pulses",
            "1e7",
            "--preset",
            "boaron2018",
            "--postprocess",
            "--keys-out",
            str(keys),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    pp = json.loads(out)["postprocess"]
    for key in (
        "sifted_bits",
        "qber_estimate",
        "leaked_bits",
        "reconciliation_efficiency",
        "frame_error_rate",
        "verified",
        "final_key_bits",
        "keys_identical",
        "secret_key_rate_bps",
    ):
        assert key in pp
    assert pp["keys_identical"]
    assert pp["verified"]
    lines = keys.read_text().splitlines()
    assert len(lines) == pp["keys_written"] == pp["final_key_bits"] // 256
    kid, hexkey = lines[0].split()
    assert len(kid) == 36
    assert len(hexkey) == 64
    assert len({line.split()[0] for line in lines}) == len(lines)  # unique key IDs


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--reconciliation", "nope"], "unknown reconciliation"),
        (["--eps-sec", "0"], "eps_sec"),
        (["--eps-cor", "2"], "eps_cor"),
        (["--key-size", "100"], "key size"),
    ],
)
def test_cli_postprocess_bad_input(capsys, args, needle):
    code = main(["link", "simulate", "--pulses", "1000", "--postprocess", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert needle in err


def test_cli_keys_out_needs_postprocess(capsys, tmp_path):
    code = main(["link", "simulate", "--pulses", "1000", "--keys-out", str(tmp_path / "k")])
    assert code == 2
    assert "--postprocess" in capsys.readouterr().err


def test_cli_postprocess_bench(capsys):
    code = main(
        [
            "postprocess",
            "bench",
            "--frame-bits",
            "20000",
            "--qber",
            "0.03",
            "--frames",
            "2",
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    rows = json.loads(out)["results"]
    assert {r["reconciliation"] for r in rows} >= {"original", "option8-bpi"}
    for r in rows:
        assert r["frame_error_rate"] <= 0.5
        assert 1.0 < r["efficiency"] < 1.6


@pytest.mark.parametrize("qber", ["0", "0.5", "-0.1", "0.7"])
def test_cli_bench_rejects_qber_outside_open_interval(capsys, qber):
    assert main(["postprocess", "bench", "--qber", qber]) == 2
    assert "qber" in capsys.readouterr().err
