"""Attack detection from observations alone (qkdtwin.twin.detect).

Counts come from an own sampler of the closed-form count model (GYS link, 1 s intervals,
2 MHz, intensities (0.48, 0.1, 0) with shares (0.8, 0.1, 0.1)); attacks change the click and
error probabilities as computed here from the attack's physics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qkdtwin.errors import ConfigError
from qkdtwin.qkd import PhotonNumberSplitting
from qkdtwin.twin.detect import (
    STATISTICS,
    DetectorConfig,
    LinkDetector,
    LlrLaw,
    Reference,
    binomial_kl,
    count_llrs,
    cusum_arl,
    cusum_scan,
    cusum_threshold,
    design_statistics,
    lorden_delay_bound,
    siegmund_arl,
)
from qkdtwin.twin.estimate import IntervalObservation

DET = 0.045
Y0 = 1.7e-6
PD = 1.0 - math.sqrt(1.0 - Y0)
ED = 0.033
MU = (0.48, 0.1, 0.0)
SHARES = (0.8, 0.1, 0.1)
RATE = 2_000_000
SENT = tuple(RATE * s for s in SHARES)


def eta_channel(km: float) -> float:
    return 10.0 ** (-0.21 * km / 10.0)


def closed_form(eta, pd=PD, ed=ED, mu=MU):
    mu = np.asarray(mu, dtype=float)
    p_click = 1.0 - (1.0 - pd) ** 2 * np.exp(-eta * mu)
    pc = 1.0 - (1.0 - pd) * np.exp(-eta * mu * (1.0 - ed))
    pw = 1.0 - (1.0 - pd) * np.exp(-eta * mu * ed)
    return p_click, pw * (1.0 - pc / 2.0) / p_click


def draw(rng, p, e, n):
    """``n`` intervals with click probabilities ``p`` and error probabilities ``e``."""
    sent = rng.multinomial(RATE, SHARES, size=n)
    det = rng.binomial(sent, p)
    sif = rng.binomial(det, 0.5)
    err = rng.binomial(sif, e)
    return sent, det, sif, err


def intercept_resend(eta, fraction):
    # Eve's basis is wrong for half of the attacked pulses: Bob's sifted bit is then random
    p, e = closed_form(eta)
    e_att = 0.5 * e + 0.25
    return p, np.where(np.asarray(MU) > 0, (1 - fraction) * e + fraction * e_att, 0.5)


def pns(km, fraction, n_max=60):
    """Click and error probabilities with PNS on ``fraction`` of the pulses (attacks.py)."""
    eta_ch = eta_channel(km)
    s1, sm = PhotonNumberSplitting.strategy(MU[0], eta_ch, DET, PD)
    n = np.arange(n_max + 1)
    fwd = np.maximum(n - 1, 0)
    fwd[1] = 1
    s = np.full(n.shape, sm)
    s[0], s[1] = 0.0, s1

    def fock(m):  # m photons over a lossless line to detectors of efficiency DET
        nc = (1 - PD) ** 2 * (1 - DET) ** m
        pc = 1 - (1 - PD) * (1 - DET * (1 - ED)) ** m
        pw = 1 - (1 - PD) * (1 - DET * ED) ** m
        return 1 - nc, pw * (1 - pc / 2)

    c_fw, ec_fw = fock(fwd)
    c_bl, ec_bl = fock(0)
    p_h, e_h = closed_form(eta_ch * DET)
    p, e = [], []
    for k, mu in enumerate(MU):
        pn = stats.poisson.pmf(n, mu)
        pa = np.sum(pn * (s * c_fw + (1 - s) * c_bl))
        ea = np.sum(pn * (s * ec_fw + (1 - s) * ec_bl))
        pk = (1 - fraction) * p_h[k] + fraction * pa
        p.append(pk)
        e.append(((1 - fraction) * p_h[k] * e_h[k] + fraction * ea) / pk)
    return np.array(p), np.array(e), p_h, e_h


def ref_at(km, **kw):
    return Reference.from_model(eta_channel(km) * DET, PD, ED, MU, SENT, **kw)


def renewal_delays(scan, j):
    """Run lengths of column ``j`` from S = 0 (alarm restarts): Lorden's worst case."""
    idx = scan.alarm_index[scan.alarm_statistic == j]
    return np.diff(np.concatenate([[-1], idx]))


def poisson_99(mean):
    return stats.poisson.ppf(0.005, mean), stats.poisson.ppf(0.995, mean)


# --------------------------------------------------------------------------- formulas
def test_binomial_kl_and_lorden_bound():
    n, p, q = 20, 0.3, 0.45
    x = np.arange(n + 1)
    direct = np.sum(
        stats.binom.pmf(x, n, p) * (stats.binom.logpmf(x, n, p) - stats.binom.logpmf(x, n, q))
    )
    assert float(binomial_kl(n, p, q)) == pytest.approx(direct, rel=1e-12)
    assert lorden_delay_bound(math.exp(10.0), 2.5) == pytest.approx(4.0)
    with pytest.raises(ConfigError):
        lorden_delay_bound(100.0, 0.0)


def test_cusum_threshold_inverts_siegmund():
    for arl, kl in ((300.0, 0.05), (2000.0, 0.5), (1.3e7, 0.3)):
        h = cusum_threshold(arl, kl)
        assert h > 0
        assert siegmund_arl(h, kl) == pytest.approx(arl, rel=1e-9)
    # so much evidence per interval that h = 0 already meets the target by the formula
    assert cusum_threshold(10.0, 50.0) == 0.0
    with pytest.raises(ConfigError):
        cusum_threshold(0.0, 1.0)


def test_arl_formulas_against_simulation():
    rng = np.random.default_rng(1)
    # Gaussian LLR, one standard deviation shift: Siegmund and the Markov chain agree
    law = LlrLaw.gaussian(1.0, 0.0, 1.0)
    h = cusum_threshold(400.0, 0.5)
    llr = rng.normal(-0.5, 1.0, size=400_000)
    sim = 400_000 / cusum_scan(llr, [h]).count()
    assert cusum_arl(h, law) == pytest.approx(400.0, rel=0.05)
    assert sim == pytest.approx(400.0, rel=0.1)
    # sparse lattice counts (vacuum class) and a QBER with ~5 nats per interval: the Markov
    # chain on the exact count law matches simulation; Siegmund fails for the latter
    for n, p0, p1, h in ((200_000, 1.7e-6, 3.4e-6, 4.0), (4040, 0.033, 0.043, 4.0)):
        law = LlrLaw.binomial(n, p0, p1)
        x = rng.binomial(n, p0, size=400_000)
        llr = x * law.a + law.b
        runs = cusum_scan(llr, [h]).count()
        sim = 400_000 / runs
        tol = 4.0 / math.sqrt(runs)
        assert cusum_arl(h, law) == pytest.approx(sim, rel=tol), (n, p0)
    kl = float(binomial_kl(4040, 0.033, 0.043))
    assert siegmund_arl(4.0, kl, llr_sd=law.sd) < 0.85 * cusum_arl(4.0, law)


def test_cusum_scan_matches_the_recursion():
    rng = np.random.default_rng(2)
    llr = rng.normal(-0.3, 1.0, size=(5000, 3))
    hs = np.array([2.0, 3.5, 1.0])
    scan = cusum_scan(llr, hs, chunk=37)
    alarms = []
    final = []
    for j in range(3):
        s, start = 0.0, 0
        for t in range(llr.shape[0]):
            if s == 0.0:
                start = t
            s = max(0.0, s + llr[t, j])
            if s > hs[j]:
                alarms.append((t, j, start))
                s = 0.0
        final.append(s)
    alarms.sort()
    got = sorted(zip(scan.alarm_index, scan.alarm_statistic, scan.change_index, strict=True))
    assert [tuple(int(v) for v in a) for a in got] == alarms
    assert scan.final == pytest.approx(final)


# --------------------------------------------------------------------------- calibration
def test_arl_calibration_per_statistic_and_for_the_link():
    # small designs so that every statistic lives in the regime where a short ARL exists;
    # known reference, no indifference zone: this checks thresholds and the budget split
    cfg = DetectorConfig(
        qber_step=0.005, qber_tolerance=0.0, decoy_drop=0.05, decoy_tolerance=0.0,
        loss_step_db=0.05, loss_tolerance_db=0.0, background_tolerance=0.0,
        monitor_step=0.002, monitor_tolerance=0.0,
    )  # fmt: skip
    ref = ref_at(30, photocurrent=(10.0, 2.0, 1000.0))
    link_arl = 300.0
    designs = design_statistics(ref, cfg, link_arl)
    assert [d.name for d in designs] == list(STATISTICS)
    assert {d.method for d in designs} == {"siegmund", "markov"}  # qber has K > 1
    rng = np.random.default_rng(3)
    n = 300_000
    p, e = closed_form(eta_channel(30) * DET)
    counts = draw(rng, p, e, n)
    current = rng.normal(10.0, 2.0 / math.sqrt(1000.0), size=n)
    llr = count_llrs(
        designs, ref, sent=counts[0], detected=counts[1], sifted=counts[2], errors=counts[3],
        photocurrent_ua=current, monitor_samples=np.full(n, 1000),
    )  # fmt: skip
    scan = cusum_scan(llr, [d.threshold for d in designs])
    for j, d in enumerate(designs):
        # union-bound split over the statistics
        assert d.arl_intervals == len(STATISTICS) * link_arl
        lo, hi = poisson_99(n / d.arl_intervals)
        assert lo <= scan.count(j) <= hi, (d.name, scan.count(j), n / d.arl_intervals)
    lo, hi = poisson_99(n / link_arl)
    assert lo <= scan.count() <= hi, (scan.count(), n / link_arl)


# --------------------------------------------------------------------------- attacks
def _delay_run(km, p, e, stat, n=4000, seed=4, cfg=None):
    ref = ref_at(km)
    cfg = cfg or DetectorConfig()
    designs = design_statistics(ref, cfg, cfg.link_arl_intervals(1.0))
    names = [d.name for d in designs]
    counts = draw(np.random.default_rng(seed), p, e, n)
    llr = count_llrs(
        designs, ref, sent=counts[0], detected=counts[1], sifted=counts[2], errors=counts[3]
    )
    scan = cusum_scan(llr, [d.threshold for d in designs])
    j = names.index(stat)
    others = {names[k]: scan.count(k) for k in range(len(names)) if k != j}
    return designs[j], renewal_delays(scan, j), others, ref


@pytest.mark.parametrize("km", [30.0, 100.0])
def test_intercept_resend_detected_by_qber_within_twice_lorden(km):
    p, e = intercept_resend(eta_channel(km) * DET, 0.1)
    des, delays, others, ref = _delay_run(km, p, e, "qber", n=3000 if km < 50 else 12_000)
    assert e[0] - ref.error_prob[0] == pytest.approx(0.0234, abs=0.001)  # ~2.5 % of sifted bits
    kl = float(binomial_kl(0.5 * SENT[0] * p[0], e[0], ref.error_prob[0]))
    bound = lorden_delay_bound(des.arl_intervals, kl)
    # a delay is at least one interval: at 30 km the bound is below one (0.57)
    assert delays.mean() <= 2.0 * max(bound, 1.0), (delays.mean(), bound)
    assert delays.size > 100
    assert not any(others.values()), others


@pytest.mark.parametrize("km", [30.0, 40.0, 50.0])
def test_pns_detected_by_decoy_yield_within_twice_lorden(km):
    p, e, p_h, e_h = pns(km, 0.1)
    assert p[0] == pytest.approx(p_h[0], rel=1e-9)  # signal gain unchanged (Eve's tuning)
    assert abs(e[0] - e_h[0]) < 2e-4  # signal QBER unchanged
    assert p[1] / p_h[1] < 0.95  # the decoy gain falls by 6-8 %
    des, delays, others, _ref = _delay_run(km, p, e, "decoy-yield", n=12_000)
    n_s, n_d = SENT[0], SENT[1]
    share = n_d * p[1] / (n_s * p[0] + n_d * p[1])
    kl = float(binomial_kl(n_s * p[0] + n_d * p[1], share, des.p_ref))
    bound = lorden_delay_bound(des.arl_intervals, kl)
    assert bound > 20
    assert delays.mean() <= 2.0 * bound, (delays.mean(), bound)
    assert delays.size > 50
    assert not any(others.values()), others


def test_pns_on_a_short_link_raises_the_decoy_ratio_and_decoy_yield_rise_sees_it():
    p, e, p_h, _e_h = pns(10.0, 1.0)
    assert p[0] == pytest.approx(p_h[0], rel=1e-9)
    assert p[1] / p_h[1] > 1.04  # at 10 km Eve forwards relatively more decoy light
    des, delays, _others, _ref = _delay_run(10.0, p, e, "decoy-yield-rise", n=6000)
    n_s, n_d = SENT[0], SENT[1]
    share = n_d * p[1] / (n_s * p[0] + n_d * p[1])
    kl = float(binomial_kl(n_s * p[0] + n_d * p[1], share, des.p_ref))
    bound = lorden_delay_bound(des.arl_intervals, kl)
    assert delays.size > 10
    assert delays.mean() <= 2.0 * bound, (delays.mean(), bound)


@pytest.mark.parametrize(("step_db", "stat"), [(0.5, "loss-step"), (-0.5, "count-model")])
def test_loss_step_and_blinding_detected(step_db, stat):
    eta = eta_channel(30) * DET * 10.0 ** (-step_db / 10.0)
    p, e = closed_form(eta)
    des, delays, others, ref = _delay_run(30, p, e, stat, n=2000)
    kl = float(binomial_kl(SENT[0], p[0], ref.click_prob[0]))
    assert lorden_delay_bound(des.arl_intervals, kl) < 1.0
    assert delays.mean() <= 1.05
    assert delays.max() <= 2
    assert not others["qber"]
    assert not others["decoy-yield"]


def test_background_rise_detected():
    p, e = closed_form(eta_channel(30) * DET)
    p = p.copy()
    p[2] *= 3.0  # e.g. stray light or a warm detector
    des, delays, others, ref = _delay_run(30, p, e, "background", n=20_000)
    kl = float(binomial_kl(SENT[2], p[2], ref.click_prob[2]))
    assert delays.mean() <= 2.0 * lorden_delay_bound(des.arl_intervals, kl)
    assert not any(others.values())


def test_change_point_estimate_near_onset():
    ref = ref_at(40)
    cfg = DetectorConfig()
    designs = design_statistics(ref, cfg, cfg.link_arl_intervals(1.0))
    j = [d.name for d in designs].index("decoy-yield")
    p_h, e_h = closed_form(eta_channel(40) * DET)
    p_a, e_a, _, _ = pns(40, 0.1)
    rng = np.random.default_rng(6)
    onset, errors = 300, []
    for _ in range(40):
        pre, post = draw(rng, p_h, e_h, onset), draw(rng, p_a, e_a, 400)
        counts = [np.concatenate([a, b]) for a, b in zip(pre, post, strict=True)]
        llr = count_llrs(
            designs, ref, sent=counts[0], detected=counts[1], sifted=counts[2], errors=counts[3]
        )
        scan = cusum_scan(llr, [d.threshold for d in designs], restart=False)
        k = np.flatnonzero(scan.alarm_statistic == j)
        assert k.size == 1
        assert scan.alarm_index[k[0]] >= onset
        errors.append(int(scan.change_index[k[0]]) - onset)
    errors_a = np.abs(errors)
    assert np.median(errors_a) <= 3, errors
    assert np.quantile(errors_a, 0.9) <= 12, errors


# --------------------------------------------------------------------------- online detector
def _stream(det, rng, probs, t0, n, monitor=None):
    alarms = []
    for i in range(n):
        t = t0 + i
        p, e = probs(t)
        sent, d, s, er = (x[0] for x in draw(rng, p, e, 1))
        extra = {}
        if monitor is not None:
            extra = {"photocurrent_ua": float(monitor(t, rng)), "monitor_samples": 1000}
        obs = IntervalObservation(
            float(t), t + 1.0, MU, tuple(sent), tuple(d), tuple(s), tuple(er), **extra
        )
        alarms.extend(det.add(obs))
    return alarms


def test_online_pns_alarm_evidence_freeze_and_relearn():
    rng = np.random.default_rng(7)
    det = LinkDetector(DET)
    honest = closed_form(eta_channel(40) * DET)
    p_a, e_a, _, _ = pns(40, 0.1)
    onset = 800
    alarms = _stream(det, rng, lambda t: honest if t < onset else (p_a, e_a), 0, 1000)
    assert [a.statistic for a in alarms] == ["decoy-yield"]
    a = alarms[0]
    assert abs(a.change_point_t - onset) <= 10
    assert a.delay_s == a.t - a.change_point_t
    assert a.cusum > a.threshold
    assert a.t - onset < 200
    assert a.design["p1_design"] < a.design["p0_null_edge"] < a.design["p_ref"]
    g_true = honest[0][1] / honest[0][0]
    assert a.reference["gain_ratio"] == pytest.approx(g_true, rel=0.02)
    assert a.post_change["relative_drop"] == pytest.approx(1 - p_a[1] / honest[0][1], abs=0.04)
    assert a.reference["loss_db"] == pytest.approx(0.21 * 40, abs=0.05)
    # frozen while the alarm is active
    assert det.frozen
    assert det.active_alarms == ("decoy-yield",)
    t_ref = det.reference.t
    _stream(det, rng, lambda t: (p_a, e_a), 1000, 30)
    assert det.reference.t == t_ref
    # the attack stops, the operator clears: the reference is relearned from scratch
    det.clear()
    assert det.reference is None
    assert not det.active_alarms
    more = _stream(det, rng, lambda t: honest, 1030, 900)
    assert more == []
    assert det.reference.t > 1800
    assert all(d.active for d in det.designs)


def _ramp_run(rate_db_per_hour, n, seed=8):
    det = LinkDetector(DET)
    eta0 = eta_channel(30) * DET

    def probs(t):
        return closed_form(eta0 * 10.0 ** (-rate_db_per_hour * t / 3600.0 / 10.0))

    return _stream(det, np.random.default_rng(seed), probs, 0, n)


def test_online_tolerated_ramp_raises_nothing_and_a_faster_one_alarms():
    cfg = DetectorConfig()
    ramp = cfg.tolerated_ramp_db_per_hour()
    assert ramp == pytest.approx(0.1 / (10 + 300) * 3600)  # 1.16 dB/h
    assert _ramp_run(ramp, 1800) == []
    fast = _ramp_run(10 * ramp, 600)
    assert fast
    assert fast[0].statistic == "loss-step"
    assert fast[0].post_change["loss_change_db"] > 0.1


@pytest.mark.slow
def test_online_tolerated_ramp_four_hours():
    assert _ramp_run(DetectorConfig().tolerated_ramp_db_per_hour(), 4 * 3600, seed=9) == []


def test_online_clean_run_stays_within_budget():
    # a small budget (link ARL 300 intervals) with the estimated reference and the default
    # indifference zones: the zones absorb the reference's own error, alarms are not more
    # frequent than budgeted
    det = LinkDetector(DET, DetectorConfig(arl_days=300 / 86400))
    honest = closed_form(eta_channel(30) * DET)
    rng = np.random.default_rng(10)
    n, alarms = 3000, 0
    for chunk in range(6):
        got = _stream(det, rng, lambda t: honest, chunk * 500, 500)
        alarms += len(got)
        if det.active_alarms:
            det.clear()
    live = n - 700  # the background statistic needs ~430 s of reference
    assert alarms <= poisson_99(live / 300)[1]


def test_detector_monitor_sees_blinding():
    rng = np.random.default_rng(11)
    det = LinkDetector(DET)
    eta = eta_channel(30) * DET
    honest = closed_form(eta)
    blinded = closed_form(eta * 10**0.1)  # the faked states give 1 dB more clicks
    onset = 700

    def current(t, r):
        mean = 10.0 if t < onset else 13.0
        return r.normal(mean, 2.0 / math.sqrt(1000.0))

    alarms = _stream(det, rng, lambda t: honest if t < onset else blinded, 0, 720, current)
    stats_ = {a.statistic for a in alarms}
    assert {"detector-monitor", "count-model"} <= stats_
    mon = next(a for a in alarms if a.statistic == "detector-monitor")
    assert mon.t <= onset + 2
    assert mon.post_change["photocurrent_ua"] == pytest.approx(13.0, abs=0.1)
    assert mon.reference["photocurrent_ua"] == pytest.approx(10.0, abs=0.01)


def test_config_validation():
    with pytest.raises(ConfigError) as err:
        DetectorConfig(qber_step=0.002, qber_tolerance=0.003)
    assert err.value.field == "qber_step"
    with pytest.raises(ConfigError):
        DetectorConfig(statistics=("qber", "psychic"))
    with pytest.raises(ConfigError):
        DetectorConfig(background_ratio=1.1, background_tolerance=0.25)
    with pytest.raises(ConfigError):
        DetectorConfig(guard_intervals=-1)
    # no vacuum class and no monitor: those statistics are dropped, the budget split over 4
    ref = Reference.from_model(eta_channel(30) * DET, PD, ED, MU[:2], SENT[:2])
    designs = design_statistics(ref, DetectorConfig(), 1000.0)
    assert [d.name for d in designs] == [
        "qber",
        "decoy-yield",
        "decoy-yield-rise",
        "loss-step",
        "count-model",
    ]
    assert all(d.arl_intervals == len(designs) * 1000.0 for d in designs)


def test_refits_after_the_first_fall_at_the_detectors_phase():
    honest = closed_form(eta_channel(30) * DET)
    cfg = DetectorConfig()
    at: dict[int, list[int]] = {}
    for phase in (0, 3, cfg.refit_every - 1):
        det = LinkDetector(DET, cfg, refit_phase=phase)
        refits = 0
        real = det._refresh

        def counted(real=real) -> None:
            nonlocal refits
            refits += 1
            real()

        det._refresh = counted  # type: ignore[method-assign]
        rng = np.random.default_rng(2)
        at[phase] = []
        for n in range(1, cfg.guard_intervals + 41):
            before = refits
            _stream(det, rng, lambda t: honest, n - 1, 1)
            if refits > before:
                at[phase].append(n)
    first = at[0][0]  # the first refit: when the first interval leaves the guard queue
    assert all(v[0] == first for v in at.values())
    for phase, ticks in at.items():
        gaps = np.diff(ticks).tolist()
        assert gaps[0] == cfg.refit_every + phase  # delayed once by the phase
        assert set(gaps[1:]) == {cfg.refit_every}  # then every refit_every intervals
    with pytest.raises(ConfigError):
        LinkDetector(DET, cfg, refit_phase=cfg.refit_every)
    with pytest.raises(ConfigError):
        LinkDetector(DET, cfg, refit_phase=-1)
