"""Key-supply forecasts: when will a KME's key store run dry, with a prediction interval.

A KME link store holds ``S`` keys. Keys arrive at the supply rate ``lambda_s`` (the link's
calibrated secret key rate over the key size: the *model's* estimate, not a count) and leave
at the consumption rate ``lambda_c`` (the change of the store's ``delivered_total`` counter,
observed through the operator interface). Over horizons of minutes the level is well described
by a Brownian motion with drift ``mu = lambda_s - lambda_c`` and variance ``sigma^2`` per second
(``sigma^2 = lambda_s + v_c``: Poisson supply, and the consumption's own dispersion ``v_c``
measured from the counter increments). The time to depletion is then the first passage of the
level to zero, whose law is known in closed form:

* ``mu < 0``: inverse Gaussian, mean ``S / |mu|``, shape ``S^2 / sigma^2``;
* ``mu > 0``: the store empties with probability ``exp(-2 mu S / sigma^2)`` only, and, when it
  does, at an inverse-Gaussian time with mean ``S / mu`` and the same shape;
* ``mu = 0``: Levy (it empties, eventually).

The drift is itself an estimate (the consumption rate's standard error from the window's
increments; the supply's from the key-rate interval when known). The forecast integrates over it
by Monte Carlo (``draws`` draws of ``mu``, one first-passage time each, seeded): the interval is
the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the predictive distribution, ``inf``
when more than that share of draws never empties.

**Warnings.** A store is *warned* when the predictive probability of emptying within
``lead_s`` seconds reaches ``warn_prob``. Under a calibrated model the warnings that turn out
false (the store does not empty within ``lead_s``) are then at most ``1 - warn_prob`` of them,
and the warnings missed (a store empties without one in the preceding ``lead_s``) are rare;
``benchmarks/forecast.py`` measures both against simulated stores.

What the model leaves out: the KMEs' store cap (a full store stops taking keys: the forecast
of a store near its cap is pessimistic about refills, never optimistic about depletion),
batched deliveries (the plant delivers a link's keys every few intervals: within the variance,
not the mean), and changes of the consumption rate inside the window (the window is the
forecast's memory: ``window_s``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from qkdtwin.errors import ConfigError

__all__ = [
    "ConsumptionTracker",
    "StockForecast",
    "forecast_depletion",
]


@dataclass(frozen=True, slots=True)
class StockForecast:
    """The forecast of one key store.

    Attributes
    ----------
    level
        Keys in the store now.
    supply_per_s, consumption_per_s
        Estimated rates, keys per second.
    drift_per_s
        ``supply - consumption``, keys per second (negative: the store is draining).
    sigma_per_sqrt_s
        Standard deviation of the level's change over one second, keys.
    ttd_s
        Median time to depletion, s (``inf``: more likely never than not).
    ttd_interval_s
        ``(low, high)``: the prediction interval at ``level`` (``inf`` bounds allowed).
    p_empty_within_lead
        Predictive probability that the store empties within ``lead_s``.
    warning
        ``p_empty_within_lead >= warn_prob``.
    level_ci
        The interval's coverage (e.g. 0.9).
    lead_s
        The warning's lead time, s.
    """

    level: int
    supply_per_s: float
    consumption_per_s: float
    drift_per_s: float
    sigma_per_sqrt_s: float
    ttd_s: float
    ttd_interval_s: tuple[float, float]
    p_empty_within_lead: float
    warning: bool
    level_ci: float
    lead_s: float


def _first_passage(
    level: float, mu: np.ndarray, sigma2: float, rng: np.random.Generator
) -> np.ndarray:
    """One first-passage time to zero per drift in ``mu`` (``inf``: never), s."""
    out = np.full(mu.shape, np.inf)
    if level <= 0:
        return np.zeros(mu.shape)
    shape = level * level / sigma2
    speed = np.abs(mu)
    hits = np.ones(mu.shape, dtype=bool)
    up = mu > 0
    if up.any():
        p_hit = np.exp(-2.0 * mu[up] * level / sigma2)
        hits[up] = rng.random(int(up.sum())) < p_hit
    tiny = speed < 1e-12
    draw = hits & ~tiny
    if draw.any():
        mean = level / speed[draw]
        out[draw] = rng.wald(mean, shape)
    lev = hits & tiny
    if lev.any():  # no drift: Levy first passage, level^2 / (sigma^2 Z^2)
        z = rng.standard_normal(int(lev.sum()))
        out[lev] = shape / np.maximum(z * z, 1e-300)
    return out


def forecast_depletion(
    level: int,
    supply_per_s: float,
    consumption_per_s: float,
    *,
    supply_se: float = 0.0,
    consumption_se: float = 0.0,
    consumption_var_per_s: float | None = None,
    level_ci: float = 0.9,
    lead_s: float = 300.0,
    warn_prob: float = 0.5,
    draws: int = 4000,
    rng: np.random.Generator | int | None = 0,
) -> StockForecast:
    """Forecast when a store of ``level`` keys empties (see the module docstring).

    Parameters
    ----------
    level
        Keys in the store now (>= 0).
    supply_per_s, consumption_per_s
        Rate estimates, keys per second (>= 0).
    supply_se, consumption_se
        Their standard errors, keys per second.
    consumption_var_per_s
        Variance of the consumption per second (default: Poisson, the rate itself).
    level_ci
        Coverage of the prediction interval, in (0, 1).
    lead_s, warn_prob
        Warn when the probability of emptying within ``lead_s`` reaches ``warn_prob``.
    draws, rng
        Monte Carlo draws of the drift, and their generator or seed.

    Raises
    ------
    ConfigError
        For a negative level or rate, or a level or probability outside (0, 1).
    """
    if level < 0 or supply_per_s < 0 or consumption_per_s < 0:
        raise ConfigError("level and rates must be >= 0", field="level")
    if not (0.0 < level_ci < 1.0) or not (0.0 < warn_prob <= 1.0):
        raise ConfigError("level_ci and warn_prob must be in (0, 1)", field="level_ci")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    v_c = consumption_per_s if consumption_var_per_s is None else consumption_var_per_s
    sigma2 = max(supply_per_s + max(v_c, 0.0), 1e-9)
    mu_hat = supply_per_s - consumption_per_s
    se = math.hypot(supply_se, consumption_se)
    mu = mu_hat + se * gen.standard_normal(draws) if se > 0 else np.full(draws, mu_hat)
    t = _first_passage(float(level), mu, sigma2, gen)
    lo_q, hi_q = (1.0 - level_ci) / 2.0, (1.0 + level_ci) / 2.0
    finite = np.sort(t)

    def quantile(q: float) -> float:
        k = min(draws - 1, max(0, math.ceil(q * draws) - 1))
        return float(finite[k])

    p_lead = float(np.mean(t <= lead_s))
    return StockForecast(
        level=int(level),
        supply_per_s=float(supply_per_s),
        consumption_per_s=float(consumption_per_s),
        drift_per_s=float(mu_hat),
        sigma_per_sqrt_s=math.sqrt(sigma2),
        ttd_s=quantile(0.5),
        ttd_interval_s=(quantile(lo_q), quantile(hi_q)),
        p_empty_within_lead=p_lead,
        warning=p_lead >= warn_prob,
        level_ci=level_ci,
        lead_s=lead_s,
    )


class ConsumptionTracker:
    """The consumption rate of one store from its polled ``delivered_total`` counter.

    Keeps the polls of the last ``window_s`` seconds; the rate is the counter's change over
    the window's time, its per-second variance the dispersion of the increments around that
    rate (at least the Poisson value), and its standard error ``sqrt(variance / window)``.
    A counter that goes down by less than half (a KME undid a reservation whose client had
    gone, which lowers ``delivered_total``) is taken as no consumption over that poll; one
    that falls by more (a store replaced) restarts the window.
    """

    def __init__(self, window_s: float = 300.0) -> None:
        if not window_s > 0:
            raise ConfigError("window_s must be > 0", field="window_s", value=window_s)
        self.window_s = float(window_s)
        self._polls: deque[tuple[float, int]] = deque()
        self._offset = 0

    def observe(self, t: float, delivered_total: int) -> None:
        """One poll at time ``t`` (s) of the cumulative counter."""
        value = int(delivered_total) + self._offset
        if self._polls and t <= self._polls[-1][0]:
            return  # a repeated or older poll time: keep the first
        if self._polls and value < self._polls[-1][1]:
            last = self._polls[-1][1]
            if value >= last / 2:  # undone reservations: flat over this poll
                self._offset += last - value
                value = last
            else:
                self._polls.clear()
                self._offset = 0
                value = int(delivered_total)
        self._polls.append((t, value))
        while len(self._polls) > 2 and t - self._polls[1][0] >= self.window_s:
            self._polls.popleft()

    @property
    def span_s(self) -> float:
        """Seconds the window covers."""
        return self._polls[-1][0] - self._polls[0][0] if len(self._polls) > 1 else 0.0

    def rate(self) -> tuple[float, float, float] | None:
        """``(rate, variance per second, standard error)`` in keys/s, or ``None`` (< 2 polls)."""
        if len(self._polls) < 2:
            return None
        ts = np.array([p[0] for p in self._polls])
        ds = np.array([p[1] for p in self._polls], dtype=float)
        span = ts[-1] - ts[0]
        if span <= 0:
            return None
        r = (ds[-1] - ds[0]) / span
        dt, dd = np.diff(ts), np.diff(ds)
        var = float(np.sum((dd - r * dt) ** 2) / span) if len(dt) > 1 else r
        var = max(var, r)
        return float(r), var, math.sqrt(var / span)
