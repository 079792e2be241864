"""A pure AMQP-0-9-1-shaped broker, following RabbitMQ 3.10's observable semantics.

:class:`Broker` is a deterministic state machine with no clock and no network:
every method takes the current time ``now`` (ms) and returns the *effects* to
send (deliveries, publisher confirms, returns, channel closures), so it can be
unit-tested without a world. :class:`~sim.messaging.nodes.BrokerNode` runs it
on the simulated network. A channel is named by the caller (one per connection).

Semantics reproduced (DESIGN.md section 7):

* requeue position: a classic queue puts a requeued message back at its
  original position; a quorum queue puts it at the back, or at the head when
  the queue has a delivery limit;
* quorum delivery count: +1 on every return (nack with requeue, channel or
  connection loss, broker restart); above ``x-delivery-limit`` the message is
  dead-lettered with reason ``delivery_limit``; redeliveries carry the
  ``x-delivery-count`` header;
* dead-lettering is at-most-once: a dead-lettered message that the DLX routes
  nowhere (or that the target queue refuses) is dropped; ``x-death`` lists
  (queue, reason, count) entries, most recent first, a repeated (queue, reason)
  incrementing its count; the ``expiration`` property is removed on the way;
  fully automatic dead-letter cycles (no ``rejected`` in the cycle) are dropped;
* TTL (queue ``x-message-ttl`` and per-message ``expiration``, whichever is
  shorter, counted from enqueue and kept across requeues) expires a message only
  when it is at the head of the queue (head-of-line blocking);
* ``x-max-length`` counts ready messages; ``drop-head`` dead-letters the oldest
  (reason ``maxlen``), ``reject-publish`` refuses the new one (confirm nack),
  ``reject-publish-dlx`` refuses and dead-letters it;
* a broker crash keeps persistent messages of durable classic queues and every
  message of quorum queues; classic queues mark every recovered message
  redelivered; unacked quorum messages are returned (delivery count +1);
  non-durable queues come back empty (re-declared).

Prefetch applies per consumer (``basic.qos`` with ``global = false``) and not
to auto-ack consumers, which get every ready message at once.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from typing import Any

from .history import MessageLog
from .routing import route
from .topology import QueueSpec, Topology

__all__ = ["Broker", "Message", "XDeath", "Delivery", "Confirm", "Returned", "ChannelClosed", "Effect"]


@dataclass(frozen=True, slots=True)
class XDeath:
    """One ``x-death`` header entry: why and how often a message left ``queue``."""

    queue: str
    reason: str  # rejected | expired | maxlen | delivery_limit
    count: int
    exchange: str
    routing_keys: tuple[str, ...]
    time: float
    original_expiration: float | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """An immutable message: AMQP properties plus the application fields capsim tracks.

    ``publisher``, ``seq`` and ``published_at`` are set by the application (like
    ``app_id``, a sequence header and ``timestamp``) and survive dead-lettering
    and republishing, so end-to-end latency and ordering can be measured.
    """

    msg_id: str
    exchange: str = ""
    routing_key: str = ""
    persistent: bool = True
    priority: int | None = None
    expiration: float | None = None
    headers: tuple[tuple[str, Any], ...] = ()
    x_death: tuple[XDeath, ...] = ()
    publisher: str = ""
    seq: int = -1
    published_at: float = 0.0

    def header(self, name: str, default: Any = None) -> Any:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def with_header(self, name: str, value: Any) -> Message:
        kept = tuple((k, v) for k, v in self.headers if k != name)
        return replace(self, headers=kept + ((name, value),))

    def death_count(self, queue: str, reason: str) -> int:
        """The ``count`` of the x-death entry for (queue, reason), 0 if none."""
        for d in self.x_death:
            if d.queue == queue and d.reason == reason:
                return d.count
        return 0

    def x_death_text(self) -> str:
        """Compact form for tables: ``queue:reason:count`` entries joined by ``|``."""
        if not self.x_death:
            return ""
        return "|".join(f"{d.queue}:{d.reason}:{d.count}" for d in self.x_death)


# -- effects ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    """``basic.deliver`` to a consumer."""

    channel: str
    consumer_tag: str
    delivery_tag: int
    queue: str
    message: Message
    redelivered: bool
    delivery_count: int


@dataclass(frozen=True, slots=True)
class Confirm:
    """A publisher confirm (``basic.ack`` if ``ack`` else ``basic.nack``) for publish ``seq``."""

    channel: str
    seq: int
    ack: bool


@dataclass(frozen=True, slots=True)
class Returned:
    """``basic.return`` of an unroutable mandatory message (sent before its confirm)."""

    channel: str
    seq: int | None
    message: Message
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The broker closed a channel after an error; its unacked messages were requeued."""

    channel: str
    reply_code: int
    reply_text: str


Effect = Delivery | Confirm | Returned | ChannelClosed


# -- internal state -----------------------------------------------------------------
class _Entry:
    """One message copy in one queue."""

    __slots__ = ("uid", "msg", "pos", "prio", "expires_at", "delivery_count", "delivered", "recovered")

    def __init__(self, uid: int, msg: Message, pos: int, prio: int, expires_at: float) -> None:
        self.uid = uid
        self.msg = msg
        self.pos = pos
        self.prio = prio
        self.expires_at = expires_at
        self.delivery_count = 0
        self.delivered = False
        self.recovered = False


class _Consumer:
    __slots__ = ("tag", "channel", "queue", "prefetch", "auto_ack", "unacked")

    def __init__(self, tag: str, channel: str, queue: str, prefetch: int, auto_ack: bool) -> None:
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self.unacked = 0

    def has_room(self) -> bool:
        return self.auto_ack or self.prefetch == 0 or self.unacked < self.prefetch


class _Channel:
    __slots__ = ("name", "next_tag", "unacked", "consumers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_tag = 1
        # delivery tag -> (queue, entry, consumer, delivered at); insertion order = tag order
        self.unacked: dict[int, tuple[_Queue, _Entry, _Consumer, float]] = {}
        self.consumers: dict[str, _Consumer] = {}


_HEAD_BASE = -(2**62)  # below every ordinary position (which count up from 0)


class _Queue:
    """Ready messages in a heap ordered by (-priority, position); the head is ``ready[0]``."""

    __slots__ = ("spec", "name", "ready", "consumers", "rr", "next_pos", "front", "unacked", "pending_returns")

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.ready: list[tuple[int, int, int, _Entry]] = []
        self.consumers: list[_Consumer] = []
        self.rr = 0
        self.next_pos = 0
        self.front = _HEAD_BASE  # positions of messages returned to the head, in return order
        self.unacked = 0
        self.pending_returns: list[_Entry] = []

    def push(self, e: _Entry) -> None:
        heapq.heappush(self.ready, (e.prio, e.pos, e.uid, e))

    def pop(self) -> _Entry:
        return heapq.heappop(self.ready)[3]

    def head(self) -> _Entry | None:
        return self.ready[0][3] if self.ready else None

    def ordered(self) -> list[_Entry]:
        return [item[3] for item in sorted(self.ready)]


class Broker:
    """The broker's state: queues, channels, consumers. See the module docstring."""

    def __init__(self, topology: Topology, *, log: MessageLog | None = None, node: str = "broker",
                 consumer_timeout: float = math.inf) -> None:
        self.topology = topology
        self.log = log
        self.node = node
        self.consumer_timeout = consumer_timeout
        self.queues: dict[str, _Queue] = {q.name: _Queue(q) for q in topology.queues}
        self.channels: dict[str, _Channel] = {}
        self.up = True
        self._uid = 0
        self._routes: dict[tuple[str, str], list[str]] = {}
        self._out: list[Effect] = []

    # -- inspection -------------------------------------------------------------------
    def ready_ids(self, queue: str) -> list[str]:
        """Message ids of the ready messages of ``queue``, head first."""
        return [e.msg.msg_id for e in self.queues[queue].ordered()]

    def depth(self, queue: str) -> tuple[int, int]:
        """(ready, unacked) message counts of ``queue``."""
        q = self.queues[queue]
        return len(q.ready), q.unacked + len(q.pending_returns)

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work: a head message's expiry or an ack timeout."""
        d = math.inf
        for q in self.queues.values():
            if q.ready:
                d = min(d, q.ready[0][3].expires_at)
        if math.isfinite(self.consumer_timeout):
            for ch in self.channels.values():
                if ch.unacked:
                    d = min(d, next(iter(ch.unacked.values()))[3] + self.consumer_timeout)
        return d

    # -- channels and consumers ---------------------------------------------------------
    def open_channel(self, channel: str) -> None:
        if channel not in self.channels:
            self.channels[channel] = _Channel(channel)

    def close_channel(self, now: float, channel: str, reason: str = "connection") -> list[Effect]:
        """The client closed the channel or its connection dropped: requeue its unacked messages."""
        out = self._begin()
        ch = self.channels.pop(channel, None)
        if ch is not None:
            self._drop_channel(now, ch, reason)
        return out

    def consume(self, now: float, channel: str, queue: str, *, consumer_tag: str, prefetch: int = 0,
                auto_ack: bool = False) -> list[Effect]:
        """``basic.consume`` (with ``basic.qos(prefetch)``, 0 = unlimited)."""
        out = self._begin()
        ch = self.channels[channel]
        if queue not in self.queues:
            self._close(now, ch, 404, f"NOT_FOUND - no queue '{queue}'")
        elif consumer_tag in ch.consumers:
            self._close(now, ch, 530, f"NOT_ALLOWED - attempt to reuse consumer tag '{consumer_tag}'")
        else:
            c = _Consumer(consumer_tag, channel, queue, prefetch, auto_ack)
            ch.consumers[consumer_tag] = c
            q = self.queues[queue]
            q.consumers.append(c)
            self._dispatch(now, q)
        return out

    def cancel(self, now: float, channel: str, consumer_tag: str) -> list[Effect]:
        """``basic.cancel``: no more deliveries; unacked messages stay unacked on the channel."""
        out = self._begin()
        ch = self.channels.get(channel)
        c = ch.consumers.pop(consumer_tag, None) if ch is not None else None
        if c is not None:
            self._detach(c)
        return out

    # -- publishing ---------------------------------------------------------------------
    def publish(self, now: float, channel: str, message: Message, *, exchange: str, routing_key: str,
                mandatory: bool = False, seq: int | None = None) -> list[Effect]:
        """``basic.publish``; ``seq`` set = the channel is in confirm mode (a confirm follows)."""
        out = self._begin()
        ch = self.channels[channel]
        if not self.topology.has_exchange(exchange):
            self._close(now, ch, 404, f"NOT_FOUND - no exchange '{exchange}'")
            return out
        msg = message
        if msg.exchange != exchange or msg.routing_key != routing_key:
            msg = replace(msg, exchange=exchange, routing_key=routing_key)
        targets = self._route(exchange, routing_key)
        if not targets:
            self._rec(now, "unroutable", msg, exchange=exchange, routing_key=routing_key)
            if mandatory:
                out.append(Returned(channel, seq, msg, 312, "NO_ROUTE"))
            if seq is not None:
                out.append(Confirm(channel, seq, True))
            return out
        accepted = [self._enqueue(now, self.queues[name], msg) for name in targets]
        if seq is not None:
            out.append(Confirm(channel, seq, all(accepted)))
        return out

    # -- settling -------------------------------------------------------------------------
    def ack(self, now: float, channel: str, delivery_tag: int, multiple: bool = False) -> list[Effect]:
        out = self._begin()
        taken = self._take(now, channel, delivery_tag, multiple)
        touched: list[_Queue] = []
        for q, e in taken:
            self._rec(now, "settle", e.msg, queue=q.name, delivery_count=e.delivery_count)
            if q not in touched:
                touched.append(q)
        for q in touched:
            self._dispatch(now, q)
        return out

    def nack(self, now: float, channel: str, delivery_tag: int, multiple: bool = False,
             requeue: bool = True) -> list[Effect]:
        """``basic.nack``: requeue, or dead-letter with reason ``rejected`` (dropped without a DLX)."""
        out = self._begin()
        taken = self._take(now, channel, delivery_tag, multiple)
        touched: list[_Queue] = []
        for q, e in taken:
            if requeue:
                self._rec(now, "requeue", e.msg, queue=q.name, reason="nack", delivery_count=e.delivery_count)
                self._return(now, q, e, "nack")
            else:
                self._dead_letter(now, q, e.msg, "rejected")
            if q not in touched:
                touched.append(q)
        for q in touched:
            self._dispatch(now, q)
        return out

    def reject(self, now: float, channel: str, delivery_tag: int, requeue: bool = True) -> list[Effect]:
        """``basic.reject``: a single-message nack."""
        return self.nack(now, channel, delivery_tag, multiple=False, requeue=requeue)

    # -- time -------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        """Expire due head messages and close channels whose oldest delivery passed the ack timeout."""
        out = self._begin()
        for q in self.queues.values():
            self._dispatch(now, q)
        if math.isfinite(self.consumer_timeout):
            for ch in list(self.channels.values()):
                if ch.unacked and next(iter(ch.unacked.values()))[3] + self.consumer_timeout <= now:
                    self._close(now, ch, 406, "PRECONDITION_FAILED - delivery acknowledgement timed out")
        return out

    # -- crash and recovery -------------------------------------------------------------------
    def crash(self, now: float) -> None:
        """The broker stops: connections vanish; what is not durable is lost (``lost`` events)."""
        self.up = False
        held: dict[str, list[_Entry]] = {}
        for ch in self.channels.values():
            for q, e, _c, _t in ch.unacked.values():
                held.setdefault(q.name, []).append(e)
        self.channels = {}
        for name, q in list(self.queues.items()):
            q.consumers, q.rr, q.unacked = [], 0, 0
            entries = q.ordered()
            unacked = held.get(name, [])
            spec = q.spec
            if not spec.durable:
                for e in entries + unacked:
                    self._rec(now, "lost", e.msg, queue=name, reason="non_durable_queue")
                self.queues[name] = _Queue(spec)  # re-declared, empty, when the broker is back
            elif spec.is_quorum:
                q.pending_returns.extend(unacked)  # the Raft log keeps everything
            else:
                keep = []
                for e in entries + unacked:
                    if e.msg.persistent:
                        e.recovered = True
                        keep.append((e.prio, e.pos, e.uid, e))
                    else:
                        self._rec(now, "lost", e.msg, queue=name, reason="transient_message")
                heapq.heapify(keep)
                q.ready = keep

    def recover(self, now: float) -> list[Effect]:
        """The broker is back: quorum queues return the messages that were unacked at the crash."""
        out = self._begin()
        self.up = True
        for q in self.queues.values():
            pending, q.pending_returns = q.pending_returns, []
            for e in pending:
                self._rec(now, "requeue", e.msg, queue=q.name, reason="broker_restart", delivery_count=e.delivery_count)
                self._return(now, q, e, "broker_restart")
            self._dispatch(now, q)
        return out

    def remaining(self, now: float) -> int:
        """Record a ``remain`` event for every message still held (ready or unacked); return how many."""
        n = 0
        for q in self.queues.values():
            for e in q.ordered():
                self._rec(now, "remain", e.msg, queue=q.name, reason="ready", delivery_count=e.delivery_count)
                n += 1
            for e in q.pending_returns:
                self._rec(now, "remain", e.msg, queue=q.name, reason="unacked", delivery_count=e.delivery_count)
                n += 1
        for ch in self.channels.values():
            for q, e, _c, _t in ch.unacked.values():
                self._rec(now, "remain", e.msg, queue=q.name, reason="unacked", delivery_count=e.delivery_count)
                n += 1
        return n

    # -- internals ----------------------------------------------------------------------------
    def _begin(self) -> list[Effect]:
        self._out = []
        return self._out

    def _rec(self, now: float, event: str, msg: Message, **fields: Any) -> None:
        if self.log is not None:
            self.log.record(now, event, msg.msg_id, self.node, **fields)

    def _route(self, exchange: str, routing_key: str) -> list[str]:
        key = (exchange, routing_key)
        targets = self._routes.get(key)
        if targets is None:
            targets = self._routes[key] = route(self.topology, exchange, routing_key)
        return targets

    def _enqueue(self, now: float, q: _Queue, msg: Message, dead_lettered: bool = False) -> bool:
        spec = q.spec
        if spec.max_length is not None and spec.overflow != "drop-head" and len(q.ready) >= spec.max_length:
            if dead_lettered:
                self._rec(now, "drop", msg, queue=q.name, reason="dead_letter_rejected")
                return False
            self._rec(now, "publish_rejected", msg, queue=q.name, reason="maxlen")
            if spec.overflow == "reject-publish-dlx":
                self._dead_letter(now, q, msg, "maxlen")
            return False
        ttl = spec.message_ttl
        if msg.expiration is not None:
            ttl = msg.expiration if ttl is None else min(ttl, msg.expiration)
        prio = -min(msg.priority or 0, spec.max_priority) if spec.max_priority else 0
        self._uid += 1
        e = _Entry(self._uid, msg, q.next_pos, prio, math.inf if ttl is None else now + ttl)
        q.next_pos += 1
        q.push(e)
        self._rec(now, "enqueue", msg, queue=q.name, exchange=msg.exchange, routing_key=msg.routing_key,
                  x_death=msg.x_death_text())
        if spec.max_length is not None and spec.overflow == "drop-head":
            while len(q.ready) > spec.max_length:
                self._dead_letter(now, q, q.pop().msg, "maxlen")
        self._dispatch(now, q)
        return True

    def _dispatch(self, now: float, q: _Queue) -> None:
        """Deliver ready messages to consumers with room (round robin), then expire due heads."""
        ready = q.ready
        while ready:
            e = ready[0][3]
            if e.expires_at < now:
                heapq.heappop(ready)
                self._dead_letter(now, q, e.msg, "expired")
                continue
            c = self._next_consumer(q)
            if c is None:
                break
            heapq.heappop(ready)
            self._deliver(now, q, c, e)
        while ready and ready[0][3].expires_at <= now:
            self._dead_letter(now, q, heapq.heappop(ready)[3].msg, "expired")

    def _next_consumer(self, q: _Queue) -> _Consumer | None:
        consumers = q.consumers
        n = len(consumers)
        for k in range(n):
            i = (q.rr + k) % n
            c = consumers[i]
            if c.has_room():
                q.rr = (i + 1) % n
                return c
        return None

    def _deliver(self, now: float, q: _Queue, c: _Consumer, e: _Entry) -> None:
        ch = self.channels[c.channel]
        tag = ch.next_tag
        ch.next_tag += 1
        quorum = q.spec.is_quorum
        redelivered = e.delivery_count > 0 if quorum else (e.delivered or e.recovered)
        msg = e.msg
        if quorum and e.delivery_count > 0:
            msg = msg.with_header("x-delivery-count", e.delivery_count)
        e.delivered = True
        self._rec(now, "deliver", msg, queue=q.name, tag=tag, redelivered=redelivered,
                  delivery_count=e.delivery_count, x_death=msg.x_death_text())
        if c.auto_ack:
            self._rec(now, "settle", msg, queue=q.name, reason="auto_ack")
        else:
            ch.unacked[tag] = (q, e, c, now)
            c.unacked += 1
            q.unacked += 1
        self._out.append(Delivery(c.channel, c.tag, tag, q.name, msg, redelivered, e.delivery_count))

    def _take(self, now: float, channel: str, tag: int, multiple: bool) -> list[tuple[_Queue, _Entry]]:
        """Remove acked/nacked deliveries from the channel; an unknown tag is a channel error."""
        ch = self.channels[channel]
        if multiple:
            tags = [t for t in ch.unacked if tag == 0 or t <= tag]
        else:
            tags = [tag] if tag in ch.unacked else []
        if not tags:
            self._close(now, ch, 406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")
            return []
        taken = []
        for t in tags:
            q, e, c, _ = ch.unacked.pop(t)
            c.unacked -= 1
            q.unacked -= 1
            taken.append((q, e))
        return taken

    def _return(self, now: float, q: _Queue, e: _Entry, cause: str) -> None:
        """Put a returned message back, by the queue type's rule (as measured on RabbitMQ 3.10.8).

        Classic: back at its original position. Quorum: a ``nack`` with requeue on a
        queue without a delivery limit goes to the back; every other return (a nack
        with a delivery limit, a lost connection, a broker restart) goes ahead of the
        messages never delivered, behind those returned before it (return order).
        """
        if q.spec.is_quorum:
            e.delivery_count += 1
            limit = q.spec.delivery_limit
            if limit is not None and e.delivery_count > limit:
                self._dead_letter(now, q, e.msg, "delivery_limit")
                return
            if limit is None and cause == "nack":
                e.pos = q.next_pos  # to the back
                q.next_pos += 1
            else:
                e.pos = q.front  # ahead of the rest, in return order
                q.front += 1
        q.push(e)  # classic: e.pos unchanged, back at its original position

    def _detach(self, c: _Consumer) -> None:
        q = self.queues.get(c.queue)
        if q is not None and c in q.consumers:
            i = q.consumers.index(c)
            q.consumers.pop(i)
            if q.rr > i:
                q.rr -= 1
            if q.consumers:
                q.rr %= len(q.consumers)
            else:
                q.rr = 0

    def _drop_channel(self, now: float, ch: _Channel, reason: str) -> None:
        for c in ch.consumers.values():
            self._detach(c)
        touched: list[_Queue] = []
        for q, e, c, _t in ch.unacked.values():
            c.unacked -= 1
            q.unacked -= 1
            self._rec(now, "requeue", e.msg, queue=q.name, reason=reason, delivery_count=e.delivery_count)
            self._return(now, q, e, reason)
            if q not in touched:
                touched.append(q)
        ch.unacked.clear()
        for q in touched:
            self._dispatch(now, q)

    def _close(self, now: float, ch: _Channel, code: int, text: str) -> None:
        self.channels.pop(ch.name, None)
        self._drop_channel(now, ch, "channel_error")
        self._out.append(ChannelClosed(ch.name, code, text))

    def _dead_letter(self, now: float, q: _Queue, msg: Message, reason: str) -> None:
        spec = q.spec
        dlx = spec.dead_letter_exchange
        if dlx is None:
            self._rec(now, "drop", msg, queue=q.name, reason=reason)
            return
        deaths = list(msg.x_death)
        for i, d in enumerate(deaths):
            if d.queue == q.name and d.reason == reason:
                deaths.insert(0, replace(deaths.pop(i), count=d.count + 1))
                break
        else:
            deaths.insert(0, XDeath(q.name, reason, 1, msg.exchange, (msg.routing_key,), now, msg.expiration))
        rk = spec.dead_letter_routing_key if spec.dead_letter_routing_key is not None else msg.routing_key
        dead = replace(msg, exchange=dlx, routing_key=rk, expiration=None, x_death=tuple(deaths))
        self._rec(now, "dead_letter", dead, queue=q.name, exchange=dlx, routing_key=rk, reason=reason,
                  x_death=dead.x_death_text())
        targets = self._route(dlx, rk) if self.topology.has_exchange(dlx) else []
        if not targets:
            self._rec(now, "drop", dead, queue=q.name, reason="dead_letter_unroutable")
            return
        for t in targets:
            if reason != "rejected" and _is_cycle(t, deaths):
                self._rec(now, "drop", dead, queue=t, reason="dead_letter_cycle")
            else:
                self._enqueue(now, self.queues[t], dead, dead_lettered=True)


def _is_cycle(target: str, deaths: list[XDeath]) -> bool:
    """RabbitMQ's rule: the message already died in ``target`` with no ``rejected`` since."""
    for i, d in enumerate(deaths):
        if d.queue == target:
            return all(x.reason != "rejected" for x in deaths[: i + 1])
    return False
