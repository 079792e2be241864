"""What the adapter sees of the broker itself: dead-letter queue arrivals, queue depths, what is left.

A real broker does not report its internal events, so an observer with its own
connection infers the ones the delivery checker needs and records them with
``source = "observer"``:

* every dead-letter queue (without a length limit, which consuming would
  change) is consumed as messages arrive: an arrival that a consumer did not
  publish there itself is recorded as ``dead_letter`` (queue and reason from the
  newest ``x-death`` entry), then ``enqueue`` into the dead-letter queue;
* queue depths are sampled with passive ``queue.declare`` (ready messages; the
  unacked count is what the run's consumers hold);
* an idle probe asks each transit queue for its ready messages *and its
  consumers*: a queue is empty only when nothing is ready and the broker counts
  exactly the consumers the run has on it now (:func:`probe_says_empty`). A
  consumer that crashed holding deliveries is gone from the run at once, but the
  broker returns its deliveries only when it processes the closed connection;
  until then a quorum queue answers 0 ready with the dead consumer still counted
  (measured on RabbitMQ 3.10.8, ``tests/test_rabbitmq_observer.py``), and a probe
  that trusted the ready count alone called such a run idle with the held
  messages still to come back. Worse, a quorum queue whose Raft server does
  not answer the broker's query within 250 ms (a loaded machine) reports
  ``0`` ready and ``0`` consumers (``rabbit_quorum_queue:stat/2`` turns a
  timeout or an error into ``{ok, 0, 0}``): so the consumer count must match,
  and an answer that took :data:`SLOW_ANSWER_MS` or more does not count as
  empty. Trusting such an answer is the likely way a run once ended "idle"
  with 9 messages still in a quorum queue its two consumers (prefetch 1) never
  received;
* at the end, :func:`drain_remaining` empties every queue and records a
  ``remain`` event per message (after the consumers' connections closed, so
  unacked messages are back in their queues).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..messaging.protocol import MessagingConfig
from .amqp import close_quietly, connect_blocking, pika_module
from .log import ObservedLog
from .loop import Actor, Session
from .names import RunNames, header_int, x_death_entries, x_death_text
from .settings import AmqpSettings

__all__ = ["ObserverActor", "drain_remaining", "probe_says_empty", "OBSERVER_NODE", "SLOW_ANSWER_MS"]

OBSERVER_NODE = "observer"

#: a probe answer this slow (ms) may be a quorum queue's timed-out query, whose counts are 0 whatever the queue holds
SLOW_ANSWER_MS = 250.0


class ObserverActor(Actor):
    """Watches dead-letter queues, samples depths and answers idle probes (see the module docstring)."""

    def __init__(self, session: Session, cfg: MessagingConfig, dlq_copies: set[str],
                 unacked: Callable[[str], int], depth_interval: float,
                 consuming: Callable[[str], int] | None = None) -> None:
        super().__init__(session, OBSERVER_NODE)
        topo = cfg.topology
        self.dlqs = cfg.dlq_names()
        self.live_dlqs = [q for q in self.dlqs if topo.queue(q).max_length is None]
        self.queues = topo.queue_names()
        # queues that must be empty for the run to be idle, as in the simulation
        self.transit = cfg.transit_queues()
        self.dlq_copies = dlq_copies
        self.unacked = unacked
        self.depth_interval = depth_interval
        # how many of the run's consumers consume a queue now (None: the consumer count is not checked)
        self.consuming = consuming
        self.arrivals = 0
        self._probe: dict[str, tuple[int, int, float]] | None = None

    def setup(self, channel: Any, gen: int) -> None:
        g = self.s.guard

        def consume(_frame: Any = None) -> None:
            for q in self.live_dlqs:
                channel.basic_consume(self.names.real(q), g(self._on_dead_letter, gen, q), auto_ack=True)
            self.set_ready(gen)

        channel.basic_qos(prefetch_count=1000, callback=g(consume))

    def begin(self) -> None:
        self._sample()

    def _on_dead_letter(self, gen: int, dlq: str, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if gen != self.gen:
            return
        now = self.s.now()
        headers = props.headers or {}
        msg_id = props.message_id or body.decode(errors="replace")
        ex, rk = self.names.sim(method.exchange), self.names.sim(method.routing_key)
        text = x_death_text(headers, self.names)
        deaths = x_death_entries(headers, self.names)
        self.arrivals += 1
        if deaths and msg_id not in self.dlq_copies:
            queue, reason, _count = deaths[0]
            self.log.observed(now, "dead_letter", msg_id, "broker", queue=queue, exchange=ex, routing_key=rk,
                              reason=reason, x_death=text)
        self.log.observed(now, "enqueue", msg_id, "broker", queue=dlq, exchange=ex, routing_key=rk, x_death=text)

    # -- depths and idleness --------------------------------------------------------------------
    def _sample(self) -> None:
        if self.s.stopping:
            return
        if self.ready:
            t = self.s.now()
            for q in self.queues:
                self.channel.queue_declare(self.names.real(q), passive=True,
                                           callback=self.s.guard(self._depth, self.gen, q, t))
        self.s.call_later(self.depth_interval, self._sample)

    def _depth(self, gen: int, queue: str, t: float, frame: Any) -> None:
        if gen == self.gen:
            self.log.sample_depth(t, queue, int(frame.method.message_count), self.unacked(queue))

    def probe(self) -> None:
        """Ask the broker how many messages are ready in the transit queues (see :attr:`probe_result`)."""
        if not self.ready:
            return
        self._probe = {}
        gen, asked = self.gen, self.s.now()
        for q in self.transit:
            self.channel.queue_declare(self.names.real(q), passive=True,
                                       callback=self.s.guard(self._probed, gen, q, asked))
        if not self.transit:
            self._probe = {}

    def _probed(self, gen: int, queue: str, asked: float, frame: Any) -> None:
        if gen == self.gen and self._probe is not None:
            self._probe[queue] = (int(frame.method.message_count), int(frame.method.consumer_count),
                                  self.s.now() - asked)

    def probe_result(self) -> bool | None:
        """None while a probe is unanswered; else whether every transit queue was empty (:func:`probe_says_empty`)."""
        if self._probe is None or len(self._probe) < len(self.transit):
            return None
        answers, self._probe = self._probe, None
        return probe_says_empty(answers, self.expected_consumers if self.consuming is not None else None)

    def expected_consumers(self, queue: str) -> int:
        """The consumers the broker should count on ``queue``: the run's ready consumers, and the observer's own on
        a dead-letter queue it watches."""
        own = 1 if self.ready and queue in self.live_dlqs else 0
        return (self.consuming(queue) if self.consuming is not None else 0) + own


def probe_says_empty(answers: dict[str, tuple[int, int, float]], expected: Callable[[str], int] | None) -> bool:
    """Whether the answers of an idle probe, ``queue -> (ready messages, consumers, ms the answer took)``, show every
    queue empty: nothing ready, an answer faster than :data:`SLOW_ANSWER_MS`, and (unless ``expected`` is None) the
    broker counting ``expected(queue)`` consumers on it. A consumer that the broker still counts but the run no longer
    has crashed or closed with deliveries the broker has not yet returned: their messages will be ready again. Fewer
    consumers than the run has: the broker has not seen a consume yet, or its answer is a timed-out quorum queue's
    ``0, 0`` (module docstring)."""
    return all(ready == 0 and took < SLOW_ANSWER_MS and (expected is None or consumers == expected(queue))
               for queue, (ready, consumers, took) in answers.items())


def drain_remaining(settings: AmqpSettings, cfg: MessagingConfig, names: RunNames, log: ObservedLog,
                    now: Callable[[], float], *, timeout_s: float = 60.0) -> int:
    """Empty every queue of the run, recording ``remain`` per message; returns how many there were.

    Queues with a TTL go first (their messages would otherwise expire into
    queues already drained), dead-letter queues last.
    """
    pika = pika_module()
    topo = cfg.topology
    dlqs = set(cfg.dlq_names())
    order = sorted(topo.queues, key=lambda q: (q.name in dlqs, q.message_ttl is None))
    deadline = time.monotonic() + timeout_s
    total = 0
    conn = connect_blocking(settings)
    try:
        channel = conn.channel()
        for spec in order:
            real = names.real(spec.name)
            try:
                expected = channel.queue_declare(real, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                channel = conn.channel()  # the queue is gone (a non-durable queue after a restart)
                continue
            got = 0
            if expected:
                channel.basic_qos(prefetch_count=1000)
                # a quorum queue just after a restart may answer late: wait up to 5 s of silence for the
                # count it reported (fewer arrive when messages expire meanwhile)
                quiet = 0
                for method, props, body in channel.consume(real, auto_ack=True, inactivity_timeout=0.5):
                    if time.monotonic() > deadline:
                        break
                    if method is None:
                        quiet += 1
                        if quiet >= 10:
                            break
                        continue
                    quiet = 0
                    headers = props.headers or {}
                    msg_id = props.message_id or body.decode(errors="replace")
                    count = header_int(headers, "x-delivery-count") if spec.is_quorum else 0
                    log.observed(now(), "remain", msg_id, "broker", queue=spec.name, reason="ready",
                                 delivery_count=count, redelivered=bool(method.redelivered),
                                 x_death=x_death_text(headers, names))
                    got += 1
                    if got >= expected:
                        break
                channel.cancel()
            total += got
    finally:
        close_quietly(conn)
    return total
