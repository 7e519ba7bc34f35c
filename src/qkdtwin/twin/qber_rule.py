"""Detection for the self-simulated twin: the windowed-QBER alarm rule, as pure decisions.

A link that is ``up`` raises an alarm exactly when its alarm QBER (the windowed QBER,
:func:`qkdtwin.twin.links.windowed_qber`, :meth:`LinkEngine.alarm_qber`) exceeds its threshold;
a ``recovering`` link (its attack was cleared) is restored as soon as that QBER is at or under
the threshold again. A NaN QBER (no sifted bits yet) decides nothing, and a link in ``alarm``
stays there until the operator clears the attack. The functions here only return
:class:`QberDecision` values; acting on them (discarding keys, rerouting, logging) is the
response's job (:class:`qkdtwin.twin.sim_respond.SimResponse`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from qkdtwin.twin.links import LinkEngine

__all__ = ["QberDecision", "check_link", "check_links", "decide"]


@dataclass(frozen=True)
class QberDecision:
    """What the rule decided for one link.

    Attributes
    ----------
    link
        Link id.
    action
        ``raise``: the link was up and its alarm QBER is above the threshold; ``restore``: it was
        recovering and its alarm QBER is back at or under the threshold.
    qber, threshold
        The alarm QBER and the link's threshold the decision compared.
    """

    link: str
    action: Literal["raise", "restore"]
    qber: float
    threshold: float


def decide(link: str, status: str, qber: float, threshold: float) -> QberDecision | None:
    """Apply the rule to one link's ``status`` and alarm ``qber``; ``None``: nothing to do.

    Examples
    --------
    >>> decide("A-B", "up", 0.09, 0.08).action
    'raise'
    >>> decide("A-B", "up", 0.08, 0.08) is None
    True
    >>> decide("A-B", "recovering", 0.08, 0.08).action
    'restore'
    >>> decide("A-B", "up", float("nan"), 0.08) is None
    True
    """
    if math.isnan(qber):
        return None
    if status == "up" and qber > threshold:
        return QberDecision(link, "raise", qber, threshold)
    if status == "recovering" and qber <= threshold:
        return QberDecision(link, "restore", qber, threshold)
    return None


def check_link(link: str, engine: LinkEngine, status: str) -> QberDecision | None:
    """Apply the rule to one link engine in ``status`` (reads its windowed QBER only)."""
    return decide(link, status, engine.alarm_qber(), engine.qber_threshold)


def check_links(
    links: Mapping[str, LinkEngine],
    status: Mapping[str, str],
    ids: Iterable[str] | None = None,
) -> list[QberDecision]:
    """Return the decisions for the links ``ids`` (default all), in order, leaving out "none"."""
    out: list[QberDecision] = []
    for lid in links if ids is None else ids:
        d = check_link(lid, links[lid], status[lid])
        if d is not None:
            out.append(d)
    return out
