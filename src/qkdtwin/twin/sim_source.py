"""Source of the self-simulated twin: its QKD links, their blocks and their keys to the KMEs.

:func:`build_links` makes one :class:`~qkdtwin.twin.links.LinkEngine` per topology link from the
scenario (per-link overrides, defaults by the roles of the ends) and calibrates each once.
:class:`LinkSource` runs them tick by tick: one link recalibrated per tick (round robin, with
the classical post-processing chain when ``postprocess``), one block per link, the block's key
handed to the KMEs at the link's ends while the link is ``up``, and the pending keys delivered
to the KME stores staggered over the ticks (:meth:`LinkSource.deliver`). It reads the link
statuses and never changes them: alarms are the detection's and response's business
(:mod:`qkdtwin.twin.qber_rule`, :mod:`qkdtwin.twin.sim_respond`).

The self-simulated twin sees its links the way the attached twin sees a real network's: every
block is published as a link-telemetry message of the versioned schema
(:func:`block_telemetry`, module ``sim-<link>``, one message per link per tick), and the twin
reads it back through the same :class:`~qkdtwin.twin.ingest.LinkStream` (validation,
de-duplication by ``(module, seq)``, ordering, staleness) before any decision
(:func:`observed_block`). The source is coarser than the plant's modules: it samples, from the
last calibration, the detections of all classes, the key class's sifted bits and their errors,
so a message carries *one* intensity class (the signal's mean photon number, all pulses
``sent``); the attached twin's estimator, which needs every class, is not run on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from qkdtwin.errors import UnknownNameError
from qkdtwin.interfaces import (
    IntensityCounts,
    LinkTelemetry,
    PhysPerf,
    QkdlPerformance,
    perf_topic,
)
from qkdtwin.network import Topology
from qkdtwin.network.topology import default_length_km, resolve_link
from qkdtwin.qkd import Attack, NoAttack
from qkdtwin.twin.config import TwinSettings
from qkdtwin.twin.kmes import KmeLayer
from qkdtwin.twin.links import Block, LinkEngine, link_id

__all__ = [
    "LinkSource",
    "block_telemetry",
    "build_links",
    "draw_blocks",
    "observed_block",
    "sim_module_id",
]

#: ``publish(topic, payload)``: where the source's telemetry goes (the twin's ingest).
Publish = Callable[[str, bytes], None]


def draw_blocks(
    engines: list[LinkEngine], t: float, dt: float, rng: np.random.Generator
) -> list[Block]:
    """One block of ``dt`` simulated seconds ending at ``t`` for every engine, drawn at once.

    The same law as :meth:`LinkEngine.run_block` link by link (detections binomial in the
    pulses, sifted bits in the detections, errors in the sifted bits), with three vectorised
    draws over all the links instead of three scalar draws per link: the draws come from the
    generator in another order, so a seeded run differs draw by draw but not in distribution
    (``tests/twin/test_scale.py`` checks it against the per-link path).
    """
    if not engines:
        return []
    n = len(engines)
    rate = np.fromiter((lk.repetition_rate_hz for lk in engines), np.float64, n)
    det = np.fromiter((lk.detect_per_pulse for lk in engines), np.float64, n)
    sift = np.fromiter((lk.sift_per_pulse for lk in engines), np.float64, n)
    qber = np.fromiter((lk.qber for lk in engines), np.float64, n)
    key = np.fromiter((lk.key_rate_bps for lk in engines), np.float64, n)
    pulses = np.array([round(r * dt) for r in rate.tolist()], dtype=np.int64)
    p_det = np.minimum(1.0, det)
    detected = rng.binomial(pulses, p_det)
    pos = p_det > 0
    p_sift = np.where(pos, np.minimum(1.0, sift / np.where(pos, p_det, 1.0)), 0.0)
    sifted = rng.binomial(detected, p_sift)
    errors = rng.binomial(sifted, np.clip(qber, 0.0, 1.0))
    return [
        Block(t, p, s, e, k * dt, d)
        for p, s, e, k, d in zip(
            pulses.tolist(),
            sifted.tolist(),
            errors.tolist(),
            key.tolist(),
            detected.tolist(),
            strict=True,
        )
    ]


#: Least ticks between a link's key deliveries (the default for small networks).
FEED_EVERY_MIN = 10
#: Links whose stores one tick delivers to, at most, when the feed period is automatic.
FEED_LINKS_PER_TICK = 20


def feed_every(configured: int | None, links: int) -> int:
    """Ticks between a link's key deliveries: ``configured``, or automatic when ``None``.

    Automatic: ``max(10, ceil(links / 20))``, so a tick delivers to about 20 links at most. A
    delivery costs two store transactions (~3 ms of CPU) however many keys it carries, so at
    1,000 links every 10 ticks the deliveries took ~0.6 s of every tick while the stores filled;
    the keys then reach the stores in larger, later batches (a link's key count in its stores
    lags its production by at most the period).
    """
    if configured is not None:
        return configured
    return max(FEED_EVERY_MIN, -(-links // FEED_LINKS_PER_TICK))


def sim_module_id(lid: str) -> str:
    """Return the module ID of a self-simulated link's telemetry: ``sim-<link>``."""
    return f"sim-{lid}"


def block_telemetry(engine: LinkEngine, blk: Block, seq: int, dt: float) -> LinkTelemetry:
    """One block as a link-telemetry message (schema version 1) of module ``sim-<link>``.

    One intensity class: the source's mean photon number, every pulse ``sent``, the
    detections of all classes, the key class's sifted bits and errors (see the module
    docstring). ``secret_bits`` is the block's key rounded down to whole bits.
    """
    mu = float(getattr(engine.model.source, "mu", 1.0))
    qber = blk.errors / blk.sifted if blk.sifted else None
    return LinkTelemetry(
        module_id=sim_module_id(engine.id),
        link_id=engine.id,
        local_node=engine.a,
        remote_node=engine.b,
        seq=seq,
        interval_start=blk.t - dt,
        interval_end=blk.t,
        protocol=engine.protocol,
        repetition_rate_hz=engine.repetition_rate_hz,
        intensities=[
            IntensityCounts(
                intensity=mu,
                sent=blk.pulses,
                detected=blk.detected,
                sifted=blk.sifted,
                errors=blk.errors,
            )
        ],
        sifted_bits=blk.sifted,
        errors=blk.errors,
        qber=qber,
        secret_bits=int(blk.key_bits),
        qkdl_performance=QkdlPerformance(
            skr=engine.key_rate_bps,
            eskr=engine.key_rate_bps,
            phys_perf=[] if qber is None else [PhysPerf(perf_type="QBER", value=qber)],
        ),
    )


def observed_block(msg: LinkTelemetry) -> Block:
    """Return the block a released telemetry message describes (what the rule reads)."""
    return Block(
        t=msg.interval_end,
        pulses=sum(c.sent for c in msg.intensities),
        sifted=msg.sifted_bits,
        errors=msg.errors,
        key_bits=float(msg.secret_bits),
        detected=sum(c.detected for c in msg.intensities),
    )


def build_links(
    topology: Topology, cfg: TwinSettings, rng: np.random.Generator
) -> dict[str, LinkEngine]:
    """One calibrated link engine per topology link, from the scenario's ``twin`` settings.

    Raises
    ------
    UnknownNameError
        For an override of a link the topology does not have (``field="twin.links.NAME"``).
    ConfigError
        For a link the engine cannot build or that yields no sifted key.
    """
    known = {link_id(a, b) for a, b in topology.graph.edges()}
    overrides = {}
    for name, phys in cfg.links.items():
        lid = resolve_link(name, known)
        if lid is None:
            raise UnknownNameError(
                f"twin.links: unknown link {name!r}", field=f"twin.links.{name}", value=name
            )
        overrides[lid] = phys
    links: dict[str, LinkEngine] = {}
    d = cfg.link_defaults
    for a, b in topology.graph.edges():
        lid = link_id(a, b)
        o = overrides.get(lid)
        ra, rb = topology.role(a), topology.role(b)

        def pick(name: str, default: Any, o: Any = o) -> Any:
            v = getattr(o, name) if o is not None else None
            if v is None:
                v = getattr(d, name)
            return default if v is None else v

        links[lid] = LinkEngine(
            a=str(a),
            b=str(b),
            protocol=pick("protocol", "decoy-bb84"),
            preset=pick("preset", "gys"),
            length_km=float(pick("length_km", default_length_km(ra, rb))),
            qber_threshold=float(pick("qber_threshold", cfg.qber_threshold)),
            calibration_pulses=cfg.calibration_pulses,
            min_bits=cfg.qber_min_bits,
        )
    for lk in links.values():
        lk.calibrate(rng)
    return links


class LinkSource:
    """The simulated links, run block by block, feeding the KMEs.

    Parameters
    ----------
    links
        The link engines (:func:`build_links`).
    status
        The twin's link statuses, read only: a link that is not ``up`` hands over no key.
    kmes
        The KME layer the links feed.
    rng
        The twin's random generator (shared: the same scenario gives the same twin).
    postprocess
        Run the classical chain on each round-robin calibration.
    feed_every
        Deliver a link's pending keys to its stores every ``feed_every`` ticks.
    publish
        Where every block's telemetry goes, ``publish(topic, payload)`` (the twin's ingest);
        ``None``: nowhere.
    """

    def __init__(
        self,
        links: dict[str, LinkEngine],
        status: Mapping[str, str],
        kmes: KmeLayer,
        rng: np.random.Generator,
        *,
        postprocess: bool,
        feed_every: int,
        publish: Publish | None = None,
    ) -> None:
        self.links = links
        self.status = status
        self.kmes = kmes
        self.rng = rng
        self.postprocess = postprocess
        self.feed_every = feed_every
        self.publish = publish
        self.seq: dict[str, int] = dict.fromkeys(links, 0)
        self.rr = 0

    def block(self, lid: str, t: float, dt: float) -> Block:
        """Run one block of ``lid`` ending at ``t``; its key goes to the KMEs if the link is up.

        The block's telemetry is published (:func:`block_telemetry`).
        """
        lk = self.links[lid]
        blk = lk.run_block(t, dt, self.rng)
        msg = self._account(lid, blk, dt)
        if msg is not None and self.publish is not None:
            self.publish(*msg)
        return blk

    def _account(self, lid: str, blk: Block, dt: float) -> tuple[str, bytes] | None:
        """Hand a block's key to the KMEs (link up) and return its telemetry message."""
        self.kmes.mark_block(lid)
        if self.status[lid] == "up":
            self.kmes.produce(lid, blk.key_bits)
        if self.publish is None:
            return None
        self.seq[lid] += 1
        msg = block_telemetry(self.links[lid], blk, self.seq[lid], dt)
        return perf_topic(msg.module_id), msg.model_dump_json().encode()

    def run(self, t: float, dt: float) -> list[str]:
        """One tick's blocks: recalibrate the next link (round robin), then a block per link.

        The blocks of all the links are drawn at once (:func:`draw_blocks`). Returns the link
        ids in order.
        """
        ids = list(self.links)
        cal = ids[self.rr % len(ids)]
        self.rr += 1
        self.links[cal].calibrate(self.rng, postprocess=self.postprocess)
        blocks = draw_blocks([self.links[lid] for lid in ids], t, dt, self.rng)
        for lid, blk in zip(ids, blocks, strict=True):
            msg = self._account(lid, blk, dt)
            if msg is not None and self.publish is not None:
                self.publish(*msg)
        return ids

    def deliver(self, tick: int) -> None:
        """Deliver pending keys to the KME stores, staggered over the links.

        Link ``i`` delivers every ``feed_every`` ticks, at phase ``i``, so no tick carries all
        the store transactions at once; a link that is not up delivers nothing.
        """
        every = self.feed_every
        for i, lid in enumerate(self.links):
            if (tick - 1 + i) % every == 0 and self.status[lid] == "up":
                self.kmes.flush(lid)

    def set_attack(self, lid: str, attack: Attack) -> None:
        """Set Eve's strategy on ``lid`` (``ConfigError`` if the protocol does not allow it)."""
        self.links[lid].set_attack(attack)

    def recalibrate(self, lid: str) -> None:
        """Recalibrate ``lid`` at once (after its attack changed)."""
        self.links[lid].calibrate(self.rng)

    def clear_attack(self, lid: str) -> None:
        """Remove the attack on ``lid``, forget its blocks and recalibrate it."""
        lk = self.links[lid]
        lk.set_attack(NoAttack())
        lk.blocks.clear()
        lk.calibrate(self.rng)
