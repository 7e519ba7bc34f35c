"""Deterministic layered layout of a topology for the dashboard's SVG view.

Nodes are placed in rows by role (metro, then OLT / relay / KME / server, then edge gateways,
then IoT devices); a row is ordered by a depth-first walk from the top row so that children sit
under their parent, and every parent is centred over its children. Coordinates are in [0, 1].
"""

from __future__ import annotations

import networkx as nx

from qkdtwin.network import Topology

__all__ = ["layered_layout"]

_ROW = {"metro": 0, "kme": 1, "olt": 1, "relay": 1, "server": 1, "edge_gateway": 2, "iot_device": 3}


def layered_layout(topology: Topology) -> dict[str, tuple[float, float]]:
    """Return ``{node: (x, y)}`` with ``x, y`` in [0, 1] (``y`` grows downwards).

    Examples
    --------
    >>> from qkdtwin.network import seed_topology
    >>> pos = layered_layout(seed_topology())
    >>> pos["M1"][1] < pos["OLT1"][1] < pos["GW1.1"][1]
    True
    """
    g: nx.Graph = topology.graph
    rows = {n: _ROW.get(str(d.get("role")), 1) for n, d in g.nodes(data=True)}
    used_rows = sorted(set(rows.values()))
    row_y = {r: (i + 0.5) / len(used_rows) for i, r in enumerate(used_rows)}
    order: list[str] = []
    seen: set[str] = set()

    def walk(n: str) -> None:
        seen.add(n)
        order.append(n)
        kids = sorted((m for m in g.neighbors(n) if m not in seen and rows[m] > rows[n]), key=str)
        for m in kids:
            if m not in seen:
                walk(m)

    for n in sorted(g.nodes, key=lambda n: (rows[n], list(g.nodes).index(n))):
        if n not in seen:
            walk(n)
    pos: dict[str, tuple[float, float]] = {}
    for r in used_rows:
        members = [n for n in order if rows[n] == r]
        k = len(members)
        for i, n in enumerate(members):
            pos[str(n)] = ((i + 0.5) / k, row_y[r])
    return pos
