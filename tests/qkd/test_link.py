"""Simulation meets theory: key rates from simulated statistics converge to the analytic ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, SimulationError
from qkdtwin.qkd import (
    PhotonNumberSplitting,
    analytic_key_rate,
    build_link_model,
    keyrate,
    simulate_link,
)


def rates(protocol, model, pulses, seeds, **kw):
    out = []
    for s in seeds:
        res = simulate_link(protocol, model, pulses, np.random.default_rng(s), **kw)
        share = res.details.get("signal_fraction", 1.0)
        out.append(res.secret_key_rate_per_pulse / share)
    return np.array(out)


@pytest.mark.parametrize(
    ("protocol", "distance", "pulses"),
    [
        ("decoy-bb84", 50.0, 10_000_000),
        ("bb84", 10.0, 4_000_000),
        ("sarg04", 20.0, 6_000_000),
        ("bbm92", 20.0, 20_000_000),
    ],
)
def test_simulated_rate_agrees_with_analytic_within_statistical_error(protocol, distance, pulses):
    model = build_link_model(protocol, distance, "gys")
    analytic = analytic_key_rate(protocol, model).rate_per_pulse
    r = rates(protocol, model, pulses, seeds=range(5))
    sem = r.std(ddof=1) / math.sqrt(r.size)
    assert analytic > 0
    # agreement within 4 standard errors of the mean (plus 1% for the model's two-detector
    # refinements over the textbook formulas, see docs/qkd.md)
    assert abs(r.mean() - analytic) < 4 * sem + 0.01 * analytic, (r, analytic)


def test_decoy_rate_error_shrinks_as_pulses_grow():
    model = build_link_model("decoy-bb84", 80.0, "gys")
    analytic = analytic_key_rate("decoy-bb84", model).rate_per_pulse
    small = rates("decoy-bb84", model, 1_000_000, seeds=range(6))
    large = rates("decoy-bb84", model, 30_000_000, seeds=range(100, 103))
    err_small = np.sqrt(np.mean((small - analytic) ** 2))
    err_large = np.sqrt(np.mean((large - analytic) ** 2))
    assert err_large < 0.5 * err_small


def test_pns_is_invisible_to_plain_bb84_but_exposed_by_decoys():
    distance = 60.0
    model = build_link_model("decoy-bb84", distance, "gys")
    honest = simulate_link("decoy-bb84", model, 40_000_000, np.random.default_rng(1))
    pns = simulate_link(
        "decoy-bb84", model, 40_000_000, np.random.default_rng(2), attack=PhotonNumberSplitting()
    )
    # plain BB84 looks only at the signal's gain and QBER: unchanged within statistics
    g_h, g_p = honest.details["per_intensity"][0]["gain"], pns.details["per_intensity"][0]["gain"]
    n_sig = honest.details["per_intensity"][0]["sent"]
    assert abs(g_h - g_p) < 5 * math.sqrt(2 * g_h / n_sig)
    assert abs(honest.qber - pns.qber) < 0.01
    # the decoy analysis sees through it: Y1 collapses and no key is distilled
    y1_h = honest.details["decoy_estimates"]["y1_lower"]
    y1_p = pns.details["decoy_estimates"]["y1_lower"]
    assert y1_p < 0.5 * y1_h
    assert pns.secret_key_rate_per_pulse < 0.2 * honest.secret_key_rate_per_pulse
    assert pns.details["eve_known_fraction"] > 0.5
    # plain weak-coherent BB84 at the same intensity: the QBER check passes (a user trusting
    # it would distil key with the single-photon formula) while Eve knows almost every bit
    plain_model = build_link_model("bb84", distance, "gys", mu=0.48)
    plain_h = simulate_link("bb84", plain_model, 20_000_000, np.random.default_rng(3))
    plain_e = simulate_link(
        "bb84", plain_model, 20_000_000, np.random.default_rng(4), attack=PhotonNumberSplitting()
    )
    assert abs(plain_h.qber - plain_e.qber) < 0.01
    naive = keyrate.shor_preskill_rate(plain_e.detections / plain_e.pulses, plain_e.qber, 1.22)
    assert naive > 0
    assert plain_e.details["eve_known_fraction"] > 0.9
    # GLLP without decoys, which assumes every multi-photon pulse is Eve's, gives no key here
    assert plain_e.secret_key_rate_per_pulse == 0.0


def test_e91_reports_chsh_and_bbm92_does_not():
    e91 = simulate_link(
        "e91", build_link_model("e91", 10.0, "gys"), 5_000_000, np.random.default_rng(0)
    )
    assert 2.0 < e91.details["chsh_s"] < 2 * math.sqrt(2) + 0.2
    bbm92 = simulate_link(
        "bbm92", build_link_model("bbm92", 10.0, "gys"), 1_000_000, np.random.default_rng(0)
    )
    assert "chsh_s" not in bbm92.details


def test_keep_bits_returns_aligned_arrays():
    res = simulate_link(
        "bb84",
        build_link_model("bb84", 10.0, "gys"),
        2_000_000,
        np.random.default_rng(4),
        keep_bits=True,
    )
    assert res.alice_bits is not None
    assert res.bob_bits is not None
    assert res.alice_bits.size == res.bob_bits.size == res.sifted_bits
    assert np.mean(res.alice_bits != res.bob_bits) == pytest.approx(res.qber)


def test_chunking_does_not_change_the_statistics_law():
    model = build_link_model("decoy-bb84", 30.0, "gys")
    a = simulate_link("decoy-bb84", model, 3_000_000, np.random.default_rng(1), chunk_size=65_536)
    b = simulate_link("decoy-bb84", model, 3_000_000, np.random.default_rng(2))
    assert a.pulses == b.pulses == 3_000_000
    assert abs(a.qber - b.qber) < 5 * math.sqrt(a.qber / a.sifted_bits + b.qber / b.sifted_bits)


def test_progress_callback_reaches_total():
    seen = []
    simulate_link(
        "bb84",
        build_link_model("bb84", 5.0, "gys"),
        2_500_000,
        np.random.default_rng(0),
        chunk_size=1_000_000,
        progress=seen.append,
    )
    assert seen == [1_000_000, 2_000_000, 2_500_000]


def test_dead_time_lowers_the_detection_rate():
    fast = build_link_model("bb84", 0.0, "gys", repetition_rate_hz=1e9)
    from dataclasses import replace

    slow = replace(fast, detector=replace(fast.detector, dead_time_s=100e-9))  # 100 gates
    a = simulate_link("bb84", fast, 2_000_000, np.random.default_rng(0))
    b = simulate_link("bb84", slow, 2_000_000, np.random.default_rng(0))
    g = a.detections / a.pulses
    # per detector the registered rate is p / (1 + p D) with p about g / 2
    expected = 2 * (g / 2) / (1 + (g / 2) * 100)
    assert b.detections / b.pulses == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("pulses", [0, -3, 2.5])
def test_bad_pulse_counts(pulses):
    with pytest.raises(ConfigError, match="pulses"):
        simulate_link("bb84", build_link_model("bb84", 1.0), pulses, np.random.default_rng(0))


def test_analytic_only_protocols_cannot_be_simulated():
    with pytest.raises(SimulationError):
        simulate_link("cv-gg02", build_link_model("cv-gg02", 1.0), 10, np.random.default_rng(0))


def test_entangled_protocols_reject_attacks():
    with pytest.raises(ConfigError, match="attack"):
        simulate_link(
            "bbm92",
            build_link_model("bbm92", 1.0),
            10,
            np.random.default_rng(0),
            attack=PhotonNumberSplitting(),
        )


def test_entangled_protocols_reject_dead_time():
    from dataclasses import replace

    model = build_link_model("bbm92", 1.0)
    model = replace(model, detector=replace(model.detector, dead_time_s=1e-6))
    with pytest.raises(ConfigError, match="dead time"):
        simulate_link("bbm92", model, 10, np.random.default_rng(0))
