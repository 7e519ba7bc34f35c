"""The pulse-by-pulse prepare-and-measure engine against closed-form expectations.

References computed here, independently of the engine: for ``n`` photons each detected with
probability ``t`` and routed to the correct detector with probability ``a_c`` (``1 - e_d`` in a
matching basis), a detector stays silent with probability ``(1 - pd)(1 - t a)^n``; averaging
over the Poisson photon number gives ``(1 - pd) exp(-mu t a)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdtwin.qkd.attacks import InterceptResend, PhotonNumberSplitting
from qkdtwin.qkd.channel import FiberChannel
from qkdtwin.qkd.detector import ThresholdDetector
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.protocols.prepare_measure import PrepareMeasureEngine
from qkdtwin.qkd.source import SinglePhotonSource, WeakCoherentSource
from qkdtwin.qkd.statistics import PrepareMeasureStats


def run(model, pulses, seed=1, sifting="bb84", attack=None, keep_bits=False, chunk=1 << 20):
    eng = PrepareMeasureEngine(model, sifting, attack, keep_bits=keep_bits)
    stats = PrepareMeasureStats(eng.n_classes)
    rng = np.random.default_rng(seed)
    done = 0
    while done < pulses:
        n = min(chunk, pulses - done)
        eng.run_chunk(rng, done, n, stats)
        done += n
    return eng, stats


def exact_click_and_error(mu, eta, pd, ed):
    """Gain and matching-basis QBER of the two-detector model, closed form."""
    lam = mu * eta
    c_none = (1 - pd) * math.exp(-lam * (1 - ed))
    w_none = (1 - pd) * math.exp(-lam * ed)
    both_none = (1 - pd) ** 2 * math.exp(-lam)
    gain = 1 - both_none
    wrong_only = c_none - both_none
    both = 1 - c_none - w_none + both_none
    return gain, (wrong_only + 0.5 * both) / gain


def within(observed, expected, n, sigmas=5.0):
    sd = math.sqrt(max(expected * (1 - expected), 1e-300) / n)
    return abs(observed - expected) <= sigmas * sd


@pytest.fixture
def noisy_link():
    # deliberately bright and noisy so that every term of the model matters
    det = ThresholdDetector(efficiency=0.3, dark_count_prob=2e-3, misalignment=0.05)
    src = WeakCoherentSource(0.6, decoys=(0.2, 0.0))
    return LinkModel(src, FiberChannel(20.0, 0.2), det, 1e9, 1.16)


def test_gain_and_qber_per_intensity_match_closed_form(noisy_link):
    _, stats = run(noisy_link, 3_000_000)
    gains, qbers = stats.gain(), stats.sifted_qber()
    sent = stats.sent.sum(axis=(1, 2))
    for k, mu in enumerate(noisy_link.source.intensities):
        g, e = exact_click_and_error(mu, noisy_link.eta, 2e-3, 0.05)
        assert within(gains[k], g, sent[k]), (k, gains[k], g)
        assert within(qbers[k], e, stats.sifted[k]), (k, qbers[k], e)


def test_every_pulse_is_counted_once_with_fair_choices(noisy_link):
    _, stats = run(noisy_link, 1_234_567, chunk=100_000)
    assert stats.pulses == 1_234_567
    frac = stats.sent.sum(axis=0) / stats.pulses  # (a, b): each 1/4
    np.testing.assert_allclose(frac, 0.25, atol=5 * math.sqrt(0.25 * 0.75 / 1_234_567))
    classes = stats.sent.sum(axis=(1, 2)) / stats.pulses
    np.testing.assert_allclose(classes, 1 / 3, atol=5 * math.sqrt(2 / 9 / 1_234_567))


def test_bases_are_sifted_by_half(noisy_link):
    _, stats = run(noisy_link, 2_000_000)
    det = stats.detected.sum()
    assert within(stats.sifted.sum() / det, 0.5, det)


def test_same_seed_same_counts(noisy_link):
    _, a = run(noisy_link, 300_000, seed=9)
    _, b = run(noisy_link, 300_000, seed=9)
    _, c = run(noisy_link, 300_000, seed=10)
    assert np.array_equal(a.detected, b.detected)
    assert np.array_equal(a.errors, b.errors)
    assert not np.array_equal(a.detected, c.detected)


def test_full_intercept_resend_gives_25_percent_qber():
    # ideal detectors, no noise: every error is Eve's
    det = ThresholdDetector(efficiency=1.0, dark_count_prob=0.0, misalignment=0.0)
    model = LinkModel(SinglePhotonSource(), FiberChannel(10.0), det, 1e6)
    _, clean = run(model, 400_000)
    assert clean.sifted_errors.sum() == 0
    _, stats = run(model, 400_000, attack=InterceptResend(1.0))
    q = stats.sifted_qber()[0]
    assert within(q, 0.25, stats.sifted[0])
    # Eve knows the bit exactly when her basis matched Alice's: half of the sifted bits
    assert within(stats.eve_known[0] / stats.sifted[0], 0.5, stats.sifted[0])


@pytest.mark.parametrize("fraction", [0.2, 0.6])
def test_partial_intercept_resend_is_linear_in_fraction(fraction):
    det = ThresholdDetector(efficiency=1.0, dark_count_prob=0.0, misalignment=0.0)
    model = LinkModel(SinglePhotonSource(), FiberChannel(10.0), det, 1e6)
    _, stats = run(model, 400_000, attack=InterceptResend(fraction))
    assert within(stats.sifted_qber()[0], fraction / 4, stats.sifted[0])


def test_intercept_resend_with_noise_adds_to_detector_errors():
    # E = 1/2 e_d + 1/4 for the sifted bits of pulses Eve attacked (single photons, no darks)
    det = ThresholdDetector(efficiency=1.0, dark_count_prob=0.0, misalignment=0.04)
    model = LinkModel(SinglePhotonSource(), FiberChannel(0.0), det, 1e6)
    _, stats = run(model, 400_000, attack=InterceptResend(1.0))
    assert within(stats.sifted_qber()[0], 0.25 + 0.02, stats.sifted[0])


def test_pns_keeps_signal_gain_and_qber_but_moves_decoy_gain():
    det = ThresholdDetector.from_background_yield(0.045, 1.7e-6, 0.033)
    src = WeakCoherentSource(0.48, decoys=(0.1, 0.0))
    model = LinkModel(src, FiberChannel(60.0, 0.21), det, 2e6, 1.22)
    _, honest = run(model, 6_000_000, seed=4)
    eng, pns = run(model, 6_000_000, seed=5, attack=PhotonNumberSplitting())
    s1, sm = eng.pns_strategy
    assert 0.0 <= s1 <= 1.0
    assert 0.0 <= sm <= 1.0
    n_sig = pns.sent[0].sum()
    g_honest = 1 - (1 - det.dark_count_prob) ** 2 * math.exp(-0.48 * model.eta)
    assert within(pns.gain()[0], g_honest, n_sig)  # Eve matches the signal gain
    # the QBER does not reveal her (same within statistics)
    e_h, e_p = honest.sifted_qber()[0], pns.sifted_qber()[0]
    assert abs(e_h - e_p) < 5 * math.sqrt(
        e_h * (1 - e_h) * (1 / honest.sifted[0] + 1 / pns.sifted[0])
    )
    # the weak decoy's gain drops far below the honest value: this is what decoys detect
    g_nu = 1 - (1 - det.dark_count_prob) ** 2 * math.exp(-0.1 * model.eta)
    assert pns.gain()[1] < 0.8 * g_nu
    # and Eve knows a large share of the sifted signal bits
    assert pns.eve_known[0] / pns.sifted[0] > 0.3


def test_sarg04_qber_and_sifting_follow_closed_form():
    # no dark counts: conclusive w.p. 1/4 (wrong basis) + e_d/2 (matching basis, error)
    ed = 0.03
    det = ThresholdDetector(efficiency=1.0, dark_count_prob=0.0, misalignment=ed)
    model = LinkModel(SinglePhotonSource(), FiberChannel(0.0), det, 1e6)
    _, stats = run(model, 1_000_000, sifting="sarg04")
    det_n = stats.detected.sum()
    assert within(stats.sifted[0] / det_n, 0.25 + ed / 2, det_n)
    assert within(stats.sifted_qber()[0], (ed / 2) / (0.25 + ed / 2), stats.sifted[0])


def test_kept_bits_match_counters(noisy_link):
    eng, stats = run(noisy_link, 500_000, keep_bits=True)
    a, b, basis, klass = eng.bits.arrays()
    assert a.size == b.size == basis.size == klass.size == stats.sifted.sum()
    for k in range(eng.n_classes):
        sel = klass == k
        assert sel.sum() == stats.sifted[k]
        assert int((a[sel] != b[sel]).sum()) == stats.sifted_errors[k]
    for basis_z in (0, 1):
        sel = (basis == basis_z) & (klass == 0)
        assert sel.sum() == stats.detected[0, basis_z, basis_z]
    assert set(np.unique(a)) <= {0, 1}


def test_tagged_single_photon_error_rate_is_misalignment_plus_darks():
    det = ThresholdDetector(efficiency=0.1, dark_count_prob=1e-4, misalignment=0.02)
    model = LinkModel(WeakCoherentSource(0.5), FiberChannel(10.0, 0.2), det, 1e6)
    _, stats = run(model, 4_000_000)
    eta = model.eta
    # one photon: silent detectors with prob (1 - pd)(1 - eta a); error = wrong-only + both/2
    c_none = (1 - 1e-4) * (1 - eta * 0.98)
    w_none = (1 - 1e-4) * (1 - eta * 0.02)
    both_none = (1 - 1e-4) ** 2 * (1 - eta)
    e1 = ((c_none - both_none) + 0.5 * (1 - c_none - w_none + both_none)) / (1 - both_none)
    assert within(stats.tagged_qber()[0, 1], e1, stats.tagged_sifted[0, 1])


def test_pns_on_a_fraction_of_pulses_is_the_mixture_of_honest_and_full_pns():
    """Gains under PNS on a share F are (1 - F) x honest + F x full PNS, class by class."""
    from qkdtwin.qkd import build_link_model

    model = build_link_model("decoy-bb84", 40.0, "gys")
    honest = PrepareMeasureEngine(model).p_click
    full = PrepareMeasureEngine(model, attack=PhotonNumberSplitting()).p_click
    for f in (0.1, 0.5):
        part = PrepareMeasureEngine(model, attack=PhotonNumberSplitting(f)).p_click
        np.testing.assert_allclose(part, (1 - f) * honest + f * full, rtol=1e-12)
    # the signal gain is the honest one for every fraction; the decoy gain falls with F
    assert full[0] == pytest.approx(honest[0], rel=1e-9)
    assert PrepareMeasureEngine(model, attack=PhotonNumberSplitting(0.5)).p_click[1] < honest[1]
