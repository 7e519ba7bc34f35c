"""Key-supply forecasts against closed forms and against simulated stores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qkdtwin.errors import ConfigError
from qkdtwin.twin.forecast import ConsumptionTracker, forecast_depletion


def test_a_draining_store_follows_the_inverse_gaussian_law():
    # no parameter uncertainty: the predictive law is IG(mean S/|mu|, shape S^2/sigma^2)
    s, lam_s, lam_c = 400, 2.0, 5.0
    f = forecast_depletion(s, lam_s, lam_c, draws=20000, rng=1, level_ci=0.9)
    mean, shape = s / (lam_c - lam_s), s * s / (lam_s + lam_c)
    ref = stats.invgauss(mean / shape, scale=shape)
    assert f.ttd_s == pytest.approx(ref.median(), rel=0.02)
    assert f.ttd_interval_s[0] == pytest.approx(ref.ppf(0.05), rel=0.03)
    assert f.ttd_interval_s[1] == pytest.approx(ref.ppf(0.95), rel=0.03)
    assert f.drift_per_s == pytest.approx(-3.0)


def test_a_filling_store_rarely_empties():
    s, lam_s, lam_c = 20, 5.0, 4.0
    f = forecast_depletion(s, lam_s, lam_c, draws=40000, rng=2, lead_s=1e9)
    # P(ever empty) = exp(-2 mu S / sigma^2) for Brownian motion with drift mu > 0
    assert f.p_empty_within_lead == pytest.approx(math.exp(-2 * 1.0 * s / 9.0), abs=0.01)
    assert f.ttd_s == math.inf
    assert f.ttd_interval_s[1] == math.inf
    assert not forecast_depletion(5000, 5.0, 4.0, rng=0).warning


def test_intervals_cover_simulated_depletion_times():
    """Independent check: event-by-event Poisson supply and consumption from the same level."""
    rng = np.random.default_rng(7)
    s, lam_s, lam_c, n = 300, 3.0, 4.5, 400
    f = forecast_depletion(s, lam_s, lam_c, rng=3, level_ci=0.9)
    # per-second Poisson increments, 4000 s horizon, all paths at once
    steps = rng.poisson(lam_s, (n, 4000)) - rng.poisson(lam_c, (n, 4000))
    level = s + np.cumsum(steps, axis=1)
    hit = np.argmax(level <= 0, axis=1).astype(float) + 1.0
    hit[~(level <= 0).any(axis=1)] = np.inf
    lo, hi = f.ttd_interval_s
    coverage = np.mean((hit >= lo) & (hit <= hi))
    # 400 paths: the 99 % binomial band around 0.9 is about +-0.04
    assert 0.85 <= coverage <= 0.95, (coverage, lo, hi, np.median(hit))
    assert f.ttd_s == pytest.approx(np.median(hit), rel=0.06)


def test_the_drifts_uncertainty_widens_the_interval():
    tight = forecast_depletion(500, 2.0, 4.0, rng=0)
    loose = forecast_depletion(500, 2.0, 4.0, consumption_se=0.8, rng=0)
    assert loose.ttd_interval_s[1] > tight.ttd_interval_s[1]
    assert loose.ttd_interval_s[0] < tight.ttd_interval_s[0]


def test_warnings_follow_the_lead_time():
    assert forecast_depletion(100, 0.0, 2.0, lead_s=300, rng=0).warning  # ~50 s to empty
    assert not forecast_depletion(100_000, 0.0, 2.0, lead_s=300, rng=0).warning
    with pytest.raises(ConfigError):
        forecast_depletion(-1, 1.0, 1.0)
    with pytest.raises(ConfigError):
        forecast_depletion(10, 1.0, 1.0, level_ci=1.0)


def test_the_tracker_estimates_a_poisson_consumption():
    rng = np.random.default_rng(4)
    tr = ConsumptionTracker(window_s=600.0)
    total, t = 0, 0.0
    for _ in range(900):
        t += 1.0
        total += int(rng.poisson(3.0))
        tr.observe(t, total)
    rate, var, se = tr.rate()
    assert abs(rate - 3.0) < 3 * se
    assert var == pytest.approx(3.0, rel=0.25)
    assert tr.span_s == pytest.approx(600.0, abs=1.0)
    tr.observe(t + 1, total - 5)  # 5 reservations undone: no consumption, window kept
    assert tr.rate()[0] == pytest.approx(rate * 599 / 600, rel=0.02)
    tr.observe(t + 2, 0)  # a replaced store: the window restarts
    assert tr.rate() is None
