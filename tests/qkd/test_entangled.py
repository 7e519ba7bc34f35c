"""BBM92 / E91 engine against an exact enumeration over the thermal mode occupations and
against the published Ma-Fung-Lo formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdtwin.qkd import keyrate
from qkdtwin.qkd.model import build_link_model
from qkdtwin.qkd.protocols.entangled import BBM92_SETTINGS, E91_SETTINGS, EntangledEngine
from qkdtwin.qkd.statistics import EntangledStats


def run(model, plan, pulses, seed=1):
    eng = EntangledEngine(model, plan)
    stats = EntangledStats(eng.na, eng.nb)
    rng = np.random.default_rng(seed)
    done = 0
    while done < pulses:
        n = min(1 << 20, pulses - done)
        eng.run_chunk(rng, done, n, stats)
        done += n
    return eng, stats


def enumerate_setting(eng, theta_a, theta_b, m_max=40):
    """Exact coincidence probability and P(equal bits) by summing over (m0, m1)."""
    lam, pd, ea, eb = eng.lam, eng.pd, eng.eta_a, eng.eta_b
    ed = eng.model.detector.misalignment
    p = 0.5 + 0.5 * (1 - 2 * ed) * math.cos(2 * math.radians(theta_b - theta_a))
    m = np.arange(m_max)
    geo = (1 / (1 + lam)) * (lam / (1 + lam)) ** m
    m0, m1 = np.meshgrid(m, m, indexing="ij")
    w = np.outer(geo, geo)
    a0 = 1 - (1 - pd) * (1 - ea) ** m0
    a1 = 1 - (1 - pd) * (1 - ea) ** m1
    c0 = (1 - pd) * (1 - eb * p) ** m0 * (1 - eb * (1 - p)) ** m1
    c1 = (1 - pd) * (1 - eb * (1 - p)) ** m0 * (1 - eb * p) ** m1
    cb = (1 - pd) ** 2 * (1 - eb) ** (m0 + m1)
    pa0 = a0 * (1 - a1) + 0.5 * a0 * a1
    pa1 = a1 * (1 - a0) + 0.5 * a0 * a1
    b_only0, b_only1, b_both = c1 - cb, c0 - cb, 1 - c0 - c1 + cb
    pb0 = b_only0 + 0.5 * b_both
    pb1 = b_only1 + 0.5 * b_both
    coinc = (w * (pa0 + pa1) * (pb0 + pb1)).sum()
    equal = (w * (pa0 * pb0 + pa1 * pb1)).sum()
    return coinc, equal


@pytest.mark.parametrize("distance", [0.0, 40.0])
def test_bbm92_coincidences_and_qber_match_enumeration(distance):
    model = build_link_model("bbm92", distance, "gys", mu=0.2)
    eng, stats = run(model, BBM92_SETTINGS, 12_000_000, seed=int(distance) + 1)
    for i, j in BBM92_SETTINGS.key_pairs:
        coinc, equal = enumerate_setting(eng, 45.0 * i, 45.0 * j)
        n = stats.sent[i, j]
        q = stats.coincidences[i, j] / n
        assert abs(q - coinc) < 5 * math.sqrt(coinc / n), (q, coinc)
        e_sim = 1 - stats.equal[i, j] / stats.coincidences[i, j]
        e_ref = 1 - equal / coinc
        assert abs(e_sim - e_ref) < 5 * math.sqrt(e_ref * (1 - e_ref) / stats.coincidences[i, j])


def test_enumeration_agrees_with_ma_fung_lo_formula():
    model = build_link_model("bbm92", 30.0, "gys", mu=0.2)
    eng = EntangledEngine(model, BBM92_SETTINGS)
    coinc, equal = enumerate_setting(eng, 0.0, 0.0)
    y0 = model.detector.background_yield
    q, e = keyrate.bbm92_expected(eng.eta_a, eng.eta_b, 0.2, y0, y0, model.detector.misalignment)
    assert coinc == pytest.approx(float(q), rel=1e-6)
    assert 1 - equal / coinc == pytest.approx(float(e), rel=1e-4)


def test_e91_chsh_value_violates_bell_inequality():
    model = build_link_model("e91", 5.0, "gys", mu=0.05)
    eng, stats = run(model, E91_SETTINGS, 30_000_000, seed=3)
    corr = stats.correlation()
    (a1, b1), (a2, b2), (a3, b3), (a4, b4) = E91_SETTINGS.chsh
    s = corr[a1, b1] - corr[a2, b2] + corr[a3, b3] + corr[a4, b4]
    # expected S from the exact enumeration of the same model
    s_ref = 0.0
    for (i, j), sign in zip(E91_SETTINGS.chsh, (1, -1, 1, 1), strict=True):
        coinc, equal = enumerate_setting(eng, E91_SETTINGS.alice_deg[i], E91_SETTINGS.bob_deg[j])
        s_ref += sign * (2 * equal / coinc - 1)
    n_min = min(stats.coincidences[i, j] for i, j in E91_SETTINGS.chsh)
    assert abs(s - s_ref) < 5 * 2 / math.sqrt(n_min)
    assert s > 2.0  # violates CHSH: the source is entangled
    assert s_ref < 2 * math.sqrt(2) * (1 - 2 * model.detector.misalignment) + 1e-9
