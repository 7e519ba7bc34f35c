"""Topologies of QKD key networks: nodes with roles, QKD links with key rates, shared budgets.

A :class:`Topology` is a :class:`networkx.Graph` plus *generation budgets*. Every link has a
secret-key rate (keys per time unit), given directly or derived from a physical description
through :func:`qkdtwin.qkd.analytic_key_rate`. A link may instead belong to a shared budget
(``group``): all links of a group draw on one total rate, like the paper's optical line
terminal (OLT) whose QKD equipment provides a total rate ``V`` to all its access links.

Builders: :func:`seed_topology` (the paper's three metro nodes, three OLTs, six gateways) and the
survey's four families :func:`centralized_topology`, :func:`distributed_topology`,
:func:`hierarchical_topology` and :func:`hybrid_topology`, and :func:`national_topology` (a
backbone ring, metro rings, OLTs and gateways, to 10^6 gateways), all reachable by name through
:func:`build_topology`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import networkx as nx

from qkdtwin._validate import in_range
from qkdtwin.errors import ConfigError, UnknownNameError

__all__ = [
    "BUILDERS",
    "ROLES",
    "Topology",
    "build_topology",
    "centralized_topology",
    "default_length_km",
    "distributed_topology",
    "hierarchical_topology",
    "hybrid_topology",
    "link_id",
    "national_topology",
    "physical_key_rate",
    "resolve_link",
    "seed_topology",
]

#: Node roles known to the twin.
ROLES = ("metro", "olt", "edge_gateway", "iot_device", "relay", "kme", "server")

_ACCESS_ROLES = ("edge_gateway", "iot_device")


def link_id(a: str, b: str) -> str:
    """Canonical id of the link between ``a`` and ``b``: the two names sorted, joined by ``-``.

    It is the resource name :func:`qkdtwin.network.relay_costs` gives a link with its own rate,
    and the link id of the twin, the plant and the link telemetry.

    Examples
    --------
    >>> link_id("OLT1", "GW1.1")
    'GW1.1-OLT1'
    """
    return "-".join(sorted((str(a), str(b))))


def resolve_link(name: str, known: Iterable[str]) -> str | None:
    """Canonical id of a link written ``A-B`` in either order, or ``None`` if not in ``known``.

    Node names may themselves contain ``-``: every split point is tried.

    Examples
    --------
    >>> resolve_link("OLT1-GW1.1", {"GW1.1-OLT1"})
    'GW1.1-OLT1'
    """
    known = set(known)
    if name in known:
        return name
    parts = name.split("-")
    for k in range(1, len(parts)):
        lid = link_id("-".join(parts[:k]), "-".join(parts[k:]))
        if lid in known:
            return lid
    return None


def default_length_km(role_a: str, role_b: str) -> float:
    """Default fibre length of a link by the roles of its ends, km.

    5 km for an access link (an end is an edge gateway or IoT device), 15 km for an OLT
    uplink, 30 km otherwise (backbone).
    """
    if role_a in _ACCESS_ROLES or role_b in _ACCESS_ROLES:
        return 5.0
    if "olt" in (role_a, role_b):
        return 15.0
    return 30.0


def physical_key_rate(
    protocol: str, length_km: float, preset: str = "gys", *, key_bits: int = 256
) -> float:
    """Secret keys per second of a fibre QKD link, from the ``qkdtwin.qkd`` analytic model.

    Parameters
    ----------
    protocol
        Protocol name (``decoy-bb84``, ``bb84``, ...).
    length_km
        Fibre length, km.
    preset
        Hardware preset of :func:`qkdtwin.qkd.get_preset`.
    key_bits
        Bits per key; the rate in keys/s is ``rate_bps / key_bits``.

    Returns
    -------
    float
        Keys per second (the twin's time unit is then one second).

    Raises
    ------
    ConfigError
        If the length is negative or the link yields no key.

    Examples
    --------
    >>> physical_key_rate("decoy-bb84", 20.0) > 1.0
    True
    """
    from qkdtwin.qkd import analytic_key_rate, build_link_model

    in_range("length_km", length_km, 0.0)
    rate = analytic_key_rate(protocol, build_link_model(protocol, length_km, preset)).rate_bps
    if not rate > 0:
        raise ConfigError(
            f"link of {length_km:g} km with {protocol} yields no key",
            field="length_km",
            value=length_km,
        )
    return float(rate) / key_bits


class TopologyNode(TypedDict):
    """A node of :meth:`Topology.to_dict`."""

    name: str
    role: str


class TopologyLink(TypedDict):
    """A link of :meth:`Topology.to_dict`: its ``group`` if it has one, else its ``key_rate``."""

    a: str
    b: str
    group: NotRequired[str]
    key_rate: NotRequired[float]


class TopologyGroup(TypedDict):
    """A key-rate group of :meth:`Topology.to_dict`."""

    name: str
    rate: float


class TopologyDict(TypedDict):
    """Plain-data description of a :class:`Topology` (the scenario format's ``topology``)."""

    nodes: list[TopologyNode]
    links: list[TopologyLink]
    groups: list[TopologyGroup]


@dataclass
class Topology:
    """A key network: graph of nodes and QKD links plus shared generation budgets.

    Attributes
    ----------
    graph
        Nodes carry ``role``; edges carry ``key_rate`` (keys per time unit, ``None`` when the
        link draws on a group) and ``group`` (name of a shared budget or ``None``).
    groups
        Shared budgets: name -> total rate (keys per time unit) of all links in the group.
    name
        Free label (the builder's name).
    """

    graph: nx.Graph = field(default_factory=nx.Graph)
    groups: dict[str, float] = field(default_factory=dict)
    name: str = "custom"

    def add_node(self, name: str, role: str = "relay") -> None:
        """Add a node; ``role`` is one of :data:`ROLES`."""
        if role not in ROLES:
            raise UnknownNameError(
                f"unknown node role {role!r}; known: {', '.join(ROLES)}",
                field="role",
                value=role,
                allowed=", ".join(ROLES),
            )
        self.graph.add_node(str(name), role=role)

    def add_group(self, name: str, rate: float) -> None:
        """Add a shared generation budget of ``rate`` keys per time unit."""
        in_range(f"groups.{name}.rate", rate, 0.0, low_open=True)
        self.groups[str(name)] = float(rate)

    def add_link(
        self,
        a: str,
        b: str,
        *,
        key_rate: float | None = None,
        group: str | None = None,
        protocol: str | None = None,
        length_km: float | None = None,
        preset: str = "gys",
    ) -> None:
        """Add a QKD link with a direct ``key_rate``, a physical description, or a ``group``.

        Raises
        ------
        ConfigError
            If an end is unknown, the rate is not positive, or the link has no rate source.
        """
        for end in (a, b):
            if end not in self.graph:
                raise UnknownNameError(
                    f"link {a}-{b}: unknown node {end!r}", field="links", value=end
                )
        if a == b:
            raise ConfigError(f"link {a}-{b} joins a node to itself", field="links", value=a)
        if group is not None:
            if group not in self.groups:
                raise UnknownNameError(
                    f"link {a}-{b}: unknown group {group!r}", field="links.group", value=group
                )
            rate = None
        elif key_rate is not None:
            rate = in_range("key_rate", key_rate, 0.0, low_open=True)
        elif protocol is not None and length_km is not None:
            rate = physical_key_rate(protocol, length_km, preset)
        else:
            raise ConfigError(
                f"link {a}-{b} needs key_rate, group, or protocol and length_km",
                field="links",
                value=f"{a}-{b}",
            )
        self.graph.add_edge(str(a), str(b), key_rate=rate, group=group)

    def role(self, node: str) -> str:
        """Role of ``node``."""
        return str(self.graph.nodes[node]["role"])

    def nodes_with_role(self, role: str) -> list[str]:
        """Nodes of one role, in insertion order."""
        return [n for n, d in self.graph.nodes(data=True) if d["role"] == role]

    def to_dict(self) -> TopologyDict:
        """Plain-data description (scenario format)."""
        links: list[TopologyLink] = []
        for a, b, d in self.graph.edges(data=True):
            row: TopologyLink = {"a": a, "b": b}
            if d["group"] is not None:
                row["group"] = d["group"]
            else:
                row["key_rate"] = d["key_rate"]
            links.append(row)
        return {
            "nodes": [{"name": n, "role": d["role"]} for n, d in self.graph.nodes(data=True)],
            "links": links,
            "groups": [{"name": k, "rate": v} for k, v in self.groups.items()],
        }


def _count(field_name: str, value: int, low: int = 1) -> int:
    if int(value) != value or value < low:
        raise ConfigError(
            f"{field_name} must be an integer >= {low}, got {value!r}",
            field=field_name,
            value=value,
            allowed=f">= {low}",
        )
    return int(value)


def seed_topology(
    olt_rate: float = 2.0,
    *,
    metros: int = 3,
    gateways_per_olt: int = 2,
    backbone_rate: float = 1e6,
) -> Topology:
    """Build the seed paper's network: metro nodes in a ring, one OLT each, two gateways per OLT.

    Parameters
    ----------
    olt_rate
        The paper's ``V``: total key rate of each OLT, shared by its access links (a group).
    metros
        Number of metro nodes (3 in the paper).
    gateways_per_olt
        Edge gateways under each OLT (2 in the paper).
    backbone_rate
        Key rate of every metro-metro and metro-OLT link; large by default so that, as in the
        paper, only the OLT budgets bind.

    Examples
    --------
    >>> t = seed_topology()
    >>> len(t.nodes_with_role("edge_gateway")), len(t.groups)
    (6, 3)
    """
    _count("metros", metros)
    _count("gateways_per_olt", gateways_per_olt)
    return _metro_tree(
        "seed",
        metros,
        1,
        gateways_per_olt,
        olt_rate,
        backbone_rate,
        metro=lambda m: f"M{m + 1}",
        olt=lambda m, _o: f"OLT{m + 1}",
        gateway=lambda m, _o, g: f"GW{m + 1}.{g + 1}",
    )


def _metro_tree(
    name: str,
    metros: int,
    olts_per_metro: int,
    gateways_per_olt: int,
    olt_rate: float,
    backbone_rate: float,
    *,
    metro: Callable[[int], str],
    olt: Callable[[int, int], str],
    gateway: Callable[[int, int, int], str],
) -> Topology:
    """Metro ring, OLTs under each metro node, gateways under each OLT sharing its budget.

    The one builder behind :func:`seed_topology` and :func:`hierarchical_topology` (they differ
    only in node names and in having one OLT per metro). Nodes and links are added in a fixed
    order (metros, the ring, then each metro's OLTs with their gateways): relay paths break
    ties by it, so the order is part of the result.
    """
    t = Topology(name=name)
    for m in range(metros):
        t.add_node(metro(m), "metro")
    if metros == 2:
        t.add_link(metro(0), metro(1), key_rate=backbone_rate)
    elif metros > 2:
        for m in range(metros):
            t.add_link(metro(m), metro((m + 1) % metros), key_rate=backbone_rate)
    for m in range(metros):
        for o in range(olts_per_metro):
            name_o = olt(m, o)
            t.add_node(name_o, "olt")
            t.add_group(name_o, olt_rate)
            t.add_link(metro(m), name_o, key_rate=backbone_rate)
            for g in range(gateways_per_olt):
                gw = gateway(m, o, g)
                t.add_node(gw, "edge_gateway")
                t.add_link(name_o, gw, group=name_o)
    return t


def centralized_topology(
    devices: int = 100, *, link_rate: float = 1.0, node_rate: float | None = None
) -> Topology:
    """One central QKD server (KME) with a direct QKD link to each of ``devices`` gateways.

    With ``node_rate`` the server's links share that total rate (a group) instead of
    ``link_rate`` each.
    """
    _count("devices", devices)
    t = Topology(name="centralized")
    t.add_node("KME", "kme")
    if node_rate is not None:
        t.add_group("KME", node_rate)
    for i in range(devices):
        t.add_node(f"D{i}", "edge_gateway")
        if node_rate is not None:
            t.add_link("KME", f"D{i}", group="KME")
        else:
            t.add_link("KME", f"D{i}", key_rate=link_rate)
    return t


def distributed_topology(
    nodes: int = 10,
    devices_per_node: int = 10,
    *,
    link_rate: float = 1.0,
    mesh_rate: float = 10.0,
    node_rate: float | None = None,
) -> Topology:
    """Build a full mesh of ``nodes`` trusted QKD nodes, each with ``devices_per_node`` gateways."""
    _count("nodes", nodes)
    _count("devices_per_node", devices_per_node)
    t = Topology(name="distributed")
    for i in range(nodes):
        t.add_node(f"N{i}", "relay")
    for i in range(nodes):
        for j in range(i + 1, nodes):
            t.add_link(f"N{i}", f"N{j}", key_rate=mesh_rate)
    for i in range(nodes):
        if node_rate is not None:
            t.add_group(f"N{i}", node_rate)
        for k in range(devices_per_node):
            t.add_node(f"D{i}.{k}", "edge_gateway")
            if node_rate is not None:
                t.add_link(f"N{i}", f"D{i}.{k}", group=f"N{i}")
            else:
                t.add_link(f"N{i}", f"D{i}.{k}", key_rate=link_rate)
    return t


def hierarchical_topology(
    metros: int = 4,
    olts_per_metro: int = 5,
    gateways_per_olt: int = 10,
    *,
    olt_rate: float = 10.0,
    backbone_rate: float = 1e6,
) -> Topology:
    """Core ring of metro nodes, OLTs under each, gateways under each OLT (OLT budget shared).

    ``metros * olts_per_metro * gateways_per_olt`` edge gateways; 10,000 with ``(10, 20, 50)``.
    """
    _count("metros", metros)
    _count("olts_per_metro", olts_per_metro)
    _count("gateways_per_olt", gateways_per_olt)
    return _metro_tree(
        "hierarchical",
        metros,
        olts_per_metro,
        gateways_per_olt,
        olt_rate,
        backbone_rate,
        metro=lambda m: f"M{m}",
        olt=lambda m, o: f"OLT{m}.{o}",
        gateway=lambda m, o, g: f"GW{m}.{o}.{g}",
    )


def national_topology(
    cores: int = 4,
    metros_per_core: int = 5,
    olts_per_metro: int = 10,
    gateways_per_olt: int = 100,
    *,
    olt_rate: float = 10.0,
    uplink_rate: float = 1e6,
    metro_rate: float = 1e6,
    backbone_rate: float = 1e6,
) -> Topology:
    """Build a national network: a backbone ring of cores, a metro ring under each, OLTs.

    Core nodes ``C{i}`` form the backbone ring (``backbone_rate`` per link). Each core closes a
    metro ring with its metro nodes ``M{i}.{j}`` (``C{i} - M{i}.0 - ... - M{i}.{m-1} - C{i}``,
    ``metro_rate`` per link). Each metro node has OLTs ``OLT{i}.{j}.{k}`` on an uplink of
    ``uplink_rate``, and each OLT's gateways ``GW{i}.{j}.{k}.{g}`` share its budget ``V =
    olt_rate`` (a group, as in the seed paper). ``cores * metros_per_core * olts_per_metro *
    gateways_per_olt`` gateways: 10^6 with ``(10, 10, 20, 500)`` (a GPON OLT serves hundreds
    to a few thousand subscribers). Rates in keys per time unit.

    Examples
    --------
    >>> t = national_topology(3, 2, 2, 2)
    >>> len(t.nodes_with_role("edge_gateway")), len(t.groups), t.graph.number_of_edges()
    (24, 12, 48)
    """
    _count("cores", cores)
    _count("metros_per_core", metros_per_core)
    _count("olts_per_metro", olts_per_metro)
    _count("gateways_per_olt", gateways_per_olt)
    t = Topology(name="national")
    for i in range(cores):
        t.add_node(f"C{i}", "metro")
    if cores == 2:
        t.add_link("C0", "C1", key_rate=backbone_rate)
    elif cores > 2:
        for i in range(cores):
            t.add_link(f"C{i}", f"C{(i + 1) % cores}", key_rate=backbone_rate)
    graph = t.graph
    for i in range(cores):
        ring = [f"C{i}"] + [f"M{i}.{j}" for j in range(metros_per_core)]
        for name in ring[1:]:
            t.add_node(name, "metro")
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            if a != b and not graph.has_edge(a, b):
                t.add_link(a, b, key_rate=metro_rate)
        for j in range(metros_per_core):
            for k in range(olts_per_metro):
                olt = f"OLT{i}.{j}.{k}"
                t.add_node(olt, "olt")
                t.add_group(olt, olt_rate)
                t.add_link(f"M{i}.{j}", olt, key_rate=uplink_rate)
                # gateways in bulk: add_node/add_link would validate each of up to 10^6 again
                gws = [f"GW{i}.{j}.{k}.{g}" for g in range(gateways_per_olt)]
                graph.add_nodes_from(gws, role="edge_gateway")
                graph.add_edges_from(((olt, gw) for gw in gws), key_rate=None, group=olt)
    return t


def hybrid_topology(
    clusters: int = 4,
    gateways_per_cluster: int = 25,
    *,
    link_rate: float = 1.0,
    node_rate: float | None = None,
) -> Topology:
    """Mesh of cluster heads (distributed core) with a star of gateways each (centralized edge).

    The survey's "hybrid" also mixes QKD with classical (post-quantum) key exchange; the key
    network only sees the QKD part, so the family differs from hierarchical by its meshed core
    and per-link (not pooled) access rates.
    """
    _count("clusters", clusters)
    _count("gateways_per_cluster", gateways_per_cluster)
    t = Topology(name="hybrid")
    for c in range(clusters):
        t.add_node(f"H{c}", "kme")
    for c in range(clusters):
        for d in range(c + 1, clusters):
            t.add_link(f"H{c}", f"H{d}", key_rate=10.0 * link_rate * math.sqrt(clusters))
    for c in range(clusters):
        if node_rate is not None:
            t.add_group(f"H{c}", node_rate)
        for g in range(gateways_per_cluster):
            t.add_node(f"D{c}.{g}", "edge_gateway")
            if node_rate is not None:
                t.add_link(f"H{c}", f"D{c}.{g}", group=f"H{c}")
            else:
                t.add_link(f"H{c}", f"D{c}.{g}", key_rate=link_rate)
    return t


BUILDERS = {
    "centralized": centralized_topology,
    "distributed": distributed_topology,
    "hierarchical": hierarchical_topology,
    "hybrid": hybrid_topology,
    "national": national_topology,
    "seed": seed_topology,
}


def build_topology(name: str, **params: Any) -> Topology:
    """Build a named family (:data:`BUILDERS`) with keyword parameters.

    Raises
    ------
    UnknownNameError
        If the builder does not exist.
    ConfigError
        If a parameter is unknown or out of range.
    """
    if name not in BUILDERS:
        raise UnknownNameError(
            f"unknown topology builder {name!r}; known: {', '.join(sorted(BUILDERS))}",
            field="topology.builder",
            value=name,
            allowed=", ".join(sorted(BUILDERS)),
        )
    try:
        topo: Topology = BUILDERS[name](**params)  # type: ignore[operator]
        return topo
    except TypeError as exc:
        raise ConfigError(
            f"bad parameters for topology {name!r}: {exc}", field="topology.params"
        ) from None
