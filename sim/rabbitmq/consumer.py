"""The consuming application on a real broker: :mod:`sim.messaging.consumer_core` driven by pika.

:class:`~sim.messaging.consumer_core.ConsumerCore`, the same class the
simulated :class:`~sim.messaging.consumer.ConsumerNode` runs, makes every
decision: attempt numbers (read from the quorum ``x-delivery-count`` header,
the ``x-retry-count`` header of a republished copy, the ``x-death`` count of
a ``dlx_wait`` retry, or this consumer's own durable tally on a classic
queue), dedup, failures, crashes and the retry policy. Processing takes a time
drawn from the same stream as in the simulation (``consumer/<node>``), and the
failure, crash and jitter decisions are
:func:`~sim.messaging.retry.decision_uniform` of the same (seed, purpose,
message id, attempt or delivery number), so a real run faces exactly the
faults the simulated run faces.

This actor translates: pika deliveries and confirms into the core's inputs
(broker names back to the scenario's, headers read with :mod:`.names`), and
the core's effects into ``basic.ack`` / ``basic.nack`` / ``basic.publish`` on
its channel (manual acknowledgements with ``basic.qos(prefetch)``, or
auto-ack; confirm mode when it publishes copies) and timers on the run's loop.
A crash closes the socket at once with the unacked deliveries still held (the
broker requeues them); the process restarts ``restart_after`` later and opens
a new connection, which is recorded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..dists import buffered_sampler
from ..messaging.consumer_core import (
    RETRY_COUNT,
    Ack,
    CallDownstream,
    ConsumerCore,
    CrashProcess,
    Delivered,
    Effect,
    Held,
    Nack,
    PublishCopy,
    RetryDelay,
    StartProcessing,
    copy_headers,
)
from ..messaging.idempotency import DedupStore
from ..messaging.protocol import ConsumerSpec
from ..messaging.topology import Topology
from .loop import Actor, Session
from .names import header_int, x_death_entries

__all__ = ["ConsumerActor", "Shared"]


class Shared:
    """State the consumers of one run share: the run's seed, the shared dedup store, delivery numbers."""

    def __init__(self, seed: int, store_capacity: int | None) -> None:
        self.seed = seed
        self.store = DedupStore(store_capacity)
        self.deliveries: dict[str, int] = {}
        self.dlq_copies: set[str] = set()  # ids a consumer published to a dead-letter exchange itself

    def next_delivery_number(self, msg_id: str) -> int:
        """1, 2, ... for successive processing starts of ``msg_id`` by any consumer (crash decisions)."""
        n = self.deliveries.get(msg_id, 0) + 1
        self.deliveries[msg_id] = n
        return n


class Received(NamedTuple):
    """A message as pika delivered it: what a copy is made from."""

    props: Any
    body: bytes


class ConsumerActor(Actor):
    """Consumes one queue; see the module docstring."""

    def __init__(self, session: Session, spec: ConsumerSpec, topology: Topology, rng: np.random.Generator,
                 shared: Shared) -> None:
        super().__init__(session, spec.node)
        if spec.downstream is not None:
            raise ValueError("downstream calls are not supported by the adapter")
        self.spec = spec
        self.queue_real = self.names.real(spec.queue)
        self.shared = shared
        # the core outlives crashes of the process: it keeps the durable state itself
        self.core: ConsumerCore[Received, int] = ConsumerCore(
            spec, topology, node=spec.node, seed=shared.seed, work=buffered_sampler(spec.processing_time, rng),
            shared_store=shared.store, deliveries=shared, log=self.log)
        self.self_crashes = 0
        queue = topology.queue(spec.queue)
        # what the broker discards silently when this consumer settles (no dead-letter exchange to watch)
        self.discards = queue.dead_letter_exchange is None
        self.delivery_limit = queue.delivery_limit if queue.is_quorum else None
        self._unsettled: dict[tuple[int, int], tuple[str, int]] = {}  # (gen, tag) -> (message id, delivery count)
        self.consumer_tag = f"{spec.node}.consumer"
        self.started = False

    @property
    def held(self) -> dict[tuple[int, int], Held[Received, int]]:
        """Deliveries held and not yet settled, by (connection generation, delivery tag)."""
        return self.core.held

    @property
    def idle(self) -> bool:
        """Nothing held, buffered, being processed or waiting on a timer or a copy's confirm."""
        return self.core.idle

    # -- channel set-up ----------------------------------------------------------------------
    def setup(self, channel: Any, gen: int) -> None:
        g = self.s.guard

        def confirms(_frame: Any = None) -> None:
            if self.core.needs_confirms:
                channel.confirm_delivery(ack_nack_callback=g(self._on_copy_confirm, gen),
                                         callback=g(lambda _f: self.set_ready(gen)))
            else:
                self.set_ready(gen)

        if self.spec.auto_ack:
            confirms()
        else:
            channel.basic_qos(prefetch_count=self.spec.prefetch, callback=g(confirms))

    def begin(self) -> None:
        """Time 0: start consuming."""
        self.started = True
        if self.ready:
            self._consume()

    def on_ready(self) -> None:
        self.core.connected(self.gen)
        if self.started:
            self._consume()

    def _consume(self) -> None:
        self.channel.basic_consume(self.queue_real, self.s.guard(self._on_message, self.gen),
                                   auto_ack=self.spec.auto_ack, consumer_tag=self.consumer_tag)

    # -- inputs -------------------------------------------------------------------------------------
    def _on_message(self, gen: int, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if gen != self.gen:
            return
        headers = props.headers or {}
        names = self.names
        d = Delivered(gen, method.delivery_tag, props.message_id or body.decode(errors="replace"),
                      names.sim(method.exchange), names.sim(method.routing_key), bool(method.redelivered),
                      header_int(headers, "x-delivery-count") if self.core.quorum else 0,
                      header_int(headers, RETRY_COUNT), tuple(x_death_entries(headers, names)), Received(props, body))
        if not self.spec.auto_ack and self.discards:
            self._unsettled[(gen, method.delivery_tag)] = (d.msg_id, d.delivery_count)
        self._carry_out(self.core.deliver(self.s.now(), d))

    def _processed(self, h: Held[Received, int]) -> None:
        self._carry_out(self.core.processed(self.s.now(), h))

    def _delay_elapsed(self, h: Held[Received, int]) -> None:
        self._carry_out(self.core.delay_elapsed(self.s.now(), h))

    def _on_copy_confirm(self, gen: int, frame: Any) -> None:
        if gen != self.gen:
            return
        method = frame.method
        self._carry_out(self.core.confirmed(self.s.now(), gen, method.delivery_tag, method.NAME == "Basic.Ack",
                                            bool(method.multiple)))

    # -- effects ------------------------------------------------------------------------------------
    def _carry_out(self, effects: list[Effect[Received, int]]) -> None:
        """Call the channel and set the timers the core asks for, in its order.

        Timers go through the loop even when they are 0 ms long, as a simulated
        timer does, so the core is never re-entered while its effects are carried out.
        """
        for e in effects:
            match e:
                case Ack():
                    self._unsettled.pop((e.conn, e.delivery_tag), None)
                    self.channel.basic_ack(e.delivery_tag)
                case Nack():
                    self.channel.basic_nack(e.delivery_tag, requeue=e.requeue)
                    self._observe_discard(e.conn, e.delivery_tag, e.requeue)
                case StartProcessing():
                    self.s.call_later(e.duration, self._processed, e.held)
                case PublishCopy():
                    self._publish_copy(e)
                case RetryDelay():
                    self.s.call_later(e.delay, self._delay_elapsed, e.held)
                case CrashProcess():
                    self._crash_process(e.restart_after)
                case CallDownstream():
                    raise AssertionError("downstream calls are refused in __init__")

    def _observe_discard(self, gen: int, tag: int, requeue: bool) -> None:
        """A nack the broker answers by discarding the message, on a queue without a dead-letter exchange: record
        the broker's ``drop`` (observed), which nothing on the wire shows. Without requeue the message is rejected
        (reason ``rejected``); with requeue, a quorum queue drops a message whose delivery count has reached its
        ``delivery_limit`` (``delivery_limit``), as it would dead-letter it with a dead-letter exchange."""
        entry = self._unsettled.pop((gen, tag), None)
        if entry is None:
            return
        msg_id, count = entry
        if not requeue:
            reason = "rejected"
        elif self.delivery_limit is not None and count >= self.delivery_limit:
            reason = "delivery_limit"
        else:
            return
        self.log.observed(self.s.now(), "drop", msg_id, "broker", queue=self.spec.queue, reason=reason)

    def _publish_copy(self, e: PublishCopy[Received, int]) -> None:
        p = e.original.props
        props = self.s.pika.BasicProperties(
            message_id=p.message_id, app_id=p.app_id, delivery_mode=p.delivery_mode, priority=p.priority,
            headers=dict(copy_headers((p.headers or {}).items(), e.retry_count)),
            expiration=None if e.expiration is None else str(int(round(e.expiration))))
        if e.purpose == "dlq_publish":
            self.shared.dlq_copies.add(e.msg_id)
        self.channel.basic_publish(self.names.real(e.exchange), self.names.routing_key(e.exchange, e.routing_key),
                                   e.original.body, props)

    # -- losing the connection, crashing ------------------------------------------------------------
    def on_connection_lost(self, reason: str) -> None:
        self._observe_returned(self.gen)
        self.core.connection_lost(self.s.now(), self.gen)

    def _observe_returned(self, gen: int) -> None:
        """The connection of generation ``gen`` is gone and the broker returns what it held: past a quorum queue's
        delivery limit (without a dead-letter exchange) the broker drops it; record that (observed)."""
        for key in [k for k in self._unsettled if k[0] == gen]:
            self._observe_discard(gen, key[1], True)

    def _crash_process(self, restart_after: float) -> None:
        """The consumer process dies now and restarts ``restart_after`` later."""
        self.self_crashes += 1
        self.crash()
        self.s.call_later(restart_after, self._restart_after_crash, self.self_crashes)

    def _restart_after_crash(self, crash_number: int) -> None:
        if self.crashed and crash_number == self.self_crashes and not self.s.stopping:
            self.restart()

    def on_crash(self) -> None:
        self._observe_returned(self.gen)
        self.core.crash(self.s.now())
