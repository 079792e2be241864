"""The publishing application on a real broker, mirroring :class:`sim.messaging.clients.PublisherNode`.

Message ``i`` of publisher ``node`` has the id ``<node>-<i>`` and routing key
``routing_keys[i % len]``; arrival times come from the same named random
stream (``publisher/<node>``) and the same draws as in the simulation, so both
runs publish the same messages on the same schedule. Publisher confirms are
asynchronous (``confirm.select``, then ``basic.ack``/``basic.nack`` callbacks):
publishing is pipelined, never one round trip per message. A publisher that
falls behind its schedule publishes the overdue messages in a burst.

Outcomes recorded per message id: ``publish`` (with the publish attempt),
``confirm``, ``publish_nack`` (reason ``nack``, or ``timeout`` when no confirm
came within ``confirm_timeout``: the outcome is unknown) and ``return``
(mandatory and unroutable). Every message goes out with ``mandatory`` set, so
that the adapter sees the broker drop an unroutable message (the broker routes,
drops and confirms it exactly as without the flag, and sends a ``basic.return``
first): it records the broker's ``unroutable`` (observed) for every such
message, and the publisher's ``return`` only when the scenario's publisher is
``mandatory``. Republishing follows the simulation: a nacked
message after ``republish_delay``, an unconfirmed one when the connection is
lost or its confirm timed out.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..dists import Exponential, buffered_sampler
from ..messaging.protocol import PublisherSpec
from .loop import Actor, Session

__all__ = ["PublisherActor", "Outgoing"]

_BURST = 256  # most overdue messages published in one loop callback


class Outgoing:
    """One application message (the same fields the simulation's ``Message`` carries)."""

    __slots__ = ("msg_id", "index", "exchange", "routing_key", "properties")

    def __init__(self, msg_id: str, index: int, exchange: str, routing_key: str, properties: Any) -> None:
        self.msg_id = msg_id
        self.index = index
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties


class PublisherActor(Actor):
    """Publishes ``count`` messages at ``rate`` per second from ``start`` to ``stop`` (see the module docstring)."""

    def __init__(self, session: Session, spec: PublisherSpec, rng: np.random.Generator, duration: float) -> None:
        super().__init__(session, spec.node)
        self.spec = spec
        self.next_index = 0
        self.stop_at = min(spec.stop, duration) if spec.stop is not None else duration  # as the simulation
        mean_gap = 1000.0 / spec.rate
        self._gap = buffered_sampler(Exponential(mean_gap), rng) if spec.arrivals == "poisson" else (lambda: mean_gap)
        self.exchange_real = self.names.real(spec.exchange)
        self._expiration = None if spec.expiration is None else str(int(round(spec.expiration)))
        self.started = False
        self._boot()

    def _boot(self) -> None:
        self.outbox: deque[tuple[Outgoing, int]] = deque()
        self.unconfirmed: dict[int, tuple[Outgoing, int]] = {}
        self.pub_seq = 0
        self.pending_republish = 0
        self.arrivals_done = False
        self._arrival_timer: Any = None

    # -- channel set-up ------------------------------------------------------------------
    def setup(self, channel: Any, gen: int) -> None:
        g = self.s.guard
        channel.add_on_return_callback(g(self._on_return, gen))
        if self.spec.confirms:
            channel.confirm_delivery(ack_nack_callback=g(self._on_confirm, gen),
                                     callback=g(lambda _frame: self.set_ready(gen)))
        else:
            self.set_ready(gen)

    def on_ready(self) -> None:
        self.pub_seq = 0  # a new channel numbers its confirms from 1
        while self.outbox and self.ready:
            self._send(*self.outbox.popleft())

    # -- the schedule ----------------------------------------------------------------------
    def begin(self) -> None:
        """Time 0: schedule the first arrival (the simulation's ``boot``)."""
        self.started = True
        self._schedule(self.spec.start)

    def _schedule(self, after: float) -> None:
        t = after + self._gap()
        if t < self.stop_at and (self.spec.count is None or self.next_index < self.spec.count):
            self._arrival_timer = self.s.call_at(t, self._arrival, t)
        else:
            self.arrivals_done = True

    def _arrival(self, t: float) -> None:
        """Publish the message due at ``t`` and, if behind schedule, the next overdue ones."""
        self._arrival_timer = None
        spec = self.spec
        for _ in range(_BURST):
            self._new_message()
            t_next = t + self._gap()
            if t_next >= self.stop_at or (spec.count is not None and self.next_index >= spec.count):
                self.arrivals_done = True
                return
            if t_next > self.s.now():
                self._arrival_timer = self.s.call_at(t_next, self._arrival, t_next)
                return
            t = t_next
        self._arrival_timer = self.s.call_later(0.0, self._arrival, t)

    def _new_message(self) -> None:
        spec = self.spec
        i = self.next_index
        self.next_index += 1
        rk = spec.routing_keys[i % len(spec.routing_keys)]
        props = self.s.pika.BasicProperties(
            message_id=f"{self.node}-{i}", app_id=self.node, delivery_mode=2 if spec.persistent else 1,
            priority=spec.priority, expiration=self._expiration, headers={"x-capsim-seq": i})
        self.publish(Outgoing(props.message_id, i, spec.exchange, rk, props), 1)

    # -- publishing --------------------------------------------------------------------------
    def publish(self, msg: Outgoing, attempt: int) -> None:
        self.log.record(self.s.now(), "publish", msg.msg_id, self.node, exchange=msg.exchange,
                        routing_key=msg.routing_key, attempt=attempt)
        if self.ready:
            self._send(msg, attempt)
        else:
            self.outbox.append((msg, attempt))

    def _send(self, msg: Outgoing, attempt: int) -> None:
        if self.spec.confirms:
            self.pub_seq += 1
            self.unconfirmed[self.pub_seq] = (msg, attempt)
            if self.spec.confirm_timeout is not None:
                self.s.call_later(self.spec.confirm_timeout, self._confirm_timeout, self.gen, self.pub_seq)
        self.channel.basic_publish(self.exchange_real, self.names.routing_key(msg.exchange, msg.routing_key),
                                   msg.msg_id.encode(), msg.properties, mandatory=True)

    def _on_confirm(self, gen: int, frame: Any) -> None:
        if gen != self.gen:
            return
        method = frame.method
        ack = method.NAME == "Basic.Ack"
        tag = method.delivery_tag
        if method.multiple:
            seqs = [s for s in self.unconfirmed if s <= tag]
        else:
            seqs = [tag] if tag in self.unconfirmed else []
        now = self.s.now()
        for seq in seqs:
            msg, attempt = self.unconfirmed.pop(seq)
            if ack:
                self.log.record(now, "confirm", msg.msg_id, self.node, attempt=attempt)
            else:
                self.log.record(now, "publish_nack", msg.msg_id, self.node, attempt=attempt, reason="nack")
                if self.spec.republish:
                    self.pending_republish += 1
                    self.s.call_later(self.spec.republish_delay, self._republish, msg, attempt + 1)

    def _republish(self, msg: Outgoing, attempt: int) -> None:
        self.pending_republish -= 1
        if not self.crashed:
            self.publish(msg, attempt)

    def _confirm_timeout(self, gen: int, seq: int) -> None:
        """No confirm in time: the outcome is unknown; republish (the broker may then hold two copies)."""
        if gen == self.gen and seq in self.unconfirmed:
            msg, attempt = self.unconfirmed.pop(seq)
            self.log.record(self.s.now(), "publish_nack", msg.msg_id, self.node, attempt=attempt, reason="timeout")
            if self.spec.republish:
                self.publish(msg, attempt + 1)

    def _on_return(self, gen: int, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if gen != self.gen:
            return
        now = self.s.now()
        ex, rk = self.names.sim(method.exchange), self.names.sim(method.routing_key)
        msg_id = props.message_id or body.decode(errors="replace")
        if self.spec.mandatory:  # the application asked for returns; otherwise only the adapter sees this one
            self.log.record(now, "return", msg_id, self.node, exchange=ex, routing_key=rk, reason=method.reply_text)
        self.log.observed(now, "unroutable", msg_id, "broker", exchange=ex, routing_key=rk)

    # -- connection loss, crash ------------------------------------------------------------------
    def on_connection_lost(self, reason: str) -> None:
        pending, self.unconfirmed = self.unconfirmed, {}
        if self.spec.confirms and self.spec.republish:
            for msg, attempt in pending.values():
                self.publish(msg, attempt + 1)

    def on_crash(self) -> None:
        self.s.cancel(self._arrival_timer)
        self._boot()  # the outbox and the unconfirmed messages die with the process
        self.arrivals_done = True

    def on_restart(self) -> None:
        self._boot()
        if self.started:
            self._schedule(self.s.now())

    @property
    def done(self) -> bool:
        """Every arrival published and every message confirmed (or given up)."""
        return self.arrivals_done and not self.outbox and not self.unconfirmed and self.pending_republish == 0
