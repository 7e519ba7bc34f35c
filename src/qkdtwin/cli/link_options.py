"""The options of the ``link`` commands, each declared once.

:class:`LinkOptions` (source, detector and fibre of the link) is taken by ``link simulate``,
``link rate`` and ``link max-distance``; :class:`CvOptions` (the ``--cv-*`` system) by
``link rate`` and ``link max-distance``. Both are option groups (:mod:`qkdtwin.cli.options`):
a command lists a group's options where it takes the group, and receives them as one object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

import typer

from qkdtwin.cli.options import option_group
from qkdtwin.config import parse_float_list
from qkdtwin.errors import ConfigError

__all__ = [
    "DECOY_BOUNDS",
    "DEFAULT_CV",
    "DEFAULT_LINK",
    "CvOptions",
    "DecoyBoundOpt",
    "LinkOptions",
    "PresetOpt",
    "ProtocolOpt",
    "protocols",
    "resolve_decoy_bound",
]

ProtocolOpt = Annotated[
    str,
    typer.Option("--protocol", "-p", help="bb84, decoy-bb84, sarg04, bbm92, e91, cv-gg02 or plob."),
]
PresetOpt = Annotated[str, typer.Option("--preset", help="Parameter set (see `link presets`).")]
DecoyBoundOpt = Annotated[
    str | None,
    typer.Option(
        "--decoy-bound",
        help="decoy-bb84: 'vacuum-weak' (default: what a system with a vacuum and one weak"
        " decoy, the preset's, can prove) or 'infinite' (infinitely many decoys, the true"
        " single-photon yield: Lo-Ma-Chen's curve).",
    ),
]
#: The CLI's names of the decoy bounds -> analytic_key_rate's ``decoys``.
DECOY_BOUNDS = {"vacuum-weak": "vacuum+weak", "infinite": "infinite"}


def resolve_decoy_bound(value: str | None, names: list[str]) -> tuple[str, str]:
    """Return ``--decoy-bound``'s name and :func:`analytic_key_rate`'s ``decoys`` for it."""
    if value is None:
        return "vacuum-weak", DECOY_BOUNDS["vacuum-weak"]
    if "decoy-bb84" not in names:
        raise ConfigError(
            "--decoy-bound only applies to --protocol decoy-bb84", field="decoy-bound"
        )
    key = value.strip().lower()
    if key not in DECOY_BOUNDS:
        raise ConfigError(
            f"--decoy-bound must be one of {', '.join(DECOY_BOUNDS)}, got {value!r}",
            field="decoy-bound",
            value=value,
            allowed=", ".join(DECOY_BOUNDS),
        )
    return key, DECOY_BOUNDS[key]


def protocols(spec: str) -> list[str]:
    """Return the canonical protocol names of ``--protocol`` (a comma list or ``all``)."""
    from qkdtwin.qkd.protocols import ALL_PROTOCOLS, canonical_protocol

    if spec.strip().lower() == "all":
        return list(ALL_PROTOCOLS)
    return [canonical_protocol(s) for s in spec.split(",") if s.strip()]


@option_group
@dataclass(frozen=True)
class LinkOptions:
    """Source, detector and fibre options of a link; ``None``: the preset's value."""

    mu: Annotated[
        float | None,
        typer.Option("--mu", help="Signal mean photon number (pair number for bbm92/e91)."),
    ] = None
    decoys: Annotated[
        str | None, typer.Option("--decoys", help="Decoy intensities, e.g. '0.1,0' (decoy-bb84).")
    ] = None
    decoy_probabilities: Annotated[
        str | None,
        typer.Option(
            "--decoy-probabilities",
            help="Probabilities of signal and each decoy, e.g. '0.8,0.1,0.1'.",
        ),
    ] = None
    efficiency: Annotated[
        float | None, typer.Option("--efficiency", help="Bob's detection efficiency, in (0, 1].")
    ] = None
    dark_count_prob: Annotated[
        float | None, typer.Option("--dark-count-prob", help="Dark-count probability per gate.")
    ] = None
    misalignment: Annotated[
        float | None, typer.Option("--misalignment", help="Misalignment e_d.")
    ] = None
    attenuation_db_per_km: Annotated[
        float | None, typer.Option("--attenuation-db-per-km", help="Fibre attenuation (dB/km).")
    ] = None
    insertion_loss_db: Annotated[
        float | None, typer.Option("--insertion-loss-db", help="Extra insertion loss (dB).")
    ] = None
    repetition_rate_hz: Annotated[
        float | None, typer.Option("--repetition-rate-hz", help="Pulse repetition rate (Hz).")
    ] = None
    single_photon: Annotated[
        bool, typer.Option("--single-photon", help="Ideal single-photon source (bb84, sarg04).")
    ] = False

    def model(
        self,
        protocol: str,
        distance_km: float,
        preset: str,
        *,
        dead_time_s: float = 0.0,
        afterpulse_prob: float = 0.0,
    ) -> Any:
        """Build the :class:`~qkdtwin.qkd.LinkModel` of ``protocol`` over ``distance_km``."""
        from qkdtwin.qkd import ThresholdDetector, build_link_model, get_preset

        p = get_preset(preset)
        if self.attenuation_db_per_km is not None:
            p = replace(p, attenuation_db_per_km=self.attenuation_db_per_km)
        if self.insertion_loss_db is not None:
            p = replace(p, insertion_loss_db=self.insertion_loss_db)
        base = p.detector()

        def given(value: float | None, preset_value: float) -> float:
            return preset_value if value is None else value

        det = ThresholdDetector(
            efficiency=given(self.efficiency, base.efficiency),
            dark_count_prob=given(self.dark_count_prob, base.dark_count_prob),
            misalignment=given(self.misalignment, base.misalignment),
            dead_time_s=dead_time_s,
            afterpulse_prob=afterpulse_prob,
        )
        probabilities = self.decoy_probabilities
        return build_link_model(
            protocol,
            distance_km,
            p,
            mu=self.mu,
            decoys=(
                parse_float_list(self.decoys, field="decoys") if self.decoys is not None else None
            ),
            decoy_probabilities=(
                parse_float_list(probabilities, field="decoy_probabilities")
                if probabilities is not None
                else None
            ),
            single_photon=self.single_photon,
            detector=det,
            repetition_rate_hz=self.repetition_rate_hz,
        )


@option_group
@dataclass(frozen=True)
class CvOptions:
    """The CV-QKD (cv-gg02) system; defaults: Lodewyck et al. 2007, V_A optimised per distance."""

    cv_va: Annotated[
        str | None,
        typer.Option(
            "--cv-va",
            help="cv-gg02 modulation variance V_A (shot-noise units) or 'optimal' (default:"
            " optimal at each distance).",
        ),
    ] = None
    cv_xi: Annotated[
        float | None,
        typer.Option("--cv-xi", help="cv-gg02 excess noise, input-referred, SNU (default 0.005)."),
    ] = None
    cv_beta: Annotated[
        float | None,
        typer.Option("--cv-beta", help="cv-gg02 reconciliation efficiency (default 0.898)."),
    ] = None
    cv_eta: Annotated[
        float | None,
        typer.Option("--cv-eta", help="cv-gg02 homodyne/heterodyne efficiency (default 0.606)."),
    ] = None
    cv_vel: Annotated[
        float | None,
        typer.Option("--cv-vel", help="cv-gg02 electronic noise, SNU (default 0.041)."),
    ] = None
    cv_detection: Annotated[
        str | None,
        typer.Option("--cv-detection", help="cv-gg02 detection: homodyne (default) or heterodyne."),
    ] = None

    def params(self, names: list[str]) -> Any:
        """Build the :class:`~qkdtwin.qkd.CvParameters` (``None`` when no option is given).

        Raises
        ------
        ConfigError
            If a ``--cv-*`` option is given without ``cv-gg02`` among ``names``, or
            ``--cv-va`` is neither a number nor ``optimal``.
        """
        given = {
            "--cv-va": self.cv_va,
            "--cv-xi": self.cv_xi,
            "--cv-beta": self.cv_beta,
            "--cv-eta": self.cv_eta,
            "--cv-vel": self.cv_vel,
            "--cv-detection": self.cv_detection,
        }
        used = [k for k, x in given.items() if x is not None]
        if not used:
            return None
        if "cv-gg02" not in names:
            raise ConfigError(
                f"{', '.join(used)} only apply to --protocol cv-gg02", field=used[0].lstrip("-")
            )
        from qkdtwin.qkd import CvParameters

        kw: dict[str, Any] = {}
        v_a = self.cv_va
        if v_a is not None:
            if v_a.strip().lower() == "optimal":
                kw["v_a"] = "optimal"
            else:
                try:
                    kw["v_a"] = float(v_a)
                except ValueError:
                    raise ConfigError(
                        f"--cv-va must be a number > 0 or 'optimal', got {v_a!r}", field="cv-va"
                    ) from None
        numbers = {
            "xi": self.cv_xi,
            "beta": self.cv_beta,
            "eta_det": self.cv_eta,
            "v_el": self.cv_vel,
        }
        kw.update({key: x for key, x in numbers.items() if x is not None})
        if self.cv_detection is not None:
            kw["detection"] = self.cv_detection
        return CvParameters(**kw)


#: No link option given: every value from the preset.
DEFAULT_LINK = LinkOptions()
#: No ``--cv-*`` option given.
DEFAULT_CV = CvOptions()
