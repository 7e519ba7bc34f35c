"""Trusted-relay key paths and what relaying costs each generation resource.

A key for the pool of a node pair ``(a, b)`` that are not neighbours is relayed hop by hop
through trusted nodes (the OLT encrypts K1 with K2, the paper's "one relay generation";
several relays across OLTs). Relaying one key over a path of ``h`` hops consumes one key of
every hop's link, so it costs each generation *resource* (a link with its own rate, or a
shared budget such as an OLT's ``V``) as many keys as the path has hops on it.

:func:`relay_costs` compiles this into a sparse matrix ``A`` (resources x pools) stored as CSR
arrays: delivering rate ``v_p`` to every pool is feasible iff ``A @ v <= capacity``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network.topology import Topology

__all__ = ["RelayCosts", "key_path", "relay_costs"]


def key_path(topology: Topology, a: str, b: str) -> list[str]:
    """Fewest-hop trusted-relay path between ``a`` and ``b`` (deterministic tie-break).

    Raises
    ------
    UnknownNameError
        If a node does not exist.
    ConfigError
        If ``a == b`` or the nodes are not connected.

    Examples
    --------
    >>> from qkdtwin.network import seed_topology
    >>> key_path(seed_topology(), "GW1.1", "GW1.2")
    ['GW1.1', 'OLT1', 'GW1.2']
    """
    g = topology.graph
    for end in (a, b):
        if end not in g:
            raise UnknownNameError(f"unknown node {end!r}", field="demands", value=end)
    if a == b:
        raise ConfigError(f"demand from {a!r} to itself", field="demands", value=a)
    try:
        return [str(n) for n in nx.shortest_path(g, a, b)]
    except nx.NetworkXNoPath:
        raise ConfigError(
            f"no QKD path between {a!r} and {b!r} (disconnected)",
            field="demands",
            value=f"{a}-{b}",
        ) from None


@dataclass(frozen=True)
class RelayCosts:
    """Cost of relaying, compiled for the engine.

    Attributes
    ----------
    resources
        Resource names: a group name or ``"a-b"`` for a link with its own rate.
    capacity
        Rate of each resource, keys per time unit.
    pool_ptr, hop_res, hop_cnt
        CSR rows per pool: resources ``hop_res[pool_ptr[p]:pool_ptr[p+1]]`` each used
        ``hop_cnt`` times per delivered key.
    paths
        The relay path of each pool.
    """

    resources: tuple[str, ...]
    capacity: NDArray[np.float64]
    pool_ptr: NDArray[np.int64]
    hop_res: NDArray[np.int64]
    hop_cnt: NDArray[np.float64]
    paths: tuple[tuple[str, ...], ...]

    def dense(self) -> NDArray[np.float64]:
        """Return the matrix ``A`` (resources x pools) as a dense array (small networks only)."""
        n_pools = self.pool_ptr.size - 1
        a = np.zeros((self.capacity.size, n_pools))
        for p in range(n_pools):
            for k in range(self.pool_ptr[p], self.pool_ptr[p + 1]):
                a[self.hop_res[k], p] += self.hop_cnt[k]
        return a

    def hops(self, p: int) -> int:
        """Return the number of hops (links) of pool ``p``'s relay path."""
        return len(self.paths[p]) - 1


def relay_costs(topology: Topology, pairs: list[tuple[str, str]]) -> RelayCosts:
    """Relay paths of ``pairs`` and the resource-cost matrix they imply.

    Raises
    ------
    ConfigError
        If a pair has an unknown or disconnected end (see :func:`key_path`).
    """
    names: list[str] = []
    index: dict[str, int] = {}
    caps: list[float] = []
    for name, rate in topology.groups.items():
        index[name] = len(names)
        names.append(name)
        caps.append(rate)
    ptr = [0]
    res: list[int] = []
    cnt: list[float] = []
    paths: list[tuple[str, ...]] = []
    # an end shared by many pairs (a data centre, a KME) gets one BFS instead of one per pair
    freq: dict[str, int] = {}
    for a, b in pairs:
        freq[a] = freq.get(a, 0) + 1
        freq[b] = freq.get(b, 0) + 1
    trees: dict[str, dict[Any, list[Any]]] = {}
    for a, b in pairs:
        hub, other = (a, b) if freq.get(a, 0) >= freq.get(b, 0) else (b, a)
        if freq[hub] >= 8 and hub in topology.graph and other in topology.graph and hub != other:
            if hub not in trees:
                trees[hub] = nx.single_source_shortest_path(topology.graph, hub)
            found = trees[hub].get(other)
            if found is None:
                path = key_path(topology, a, b)  # raises the disconnected error
            else:
                path = [str(n) for n in found]
                if path[0] != a:
                    path.reverse()
        else:
            path = key_path(topology, a, b)
        paths.append(tuple(path))
        use: dict[int, float] = {}
        for u, v in itertools.pairwise(path):
            d = topology.graph.edges[u, v]
            key = d["group"] if d["group"] is not None else "-".join(sorted((u, v)))
            if key not in index:
                index[key] = len(names)
                names.append(key)
                caps.append(float(d["key_rate"]))
            r = index[key]
            use[r] = use.get(r, 0.0) + 1.0
        for r in sorted(use):
            res.append(r)
            cnt.append(use[r])
        ptr.append(len(res))
    return RelayCosts(
        resources=tuple(names),
        capacity=np.asarray(caps, dtype=np.float64),
        pool_ptr=np.asarray(ptr, dtype=np.int64),
        hop_res=np.asarray(res, dtype=np.int64),
        hop_cnt=np.asarray(cnt, dtype=np.float64),
        paths=tuple(paths),
    )
