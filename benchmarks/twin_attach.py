"""The attached twin against the plant: detection delays, false alarms, estimates, CPU.

Usage: ``python benchmarks/twin_attach.py [--write BENCHMARKS.md] [--quick] [--seeds N]``.

Four measurements, all with the library's own estimator and detector (nothing re-implemented):

1. **Detection delay** per attack, attacked fraction and link length (GYS preset, 1 s
   intervals, 30-day link ARL, default :class:`~qkdtwin.twin.detect.DetectorConfig`). Per seed:
   honest intervals drawn exactly (:func:`~qkdtwin.plant.physics.draw_intervals`), the
   reference fitted by the library on the same 600 intervals a
   :class:`~qkdtwin.twin.detect.LinkDetector` holds at the onset (``LinkEstimator`` ->
   ``Reference.from_estimate`` -> ``design_statistics``), then attacked intervals from the onset
   on, scanned by the vectorised fast path (``count_llrs`` + ``cusum_scan``). Checked against
   ``LinkDetector`` fed the same intervals. Compared with twice Lorden's bound from the count
   laws.
2. **False alarms per link-day** on clean links with drift: week-long runs with the fast path.
3. **Loss estimate**: error and coverage of ``LinkEstimator`` (60 s window) vs reporting interval.
4. **CPU** of ``qkdtwin twin serve --attach`` and of ``qkdtwin plant serve`` as two processes on
   Mosquitto, per process from ``/proc/PID/stat``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from scipy import stats

from qkdtwin.plant.physics import (
    IntervalLaw,
    IntervalSeries,
    PlantAttack,
    TrueLinkParams,
    draw_interval,
    draw_intervals,
    interval_law,
)
from qkdtwin.twin.detect import (
    STATISTICS,
    DetectorConfig,
    LinkDetector,
    Reference,
    StatisticDesign,
    binomial_kl,
    count_llrs,
    cusum_scan,
    design_statistics,
    lorden_delay_bound,
)
from qkdtwin.twin.estimate import IntervalObservation, LinkEstimator

TICKS = os.sysconf("SC_CLK_TCK")
CFG = DetectorConfig()
INTERVAL_S = 1.0
LINK_ARL = CFG.link_arl_intervals(INTERVAL_S)
GUARD = CFG.guard_intervals
WINDOW = round(CFG.reference_window_s / INTERVAL_S)
# warm-up: the reference LinkDetector holds at the onset is refitted at interval WINDOW + GUARD
# (0-based) from the intervals 1..WINDOW; the onset is the next interval
N_WARM = WINDOW + GUARD + 1
LENGTHS = (10.0, 30.0, 50.0)
FRACTIONS = (0.1, 0.5, 1.0)
ATTACKS = ("intercept-resend", "pns", "fiber-tap", "detector-blinding", "faked-state")
TAP_05DB = 1.0 - 10.0 ** (-0.05)  # the fibre-tap share that is a 0.5 dB loss step
CAP = 3600
FIRST_CHUNK = 64
ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("qkdtwin")
MOSQUITTO = "mqtt://127.0.0.1:1883"

F_MEANING = {
    "intercept-resend": "share of pulses Eve measures and resends (QBER up by ~F/4)",
    "pns": "share of pulses given the PNS treatment (signal gain and QBER kept, decoy gain moves)",
    "fiber-tap": "share of the power tapped: a loss step of -10 log10(1-F) dB "
    "(0.46 dB, 3.0 dB, cut)",
    "detector-blinding": "share of pulses attacked with naive blinding (and share of time "
    "the detectors are blinded)",
    "faked-state": "share of pulses attacked with count-preserving faked states (and share "
    "of time blinded)",
}


# --------------------------------------------------------------------------- helpers
def rng_for(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([20261125, *key]))


def observations(s: IntervalSeries, t0: float, mu: tuple[float, ...]) -> list[IntervalObservation]:
    """Observations of every interval of ``s``, interval ``i`` spanning [t0 + i, t0 + i + 1)."""
    sent, det, sif, err = (a.tolist() for a in (s.sent, s.detected, s.sifted, s.errors))
    cur = s.photocurrent_ua.tolist()
    return [
        IntervalObservation(
            t0 + i,
            t0 + i + INTERVAL_S,
            mu,
            tuple(sent[i]),
            tuple(det[i]),
            tuple(sif[i]),
            tuple(err[i]),
            photocurrent_ua=cur[i],
            monitor_samples=s.samples,
        )
        for i in range(len(s))
    ]


def concat(a: IntervalSeries, b: IntervalSeries) -> IntervalSeries:
    return IntervalSeries(
        *(np.concatenate([getattr(a, k), getattr(b, k)]) for k in _FIELDS), samples=a.samples
    )


_FIELDS = ("sent", "detected", "sifted", "errors", "eve_known", "photocurrent_ua")


def fit_reference(
    obs: list[IntervalObservation], declared_eff: float
) -> tuple[Reference, tuple[StatisticDesign, ...]]:
    """The reference and designs LinkDetector would hold after learning ``obs`` (library calls)."""
    est = LinkEstimator(declared_eff, window_s=CFG.reference_window_s)
    for o in obs:
        est.add(o)
    ref = Reference.from_estimate(est.estimate())
    return ref, design_statistics(ref, CFG, LINK_ARL, monitor=True)


def thresholds(designs: tuple[StatisticDesign, ...]) -> np.ndarray:
    # LinkDetector skips inactive statistics; count_llrs/cusum_scan do not look at ``active``
    return np.array([d.threshold if d.active else math.inf for d in designs])


def llrs(designs: tuple[StatisticDesign, ...], ref: Reference, s: IntervalSeries) -> np.ndarray:
    return count_llrs(
        designs,
        ref,
        sent=s.sent,
        detected=s.detected,
        sifted=s.sifted,
        errors=s.errors,
        photocurrent_ua=s.photocurrent_ua,
        monitor_samples=np.full(len(s), s.samples),
    )


def pulses_per_interval(p: TrueLinkParams, dt: float = INTERVAL_S) -> int:
    return round(p.repetition_rate_hz * dt)


def quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q, method="inverted_cdf"))


def fmt_delay(x: float) -> str:
    return f"> {CAP}" if not math.isfinite(x) else f"{x:.0f}"


def poisson_ci(k: int, conf: float = 0.99) -> tuple[float, float]:
    a = 1.0 - conf
    lo = 0.0 if k == 0 else float(stats.chi2.ppf(a / 2, 2 * k) / 2)
    hi = float(stats.chi2.ppf(1 - a / 2, 2 * k + 2) / 2)
    return lo, hi


# --------------------------------------------------------------------------- 1. delays
def lorden(
    honest: IntervalLaw, attacked: IntervalLaw, designs: tuple[StatisticDesign, ...], pulses: int
) -> tuple[float, str]:
    """min over the statistics of log(ARL_stat) / KL(post || pre) of its counts, and which."""
    n = pulses * honest.selection
    mu = honest.intensities
    kd = min((k for k in range(1, mu.size) if 0 < mu[k] < mu[0]), key=lambda k: mu[k])
    kv = next(k for k in range(mu.size) if mu[k] == 0.0)
    p0, p1 = honest.p_click, attacked.p_click
    e0, e1 = honest.p_err_given_sift, attacked.p_err_given_sift
    kls = {
        "qber": binomial_kl(n[0] * p1[0] * attacked.p_sift_given_click[0], e1[0], e0[0]),
        "decoy share": binomial_kl(
            n[0] * p1[0] + n[kd] * p1[kd],
            n[kd] * p1[kd] / (n[0] * p1[0] + n[kd] * p1[kd]),
            n[kd] * p0[kd] / (n[0] * p0[0] + n[kd] * p0[kd]),
        ),
        "signal clicks": binomial_kl(n[0], min(p1[0], 1 - 1e-15), p0[0]),
        "background": binomial_kl(n[kv], p1[kv], p0[kv]),
        "detector-monitor": (attacked.photocurrent_mean_ua - honest.photocurrent_mean_ua) ** 2
        / (2.0 * honest.photocurrent_noise_ua**2 / 100.0),
    }
    arl = designs[0].arl_intervals
    best, name = math.inf, "-"
    for k, kl in kls.items():
        kl = float(kl)
        if kl > 1e-12:
            b = lorden_delay_bound(arl, kl)
            if b < best:
                best, name = b, k
    return best, name


def first_alarm(scan: Any, names: list[str]) -> tuple[int, str] | None:
    if scan.alarm_index.size == 0:
        return None
    k = int(scan.alarm_index.min())
    fired = {names[j] for j in scan.alarm_statistic[scan.alarm_index == k]}
    return k, "+".join(s for s in STATISTICS if s in fired)


def delay_cells() -> list[tuple[str, float, str]]:
    cells = [(a, f, f"{f:g}") for a in ATTACKS for f in FRACTIONS]
    cells.insert(
        cells.index(("fiber-tap", 0.5, "0.5")), ("fiber-tap", TAP_05DB, f"{TAP_05DB:.4f} (0.5 dB)")
    )
    return cells


def run_delays(seeds: int, check_seeds: int, log: Any) -> dict[str, Any]:
    cells = delay_cells()
    out: dict[tuple[str, float, float], dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    t_start = time.perf_counter()
    for li, km in enumerate(LENGTHS):
        params = TrueLinkParams.from_preset("gys", km)
        mu = tuple(float(x) for x in params.intensities)
        honest = interval_law(params)
        pulses = pulses_per_interval(params)
        laws = {(a, f): interval_law(params, PlantAttack(a, f)) for a, f, _ in cells}
        res: dict[tuple[str, float], list[tuple[float, str]]] = {(a, f): [] for a, f, _ in cells}
        designs0 = None
        for seed in range(seeds):
            warm = draw_intervals(honest, pulses, N_WARM, rng_for(1, li, seed, 0))
            warm_obs = observations(warm, 0.0, mu)
            ref, designs = fit_reference(warm_obs[: N_WARM - GUARD], params.detector_efficiency)
            designs0 = designs0 or designs
            names = [d.name for d in designs]
            hs = thresholds(designs)
            online = None
            if km == 30.0 and seed < check_seeds:
                online = LinkDetector(params.detector_efficiency)
                for o in warm_obs:
                    online.add(o)
            for ci, (a, f, _label) in enumerate(cells):
                rng = rng_for(1, li, seed, ci + 1)
                post = draw_intervals(laws[(a, f)], pulses, FIRST_CHUNK, rng)
                hit = first_alarm(cusum_scan(llrs(designs, ref, post), hs, restart=False), names)
                if hit is None:
                    post = concat(
                        post, draw_intervals(laws[(a, f)], pulses, CAP - FIRST_CHUNK, rng)
                    )
                    hit = first_alarm(
                        cusum_scan(llrs(designs, ref, post), hs, restart=False), names
                    )
                delay = math.inf if hit is None else hit[0] + 1.0
                res[(a, f)].append((delay, "none" if hit is None else hit[1]))
                if online is not None:
                    # the free-running detector may be slower (its reference learns): give it
                    # up to 3x the fast path's delay + 30 intervals of the same attack
                    need = min(CAP, int(3 * min(delay, CAP) + 30))
                    if len(post) < need:
                        post = concat(
                            post, draw_intervals(laws[(a, f)], pulses, need - len(post), rng)
                        )
                    checks.append(check_online(online, ref, post, mu, delay, hit))
            if seed % 50 == 49:
                log(
                    f"  delays {km:g} km: {seed + 1}/{seeds} seeds, "
                    f"{time.perf_counter() - t_start:.0f} s"
                )
        assert designs0 is not None
        meta = {"names": [x.name for x in designs0], "arl_stat": designs0[0].arl_intervals}
        for a, f, _label in cells:
            d = np.array([x[0] for x in res[(a, f)]])
            labels = Counter(x[1] for x in res[(a, f)])
            top, cnt = labels.most_common(1)[0]
            bound, bstat = lorden(honest, laws[(a, f)], designs0, pulses)
            pa = laws[(a, f)].p_click
            out[(a, f, km)] = {
                "ratio_change": (pa[1] / pa[0]) / (honest.p_click[1] / honest.p_click[0]) - 1.0,
                "median": quantile(d, 0.5),
                "p95": quantile(d, 0.95),
                "mean": float(np.mean(d)) if np.all(np.isfinite(d)) else math.inf,
                "detected": float(np.mean(np.isfinite(d))),
                "stat": top,
                "stat_share": cnt / len(d),
                "lorden": bound,
                "lorden_stat": bstat,
            }
    return {
        "cells": cells,
        "res": out,
        "checks": checks,
        "seconds": time.perf_counter() - t_start,
        **meta,
    }


def check_online(
    det: LinkDetector,
    ref: Reference,
    post: IntervalSeries,
    mu: tuple[float, ...],
    fast_delay: float,
    fast_hit: tuple[int, str] | None,
) -> dict[str, Any]:
    """Feed ``post`` to copies of the warmed-up LinkDetector: held (rearm) and free-running."""
    t0 = float(N_WARM)
    assert det.reference is not None
    same_ref = abs(det.reference.eta / ref.eta - 1.0) < 1e-9
    obs = observations(post, t0, mu)
    out: dict[str, Any] = {"same_reference": same_ref, "fast": fast_delay}
    for mode in ("held", "free"):
        d = copy.deepcopy(det)
        if mode == "held":
            d.rearm()  # reference held, every CUSUM restarts at 0: the fast path's semantics
        delay, stat = math.inf, "none"
        for o in obs:
            got = d.add(o)
            if got:
                delay = got[0].t - t0
                stat = "+".join(s for s in STATISTICS if s in {a.statistic for a in got})
                break
        out[mode] = delay
        out[mode + "_stat"] = stat
    out["fast_stat"] = "none" if fast_hit is None else fast_hit[1]
    return out


# --------------------------------------------------------------------------- 2. false alarms
TOL_RAMP = CFG.tolerated_ramp_db_per_hour(INTERVAL_S)
DAY = 86_400


def drift_offsets(n: int, kind: str) -> np.ndarray:
    """Loss offset (dB) of interval ``i``'s truth relative to the detector's reference.

    ``learning``: daily sine 0.1 dB + ramp at the tolerated rate, minus the mean of the same
    drift over the window a LinkDetector's reference holds (refits every ``refit_every``
    intervals on the intervals ``guard`` to ``guard + window`` old): what the learning
    reference sees. ``frozen-sine``: the daily sine against a reference held at its mean.
    """
    if kind == "none":
        return np.zeros(n)
    i = np.arange(n)
    if kind == "frozen-sine":
        return 0.1 * np.sin(2 * np.pi * (i + 0.5) / DAY)
    every = CFG.refit_every
    pre = GUARD + WINDOW + every
    t = np.arange(-pre, n) + 0.5
    delta = TOL_RAMP * t / 3600.0 + 0.1 * np.sin(2 * np.pi * t / DAY)
    cs = np.concatenate([[0.0], np.cumsum(delta)])
    j = ((i - 1) // every) * every  # interval whose add() made the reference in force at i
    hi = j - GUARD + pre + 1  # window: intervals j-guard-window+1 .. j-guard (shifted by pre)
    lo = hi - WINDOW
    ref_mean = (cs[hi] - cs[lo]) / WINDOW
    return delta[pre + i] - ref_mean


def run_false_alarms(rows: list[tuple[str, float, int]], run_days: int, log: Any) -> list[dict]:
    q = 5e-4  # offsets are drawn on a 0.0005 dB grid (laws cached per level)
    out = []
    t_start = time.perf_counter()
    for ri, (kind, km, days) in enumerate(rows):
        base = TrueLinkParams.from_preset("gys", km, extra_loss_db=0.2)
        mu = tuple(float(x) for x in base.intensities)
        pulses = pulses_per_interval(base)
        honest = interval_law(base)
        laws: dict[int, IntervalLaw] = {}
        alarms = np.zeros(len(STATISTICS), dtype=np.int64)
        link_days = 0.0
        per_run: list[int] = []
        runs = max(1, math.ceil(days / run_days))
        names: list[str] = []
        max_off = 0.0
        for run in range(runs):
            rng = rng_for(2, ri, run)
            n = round(min(run_days, days - run * run_days) * DAY / INTERVAL_S)
            warm = draw_intervals(honest, pulses, N_WARM, rng)
            ref, designs = fit_reference(
                observations(warm, 0.0, mu)[: N_WARM - GUARD], base.detector_efficiency
            )
            names = [d.name for d in designs]
            off = drift_offsets(n, kind)
            max_off = max(max_off, float(np.max(np.abs(off))))
            level = np.rint(off / q).astype(np.int64)
            s = IntervalSeries(
                np.empty((n, len(mu)), np.int64),
                np.empty((n, len(mu)), np.int64),
                np.empty((n, len(mu)), np.int64),
                np.empty((n, len(mu)), np.int64),
                np.empty((n, len(mu)), np.int64),
                np.empty(n),
                100,
            )
            for lv in np.unique(level):
                idx = np.flatnonzero(level == lv)
                law = laws.get(int(lv))
                if law is None:
                    law = laws[int(lv)] = interval_law(base.with_extra_loss(float(lv) * q))
                part = draw_intervals(law, pulses, idx.size, rng)
                for k in _FIELDS:
                    getattr(s, k)[idx] = getattr(part, k)
            scan = cusum_scan(llrs(designs, ref, s), thresholds(designs), restart=True)
            for j, name in enumerate(names):
                alarms[STATISTICS.index(name)] += scan.count(j)
            per_run.append(scan.count())
            link_days += n * INTERVAL_S / DAY
        total = int(alarms.sum())
        lo, hi = poisson_ci(total)
        out.append(
            {
                "kind": kind,
                "km": km,
                "link_days": link_days,
                "runs": runs,
                "alarms": total,
                "by_stat": {STATISTICS[j]: int(c) for j, c in enumerate(alarms) if c},
                "rate": total / link_days,
                "lo": lo / link_days,
                "hi": hi / link_days,
                "max_offset": max_off,
                "per_run_max": max(per_run),
            }
        )
        log(
            f"  false alarms {kind} {km:g} km: {total} in {link_days:.0f} link-days "
            f"({time.perf_counter() - t_start:.0f} s)"
        )
    return out


# --------------------------------------------------------------------------- 3. estimates
def run_coverage(seeds: int, log: Any) -> list[dict]:
    km, ramp, amp = 30.0, 1.0, 0.1  # ramp dB/h, daily sine amplitude dB
    rows: list[tuple[float, float]] = [(0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (5.0, 0.0), (10.0, 0.0)]
    rows.append((1.0, 0.1))  # declared detector efficiency 10 % above the true one
    out = []
    t_start = time.perf_counter()
    base = TrueLinkParams.from_preset("gys", km)
    for ri, (dt, mismatch) in enumerate(rows):
        errs, half, cover, n_in = [], [], 0, []
        declared = base.detector_efficiency * (1.0 + mismatch)
        pulses = pulses_per_interval(base, dt)
        n_int = math.ceil(60.0 / dt) + 3  # a few more than the window holds: it slides
        for seed in range(seeds):
            rng = rng_for(3, ri, seed)
            phase = rng.uniform(0.0, DAY)
            est = LinkEstimator(declared)  # default window: 60 s
            truth = []
            for i in range(n_int):
                mid = (i + 0.5) * dt
                extra = (
                    0.5 + ramp * mid / 3600.0 + amp * math.sin(2 * math.pi * (phase + mid) / DAY)
                )
                p = TrueLinkParams.from_preset("gys", km, extra_loss_db=extra)
                c = draw_interval(interval_law(p), pulses, rng)
                est.add(
                    IntervalObservation(
                        i * dt,
                        (i + 1) * dt,
                        tuple(float(x) for x in p.intensities),
                        tuple(c.sent.tolist()),
                        tuple(c.detected.tolist()),
                        tuple(c.sifted.tolist()),
                        tuple(c.errors.tolist()),
                        photocurrent_ua=c.photocurrent_ua,
                        monitor_samples=c.samples,
                    )
                )
                truth.append((i * dt, p.channel_loss_db))
            e = est.estimate()
            inside = [loss for t, loss in truth if t >= e.t_start - 1e-9]
            true_loss = float(np.mean(inside))
            n_in.append(e.intervals)
            errs.append(e.loss_db - true_loss)
            half.append(0.5 * (e.loss_db_ci[1] - e.loss_db_ci[0]))
            cover += e.loss_db_ci[0] <= true_loss <= e.loss_db_ci[1]
        err = np.array(errs)
        cov = cover / seeds
        out.append(
            {
                "dt": dt,
                "mismatch": mismatch,
                "intervals": int(np.median(n_in)),
                "seeds": seeds,
                "mean": float(err.mean()),
                "se_mean": float(err.std(ddof=1) / math.sqrt(seeds)),
                "rms": float(np.sqrt(np.mean(err**2))),
                "half": float(np.mean(half)),
                "coverage": cov,
                "cov_se": math.sqrt(max(cov * (1 - cov), 1e-12) / seeds),
            }
        )
        log(
            f"  coverage dt={dt:g} mismatch={mismatch:g}: {cov:.3f} "
            f"({time.perf_counter() - t_start:.0f} s)"
        )
    return out


# --------------------------------------------------------------------------- 4. CPU
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its live children, s."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / TICKS
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of a process now (``VmRSS``), MiB; NaN if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d.name))
    return out


def mosquitto_pid() -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "mosquitto":
                    return int(d.name)
            except OSError:
                continue
    return None


class Broker:
    """A private Mosquitto on a free loopback port (other work on the shared broker at
    127.0.0.1:1883 publishes the same module ids); the shared one if none can be started."""

    def __init__(self, work: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url, self.private = MOSQUITTO, False
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            return
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        conf = work / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                self.proc, self.url, self.private = proc, f"mqtt://127.0.0.1:{port}", True
                return
            except OSError:
                time.sleep(0.1)
        proc.kill()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else mosquitto_pid()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


class Proc:
    """A subprocess whose stdout lines are read by a thread (the first one is JSON)."""

    def __init__(self, args: list[str], err_path: Path) -> None:
        self.err_path = err_path
        self.err = err_path.open("w")
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.err, text=True, cwd=ROOT
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line)

    def first_json(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.p.poll() is not None:
                    break
                continue
            if line.strip().startswith("{"):
                return json.loads(line)
        self.err.flush()
        tail = self.err_path.read_text().strip().splitlines()[-3:]
        raise RuntimeError(
            f"no JSON line (exit {self.p.poll()}): " + " | ".join(tail) if tail else "no output"
        )

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.err.close()


def big_plant_scenario() -> dict[str, Any]:
    """100 links, 100 nodes (4 metros, 16 OLTs, 80 gateways), 13 devices per gateway."""
    gws = [f"GW{m}.{o}.{g}" for m in range(4) for o in range(4) for g in range(5)]
    return {
        "topology": {
            "builder": "hierarchical",
            "params": {"metros": 4, "olts_per_metro": 4, "gateways_per_olt": 5, "olt_rate": 10.0},
        },
        "demands": [{"src": gw, "dst": "M0", "rate": 1.0 / len(gws)} for gw in gws],
        "pool_capacity": 200,
        "keys_per_service": 10,
        "policy": "ttd-balance",
        "duration": 1000.0,
        "seed": 1,
        "plant": {
            "reporting_interval_s": 1.0,
            "link_defaults": {"preset": "gys"},
            "detector_monitor": True,
            "devices_per_gateway": 13,
            "aggregator": "M0",
        },
    }


# `plant serve` has no switch for the KMEs: without them the plant runs from the library
NO_KME_PLANT = """
import json, sys, time
from qkdtwin.plant import Plant
plant = Plant(sys.argv[1], sys.argv[2], broker=sys.argv[3], kmes=False, iot=False).start()
print(json.dumps(plant.describe()), flush=True)
while True:
    time.sleep(1.0)
"""


def plant_time(ctrl: str) -> tuple[float, float]:
    return httpx.get(f"{ctrl}/truth", timeout=30).json()["t"], time.perf_counter()


def run_cpu_case(
    name: str,
    scenario: Path,
    iot: bool,
    warmup: float,
    seconds: float,
    log: Any,
    *,
    kmes: bool = True,
    alone_s: float = 0.0,
    plant_code: str = NO_KME_PLANT,
) -> dict[str, Any]:
    """One row of section 4; ``plant_code`` is the plant process's program without KMEs."""
    work = Path(tempfile.mkdtemp(prefix="twin-attach-bench-"))
    broker = Broker(work)
    try:
        return _run_cpu_case(
            name, scenario, iot, warmup, seconds, log, kmes, alone_s, work, broker, plant_code
        )
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _run_cpu_case(
    name: str,
    scenario: Path,
    iot: bool,
    warmup: float,
    seconds: float,
    log: Any,
    kmes: bool,
    alone_s: float,
    work: Path,
    broker: Broker,
    plant_code: str = NO_KME_PLANT,
) -> dict[str, Any]:
    if kmes:
        plant_args = [
            str(EXE),
            "plant",
            "serve",
            str(scenario),
            "--json",
            "--broker",
            broker.url,
            "--data-dir",
            str(work / "plant"),
        ] + ([] if iot else ["--no-iot"])
    else:
        plant_args = [
            sys.executable,
            "-c",
            plant_code,
            str(scenario),
            str(work / "plant"),
            broker.url,
        ]
    row: dict[str, Any] = {
        "name": name,
        "iot": iot,
        "kmes_on": kmes,
        "error": None,
        "private_broker": broker.private,
    }
    t0 = time.perf_counter()
    plant = Proc(plant_args, work / "plant.err")
    twin = None
    try:
        info = plant.first_json(300)
        row["plant_start_s"] = time.perf_counter() - t0
        row["links"] = info["modules"]
        row["kmes"] = len(info["kmes"])
        row["speed_alone"] = math.nan
        if alone_s > 0:  # the plant alone (no twin polling its KMEs), after it settled
            time.sleep(10.0)
            a0, c0p = plant_time(info["control_url"]), cpu_seconds(plant.p.pid)
            time.sleep(alone_s)
            a1, c1p = plant_time(info["control_url"]), cpu_seconds(plant.p.pid)
            row["speed_alone"] = (a1[0] - a0[0]) / (a1[1] - a0[1])
            row["plant_cpu_alone"] = (c1p - c0p) / (a1[1] - a0[1])
        twin = Proc(
            [
                str(EXE),
                "twin",
                "serve",
                "--attach",
                info["attach_file"],
                "--port",
                "0",
                "--duration",
                str(warmup + seconds + 120),
                "--json",
            ],
            work / "twin.err",
        )
        url = twin.first_json(120)["url"]
        time.sleep(warmup)
        ctrl = info["control_url"]
        p0 = plant_time(ctrl)
        mpid = broker.pid
        c0 = (cpu_seconds(plant.p.pid), cpu_seconds(twin.p.pid), cpu_seconds(mpid or -1))
        st0 = httpx.get(f"{url}/api/state", timeout=30).json()
        w0 = time.perf_counter()
        time.sleep(seconds)
        c1 = (cpu_seconds(plant.p.pid), cpu_seconds(twin.p.pid), cpu_seconds(mpid or -1))
        w1 = time.perf_counter()
        p1 = plant_time(ctrl)
        row["plant_speed"] = (p1[0] - p0[0]) / (p1[1] - p0[1])
        st = httpx.get(f"{url}/api/state", timeout=30).json()
        wall = w1 - w0
        row["plant_cpu"] = (c1[0] - c0[0]) / wall
        row["twin_cpu"] = (c1[1] - c0[1]) / wall
        row["broker_cpu"] = (c1[2] - c0[2]) / wall if mpid else math.nan
        row["wall"] = wall
        row["twin_rss_mib"] = rss_mib(twin.p.pid)
        row["links_ok"] = sum(1 for lk in st["links"] if lk["source"] == "ok")
        row["links_est"] = sum(1 for lk in st["links"] if lk["estimate"].get("loss_db") is not None)
        row["kmes_ok"] = sum(1 for k in st["kmes"] if k["status"] == "ok")
        row["devices"] = len(st["devices"])
        row["gateways"] = sum(1 for n in st["nodes"] if n["role"] == "edge_gateway")
        row["alarms"] = len(st["alarms"])
        c_new, c_old = st["ingest"]["counts"], st0["ingest"]["counts"]
        row["accepted_per_s"] = {
            k: (c_new.get(k, 0) - c_old.get(k, 0)) / wall for k in c_new if c_new.get(k)
        }
        row["t_span"] = (st.get("t") or 0) - (st0.get("t") or 0)
        log(
            f"  cpu {name}: twin {row['twin_cpu']:.3f}, plant {row['plant_cpu']:.3f} cores "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  cpu {name}: FAILED {row['error']}")
    finally:
        if twin is not None:
            twin.stop()
        plant.stop()
    return row


def numba_cache_files() -> int:
    return sum(1 for _ in (ROOT / "src" / "qkdtwin").rglob("*.nbi"))


# --------------------------------------------------------------------------- report
def section_delays(d: dict[str, Any], seeds: int) -> str:
    lines = [
        "| attack | F | km | median | p95 | mean | detected ≤ 3600 | first statistic (share) "
        "| Lorden L (counts) | 2·max(L, 1) | median ≤ 2·max(L, 1) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|:-:|",
    ]
    targets = []
    for a, f, label in d["cells"]:
        for km in LENGTHS:
            r = d["res"][(a, f, km)]
            lim = 2.0 * max(r["lorden"], 1.0)
            ok = r["median"] <= lim
            mean = f"{r['mean']:.1f}" if math.isfinite(r["mean"]) else "-"
            lines.append(
                f"| {a} | {label} | {km:g} | {fmt_delay(r['median'])} | {fmt_delay(r['p95'])} "
                f"| {mean} | {100 * r['detected']:.1f} % "
                f"| {r['stat']} ({100 * r['stat_share']:.0f} %) "
                f"| {r['lorden']:.3g} ({r['lorden_stat']}) | {lim:.3g} | {'yes' if ok else 'NO'} |"
            )
            if km >= 30 and ((a == "fiber-tap" and f == TAP_05DB) or (a == "pns" and f == 0.1)):
                targets.append((a, label, km, r["median"], r["mean"], lim, ok))
    tgt = "; ".join(
        f"{a} {lab} at {km:g} km: median {m:.0f} (mean {mn:.1f}) vs {lim:.3g} -> "
        f"{'met' if ok else 'NOT met'}"
        for a, lab, km, m, mn, lim, ok in targets
    )
    chk = d["checks"]
    held_same = sum(1 for c in chk if c["held"] == c["fast"] and c["held_stat"] == c["fast_stat"])
    free_same = sum(1 for c in chk if c["free"] == c["fast"])
    diffs = [c["free"] - c["fast"] for c in chk if c["free"] != c["fast"]]
    refs = sum(1 for c in chk if c["same_reference"])
    diff_txt = (
        "; where they differ (free - fast path, intervals): "
        + str(sorted(int(x) if math.isfinite(x) else x for x in diffs))
        if diffs
        else ""
    )
    meaning = "\n".join(f"| {a} | {m} |" for a, m in F_MEANING.items())
    pns = "; ".join(
        f"{km:g} km "
        + " / ".join(f"{100 * d['res'][('pns', f, km)]['ratio_change']:+.1f}" for f in FRACTIONS)
        + " %"
        for km in LENGTHS
    )
    if "decoy-yield-rise" in d["names"]:
        pns_note = (
            "`decoy-yield` tests a drop of that ratio and `decoy-yield-rise` a rise: the rise "
            "is what PNS does on the 10 km link (the `PhotonNumberSplitting.strategy` that "
            "restores the honest signal gain gives the weak decoy relatively more clicks there)."
        )
    else:
        pns_note = (
            "`decoy-yield` tests a *drop* only: where PNS raises the ratio (10 km here, where the "
            "`PhotonNumberSplitting.strategy` that restores the honest signal gain gives the "
            "weak decoy relatively more clicks) no statistic moves in its tested direction and "
            "nothing alarms, while Lorden's bound, from the KL of the actual change, is finite."
        )
    return f"""### 1. Detection delay

GYS preset, 1 s intervals (2x10^6 pulses, classes 0.48 / 0.1 / 0 in equal shares, detector
monitor of 100 samples), default `DetectorConfig` (30-day link ARL split evenly over the
{len(d["names"])} statistics {", ".join(f"`{n}`" for n in d["names"])}).
{seeds} seeds per cell. Per seed: {N_WARM} honest intervals; the reference is fitted by the
library (`LinkEstimator` over the 600 intervals 1..600 that `LinkDetector` holds at the onset,
`Reference.from_estimate`, `design_statistics`); attacked intervals from interval {N_WARM} on
(the onset); the delay is (end of the alarm interval - onset) in intervals, capped at {CAP}.
**Method: the vectorised fast path** (`count_llrs` + `cusum_scan`, CUSUMs at 0 at the onset —
Lorden's worst case — and the reference held after it). Checked against `LinkDetector` fed the
same intervals on {len(chk) // len(d["cells"]) if d["cells"] else 0} seed(s) x {len(d["cells"])}
cells at 30 km: its reference at the onset equals the fast path's in {refs}/{len(chk)}; with
`rearm()` at the onset (reference held, CUSUMs at 0) the alarm interval and statistic are
**identical in {held_same}/{len(chk)}**; free-running (CUSUMs carried over from the warm-up,
reference still learning from 10-interval-old data until a CUSUM passes half its threshold)
the alarm interval is the same in {free_same}/{len(chk)}{diff_txt}.
Lorden L = min over the statistics of log(ARL per statistic = {d["arl_stat"]:.3g} intervals) /
KL(post || pre) per interval of that statistic's counts, with the true honest and attacked count
laws (`interval_law`); "signal clicks" is the count of both `loss-step` and `count-model`.
A delay is at least one interval, hence the comparison with 2·max(L, 1).

| attack | what F means |
|---|---|
{meaning}

{chr(10).join(lines)}

PNS keeps the signal gain and QBER; it changes the weak decoy's gain relative to the signal's
by (F = {" / ".join(f"{f:g}" for f in FRACTIONS)}, from `interval_law`): {pns}. {pns_note}

Target (a 0.5 dB loss step and PNS on 10 % of pulses, >= 30 km, median within twice Lorden's
bound): {tgt}.
"""


def section_false(rows: list[dict], run_days: int) -> str:
    lines = [
        "| drift, as the detector's reference sees it | km | link-days | alarms (by statistic) "
        "| alarms per link-day | 99 % Poisson interval | vs 1/30 = 0.0333 |",
        "|---|---:|---:|---:|---:|---:|:-:|",
    ]
    desc = {
        "none": "none",
        "learning": f"daily sine 0.1 dB + ramp {TOL_RAMP:.2f} dB/h, learning reference",
        "frozen-sine": "daily sine 0.1 dB, reference frozen at its mean",
    }
    for r in rows:
        by = ", ".join(f"{k} {v}" for k, v in r["by_stat"].items()) or "-"
        verdict = (
            "below"
            if r["hi"] < 1 / 30
            else ("above" if r["lo"] > 1 / 30 else "consistent (interval contains it)")
        )
        lines.append(
            f"| {desc[r['kind']]} (offset up to {r['max_offset']:.3f} dB) | {r['km']:g} "
            f"| {r['link_days']:.0f} | {r['alarms']} ({by}) | {r['rate']:.4f} "
            f"| [{r['lo']:.4f}, {r['hi']:.4f}] | {verdict} |"
        )
    k_all = sum(r["alarms"] for r in rows)
    d_all = sum(r["link_days"] for r in rows)
    lo_all, hi_all = poisson_ci(k_all)
    lines.append(
        f"| all rows pooled | | {d_all:.0f} | {k_all} | {k_all / d_all:.4f} "
        f"| [{lo_all / d_all:.4f}, {hi_all / d_all:.4f}] | "
        f"{'below' if hi_all / d_all < 1 / 30 else 'consistent (interval contains it)'} |"
    )
    return f"""### 2. False alarms on clean links

Fast path over week-long runs ({run_days} days of 1 s intervals per run, counts drawn with
`draw_intervals`), each run with its own reference fitted by the library on {WINDOW} honest
intervals (as in 1), CUSUMs restarted after every alarm (renewal counting). GYS link with a
0.2 dB connector loss (so that negative offsets are representable); the drift enters as extra
loss (`TrueLinkParams.with_extra_loss`, on a 0.0005 dB grid). The fast path's reference is
fixed, while `LinkDetector` relearns every {CFG.refit_every} intervals from the window
{GUARD}..{GUARD + WINDOW} intervals old, and simulating that for hundreds of link-days online
does not fit (its refits re-solve Markov-chain thresholds: ~1-8 ms per interval here). So the
drift is applied as the offset the learning reference sees: the drift at the interval minus its
mean over the reference window in force (refit schedule of `LinkDetector`). A ramp at the documented
tolerated rate ({TOL_RAMP:.2f} dB/h = 0.1 dB over the {CFG.reference_lag_s():.0f} s lag) then
sits at the loss zone's edge (0.100-0.103 dB: the lag grows by up to {CFG.refit_every} s between
refits); the daily sine adds < 0.003 dB. The base loss stays at the nominal length's (a week of
ramp would be ~200 dB). The last row is the pessimistic case of a reference that does not learn
for days (e.g. held after an alarm) under the full ±0.1 dB sine. The reference's own error is
frozen per run (online it is redrawn every refit): the mean alarm rate is the same, runs are
more dispersed (most alarms in one run: {max(r["per_run_max"] for r in rows)}).

{chr(10).join(lines)}
"""


def section_coverage(rows: list[dict]) -> str:
    lines = [
        "| reporting interval (s) | intervals in window | seeds | mean error (dB) | RMS error (dB) "
        "| mean 95 % half-width (dB) | coverage of the 95 % interval | target 93-97 % |",
        "|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        label = f"{r['dt']:g}" + (
            f", declared efficiency +{100 * r['mismatch']:.0f} %" if r["mismatch"] else ""
        )
        ok = 0.93 <= r["coverage"] <= 0.97
        lines.append(
            f"| {label} | {r['intervals']} | {r['seeds']} | {r['mean']:+.4f} ± {r['se_mean']:.4f} "
            f"| {r['rms']:.4f} | {r['half']:.4f} | {100 * r['coverage']:.1f} ± "
            f"{100 * r['cov_se']:.1f} % | {'yes' if ok else 'no'} |"
        )
    bias = 10 * math.log10(1.1)
    return f"""### 3. Loss estimate: error and coverage vs reporting interval

`LinkEstimator` with its default 60 s window on exact draws (`draw_interval`, each interval
with its own law at its midpoint) of a GYS 30 km link with 0.5 dB extra loss drifting by a
ramp of 1 dB/h plus a daily sine of 0.1 dB (random phase per seed); a few more intervals than
the window holds are fed, so it slides. Truth = mean true channel loss over the intervals in
the estimate's window. Error = estimate - truth (± its standard error); coverage ± binomial
standard error. The last row declares a detector efficiency 10 % above the true one: the loss
comes out high by 10 log10(1.1) = {bias:.3f} dB (the counts only identify the product of
transmittance and efficiency), and the interval does not cover.

{chr(10).join(lines)}
"""


FD_NOTE = (
    ". Diagnosed for this benchmark: after starting 100 KMEs (threads with their servers, "
    "stores and peer connections) the plant process holds ~1,300 file descriptors, so the first "
    "IIoT session's MQTT socket gets a descriptor >= 1024; paho-mqtt's network loop uses "
    "`select()`, which rejects such descriptors (ValueError, caught inside paho as a lost "
    "connection), the CONNACK is never read and `MqttTransport` times out after 10 s. "
    "Reproduced with 1,100 dummy descriptors open before `connect_transport`. The plant is then "
    "measured with `--no-iot`."
)


def speed_note(r: dict[str, Any]) -> str:
    alone = (
        f"alone (no twin) it ran at {r['speed_alone']:.2f} plant s per wall s on "
        f"{r['plant_cpu_alone']:.2f} core; "
        if math.isfinite(r.get("speed_alone", math.nan))
        else ""
    )
    rate = r["accepted_per_s"].get("accepted", 0.0) / max(1, r["links"])
    iot = (
        "; not every gateway's IIoT traffic has reached the twin yet"
        if r["devices"] < r["gateways"]
        else ""
    )
    return (
        f"- **With the twin attached, the {r['links']}-link plant with KMEs falls behind real "
        f"time** (plant speed {r['plant_speed']:.2f}): {alone}one `Plant.step` (an interval of "
        "every module) costs ~0.2 s of CPU for 100 links even without IIoT and twin, most of it "
        "in the modules' key deliveries to their KMEs (`KeyStore.add_keys`, SQLAlchemy/SQLite; "
        "each module delivers every `kme_feed_every` = 5 intervals, staggered; cProfile of "
        "`Plant.step` in-process, measured separately). The IIoT sessions and the twin's "
        "polls (every KME's operator interface, "
        "and every gateway's SAE key status when listed, once per wall second; served by KME "
        "threads) run in the same process and share one GIL with the step loop, so plant time "
        f"slows down: {rate:.2f} messages per link per second reach the twin, and as the "
        "plant's clock falls behind wall time its messages arrive more than 5 s after their "
        "interval ended by the attach file's clock (counted `skewed`; accepted all the same)"
        f"{iot}. The row without KMEs gives the twin's cost at the "
        "full 100 messages per second."
    )


def section_cpu(rows: list[dict], warmup: float, seconds: float, nb: tuple[int, int]) -> str:
    lines = [
        "| plant process | links | KMEs | IIoT | twin CPU (cores) | plant CPU (cores) "
        "| Mosquitto CPU | plant speed with twin (alone) "
        "| twin: links reporting / with estimate / KMEs ok / IIoT senders seen (gateways) "
        "| link messages per s accepted (of which skewed) | alarms |",
        "|---|---:|---:|:-:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    slow = False
    for r in rows:
        if r.get("error"):
            note = f"- **{r['name']}, IIoT {'on' if r['iot'] else 'off'}: failed** — {r['error']}"
            if "refused or did not answer" in r["error"]:
                note += FD_NOTE
            notes.append(note)
            continue
        acc = r["accepted_per_s"]
        # more messages than the plant's modules sent: another publisher reached the twin
        foreign = (
            " **> what the plant sent: foreign publisher**"
            if acc.get("accepted", 0.0) > 1.05 * r["links"] * r["plant_speed"] + 0.5
            else ""
        )
        alone = (
            f" ({r['speed_alone']:.2f}, plant CPU {r['plant_cpu_alone']:.2f})"
            if math.isfinite(r.get("speed_alone", math.nan))
            else ""
        )
        if r["plant_speed"] < 0.95 and not slow:
            slow = True
            notes.append(speed_note(r))
        kind = "`plant serve`" if r["kmes_on"] else "`Plant(kmes=False)`"
        lines.append(
            f"| {r['name']}, {kind} | {r['links']} | {r['kmes']} | {'on' if r['iot'] else 'off'} "
            f"| **{r['twin_cpu']:.3f}** | {r['plant_cpu']:.3f} | {r['broker_cpu']:.3f} "
            f"| {r['plant_speed']:.2f}{alone} "
            f"| {r['links_ok']} / {r['links_est']} / {r['kmes_ok']} / {r['devices']} "
            f"({r['gateways']}) "
            f"| {acc.get('accepted', 0.0):.1f} ({acc.get('skewed', 0.0):.1f}){foreign} "
            f"| {r['alarms']} |"
        )
    ok = [r for r in rows if not r.get("error")]
    verdict = "; ".join(
        f"{r['name']}{'' if r['kmes_on'] else ' without KMEs'}: {r['twin_cpu']:.3f} "
        f"{'<' if r['twin_cpu'] < 0.5 else '>='} 0.5"
        for r in ok
    )
    big = [r for r in ok if r["links"] >= 100]
    with_k = next((r for r in big if r["kmes_on"]), None)
    no_k = next((r for r in big if not r["kmes_on"]), None)
    est = ""
    if with_k and no_k:
        rk = with_k["accepted_per_s"].get("accepted", 0.0)
        rn = max(no_k["accepted_per_s"].get("accepted", 0.0), 1e-9)
        polling = with_k["twin_cpu"] - no_k["twin_cpu"] * rk / rn
        full = no_k["twin_cpu"] + polling
        est = (
            f"\nEstimate for 100 links at the full rate with KMEs (assuming the twin's per-message "
            f"cost scales with the message rate and its KME/SAE polling does not): "
            f"{no_k['twin_cpu']:.3f} (messages, row without KMEs) + {polling:.3f} (polling: "
            f"{with_k['twin_cpu']:.3f} - {no_k['twin_cpu']:.3f} x {rk:.1f}/{rn:.1f}) = "
            f"**{full:.2f} core** ({'<' if full < 0.5 else '>='} 0.5).\n"
        )
    note_txt = ("\n" + "\n".join(notes) + "\n") if notes else ""
    if all(r.get("private_broker") for r in rows):
        broker_txt = (
            "a private Mosquitto per case (`mosquitto -c CONF`, `listener PORT 127.0.0.1`, "
            "started by the benchmark: other work on this machine uses the shared broker at "
            "127.0.0.1:1883, and tests publishing the same module ids reached the twin in an "
            "earlier run; the Mosquitto CPU column is that private broker's)"
        )
    else:
        broker_txt = "Mosquitto at 127.0.0.1:1883 (PORT = 1883, shared with other work)"
    return f"""### 4. CPU: the attached twin alone vs the plant

Two processes on {broker_txt}:
`qkdtwin plant serve SCENARIO --json --broker mqtt://127.0.0.1:PORT --data-dir DIR` and
`qkdtwin twin serve --attach DIR/attach.yaml --port 0 --duration D --json`, speed 1 (one
telemetry message per link per plant second; the twin polls every KME, and the key status of
every gateway's SAE pair when the attach file lists them, once per wall second). The 100-link
scenario is `builder: hierarchical` (metros 4, olts_per_metro 4, gateways_per_olt 5: 100 nodes,
100 links; lengths by role: 30 / 15 / 5 km) with a `plant:` section (GYS, detector monitor,
13 devices per gateway, aggregator M0). CPU = (utime + stime) of each process (all threads; the
KMEs are threads of the plant) over the same {seconds:g} s of wall time after {warmup:g} s of
warm-up (the detectors' 600 s reference windows are still filling then; their refits cost the
same from the first one), in cores; plant speed = plant seconds per wall second over that
window (from the control endpoint), and in brackets over 20 s before the twin started. Target:
twin < 0.5 core ({verdict}). Numba: neither process calls a jitted function (numba cache index
files under src/: {nb[0]} before, {nb[1]} after), so cache warmth does not apply.
{note_txt}
{chr(10).join(lines)}
{est}"""


def cpu_rows_for(quick: bool, warmup: float, seconds: float, log: Any) -> list[dict]:
    """Section 4's cases: the seed plant, then (full runs) the 100-link plant with and without
    KMEs."""
    rows = [
        run_cpu_case(
            "seed (examples/plant-seed.yaml)",
            ROOT / "examples" / "plant-seed.yaml",
            True,
            warmup,
            seconds,
            log,
        )
    ]
    if not quick:
        path = Path(tempfile.mkdtemp(prefix="twin-attach-scn-")) / "plant-hier100.yaml"
        path.write_text(yaml.safe_dump(big_plant_scenario(), sort_keys=False))
        big = "hierarchical 4 x 4 x 5, 13 devices per gateway"
        row = run_cpu_case(big, path, True, warmup, seconds, log, alone_s=20.0)
        rows.append(row)
        if row.get("error"):
            rows.append(run_cpu_case(big, path, False, warmup, seconds, log, alone_s=20.0))
        rows.append(run_cpu_case(big, path, False, warmup, seconds, log, kmes=False))
    return rows


def only_cpu(args: argparse.Namespace) -> None:
    """``--only-cpu``: rerun section 4 and splice it into the existing section."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    warmup, seconds = (10.0, 10.0) if args.quick else (120.0, 60.0)
    nb0 = numba_cache_files()
    rows = cpu_rows_for(args.quick, warmup, seconds, log)
    exe = Path(sys.executable)
    py = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"
    cmd = f"{py} benchmarks/twin_attach.py " + " ".join(sys.argv[1:])
    body = section_cpu(rows, warmup, seconds, (nb0, numba_cache_files()))
    body = body.replace(
        "\n\nTwo processes",
        f"\n\nRerun alone: `{cmd.strip()}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores "
        "(sections 1-3 are from the run above).\n\nTwo processes",
        1,
    )
    print(body)
    if args.write:
        text = args.write.read_text()
        begin, end = "<!-- begin:twin-attach -->", "<!-- end:twin-attach -->"
        i, j = text.find(begin), text.find(end)
        k = text.find("### 4. CPU", i)
        if i < 0 or j < 0 or not (i < k < j):
            sys.exit("--only-cpu needs an existing twin-attach section with a section 4")
        args.write.write_text(text[:k] + body.rstrip() + "\n" + text[j:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="reduced smoke run (< 2 min)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per delay cell (200)")
    ap.add_argument("--coverage-seeds", type=int, default=None, help="seeds per row of 3 (500)")
    ap.add_argument("--days", type=float, default=None, help="link-days of the main row of 2")
    ap.add_argument("--skip-cpu", action="store_true", help="leave out section 4")
    ap.add_argument(
        "--only-cpu",
        action="store_true",
        help="run section 4 alone and replace only it in the --write file's section",
    )
    args = ap.parse_args()
    if args.only_cpu:
        only_cpu(args)
        return
    quick = args.quick
    seeds = args.seeds or (8 if quick else 200)
    check_seeds = 1 if quick else 10
    cov_seeds = args.coverage_seeds or (40 if quick else 1000)
    days = args.days or (2.0 if quick else 600.0)
    run_days = 1 if quick else 7
    t_all = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_all:6.0f} s] {msg}", file=sys.stderr, flush=True)

    log(f"1. delays: {seeds} seeds per cell")
    delays = run_delays(seeds, check_seeds, log)
    log("2. false alarms")
    fa_rows = [
        ("learning", 30.0, days),
        ("none", 30.0, days / 3),
        ("learning", 10.0, days / 3),
        ("learning", 50.0, days / 3),
        ("frozen-sine", 30.0, days / 3),
    ]
    if quick:
        fa_rows = [(k, km, max(d, 1.0)) for k, km, d in fa_rows[:2]] + [(*fa_rows[-1][:2], 1.0)]
    t2 = time.perf_counter()
    false = run_false_alarms(fa_rows, run_days, log)
    t2 = time.perf_counter() - t2
    log("3. coverage")
    t3 = time.perf_counter()
    cov = run_coverage(cov_seeds, log)
    t3 = time.perf_counter() - t3
    cpu_rows: list[dict] = []
    warmup, seconds = (10.0, 10.0) if quick else (120.0, 60.0)
    nb0 = numba_cache_files()
    if not args.skip_cpu:
        log("4. CPU")
        cpu_rows = cpu_rows_for(quick, warmup, seconds, log)
    nb1 = numba_cache_files()
    total = time.perf_counter() - t_all
    cpu_name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    exe = Path(sys.executable)
    py = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"
    cmd = f"{py} benchmarks/twin_attach.py " + " ".join(sys.argv[1:])
    md = f"""## Attached twin against the plant (`benchmarks/twin_attach.py`)

`{cmd.strip()}`{" (**quick smoke run**: reduced seeds and days)" if quick else ""};
{cpu_name}, {os.cpu_count()} cores (shared with other work), Python
{platform.python_version()}, NumPy {np.__version__}; one benchmark process (sections 1-3),
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; total {total / 60:.1f} min (delays
{delays["seconds"]:.0f} s, false alarms {t2:.0f} s, coverage {t3:.0f} s).

{section_delays(delays, seeds)}
{section_false(false, run_days)}
{section_coverage(cov)}
{section_cpu(cpu_rows, warmup, seconds, (nb0, nb1)) if cpu_rows else "Section 4 skipped."}
"""
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_section

        write_section(args.write, "twin-attach", md)
    print(md)


if __name__ == "__main__":
    main()
