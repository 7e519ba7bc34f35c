"""The closed loop: the attached twin acts on the KMEs when it raises an alarm.

On an alarm on link ``A-B`` the twin asks both KMEs, through their operator interface
(operator certificate; SAE and peer-KME certificates get 401), to

1. stop key delivery and relaying over the link: ``POST /kme/v1/links/{peer}/state
   {"enabled": false}`` at A (peer B) and at B (peer A), and have every other KME route its
   relays around it: ``POST /kme/v1/network/A/B/state {"enabled": false}``;
2. erase the link's keys added since the estimated change point: ``POST
   /kme/v1/links/{peer}/discard {"since": onset}`` at both (the onset converted from the
   modules' clock to wall-clock time, the KMEs' clock, with the attach file's clock);

and reads the effect back from ``GET /kme/v1/links`` (the link reported ``enabled: false``).
When the link is restored it discards the keys stored since the onset again (those distilled
while in alarm) and re-enables it at both KMEs, and reads that back too. Rerouting
the relay paths is the twin's own (:mod:`qkdtwin.twin.respond`).

Actuation is **off by default** (``--actuate off``): the twin may be pointed at someone's real
network. Off, and always in a replay, every action is planned and logged (``"performed":
false``) but nothing is sent. Actions run on a worker thread, in order, so the telemetry ingest
never waits for a KME; each records when it was sent, when the KME acknowledged it, the KME's
answer or the error, and the observed effect.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from qkdtwin.errors import ConfigError, QkdTwinError

__all__ = ["ACTUATE_MODES", "QUOTA_BURST_S", "Action", "ActionDetail", "Actuator", "OperatorApi"]

ActionKind = Literal["disable", "discard", "enable", "avoid", "allow", "rekey", "quota"]

ACTUATE_MODES = ("off", "on")
#: A relay quota set by the closed loop holds this many seconds of its rate (its burst).
QUOTA_BURST_S = 10.0


class OperatorApi(Protocol):
    """What the actuator needs of a KME's operator client (:class:`~qkdtwin.kms.OperatorClient`).

    The answers are the KME's JSON objects, read by key (the client types them exactly).
    """

    def set_link_state(self, peer: str, enabled: bool) -> Mapping[str, Any]:
        """Stop or resume the link to ``peer``."""
        ...

    def set_route_state(self, a: str, b: str, enabled: bool) -> Mapping[str, Any]:
        """Stop or allow relays over the link ``a``-``b``."""
        ...

    def discard_since(self, peer: str, since: float) -> Mapping[str, Any]:
        """Erase the link's keys added since ``since``."""
        ...

    def set_relay_quota(
        self, destination: str, keys_per_s: float | None, burst: int | None = None
    ) -> Mapping[str, Any]:
        """Limit the keys relayed toward ``destination`` (``None``: no limit)."""
        ...

    def relay_quotas(self) -> Sequence[Mapping[str, Any]]:
        """Read the KME's relay quotas (``destination``, ``keys_per_s``, ...)."""
        ...

    def links(self) -> Any:
        """Read the KME's link counts (``.links[].peer``, ``.enabled``)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class ActionDetail(TypedDict):
    """The alarm-log form of an :class:`Action` (:meth:`Action.to_detail`)."""

    action: ActionKind
    kme: str
    peer: str
    reason: str
    since: float | None
    #: ``quota`` only.
    keys_per_s: NotRequired[float | None]
    performed: bool
    planned_at: float | None
    sent_at: float | None
    acked_at: float | None
    effect_at: float | None
    #: The KME's answer (its JSON) and what the read-back showed.
    answer: Mapping[str, Any]
    effect: dict[str, Any]
    error: str | None


@dataclass
class Action:
    """One action of the closed loop (planned, then performed or not).

    Attributes
    ----------
    kind
        ``disable``, ``discard`` or ``enable`` (at an end of the link), ``avoid`` or ``allow``
        (relays over the link, at every other KME), ``rekey`` (an IIoT gateway whose keys
        crossed the link: ``kme`` holds the edge ID, ``peer`` its node, ``topic`` the command
        topic, ``payload`` the command when it is not the JSON one, e.g. a Sparkplug NCMD),
        ``quota`` (a relay quota at ``kme`` toward ``peer``: ``keys_per_s``, or
        ``None`` to remove it).
    kme, peer
        The KME acted on and the other end of the link (``avoid``/``allow``: the link's
        ends, ``peer`` holding ``A-B``).
    link
        The link id.
    reason
        Why (the alarm's statistic, or ``restored``).
    since
        ``discard`` only: erase keys added at or after this network time, s.
    keys_per_s
        ``quota`` only: the relay rate set, keys/s (``None``: quota removed).
    performed
        Whether it was sent (``False``: actuation off, or a replay).
    planned_at, sent_at, acked_at, effect_at
        Wall-clock times (Unix s): planned (when the twin raised the alarm or restored the
        link), sent, acknowledged by the KME, effect read back.
    answer
        The KME's answer (``enabled``, ``discarded``...).
    effect
        What the read-back showed (``{"enabled": false}``).
    error
        Why it failed, if it did.
    """

    kind: ActionKind
    kme: str
    peer: str
    link: str
    reason: str
    since: float | None = None
    pair: tuple[str, str] | None = None
    topic: str | None = None
    payload: bytes | None = field(default=None, repr=False)
    keys_per_s: float | None = None
    performed: bool = False
    planned_at: float | None = None
    sent_at: float | None = None
    acked_at: float | None = None
    effect_at: float | None = None
    answer: Mapping[str, Any] = field(default_factory=dict)
    effect: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_detail(self) -> ActionDetail:
        """Return the alarm-log form of this action."""
        detail: ActionDetail = {
            "action": self.kind,
            "kme": self.kme,
            "peer": self.peer,
            "reason": self.reason,
            "since": self.since,
            "keys_per_s": self.keys_per_s,
            "performed": self.performed,
            "planned_at": self.planned_at,
            "sent_at": self.sent_at,
            "acked_at": self.acked_at,
            "effect_at": self.effect_at,
            "answer": self.answer,
            "effect": self.effect,
            "error": self.error,
        }
        if self.kind != "quota":
            del detail["keys_per_s"]  # a quota's rate only
        return detail


class Actuator:
    """Plans the closed loop's actions and, when on, performs them on a worker thread.

    Parameters
    ----------
    clients
        Per KME node, a factory of its operator client (called on the worker thread, once).
    mode
        ``"off"`` (default: plan and log only) or ``"on"``.
    on_done
        Called with each finished batch ``(tag, actions)`` (on the worker thread when on).
    wall
        Wall clock, s (tests).

    Raises
    ------
    ConfigError
        For an unknown mode.
    """

    def __init__(
        self,
        clients: Mapping[str, Callable[[], OperatorApi]],
        mode: str = "off",
        *,
        on_done: Callable[[Any, list[Action]], None] | None = None,
        wall: Callable[[], float] = time.time,
        publish: Callable[[str, bytes], None] | None = None,
    ) -> None:
        if mode not in ACTUATE_MODES:
            raise ConfigError(
                f"actuate must be off or on, got {mode!r}", field="actuate", value=mode
            )
        self.mode = mode
        self._factories = dict(clients)
        self._clients: dict[str, OperatorApi] = {}
        self.on_done = on_done
        self._wall = wall
        #: Publishes on the IIoT broker (the gateways' rekey commands); set by the runner.
        self.publish = publish
        self._queue: queue.Queue[tuple[Any, list[Action]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def on(self) -> bool:
        """Whether actions are sent."""
        return self.mode == "on"

    def plan_alarm(self, link: str, a: str, b: str, onset: float, reason: str) -> list[Action]:
        """Plan an alarm on ``link`` (ends ``a``, ``b``): disable, then discard, at both."""
        ends = [(n, p) for n, p in ((a, b), (b, a)) if n in self._factories]
        others = [n for n in self._factories if n not in (a, b)]
        return (
            [Action("disable", n, p, link, reason) for n, p in ends]
            + [Action("avoid", n, f"{a}-{b}", link, reason, pair=(a, b)) for n in others]
            + [Action("discard", n, p, link, reason, since=onset) for n, p in ends]
        )

    def plan_restore(self, link: str, a: str, b: str, since: float) -> list[Action]:
        """Plan a restored link: discard its keys stored since ``since``, then enable it.

        Keys the link distilled while in alarm may still come from the attack (the twin
        cannot date its end to the key): they are discarded before the link serves again.
        """
        ends = [(n, p) for n, p in ((a, b), (b, a)) if n in self._factories]
        others = [n for n in self._factories if n not in (a, b)]
        return (
            [Action("discard", n, p, link, "restored", since=since) for n, p in ends]
            + [Action("enable", n, p, link, "restored") for n, p in ends]
            + [Action("allow", n, f"{a}-{b}", link, "restored", pair=(a, b)) for n in others]
        )

    def plan_quotas(
        self, link: str, quotas: Mapping[tuple[str, str], float | None], reason: str
    ) -> list[Action]:
        """Plan relay quotas: ``{(source KME, destination KME): keys/s or None}``.

        Only sources the twin has an operator client for get one.
        """
        return [
            Action("quota", src, dst, link, reason, keys_per_s=rate)
            for (src, dst), rate in sorted(quotas.items())
            if src in self._factories
        ]

    @staticmethod
    def quota_burst(keys_per_s: float) -> int:
        """Return the burst of a closed-loop quota: QUOTA_BURST_S of its rate, >= 1 key."""
        return max(1, math.ceil(keys_per_s * QUOTA_BURST_S))

    def submit(self, tag: Any, actions: list[Action]) -> None:
        """Perform ``actions`` (in order) if on, then report them with ``tag`` to ``on_done``.

        Off, they are reported at once, unperformed.
        """
        if not actions:
            return
        now = self._wall()
        for act in actions:
            act.planned_at = now
        if not self.on:
            if self.on_done is not None:
                self.on_done(tag, actions)
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True, name="twin-actuate")
            self._thread.start()
        self._queue.put((tag, actions))

    def _client(self, node: str) -> OperatorApi:
        c = self._clients.get(node)
        if c is None:
            c = self._clients[node] = self._factories[node]()
        return c

    def perform(self, actions: list[Action]) -> list[Action]:
        """Send each action, then read its effect back (synchronously, in order)."""
        for act in actions:
            act.performed = True
            act.sent_at = self._wall()
            try:
                if act.kind == "rekey":
                    if self.publish is None or act.topic is None:
                        raise ConfigError("no MQTT connection to send the command", field="mqtt")
                    payload = act.payload
                    if payload is None:  # the qkdtwin/v1 command; Sparkplug's is prebuilt
                        payload = json.dumps({"rekey": True, "reason": act.reason}).encode()
                    self.publish(act.topic, payload)
                    act.acked_at = act.effect_at = self._wall()
                    act.effect = {"published": act.topic}
                    continue
                c = self._client(act.kme)
                if act.kind == "quota":
                    rate = act.keys_per_s
                    burst = None if rate is None else self.quota_burst(rate)
                    act.answer = c.set_relay_quota(act.peer, rate, burst)
                    act.acked_at = self._wall()
                    now = {q["destination"]: q["keys_per_s"] for q in c.relay_quotas()}
                    act.effect = {"keys_per_s": now.get(act.peer)}
                    act.effect_at = self._wall()
                    want = act.keys_per_s
                    if (now.get(act.peer) is None) != (want is None) or (
                        want is not None and abs(now[act.peer] - want) > 1e-9 * max(1.0, want)
                    ):
                        act.error = f"read back keys_per_s={now.get(act.peer)} after quota {want}"
                    continue
                if act.kind == "discard":
                    assert act.since is not None
                    act.answer = c.discard_since(act.peer, act.since)
                elif act.kind in ("avoid", "allow"):
                    assert act.pair is not None
                    x, y = act.pair
                    act.answer = c.set_route_state(x, y, act.kind == "allow")
                else:
                    act.answer = c.set_link_state(act.peer, act.kind == "enable")
                act.acked_at = self._wall()
                if act.kind in ("avoid", "allow"):
                    act.effect = {"enabled": act.answer.get("enabled")}
                    act.effect_at = act.acked_at
                elif act.kind != "discard":
                    links = c.links()
                    enabled = next((lk.enabled for lk in links.links if lk.peer == act.peer), None)
                    act.effect = {"enabled": enabled}
                    act.effect_at = self._wall()
                    if enabled != (act.kind == "enable"):
                        act.error = f"read back enabled={enabled} after {act.kind}"
                else:
                    act.effect = {"discarded": act.answer.get("discarded")}
                    act.effect_at = act.acked_at
            except (QkdTwinError, OSError) as exc:
                act.error = f"{type(exc).__name__}: {exc}"
        return actions

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            tag, actions = item
            self.perform(actions)
            if self.on_done is not None:
                self.on_done(tag, actions)

    def close(self) -> None:
        """Finish queued actions, stop the worker, close the clients."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(10.0)
        for c in self._clients.values():
            c.close()
        self._clients.clear()
