"""The network's configuration: default behaviour, links, zones and latency by message.

Latency of a message from ``src`` to ``dst`` is the first of these that is set,
from the most specific place to the least (:class:`~sim.kernel.network.Network`
applies it):

1. the link ``src -> dst`` (``network.links``; between two nodes, or a node and
   itself): its ``message_latency`` for the message's class, then for its kind,
   then its ``latency``;
2. a node's message to itself: ``network.self_latency``;
3. a client and its home node: ``network.client_latency``;
4. the zone pair (``network.zone_links``, zones from ``cluster.zones``): its
   ``message_latency`` for the class, then the kind, then its ``latency``;
5. ``network.message_latency`` for the class, then the kind; last ``network.latency``.

Loss, duplication and reordering take the link's value, else the zone pair's,
else the network's. Without zones a client's traffic to other nodes uses the
links of its home node (it sits next to it); with zones a client is in its home
node's zone and reaches every node over its zone's zone pairs, never over node links.

Transport: a message travels as a datagram (independent of every other: it
may be lost, duplicated or overtaken) or on a connection (per pair FIFO,
retransmitted until the connection breaks; :mod:`sim.kernel.transport`), as
``network.transport`` says (:class:`TransportConfig`).

A message's *kind* is the ``kind`` class variable its protocol declares on the
message class (``kind: ClassVar[str] = "write"``); a protocol lists its message
classes in :meth:`~sim.protocol.ProtocolConfig.message_types`, and the names a
``message_latency`` table accepts are those classes' names and kinds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .config import Duration, fld, positive, prob
from .dists import Constant, Dist, Exponential, parse_dist
from .errors import ScenarioError

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = [
    "MessageLatency",
    "Zones",
    "LinkConfig",
    "ZoneLinkConfig",
    "NetworkConfig",
    "TransportConfig",
    "message_kind",
    "message_names",
    "message_transport",
    "check_network",
]


def _is_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and name.replace("-", "").replace("_", "").isalnum()


class MessageLatency:
    """Latency by message kind or class name, e.g. ``{ write = "2ms", PutAck = "1ms" }``."""

    __slots__ = ("items",)

    def __init__(self, items: Mapping[str, Dist] | Iterable[tuple[str, Dist]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self.items: tuple[tuple[str, Dist], ...] = tuple((name, parse_dist(d, name)) for name, d in pairs)

    def get(self, name: str) -> Dist | None:
        for key, dist in self.items:
            if key == name:
                return dist
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.items)

    def __iter__(self) -> Iterator[tuple[str, Dist]]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MessageLatency) and dict(self.items) == dict(other.items)

    def __hash__(self) -> int:
        return hash(frozenset(self.items))

    def __repr__(self) -> str:
        return f"MessageLatency({dict(self.items)!r})"

    @classmethod
    def from_plain(cls, value: Any, path: str) -> MessageLatency:
        if isinstance(value, MessageLatency):
            return value
        if not isinstance(value, Mapping):
            raise ScenarioError(path, "must be a table of message kind or class name -> distribution, "
                                      f"got {type(value).__name__} {value!r}")
        items = []
        for name, dist in value.items():
            if not isinstance(name, str) or not name:
                raise ScenarioError(path, f"keys must be message kind or class names, got {name!r}")
            items.append((name, parse_dist(dist, f"{path}.{name}")))
        return cls(items)

    def to_plain(self) -> dict[str, Any]:
        return {name: dist.to_dict() for name, dist in self.items}


class Zones:
    """Zones (datacenters) and their nodes, e.g. ``{ dc1 = ["n1", "n2"], dc2 = ["n3"] }``."""

    __slots__ = ("items",)

    def __init__(self, items: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self.items: tuple[tuple[str, tuple[str, ...]], ...] = tuple((z, tuple(nodes)) for z, nodes in pairs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(zone for zone, _ in self.items)

    def of_nodes(self) -> dict[str, str]:
        """node -> its zone."""
        return {node: zone for zone, nodes in self.items for node in nodes}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Zones) and dict(self.items) == dict(other.items)

    def __hash__(self) -> int:
        return hash(frozenset(self.items))

    def __repr__(self) -> str:
        return f"Zones({dict(self.items)!r})"

    @classmethod
    def from_plain(cls, value: Any, path: str) -> Zones:
        if isinstance(value, Zones):
            return value
        if not isinstance(value, Mapping):
            raise ScenarioError(path, f"must be a table of zone name -> list of nodes, got {type(value).__name__} "
                                      f"{value!r}")
        items = []
        for zone, nodes in value.items():
            zpath = f"{path}.{zone}"
            if not _is_name(zone):
                raise ScenarioError(path, f"zone names are letters, digits, '-' or '_', got {zone!r}")
            if not isinstance(nodes, (list, tuple)) or not nodes:
                raise ScenarioError(zpath, f"must be a non-empty list of node names, got {nodes!r}")
            for i, node in enumerate(nodes):
                if not isinstance(node, str):
                    raise ScenarioError(f"{zpath}[{i}]", f"must be a node name, got {type(node).__name__} {node!r}")
            items.append((zone, tuple(nodes)))
        return cls(items)

    def to_plain(self) -> dict[str, Any]:
        return {zone: list(nodes) for zone, nodes in self.items}

    def check(self, nodes: tuple[str, ...], path: str) -> None:
        """Every cluster node is in exactly one zone, and every zone names cluster nodes only."""
        known = set(nodes)
        seen: dict[str, str] = {}
        for zone, members in self.items:
            for i, node in enumerate(members):
                if node not in known:
                    raise ScenarioError(f"{path}.{zone}[{i}]",
                                        f"unknown node {node!r}; cluster nodes are {', '.join(nodes)}")
                if node in seen:
                    raise ScenarioError(f"{path}.{zone}[{i}]", f"node {node!r} is already in zone {seen[node]!r}")
                seen[node] = zone
        missing = [n for n in nodes if n not in seen]
        if missing:
            raise ScenarioError(path, f"every node must be in a zone; {', '.join(missing)} in none")


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """Overrides for the link ``src -> dst`` (and ``dst -> src`` when ``symmetric``).

    ``src == dst`` is a node's link to itself (its own replica: local processing
    or disk); it takes precedence over ``network.self_latency``.
    """

    src: str = fld()
    dst: str = fld()
    symmetric: bool = fld(True)
    latency: Dist | None = fld(None)
    loss: float | None = fld(None, check=prob)
    duplicate: float | None = fld(None, check=prob)
    reorder: float | None = fld(None, check=prob)
    message_latency: MessageLatency | None = fld(None, doc="latency by message kind or class name on this link")

    def pairs(self) -> list[tuple[str, str]]:
        """The directed pairs this link sets."""
        if self.symmetric and self.src != self.dst:
            return [(self.src, self.dst), (self.dst, self.src)]
        return [(self.src, self.dst)]


@dataclass(frozen=True, kw_only=True)
class ZoneLinkConfig(LinkConfig):
    """Overrides between zone ``src`` and zone ``dst`` (``src == dst``: inside one zone)."""


TRANSPORTS = ("datagram", "connection")


@dataclass(frozen=True, kw_only=True)
class TransportConfig:
    """How messages travel: as datagrams, or on connections (:mod:`sim.kernel.transport`).

    ``mode = "protocol"`` (the default) puts each message class where its
    protocol declares (a ``transport`` class variable: the messaging broker's
    AMQP frames on connections, as AMQP runs over TCP; every other message a
    datagram); ``"datagram"`` or ``"connection"`` puts every message there.
    ``connection`` and ``datagram`` then name message classes or kinds that go
    the other way. A connection retransmits what is not acknowledged after
    ``rto``, doubling up to ``rto_max``, and breaks when its oldest
    unacknowledged data has seen no progress for ``timeout`` (TCP's user
    timeout; Linux's default retries give up after about 15 minutes). With
    ``heartbeat`` set, each end also sends a heartbeat every ``heartbeat / 2``
    and breaks the connection when it has heard nothing from the peer for
    ``heartbeat`` (RabbitMQ's semantics: two missed heartbeats), idle or not.
    The messaging broker's AMQP connections keep their own heartbeat
    (``protocol.heartbeat``) and need none here.
    """

    mode: Literal["protocol", "datagram", "connection"] = fld("protocol")
    connection: tuple[str, ...] = fld((), doc="message classes or kinds sent on connections whatever the mode")
    datagram: tuple[str, ...] = fld((), doc="message classes or kinds sent as datagrams whatever the mode")
    timeout: Duration = fld(900_000.0, check=positive, doc="a connection breaks after this long without progress")
    rto: Duration = fld(200.0, check=positive, doc="first retransmission timeout")
    rto_max: Duration = fld(120_000.0, check=positive, doc="largest retransmission timeout (it doubles up to this)")
    heartbeat: Duration | None = fld(None, check=positive,
                                     doc="break a connection after this long without hearing the peer (none: never)")

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if self.rto_max < self.rto:
            raise ScenarioError(f"{prefix}rto_max", f"must be >= rto ({self.rto} ms), got {self.rto_max}")
        for name in ("connection", "datagram"):
            seen: set[str] = set()
            for i, item in enumerate(getattr(self, name)):
                if not item:
                    raise ScenarioError(f"{prefix}{name}[{i}]", "must be a message class name or kind, got ''")
                if item in seen:
                    raise ScenarioError(f"{prefix}{name}[{i}]", f"{item!r} is listed twice")
                seen.add(item)
        both = [n for n in self.connection if n in self.datagram]
        if both:
            raise ScenarioError(f"{prefix}datagram", f"{both[0]!r} is also listed in connection; a message "
                                                     "travels one way")

    def on_connection(self, cls: type) -> bool:
        """Whether messages of class ``cls`` travel on connections."""
        names = (cls.__name__, message_kind(cls))
        if any(n in self.connection for n in names if n is not None):
            return True
        if any(n in self.datagram for n in names if n is not None):
            return False
        if self.mode == "protocol":
            return message_transport(cls) == "connection"
        return self.mode == "connection"


def _check_links(links: tuple[LinkConfig, ...], path: str) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, link in enumerate(links):
        for pair in link.pairs():
            if pair in seen:
                raise ScenarioError(f"{path}[{i}]", f"link {pair[0]} -> {pair[1]} is already set by "
                                                    f"{path.rpartition('.')[2]}[{seen[pair]}]")
            seen[pair] = i


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Default link behaviour, per-link and per-zone-pair overrides, latency by message.

    ``reorder`` is the probability that a message gets an extra delay drawn
    from ``reorder_delay``, which lets later messages overtake it.
    ``client_latency`` is the latency between a client and its home node (it
    sits next to it); ``self_latency`` that of a node's message to itself (its
    own replica); unset, they fall back like any other pair. The module
    docstring gives the order in which latencies take precedence.
    """

    latency: Dist = fld(Constant(1.0))
    client_latency: Dist | None = fld(None)
    loss: float = fld(0.0, check=prob)
    duplicate: float = fld(0.0, check=prob)
    reorder: float = fld(0.0, check=prob)
    reorder_delay: Dist = fld(Exponential(10.0))
    links: tuple[LinkConfig, ...] = fld(())
    self_latency: Dist | None = fld(None, doc="a node's message to itself (its own replica)")
    message_latency: MessageLatency | None = fld(None, doc="latency by message kind or class name")
    zone_links: tuple[ZoneLinkConfig, ...] = fld((), doc="overrides between zones; src = dst inside one")
    transport: TransportConfig = fld(TransportConfig(), doc="datagrams or connections, by message")

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        _check_links(self.links, f"{prefix}links")
        _check_links(self.zone_links, f"{prefix}zone_links")

    def node_refs(self) -> list[tuple[str, str]]:
        return [(f"links[{i}].{k}", getattr(link, k)) for i, link in enumerate(self.links) for k in ("src", "dst")]

    def by_message(self) -> bool:
        """Whether any latency is set by message kind or class (the network then caches per message class)."""
        return bool(self.message_latency) or any(link.message_latency for link in (*self.links, *self.zone_links))


def message_kind(cls: type) -> str | None:
    """The ``kind`` a message class declares (a class variable), or ``None``."""
    kind = getattr(cls, "kind", None)
    return kind if isinstance(kind, str) else None


def message_transport(cls: type) -> str:
    """How a message class's protocol says it travels: its ``transport`` class variable, else ``"datagram"``."""
    transport = getattr(cls, "transport", None)
    return transport if transport in TRANSPORTS else "datagram"


def message_names(types: Iterable[type]) -> tuple[str, ...]:
    """The names a ``message_latency`` table accepts for these message classes: class names, then kinds."""
    types = tuple(types)
    names = [t.__name__ for t in types]
    for t in types:
        kind = message_kind(t)
        if kind is not None and kind not in names:
            names.append(kind)
    return tuple(names)


def check_network(scenario: Scenario) -> None:
    """Cross-checks that need the cluster and the protocol: zone names, and message names in latency tables."""
    net = scenario.network
    zones = scenario.cluster.zones
    for i, link in enumerate(net.zone_links):
        for end in ("src", "dst"):
            zone = getattr(link, end)
            if zones is None:
                raise ScenarioError(f"network.zone_links[{i}].{end}", "needs cluster.zones (no zones are defined)")
            if zone not in zones.names:
                raise ScenarioError(f"network.zone_links[{i}].{end}",
                                    f"unknown zone {zone!r}; zones are {', '.join(zones.names)}")
    tables = [("network.message_latency", net.message_latency)]
    tables += [(f"network.links[{i}].message_latency", link.message_latency) for i, link in enumerate(net.links)]
    tables += [(f"network.zone_links[{i}].message_latency", link.message_latency)
               for i, link in enumerate(net.zone_links)]
    types = scenario.protocol.message_types()
    accepted = message_names(types)
    named = [(f"network.transport.{k}", tuple(getattr(net.transport, k))) for k in ("connection", "datagram")]
    for path, names in named:
        for i, name in enumerate(names):
            if name not in accepted:
                known = ", ".join(accepted) or f"none: protocol {scenario.protocol.tag!r} declares no message types"
                raise ScenarioError(f"{path}[{i}]", f"unknown message kind or class {name!r}; accepted: {known}")
    for path, table in tables:
        for name in table.names if table else ():
            if name in accepted:
                continue
            if not accepted:
                raise ScenarioError(path, f"protocol {scenario.protocol.tag!r} declares no message types, so "
                                          "latency cannot be set by message (a protocol lists its message "
                                          "classes in message_types())")
            raise ScenarioError(f"{path}.{name}", f"unknown message kind or class; protocol "
                                                  f"{scenario.protocol.tag!r} accepts {', '.join(accepted)}")
