"""One QKD module of the plant: hidden link physics, drift, attacks, and what it reports.

A module owns one link. Every reporting interval it draws the interval's counts exactly from
their distribution (:func:`qkdtwin.plant.physics.draw_interval`, equivalent to running every
pulse through the pulse engine because pulses are i.i.d. without dead time and afterpulsing),
distils its secret key from those counts the way a real module does (decoy-state estimate,
:func:`qkdtwin.plant.physics.module_secret_bits`), and reports a
:class:`~qkdtwin.interfaces.LinkTelemetry` message: counts, QBER, key rates and, optionally,
its detector monitor. The true parameters stay inside; :meth:`QkdModule.truth` exposes them for
tests and benchmarks only, through the plant's control endpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.interfaces import (
    DetectorMonitor,
    IntensityCounts,
    LinkTelemetry,
    PhysPerf,
    QkdlPerformance,
)
from qkdtwin.plant.physics import (
    ATTACK_KINDS,
    IntervalLaw,
    MonitorParams,
    PlantAttack,
    TrueLinkParams,
    draw_interval,
    interval_law,
    module_secret_bits,
)
from qkdtwin.plant.scenario import DriftSpec

__all__ = ["IntervalTruth", "QkdModule"]


@dataclass(frozen=True)
class IntervalTruth:
    """What really happened on a link in one interval (tests and benchmarks only).

    Attributes
    ----------
    t_start, t_end
        Plant time, s.
    loss_db
        Channel loss at the interval's midpoint, dB (fibre + extra + drift + tap).
    mean_loss_db
        Mean channel loss over the interval (trapezoid of start, middle and end), dB.
    eta
        Overall transmittance (channel x detector efficiency) at the midpoint.
    attack
        ``"type:fraction"`` or ``None``.
    eve_known_bits
        Sifted signal bits whose value Eve knows.
    """

    t_start: float
    t_end: float
    loss_db: float
    mean_loss_db: float
    eta: float
    attack: str | None
    eve_known_bits: int


class QkdModule:
    """The QKD module of one link (Alice at ``local_node``, Bob at ``remote_node``).

    Parameters
    ----------
    module_id, link_id, local_node, remote_node
        Identity (``link_id`` is the topology's canonical ``A-B``).
    params
        Hidden true parameters at plant time 0.
    drifts
        Slow changes of the loss (:class:`~qkdtwin.plant.scenario.DriftSpec`).
    monitor
        Whether the module reports its detector monitor.
    """

    def __init__(
        self,
        module_id: str,
        link_id: str,
        local_node: str,
        remote_node: str,
        params: TrueLinkParams,
        drifts: list[DriftSpec] | None = None,
        *,
        monitor: bool = True,
        monitor_params: MonitorParams | None = None,
    ) -> None:
        self.module_id = module_id
        self.link_id = link_id
        self.local_node = local_node
        self.remote_node = remote_node
        self.params = params
        self.drifts = list(drifts or [])
        self.monitor = monitor
        self.monitor_params = monitor_params or MonitorParams()
        self.attack = PlantAttack()
        self.manual_loss_db = 0.0
        self.cut = False
        self.enabled = True
        self.seq = 0
        self._key_carry = 0.0
        self._law_key: tuple[float, str, float, bool] | None = None
        self._law: IntervalLaw | None = None

    # -- events --------------------------------------------------------------------------
    def set_attack(self, kind: str, fraction: float = 1.0) -> None:
        """Start an attack (replaces any other; ``"none"`` clears).

        Raises
        ------
        ConfigError
            For an unknown kind (``field="type"``) or a fraction outside [0, 1].
        """
        if kind not in ATTACK_KINDS:
            raise ConfigError(
                f"unknown attack type {kind!r}; known: {', '.join(ATTACK_KINDS[1:])}",
                field="type",
                value=kind,
                allowed=", ".join(ATTACK_KINDS[1:]),
            )
        self.attack = PlantAttack(kind, float(fraction))

    def clear(self) -> None:
        """End the attack and repair a cut (drift stays)."""
        self.attack = PlantAttack()
        self.cut = False

    def set_cut(self) -> None:
        """Cut the fibre: only dark counts reach Bob."""
        self.cut = True

    def add_loss(self, loss_db: float) -> None:
        """Add a loss step of ``loss_db`` dB (negative: a repair), as ``plant drift`` does."""
        self.manual_loss_db += float(loss_db)

    # -- physics -------------------------------------------------------------------------
    def drift_db(self, t: float) -> float:
        """Loss added by the drifts and manual steps at plant time ``t``, dB."""
        return self.manual_loss_db + sum(d.offset_db(t) for d in self.drifts)

    def params_at(self, t: float) -> TrueLinkParams:
        """Return the true parameters at plant time ``t`` (drift applied; attacks excluded)."""
        extra = max(0.0, self.params.extra_loss_db + self.drift_db(t))
        return replace(self.params, extra_loss_db=extra)

    def _effective_attack(self) -> PlantAttack:
        return PlantAttack("fiber-tap", 1.0) if self.cut else self.attack

    def law_at(self, t: float) -> IntervalLaw:
        """Count law at plant time ``t`` (cached while the loss moves < 1e-4 dB)."""
        p = self.params_at(t)
        att = self._effective_attack()
        key = (round(p.extra_loss_db, 4), att.kind, att.fraction, self.cut)
        if key != self._law_key or self._law is None:
            self._law = interval_law(p, att, self.monitor_params)
            self._law_key = key
        return self._law

    def true_loss_db(self, t: float) -> float:
        """Channel loss at ``t`` including a tap or cut (infinite for a cut), dB."""
        loss = self.params_at(t).channel_loss_db
        att = self._effective_attack()
        if att.kind == "fiber-tap":
            if att.fraction >= 1.0:
                return math.inf
            loss += -10.0 * math.log10(1.0 - att.fraction)
        return loss

    def truth(self, t: float) -> dict[str, object]:
        """Ground truth at plant time ``t`` (for tests and benchmarks only)."""
        p = self.params_at(t)
        loss = self.true_loss_db(t)
        return {
            "id": self.link_id,
            "module_id": self.module_id,
            "loss_db": None if math.isinf(loss) else loss,
            "fiber_loss_db": p.channel_loss_db,
            "detector_efficiency": p.detector_efficiency,
            "dark_count_prob": p.dark_count_prob,
            "misalignment": p.misalignment,
            "length_km": p.length_km,
            "attack": None
            if self.attack.kind == "none"
            else {"type": self.attack.kind, "fraction": self.attack.fraction},
            "cut": self.cut,
            "enabled": self.enabled,
        }

    # -- one interval --------------------------------------------------------------------
    def run_interval(
        self,
        t_start: float,
        t_end: float,
        rng: np.random.Generator,
        *,
        clock_offset: float = 0.0,
        key_size_bits: int = 256,
    ) -> tuple[LinkTelemetry, IntervalTruth, int]:
        """Run one reporting interval of plant time ``[t_start, t_end)``.

        Returns
        -------
        (message, truth, keys)
            The telemetry message (timestamps are ``clock_offset + t``, the module's clock),
            the interval's truth, and the number of whole keys of ``key_size_bits`` it hands
            to its KMEs (0 while disabled).
        """
        dt = t_end - t_start
        mid = 0.5 * (t_start + t_end)
        law = self.law_at(mid)
        pulses = round(self.params.repetition_rate_hz * dt)
        c = draw_interval(law, pulses, rng)
        bits = module_secret_bits(
            law.intensities, c.sent, c.detected, c.sifted, c.errors, self.params.ec_efficiency
        )
        keys = 0
        if self.enabled:
            self._key_carry += bits
            keys = int(self._key_carry // key_size_bits)
            self._key_carry -= keys * key_size_bits
        sifted0, err0 = int(c.sifted[0]), int(c.errors[0])
        qber = err0 / sifted0 if sifted0 else None
        msg = LinkTelemetry(
            module_id=self.module_id,
            link_id=self.link_id,
            local_node=self.local_node,
            remote_node=self.remote_node,
            seq=self.seq,
            interval_start=clock_offset + t_start,
            interval_end=clock_offset + t_end,
            protocol="decoy-bb84",
            repetition_rate_hz=self.params.repetition_rate_hz,
            intensities=[
                IntensityCounts(
                    intensity=float(law.intensities[k]),
                    sent=int(c.sent[k]),
                    detected=int(c.detected[k]),
                    sifted=int(c.sifted[k]),
                    errors=int(c.errors[k]),
                )
                for k in range(len(law.intensities))
            ],
            sifted_bits=sifted0,
            errors=err0,
            qber=qber,
            secret_bits=int(bits),
            qkdl_performance=QkdlPerformance(
                skr=bits / dt,
                eskr=keys * key_size_bits / dt,
                phys_perf=[] if qber is None else [PhysPerf(perf_type="QBER", value=qber)],
            ),
            detector_monitor=DetectorMonitor(
                photocurrent_ua=float(c.photocurrent_ua), samples=int(c.samples)
            )
            if self.monitor
            else None,
        )
        self.seq += 1
        p0, p1 = self.true_loss_db(t_start), self.true_loss_db(t_end)
        pm = self.true_loss_db(mid)
        att = self.attack
        truth = IntervalTruth(
            t_start=t_start,
            t_end=t_end,
            loss_db=pm,
            mean_loss_db=(p0 + 4.0 * pm + p1) / 6.0,
            eta=self.params_at(mid).eta,
            attack=None if att.kind == "none" else f"{att.kind}:{att.fraction:g}",
            eve_known_bits=int(c.eve_known[0]),
        )
        return msg, truth, keys
