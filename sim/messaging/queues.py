"""A queue's own rules, as RabbitMQ 3.10 applies them, and the messages it holds.

:class:`Message` and :class:`XDeath` are the immutable message and its
dead-letter history. :class:`QueueState` is one queue: its ready messages in
delivery order, and the rules that depend only on the queue's arguments
(:class:`~sim.messaging.topology.QueueSpec`):

* order: higher priority first (``x-max-priority``, classic queues), then
  position; messages returned to the head of a quorum queue go before every
  message never delivered, in the order they were returned;
* TTL: the shorter of ``x-message-ttl`` and the message's ``expiration``,
  counted from enqueue and kept across requeues;
* ``x-max-length`` counts ready messages: ``drop-head`` evicts the oldest,
  the ``reject-publish`` overflows refuse the new one;
* a returned message goes back by the queue type's rule (:meth:`QueueState.requeue`);
* a dead-lettered copy carries the updated ``x-death`` header and is routed by
  the queue's dead-letter exchange and routing key; RabbitMQ drops fully
  automatic dead-letter cycles (:func:`is_dead_letter_cycle`).

The :class:`~sim.messaging.broker.Broker` applies these rules and does what
needs channels and consumers: deliveries, acks, confirms, logging, crashes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .topology import QueueSpec

if TYPE_CHECKING:
    from .broker import _Consumer

__all__ = ["Message", "XDeath", "QueueState", "QueuedMessage", "is_dead_letter_cycle"]


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


class QueuedMessage:
    """One message copy in one queue.

    ``pos`` orders it among messages of its priority (``prio``, negated so the
    heap pops the highest first); ``delivered`` and ``recovered`` (kept across
    a broker restart) make a classic queue's redeliveries ``redelivered``.
    """

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


_HEAD_BASE = -(2**62)  # below every ordinary position (which count up from 0)


class QueueState:
    """Ready messages in a heap ordered by (-priority, position); the head is ``ready[0]``.

    Also what the broker keeps per queue: its consumers (served round robin
    from ``rr``), how many of its messages are unacked, and the unacked
    messages a quorum queue returns when the broker comes back from a crash.
    """

    __slots__ = ("spec", "name", "ready", "consumers", "rr", "next_pos", "front", "unacked", "pending_returns")

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.ready: list[tuple[int, int, int, QueuedMessage]] = []
        self.consumers: list[_Consumer] = []
        self.rr = 0
        self.next_pos = 0
        self.front = _HEAD_BASE  # positions of messages returned to the head, in return order
        self.unacked = 0
        self.pending_returns: list[QueuedMessage] = []

    def push(self, e: QueuedMessage) -> None:
        heapq.heappush(self.ready, (e.prio, e.pos, e.uid, e))

    def pop(self) -> QueuedMessage:
        return heapq.heappop(self.ready)[3]

    def head(self) -> QueuedMessage | None:
        return self.ready[0][3] if self.ready else None

    def ordered(self) -> list[QueuedMessage]:
        return [item[3] for item in sorted(self.ready)]

    def refuses(self) -> bool:
        """Whether a new message is refused: the queue is full and overflows by rejecting publishes.

        A quorum queue refuses only once it is *over* its limit, so it takes one message more than
        ``max_length`` (RabbitMQ 3.10.8, measured: limits 0, 1 and 3 took 1, 2 and 4 messages; a
        classic queue took 0, 1 and 3).
        """
        spec = self.spec
        if spec.max_length is None or spec.overflow == "drop-head":
            return False
        if spec.type == "quorum":
            return len(self.ready) > spec.max_length
        return len(self.ready) >= spec.max_length

    def over_length(self) -> bool:
        """Whether a ``drop-head`` queue holds more ready messages than its maximum (its head must go)."""
        spec = self.spec
        return spec.max_length is not None and spec.overflow == "drop-head" and len(self.ready) > spec.max_length

    def admit(self, uid: int, msg: Message, now: float) -> QueuedMessage:
        """Put ``msg`` at the back (of its priority), expiring after the shorter of the queue's and its own TTL."""
        spec = self.spec
        ttl = spec.message_ttl
        if msg.expiration is not None:
            ttl = msg.expiration if ttl is None else min(ttl, msg.expiration)
        prio = -min(msg.priority or 0, spec.max_priority) if spec.max_priority else 0
        e = QueuedMessage(uid, msg, self.next_pos, prio, math.inf if ttl is None else now + ttl)
        self.next_pos += 1
        self.push(e)
        return e

    def requeue(self, e: QueuedMessage, cause: str) -> bool:
        """Put a returned message back, by the queue type's rule (as measured on RabbitMQ 3.10.8).

        Classic: back at its original position. Quorum: a ``nack`` with requeue on a
        queue without a delivery limit goes to the back; every other return (a nack
        with a delivery limit, a lost connection, a broker restart) goes ahead of the
        messages never delivered, behind those returned before it (return order).
        Returns ``False``, leaving the message out, when the return takes a quorum
        message past the queue's delivery limit: it is to be dead-lettered.
        """
        if self.spec.is_quorum:
            e.delivery_count += 1
            limit = self.spec.delivery_limit
            if limit is not None and e.delivery_count > limit:
                return False
            if limit is None and cause == "nack":
                e.pos = self.next_pos  # to the back
                self.next_pos += 1
            else:
                e.pos = self.front  # ahead of the rest, in return order
                self.front += 1
        self.push(e)  # classic: e.pos unchanged, back at its original position
        return True

    def dead_lettered(self, msg: Message, reason: str, now: float) -> Message | None:
        """The copy of ``msg`` this queue dead-letters for ``reason``; ``None`` without a dead-letter exchange.

        The copy goes to the dead-letter exchange with the queue's dead-letter
        routing key (or its own), loses its ``expiration``, and has this death
        first in ``x-death``: a repeated (queue, reason) moves to the front with
        its count + 1.
        """
        spec = self.spec
        dlx = spec.dead_letter_exchange
        if dlx is None:
            return None
        deaths = list(msg.x_death)
        for i, d in enumerate(deaths):
            if d.queue == self.name and d.reason == reason:
                deaths.insert(0, replace(deaths.pop(i), count=d.count + 1))
                break
        else:
            deaths.insert(0, XDeath(self.name, reason, 1, msg.exchange, (msg.routing_key,), now, msg.expiration))
        rk = spec.dead_letter_routing_key if spec.dead_letter_routing_key is not None else msg.routing_key
        return replace(msg, exchange=dlx, routing_key=rk, expiration=None, x_death=tuple(deaths))


def is_dead_letter_cycle(target: str, deaths: Sequence[XDeath]) -> bool:
    """RabbitMQ's rule: the message already died in ``target`` with no ``rejected`` since."""
    for i, d in enumerate(deaths):
        if d.queue == target:
            return all(x.reason != "rejected" for x in deaths[: i + 1])
    return False
