r"""Physical layer of one decoy-state BB84 QKD module of the plant: the exact law of its counts.

The plant is the stand-in for a real network; the twin sees it only through telemetry. Each
QKD module reports, once per reporting interval, per intensity class ``k`` (signal first, then
the decoys): the pulses ``sent``, the pulses with at least one click at Bob (``detected``), the
detected pulses whose bases matched (``sifted``) and the bit ``errors`` among them, plus the
mean photocurrent of Bob's detectors (the detector monitor). This module gives

* :class:`TrueLinkParams` — the hidden true parameters of a link (fibre, detectors, source);
* :class:`PlantAttack` and :class:`MonitorParams` — what Eve does and what the monitor sees;
* :func:`interval_law` — the per-pulse probabilities of every count (:class:`IntervalLaw`);
* :func:`draw_interval` / :func:`draw_intervals` — exact draws of one / many intervals;
* :func:`module_secret_bits` — the key the module itself distils from one interval's counts.

Why drawing counts is exact
---------------------------
The plant does **not** model detector dead time or afterpulsing. Without them every pulse is
independent of every other and identically distributed: its intensity class, bases, bit and
photon number are fresh random choices, and its detection outcome depends on nothing else. A
block of ``N`` i.i.d. pulses, each falling into one of finitely many categories
(class ``k`` x {no click, click with mismatched bases, sifted without error, sifted error}),
has a count vector that is exactly multinomial. The nested draws

.. code-block:: text

    sent     ~ Multinomial(N, selection)
    detected ~ Binomial(sent_k, p_click_k)
    sifted   ~ Binomial(detected_k, p_sift_given_click_k)
    errors   ~ Binomial(sifted_k, p_err_given_sift_k)

are the chain-rule factorisation of that multinomial (given the parent count, the children are
binomial with the conditional probabilities), so they give *exactly* the law of the counts that
the pulse-by-pulse engine (:func:`qkdtwin.qkd.simulate_link`) produces for the same link, at a
cost independent of ``N``. ``eve_known ~ Binomial(sifted_k, eve_known_given_sift_k)`` has the
exact marginal law, but is drawn independently of ``errors`` given ``sifted`` (their small
correlation is not kept). With dead time or afterpulsing a click changes the following gates,
the pulses are no longer independent, and this factorisation no longer holds: such a link needs
the pulse engine.

Attacks
-------
``PlantAttack(kind, fraction=F)``; each pulse is attacked independently with probability ``F``
(for ``fiber-tap`` ``F`` is a power share instead):

* ``none`` — the honest channel: errors from misalignment and dark counts only.
* ``intercept-resend`` — Eve measures every photon of an attacked pulse in one random BB84
  basis and resends the same photon number in the state she found
  (:class:`qkdtwin.qkd.InterceptResend`): gain unchanged, sifted QBER up by about ``F / 4``.
* ``pns`` — attacked pulses get :class:`qkdtwin.qkd.PhotonNumberSplitting`: a QND
  photon-number measurement, one photon kept from every multi-photon pulse, the rest sent over
  a lossless line, single photons (and if needed some multi-photon pulses) blocked so that the
  attacked *signal* pulses have exactly the honest signal gain. Unattacked pulses are honest.
  Eve knows every forwarded multi-photon bit; the decoy gains betray her.
* ``fiber-tap`` — a tap removes the share ``F`` of the power: an extra loss of
  ``-10 log10(1 - F)`` dB; ``F = 1`` cuts the fibre (only dark counts remain). The tap is taken
  at Alice's output (the worst case) and Eve is assumed to keep the tapped photons in a
  quantum memory until the bases are announced (the beam-splitting attack): she knows a sifted
  bit whenever she captured at least one photon of that pulse. For Poisson light her photons
  are independent of Bob's, so ``eve_known_given_sift = 1 - exp(-mu_k F)``.
* ``detector-blinding`` — the naive blinding attack on a share ``F`` of the pulses: Bob's
  detectors are blinded (no dark counts); Eve measures with her own ideal detector (efficiency
  1, no dark counts) in a random basis and resends a bright faked state in her basis and bit.
  Bob's blinded detector clicks deterministically, in the detector of Eve's bit, iff Bob's
  basis equals Eve's, never otherwise. An attacked pulse clicks with probability
  ``(1 - exp(-mu_k)) / 2`` (vacuum pulses never) and its sifted bits have no error and are all
  known to Eve. The counts are grossly inconsistent with any honest channel.
* ``faked-state`` — the careful variant: Eve measures with a photon-number-resolving ideal
  detector in a random basis; for ``n`` photons she resends a faked state (in her basis and
  bit) with probability ``r_n = 2 Y_n``, deliberately flips the bit with probability ``e_n``
  (the honest sifted error rate of ``n``-photon pulses), and on vacuum pulses fakes "dark"
  clicks with probability ``2 Y_0`` and a random bit. A faked state clicks only when Bob's
  basis equals hers (probability 1/2), so every per-class click, sifting and error
  probability is exactly the honest one, while Eve knows every attacked sifted bit of a pulse
  with ``n >= 1`` photons. Feasible only where the honest yields ``Y_n <= 1/2`` for every
  photon number with non-negligible probability (see :func:`faked_state_strategy`); otherwise
  :func:`interval_law` raises :class:`~qkdtwin.errors.ConfigError`. Counts alone cannot reveal
  it; only the detector monitor can.

Detector monitor
----------------
Bob's detectors' mean photocurrent: baseline ``photocurrent_baseline_ua`` with per-sample
Gaussian noise ``photocurrent_noise_ua``; while blinded (``detector-blinding`` and
``faked-state``) the blinding light adds ``blinding_photocurrent_ua`` for the attacked time
share ``F``. The interval's reading is the mean of ``monitor_samples`` samples, clipped at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from scipy.special import xlog1py

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.qkd.attacks import PhotonNumberSplitting
from qkdtwin.qkd.channel import FiberChannel, db_to_transmittance
from qkdtwin.qkd.detector import ThresholdDetector
from qkdtwin.qkd.keyrate import gllp_rate, vacuum_weak_decoy_bounds
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.presets import get_preset
from qkdtwin.qkd.source import WeakCoherentSource

__all__ = [
    "ATTACK_KINDS",
    "FAKED_STATE_TOLERANCE",
    "FakedStateStrategy",
    "IntervalCounts",
    "IntervalLaw",
    "IntervalSeries",
    "MonitorParams",
    "PlantAttack",
    "TrueLinkParams",
    "draw_interval",
    "draw_intervals",
    "faked_state_strategy",
    "interval_law",
    "module_secret_bits",
]

#: Attack kinds the plant can stage.
ATTACK_KINDS: tuple[str, ...] = (
    "none",
    "intercept-resend",
    "pns",
    "fiber-tap",
    "detector-blinding",
    "faked-state",
)

#: Attack kinds that blind Bob's detectors (seen by the detector monitor).
_BLINDING_KINDS = ("detector-blinding", "faked-state")

#: Largest probability per pulse of photon numbers a faked-state attack cannot imitate
#: (honest ``Y_n > 1/2``) before :func:`interval_law` calls the attack infeasible.
FAKED_STATE_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- true parameters
@dataclass(frozen=True)
class TrueLinkParams:
    """Hidden true physical parameters of one decoy-state BB84 link of the plant.

    Defaults are the GYS parameter set (:data:`qkdtwin.qkd.presets.GYS`) of Lo, Ma and Chen.

    Parameters
    ----------
    length_km
        Fibre length in km (>= 0).
    attenuation_db_per_km
        Fibre attenuation alpha in dB/km (>= 0).
    extra_loss_db
        Extra loss in dB outside the fibre's alpha * L: splices and connectors; drifts and taps
        add here (>= 0).
    detector_efficiency
        Bob's detection efficiency including his optics, in (0, 1].
    dark_count_prob
        Dark-count probability per gate of *one* of Bob's two detectors, in [0, 1). The GYS
        background yield ``Y0 = 1.7e-6`` of the pair gives ``1 - sqrt(1 - Y0) = 8.5e-7``.
    misalignment
        Probability ``e_d`` that a detected photon of a matching basis hits the wrong
        detector, in [0, 0.5].
    mu
        Mean photon number of the signal pulses (> 0).
    decoys
        Mean photon numbers of the decoy classes, each in [0, ``mu``).
    probabilities
        Probability of each class, in the order ``(mu, *decoys)``; ``None`` = equal.
    repetition_rate_hz
        Pulse repetition rate in Hz (> 0).
    ec_efficiency
        Error-correction inefficiency ``f >= 1`` of the module.
    """

    length_km: float
    attenuation_db_per_km: float = 0.21
    extra_loss_db: float = 0.0
    detector_efficiency: float = 0.045
    dark_count_prob: float = 8.5e-7
    misalignment: float = 0.033
    mu: float = 0.48
    decoys: tuple[float, ...] = (0.1, 0.0)
    probabilities: tuple[float, ...] | None = None
    repetition_rate_hz: float = 2.0e6
    ec_efficiency: float = 1.22

    def __post_init__(self) -> None:
        v.in_range("length_km", self.length_km, 0.0)
        v.in_range("attenuation_db_per_km", self.attenuation_db_per_km, 0.0)
        v.in_range("extra_loss_db", self.extra_loss_db, 0.0)
        v.in_range("detector_efficiency", self.detector_efficiency, 0.0, 1.0, low_open=True)
        v.in_range("dark_count_prob", self.dark_count_prob, 0.0, 1.0, high_open=True)
        v.in_range("misalignment", self.misalignment, 0.0, 0.5)
        v.in_range("mu", self.mu, 0.0, None, low_open=True)
        v.in_range("repetition_rate_hz", self.repetition_rate_hz, 0.0, None, low_open=True)
        v.in_range("ec_efficiency", self.ec_efficiency, 1.0)
        try:
            decoys = tuple(float(d) for d in self.decoys)
        except (TypeError, ValueError):
            raise ConfigError(
                f"decoys must be a sequence of numbers, got {self.decoys!r}",
                field="decoys",
                value=self.decoys,
                allowed=f"each in [0, {self.mu:g})",
            ) from None
        for d in decoys:
            v.in_range("decoys", d, 0.0, self.mu, high_open=True)
        object.__setattr__(self, "decoys", decoys)
        if self.probabilities is not None:
            k = 1 + len(decoys)
            try:
                p = np.asarray(self.probabilities, dtype=np.float64)
            except (TypeError, ValueError):
                p = np.full(0, np.nan)
            if p.shape != (k,) or not np.all(np.isfinite(p)):
                raise ConfigError(
                    f"probabilities needs {k} numbers (signal + {k - 1} decoys), "
                    f"got {self.probabilities!r}",
                    field="probabilities",
                    value=self.probabilities,
                    allowed=f"{k} probabilities summing to 1",
                )
            if np.any(p < 0) or not np.isclose(p.sum(), 1.0, rtol=0.0, atol=1e-9):
                raise ConfigError(
                    f"probabilities must be >= 0 and sum to 1, got {self.probabilities!r}",
                    field="probabilities",
                    value=self.probabilities,
                    allowed="simplex",
                )
            object.__setattr__(self, "probabilities", tuple(float(x) for x in p))

    # ---------------------------------------------------------------- derived quantities
    @property
    def channel_loss_db(self) -> float:
        """Channel loss ``alpha * L + extra_loss_db`` in dB (detector not included)."""
        return self.attenuation_db_per_km * self.length_km + self.extra_loss_db

    @property
    def channel_transmittance(self) -> float:
        """Channel power transmittance ``10^(-loss/10)``, dimensionless in (0, 1]."""
        return db_to_transmittance(self.channel_loss_db)

    @property
    def eta(self) -> float:
        """Overall per-photon detection probability: channel transmittance x efficiency."""
        return self.channel_transmittance * self.detector_efficiency

    @property
    def background_yield(self) -> float:
        """``Y0 = 1 - (1 - p_d)^2``: probability per gate that either detector fires in the dark."""
        return 1.0 - (1.0 - self.dark_count_prob) ** 2

    @property
    def intensities(self) -> NDArray[np.float64]:
        """Mean photon number of every class, signal first, shape ``(K,)``."""
        return np.array((self.mu, *self.decoys), dtype=np.float64)

    @property
    def selection(self) -> NDArray[np.float64]:
        """Probability that a pulse belongs to each class, shape ``(K,)``, sums to 1."""
        k = 1 + len(self.decoys)
        if self.probabilities is None:
            return np.full(k, 1.0 / k)
        return np.array(self.probabilities, dtype=np.float64)

    # ---------------------------------------------------------------- conversions
    def link_model(self) -> LinkModel:
        """Return the :class:`~qkdtwin.qkd.LinkModel` with exactly these parameters.

        For the pulse engine and the analytic key rates of :mod:`qkdtwin.qkd`.
        """
        return LinkModel(
            source=WeakCoherentSource(self.mu, self.decoys, self.probabilities),
            channel=FiberChannel(
                self.length_km, self.attenuation_db_per_km, insertion_loss_db=self.extra_loss_db
            ),
            detector=ThresholdDetector(
                self.detector_efficiency, self.dark_count_prob, self.misalignment
            ),
            repetition_rate_hz=self.repetition_rate_hz,
            ec_efficiency=self.ec_efficiency,
        )

    def with_extra_loss(self, db: float) -> TrueLinkParams:
        """Return a copy with ``db`` more extra loss (dB; negative removes loss, total >= 0)."""
        v.finite("db", db)
        return replace(self, extra_loss_db=self.extra_loss_db + float(db))

    @classmethod
    def from_preset(cls, name: str, length_km: float, **overrides: Any) -> TrueLinkParams:
        """Build the parameters of a published preset (``"gys"``, ``"boaron2018"``).

        The preset's background yield ``Y0`` becomes ``dark_count_prob = 1 - sqrt(1 - Y0)``
        and its insertion loss ``extra_loss_db``. ``overrides`` set any other field by name.

        Raises
        ------
        UnknownNameError
            For an unknown preset.
        ConfigError
            For an override that is not a field of :class:`TrueLinkParams`, or a bad value.
        """
        p = get_preset(name)
        values: dict[str, Any] = {
            "length_km": length_km,
            "attenuation_db_per_km": p.attenuation_db_per_km,
            "extra_loss_db": p.insertion_loss_db,
            "detector_efficiency": p.detector_efficiency,
            "dark_count_prob": 1.0 - math.sqrt(1.0 - p.background_yield),
            "misalignment": p.misalignment,
            "mu": p.mu,
            "decoys": p.decoys,
            "repetition_rate_hz": p.repetition_rate_hz,
            "ec_efficiency": p.ec_efficiency,
        }
        known = {f.name for f in fields(cls)}
        for key in overrides:
            if key not in known or key == "length_km":
                allowed = ", ".join(sorted(known - {"length_km"}))
                raise ConfigError(
                    f"unknown link parameter {key!r} (known: {allowed})",
                    field=key,
                    value=overrides[key],
                    allowed=allowed,
                )
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------- attack, monitor
@dataclass(frozen=True)
class PlantAttack:
    """What Eve does on a link; see the module docstring for the exact semantics of each kind.

    Parameters
    ----------
    kind
        One of :data:`ATTACK_KINDS`.
    fraction
        ``F`` in [0, 1]: the probability that a pulse is attacked (``intercept-resend``,
        ``pns``, ``detector-blinding``, ``faked-state``; for the last two also the share of
        time Bob's detectors are blinded), or the share of power tapped (``fiber-tap``).
        Ignored for ``none``.
    """

    kind: str = "none"
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            allowed = ", ".join(ATTACK_KINDS)
            raise UnknownNameError(
                f"unknown attack kind {self.kind!r} (known: {allowed})",
                field="kind",
                value=self.kind,
                allowed=allowed,
            )
        object.__setattr__(self, "fraction", v.probability("fraction", self.fraction))

    @property
    def blinded_share(self) -> float:
        """Share of time Bob's detectors are blinded (0 unless a blinding attack)."""
        return self.fraction if self.kind in _BLINDING_KINDS else 0.0

    def describe(self) -> str:
        """Short label for reports, e.g. ``pns:0.1``."""
        return "none" if self.kind == "none" else f"{self.kind}:{self.fraction:g}"


@dataclass(frozen=True)
class MonitorParams:
    """Bob's detector monitor: mean photocurrent of his detectors.

    Parameters
    ----------
    photocurrent_baseline_ua
        Mean photocurrent of unblinded detectors, µA (>= 0).
    photocurrent_noise_ua
        Standard deviation of one monitor sample, µA (>= 0).
    blinding_photocurrent_ua
        Extra mean photocurrent while the detectors are blinded, µA (>= 0); it is weighted by
        the blinded time share ``F``.
    """

    photocurrent_baseline_ua: float = 0.10
    photocurrent_noise_ua: float = 0.02
    blinding_photocurrent_ua: float = 50.0

    def __post_init__(self) -> None:
        v.in_range("photocurrent_baseline_ua", self.photocurrent_baseline_ua, 0.0)
        v.in_range("photocurrent_noise_ua", self.photocurrent_noise_ua, 0.0)
        v.in_range("blinding_photocurrent_ua", self.blinding_photocurrent_ua, 0.0)


# --------------------------------------------------------------------------- the law
@dataclass(frozen=True, eq=False)
class IntervalLaw:
    """Per-pulse probabilities of the counts of one link, per intensity class.

    All arrays have shape ``(K,)`` (signal first) and are read-only.

    Attributes
    ----------
    intensities
        Mean photon number of each class.
    selection
        Probability that a pulse belongs to each class.
    p_click
        Probability that a pulse of the class gives at least one click at Bob.
    p_sift_given_click
        Probability that Alice's and Bob's bases match, given a click.
    p_err_given_sift
        Probability that Bob's bit differs from Alice's, given a sifted click (0 where no
        click is possible).
    eve_known_given_sift
        Share of sifted bits whose value Eve knows exactly.
    photocurrent_mean_ua
        Mean photocurrent of Bob's detectors over an interval, µA.
    photocurrent_noise_ua
        Standard deviation of one photocurrent sample, µA.
    """

    intensities: NDArray[np.float64]
    selection: NDArray[np.float64]
    p_click: NDArray[np.float64]
    p_sift_given_click: NDArray[np.float64]
    p_err_given_sift: NDArray[np.float64]
    eve_known_given_sift: NDArray[np.float64]
    photocurrent_mean_ua: float
    photocurrent_noise_ua: float

    def __post_init__(self) -> None:
        names = (
            "intensities",
            "selection",
            "p_click",
            "p_sift_given_click",
            "p_err_given_sift",
            "eve_known_given_sift",
        )
        shape = np.shape(self.intensities)
        for name in names:
            a = np.array(getattr(self, name), dtype=np.float64)
            if a.ndim != 1 or a.shape != shape:
                raise ConfigError(
                    f"{name} must have the shape {shape} of intensities, got {a.shape}",
                    field=name,
                    value=a.shape,
                    allowed=str(shape),
                )
            if name != "intensities" and (np.any(a < 0.0) or np.any(a > 1.0)):
                raise ConfigError(
                    f"{name} must hold probabilities in [0, 1]",
                    field=name,
                    value=a.tolist(),
                    allowed="[0, 1]",
                )
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        v.in_range("photocurrent_mean_ua", self.photocurrent_mean_ua, 0.0)
        v.in_range("photocurrent_noise_ua", self.photocurrent_noise_ua, 0.0)

    @property
    def n_classes(self) -> int:
        """Number of intensity classes ``K``."""
        return int(self.intensities.size)

    @property
    def gain(self) -> NDArray[np.float64]:
        """Gain ``Q_k``: alias of :attr:`p_click`."""
        return self.p_click

    @property
    def qber(self) -> NDArray[np.float64]:
        """Expected sifted QBER ``E_k``: alias of :attr:`p_err_given_sift`."""
        return self.p_err_given_sift


def _photon_cutoff(mu_max: float) -> int:
    """Largest photon number enumerated (as the pulse engine): Poisson tail beyond < 1e-17."""
    return int(mu_max + 12.0 * math.sqrt(mu_max + 1.0) + 12.0)


def _fock_terms(
    n: NDArray[np.int64], t: float | NDArray[np.float64], pd: float, ed: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Click and sifted-error probabilities for ``n`` photons reaching Bob's detectors.

    Each photon is detected with probability ``t``; with matching bases it lands in the right
    detector with probability ``1 - ed``, else in the wrong one; each detector also fires on
    its own with probability ``pd``; a double click is a random bit.

    Returns
    -------
    tuple of ndarray
        ``q_n``: P(at least one click); ``eps_n``: P(click and wrong bit | matching bases).
        Computed with ``expm1``/``log1p`` so tiny probabilities keep full relative precision.
    """
    nf = n.astype(np.float64)
    log_dark = math.log1p(-pd)
    t_arr = np.asarray(t, dtype=np.float64)
    # P(no click) = (1-pd)^2 (1-t)^n; P(right detector silent) = (1-pd)(1-t(1-ed))^n, ...
    q = -np.expm1(2.0 * log_dark + xlog1py(nf, -t_arr))
    fire_right = -np.expm1(log_dark + xlog1py(nf, -t_arr * (1.0 - ed)))
    fire_wrong = -np.expm1(log_dark + xlog1py(nf, -t_arr * ed))
    # wrong only + both / 2 = (q - fire_right) + (fire_right + fire_wrong - q) / 2
    eps = 0.5 * (q + fire_wrong - fire_right)
    return np.asarray(q, dtype=np.float64), np.clip(eps, 0.0, None)


class FakedStateStrategy(NamedTuple):
    """Eve's per-photon-number choices in the faked-state attack (:func:`faked_state_strategy`).

    Attributes
    ----------
    photon_number
        ``n = 0, 1, ..., n_max``.
    honest_yield
        ``Y_n``: honest probability of a click given ``n`` photons sent.
    resend_prob
        ``r_n = min(2 Y_n, 1)``: probability that Eve sends a faked state after seeing ``n``.
    flip_prob
        Probability that the faked state carries the opposite of the bit Eve measured (``e_n``
        for ``n >= 1``); for ``n = 0`` Eve has no bit and picks one at random (1/2).
    infeasible_mass
        Largest probability, over the intensity classes, of a photon number with
        ``Y_n > 1/2`` (which she cannot imitate): 0 when the attack is exactly undetectable.
    """

    photon_number: NDArray[np.int64]
    honest_yield: NDArray[np.float64]
    resend_prob: NDArray[np.float64]
    flip_prob: NDArray[np.float64]
    infeasible_mass: float


def _photon_pmf(params: TrueLinkParams) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    n = np.arange(_photon_cutoff(float(params.intensities.max())) + 1, dtype=np.int64)
    pmf = np.asarray(stats.poisson.pmf(n[np.newaxis, :], params.intensities[:, np.newaxis]))
    return n, pmf.astype(np.float64)


def faked_state_strategy(params: TrueLinkParams) -> FakedStateStrategy:
    """Eve's faked-state strategy that reproduces the honest count law of ``params``.

    A faked state only makes Bob click when his basis equals Eve's (probability 1/2), so to
    give ``n``-photon pulses their honest yield ``Y_n`` Eve must resend with probability
    ``2 Y_n``: feasible iff ``Y_n <= 1/2``. Given a sifted click her basis equals Alice's, so
    she knows Alice's bit and sets the honest error rate ``e_n`` by flipping deliberately.

    Parameters
    ----------
    params
        The true link.

    Returns
    -------
    FakedStateStrategy
    """
    n, pmf = _photon_pmf(params)
    q, eps = _fock_terms(n, params.eta, params.dark_count_prob, params.misalignment)
    flip = np.where(n == 0, 0.5, np.divide(eps, q, out=np.zeros_like(q), where=q > 0))
    infeasible = q > 0.5
    mass = float(pmf[:, infeasible].sum(axis=1).max()) if infeasible.any() else 0.0
    return FakedStateStrategy(n, q, np.minimum(2.0 * q, 1.0), flip, mass)


def interval_law(
    params: TrueLinkParams,
    attack: PlantAttack = PlantAttack(),
    monitor: MonitorParams = MonitorParams(),
) -> IntervalLaw:
    r"""Per-pulse probabilities of every count of one link under an attack.

    The probabilities are sums over the photon number ``n`` sent by Alice, with the same
    physics as the pulse engine (Poisson source, threshold detectors with independent dark
    counts ``p_d``, misalignment ``e_d``, double click = random bit). Honest, they equal the
    closed forms

    .. math::

        Q = 1 - (1-p_d)^2 e^{-\eta\mu},\quad
        P_c = 1 - (1-p_d) e^{-\eta\mu(1-e_d)},\quad P_w = 1 - (1-p_d) e^{-\eta\mu e_d},\quad
        E = P_w (1 - P_c/2) / Q,

    with ``p_sift_given_click = 1/2`` (Bob's click probability does not depend on the bases,
    for every attack here; under blinding a click needs Bob's basis to equal Eve's, which is
    independent of Alice's).

    Parameters
    ----------
    params
        The true link.
    attack
        Eve's action (default: none). See the module docstring.
    monitor
        Detector-monitor parameters (default :class:`MonitorParams`).

    Returns
    -------
    IntervalLaw

    Raises
    ------
    ConfigError
        For a ``faked-state`` attack on a link where some photon number with probability
        above ``FAKED_STATE_TOLERANCE`` (1e-12) per pulse has an honest yield above 1/2.
    """
    att, mon = attack, monitor
    n, pmf = _photon_pmf(params)
    pd, ed, eta = params.dark_count_prob, params.misalignment, params.eta
    f = att.fraction if att.kind != "none" else 0.0
    has_photon = n >= 1
    q_h, eps_h = _fock_terms(n, eta, pd, ed)
    kappa = np.zeros_like(q_h)  # P(click and Eve knows the bit | matching bases), per n
    if att.kind in ("none",):
        q, eps = q_h, eps_h
    elif att.kind == "intercept-resend":
        # attacked (F) and Eve's basis wrong (1/2): Bob's basis differs from the resent
        # state's, so a click is a coin toss; Eve's basis right: the honest state is resent
        q = q_h
        eps = np.where(has_photon, (1.0 - f / 2.0) * eps_h + (f / 2.0) * (q_h / 2.0), eps_h)
        kappa = np.where(has_photon, (f / 2.0) * q_h, 0.0)
    elif att.kind == "pns":
        eta_bob = params.detector_efficiency
        s1, sm = PhotonNumberSplitting.strategy(
            float(params.mu), params.channel_transmittance, eta_bob, pd
        )
        forwarded = np.maximum(n - 1, 0)
        forwarded[1] = 1
        s = np.full(n.shape, sm)
        s[0], s[1] = 1.0, s1
        q_fw, eps_fw = _fock_terms(forwarded, eta_bob, pd, ed)
        q_0, eps_0 = _fock_terms(np.zeros(1, dtype=np.int64), eta_bob, pd, ed)
        q_p = s * q_fw + (1.0 - s) * q_0[0]
        eps_p = s * eps_fw + (1.0 - s) * eps_0[0]
        q = (1.0 - f) * q_h + f * q_p
        eps = (1.0 - f) * eps_h + f * eps_p
        kappa = np.where(n >= 2, f * s * q_fw, 0.0)
    elif att.kind == "fiber-tap":
        t = eta * (1.0 - f)
        q, eps = _fock_terms(n, t, pd, ed)
        # Eve (tap at Alice's output) holds >= 1 photon unless all n pass: P = 1 - (1-F)^n;
        # P(click and Eve holds none | n) = (1-F)^n q_n(eta)
        kappa = np.clip(q - (1.0 - f) ** n * q_h, 0.0, None)
    elif att.kind == "detector-blinding":
        # attacked with >= 1 photon: click iff Bob's basis = Eve's (1/2), bit = Eve's = Alice's
        # whenever sifted; vacuum: Eve sees nothing, blinded detectors stay silent
        attacked_click = np.where(has_photon, 0.5, 0.0)
        q = (1.0 - f) * q_h + f * attacked_click
        eps = (1.0 - f) * eps_h
        kappa = f * attacked_click
    else:  # faked-state
        if f > 0.0:
            strat = faked_state_strategy(params)
            if strat.infeasible_mass > FAKED_STATE_TOLERANCE:
                bad = int(strat.photon_number[strat.honest_yield > 0.5][0])
                raise ConfigError(
                    "faked-state attack infeasible on this link: honest yield "
                    f"Y_{bad} = {strat.honest_yield[bad]:.3g} > 1/2 (photon numbers >= {bad} "
                    f"carry probability {strat.infeasible_mass:.3g} per pulse)",
                    field="attack",
                    value=att.describe(),
                    allowed="links whose honest yields Y_n <= 1/2 for all likely n",
                )
        q, eps = q_h, eps_h
        kappa = np.where(has_photon, f * q_h, 0.0)
    p_click = pmf @ q
    p_err_click = pmf @ eps
    p_known_click = pmf @ kappa
    safe = np.where(p_click > 0.0, p_click, 1.0)
    p_err = np.where(p_click > 0.0, p_err_click / safe, 0.0)
    p_known = np.where(p_click > 0.0, p_known_click / safe, 0.0)
    current = mon.photocurrent_baseline_ua + att.blinded_share * mon.blinding_photocurrent_ua
    return IntervalLaw(
        intensities=params.intensities,
        selection=params.selection,
        p_click=np.clip(p_click, 0.0, 1.0),
        p_sift_given_click=np.full(p_click.shape, 0.5),
        p_err_given_sift=np.clip(p_err, 0.0, 1.0),
        eve_known_given_sift=np.clip(p_known, 0.0, 1.0),
        photocurrent_mean_ua=float(current),
        photocurrent_noise_ua=float(mon.photocurrent_noise_ua),
    )


# --------------------------------------------------------------------------- exact draws
@dataclass
class IntervalCounts:
    """Counts of one reporting interval, per intensity class (int64 arrays of shape ``(K,)``).

    Attributes
    ----------
    sent, detected, sifted, errors
        Pulses sent; with at least one click; detected with matching bases; sifted with a bit
        error.
    eve_known
        Sifted bits whose value Eve knows (ground truth; never reported by the module).
    photocurrent_ua
        Detector-monitor reading: mean photocurrent over the interval, µA (>= 0).
    samples
        Number of monitor samples averaged.
    """

    sent: NDArray[np.int64]
    detected: NDArray[np.int64]
    sifted: NDArray[np.int64]
    errors: NDArray[np.int64]
    eve_known: NDArray[np.int64]
    photocurrent_ua: float
    samples: int

    @property
    def pulses(self) -> int:
        """Total pulses of the interval."""
        return int(self.sent.sum())


@dataclass
class IntervalSeries:
    """Counts of ``n`` consecutive intervals: int64 arrays of shape ``(n, K)``.

    Attributes
    ----------
    sent, detected, sifted, errors, eve_known
        As in :class:`IntervalCounts`, one row per interval.
    photocurrent_ua
        Monitor reading of each interval, µA, shape ``(n,)``.
    samples
        Monitor samples averaged per interval.
    """

    sent: NDArray[np.int64]
    detected: NDArray[np.int64]
    sifted: NDArray[np.int64]
    errors: NDArray[np.int64]
    eve_known: NDArray[np.int64]
    photocurrent_ua: NDArray[np.float64]
    samples: int

    def __len__(self) -> int:
        return int(self.sent.shape[0])

    def interval(self, i: int) -> IntervalCounts:
        """Return the counts of interval ``i`` as an :class:`IntervalCounts`."""
        return IntervalCounts(
            self.sent[i].copy(),
            self.detected[i].copy(),
            self.sifted[i].copy(),
            self.errors[i].copy(),
            self.eve_known[i].copy(),
            float(self.photocurrent_ua[i]),
            self.samples,
        )


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(
            f"{name} must be an integer >= {low}, got {value!r}",
            field=name,
            value=value,
            allowed=f"integer >= {low}",
        )
    return int(value)


def _draw(
    law: IntervalLaw, pulses: int, size: int | None, rng: np.random.Generator, samples: int
) -> tuple[
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.float64],
]:
    sent = rng.multinomial(pulses, law.selection, size=size).astype(np.int64)
    detected = rng.binomial(sent, law.p_click).astype(np.int64)
    sifted = rng.binomial(detected, law.p_sift_given_click).astype(np.int64)
    errors = rng.binomial(sifted, law.p_err_given_sift).astype(np.int64)
    known = rng.binomial(sifted, law.eve_known_given_sift).astype(np.int64)
    current = rng.normal(
        law.photocurrent_mean_ua, law.photocurrent_noise_ua / math.sqrt(samples), size=size
    )
    return sent, detected, sifted, errors, known, np.maximum(np.asarray(current), 0.0)


def draw_interval(
    law: IntervalLaw, pulses: int, rng: np.random.Generator, *, monitor_samples: int = 100
) -> IntervalCounts:
    """Draw the counts of one interval of ``pulses`` pulses exactly from ``law``.

    ``sent ~ Multinomial(pulses, selection)``, ``detected ~ Binomial(sent, p_click)``,
    ``sifted ~ Binomial(detected, p_sift_given_click)``, ``errors ~ Binomial(sifted,
    p_err_given_sift)``, ``eve_known ~ Binomial(sifted, eve_known_given_sift)``; the monitor
    reading is the mean of ``monitor_samples`` Gaussian samples (drawn as one normal of
    standard deviation ``sigma / sqrt(monitor_samples)``), clipped at 0. Because pulses are
    i.i.d. (no dead time, no afterpulsing), these nested draws are the exact factorisation of
    the multinomial law of the pulse engine's counts (see the module docstring).

    Parameters
    ----------
    law
        From :func:`interval_law`.
    pulses
        Pulses in the interval (repetition rate x interval length), integer >= 0.
    rng
        Source of randomness.
    monitor_samples
        Photocurrent samples averaged over the interval (>= 1).

    Returns
    -------
    IntervalCounts
    """
    n = _count("pulses", pulses, 0)
    m = _count("monitor_samples", monitor_samples, 1)
    sent, det, sift, err, known, cur = _draw(law, n, None, rng, m)
    return IntervalCounts(sent, det, sift, err, known, float(cur), m)


def draw_intervals(
    law: IntervalLaw,
    pulses: int,
    n_intervals: int,
    rng: np.random.Generator,
    *,
    monitor_samples: int = 100,
) -> IntervalSeries:
    """Draw ``n_intervals`` independent intervals at once (vectorised :func:`draw_interval`).

    Same law as ``n_intervals`` calls of :func:`draw_interval` (not the same random stream);
    a week of 1-s intervals (604 800) takes well under a second.

    Parameters
    ----------
    law
        From :func:`interval_law`.
    pulses
        Pulses per interval, integer >= 0.
    n_intervals
        Number of intervals, integer >= 0.
    rng
        Source of randomness.
    monitor_samples
        Photocurrent samples averaged per interval (>= 1).

    Returns
    -------
    IntervalSeries
        Count arrays of shape ``(n_intervals, K)``, photocurrent of shape ``(n_intervals,)``.
    """
    n = _count("pulses", pulses, 0)
    size = _count("n_intervals", n_intervals, 0)
    m = _count("monitor_samples", monitor_samples, 1)
    sent, det, sift, err, known, cur = _draw(law, n, size, rng, m)
    return IntervalSeries(sent, det, sift, err, known, cur.astype(np.float64), m)


# --------------------------------------------------------------------------- module key
def module_secret_bits(
    intensities: ArrayLike,
    sent: ArrayLike,
    detected: ArrayLike,
    sifted: ArrayLike,
    errors: ArrayLike,
    ec_efficiency: float,
) -> float:
    r"""Secret bits the module distils from one interval's counts (asymptotic, no finite size).

    The decoy analysis of :func:`qkdtwin.qkd.link.simulate_link` applied to the counts: the
    signal gain ``Q_mu = detected_0 / sent_0`` and QBER ``E_mu = errors_0 / sifted_0``, the
    weak decoy's (first class with ``0 < nu < mu``) gain and QBER, ``Y0`` = the vacuum
    class's gain; :func:`~qkdtwin.qkd.keyrate.vacuum_weak_decoy_bounds` gives ``Y1^L`` and
    ``e1^U``, ``Q1 = Y1^L mu e^{-mu}``, and :func:`~qkdtwin.qkd.keyrate.gllp_rate` the
    secret bits per signal pulse with the measured sifting factor ``sifted_0 / detected_0``
    (1/2 on average, the factor ``link.py`` uses). Times the signal pulses ``sent_0``:

    .. math:: N_{sec} = \text{sent}_0\, s\,[Q_1 (1 - h(e_1^U)) - f Q_\mu h(E_\mu)]_+,
              \quad s = \text{sifted}_0/\text{detected}_0,

    i.e. ``link.py``'s per-pulse rate times all pulses sent.

    Parameters
    ----------
    intensities
        Mean photon number per class, signal first, shape ``(K,)``; needs a vacuum (0) and a
        weak decoy class.
    sent, detected, sifted, errors
        Counts of the interval per class, shape ``(K,)``.
    ec_efficiency
        Error-correction inefficiency ``f >= 1``.

    Returns
    -------
    float
        Secret bits (>= 0); 0 when ``Y1^L <= 0``, the signal QBER is >= 1/2, or a class that
        the estimate needs has no pulses (signal, weak, vacuum) or no sifted bits (signal,
        weak).

    Raises
    ------
    ConfigError
        For arrays of different shapes, negative counts, no vacuum or weak decoy, or
        ``ec_efficiency < 1``.
    """
    f = v.in_range("ec_efficiency", ec_efficiency, 1.0)
    mu_k = np.asarray(intensities, dtype=np.float64)
    arrays: dict[str, NDArray[np.float64]] = {}
    for name, arr in (("sent", sent), ("detected", detected), ("sifted", sifted)):
        arrays[name] = np.asarray(arr, dtype=np.float64)
    arrays["errors"] = np.asarray(errors, dtype=np.float64)
    if mu_k.ndim != 1 or mu_k.size < 1:
        raise ConfigError(
            "intensities must be a 1-d array, signal first",
            field="intensities",
            value=np.shape(mu_k),
        )
    for name, a in arrays.items():
        if a.shape != mu_k.shape:
            raise ConfigError(
                f"{name} must have the shape {mu_k.shape} of intensities, got {a.shape}",
                field=name,
                value=a.shape,
                allowed=str(mu_k.shape),
            )
        if np.any(a < 0) or not np.all(np.isfinite(a)):
            raise ConfigError(f"{name} must be counts >= 0", field=name, value=a.tolist())
    mu = float(mu_k[0])
    vac = np.flatnonzero(mu_k[1:] == 0.0)
    weak = np.flatnonzero((mu_k[1:] > 0.0) & (mu_k[1:] < mu))
    if mu <= 0.0 or vac.size == 0 or weak.size == 0:
        raise ConfigError(
            "the decoy estimate needs a signal > 0, a weak decoy in (0, mu) and a vacuum decoy",
            field="intensities",
            value=mu_k.tolist(),
            allowed="e.g. (0.48, 0.1, 0.0)",
        )
    i_vac, i_nu = 1 + int(vac[0]), 1 + int(weak[0])
    s_, d_, sf_, e_ = arrays["sent"], arrays["detected"], arrays["sifted"], arrays["errors"]
    if min(s_[0], s_[i_nu], s_[i_vac], sf_[0], sf_[i_nu], d_[0]) <= 0:
        return 0.0
    q_mu = min(d_[0] / s_[0], 1.0)
    e_mu = e_[0] / sf_[0]
    if e_mu >= 0.5:
        return 0.0
    q_nu = min(d_[i_nu] / s_[i_nu], 1.0)
    e_nu = min(e_[i_nu] / sf_[i_nu], 0.5)
    y0 = min(d_[i_vac] / s_[i_vac], 1.0)
    y1_l, e1_u = vacuum_weak_decoy_bounds(mu, float(mu_k[i_nu]), q_mu, q_nu, e_nu, y0)
    if y1_l <= 0.0:
        return 0.0
    q1 = y1_l * mu * math.exp(-mu)
    sifting = min(sf_[0] / d_[0], 1.0)
    rate = float(gllp_rate(q_mu, e_mu, q1, e1_u, f, sifting=sifting))
    return max(rate * float(s_[0]), 0.0)
