"""The unreliable network: latency, loss, duplication, reordering and partitions.

All behaviour is data: a base config, per-link, per-zone-pair and per-message
overrides (:mod:`sim.netconfig` gives their precedence), and the faults the
kernel switches on and off (partitions and loss/duplication/latency windows).
Sending a message costs one SimPy heap entry (two when it is duplicated): a
lightweight event whose single callback hands the message to the receiver.
Effective parameters are computed once per (src, dst) pair, or per (src, dst,
message class) when some latency is set by message, and cached until the
faults change, so the per-message path is a few dict lookups and comparisons.

Messages of the classes ``network.transport`` puts on connections go through
:class:`~sim.kernel.transport.Transport` instead (per-pair FIFO, retransmitted
until the connection breaks); its segments and acks travel as datagrams here.

Crashes: a crashed endpoint sends nothing, and a message in flight to an
endpoint that crashes (or crashed and recovered) before it arrives is lost. A
message already in flight from an endpoint that then crashes is still
delivered: it left the sender before the crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from simpy.events import NORMAL

from ..dists import Dist, buffered_sampler, uniform_sampler
from ..netconfig import LinkConfig, MessageLatency, NetworkConfig, Zones, message_kind
from ..rng import Streams
from .transport import Transport

__all__ = ["Network", "DROP_REASONS"]

DROP_REASONS = ("partition", "loss", "sender_crashed", "receiver_crashed")


class _LinkState:
    __slots__ = ("latency", "loss", "duplicate", "reorder", "extra")

    def __init__(self, latency: Callable[[], float], loss: float, duplicate: float, reorder: float,
                 extra: tuple[Callable[[], float], ...]) -> None:
        self.latency = latency
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.extra = extra


class _Delivery:
    """A message in flight: a minimal SimPy-schedulable event (its fields are set right after creation)."""

    __slots__ = ("callbacks", "_ok", "src", "dst", "msg", "epoch", "mid", "arrive")

    callbacks: Any  # SimPy sets it to None once the event has run
    _ok: bool
    src: str
    dst: Any  # the receiving endpoint object
    msg: Any
    epoch: int
    mid: int
    arrive: Callable[[str, str, Any], None]  # a transport segment's handler


class Network:
    """Delivers messages between endpoints registered with :meth:`attach`."""

    def __init__(self, env: Any, config: NetworkConfig, streams: Streams, *, zones: Zones | None = None,
                 trace: bool = False) -> None:
        self.env = env
        self.config = config
        self.endpoints: dict[str, Any] = {}
        self.home: dict[str, str] = {}
        self._streams = streams
        self._latency_rng = streams["latency"]
        self._spike_rng = streams["latency_spike"]
        self._u_loss = uniform_sampler(streams["loss"])
        self._u_dup = uniform_sampler(streams["duplicate"])
        self._u_reorder = uniform_sampler(streams["reorder"])
        self._samplers: dict[tuple[str, Dist], Callable[[], float]] = {}
        self._reorder_delay = self._sampler(config.reorder_delay)
        self._links = {pair: link for link in config.links for pair in link.pairs()}
        self._zone_links: dict[tuple[str | None, str | None], LinkConfig] = {
            pair: link for link in config.zone_links for pair in link.pairs()}
        self._zone_of = zones.of_nodes() if zones is not None else None  # node -> zone (endpoints use their home's)
        self._by_message = config.by_message()
        self._states: dict[tuple[Any, ...], _LinkState] = {}
        self._blocked: dict[str, frozenset[str]] = {}
        self._partitions: dict[object, tuple[tuple[frozenset[str], ...], bool]] = {}
        self._overlays: dict[object, Any] = {}
        self.side: dict[str, str] = {}
        self.delivered = 0
        self.duplicated = 0
        self.dropped: Counter[str] = Counter()
        self._sent_by_type: dict[type, list] = {}  # class -> [messages sent, whether on connections]
        self._deliver_cb = [self._deliver]
        self._trace: list[tuple] | None = [] if trace else None
        self._late_drops: dict[int, tuple[float, str]] = {}
        self._next_mid = 0
        self.transport = Transport(self, config.transport)
        self._segment_cb = [self._deliver_segment]

    # -- topology --------------------------------------------------------------
    def attach(self, endpoint: Any) -> None:
        self.endpoints[endpoint.name] = endpoint
        self.home[endpoint.name] = endpoint.home
        self.side[endpoint.name] = "none"
        if self._partitions:
            self._recompute_partitions()

    # -- sending -------------------------------------------------------------
    def send(self, src: str, dst: str, msg: Any) -> None:
        cls = msg.__class__
        sent = self._sent_by_type.get(cls)
        if sent is None:  # first of its class: count it, and look up how it travels once
            sent = self._sent_by_type[cls] = [0, self.config.transport.on_connection(cls)]
        sent[0] += 1
        if sent[1]:
            self.transport.send(src, dst, msg)
            return
        blocked = self._blocked
        if blocked and src in blocked.get(dst, ()):
            self._drop_at_send(src, dst, msg, "partition", self._trace)
            return
        state = self._states.get((src, dst, cls) if self._by_message else (src, dst))
        if state is None:
            state = self._link_state(src, dst, cls)
        if state.loss and self._u_loss() < state.loss:
            self._drop_at_send(src, dst, msg, "loss", self._trace)
            return
        delay = state.latency()
        if state.reorder and self._u_reorder() < state.reorder:
            delay += self._reorder_delay()
        if state.extra:
            for extra in state.extra:
                delay += extra()
        d = _Delivery()
        d.callbacks = self._deliver_cb  # SimPy replaces, never mutates, an event's list
        d._ok = True
        d.src = src
        d.dst = ep = self.endpoints[dst]
        d.msg = msg
        d.epoch = ep.epoch
        if self._trace is not None:
            self._trace_send(self._trace, d, delay)
        self.env.schedule(d, NORMAL, delay)
        if state.duplicate and self._u_dup() < state.duplicate:
            self.duplicated += 1
            delay = state.latency()
            for extra in state.extra:
                delay += extra()
            self._schedule(src, dst, msg, delay)

    def _schedule(self, src: str, dst: str, msg: Any, delay: float) -> None:
        d = _Delivery()
        d.callbacks = self._deliver_cb
        d._ok = True
        d.src = src
        d.dst = ep = self.endpoints[dst]
        d.msg = msg
        d.epoch = ep.epoch
        if self._trace is not None:
            self._trace_send(self._trace, d, delay)
        self.env.schedule(d, NORMAL, delay)

    def transmit(self, src: str, dst: str, payload: Any, cls: type, arrive: Callable[[str, str, Any], None],
                 shown: Any = None) -> None:
        """Send a transport segment, ack or reset like a datagram of class ``cls``.

        ``arrive(src, dst, payload)`` runs when it reaches a live ``dst`` that has
        not restarted since. ``shown`` is the message the trace shows (a data
        segment's; acks and resets are not traced).
        """
        trace = self._trace if shown is not None else None
        blocked = self._blocked
        if blocked and src in blocked.get(dst, ()):
            self._drop_at_send(src, dst, shown, "partition", trace)
            return
        state = self._states.get((src, dst, cls) if self._by_message else (src, dst))
        if state is None:
            state = self._link_state(src, dst, cls)
        if state.loss and self._u_loss() < state.loss:
            self._drop_at_send(src, dst, shown, "loss", trace)
            return
        copies = 2 if state.duplicate and self._u_dup() < state.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            delay = state.latency()
            if state.reorder and self._u_reorder() < state.reorder:
                delay += self._reorder_delay()
            for extra in state.extra:
                delay += extra()
            d = _Delivery()
            d.callbacks = self._segment_cb
            d._ok = True
            d.src = src
            d.dst = ep = self.endpoints[dst]
            d.msg = payload
            d.epoch = ep.epoch
            d.arrive = arrive
            if trace is not None:
                d.msg = shown
                self._trace_send(trace, d, delay)
                d.msg = payload
            else:
                d.mid = -1
            self.env.schedule(d, NORMAL, delay)

    def _deliver_segment(self, d: _Delivery) -> None:
        ep = d.dst
        if ep.alive and ep.epoch == d.epoch:
            d.arrive(d.src, ep.name, d.msg)
        else:
            self.dropped["receiver_crashed"] += 1
            if self._trace is not None and d.mid >= 0:
                self._late_drops[d.mid] = (self.env.now, "receiver_crashed")

    def hand_over(self, ep: Any, src: str, msg: Any) -> None:
        """Give ``msg`` from ``src`` to endpoint ``ep``'s handler (a message a connection delivers)."""
        self.delivered += 1
        handler = ep._handlers.get(msg.__class__)
        if handler is None:
            handler = ep._resolve(msg.__class__)
        handler(msg, src)

    def disconnect(self, src: str, dst: str) -> None:
        """``src`` closes its connection with ``dst`` (see :mod:`sim.kernel.transport`)."""
        self.transport.disconnect(src, dst)

    def _trace_send(self, trace: list[tuple[Any, ...]], d: _Delivery, delay: float) -> None:
        d.mid = self._next_mid
        self._next_mid += 1
        now = self.env.now
        trace.append((d.mid, d.src, d.dst.name, d.msg.__class__.__name__, now, now + delay, None, repr(d.msg)))

    @property
    def sent(self) -> int:
        """Messages handed to the network (before loss, partitions and duplication)."""
        return sum(n for n, _ in self._sent_by_type.values())

    @property
    def sent_by_type(self) -> dict[str, int]:
        """Messages sent (including dropped ones) per message class name."""
        return {cls.__name__: n for cls, (n, _) in self._sent_by_type.items()}

    def _deliver(self, d: _Delivery) -> None:
        ep = d.dst
        if ep.alive and ep.epoch == d.epoch:
            self.delivered += 1
            msg = d.msg
            handler = ep._handlers.get(msg.__class__)  # Endpoint.receive, inlined on the hot path
            if handler is None:
                handler = ep._resolve(msg.__class__)
            handler(msg, d.src)
        else:
            self.dropped["receiver_crashed"] += 1
            if self._trace is not None:
                self._late_drops[d.mid] = (self.env.now, "receiver_crashed")

    def _drop_at_send(self, src: str, dst: str, msg: Any, reason: str, trace: list[tuple] | None = None) -> None:
        self.dropped[reason] += 1
        if trace is not None:
            mid = self._next_mid
            self._next_mid += 1
            trace.append((mid, src, dst, msg.__class__.__name__, self.env.now, float("nan"), reason, repr(msg)))

    def trace_rows(self) -> list[tuple]:
        """Trace rows: (id, src, dst, type, send, deliver, drop_reason, message)."""
        if self._trace is None:
            return []
        rows = []
        for row in self._trace:
            late = self._late_drops.get(row[0])
            if late is not None:
                row = (*row[:5], float("nan"), late[1], row[7])
            rows.append(row)
        return rows

    # -- effective link parameters ---------------------------------------------
    def _sampler(self, dist: Dist, stream: str = "latency") -> Callable[[], float]:
        key = (stream, dist)
        sampler = self._samplers.get(key)
        if sampler is None:
            rng = self._latency_rng if stream == "latency" else self._spike_rng
            sampler = self._samplers[key] = buffered_sampler(dist, rng)
        return sampler

    def _link_state(self, src: str, dst: str, cls: type) -> _LinkState:
        cfg = self.config
        hs, hd = self.home[src], self.home[dst]
        link = self._link(src, dst, hs, hd)
        zone_link = None
        if self._zone_of is not None:
            zone_link = self._zone_links.get((self._zone_of.get(hs), self._zone_of.get(hd)))
        latency = self._latency(src, dst, hs, hd, cls, link, zone_link)
        loss, dup, reorder = (_setting(name, link, zone_link, cfg) for name in ("loss", "duplicate", "reorder"))
        keep_loss, keep_dup = 1.0 - loss, 1.0 - dup
        extra: list[Callable[[], float]] = []
        for fault in self._overlays.values():
            if (fault.src is not None and fault.src != hs) or (fault.dst is not None and fault.dst != hd):
                continue
            if fault.tag == "loss":
                keep_loss *= 1.0 - fault.probability
            elif fault.tag == "duplicate":
                keep_dup *= 1.0 - fault.probability
            elif fault.tag == "latency_spike":
                extra.append(self._sampler(fault.extra, "latency_spike"))
        state = _LinkState(self._sampler(latency), 1.0 - keep_loss, 1.0 - keep_dup, reorder, tuple(extra))
        self._states[(src, dst, cls) if self._by_message else (src, dst)] = state
        return state

    def _link(self, src: str, dst: str, hs: str, hd: str) -> LinkConfig | None:
        """The ``network.links`` entry this message travels on, if any.

        A node's message to itself takes its self link; a client and its home node
        share no link; without zones a client uses its home node's links, with zones
        a client reaches nodes over its zone's zone pairs only.
        """
        if src == dst:
            return self._links.get((src, dst))
        if hs == hd or (self._zone_of is not None and (hs != src or hd != dst)):
            return None
        return self._links.get((hs, hd))

    def _latency(self, src: str, dst: str, hs: str, hd: str, cls: type, link: LinkConfig | None,
                 zone_link: LinkConfig | None) -> Dist:
        """The latency distribution of a ``cls`` message, by the precedence in :mod:`sim.netconfig`."""
        cfg = self.config
        if link is not None:
            dist = _by_message(link.message_latency, cls, link.latency)
            if dist is not None:
                return dist
        if src == dst and cfg.self_latency is not None:
            return cfg.self_latency
        if hs == hd and src != dst and cfg.client_latency is not None:
            return cfg.client_latency  # a client and its home node
        if zone_link is not None:
            dist = _by_message(zone_link.message_latency, cls, zone_link.latency)
            if dist is not None:
                return dist
        dist = _by_message(cfg.message_latency, cls, None)
        return cfg.latency if dist is None else dist

    # -- faults (called by the kernel's fault injector) --------------------------
    def add_overlay(self, key: object, fault: Any) -> None:
        """Switch on a loss / duplicate / latency_spike window."""
        self._overlays[key] = fault
        self._states.clear()

    def remove_overlay(self, key: object) -> None:
        self._overlays.pop(key, None)
        self._states.clear()

    def add_partition(self, key: object, groups: Iterable[Iterable[str]], one_way: bool = False) -> None:
        """Block traffic between node groups (nodes in no group form one more group).

        One-way: only traffic *from* the first group to the rest is blocked.
        Clients are on the side of their home node.
        """
        self._partitions[key] = (tuple(frozenset(g) for g in groups), one_way)
        self._recompute_partitions()

    def remove_partition(self, key: object) -> None:
        self._partitions.pop(key, None)
        self._recompute_partitions()

    @property
    def partitioned(self) -> bool:
        return bool(self._partitions)

    def can_reach(self, src: str, dst: str) -> bool:
        """Whether a message from ``src`` to ``dst`` would pass the partitions now."""
        return src not in self._blocked.get(dst, ())

    def _group_index(self, groups: tuple[frozenset[str], ...], node: str) -> int:
        for i, g in enumerate(groups):
            if node in g:
                return i
        return len(groups)

    def _recompute_partitions(self) -> None:
        names = list(self.endpoints)
        blocked: dict[str, set[str]] = {}
        for groups, one_way in self._partitions.values():
            gi = {n: self._group_index(groups, self.home[n]) for n in names}
            for dst in names:
                gd = gi[dst]
                for src in names:
                    gs = gi[src]
                    if gs == gd:
                        continue
                    if one_way and gs != 0:
                        continue
                    blocked.setdefault(dst, set()).add(src)
        self._blocked = {dst: frozenset(srcs) for dst, srcs in blocked.items()}
        self._recompute_sides()

    def _recompute_sides(self) -> None:
        if not self._partitions:
            self.side = dict.fromkeys(self.endpoints, "none")
            return
        nodes = [n for n in self.endpoints if self.home[n] == n]
        parent = {n: n for n in nodes}

        def find(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a in nodes:
            for b in nodes:
                if a < b and self.can_reach(a, b) and self.can_reach(b, a):
                    parent[find(a)] = find(b)
        sizes = Counter(find(n) for n in nodes)
        majority = {root for root, size in sizes.items() if size * 2 > len(nodes)}
        label = {n: ("majority" if find(n) in majority else "minority") for n in nodes}
        self.side = {n: label[self.home[n]] for n in self.endpoints}


def _by_message(table: MessageLatency | None, cls: type, default: Dist | None) -> Dist | None:
    """The table's latency for the message class ``cls``: by class name, else by its declared kind, else ``default``."""
    if table is not None:
        dist = table.get(cls.__name__)
        kind = message_kind(cls)
        if dist is None and kind is not None:
            dist = table.get(kind)
        if dist is not None:
            return dist
    return default


def _setting(name: str, link: LinkConfig | None, zone_link: LinkConfig | None, cfg: NetworkConfig) -> float:
    """Loss, duplicate or reorder probability: the link's, else the zone pair's, else the network's."""
    for scope in (link, zone_link):
        value = getattr(scope, name, None)
        if value is not None:
            return float(value)
    return float(getattr(cfg, name))
