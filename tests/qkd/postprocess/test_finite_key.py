"""Finite-key lengths: the published formulas recomputed here, and their asymptotic limits."""

from __future__ import annotations

import math

import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.postprocess import DecoyCounts, lim_decoy_key_length, tomamichel_key_length


def h_bin(p):
    return 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_tomamichel_against_the_formula_written_out():
    n, k, q, leak = 10**6, 2 * 10**5, 0.02, 150_000
    es, ec = 1e-10, 1e-12
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / es))
    expected = math.floor(n * (1 - h_bin(q + mu)) - leak - math.log2(2 / (es**2 * ec)))
    assert tomamichel_key_length(n, k, q, leak, eps_sec=es, eps_cor=ec) == expected


def test_tomamichel_tends_to_shor_preskill():
    q, f = 0.03, 1.1
    rates = []
    for n in (10**5, 10**7, 10**10, 10**13):
        length = tomamichel_key_length(n, n // 10, q, f * n * h_bin(q))
        rates.append(length / n)
    assert rates == sorted(rates)  # more data, more key per bit
    assert rates[-1] == pytest.approx(1 - (1 + f) * h_bin(q), rel=2e-3)
    assert tomamichel_key_length(500, 50, q, f * 500 * h_bin(q)) == 0  # too short for any key


def expected_counts(n_pulses, mus, ps, eta, y0, ed):
    """Expected Z and X detections and X errors (both bases chosen with probability 1/2)."""
    nz, nx, mx = [], [], []
    for mu, p in zip(mus, ps, strict=True):
        gain = 1 - (1 - y0) * math.exp(-eta * mu)
        err = (0.5 * y0 * math.exp(-eta * mu) + ed * (1 - math.exp(-eta * mu))) / gain
        count = n_pulses * p * 0.25 * gain
        nz.append(round(count))
        nx.append(round(count))
        mx.append(round(count * err))
    return nz, nx, mx


def test_lim_against_the_formula_written_out():
    mus, ps = (0.5, 0.1, 0.0), (0.7, 0.2, 0.1)
    nz, nx, mx = expected_counts(10**10, mus, ps, 10 ** (-0.2 * 50 / 10) * 0.1, 1e-6, 0.015)
    es, ec, leak = 1e-10, 1e-15, 2e6
    got, det = lim_decoy_key_length(
        DecoyCounts(mus, ps, tuple(nz), tuple(nx), tuple(mx)), leak, eps_sec=es, eps_cor=ec
    )

    def tau(n):
        return sum(math.exp(-m) * m**n * p for m, p in zip(mus, ps, strict=True)) / math.factorial(
            n
        )

    def pm(counts):
        d = math.sqrt(sum(counts) / 2 * math.log(21 / es))
        lo = [math.exp(m) / p * (c - d) for m, p, c in zip(mus, ps, counts, strict=True)]
        hi = [math.exp(m) / p * (c + d) for m, p, c in zip(mus, ps, counts, strict=True)]
        return lo, hi

    m1, m2, m3 = mus

    def s01(counts):
        lo, hi = pm(counts)
        s0 = max(0.0, tau(0) * (m2 * lo[2] - m3 * hi[1]) / (m2 - m3))
        s1 = tau(1) * m1 * (lo[1] - hi[2] - (m2**2 - m3**2) / m1**2 * (hi[0] - s0 / tau(0)))
        return s0, s1 / (m1 * (m2 - m3) - m2**2 + m3**2)

    s0, s1 = s01(nz)
    _, s1x = s01(nx)
    lo_m, hi_m = pm(mx)
    v1 = tau(1) * (hi_m[1] - lo_m[2]) / (m2 - m3)
    b = v1 / s1x
    gamma = math.sqrt(
        (s1 + s1x)
        * (1 - b)
        * b
        / (s1 * s1x * math.log(2))
        * math.log2((s1 + s1x) / (s1 * s1x * (1 - b) * b) * 21**2 / es**2)
    )
    phi = b + gamma
    expected = math.floor(
        s0 + s1 * (1 - h_bin(phi)) - leak - 6 * math.log2(21 / es) - math.log2(2 / ec)
    )
    assert got == expected
    assert det["phi"] == pytest.approx(phi)


def test_lim_rate_tends_to_the_asymptotic_decoy_rate():
    mus, ps = (0.5, 0.1, 0.0), (0.8, 0.1, 0.1)
    eta, y0, ed, f = 10 ** (-0.2 * 40 / 10) * 0.2, 1e-6, 0.02, 1.1
    # asymptotic value: Y1 from the exact (vacuum + weak) decoy bound, e1 from v1 / s1
    rates = []
    for n in (10**9, 10**11, 10**14):
        nz, nx, mx = expected_counts(n, mus, ps, eta, y0, ed)
        q = sum(mx) / sum(nx)
        length, _ = lim_decoy_key_length(
            DecoyCounts(mus, ps, tuple(nz), tuple(nx), tuple(mx)), f * sum(nz) * h_bin(q)
        )
        rates.append(length / n)
    assert rates == sorted(rates)
    # limit: tau1 * Y1 * (1 - h(e1)) + tau0 * Y0 - sum_k p_k Q_k f h(E), all times 1/4 (sifting)
    tau0 = sum(p * math.exp(-m) for m, p in zip(mus, ps, strict=True))
    tau1 = sum(p * m * math.exp(-m) for m, p in zip(mus, ps, strict=True))
    y1 = 1 - (1 - y0) * (1 - eta)
    e1 = (0.5 * y0 * (1 - eta) + ed * eta) / y1
    gains = [1 - (1 - y0) * math.exp(-eta * m) for m in mus]
    q_all = sum(p * g for p, g in zip(ps, gains, strict=True))
    errs = sum(
        p * (0.5 * y0 * math.exp(-eta * m) + ed * (1 - math.exp(-eta * m)))
        for m, p in zip(mus, ps, strict=True)
    )
    limit = 0.25 * (tau0 * y0 + tau1 * y1 * (1 - h_bin(e1)) - q_all * f * h_bin(errs / q_all))
    # the three-intensity bound is not tight (nu = 0.1 > 0): within 10 % of the ideal limit
    assert rates[-1] == pytest.approx(limit, rel=0.10)
    assert rates[-1] < limit


def test_lim_requires_the_intensity_ordering():
    counts = DecoyCounts((0.2, 0.15, 0.1), (0.5, 0.25, 0.25), (10, 10, 10), (10, 10, 10), (1, 1, 1))
    with pytest.raises(ConfigError, match="mu1 > mu2 \\+ mu3"):
        lim_decoy_key_length(counts, 0.0)


@pytest.mark.parametrize("eps", [0.0, 1.0, -1e-3, 2.0])
def test_epsilons_must_be_in_open_unit_interval(eps):
    with pytest.raises(ConfigError, match="eps_sec"):
        tomamichel_key_length(100, 10, 0.01, 0, eps_sec=eps)
    with pytest.raises(ConfigError, match="eps_cor"):
        tomamichel_key_length(100, 10, 0.01, 0, eps_cor=eps)
