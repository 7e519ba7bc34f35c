"""Searches over a link: the optimal source intensity and the maximum distance.

* :func:`optimal_mu` maximises :func:`~qkdtwin.qkd.keyrate.dispatch.analytic_key_rate` over
  the source intensity (mean photon number, or mean pair number for ``bbm92``/``e91``): a
  logarithmic grid, then a bounded Brent refinement;
* :func:`max_distance` bisects on the sign of the rate for the longest fibre, in km, with a
  positive key rate;
* :func:`gg02_range_km` is the fibre length, in km, at which the GG02 formula stops being
  computed (:data:`~qkdtwin.qkd.keyrate.gg02.GG02_MIN_TRANSMITTANCE`).

The optimal modulation variance of CV-QKD, a search over the formula rather than the link,
is :func:`~qkdtwin.qkd.keyrate.gg02.optimal_v_a`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize_scalar

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, SimulationError
from qkdtwin.qkd.keyrate.dispatch import _wcp, analytic_key_rate
from qkdtwin.qkd.keyrate.gg02 import GG02_MIN_TRANSMITTANCE, CvParameters
from qkdtwin.qkd.protocols import canonical_protocol
from qkdtwin.qkd.source import EntangledPairSource, WeakCoherentSource

if TYPE_CHECKING:  # annotations only: model imports this package, not the other way round
    from qkdtwin.qkd.model import LinkModel

__all__ = [
    "gg02_range_km",
    "max_distance",
    "optimal_mu",
]


def _with_mu(model: LinkModel, mu: float, keep_decoys: bool) -> LinkModel:
    src = model.source
    if isinstance(src, EntangledPairSource):
        return replace(model, source=EntangledPairSource(mu))
    if isinstance(src, WeakCoherentSource):
        if keep_decoys:
            return replace(model, source=replace(src, mu=mu))
        return replace(model, source=WeakCoherentSource(mu))
    raise ConfigError(
        "the intensity of a single-photon source cannot be optimised",
        field="source",
        value=type(src).__name__,
        allowed="WeakCoherentSource, EntangledPairSource",
    )


def optimal_mu(
    protocol: str,
    model: LinkModel,
    *,
    decoys: str = "infinite",
    bounds: tuple[float, float] = (1e-5, 1.5),
) -> float:
    r"""Source intensity that maximises the analytic key rate of ``protocol`` over ``model``.

    Parameters
    ----------
    protocol
        A protocol whose rate depends on a source intensity: ``bb84``, ``decoy-bb84``,
        ``sarg04`` (weak coherent sources) or ``bbm92``/``e91`` (mean pair number).
    model
        The link; only its source intensity is varied.
    decoys
        For ``decoy-bb84``: ``"infinite"`` (default, as in Lo-Ma-Chen's optimisation) or
        ``"vacuum+weak"``, which keeps the model's decoys and searches above the weak decoy.
    bounds
        Search interval of the intensity, ``0 < low < high``.

    Returns
    -------
    float
        The optimal intensity; at a distance with no key for any intensity, the value with the
        largest (zero) rate, which is meaningless.

    Raises
    ------
    ConfigError
        If the protocol has no intensity to optimise or ``bounds`` is not an interval.

    Examples
    --------
    >>> from qkdtwin.qkd.model import build_link_model
    >>> mu = optimal_mu("decoy-bb84", build_link_model("decoy-bb84", 50.0, "gys"))
    >>> 0.4 < mu < 0.6
    True

    Notes
    -----
    A coarse logarithmic grid (the no-decoy rate is non-zero only in a narrow window
    :math:`\mu = O(\eta)`) followed by a bounded Brent refinement
    (``scipy.optimize.minimize_scalar``) in :math:`\log\mu` around the best grid point.
    """
    name = canonical_protocol(protocol)
    if name not in ("bb84", "decoy-bb84", "sarg04", "bbm92", "e91"):
        raise ConfigError(
            f"{name} has no source intensity to optimise",
            field="protocol",
            value=protocol,
            allowed="bb84, decoy-bb84, sarg04, bbm92, e91",
        )
    lo = v.in_range("bounds[0]", bounds[0], 0.0, None, low_open=True)
    hi = v.in_range("bounds[1]", bounds[1], lo, None, low_open=True)
    keep = name == "decoy-bb84" and decoys == "vacuum+weak"
    if keep:
        src = _wcp(name, model)
        weak = max(src.decoys, default=0.0)
        lo = max(lo, weak * (1.0 + 1e-9) + 1e-12)
        if lo >= hi:
            raise ConfigError(
                f"no intensity above the weak decoy {weak:g} within bounds {bounds!r}",
                field="bounds",
                value=bounds,
            )

    def rate(log_mu: float) -> float:
        m = _with_mu(model, math.exp(log_mu), keep)
        return analytic_key_rate(name, m, decoys=decoys).rate_per_pulse

    grid = np.linspace(math.log(lo), math.log(hi), 61)
    values = [rate(float(x)) for x in grid]
    i = int(np.argmax(values))
    if values[i] <= 0.0:
        return float(math.exp(grid[i]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(
        lambda x: -rate(float(x)), bounds=(a, b), method="bounded", options={"xatol": 1e-6}
    )
    best = float(res.x) if -float(res.fun) >= values[i] else float(grid[i])
    return float(math.exp(best))


def gg02_range_km(model: LinkModel) -> float:
    """Fibre length at which ``model``'s transmittance reaches :data:`GG02_MIN_TRANSMITTANCE`.

    Where :func:`~qkdtwin.qkd.keyrate.gg02.gg02_rate` stops being computed; ``inf`` for a
    lossless fibre.
    """
    t0 = model.with_distance(0.0).transmittance
    loss_db_per_km = model.channel.attenuation_db_per_km
    if loss_db_per_km <= 0:
        return math.inf
    return max(0.0, 10.0 * math.log10(t0 / GG02_MIN_TRANSMITTANCE) / loss_db_per_km)


def max_distance(
    protocol: str,
    model: LinkModel,
    *,
    optimize_mu: bool = False,
    search_limit_km: float = 1000.0,
    tolerance_km: float = 1e-4,
    **kw: object,
) -> float | None:
    """Longest fibre, in km, over which ``protocol`` still yields a positive key rate.

    Parameters
    ----------
    protocol
        Protocol name, as in :func:`analytic_key_rate`.
    model
        The link; its fibre length is varied with :meth:`LinkModel.with_distance`, keeping the
        attenuation and insertion loss.
    optimize_mu
        Re-optimise the source intensity at every distance (:func:`optimal_mu`) instead of
        using the model's.
    search_limit_km
        Upper end of the search (> 0).
    tolerance_km
        Width of the final bracket.
    **kw
        Passed to :func:`analytic_key_rate` (``decoys``, ``cv``).

    Returns
    -------
    float or None
        The distance where the rate drops to zero (0.0 if there is no key even at 0 km);
        ``None`` for ``plob``, which is positive at every finite distance.

    Raises
    ------
    SimulationError
        If the rate is still positive at ``search_limit_km`` (e.g. a lossless fibre).
    ConfigError
        For an unknown protocol or a source that does not fit it.

    Examples
    --------
    >>> from qkdtwin.qkd.model import build_link_model
    >>> d = max_distance("decoy-bb84", build_link_model("decoy-bb84", 0.0, "gys"))
    >>> 130 < d < 145
    True

    Notes
    -----
    Every rate here is non-increasing in distance, so the transition from positive to zero
    rate is found by bisection on the sign of the (clipped) rate, ~25 evaluations.
    """
    name = canonical_protocol(protocol)
    if name == "plob":
        return None
    limit = v.in_range("search_limit_km", search_limit_km, 0.0, None, low_open=True)
    tol = v.in_range("tolerance_km", tolerance_km, 0.0, None, low_open=True)
    decoys = str(kw.get("decoys", "vacuum+weak"))
    cv = kw.get("cv")
    if cv is not None and not isinstance(cv, CvParameters):
        raise ConfigError("cv must be a CvParameters", field="cv", value=cv)
    unknown = set(kw) - {"decoys", "cv"}
    if unknown:
        raise ConfigError(
            f"unexpected keyword arguments {sorted(unknown)}",
            field="kw",
            value=sorted(unknown),
            allowed="decoys, cv",
        )

    def positive(d: float) -> bool:
        m = model.with_distance(d)
        if optimize_mu:
            m = _with_mu(
                m,
                optimal_mu(name, m, decoys=decoys),
                name == "decoy-bb84" and decoys == "vacuum+weak",
            )
        return analytic_key_rate(name, m, decoys=decoys, cv=cv).rate_per_pulse > 0.0

    if name == "cv-gg02":
        # the GG02 formula is computed down to GG02_MIN_TRANSMITTANCE only
        reach = gg02_range_km(model)
        if reach < limit:
            limit = reach
            if positive(limit):
                raise SimulationError(
                    f"cv-gg02 still has a positive key rate at {limit:.0f} km, where the GG02 "
                    f"model's numerical range ends (transmittance {GG02_MIN_TRANSMITTANCE:g}); "
                    "with constant input-referred excess noise the reach is set by xi and beta "
                    "(e.g. xi = 0.03 ends it before 200 km)"
                )
    if not positive(0.0):
        return 0.0
    if positive(limit):
        raise SimulationError(
            f"{name} still has a positive key rate at {limit:g} km; raise search_limit_km"
        )
    lo, hi = 0.0, limit
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if positive(mid):
            lo = mid
        else:
            hi = mid
    return lo
