"""Eavesdropping strategies acting on the quantum channel.

Three strategies, chosen to show what the protocols can and cannot detect:

* :class:`NoAttack` — the noise-only baseline: errors come from misalignment and dark counts.
* :class:`InterceptResend` — on a fraction ``F`` of the pulses Eve measures every photon in a
  random BB84 basis and resends the same number of photons prepared in the state she found.
  She learns the bit when her basis matched Alice's and otherwise disturbs it: with ``F = 1``
  the sifted BB84 error rate is 25 % (plus detector noise). The photon number and the channel
  loss are unchanged, so Bob's gain is unchanged and only the QBER reveals her.
* :class:`PhotonNumberSplitting` — Eve measures the photon number of each pulse without
  disturbing the polarisation (a QND measurement), keeps one photon of every multi-photon pulse
  and forwards the rest to Bob over a lossless line; she blocks single-photon pulses (and, when
  that is not enough, some multi-photon pulses) so that Bob's gain for the *signal* intensity
  is exactly what the honest channel gives. The QBER is unchanged; she learns every bit from
  a forwarded multi-photon pulse. She cannot tell decoy pulses from signal pulses, so the decoy
  gains move away from the honest ones and the decoy-state estimate of ``Y1`` exposes her
  (Hwang, PRL 91, 057901 (2003); Lo, Ma, Chen, PRL 94, 230504 (2005)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, UnknownNameError

__all__ = ["Attack", "InterceptResend", "NoAttack", "PhotonNumberSplitting", "parse_attack"]


@dataclass(frozen=True)
class NoAttack:
    """No eavesdropper: the noise-only baseline."""

    name: str = "none"

    def describe(self) -> str:
        """Short label for reports."""
        return "none"


@dataclass(frozen=True)
class InterceptResend:
    """Intercept-resend on a random fraction of the pulses.

    Parameters
    ----------
    fraction
        Probability that Eve attacks a given pulse, in [0, 1].
    """

    fraction: float = 1.0
    name: str = "intercept-resend"

    def __post_init__(self) -> None:
        v.in_range("attack fraction", self.fraction, 0.0, 1.0)

    def describe(self) -> str:
        """Short label for reports."""
        return f"intercept-resend:{self.fraction:g}"


@dataclass(frozen=True)
class PhotonNumberSplitting:
    """Photon-number-splitting attack tuned to the signal intensity's honest gain.

    A gain-matching PNS attacker, not the strongest PNS attack: she does not exploit Bob's
    detector inefficiency (she forwards to his detectors of efficiency ``eta_bob``) and
    matches the signal class's gain only (she cannot tell the decoy classes apart).

    Parameters
    ----------
    fraction
        Probability that Eve attacks a given pulse, in [0, 1]; unattacked pulses cross the
        honest channel. Attacked signal pulses keep the honest signal gain, so the signal gain
        is unchanged for any fraction; the decoy gains move by ``fraction`` times the shift of
        a full attack.
    """

    fraction: float = 1.0
    name: str = "pns"

    def __post_init__(self) -> None:
        v.in_range("attack fraction", self.fraction, 0.0, 1.0)

    def describe(self) -> str:
        """Short label for reports."""
        return "pns" if self.fraction == 1.0 else f"pns:{self.fraction:g}"

    @staticmethod
    def strategy(
        mu: float, eta_channel: float, eta_bob: float, dark_count_prob: float, n_max: int = 60
    ) -> tuple[float, float]:
        """Return the forwarding probabilities ``(s1, s_multi)`` matching the honest gain.

        Eve forwards single-photon pulses with probability ``s1`` and multi-photon pulses (minus
        the photon she keeps) with probability ``s_multi``, both over a lossless line to Bob's
        detectors of efficiency ``eta_bob``. She first blocks single photons (``s1 < 1``,
        ``s_multi = 1``); if even ``s1 = 0`` gives Bob too many clicks she also blocks a
        fraction of multi-photon pulses (``s1 = 0``, ``s_multi < 1``).

        Returns
        -------
        tuple of float
            ``(s1, s_multi)`` in [0, 1].
        """
        n = np.arange(n_max + 1)
        pn = np.exp(-mu) * np.cumprod(np.concatenate(([1.0], mu / n[1:])))
        no_dark = (1.0 - dark_count_prob) ** 2
        honest = 1.0 - no_dark * np.exp(-mu * eta_channel * eta_bob)

        def gain(s1: float, sm: float) -> float:
            forwarded = np.maximum(n - 1, 0)
            forwarded[1] = 1
            p_click_fw = 1.0 - no_dark * (1.0 - eta_bob) ** forwarded
            p_click_block = 1.0 - no_dark
            s = np.full(n.shape, sm)
            s[0] = 0.0
            s[1] = s1
            return float(np.sum(pn * (s * p_click_fw + (1.0 - s) * p_click_block)))

        if gain(1.0, 1.0) <= honest:
            return 1.0, 1.0
        if gain(0.0, 1.0) <= honest:
            s1 = optimize.brentq(lambda s: gain(s, 1.0) - honest, 0.0, 1.0, xtol=1e-15)
            return float(s1), 1.0
        sm = optimize.brentq(lambda s: gain(0.0, s) - honest, 0.0, 1.0, xtol=1e-15)
        return 0.0, float(sm)


Attack = NoAttack | InterceptResend | PhotonNumberSplitting


def _attack_fraction(arg: str, spec: str, name: str) -> float:
    """Return the ``F`` of an attack spec ``NAME:F`` as a number (the attack checks its range)."""
    try:
        return float(arg)
    except ValueError:
        raise ConfigError(
            f"attack fraction must be a number in [0, 1], got {arg!r}",
            field="attack",
            value=spec,
            allowed=f"{name}:F with F in [0, 1]",
        ) from None


def parse_attack(spec: str | None) -> Attack:
    """Parse an attack written on the CLI: ``none``, ``intercept-resend[:F]`` or ``pns[:F]``.

    Raises
    ------
    UnknownNameError
        For an unknown attack name.
    ConfigError
        For a malformed or out-of-range fraction.
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return NoAttack()
    name, _, arg = spec.strip().lower().partition(":")
    if name in ("intercept-resend", "ir", "intercept_resend"):
        if not arg:
            return InterceptResend(1.0)
        return InterceptResend(_attack_fraction(arg, spec, "intercept-resend"))
    if name == "pns":
        if not arg:
            return PhotonNumberSplitting()
        return PhotonNumberSplitting(_attack_fraction(arg, spec, "pns"))
    raise UnknownNameError(
        f"unknown attack {spec!r} (known: none, intercept-resend[:F], pns[:F])",
        field="attack",
        value=spec,
        allowed="none, intercept-resend[:F], pns[:F]",
    )
