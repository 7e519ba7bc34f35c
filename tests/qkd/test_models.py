"""Physical models: sources, fibre, detectors, presets — checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.qkd import (
    EntangledPairSource,
    FiberChannel,
    SinglePhotonSource,
    ThresholdDetector,
    WeakCoherentSource,
    get_preset,
)


def test_poisson_pmf_and_pgf_agree():
    src = WeakCoherentSource(0.5, decoys=(0.1, 0.0))
    n = np.arange(40)
    pmf = src.photon_number_pmf(n)
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-12)
    for z in (0.0, 0.3, 0.9):
        # PGF computed from the pmf (second method) equals the closed form exp(mu (z - 1))
        np.testing.assert_allclose((pmf * z**n).sum(axis=1), src.pgf(z), rtol=1e-12)
    assert src.photon_number_pmf(1)[0] == pytest.approx(0.5 * math.exp(-0.5))


def test_sampled_photon_numbers_have_poisson_mean_and_variance():
    src = WeakCoherentSource(0.6)
    rng = np.random.default_rng(3)
    n = src.sample_photon_numbers(rng, np.zeros(200_000, dtype=np.intp))
    assert n.mean() == pytest.approx(0.6, abs=5 * math.sqrt(0.6 / 2e5))
    assert n.var() == pytest.approx(0.6, rel=0.03)


def test_single_photon_source_pgf():
    src = SinglePhotonSource(0.8)
    assert src.pgf(0.0)[0] == pytest.approx(0.2)
    assert src.photon_number_pmf(2)[0] == 0.0


def test_pair_source_pmf_sums_to_one_and_has_mean_mu():
    src = EntangledPairSource(0.2)
    n = np.arange(200)
    pmf = src.pair_number_pmf(n)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert (n * pmf).sum() == pytest.approx(0.2, rel=1e-9)  # mean pair number is mu = 2 lam
    draws = src.sample_pair_numbers(np.random.default_rng(0), 400_000)
    assert draws.mean() == pytest.approx(0.2, rel=0.02)


def test_fiber_transmittance_follows_beer_lambert():
    ch = FiberChannel(100.0, 0.2, insertion_loss_db=3.0)
    assert ch.loss_db == pytest.approx(23.0)
    assert ch.transmittance == pytest.approx(10 ** (-2.3))


@given(st.floats(0, 500), st.floats(0, 500))
def test_transmittance_decreases_with_length(a, b):
    lo, hi = sorted((a, b))
    assert FiberChannel(hi, 0.2).transmittance <= FiberChannel(lo, 0.2).transmittance


def test_detector_background_yield_round_trip():
    det = ThresholdDetector.from_background_yield(0.045, 1.7e-6, 0.033)
    assert det.background_yield == pytest.approx(1.7e-6, rel=1e-9)
    assert det.dark_count_prob == pytest.approx(0.85e-6, rel=1e-3)


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: WeakCoherentSource(0.0), "mu"),
        (lambda: WeakCoherentSource(-1.0), "mu"),
        (lambda: WeakCoherentSource(0.5, decoys=(0.6,)), "decoy intensity"),
        (lambda: WeakCoherentSource(0.5, (0.1,), (0.5, 0.6)), "probabilities"),
        (lambda: ThresholdDetector(0.0, 1e-6), "efficiency"),
        (lambda: ThresholdDetector(1.5, 1e-6), "efficiency"),
        (lambda: ThresholdDetector(0.5, -1e-6), "dark_count_prob"),
        (lambda: ThresholdDetector(0.5, 1e-6, misalignment=0.7), "misalignment"),
        (lambda: FiberChannel(-1.0), "distance_km"),
        (lambda: FiberChannel(float("nan")), "distance_km"),
    ],
)
def test_invalid_parameters_raise_config_error_naming_the_field(factory, field):
    with pytest.raises(ConfigError) as info:
        factory()
    assert info.value.field == field
    assert field in str(info.value)


def test_gys_preset_matches_lo_ma_chen_table():
    p = get_preset("gys")
    assert (p.attenuation_db_per_km, p.detector_efficiency) == (0.21, 0.045)
    assert (p.background_yield, p.misalignment, p.ec_efficiency) == (1.7e-6, 0.033, 1.22)


def test_unknown_preset_lists_known_names():
    with pytest.raises(UnknownNameError, match="gys"):
        get_preset("nope")
