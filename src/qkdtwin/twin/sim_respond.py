"""Response for the self-simulated twin: what it does about an alarm, logged step by step.

:class:`SimResponse` acts on the decisions of the QBER rule (:mod:`qkdtwin.twin.qber_rule`):

* ``raise``: the alarm is raised (``raised``), the link's status becomes ``alarm``, its pending
  and recent keys are discarded from its KME stores and from the key pools
  (``key_discarded``), and the pools are rerouted around it (``rerouted``, with ``reroute_ms``:
  the wall time from raising the alarm to the new paths being in effect);
* ``restore``: the link is ``up`` again, the routes come back and its alarm ends
  (``restored``).

The operator's clearing of an attack is logged here too (``attack_cleared``; the link becomes
``recovering``). Every step is saved in the alarm log, and each action returns the events the
twin publishes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal, NotRequired, TypedDict

from qkdtwin.twin.alarms import AlarmLog, AlarmRecord
from qkdtwin.twin.keynet import KeyNetwork
from qkdtwin.twin.kmes import KmeLayer
from qkdtwin.twin.links import LinkEngine
from qkdtwin.twin.qber_rule import QberDecision

__all__ = [
    "AlarmRaised",
    "AlarmRestored",
    "LinkRestored",
    "ResponseEvent",
    "SimResponse",
    "links_down",
]


class AlarmRaised(TypedDict):
    """Event: an alarm was raised (and acted on)."""

    type: Literal["alarm"]
    alarm: AlarmRecord
    #: Set when the twin publishes the event (Unix s).
    wall_time: NotRequired[float]


class AlarmRestored(TypedDict):
    """Event: a link came back and its alarm ended."""

    type: Literal["restored"]
    alarm: AlarmRecord
    wall_time: NotRequired[float]


class LinkRestored(TypedDict):
    """Event: a link with no active alarm came back."""

    type: Literal["restored"]
    link: str
    wall_time: NotRequired[float]


#: An event of the response, to publish.
ResponseEvent = AlarmRaised | AlarmRestored | LinkRestored


def links_down(status: Mapping[str, str]) -> set[str]:
    """Links out of routing: every link whose status is not ``up``."""
    return {lid for lid, s in status.items() if s != "up"}


class SimResponse:
    """Discard, reroute and restore for the self-simulated twin.

    Parameters
    ----------
    links
        The link engines (for the alarm window of each link).
    status
        The twin's link statuses (``up``, ``alarm``, ``recovering``), updated in place.
    kmes, keynet, alarms
        The KME stores, the key network (pools and relay paths) and the alarm log.
    """

    def __init__(
        self,
        links: Mapping[str, LinkEngine],
        status: dict[str, str],
        kmes: KmeLayer,
        keynet: KeyNetwork,
        alarms: AlarmLog,
    ) -> None:
        self.links = links
        self.status = status
        self.kmes = kmes
        self.keynet = keynet
        self.alarms = alarms

    def down(self) -> set[str]:
        """Links out of routing (:func:`links_down`)."""
        return links_down(self.status)

    def apply(self, decision: QberDecision, t: float) -> list[ResponseEvent]:
        """Act on one decision at simulated time ``t``; return the events to publish."""
        if decision.action == "raise":
            return self.raise_alarm(decision, t)
        return self.restore(decision, t)

    def apply_all(self, decisions: list[QberDecision], t: float) -> list[ResponseEvent]:
        """Act on the decisions in order; return all their events."""
        events: list[ResponseEvent] = []
        for d in decisions:
            events += self.apply(d, t)
        return events

    def raise_alarm(self, decision: QberDecision, t: float) -> list[ResponseEvent]:
        """Raise the alarm, discard the link's recent keys and reroute the pools around it."""
        lid = decision.link
        alarm = self.alarms.raise_alarm(lid, t, decision.qber, decision.threshold)
        t0 = time.perf_counter()
        self.status[lid] = "alarm"
        nblocks = self.links[lid].window_blocks()
        kme_gone = self.kmes.discard(lid, nblocks)
        pool_gone = self.keynet.discard_recent(lid, nblocks)
        alarm.log("key_discarded", t, kme_keys=kme_gone, pool_keys=pool_gone, blocks=nblocks)
        kn = self.keynet
        changed = kn.reroute(self.down())
        alarm.reroute_ms = (time.perf_counter() - t0) * 1e3
        alarm.log(
            "rerouted",
            t,
            pools_rerouted=[
                f"{kn.pairs[i][0]}|{kn.pairs[i][1]}" for i in changed if kn.paths[i] is not None
            ],
            pools_cut=[
                f"{kn.pairs[i][0]}|{kn.pairs[i][1]}" for i in changed if kn.paths[i] is None
            ],
            reroute_ms=alarm.reroute_ms,
        )
        self.alarms.save(alarm)
        return [{"type": "alarm", "alarm": alarm.to_dict()}]

    def restore(self, decision: QberDecision, t: float) -> list[ResponseEvent]:
        """Bring a recovered link back into routing and end its alarm."""
        lid = decision.link
        self.status[lid] = "up"
        self.keynet.reroute(self.down())
        active = self.alarms.active_for(lid)
        if active is None:
            return [{"type": "restored", "link": lid}]
        active.active = False
        active.log("restored", t, qber=decision.qber)
        self.alarms.save(active)
        return [{"type": "restored", "alarm": active.to_dict()}]

    def attack_cleared(self, lid: str, t: float) -> None:
        """Log the operator's clearing of the attack; an alarmed link becomes ``recovering``."""
        alarm = self.alarms.active_for(lid)
        if alarm is not None:
            alarm.log("attack_cleared", t)
            self.alarms.save(alarm)
        if self.status[lid] == "alarm":
            self.status[lid] = "recovering"
