"""The analytic key rate of a protocol over a link: :func:`analytic_key_rate` and :class:`KeyRate`.

:func:`analytic_key_rate` picks the formula for a protocol name and feeds it the parameters of
a :class:`~qkdtwin.qkd.model.LinkModel`: ``bb84`` — GLLP without decoys, or Shor-Preskill for
a single-photon source (:mod:`~qkdtwin.qkd.keyrate.bb84`); ``decoy-bb84`` — GLLP with
infinitely many or vacuum + weak decoys; ``sarg04`` (:mod:`~qkdtwin.qkd.keyrate.sarg04`);
``bbm92``/``e91`` (:mod:`~qkdtwin.qkd.keyrate.bbm92`); ``cv-gg02``
(:mod:`~qkdtwin.qkd.keyrate.gg02`); ``plob`` (:mod:`~qkdtwin.qkd.keyrate.bounds`).

Units: :attr:`KeyRate.rate_per_pulse` is secret bits per (signal) pulse (per symbol for
``cv-gg02``, per channel use for ``plob``), :attr:`KeyRate.rate_bps` that times the link's
repetition rate in bit/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.keyrate.bb84 import (
    gllp_no_decoy_rate,
    gllp_rate,
    photon_error,
    photon_yield,
    shor_preskill_rate,
    vacuum_weak_decoy_bounds,
    wcp_gain,
    wcp_qber,
)
from qkdtwin.qkd.keyrate.bbm92 import bbm92_expected, bbm92_rate
from qkdtwin.qkd.keyrate.bounds import plob_bound
from qkdtwin.qkd.keyrate.gg02 import CvParameters, gg02_rate, optimal_v_a
from qkdtwin.qkd.keyrate.sarg04 import _sarg04_fock, sarg04_expected, sarg04_rate
from qkdtwin.qkd.protocols import canonical_protocol
from qkdtwin.qkd.source import EntangledPairSource, SinglePhotonSource, WeakCoherentSource

if TYPE_CHECKING:  # annotations only: model imports this package, not the other way round
    from qkdtwin.qkd.model import LinkModel

__all__ = [
    "KeyRate",
    "analytic_key_rate",
]


@dataclass(frozen=True)
class KeyRate:
    """The analytic key rate of one protocol over one link.

    Attributes
    ----------
    protocol
        Canonical protocol name.
    distance_km
        Fibre length of the link.
    rate_per_pulse
        Secret bits per (signal) pulse, per symbol for ``cv-gg02``, per channel use for
        ``plob``.
    rate_bps
        ``rate_per_pulse`` times the link's repetition rate, bit/s.
    gain
        The signal gain behind the rate (sifted, conclusive gain for ``sarg04``; coincidence
        gain for ``bbm92``/``e91``), ``None`` for ``cv-gg02`` and ``plob``.
    qber
        The QBER behind the rate, ``None`` for ``cv-gg02`` and ``plob``.
    v_a
        ``cv-gg02`` only: the modulation variance used, SNU (the optimum when the
        parameters ask for ``"optimal"``); ``None`` otherwise.
    """

    protocol: str
    distance_km: float
    rate_per_pulse: float
    rate_bps: float
    gain: float | None
    qber: float | None
    v_a: float | None = None


_DECOY_METHODS = ("infinite", "vacuum+weak")


def _wcp(protocol: str, model: LinkModel) -> WeakCoherentSource:
    if not isinstance(model.source, WeakCoherentSource):
        raise ConfigError(
            f"{protocol} needs a weak coherent source, got {type(model.source).__name__}",
            field="source",
            value=type(model.source).__name__,
            allowed="WeakCoherentSource",
        )
    return model.source


def _prepare_measure_params(model: LinkModel) -> tuple[float, float, float, float]:
    det = model.detector
    return model.eta, det.background_yield, det.misalignment, model.ec_efficiency


def _bb84(model: LinkModel) -> tuple[float, float, float]:
    eta, y0, e_d, f = _prepare_measure_params(model)
    src = model.source
    if isinstance(src, SinglePhotonSource):
        # one photon with probability p_src, else vacuum: Y = 1 - (1 - Y0)(1 - p_src eta)
        miss = 1.0 - src.efficiency * eta
        q = 1.0 - (1.0 - y0) * miss
        e = (0.5 * y0 * miss + e_d * (1.0 - miss)) / q if q > 0 else 0.5
        return float(shor_preskill_rate(q, e, f)), q, e
    wcp = _wcp("bb84", model)
    q = float(wcp_gain(eta, wcp.mu, y0))
    e = float(wcp_qber(eta, wcp.mu, y0, e_d))
    return float(gllp_no_decoy_rate(wcp.mu, q, e, f)), q, e


def _decoy_bb84(model: LinkModel, decoys: str) -> tuple[float, float, float]:
    eta, y0, e_d, f = _prepare_measure_params(model)
    wcp = _wcp("decoy-bb84", model)
    mu = wcp.mu
    q = float(wcp_gain(eta, mu, y0))
    e = float(wcp_qber(eta, mu, y0, e_d))
    if decoys == "infinite":
        y1 = float(photon_yield(1, eta, y0))
        e1 = float(photon_error(1, eta, y0, e_d))
    else:
        weak = [d for d in wcp.decoys if d > 0.0]
        if not weak:
            raise ConfigError(
                "the vacuum+weak decoy analysis needs a weak decoy intensity > 0",
                field="decoys",
                value=wcp.decoys,
                allowed="e.g. (0.1, 0.0)",
            )
        nu = weak[0]
        # The vacuum decoy measures Y0 directly; without one the calibrated Y0 of the model
        # is used as if it had been measured.
        q_nu = float(wcp_gain(eta, nu, y0))
        e_nu = float(wcp_qber(eta, nu, y0, e_d))
        y1, e1 = vacuum_weak_decoy_bounds(mu, nu, q, q_nu, e_nu, y0)
        if y1 <= 0.0:
            return 0.0, q, e
    q1 = y1 * mu * math.exp(-mu)
    return float(gllp_rate(q, e, q1, e1, f)), q, e


def _sarg04(model: LinkModel) -> tuple[float, float, float]:
    eta, y0, e_d, f = _prepare_measure_params(model)
    src = model.source
    if isinstance(src, SinglePhotonSource):
        pd = 1.0 - math.sqrt(1.0 - y0)
        a0, b0 = _sarg04_fock(0, np.asarray(eta), np.asarray(pd), np.asarray(e_d))
        a1, b1 = _sarg04_fock(1, np.asarray(eta), np.asarray(pd), np.asarray(e_d))
        p1 = src.efficiency
        q1 = p1 * float(a1 + b1) / 2.0
        e1 = float(b1 / (a1 + b1)) if float(a1 + b1) > 0 else 0.5
        q = q1 + (1.0 - p1) * float(a0 + b0) / 2.0
        e = ((1.0 - p1) * float(b0) / 2.0 + p1 * float(b1) / 2.0) / q if q > 0 else 0.5
        return float(sarg04_rate(q, e, q1, e1, 0.0, 0.0, f)), q, e
    wcp = _wcp("sarg04", model)
    obs = sarg04_expected(eta, wcp.mu, y0, e_d)
    return float(sarg04_rate(*obs, f)), float(obs.gain), float(obs.qber)


def _bbm92(protocol: str, model: LinkModel) -> tuple[float, float, float]:
    src = model.source
    if not isinstance(src, EntangledPairSource):
        raise ConfigError(
            f"{protocol} needs an entangled pair source, got {type(src).__name__}",
            field="source",
            value=type(src).__name__,
            allowed="EntangledPairSource",
        )
    det = model.detector
    t_a, t_b = model.arm_transmittances()
    y0 = det.background_yield
    q, e = bbm92_expected(
        t_a * det.efficiency, t_b * det.efficiency, src.mu, y0, y0, det.misalignment
    )
    # BBM92: both sides pick 0 or 45 degrees, half the coincidences have matching settings.
    # E91: three angles per side, only (22.5, 22.5) and (45, 45) make key: 2 of 9 pairs.
    sifting = 0.5 if protocol == "bbm92" else 2.0 / 9.0
    return float(bbm92_rate(q, e, model.ec_efficiency, sifting=sifting)), float(q), float(e)


def analytic_key_rate(
    protocol: str,
    model: LinkModel,
    *,
    decoys: str = "vacuum+weak",
    cv: CvParameters | None = None,
) -> KeyRate:
    r"""Asymptotic secret-key rate of ``protocol`` over ``model``, from the matching formula.

    Parameters
    ----------
    protocol
        ``bb84``, ``decoy-bb84``, ``sarg04``, ``bbm92``, ``e91``, ``cv-gg02`` or ``plob``
        (aliases accepted, see :func:`~qkdtwin.qkd.protocols.canonical_protocol`).
    model
        The link. Prepare-and-measure protocols use ``model.eta`` (channel times Bob's
        detection efficiency), ``model.detector.background_yield`` (:math:`Y_0`),
        ``model.detector.misalignment`` (:math:`e_d`), ``model.ec_efficiency`` and the source
        intensity ``model.source.mu``.
    decoys
        ``decoy-bb84`` only: ``"vacuum+weak"`` (default) bounds :math:`Y_1, e_1` with the
        first non-zero decoy intensity of ``model.source.decoys`` as the weak decoy and the
        vacuum decoy's gain as :math:`Y_0` (without a vacuum decoy, the model's calibrated
        :math:`Y_0` is used as if measured); ``"infinite"`` uses the true single-photon
        yield and error rate.
    cv
        ``cv-gg02`` only: the CV system; defaults to :class:`CvParameters` (Lodewyck 2007
        hardware, modulation variance optimised at this distance).
        The transmittance is ``model.transmittance``; the single-photon detector of the model
        plays no role.

    Returns
    -------
    KeyRate
        Rate per pulse and in bit/s (``rate_per_pulse * model.repetition_rate_hz``), with the
        gain and QBER behind it.

    Raises
    ------
    UnknownNameError
        If the protocol is unknown.
    ConfigError
        If the source does not fit the protocol (e.g. ``decoy-bb84`` without a weak coherent
        source, ``bbm92`` without a pair source) or ``decoys`` is not a known method.

    Examples
    --------
    >>> from qkdtwin.qkd.model import build_link_model
    >>> kr = analytic_key_rate("decoy-bb84", build_link_model("decoy-bb84", 50.0, "gys"))
    >>> kr.rate_per_pulse > 0, kr.protocol
    (True, 'decoy-bb84')

    Notes
    -----
    Formulas: ``bb84`` — GLLP without decoys (:func:`gllp_no_decoy_rate`), or Shor-Preskill
    (:func:`shor_preskill_rate`) for a :class:`SinglePhotonSource` of efficiency
    :math:`p`, whose gain is :math:`1 - (1-Y_0)(1 - p\eta)`; ``decoy-bb84`` —
    :func:`gllp_rate` with :math:`Q_1 = Y_1\mu e^{-\mu}`; ``sarg04`` — infinitely many
    decoys, :func:`sarg04_rate` with the true one- and two-photon observables;
    ``bbm92``/``e91`` — :func:`bbm92_rate` with arms ``model.arm_transmittances()`` times the
    detector efficiency, sifting 1/2 for BBM92 and 2/9 for E91 (two of its nine
    setting pairs make key; the other seven estimate the CHSH value); ``cv-gg02`` —
    :func:`gg02_rate`; ``plob`` — :func:`plob_bound` of the channel transmittance.
    Decoy rates are per signal pulse (decoys a vanishing fraction, Lo-Ma-Chen's convention).
    """
    name = canonical_protocol(protocol)
    if decoys not in _DECOY_METHODS:
        raise ConfigError(
            f"decoys must be one of {', '.join(_DECOY_METHODS)}, got {decoys!r}",
            field="decoys",
            value=decoys,
            allowed=", ".join(_DECOY_METHODS),
        )
    gain: float | None
    qber: float | None
    if name == "bb84":
        rate, gain, qber = _bb84(model)
    elif name == "decoy-bb84":
        rate, gain, qber = _decoy_bb84(model, decoys)
    elif name == "sarg04":
        rate, gain, qber = _sarg04(model)
    elif name in ("bbm92", "e91"):
        rate, gain, qber = _bbm92(name, model)
    elif name == "cv-gg02":
        p = cv if cv is not None else CvParameters()
        if p.v_a == "optimal":
            v_a, rate = optimal_v_a(model.transmittance, p)
        else:
            v_a = float(p.v_a)
            rate = float(
                gg02_rate(model.transmittance, v_a, p.xi, p.eta_det, p.v_el, p.beta, p.detection)
            )
        gain = qber = None
    else:  # plob
        rate = float(plob_bound(model.transmittance))
        gain = qber = None
    return KeyRate(
        protocol=name,
        distance_km=model.distance_km,
        rate_per_pulse=rate,
        rate_bps=rate * model.repetition_rate_hz,
        gain=gain,
        qber=qber,
        v_a=v_a if name == "cv-gg02" else None,
    )
