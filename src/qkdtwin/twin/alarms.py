"""Alarms of the live twin: what happened to which link, when, and what the twin did about it.

An alarm is raised when a link's windowed QBER (:func:`qkdtwin.twin.links.windowed_qber`)
exceeds the link's threshold. Its record keeps the simulated and wall-clock times of every
step of the response (raised, key discarded, rerouted, cleared), so the alarm log answers
"what happened and when", and the alarm-to-reroute time is measured, not assumed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TypedDict, Unpack, cast

from qkdtwin.twin.state import TwinDatabase

__all__ = ["Alarm", "AlarmLog", "AlarmRecord", "AlarmStep", "AlarmStepDetail"]


class AlarmStepDetail(TypedDict, total=False):
    """What a step of the response records beside its times (by step, see :class:`AlarmStep`)."""

    #: ``raised``: the windowed QBER and the threshold; ``restored``: the QBER.
    qber: float
    threshold: float
    #: ``key_discarded``: keys dropped from the KME stores and the pools, over ``blocks`` blocks.
    kme_keys: int
    pool_keys: float
    blocks: int
    #: ``rerouted``: pools on a new path, pools left without one, and the time it took.
    pools_rerouted: list[str]
    pools_cut: list[str]
    reroute_ms: float | None


class AlarmStep(AlarmStepDetail):
    """One step of the twin's response to an alarm (an entry of :attr:`Alarm.events`)."""

    what: str
    t_sim: float
    wall_time: float


class AlarmRecord(TypedDict):
    """An :class:`Alarm` as plain data (:meth:`Alarm.to_dict`, the API's alarm)."""

    id: int
    link: str
    kind: str
    t_sim: float
    wall_time: float
    qber: float
    threshold: float
    active: bool
    events: list[AlarmStep]
    reroute_ms: float | None
    message: str


@dataclass
class Alarm:
    """One alarm and the twin's response to it.

    Attributes
    ----------
    id
        Sequence number (1, 2, ...).
    link
        Link id.
    kind
        ``qber``: the windowed QBER passed the threshold.
    t_sim, wall_time
        When it was raised: simulated seconds, and Unix time.
    qber, threshold
        The windowed QBER that triggered it and the link's threshold.
    active
        ``False`` once the link is back under its threshold after the attack was cleared.
    events
        The response, in order: ``{"what", "t_sim", "wall_time", ...}`` entries (``raised``,
        ``key_discarded``, ``rerouted``, ``attack_cleared``, ``restored``).
    reroute_ms
        Wall-clock milliseconds from raising the alarm to new relay paths being in effect.
    message
        One line for the log.
    """

    id: int
    link: str
    kind: str
    t_sim: float
    wall_time: float
    qber: float
    threshold: float
    active: bool = True
    events: list[AlarmStep] = field(default_factory=list)
    reroute_ms: float | None = None
    message: str = ""

    def to_dict(self) -> AlarmRecord:
        """Plain data for JSON."""
        return cast("AlarmRecord", asdict(self))  # asdict gives exactly the fields above

    def log(self, what: str, t_sim: float, **extra: Unpack[AlarmStepDetail]) -> AlarmStep:
        """Append a response step, stamped with simulated and wall-clock time."""
        ev: AlarmStep = {"what": what, "t_sim": t_sim, "wall_time": time.time(), **extra}
        self.events.append(ev)
        return ev


class AlarmLog:
    """All alarms of the twin, persisted in its database when one is given."""

    def __init__(self, db: TwinDatabase | None = None) -> None:
        self.db = db
        self.alarms: list[Alarm] = []
        if db is not None:
            for body in db.load_alarms():
                alarm = Alarm(**body)
                if alarm.active:  # the twin restarts with every link up
                    alarm.active = False
                    alarm.log("closed_on_restart", alarm.events[-1]["t_sim"] if alarm.events else 0)
                    db.save_alarm(alarm.id, alarm.to_dict())
                self.alarms.append(alarm)

    def raise_alarm(self, link: str, t_sim: float, qber: float, threshold: float) -> Alarm:
        """Create, store and return a new active alarm."""
        a = Alarm(
            id=len(self.alarms) + 1,
            link=link,
            kind="qber",
            t_sim=t_sim,
            wall_time=time.time(),
            qber=qber,
            threshold=threshold,
            message=f"link {link}: QBER {qber:.2%} > threshold {threshold:.2%}",
        )
        a.log("raised", t_sim, qber=qber, threshold=threshold)
        self.alarms.append(a)
        return a

    def active_for(self, link: str) -> Alarm | None:
        """Return the active alarm of ``link``, if any."""
        for a in reversed(self.alarms):
            if a.link == link and a.active:
                return a
        return None

    def save(self, alarm: Alarm) -> None:
        """Persist the alarm's current record."""
        if self.db is not None:
            self.db.save_alarm(alarm.id, alarm.to_dict())

    def to_list(self, limit: int | None = None) -> list[AlarmRecord]:
        """Alarms, newest first."""
        out = [a.to_dict() for a in reversed(self.alarms)]
        return out[:limit] if limit else out
