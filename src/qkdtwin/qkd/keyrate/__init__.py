"""Analytic, asymptotic secret-key rates of the protocols qkdtwin simulates, and the PLOB bound.

Two layers live here:

* **formulas** — plain vectorised functions of the observables (gains, error rates) or of the
  channel parameters, each following one published analysis: the Lo-Ma-Chen channel model
  of weak coherent BB84 (:func:`wcp_gain`, :func:`wcp_qber`, :func:`photon_yield`,
  :func:`photon_error`), the GLLP rate with and without decoy states (:func:`gllp_rate`,
  :func:`gllp_no_decoy_rate`), the vacuum + weak decoy bounds of Ma-Qi-Zhao-Lo
  (:func:`vacuum_weak_decoy_bounds`), Shor-Preskill (:func:`shor_preskill_rate`), SARG04
  with single- and two-photon key (:func:`sarg04_expected`, :func:`sarg04_rate`), BBM92 with
  an SPDC source (:func:`bbm92_expected`, :func:`bbm92_rate`), Gaussian-modulated
  coherent-state CV-QKD (:func:`gg02_rate`) and the repeaterless bound (:func:`plob_bound`);
* **recipes** over a :class:`~qkdtwin.qkd.model.LinkModel` — :func:`analytic_key_rate`,
  :func:`max_distance` and :func:`optimal_mu` — which pick the right formula for a protocol
  name and feed it the link's parameters.

Units: rates are secret bits per pulse (per symbol for CV-QKD, per channel use for PLOB);
``rate_bps`` multiplies by the repetition rate. Every rate called a *rate* below is clipped
at zero. All results are asymptotic (infinitely long keys); the decoy-state rates are per
*signal* pulse, the asymptotic convention of Lo-Ma-Chen in which decoy pulses are a vanishing
fraction of the pulses sent.

The package re-exports every name below; the modules hold:

* :mod:`~qkdtwin.qkd.keyrate.common` — argument checks and :func:`binary_entropy`;
* :mod:`~qkdtwin.qkd.keyrate.bounds` — :func:`plob_bound`;
* :mod:`~qkdtwin.qkd.keyrate.bb84` — weak coherent and decoy-state BB84 (Lo-Ma-Chen, GLLP,
  Ma-Qi-Zhao-Lo, Shor-Preskill);
* :mod:`~qkdtwin.qkd.keyrate.sarg04` — SARG04 (Fung-Tamaki-Lo);
* :mod:`~qkdtwin.qkd.keyrate.bbm92` — BBM92 / E91 with an SPDC source (Ma-Fung-Lo);
* :mod:`~qkdtwin.qkd.keyrate.gg02` — CV-QKD (GG02) and its optimal modulation variance;
* :mod:`~qkdtwin.qkd.keyrate.dispatch` — :func:`analytic_key_rate` and :class:`KeyRate`;
* :mod:`~qkdtwin.qkd.keyrate.optimize` — :func:`optimal_mu`, :func:`max_distance`,
  :func:`gg02_range_km`.

The package needs :class:`~qkdtwin.qkd.model.LinkModel` for annotations only and does not
import :mod:`qkdtwin.qkd.model` at run time; :func:`~qkdtwin.qkd.model.build_link_model`
imports the recipes from here.

Derivations, assumptions and the equations each function follows are collected in
``docs/qkd.md`` (section "Analytic key rates").
"""

from __future__ import annotations

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
from qkdtwin.qkd.keyrate.common import FloatOrArray as FloatOrArray
from qkdtwin.qkd.keyrate.common import binary_entropy
from qkdtwin.qkd.keyrate.dispatch import KeyRate, analytic_key_rate
from qkdtwin.qkd.keyrate.gg02 import (
    GG02_MIN_TRANSMITTANCE,
    V_A_BOUNDS,
    CvParameters,
    gg02_rate,
    optimal_v_a,
)
from qkdtwin.qkd.keyrate.optimize import gg02_range_km, max_distance, optimal_mu
from qkdtwin.qkd.keyrate.sarg04 import (
    Sarg04Observables,
    sarg04_expected,
    sarg04_phase_error_bound,
    sarg04_rate,
)

__all__ = [
    "GG02_MIN_TRANSMITTANCE",
    "V_A_BOUNDS",
    "CvParameters",
    "KeyRate",
    "Sarg04Observables",
    "analytic_key_rate",
    "bbm92_expected",
    "bbm92_rate",
    "binary_entropy",
    "gg02_range_km",
    "gg02_rate",
    "gllp_no_decoy_rate",
    "gllp_rate",
    "max_distance",
    "optimal_mu",
    "optimal_v_a",
    "photon_error",
    "photon_yield",
    "plob_bound",
    "sarg04_expected",
    "sarg04_phase_error_bound",
    "sarg04_rate",
    "shor_preskill_rate",
    "vacuum_weak_decoy_bounds",
    "wcp_gain",
    "wcp_qber",
]
