"""The consuming application on a real broker, mirroring :class:`sim.messaging.consumer.ConsumerNode`.

Manual acknowledgements with ``basic.qos(prefetch)`` (or auto-ack), at most
``concurrency`` deliveries processed at a time, the rest waiting in a local
buffer. Processing takes a time drawn from the same stream as in the
simulation (``consumer/<node>``); the failure, crash and jitter decisions are
:func:`~sim.messaging.retry.decision_uniform` of the same (seed, purpose,
message id, attempt or delivery number), so a real run faces exactly the
faults the simulated run faces. The attempt number is read from the message as
the simulated consumer reads it: the quorum ``x-delivery-count`` header, the
``x-retry-count`` header of a republished copy, the ``x-death`` count of a
``dlx_wait`` retry, or this consumer's own durable tally on a classic queue.

A crash closes the socket at once with the unacked deliveries still held (the
broker requeues them); the process restarts ``restart_after`` later and opens
a new connection, which is recorded. Retry policies are those of
:mod:`sim.messaging.retry`; copies (republish, final DLQ publish) are
published with confirms and the original is acked once its copy is confirmed.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..dists import buffered_sampler
from ..messaging.idempotency import DedupStore
from ..messaging.protocol import ConsumerSpec
from ..messaging.retry import decision_uniform
from ..messaging.topology import Topology
from .loop import Actor, Session
from .names import death_count, header_int, x_death_text

__all__ = ["ConsumerActor", "Shared"]

_DROPPED_HEADERS = ("x-delivery-count", "x-retry-count")


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


class _Held:
    """A delivery the consumer holds until it settles it (or loses it)."""

    __slots__ = ("gen", "tag", "msg_id", "props", "body", "exchange", "routing_key", "attempt", "crash", "dead")

    def __init__(self, gen: int, tag: int, msg_id: str, props: Any, body: bytes, exchange: str,
                 routing_key: str) -> None:
        self.gen = gen
        self.tag = tag
        self.msg_id = msg_id
        self.props = props
        self.body = body
        self.exchange = exchange  # the broker's names, as delivered
        self.routing_key = routing_key
        self.attempt = 0
        self.crash = False
        self.dead = False


class ConsumerActor(Actor):
    """Consumes one queue; see the module docstring."""

    def __init__(self, session: Session, spec: ConsumerSpec, topology: Topology, rng: np.random.Generator,
                 shared: Shared) -> None:
        super().__init__(session, spec.node)
        if spec.downstream is not None:
            raise ValueError("downstream calls are not supported by the adapter")
        self.spec = spec
        self.policy = spec.retry
        self.quorum = topology.queue(spec.queue).is_quorum
        self.queue_real = self.names.real(spec.queue)
        self.shared = shared
        self._work = buffered_sampler(spec.processing_time, rng)
        self.tally: dict[str, int] = {}  # durable: deliveries per message id on a classic queue
        idem = spec.idempotency
        self.durable_store = DedupStore(idem.capacity) if idem is not None and idem.store == "local_durable" else None
        pol = self.policy
        self.uses_confirms = pol.mode == "republish" or (pol.mode == "dlx_wait" and pol.max_attempts is not None)
        self.self_crashes = 0
        self.life = 0  # +1 at every crash: timers of an earlier life never fire into this one
        self.consumer_tag = f"{spec.node}.consumer"
        self.started = False
        self._boot()

    def _boot(self) -> None:
        self.held: dict[tuple[int, int], _Held] = {}
        self.buffer: deque[_Held] = deque()
        self.busy = 0
        self.pub_seq = 0
        self.confirm_waits: dict[int, _Held] = {}
        self.timers = 0  # processing and retry-delay timers pending in this life of the process
        self._pumping = False
        idem = self.spec.idempotency
        if idem is None:
            self.store: DedupStore | None = None
        elif idem.store == "shared":
            self.store = self.shared.store
        elif idem.store == "local_durable":
            self.store = self.durable_store
        else:
            self.store = DedupStore(idem.capacity)

    # -- channel set-up ----------------------------------------------------------------------
    def setup(self, channel: Any, gen: int) -> None:
        g = self.s.guard

        def confirms(_frame: Any = None) -> None:
            if self.uses_confirms:
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
        self.pub_seq = 0
        if self.started:
            self._consume()

    def _consume(self) -> None:
        self.channel.basic_consume(self.queue_real, self.s.guard(self._on_message, self.gen),
                                   auto_ack=self.spec.auto_ack, consumer_tag=self.consumer_tag)

    # -- deliveries -------------------------------------------------------------------------------
    def _on_message(self, gen: int, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if gen != self.gen:
            return
        headers = props.headers or {}
        msg_id = props.message_id or body.decode(errors="replace")
        count = header_int(headers, "x-delivery-count") if self.quorum else 0
        h = _Held(gen, method.delivery_tag, msg_id, props, body, method.exchange, method.routing_key)
        h.attempt = self.attempt_of(msg_id, headers, count)
        self.held[(gen, h.tag)] = h
        self.log.record(self.s.now(), "receive", msg_id, self.node, queue=self.spec.queue,
                        exchange=self.names.sim(method.exchange), routing_key=self.names.sim(method.routing_key),
                        tag=h.tag, redelivered=bool(method.redelivered), delivery_count=count, attempt=h.attempt,
                        x_death=x_death_text(headers, self.names))
        self.buffer.append(h)
        self._pump()

    def attempt_of(self, msg_id: str, headers: dict[str, Any], delivery_count: int) -> int:
        """This delivery's attempt number (1 = the first), read as the simulated consumer reads it."""
        mode = self.policy.mode
        if mode == "republish":
            return header_int(headers, "x-retry-count") + 1
        if mode == "dlx_wait":
            return death_count(headers, self.names, self.spec.queue, "rejected") + 1
        if self.quorum:
            return delivery_count + 1
        self.tally[msg_id] = self.tally.get(msg_id, 0) + 1
        return self.tally[msg_id]

    def _pump(self) -> None:
        """Start buffered deliveries while there is room; re-entrant calls (from an attempt that ended at once,
        with nothing to process) return at once and the outer loop carries on, so the stack stays flat."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self.buffer and self.busy < self.spec.concurrency:
                h = self.buffer.popleft()
                if not h.dead:
                    self._start(h)
        finally:
            self._pumping = False

    def _start(self, h: _Held) -> None:
        if self.store is not None and self.store.seen(h.msg_id):
            self.log.record(self.s.now(), "dedup_skip", h.msg_id, self.node, queue=self.spec.queue, attempt=h.attempt)
            self._ack(h)
            return
        self.busy += 1
        p_crash = self.spec.crash_probability
        if p_crash > 0:
            n = self.shared.next_delivery_number(h.msg_id)
            h.crash = decision_uniform(self.shared.seed, "crash", h.msg_id, n) < p_crash
        self.log.record(self.s.now(), "process", h.msg_id, self.node, queue=self.spec.queue, attempt=h.attempt)
        self._later(float(self._work()), self._worked, h)

    def _worked(self, h: _Held) -> None:
        self._done(h, True, "")

    def _done(self, h: _Held, ok: bool, why: str) -> None:
        self.busy -= 1
        p = self.spec.failure_probability
        if ok and p > 0 and decision_uniform(self.shared.seed, "fail", h.msg_id, h.attempt) < p:
            ok, why = False, "error"
        if h.crash and self.spec.crash_point == "before_effect":
            self._crash_process()
            return
        if self.spec.auto_ack:
            self.held.pop((h.gen, h.tag), None)  # settled at delivery: nothing left to lose
        now = self.s.now()
        if ok:
            self.log.record(now, "side_effect", h.msg_id, self.node, queue=self.spec.queue, attempt=h.attempt)
            if self.store is not None:
                self.store.add(h.msg_id)
        else:
            self.log.record(now, "fail", h.msg_id, self.node, queue=self.spec.queue, attempt=h.attempt, reason=why)
        if h.crash:
            self._crash_process()
            return
        if ok:
            self._ack(h)
        else:
            self._failed(h)
        self._pump()

    # -- settling ---------------------------------------------------------------------------------------
    def _usable(self, h: _Held) -> bool:
        if h.dead:
            return False
        if self.spec.auto_ack:
            self.held.pop((h.gen, h.tag), None)
            return False
        if h.gen != self.gen or not self.ready:
            self._abandon(h, "connection_lost")
            return False
        return True

    def _ack(self, h: _Held) -> None:
        if self._usable(h):
            self.held.pop((h.gen, h.tag), None)
            self.channel.basic_ack(h.tag)
            self.log.record(self.s.now(), "ack", h.msg_id, self.node, queue=self.spec.queue, tag=h.tag,
                            attempt=h.attempt)

    def _nack(self, h: _Held, requeue: bool, reason: str = "") -> None:
        if self._usable(h):
            self.held.pop((h.gen, h.tag), None)
            self.channel.basic_nack(h.tag, requeue=requeue)
            self.log.record(self.s.now(), "nack" if requeue else "reject", h.msg_id, self.node,
                            queue=self.spec.queue, tag=h.tag, attempt=h.attempt, reason=reason)

    def _abandon(self, h: _Held, reason: str) -> None:
        if not h.dead:
            h.dead = True
            self.held.pop((h.gen, h.tag), None)
            self.log.record(self.s.now(), "abandon", h.msg_id, self.node, queue=self.spec.queue, tag=h.tag,
                            attempt=h.attempt, reason=reason)

    def _failed(self, h: _Held) -> None:
        """Apply the retry policy to a failed attempt (as :meth:`ConsumerNode._failed`)."""
        pol = self.policy
        if self.spec.auto_ack:
            self.held.pop((h.gen, h.tag), None)
            return
        a = h.attempt
        if pol.exhausted(a):
            if pol.mode == "dlx_wait":
                ex = pol.dead_letter_exchange or ""
                rk = pol.dead_letter_routing_key
                rk_real = self.names.routing_key(ex, rk) if rk is not None else h.routing_key
                self._publish_copy(h, ex, rk_real, None, None, "dlq_publish")
            else:
                self._nack(h, False, "max_attempts" if pol.mode != "none" else "")
            return
        if pol.mode == "dlx_wait":
            self._nack(h, False, "retry")
            return
        u = decision_uniform(self.shared.seed, "jitter", h.msg_id, a) if pol.jitter != "none" else 0.0
        delay = pol.delay_for(a, u)
        if pol.mode in ("requeue", "delivery_limit"):
            self._later(delay, self._nack_later, h)
        elif pol.via_exchange is not None:
            self._publish_copy(h, pol.via_exchange, h.routing_key, a, delay, "retry_publish")
        else:
            self._later(delay, self._republish, h)

    def _later(self, delay: float, fn: Any, h: _Held) -> None:
        """``fn(h)`` after ``delay`` ms, unless the process crashes first (its timers die with it); at once if 0."""
        if delay > 0:
            self.timers += 1
            self.s.call_later(delay, self._timer_fired, self.life, fn, h)
        else:
            fn(h)

    def _timer_fired(self, life: int, fn: Any, h: _Held) -> None:
        if life == self.life:
            self.timers -= 1
            fn(h)

    def _nack_later(self, h: _Held) -> None:
        self._nack(h, True, "retry")

    def _republish(self, h: _Held) -> None:
        self._publish_copy(h, self.names.sim(h.exchange), h.routing_key, h.attempt, None, "retry_publish")

    def _publish_copy(self, h: _Held, exchange: str, routing_key_real: str, retry_count: int | None,
                      expiration: float | None, event: str) -> None:
        """Publish a copy of ``h`` (scenario exchange name, broker routing key) with a confirm; ack ``h`` on it."""
        if not self._usable(h):
            return
        headers = {k: v for k, v in (h.props.headers or {}).items() if k not in _DROPPED_HEADERS}
        if retry_count is not None:
            headers["x-retry-count"] = retry_count
        p = h.props
        props = self.s.pika.BasicProperties(
            message_id=p.message_id, app_id=p.app_id, delivery_mode=p.delivery_mode, priority=p.priority,
            headers=headers, expiration=None if expiration is None else str(int(round(expiration))))
        self.pub_seq += 1
        self.confirm_waits[self.pub_seq] = h
        if event == "dlq_publish":
            self.shared.dlq_copies.add(h.msg_id)
        self.channel.basic_publish(self.names.real(exchange), routing_key_real, h.body, props)
        self.log.record(self.s.now(), event, h.msg_id, self.node, queue=self.spec.queue, exchange=exchange,
                        routing_key=self.names.sim(routing_key_real), attempt=h.attempt)

    def _on_copy_confirm(self, gen: int, frame: Any) -> None:
        if gen != self.gen:
            return
        method = frame.method
        tag = method.delivery_tag
        seqs = [s for s in self.confirm_waits if s <= tag] if method.multiple else [tag]
        for seq in seqs:
            h = self.confirm_waits.pop(seq, None)
            if h is None:
                continue
            if method.NAME == "Basic.Ack":
                self._ack(h)
            else:
                self._nack(h, True, "copy_nacked")

    # -- losing the connection, crashing ------------------------------------------------------------
    def on_connection_lost(self, reason: str) -> None:
        if self.spec.auto_ack:
            return  # auto-acked messages are this consumer's to process, connection or not
        self.confirm_waits = {}
        for h in list(self.held.values()):  # all of them came on the lost connection
            self._abandon(h, "connection_lost")
        self.buffer = deque(h for h in self.buffer if not h.dead)

    def _crash_process(self) -> None:
        """The consumer process dies now and restarts ``restart_after`` later."""
        self.self_crashes += 1
        self.crash()
        self.s.call_later(self.spec.restart_after, self._restart_after_crash, self.self_crashes)

    def _restart_after_crash(self, crash_number: int) -> None:
        if self.crashed and crash_number == self.self_crashes and not self.s.stopping:
            self.restart()

    def on_crash(self) -> None:
        for h in list(self.held.values()):
            self._abandon(h, "crash")
        self.life += 1
        self._boot()

    def on_restart(self) -> None:
        self._boot()

    @property
    def idle(self) -> bool:
        """Nothing held, buffered, being processed or waiting on a timer or a copy's confirm."""
        return not self.held and not self.buffer and self.busy == 0 and self.timers == 0 and not self.confirm_waits
