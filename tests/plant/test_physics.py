"""Tests of the plant's physical layer against independent references.

References: the pulse-by-pulse engine of :mod:`qkdtwin.qkd` (statistically and its exact
``p_click`` table), closed forms, small per-pulse NumPy simulations written here, and
``link.py``'s key-rate bookkeeping.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.plant.physics import (
    ATTACK_KINDS,
    IntervalLaw,
    MonitorParams,
    PlantAttack,
    TrueLinkParams,
    draw_interval,
    draw_intervals,
    faked_state_strategy,
    interval_law,
    module_secret_bits,
)
from qkdtwin.qkd import (
    InterceptResend,
    NoAttack,
    PhotonNumberSplitting,
    analytic_key_rate,
    build_link_model,
    simulate_link,
)
from qkdtwin.qkd.protocols.prepare_measure import PrepareMeasureEngine
from qkdtwin.qkd.statistics import PrepareMeasureStats

MU3 = [0.48, 0.1, 0.0]
ONES_2 = ([1, 1], [1, 1], [1, 1], [0, 0])
ONES_3 = ([1] * 3, [1] * 3, [1] * 3, [0] * 3)
COUNT_NAMES = ("sent", "detected", "sifted", "errors", "eve_known")
Z_MAX = 4.0


# --------------------------------------------------------------------------- helpers
def engine_counts(
    params: TrueLinkParams,
    pulses: int,
    seed: int,
    attack: InterceptResend | PhotonNumberSplitting | None = None,
) -> dict[str, NDArray[np.int64]]:
    """Per-class counts of one pulse-engine run (the engine behind ``simulate_link``)."""
    if pulses == 0:
        k = params.intensities.size
        return {name: np.zeros(k, dtype=np.int64) for name in COUNT_NAMES}
    eng = PrepareMeasureEngine(params.link_model(), "bb84", attack)
    st = PrepareMeasureStats(eng.n_classes)
    rng = np.random.default_rng(seed)
    chunk = 1 << 20
    for off in range(0, pulses, chunk):
        eng.run_chunk(rng, off, min(chunk, pulses - off), st)
    return {
        "sent": st.sent.sum(axis=(1, 2)),
        "detected": st.detected.sum(axis=(1, 2)),
        "sifted": st.sifted.copy(),
        "errors": st.sifted_errors.copy(),
        "eve_known": st.eve_known.copy(),
    }


def plant_engine_counts(
    params: TrueLinkParams, attack: PlantAttack, pulses: int, seed: int
) -> dict[str, NDArray[np.int64]]:
    """Counts of the pulse engine under a plant attack, built from engine runs only."""
    f = attack.fraction
    if attack.kind == "none":
        return engine_counts(params, pulses, seed)
    if attack.kind == "intercept-resend":
        return engine_counts(params, pulses, seed, InterceptResend(f))
    if attack.kind == "fiber-tap":
        return engine_counts(params.with_extra_loss(-10.0 * math.log10(1.0 - f)), pulses, seed)
    assert attack.kind == "pns"
    # the engine's PNS attacks every pulse: add a full-PNS run on F N pulses to an honest one
    n_att = round(f * pulses)
    a = engine_counts(params, n_att, seed, PhotonNumberSplitting())
    b = engine_counts(params, pulses - n_att, seed + 1000)
    return {name: a[name] + b[name] for name in COUNT_NAMES}


def binom_z(k: NDArray[np.int64], n: NDArray[np.int64], p: NDArray[np.float64]) -> NDArray:
    """z-score of ``k`` successes in ``n`` Bernoulli(p) trials (0 where the variance is 0)."""
    var = n * p * (1.0 - p)
    dev = k - n * p
    return np.divide(dev, np.sqrt(var), out=np.where(dev == 0, 0.0, np.inf), where=var > 0)


def law_chain(law: IntervalLaw) -> dict[str, tuple[str, NDArray[np.float64]]]:
    """For each count: its parent count and the conditional probability (the nested binomials)."""
    return {
        "detected": ("sent", law.p_click),
        "sifted": ("detected", law.p_sift_given_click),
        "errors": ("sifted", law.p_err_given_sift),
        "eve_known": ("sifted", law.eve_known_given_sift),
    }


def per_pulse_prob(law: IntervalLaw) -> dict[str, NDArray[np.float64]]:
    """Probability per pulse of each count (the marginal binomial of the count in N pulses)."""
    sent = law.selection
    det = sent * law.p_click
    sift = det * law.p_sift_given_click
    return {
        "sent": sent,
        "detected": det,
        "sifted": sift,
        "errors": sift * law.p_err_given_sift,
        "eve_known": sift * law.eve_known_given_sift,
    }


def honest_closed_form(p: TrueLinkParams) -> tuple[NDArray, NDArray]:
    """Textbook closed form (what the twin's estimator uses), written naively."""
    mu, pd, ed, eta = p.intensities, p.dark_count_prob, p.misalignment, p.eta
    q = 1.0 - (1.0 - pd) ** 2 * np.exp(-eta * mu)
    pc = 1.0 - (1.0 - pd) * np.exp(-eta * mu * (1.0 - ed))
    pw = 1.0 - (1.0 - pd) * np.exp(-eta * mu * ed)
    return q, pw * (1.0 - pc / 2.0) / q


# --------------------------------------------------------------------------- parameters
def test_params_match_preset_and_link_model() -> None:
    p = TrueLinkParams.from_preset("gys", 50.0)
    assert p.dark_count_prob == pytest.approx(8.5e-7, rel=1e-5)
    assert p.link_model() == build_link_model("decoy-bb84", 50.0, "gys")
    assert p.channel_loss_db == pytest.approx(0.21 * 50.0)
    assert p.eta == pytest.approx(p.link_model().eta, rel=1e-15)
    np.testing.assert_array_equal(p.intensities, [0.48, 0.1, 0.0])
    np.testing.assert_allclose(p.selection, [1 / 3] * 3)
    q = p.with_extra_loss(3.0)
    assert q.channel_loss_db == pytest.approx(p.channel_loss_db + 3.0)
    assert q.channel_transmittance == pytest.approx(p.channel_transmittance / 10**0.3)
    assert q.link_model().channel.insertion_loss_db == 3.0
    r = TrueLinkParams.from_preset("gys", 10.0, mu=0.5, probabilities=(0.8, 0.1, 0.1))
    np.testing.assert_array_equal(r.selection, [0.8, 0.1, 0.1])
    assert r.link_model().source.mu == 0.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"length_km": -1.0}, "length_km"),
        ({"length_km": 1.0, "attenuation_db_per_km": -0.1}, "attenuation_db_per_km"),
        ({"length_km": 1.0, "extra_loss_db": -1.0}, "extra_loss_db"),
        ({"length_km": 1.0, "detector_efficiency": 0.0}, "detector_efficiency"),
        ({"length_km": 1.0, "dark_count_prob": 1.0}, "dark_count_prob"),
        ({"length_km": 1.0, "misalignment": 0.6}, "misalignment"),
        ({"length_km": 1.0, "mu": 0.0}, "mu"),
        ({"length_km": 1.0, "decoys": (0.5, 0.0)}, "decoys"),
        ({"length_km": 1.0, "probabilities": (0.5, 0.5)}, "probabilities"),
        ({"length_km": 1.0, "probabilities": (0.5, 0.5, 0.5)}, "probabilities"),
        ({"length_km": 1.0, "repetition_rate_hz": 0.0}, "repetition_rate_hz"),
        ({"length_km": 1.0, "ec_efficiency": 0.9}, "ec_efficiency"),
        ({"length_km": float("nan")}, "length_km"),
    ],
)
def test_bad_params_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrueLinkParams(**kwargs)
    assert info.value.field == field


def test_bad_inputs_name_the_field() -> None:
    cases = [
        (lambda: PlantAttack("tempest"), "kind"),
        (lambda: PlantAttack("pns", 1.5), "fraction"),
        (lambda: MonitorParams(photocurrent_noise_ua=-1.0), "photocurrent_noise_ua"),
        (lambda: MonitorParams(blinding_photocurrent_ua=-1.0), "blinding_photocurrent_ua"),
        (lambda: TrueLinkParams(10.0).with_extra_loss(-1.0), "extra_loss_db"),
        (lambda: TrueLinkParams.from_preset("gys", 10.0, colour="red"), "colour"),
        (lambda: TrueLinkParams.from_preset("nope", 10.0), "preset"),
    ]
    law = interval_law(TrueLinkParams(10.0))
    rng = np.random.default_rng(0)
    cases += [
        (lambda: draw_interval(law, -1, rng), "pulses"),
        (lambda: draw_interval(law, 1.5, rng), "pulses"),  # type: ignore[arg-type]
        (lambda: draw_interval(law, 10, rng, monitor_samples=0), "monitor_samples"),
        (lambda: draw_intervals(law, 10, -1, rng), "n_intervals"),
        (lambda: module_secret_bits([0.48, 0.1], *ONES_2, 1.2), "intensities"),
        (lambda: module_secret_bits(MU3, [1, 1], *ONES_3[1:], 1.2), "sent"),
        (lambda: module_secret_bits(MU3, *ONES_3, 0.5), "ec_efficiency"),
    ]
    for make, field in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == field, field
    with pytest.raises(UnknownNameError):
        PlantAttack("tempest")


# --------------------------------------------------------------------------- exact references
@pytest.mark.parametrize("length_km", [0.0, 25.0, 50.0, 150.0])
@pytest.mark.parametrize(("mu", "pd", "ed"), [(0.48, 8.5e-7, 0.033), (0.8, 1e-4, 0.01)])
def test_honest_law_equals_closed_form(length_km: float, mu: float, pd: float, ed: float) -> None:
    p = TrueLinkParams(length_km, mu=mu, dark_count_prob=pd, misalignment=ed)
    law = interval_law(p)
    q, e = honest_closed_form(p)
    # the naive closed form loses ~1e-16 / Y0 relative precision on the vacuum class
    np.testing.assert_allclose(law.p_click, q, rtol=1e-9, atol=0)
    np.testing.assert_allclose(law.p_err_given_sift, e, rtol=1e-9, atol=0)
    # the same closed form written with expm1/log1p agrees to a few ulp on every class
    mu, ld, eta = p.intensities, math.log1p(-pd), p.eta
    q_acc = -np.expm1(2.0 * ld - eta * mu)
    pc = -np.expm1(ld - eta * mu * (1.0 - ed))
    pw = -np.expm1(ld - eta * mu * ed)
    np.testing.assert_allclose(law.p_click, q_acc, rtol=1e-13)
    np.testing.assert_allclose(law.p_err_given_sift, pw * (1.0 - pc / 2.0) / q_acc, rtol=1e-13)
    np.testing.assert_array_equal(law.p_sift_given_click, 0.5)
    np.testing.assert_array_equal(law.eve_known_given_sift, 0.0)
    assert law.photocurrent_mean_ua == 0.10
    assert law.photocurrent_noise_ua == 0.02


@pytest.mark.parametrize("length_km", [0.0, 25.0, 80.0])
def test_click_table_equals_pulse_engine(length_km: float) -> None:
    p = TrueLinkParams(length_km)
    for plant, engine_attack in [
        (PlantAttack(), NoAttack()),
        (PlantAttack("intercept-resend", 0.6), InterceptResend(0.6)),
        (PlantAttack("pns"), PhotonNumberSplitting()),
    ]:
        eng = PrepareMeasureEngine(p.link_model(), "bb84", engine_attack)
        np.testing.assert_allclose(interval_law(p, plant).p_click, eng.p_click, rtol=1e-9)


def test_fraction_zero_is_honest_and_fiber_tap_is_extra_loss() -> None:
    p = TrueLinkParams(40.0)
    honest = interval_law(p)
    for kind in ATTACK_KINDS:
        law = interval_law(p, PlantAttack(kind, 0.0))
        for name in ("p_click", "p_err_given_sift", "eve_known_given_sift"):
            np.testing.assert_allclose(getattr(law, name), getattr(honest, name), rtol=1e-15)
    f = 0.37
    tap = interval_law(p, PlantAttack("fiber-tap", f))
    lossy = interval_law(p.with_extra_loss(-10.0 * math.log10(1.0 - f)))
    np.testing.assert_allclose(tap.p_click, lossy.p_click, rtol=1e-12)
    np.testing.assert_allclose(tap.p_err_given_sift, lossy.p_err_given_sift, rtol=1e-12)
    # Poisson splitting: Eve's tapped photons are independent of Bob's click
    np.testing.assert_allclose(tap.eve_known_given_sift, -np.expm1(-p.intensities * f), rtol=1e-9)


def test_fiber_cut_leaves_only_dark_counts() -> None:
    p = TrueLinkParams(30.0, dark_count_prob=3e-6)
    law = interval_law(p, PlantAttack("fiber-tap", 1.0))
    np.testing.assert_allclose(law.p_click, 1.0 - (1.0 - 3e-6) ** 2, rtol=1e-9)
    np.testing.assert_allclose(law.p_err_given_sift, 0.5, rtol=1e-12)
    np.testing.assert_allclose(law.eve_known_given_sift, -np.expm1(-p.intensities), rtol=1e-9)


def test_intercept_resend_ideal_detectors_gives_quarter_qber() -> None:
    p = TrueLinkParams(25.0, detector_efficiency=1.0, dark_count_prob=0.0, misalignment=0.0)
    law = interval_law(p, PlantAttack("intercept-resend", 1.0))
    np.testing.assert_allclose(law.p_err_given_sift[:2], 0.25, rtol=1e-12)
    np.testing.assert_allclose(law.eve_known_given_sift[:2], 0.5, rtol=1e-12)
    assert law.p_click[2] == 0.0
    assert law.p_err_given_sift[2] == 0.0
    c = engine_counts(p, 2_000_000, 11, InterceptResend(1.0))
    z = binom_z(c["errors"][:2], c["sifted"][:2], np.full(2, 0.25))
    assert np.all(np.abs(z) < Z_MAX), z
    assert c["detected"][2] == 0


# --------------------------------------------------------------------------- pulse engine
ENGINE_CASES = [
    (PlantAttack(), 25.0),
    (PlantAttack(), 50.0),
    (PlantAttack("intercept-resend", 0.5), 25.0),
    (PlantAttack("intercept-resend", 1.0), 50.0),
    (PlantAttack("pns", 0.1), 50.0),
    (PlantAttack("pns", 1.0), 25.0),
    (PlantAttack("pns", 1.0), 50.0),
    (PlantAttack("fiber-tap", 0.5), 25.0),
    (PlantAttack("fiber-tap", 0.5), 50.0),
]


@pytest.mark.parametrize(("attack", "length_km"), ENGINE_CASES, ids=lambda x: str(x))
def test_law_matches_pulse_engine(attack: PlantAttack, length_km: float) -> None:
    p = TrueLinkParams(length_km)
    law = interval_law(p, attack)
    pulses = 20_000_000
    c = plant_engine_counts(p, attack, pulses, seed=int(length_km) + 7)
    z_sent = binom_z(c["sent"], np.full(3, pulses), law.selection)
    assert np.all(np.abs(z_sent) < Z_MAX), z_sent
    names = ("detected", "sifted", "errors")
    # the engine knows nothing of the tap's photons: eve_known is checked for the other kinds
    names += ("eve_known",) if attack.kind != "fiber-tap" else ()
    for name in names:
        parent, prob = law_chain(law)[name]
        z = binom_z(c[name], c[parent], prob)
        assert np.all(np.abs(z) < Z_MAX), (name, z)
    # and the statistic is sensitive: the signal gain is resolved to 1-2 %
    assert c["detected"][0] > 5_000


def test_draw_interval_equivalent_to_pulse_engine() -> None:
    """Summed small draws and one engine run have the same law (z-scores over seeds)."""
    p = TrueLinkParams(25.0)
    attack = PlantAttack("intercept-resend", 0.5)
    law = interval_law(p, attack)
    probs = per_pulse_prob(law)
    per_draw, n_draws = 100_000, 100
    pulses = per_draw * n_draws
    zs: list[float] = []
    for seed in range(4):
        eng = engine_counts(p, pulses, seed, InterceptResend(0.5))
        rng = np.random.default_rng(100 + seed)
        draws = [draw_interval(law, per_draw, rng) for _ in range(n_draws)]
        for name in COUNT_NAMES:
            summed = np.sum([getattr(d, name) for d in draws], axis=0)
            var = 2.0 * pulses * probs[name] * (1.0 - probs[name])
            ok = var > 0
            zs.extend(((eng[name] - summed)[ok] / np.sqrt(var[ok])).tolist())
    z = np.asarray(zs)
    assert z.size >= 50
    assert np.max(np.abs(z)) < Z_MAX, z
    # sum of squares of the (nearly independent) z-scores: chi-square with z.size dof
    assert stats.chi2.sf(np.sum(z**2), z.size) > 1e-3
    assert stats.chi2.cdf(np.sum(z**2), z.size) > 1e-3


# --------------------------------------------------------------------------- exact draws
def test_draws_have_the_binomial_moments() -> None:
    p = TrueLinkParams(50.0)
    law = interval_law(p, PlantAttack("intercept-resend", 0.5))
    pulses, n = 2_000_000, 20_000
    series = draw_intervals(law, pulses, n, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    singles = [draw_interval(law, pulses, rng) for _ in range(4000)]
    probs = per_pulse_prob(law)
    for name in COUNT_NAMES:
        for data in (getattr(series, name), np.array([getattr(s, name) for s in singles])):
            assert data.dtype == np.int64
            assert data.shape[1] == 3
            m = data.shape[0]
            mean = pulses * probs[name]
            var = mean * (1.0 - probs[name])
            ok = var > 0
            z_mean = (data.mean(axis=0) - mean)[ok] / np.sqrt(var[ok] / m)
            # s.e. of a sample variance: var * sqrt(2/(m-1) + excess kurtosis / m)
            pi = probs[name]
            kurt = np.divide(1.0 - 6.0 * pi * (1.0 - pi), var, out=np.zeros(3), where=ok)
            se_var = var * np.sqrt(2.0 / (m - 1) + kurt / m)
            z_var = (data.var(axis=0, ddof=1) - var)[ok] / se_var[ok]
            assert np.all(np.abs(z_mean) < Z_MAX), (name, z_mean)
            assert np.all(np.abs(z_var) < Z_MAX), (name, z_var)
    np.testing.assert_array_equal(series.sent.sum(axis=1), pulses)
    # vacuum class: small counts, a chi-square goodness of fit against Binomial(N, pi)
    det = series.detected[:, 2]
    pi = probs["detected"][2]
    edges = np.arange(6)
    observed = np.array([np.sum(det == k) for k in edges[:-1]] + [np.sum(det >= 5)])
    pmf = stats.binom.pmf(edges[:-1], pulses, pi)
    expected = n * np.append(pmf, 1.0 - pmf.sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # monitor: mean of 100 samples of sigma 0.02 -> sigma 0.002
    cur = series.photocurrent_ua
    assert cur.shape == (n,)
    assert abs(cur.mean() - 0.1) < Z_MAX * 0.002 / math.sqrt(n)
    assert cur.std() == pytest.approx(0.002, rel=0.03)
    one = series.interval(3)
    np.testing.assert_array_equal(one.detected, series.detected[3])
    assert one.pulses == pulses
    assert one.samples == 100
    assert len(series) == n


def test_photocurrent_is_clipped_at_zero() -> None:
    law = interval_law(TrueLinkParams(10.0), monitor=MonitorParams(0.0, 1.0, 50.0))
    series = draw_intervals(law, 1000, 2000, np.random.default_rng(3), monitor_samples=4)
    assert np.all(series.photocurrent_ua >= 0.0)
    assert np.mean(series.photocurrent_ua == 0.0) == pytest.approx(0.5, abs=0.05)
    c = draw_interval(law, 0, np.random.default_rng(4))
    assert c.pulses == 0
    assert c.photocurrent_ua >= 0.0


# --------------------------------------------------------------------------- blinding attacks
def simulate_blinding(
    p: TrueLinkParams, f: float, pulses: int, rng: np.random.Generator
) -> dict[str, NDArray[np.int64]]:
    """Independent per-pulse simulation of the naive blinding attack (and the honest channel)."""
    K = p.intensities.size
    k = rng.choice(K, size=pulses, p=p.selection)
    n = rng.poisson(p.intensities[k])
    a, x, b, e = (rng.integers(0, 2, pulses) for _ in range(4))
    attacked = rng.random(pulses) < f
    # honest: every photon survives with eta, then goes to the right or wrong detector
    m = rng.binomial(n, p.eta)
    n_right = rng.binomial(m, np.where(a == b, 1.0 - p.misalignment, 0.5))
    fire_right = (n_right > 0) | (rng.random(pulses) < p.dark_count_prob)
    fire_wrong = (m - n_right > 0) | (rng.random(pulses) < p.dark_count_prob)
    coin = rng.integers(0, 2, pulses)
    bob_h = np.where(fire_right & fire_wrong, coin, np.where(fire_right, x, 1 - x))
    click_h = fire_right | fire_wrong
    # attacked: Eve measures every photon in basis e with an ideal detector
    to_x = rng.binomial(n, 0.5)
    eve_wrong_basis = np.where(to_x == n, x, np.where(to_x == 0, 1 - x, coin))
    eve_bit = np.where(e == a, x, eve_wrong_basis)
    click_a = (n >= 1) & (b == e)
    click = np.where(attacked, click_a, click_h)
    bob = np.where(attacked, eve_bit, bob_h)
    sift = click & (a == b)
    err = sift & (bob != x)
    known = sift & attacked & (e == a)
    out = {
        "sent": np.bincount(k, minlength=K),
        "detected": np.bincount(k[click], minlength=K),
        "sifted": np.bincount(k[sift], minlength=K),
        "errors": np.bincount(k[err], minlength=K),
        "eve_known": np.bincount(k[known], minlength=K),
        "attacked_errors": np.bincount(k[err & attacked], minlength=K),
        "attacked_sifted": np.bincount(k[sift & attacked], minlength=K),
    }
    return out


def test_naive_blinding_matches_per_pulse_simulation() -> None:
    p = TrueLinkParams(10.0, dark_count_prob=2e-4)
    f = 0.3
    law = interval_law(p, PlantAttack("detector-blinding", f))
    c = simulate_blinding(p, f, 1_500_000, np.random.default_rng(5))
    for name, (parent, prob) in law_chain(law).items():
        z = binom_z(c[name], c[parent], prob)
        assert np.all(np.abs(z) < Z_MAX), (name, z)
    assert c["attacked_sifted"][0] > 10_000
    np.testing.assert_array_equal(c["attacked_errors"], 0)
    full = interval_law(p, PlantAttack("detector-blinding", 1.0))
    np.testing.assert_allclose(full.p_click, -np.expm1(-p.intensities) / 2.0, rtol=1e-12)
    np.testing.assert_array_equal(full.p_err_given_sift, 0.0)
    np.testing.assert_array_equal(full.eve_known_given_sift[:2], 1.0)
    assert full.p_click[2] == 0.0  # blinded detectors give no dark counts, Eve sees no photon
    assert law.photocurrent_mean_ua == pytest.approx(0.10 + f * 50.0)
    # grossly inconsistent with the honest channel: ~5x the gain, 70 % of the QBER
    honest = interval_law(p)
    assert law.p_click[0] > 4 * honest.p_click[0]
    assert law.p_err_given_sift[0] < 0.8 * honest.p_err_given_sift[0]


def test_faked_state_keeps_honest_counts() -> None:
    p = TrueLinkParams(20.0)
    f = 0.7
    honest = interval_law(p)
    law = interval_law(p, PlantAttack("faked-state", f), MonitorParams(0.2, 0.01, 40.0))
    for name in ("p_click", "p_sift_given_click", "p_err_given_sift"):
        np.testing.assert_array_equal(getattr(law, name), getattr(honest, name))
    # Eve knows every attacked sifted bit of a pulse with >= 1 photon
    vacuum_share = np.exp(-p.intensities) * p.background_yield / honest.p_click
    np.testing.assert_allclose(
        law.eve_known_given_sift, f * (1.0 - vacuum_share), rtol=1e-9, atol=1e-10
    )
    assert law.eve_known_given_sift[0] == pytest.approx(f, rel=1e-3)
    assert law.photocurrent_mean_ua == pytest.approx(0.2 + f * 40.0)
    assert law.photocurrent_noise_ua == 0.01


def test_faked_state_strategy_reproduces_honest_law_per_pulse() -> None:
    """Simulate Eve's per-photon-number strategy on every pulse; compare with the honest law."""
    p = TrueLinkParams(0.0, dark_count_prob=1e-3)
    strat = faked_state_strategy(p)
    assert strat.infeasible_mass < 1e-12
    honest = interval_law(p)
    rng = np.random.default_rng(9)
    pulses = 1_500_000
    k = rng.choice(3, size=pulses, p=p.selection)
    n = np.minimum(rng.poisson(p.intensities[k]), strat.photon_number[-1])
    a, x, b, e, guess = (rng.integers(0, 2, pulses) for _ in range(5))
    resend = rng.random(pulses) < strat.resend_prob[n]
    flip = rng.random(pulses) < strat.flip_prob[n]
    measured = np.where((n >= 1) & (e == a), x, guess)  # wrong basis or vacuum: random bit
    click = resend & (b == e)
    bob = np.where(flip, 1 - measured, measured)
    sift = click & (a == b)
    c = {
        "sent": np.bincount(k, minlength=3),
        "detected": np.bincount(k[click], minlength=3),
        "sifted": np.bincount(k[sift], minlength=3),
        "errors": np.bincount(k[sift & (bob != x)], minlength=3),
    }
    chain = law_chain(honest)
    for name in ("detected", "sifted", "errors"):
        parent, prob = chain[name]
        z = binom_z(c[name], c[parent], prob)
        assert np.all(np.abs(z) < Z_MAX), (name, z)
    assert c["errors"][0] > 200


def test_faked_state_infeasible_raises() -> None:
    # Y_n = 1 - (1 - pd)^2 0.85^n passes 1/2 at n = 5: P(n >= 5 | mu = 0.48) ~ 1e-4 per pulse
    p = TrueLinkParams(0.0, detector_efficiency=0.15)
    strat = faked_state_strategy(p)
    assert strat.honest_yield[4] < 0.5 < strat.honest_yield[5]
    assert strat.infeasible_mass == pytest.approx(stats.poisson.sf(4, 0.48), rel=1e-6)
    with pytest.raises(ConfigError, match="Y_5") as info:
        interval_law(p, PlantAttack("faked-state", 0.5))
    assert info.value.field == "attack"
    interval_law(p, PlantAttack("faked-state", 0.0))  # no attack, nothing to imitate
    interval_law(p, PlantAttack("detector-blinding", 0.5))  # the naive variant needs nothing


# --------------------------------------------------------------------------- module key
@pytest.mark.parametrize("length_km", [25.0, 50.0])
def test_module_key_approaches_analytic_rate(length_km: float) -> None:
    p = TrueLinkParams(length_km)
    c = draw_interval(interval_law(p), 10**13, np.random.default_rng(3))
    bits = module_secret_bits(p.intensities, c.sent, c.detected, c.sifted, c.errors, 1.22)
    analytic = analytic_key_rate("decoy-bb84", p.link_model()).rate_per_pulse
    assert bits / c.sent[0] == pytest.approx(analytic, rel=0.02)


def test_module_key_follows_link_py_bookkeeping() -> None:
    p = TrueLinkParams(25.0)
    pulses = 10_000_000
    res = simulate_link("decoy-bb84", p.link_model(), pulses, np.random.default_rng(4))
    rows = res.details["per_intensity"]
    sent = np.array([r["sent"] for r in rows])
    det = np.array([r["detected"] for r in rows])
    sift = np.array([r["sifted"] for r in rows])
    err = np.array([round(r["qber"] * r["sifted"]) for r in rows])
    bits = module_secret_bits(p.intensities, sent, det, sift, err, p.ec_efficiency)
    assert bits > 0
    # link.py: share * gllp_rate(sifting=1/2) per pulse; the module uses the measured sifting
    expected = res.secret_key_rate_per_pulse * pulses * (sift[0] / det[0]) / 0.5
    assert bits == pytest.approx(expected, rel=1e-9)


def test_pns_collapses_module_key() -> None:
    p = TrueLinkParams(60.0)
    rng = np.random.default_rng(6)
    honest = draw_interval(interval_law(p), 10**12, rng)
    attacked = draw_interval(interval_law(p, PlantAttack("pns", 1.0)), 10**12, rng)
    key = [
        module_secret_bits(p.intensities, c.sent, c.detected, c.sifted, c.errors, 1.22)
        for c in (honest, attacked)
    ]
    assert key[0] > 1e7
    assert key[1] <= 1e-3 * key[0]
    # yet the signal gain and QBER stay honest
    np.testing.assert_allclose(
        attacked.detected[0] / attacked.sent[0], honest.detected[0] / honest.sent[0], rtol=0.01
    )


def test_module_key_is_zero_without_counts_or_with_high_qber() -> None:
    mu = [0.48, 0.1, 0.0]
    assert module_secret_bits(mu, [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], 1.2) == 0.0
    assert module_secret_bits(mu, [100] * 3, [10, 3, 0], [5, 0, 0], [0, 0, 0], 1.2) == 0.0
    noisy = ([10**9] * 3, [10**7] * 3, [5 * 10**6] * 3, [3 * 10**6] * 3)
    assert module_secret_bits(mu, *noisy, 1.2) == 0.0
