"""The twin's response to an alarm: relay paths around the alarmed links, logged.

Every demand pair of the attach file's network (the pools) relays its key hop by hop over the
fewest-hop path of trusted nodes through links that are up (as the live twin and the network
engine do, :class:`~qkdtwin.twin.keynet.KeyNetwork`). On an alarm the link leaves the routing
and every pair whose path crossed it is rerouted, or listed as cut when no other path exists;
on recovery the direct paths come back. In this issue the new paths are the twin's
recommendation, shown and logged; acting on the network (disabling the link at its KMEs,
steering the KMEs' relays) is the closed loop of the next step.
"""

from __future__ import annotations

from typing import TypedDict

from qkdtwin.network import Demand, Topology
from qkdtwin.twin.keynet import KeyNetwork

__all__ = ["RerouteResult", "Responder", "Route"]


class RerouteResult(TypedDict):
    """What a reroute changed (:meth:`Responder.reroute`): pools by ``A|B`` id, links by id."""

    pools_rerouted: list[str]
    pools_cut: list[str]
    links_down: list[str]


class Route(TypedDict):
    """One demand pair's current relay path (:meth:`Responder.routes`; ``None``: cut)."""

    id: str
    path: list[str] | None
    hops: int | None


class Responder:
    """Relay paths of the network's demand pairs over the links that are up.

    Parameters
    ----------
    topology, demands
        The attach file's network.
    """

    def __init__(self, topology: Topology, demands: list[Demand]) -> None:
        self.keynet = KeyNetwork(
            topology,
            demands,
            pool_capacity=1.0,
            keys_per_service=1.0,
            policy="static",
            horizon_s=1.0,
            initial_fill="empty",
        )
        self.down: set[str] = set()

    def reroute(self, down: set[str]) -> RerouteResult:
        """Recompute the paths without the links in ``down``; return what changed."""
        self.down = set(down)
        changed = self.keynet.reroute(self.down)
        kn = self.keynet
        return {
            "pools_rerouted": [
                f"{kn.pairs[i][0]}|{kn.pairs[i][1]}" for i in changed if kn.paths[i] is not None
            ],
            "pools_cut": [
                f"{kn.pairs[i][0]}|{kn.pairs[i][1]}" for i in changed if kn.paths[i] is None
            ],
            "links_down": sorted(self.down),
        }

    def routes(self) -> list[Route]:
        """Every pair's current path (``None``: cut)."""
        kn = self.keynet
        out: list[Route] = []
        for i, (a, b) in enumerate(kn.pairs):
            p = kn.paths[i]
            out.append(
                {
                    "id": f"{a}|{b}",
                    "path": None if p is None else [str(x) for x in p],
                    "hops": None if p is None else len(p) - 1,
                }
            )
        return out
