"""The consuming application's logic, written once for the simulated and the real broker.

:class:`ConsumerCore` is a deterministic state machine with no clock, no
network and no broker client: every input takes the current time ``now`` (ms)
and an event, and returns the *effects* its driver must carry out, in order.
Two drivers run it: :class:`~sim.messaging.consumer.ConsumerNode` on the
simulated network (frames and timers), and
:class:`~sim.rabbitmq.consumer.ConsumerActor` on a live RabbitMQ through pika.
Because both run this one class, a real run makes exactly the decisions the
simulated run makes, which is what lets the adapter check the model.

Processing one delivery (at most ``concurrency`` at a time; the rest wait in a
local buffer, bounded by ``prefetch`` at the broker):

1. ``receive``; the attempt number comes from the message (quorum delivery
   count, ``x-retry-count``, ``x-death``) or, on a classic queue that does not
   count deliveries, from this consumer's own durable tally (:meth:`ConsumerCore.attempt_of`);
2. an idempotent consumer that finds the id in its dedup store acks (``dedup_skip``);
3. ``process``: local ``processing_time``, then a call to the ``downstream``
   service if there is one (``fail`` with reason ``timeout`` after ``call_timeout``);
   the attempt also fails with probability ``failure_probability``
   (``decision_uniform(seed, "fail", id, attempt)``), and every attempt fails for a
   *poison* message (a fraction ``poison_probability`` of the messages, picked by
   ``decision_uniform(seed, "poison", id, 0)``: one the consumer can never process, e.g. malformed);
4. success: ``side_effect`` (and the id into the dedup store, atomically: a copy whose id
   got there first, processed concurrently elsewhere, records ``dedup_skip`` instead), then ``ack``;
   failure: the retry policy (:mod:`sim.messaging.retry`). Copies (a republished retry, the
   final dead-letter publish of ``dlx_wait``) are published with a confirm and the original
   is acked only once its copy is confirmed (nacked with requeue if the copy is refused), so
   a crash in between duplicates the message rather than losing it.

Crashes: with probability ``crash_probability`` per delivery
(``decision_uniform(seed, "crash", id, n)``, *n* counting the processing starts
of this id by any consumer) the process dies at the end of that attempt, before its effect
(``crash_point = "before_effect"``) or after the effect and before the ack
(``"after_effect"``: the classic duplicate). The core asks for it
(:class:`CrashProcess`); the driver kills the process and calls :meth:`ConsumerCore.crash`.

Facts of RabbitMQ 3.10 this relies on:

* delivery tags count per channel, and a tag of a closed channel means nothing
  on a new one: once its connection is gone the broker has requeued the
  delivery, so the consumer can no longer settle it (it is ``abandon``-ed);
* publisher-confirm sequence numbers start again at 1 on every new channel;
* a quorum queue adds ``x-delivery-count`` (returns so far) to a redelivery;
  a classic queue counts nothing, only ``redelivered`` is set;
* ``basic.nack`` / ``basic.reject`` without requeue dead-letters with reason
  ``rejected``, which adds or increments the (queue, ``rejected``) entry of ``x-death``;
* per-message ``expiration`` is a property of the copy, so a copy republished
  through a TTL wait queue waits ``delay(attempt)`` there before it is dead-lettered back.

Durable (survives a crash of the process): the classic-queue delivery tally, a
``local_durable`` dedup store, the downstream call counter (late replies never
match a new call). Everything else is volatile and reset by :meth:`ConsumerCore.crash`.

The core records the consumer's ``client`` events (:mod:`sim.messaging.history`)
itself, in scenario names; drivers translate names, headers and messages of
their world into :class:`Delivered` and back from :class:`PublishCopy`. The
driver's message and its name for a connection are opaque to the core (type
parameters ``M`` and ``C``): it compares connections and hands the message back
for a copy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from .history import MessageLog
from .idempotency import DedupStore
from .retry import decision_uniform
from .topology import Topology

if TYPE_CHECKING:
    from .protocol import ConsumerSpec

__all__ = ["ConsumerCore", "ConsumerCoreError", "DeliveryNumbers", "Delivered", "Held", "Ack", "Nack", "PublishCopy",
           "StartProcessing", "CallDownstream", "RetryDelay", "CrashProcess", "Effect", "RETRY_COUNT", "copy_headers",
           "x_death_text"]

M = TypeVar("M")  # the driver's message
C = TypeVar("C", bound=Hashable)  # the driver's name of a connection

RETRY_COUNT = "x-retry-count"
_DROPPED_ON_COPY = ("x-delivery-count", RETRY_COUNT)

Death = tuple[str, str, int]  # one x-death entry: (queue, reason, count), scenario names


class ConsumerCoreError(RuntimeError):
    """A driver fed the core an event that cannot happen (a bug in the driver, not in the scenario)."""


class DeliveryNumbers(Protocol):
    """Counts the processing starts of each message id by any consumer of the run (for crash decisions)."""

    def next_delivery_number(self, msg_id: str) -> int: ...


def copy_headers(headers: Iterable[tuple[str, Any]], retry_count: int | None) -> list[tuple[str, Any]]:
    """The headers of a copy the consumer publishes: the original's, then ``x-retry-count`` if given.

    The broker's ``x-delivery-count`` of the original is dropped (the copy is a
    new message with its own count), and so is an older ``x-retry-count``.
    """
    kept = [(k, v) for k, v in headers if k not in _DROPPED_ON_COPY]
    if retry_count is not None:
        kept.append((RETRY_COUNT, retry_count))
    return kept


def x_death_text(deaths: Iterable[Death]) -> str:
    """The event table's compact form of ``x-death``: ``queue:reason:count`` entries joined by ``|``."""
    return "|".join(f"{q}:{r}:{c}" for q, r, c in deaths)


# -- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivered(Generic[M, C]):
    """``basic.deliver`` as the application sees it, names and headers already read by the driver.

    ``conn`` names the connection (channel) the delivery came on; ``exchange`` and
    ``routing_key`` are the scenario's names; ``delivery_count`` is the quorum
    queue's ``x-delivery-count`` (0 where the queue does not count);
    ``retry_count`` the ``x-retry-count`` header (0 if absent); ``deaths`` the
    ``x-death`` entries, most recent first; ``message`` the driver's own message,
    handed back in :class:`PublishCopy`.
    """

    conn: C
    delivery_tag: int
    msg_id: str
    exchange: str
    routing_key: str
    redelivered: bool
    delivery_count: int
    retry_count: int
    deaths: tuple[Death, ...]
    message: M


_Stage = Literal["buffered", "processing", "calling", "waiting", "settling"]


class Held(Generic[M, C]):
    """A delivery the consumer holds until it settles it (or loses it); drivers pass it back as a token."""

    __slots__ = ("conn", "tag", "msg_id", "exchange", "routing_key", "message", "attempt", "life", "crash",
                 "dead", "stage", "then")

    def __init__(self, d: Delivered[M, C], attempt: int, life: int) -> None:
        self.conn = d.conn
        self.tag = d.delivery_tag
        self.msg_id = d.msg_id
        self.exchange = d.exchange
        self.routing_key = d.routing_key
        self.message = d.message
        self.attempt = attempt
        self.life = life  # the process life it arrived in: events of an earlier life are stale
        self.crash = False  # the process dies at the end of this attempt
        self.dead = False  # lost with its connection or the process: never settled by this consumer
        self.stage: _Stage = "buffered"
        self.then: Literal["requeue", "republish"] = "requeue"  # what a retry delay ends in


# -- effects ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ack(Generic[C]):
    """``basic.ack`` of ``delivery_tag`` on connection ``conn``."""

    conn: C
    delivery_tag: int


@dataclass(frozen=True, slots=True)
class Nack(Generic[C]):
    """``basic.nack`` of ``delivery_tag``; without ``requeue`` the queue dead-letters it (``rejected``)."""

    conn: C
    delivery_tag: int
    requeue: bool


@dataclass(frozen=True, slots=True)
class PublishCopy(Generic[M, C]):
    """``basic.publish`` of a copy of ``original`` in confirm mode, as publish ``seq`` of ``conn``.

    Headers: :func:`copy_headers` with ``retry_count``; ``expiration`` (ms) replaces
    the original's (``None``: none). ``purpose`` is the event recorded:
    ``retry_publish`` or ``dlq_publish``.
    """

    conn: C
    seq: int
    msg_id: str
    original: M
    exchange: str
    routing_key: str
    retry_count: int | None
    expiration: float | None
    purpose: Literal["retry_publish", "dlq_publish"]


@dataclass(frozen=True, slots=True)
class StartProcessing(Generic[M, C]):
    """Process ``held`` for ``duration`` ms, then call :meth:`ConsumerCore.processed`."""

    held: Held[M, C]
    duration: float


@dataclass(frozen=True, slots=True)
class CallDownstream:
    """Call ``service``; its reply goes to :meth:`ConsumerCore.call_replied`, or after ``timeout`` ms
    without one, :meth:`ConsumerCore.call_timed_out`."""

    service: str
    call_id: int
    msg_id: str
    attempt: int
    timeout: float


@dataclass(frozen=True, slots=True)
class RetryDelay(Generic[M, C]):
    """Hold ``held`` for ``delay`` ms before retrying it, then call :meth:`ConsumerCore.delay_elapsed`."""

    held: Held[M, C]
    delay: float


@dataclass(frozen=True, slots=True)
class CrashProcess:
    """The process dies now (its socket closes with it) and restarts ``restart_after`` ms later.

    Always the last effect of its batch; carrying it out includes calling
    :meth:`ConsumerCore.crash`.
    """

    restart_after: float


# generic in (M, C), the order of first appearance
Effect = (PublishCopy[M, C] | Ack[C] | Nack[C] | StartProcessing[M, C] | RetryDelay[M, C] | CallDownstream
          | CrashProcess)


class ConsumerCore(Generic[M, C]):
    """One consuming application's state and decisions; see the module docstring.

    ``work`` samples a processing time (ms) per attempt; ``shared_store`` is the
    run's dedup store for ``idempotency.store = "shared"``; ``deliveries`` numbers
    processing starts across consumers; events are recorded in ``log`` as ``node``.
    """

    def __init__(self, spec: ConsumerSpec, topology: Topology, *, node: str, seed: int,
                 work: Callable[[], float], shared_store: DedupStore, deliveries: DeliveryNumbers,
                 log: MessageLog) -> None:
        self.spec = spec
        self.policy = spec.retry
        self.quorum = topology.queue(spec.queue).is_quorum
        self.node = node
        self.seed = seed
        self.log = log
        self._work = work
        self._shared_store = shared_store
        self._deliveries = deliveries
        # durable: survives crashes of the process
        self.tally: dict[str, int] = {}  # deliveries per message id, on a classic queue
        idem = spec.idempotency
        self._durable_store = DedupStore(idem.capacity) if idem is not None and idem.store == "local_durable" else None
        self._next_call = 0
        self.life = 0  # +1 at every crash
        self._out: list[Effect[M, C]] = []
        self._reset()

    def _reset(self) -> None:
        """Volatile state, as a freshly started process has it."""
        self.conn: C | None = None
        self.held: dict[tuple[C, int], Held[M, C]] = {}
        self.buffer: deque[Held[M, C]] = deque()
        self.busy = 0
        self.pub_seq = 0
        self.confirm_waits: dict[int, Held[M, C]] = {}
        self.calls: dict[int, Held[M, C]] = {}
        self.delays = 0  # retry delays pending
        idem = self.spec.idempotency
        if idem is None:
            self.store: DedupStore | None = None
        elif idem.store == "shared":
            self.store = self._shared_store
        elif idem.store == "local_durable":
            self.store = self._durable_store
        else:
            self.store = DedupStore(idem.capacity)

    # -- inspection ---------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing held, buffered, being processed, waiting on a retry delay or on a copy's confirm."""
        return not self.held and not self.buffer and self.busy == 0 and self.delays == 0 and not self.confirm_waits

    @property
    def needs_confirms(self) -> bool:
        """Whether this consumer publishes copies, so its channel must be in confirm mode."""
        pol = self.policy
        return pol.mode == "republish" or (pol.mode == "dlx_wait" and pol.max_attempts is not None)

    # -- the connection and the process ---------------------------------------------------------
    def connected(self, conn: C) -> None:
        """Connection ``conn`` is open with its channel set up (publish sequence numbers start again)."""
        self.conn = conn
        self.pub_seq = 0

    def connection_lost(self, now: float, conn: C) -> None:
        """Connection ``conn`` is gone: the broker requeued what it delivered there and not yet settled."""
        if conn != self.conn:
            raise ConsumerCoreError(f"{self.node}: lost connection {conn!r}, but the open one is {self.conn!r}")
        self.conn = None
        if self.spec.auto_ack:
            return  # auto-acked messages are this consumer's to process, connection or not
        self.confirm_waits = {}
        for h in list(self.held.values()):
            if h.conn == conn:
                self._abandon(now, h, "connection_lost")
        self.buffer = deque(h for h in self.buffer if not h.dead)

    def crash(self, now: float) -> None:
        """The process died (its own :class:`CrashProcess` or a machine failure): volatile state is lost."""
        for h in list(self.held.values()):
            self._abandon(now, h, "crash")
        self.life += 1
        self._reset()

    # -- deliveries -----------------------------------------------------------------------------
    def deliver(self, now: float, d: Delivered[M, C]) -> list[Effect[M, C]]:
        """``basic.deliver``: hold it, buffer it, start what there is room for."""
        if self.conn is None or d.conn != self.conn:
            raise ConsumerCoreError(f"{self.node}: delivery {d.delivery_tag} on connection {d.conn!r}, but the "
                                    f"open one is {self.conn!r} (drivers drop frames of closed connections)")
        key = (d.conn, d.delivery_tag)
        if key in self.held:
            raise ConsumerCoreError(f"{self.node}: delivery tag {d.delivery_tag} of {d.conn!r} delivered twice "
                                    "(drivers drop repeated frames)")
        out = self._begin()
        h = Held(d, self.attempt_of(d), self.life)
        self.held[key] = h
        self.log.record(now, "receive", d.msg_id, self.node, queue=self.spec.queue, exchange=d.exchange,
                        routing_key=d.routing_key, tag=d.delivery_tag, redelivered=d.redelivered,
                        delivery_count=d.delivery_count, attempt=h.attempt, x_death=x_death_text(d.deaths))
        self.buffer.append(h)
        self._pump(now)
        return out

    def attempt_of(self, d: Delivered[M, C]) -> int:
        """This delivery's attempt number (1 = first), from what the message itself carries.

        On a classic queue, which does not count deliveries, the consumer counts
        them itself (durably): each call counts one more delivery of ``d.msg_id``.
        """
        mode = self.policy.mode
        if mode == "republish":
            return d.retry_count + 1
        if mode == "dlx_wait":
            return next((c for q, r, c in d.deaths if q == self.spec.queue and r == "rejected"), 0) + 1
        if self.quorum:
            return d.delivery_count + 1
        self.tally[d.msg_id] = self.tally.get(d.msg_id, 0) + 1
        return self.tally[d.msg_id]

    def _pump(self, now: float) -> None:
        while self.buffer and self.busy < self.spec.concurrency:
            h = self.buffer.popleft()
            if not h.dead:
                self._start(now, h)

    def _start(self, now: float, h: Held[M, C]) -> None:
        if self.store is not None and self.store.seen(h.msg_id):
            self.log.record(now, "dedup_skip", h.msg_id, self.node, queue=self.spec.queue, attempt=h.attempt)
            h.stage = "settling"
            self._ack(now, h)
            return
        self.busy += 1
        p_crash = self.spec.crash_probability
        if p_crash > 0:
            n = self._deliveries.next_delivery_number(h.msg_id)
            h.crash = decision_uniform(self.seed, "crash", h.msg_id, n) < p_crash
        self.log.record(now, "process", h.msg_id, self.node, queue=self.spec.queue, attempt=h.attempt)
        h.stage = "processing"
        self._out.append(StartProcessing(h, float(self._work())))

    # -- processing -----------------------------------------------------------------------------
    def processed(self, now: float, h: Held[M, C]) -> list[Effect[M, C]]:
        """The processing time of ``h`` is over: call downstream if there is one, else the attempt is done."""
        out = self._begin()
        if self._stale(h, "processing"):
            return out
        downstream = self.spec.downstream
        if downstream is None:
            self._done(now, h, True, "")
            return out
        self._next_call += 1
        self.calls[self._next_call] = h
        h.stage = "calling"
        out.append(CallDownstream(downstream, self._next_call, h.msg_id, h.attempt, self.spec.call_timeout))
        return out

    def call_replied(self, now: float, call_id: int, ok: bool) -> list[Effect[M, C]]:
        """The downstream service answered call ``call_id``."""
        out = self._begin()
        self._done(now, self._call(call_id), ok, "" if ok else "downstream")
        return out

    def call_timed_out(self, now: float, call_id: int) -> list[Effect[M, C]]:
        """No reply to call ``call_id`` within ``call_timeout``."""
        out = self._begin()
        self._done(now, self._call(call_id), False, "timeout")
        return out

    def _call(self, call_id: int) -> Held[M, C]:
        h = self.calls.pop(call_id, None)
        if h is None:
            raise ConsumerCoreError(f"{self.node}: call {call_id} is not pending (drivers pass each reply or "
                                    "timeout of a call of this life once)")
        return h

    def _stale(self, h: Held[M, C], stage: _Stage) -> bool:
        """Whether an event about ``h`` comes from an earlier life of the process (then it is ignored)."""
        if h.life != self.life:
            return True
        if h.stage != stage:
            raise ConsumerCoreError(f"{self.node}: {h.msg_id} (tag {h.tag}) is {h.stage}, not {stage}")
        return False

    def _done(self, now: float, h: Held[M, C], ok: bool, why: str) -> None:
        """The attempt is over: decide failure, poison and crash, record the outcome, then settle or retry."""
        self.busy -= 1
        h.stage = "settling"
        msg_id = h.msg_id
        spec = self.spec
        p = spec.failure_probability
        if ok and p > 0 and decision_uniform(self.seed, "fail", msg_id, h.attempt) < p:
            ok, why = False, "error"
        poison = spec.poison_probability
        if ok and poison > 0 and decision_uniform(self.seed, "poison", msg_id, 0) < poison:
            ok, why = False, "poison"
        if h.crash and spec.crash_point == "before_effect":
            self._out.append(CrashProcess(spec.restart_after))
            return
        if spec.auto_ack:
            self.held.pop((h.conn, h.tag), None)  # settled at delivery: nothing left to lose
        if ok and self.store is not None and self.store.seen(msg_id):
            # another copy took effect while this one was being processed: the effect and the
            # id are written in one transaction, so this copy's effect is refused
            self.log.record(now, "dedup_skip", msg_id, self.node, queue=spec.queue, attempt=h.attempt)
        elif ok:
            self.log.record(now, "side_effect", msg_id, self.node, queue=spec.queue, attempt=h.attempt)
            if self.store is not None:
                self.store.add(msg_id)
        else:
            self.log.record(now, "fail", msg_id, self.node, queue=spec.queue, attempt=h.attempt, reason=why)
        if h.crash:
            self._out.append(CrashProcess(spec.restart_after))
            return
        if ok:
            self._ack(now, h)
        else:
            self._failed(now, h)
        self._pump(now)

    # -- settling -------------------------------------------------------------------------------
    def _usable(self, now: float, h: Held[M, C]) -> bool:
        """Whether ``h`` can still be settled: not auto-acked, and its connection is the open one."""
        if h.dead:
            return False
        if self.spec.auto_ack:
            self.held.pop((h.conn, h.tag), None)
            return False
        if h.conn != self.conn:
            self._abandon(now, h, "connection_lost")
            return False
        return True

    def _ack(self, now: float, h: Held[M, C]) -> None:
        if self._usable(now, h):
            self.held.pop((h.conn, h.tag), None)
            self._out.append(Ack(h.conn, h.tag))
            self.log.record(now, "ack", h.msg_id, self.node, queue=self.spec.queue, tag=h.tag, attempt=h.attempt)

    def _nack(self, now: float, h: Held[M, C], requeue: bool, reason: str = "") -> None:
        if self._usable(now, h):
            self.held.pop((h.conn, h.tag), None)
            self._out.append(Nack(h.conn, h.tag, requeue))
            self.log.record(now, "nack" if requeue else "reject", h.msg_id, self.node, queue=self.spec.queue,
                            tag=h.tag, attempt=h.attempt, reason=reason)

    def _abandon(self, now: float, h: Held[M, C], reason: str) -> None:
        if not h.dead:
            h.dead = True
            self.held.pop((h.conn, h.tag), None)
            self.log.record(now, "abandon", h.msg_id, self.node, queue=self.spec.queue, tag=h.tag,
                            attempt=h.attempt, reason=reason)

    # -- retrying ---------------------------------------------------------------------------------
    def _failed(self, now: float, h: Held[M, C]) -> None:
        """Apply the retry policy to a failed attempt."""
        pol = self.policy
        if self.spec.auto_ack:
            self.held.pop((h.conn, h.tag), None)  # nothing to settle: the message is gone
            return
        a = h.attempt
        if pol.exhausted(a):
            if pol.mode == "dlx_wait":
                rk = pol.dead_letter_routing_key if pol.dead_letter_routing_key is not None else h.routing_key
                self._publish_copy(now, h, pol.dead_letter_exchange or "", rk, None, None, "dlq_publish")
            else:
                self._nack(now, h, False, "max_attempts" if pol.mode != "none" else "")
            return
        if pol.mode == "dlx_wait":
            self._nack(now, h, False, "retry")
            return
        u = decision_uniform(self.seed, "jitter", h.msg_id, a) if pol.jitter != "none" else 0.0
        delay = pol.delay_for(a, u)
        if pol.mode in ("requeue", "delivery_limit"):
            self._after(now, delay, h, "requeue")
        elif pol.via_exchange is not None:  # republish through a TTL wait queue
            self._publish_copy(now, h, pol.via_exchange, h.routing_key, a, delay, "retry_publish")
        else:
            self._after(now, delay, h, "republish")

    def _after(self, now: float, delay: float, h: Held[M, C], then: Literal["requeue", "republish"]) -> None:
        """Retry ``h`` by ``then`` after ``delay`` ms, holding it meanwhile; at once if the delay is 0."""
        if delay > 0:
            h.stage = "waiting"
            h.then = then
            self.delays += 1
            self._out.append(RetryDelay(h, delay))
        else:
            self._retry(now, h, then)

    def delay_elapsed(self, now: float, h: Held[M, C]) -> list[Effect[M, C]]:
        """The retry delay of ``h`` is over: requeue or republish it."""
        out = self._begin()
        if self._stale(h, "waiting"):
            return out
        self.delays -= 1
        h.stage = "settling"
        self._retry(now, h, h.then)
        return out

    def _retry(self, now: float, h: Held[M, C], then: Literal["requeue", "republish"]) -> None:
        if then == "requeue":
            self._nack(now, h, True, "retry")
        else:
            self._publish_copy(now, h, h.exchange, h.routing_key, h.attempt, None, "retry_publish")

    def _publish_copy(self, now: float, h: Held[M, C], exchange: str, routing_key: str, retry_count: int | None,
                      expiration: float | None, purpose: Literal["retry_publish", "dlq_publish"]) -> None:
        """Publish a copy of ``h`` with a confirm; ``h`` is settled when the confirm comes (:meth:`confirmed`)."""
        if not self._usable(now, h):
            return
        self.pub_seq += 1
        self.confirm_waits[self.pub_seq] = h
        self._out.append(PublishCopy(h.conn, self.pub_seq, h.msg_id, h.message, exchange, routing_key, retry_count,
                                     expiration, purpose))
        self.log.record(now, purpose, h.msg_id, self.node, queue=self.spec.queue, exchange=exchange,
                        routing_key=routing_key, attempt=h.attempt)

    def confirmed(self, now: float, conn: C, seq: int, ack: bool, multiple: bool = False) -> list[Effect[M, C]]:
        """A publisher confirm on ``conn``: ``basic.ack`` (``ack``) or ``basic.nack`` of publish ``seq``
        (and of every earlier one, with ``multiple``). The original of an acked copy is acked; the
        original of a refused copy is nacked with requeue, to be tried again."""
        out = self._begin()
        if conn != self.conn:
            return out  # a confirm of a closed channel: its originals were abandoned with it
        seqs = [s for s in self.confirm_waits if s <= seq] if multiple else [seq]
        for s in seqs:
            h = self.confirm_waits.pop(s, None)
            if h is None:
                continue  # a repeated confirm
            if ack:
                self._ack(now, h)
            else:
                self._nack(now, h, True, "copy_nacked")
        return out

    def _begin(self) -> list[Effect[M, C]]:
        self._out = []
        return self._out
