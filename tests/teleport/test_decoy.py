"""Decoy-photon check: engine tables, Monte Carlo against the derived formulas, the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.teleport.decoy import (
    EntangleMeasure,
    ParticleInterceptResend,
    decoy_round,
    detection_curve,
    detection_probability,
    error_probability,
    eve_guess_probability,
    outcome_table,
    paper_detection_probability,
    paper_unnoticed_probability,
    parse_eve_attack,
    simulate_detection,
    simulate_unnoticed,
    unnoticed_probability,
)

ATTACKS = [
    ParticleInterceptResend(),
    ParticleInterceptResend("z"),
    ParticleInterceptResend("x"),
    EntangleMeasure(1.0),
    EntangleMeasure(0.4),
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_outcome_table_is_a_distribution_with_the_derived_error(attack):
    t = outcome_table(attack)
    assert np.allclose(t.sum(axis=(2, 3)), 1.0)
    weights = np.array([p for p, _ in attack.settings()])
    err = float(np.mean((t.sum(axis=2)[..., 1] * weights).sum(axis=1)))
    assert err == pytest.approx(error_probability(attack))
    guess = np.mean([(t[d].sum(axis=2)[:, d % 2] * weights).sum() for d in range(4)])
    assert guess == pytest.approx(eve_guess_probability(attack))


def test_intercept_resend_details():
    t = outcome_table(ParticleInterceptResend())
    # Z decoys measured by Eve in Z: never an error; in X: error 1/2
    assert t[0, 0, :, 1].sum() == pytest.approx(0.0)
    assert t[0, 1, :, 1].sum() == pytest.approx(0.5)
    assert error_probability(ParticleInterceptResend(fraction=0.4)) == pytest.approx(0.1)
    assert error_probability(EntangleMeasure(0.0)) == 0.0


def test_engine_rounds_agree_with_table():
    # every measurement sampled by the state-vector engine, one decoy at a time
    rng = np.random.default_rng(3)
    n = 2500
    for attack in (ParticleInterceptResend(), EntangleMeasure(1.0)):
        errs = np.array([decoy_round(int(rng.integers(4)), attack, rng)[1] for _ in range(n)])
        e = error_probability(attack)
        assert abs(errs.mean() - e) < 5 * math.sqrt(e * (1 - e) / n)
    assert all(decoy_round(d, None, rng)[1] == 0 for d in range(4))
    with pytest.raises(ConfigError):
        decoy_round(4, None, rng)


@pytest.mark.parametrize("s", [1, 4, 10])
def test_detection_matches_one_minus_three_quarters_power(s):
    est = simulate_detection(s, 40_000, np.random.default_rng(s))
    assert est.analytic == pytest.approx(1 - 0.75**s)
    assert abs(est.probability - est.analytic) < 5 * math.sqrt(
        est.analytic * (1 - est.analytic) / est.trials
    )
    assert abs(est.eve_guess_rate - 0.75) < 0.02


def test_detection_with_partial_and_weak_attacks():
    rng = np.random.default_rng(11)
    for attack in (ParticleInterceptResend(fraction=0.3), EntangleMeasure(0.5)):
        est = simulate_detection(6, 30_000, rng, attack)
        p = detection_probability(6, attack)
        assert abs(est.probability - p) < 5 * math.sqrt(p * (1 - p) / est.trials)


def test_zero_decoys_never_detect():
    est = simulate_detection(0, 100, np.random.default_rng(0))
    assert est.probability == 0.0
    assert est.analytic == 0.0
    assert math.isnan(est.eve_guess_rate)
    assert "eve_guess_rate" not in est.to_dict()


def test_paper_formulas_versus_derived():
    for s in (1, 4, 10):
        assert paper_detection_probability(s) == pytest.approx(1 - 0.25**s)
        assert detection_probability(s) < paper_detection_probability(s)
    assert paper_detection_probability(1) == 0.75
    assert detection_probability(1) == 0.25
    # 0.75^N is right when every attacked particle is checked
    for n in (1, 5, 12):
        assert unnoticed_probability(n, message=0, decoys=n) == pytest.approx(
            paper_unnoticed_probability(n)
        )


def test_unnoticed_hypergeometric_against_monte_carlo_and_scipy():
    m, s, n = 30, 20, 10
    p = unnoticed_probability(n, message=m, decoys=s)
    k = np.arange(0, n + 1)
    ref = float(np.sum(stats.hypergeom.pmf(k, m + s, s, n) * 0.75**k))
    assert p == pytest.approx(ref)
    est = simulate_unnoticed(n, message=m, decoys=s, trials=20_000, rng=np.random.default_rng(5))
    assert abs((1 - est.probability) - p) < 5 * math.sqrt(p * (1 - p) / est.trials)
    # Eve attacking everything meets all S decoys
    assert unnoticed_probability(m + s, message=m, decoys=s) == pytest.approx(0.75**s)
    with pytest.raises(ConfigError):
        unnoticed_probability(60, message=m, decoys=s)


@settings(max_examples=30, deadline=None)
@given(s=st.integers(0, 60), f=st.floats(0, 1), strength=st.floats(0, 1))
def test_detection_probability_properties(s, f, strength):
    for attack in (ParticleInterceptResend(fraction=f), EntangleMeasure(strength, f)):
        p = detection_probability(s, attack)
        assert 0.0 <= p <= 1.0
        assert detection_probability(s + 1, attack) >= p
        assert p <= paper_detection_probability(s) + 1e-12


def test_parse_attack_and_validation():
    assert parse_eve_attack(None) == ParticleInterceptResend()
    assert parse_eve_attack("intercept-resend:z", 0.5) == ParticleInterceptResend("z", 0.5)
    assert parse_eve_attack("entangle-measure:0.25").strength == 0.25
    with pytest.raises(UnknownNameError):
        parse_eve_attack("photon-splitting")
    with pytest.raises(UnknownNameError):
        parse_eve_attack("intercept-resend:y")
    with pytest.raises(ConfigError):
        parse_eve_attack("entangle-measure:2")
    with pytest.raises(ConfigError):
        parse_eve_attack("entangle-measure:x")
    with pytest.raises(ConfigError):
        ParticleInterceptResend(fraction=1.5)
    with pytest.raises(ConfigError):
        simulate_detection(-1, 10, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        simulate_detection(3, 0, np.random.default_rng(0))


def test_curve_is_reproducible():
    a = [e.to_dict() for e in detection_curve([1, 2], 1000, np.random.default_rng(4))]
    b = [e.to_dict() for e in detection_curve([1, 2], 1000, np.random.default_rng(4))]
    assert a == b
