"""Lab 3: a queue consumer that retries with backoff, dead-letters, and applies each message exactly once.

Five nodes. ``broker`` is capsim's AMQP broker (:mod:`sim.messaging.broker`,
RabbitMQ 3.10 semantics): a durable classic queue ``work`` whose dead-letter
exchange ``dlx`` routes to the queue ``dlq``; unacknowledged deliveries go
back to the queue when the consumer's connection dies (missed heartbeats, or no
ack within the ``consumer_timeout``) and are delivered again. ``pub``
publishes :data:`MESSAGES` payment messages with publisher confirms and
republishes any it has no confirm for, so the queue may hold a message twice.
``ledger`` is the service whose effect each message asks for (credit one
payment): its ``Apply`` fails transiently with probability ``p`` per attempt,
and always for a *poison* message (a fraction ``q``). It honours an
*idempotency key*: an ``Apply`` whose key was applied before is answered
``already_applied`` and does nothing, the key being recorded atomically with
the effect (the only place where that can be done). The student writes
``ConsumerNode`` (a :class:`ConsumerBase`), run on ``c1`` and ``c2``.

Graded:

* ``exactly-once``: every message the broker accepted has its effect applied
  exactly once, or never and is in the dead-letter queue, under consumer
  crashes, a broker or ledger crash, a partition, message loss and duplication;
* ``dead-letter-budget``: on a clean network, at most :data:`ATTEMPTS` attempts
  per message, retry *i* sent at least ``BACKOFF_MS * 2**(i-1)`` ms after the
  attempt before it, every message applied or dead-lettered, and a dead-letter
  fraction within the binomial upper bound of ``q + (1-q) * p**ATTEMPTS``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from ..checkers.delivery import DeliveryReport
from ..config import at_least, build, fld, positive, prob
from ..dists import Exponential, buffered_sampler
from ..errors import ScenarioError
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..messaging.broker_node import BrokerNode
from ..messaging.clients import AmqpClient, PublisherNode
from ..messaging.frames import BasicAck, BasicConsume, BasicConsumeOk, BasicDeliver, BasicNack
from ..messaging.protocol import MessagingConfig, MessagingState, PublisherSpec
from ..messaging.report import delivery_lines
from ..messaging.retry import dead_letter_fraction, decision_uniform
from ..messaging.topology import Topology
from ..protocol import ProtocolConfig, register_protocol
from .core import Check, Lab, LabNode, LabTest, lab_rng, random_faults, solution_classes

__all__ = ["ConsumerBase", "Delivery", "Apply", "ApplyReply", "LedgerNode", "ConsumerLabConfig", "ConsumerLabState",
           "LAB", "ATTEMPTS", "BACKOFF_MS", "dead_letter_probability", "dead_letter_allowance",
           "check_exactly_once", "check_retry_policy"]

BROKER, PUBLISHER, LEDGER = "broker", "pub", "ledger"
CONSUMERS = ("c1", "c2")
NODES = (BROKER, PUBLISHER, "c1", "c2", LEDGER)
WORK, DLX, DLQ = "work", "dlx", "dlq"

#: the attempt budget: a message whose ATTEMPTS attempts all failed is dead-lettered
ATTEMPTS = 4
#: retry i (i = 1, 2, ...) is sent at least BACKOFF_MS * 2**(i-1) ms after the attempt before it
BACKOFF_MS = 10.0
#: transient failure probability of one Apply, and the fraction of poison messages (every Apply fails)
FAILURE_PROBABILITY = 0.3
POISON_PROBABILITY = 0.02
#: a correct consumer exceeds the dead-letter allowance with probability below this, per run
ALPHA = 1e-4
MESSAGES = 400
RATE = 200.0
PREFETCH = 10
DURATION = 6000.0
HEARTBEAT = 500.0
CONSUMER_TIMEOUT = 1000.0
CONFIRM_TIMEOUT = 300.0
LEDGER_SERVICE_MS = 2.0
FAULTS = (200.0, 2600.0)  # the nemesis acts in this window; the rest of the run lets every message settle


# -- what the student sees ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    """A message the broker delivered (``basic.deliver``): settle it with ``ack`` or ``reject``.

    ``msg_id`` is the message's own id (a copy republished by the publisher
    keeps it); ``tag`` numbers deliveries on one connection; ``redelivered``: the
    broker delivered this message before (to this consumer or another);
    ``conn``: the connection it came on (a delivery is settled on that one only).
    """

    msg_id: str
    tag: int
    redelivered: bool
    conn: str


@dataclass(frozen=True, slots=True)
class Apply:
    """Consumer -> ledger: apply the effect of message ``msg_id``.

    ``request_id``: yours, echoed in the reply. ``key``: the idempotency key; an
    ``Apply`` whose key was applied before does nothing (``None``: no key, every
    successful ``Apply`` applies the effect again).
    """

    request_id: Hashable
    msg_id: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ApplyReply:
    """Ledger -> consumer. ``status``: ``applied`` (done now), ``already_applied`` (the key was
    applied before: nothing done now) or ``unavailable`` (a transient failure: nothing done)."""

    request_id: Hashable
    status: Literal["applied", "already_applied", "unavailable"]

    @property
    def ok(self) -> bool:
        """The effect is in the ledger: applied by this request or, with its key, by an earlier one."""
        return self.status != "unavailable"


class ConsumerBase(LabNode, AmqpClient):
    """What a lab-3 consumer starts with: a connection to the broker that consumes ``work``.

    The base class opens the connection, consumes with prefetch :data:`PREFETCH`
    and reconnects when the connection dies; each delivery calls
    :meth:`on_delivery`. Settle each delivery once: :meth:`ack` (its effect is
    done) or :meth:`reject` (dead-letter it). ``self.ledger`` names the ledger;
    ``self.rng`` is this node's random generator (for jitter). ``boot()`` runs
    at start and after each recovery (set up volatile state there; ``self.disk``
    survives crashes, no other attribute the solution set does).
    """

    def __init__(self, world: Host, name: str, config: ConsumerLabConfig, state: ConsumerLabState) -> None:
        super().__init__(world, name, state.messaging_config, state.messaging)
        self.config = config
        self.ledger = LEDGER
        self.rng: np.random.Generator = world.streams[f"lab_consumer/{name}"]
        self._sent: dict[str, int] = {}  # Apply requests per message id since it was last delivered here
        self.seal()

    # -- start and recovery: the connection is the base class's, boot() the student's -------------
    def start(self) -> None:
        self.boot()
        self._open()

    def recover(self) -> None:
        if not self.alive:
            super().recover()  # runs boot()
            self._open()

    def boot(self) -> None:
        """Set up volatile state (override it; nothing to call)."""

    def _open(self) -> None:
        self._consuming = False
        self._tags: set[int] = set()
        self._settled: dict[int, str] = {}
        AmqpClient.boot(self)

    def on_connected(self) -> None:
        conn = self.conn
        assert conn is not None  # called with the connection just opened
        self._consuming = False
        self._tags = set()  # delivery tags of this connection (ints: membership only)
        self._settled = {}
        self._consume(conn)

    def _consume(self, conn: str) -> None:
        """basic.consume, again every ``reconnect_delay`` until the broker answers."""
        if self.conn == conn and not self._consuming:
            self.send(self.broker_name, BasicConsume(conn, WORK, f"{self.name}.consumer", PREFETCH, False))
            self.set_timer(self.cfg.reconnect_delay, self._consume, conn)

    def handle_BasicConsumeOk(self, msg: BasicConsumeOk, src: str) -> None:
        if self.heard(msg.conn):
            self._consuming = True

    def handle_BasicDeliver(self, d: BasicDeliver, src: str) -> None:
        msg_id = d.message.msg_id
        if not self.heard(d.conn):  # sent on a connection given up: the client library never sees it
            self.log.record(self.now, "abandon", msg_id, self.name, queue=d.queue, tag=d.delivery_tag,
                            reason="stale_connection")
            return
        if d.delivery_tag in self._tags:
            return  # a network copy of a frame TCP would have delivered once
        self._tags.add(d.delivery_tag)
        self._sent[msg_id] = 0
        self.log.record(self.now, "receive", msg_id, self.name, queue=d.queue, tag=d.delivery_tag,
                        redelivered=d.redelivered)
        self.on_delivery(Delivery(msg_id, d.delivery_tag, d.redelivered, d.conn))

    def send(self, dst: str, msg: Any) -> None:
        """Send ``msg``; an ``Apply`` is recorded as one processing attempt of its message."""
        if isinstance(msg, Apply) and self.alive:
            n = self._sent.get(msg.msg_id, 0) + 1
            self._sent[msg.msg_id] = n
            self.log.record(self.now, "process", msg.msg_id, self.name, queue=WORK, attempt=n)
        super().send(dst, msg)

    # -- the student's API -------------------------------------------------------------------------
    def on_delivery(self, d: Delivery) -> None:
        raise NotImplementedError("ConsumerNode must define on_delivery(self, d)")

    def ack(self, d: Delivery) -> bool:
        """``basic.ack``: the broker forgets the message. False if ``d``'s connection is gone
        (the broker has already put the message back and will deliver it again)."""
        if not self._settle(d, "ack"):
            return False
        self.send(self.broker_name, BasicAck(d.conn, self.next_frame(), d.tag))
        self.log.record(self.now, "ack", d.msg_id, self.name, queue=WORK, tag=d.tag)
        return True

    def reject(self, d: Delivery) -> bool:
        """``basic.nack`` without requeue: the queue dead-letters the message to ``dlq``.
        False if ``d``'s connection is gone (the message will be delivered again)."""
        if not self._settle(d, "reject"):
            return False
        self.send(self.broker_name, BasicNack(d.conn, self.next_frame(), d.tag, False))
        self.log.record(self.now, "reject", d.msg_id, self.name, queue=WORK, tag=d.tag)
        return True

    def _settle(self, d: Delivery, how: str) -> bool:
        if d.conn != self.conn:
            self.log.record(self.now, "abandon", d.msg_id, self.name, queue=WORK, tag=d.tag,
                            reason="connection_lost")
            return False
        before = self._settled.get(d.tag)
        if before is not None:
            raise RuntimeError(f"{self.name}: {how} of delivery {d.tag} ({d.msg_id}), which was already settled "
                               f"by {before}: settle each delivery once (a real broker closes the channel with "
                               f"PRECONDITION_FAILED - unknown delivery tag)")
        self._settled[d.tag] = how
        return True


# -- the ledger -----------------------------------------------------------------------------------
class LedgerNode(Node):
    """Applies payments: the effect a message asks for, at most once per idempotency key.

    Each ``Apply`` takes an exponential service time (mean
    :data:`LEDGER_SERVICE_MS`), then, in one step: a known key is answered
    ``already_applied``; otherwise the attempt fails (``unavailable``) for a
    poison message, or with probability ``failure_probability`` (decided per
    message id and attempt number, so every consumer faces the same draws);
    otherwise the effect and the key are recorded together (``applied``). The
    journal and the keys are on disk; a crash loses the requests in service.
    """

    def __init__(self, world: Host, name: str, config: ConsumerLabConfig, state: ConsumerLabState) -> None:
        super().__init__(world, name)
        self.config = config
        self.state = state
        self.seed = world.seed
        self._service = buffered_sampler(Exponential(LEDGER_SERVICE_MS), world.streams["lab_consumer/ledger"])
        self._tries: dict[str, int] = {}  # attempts decided per message id (the observer's count)

    def boot(self) -> None:
        self.journal: list[str] = self.disk.setdefault("journal", [])  # message ids whose effect was applied
        self.keys: dict[str, str] = self.disk.setdefault("keys", {})  # idempotency key -> message id

    def handle_Apply(self, msg: Apply, src: str) -> None:
        self.set_timer(float(self._service()), self._complete, msg, src)

    def _complete(self, msg: Apply, src: str) -> None:
        log = self.state.messaging.log
        status: Literal["applied", "already_applied", "unavailable"] = "unavailable"
        reason = ""
        if msg.key is not None and msg.key in self.keys:
            status = "already_applied"
            log.record(self.now, "dedup_skip", msg.msg_id, self.name, reason=f"key {msg.key!r}")
        else:
            n = self._tries.get(msg.msg_id, 0) + 1
            self._tries[msg.msg_id] = n
            cfg = self.config
            if decision_uniform(self.seed, "lab_consumer/poison", msg.msg_id, 0) < cfg.poison_probability:
                reason = "poison"
            elif decision_uniform(self.seed, "lab_consumer/fail", msg.msg_id, n) < cfg.failure_probability:
                reason = "transient"
            else:
                status = "applied"
                self.journal.append(msg.msg_id)
                if msg.key is not None:
                    self.keys[msg.key] = msg.msg_id  # in the same step as the effect: one transaction
                log.record(self.now, "side_effect", msg.msg_id, self.name, attempt=n)
            if reason:
                log.record(self.now, "fail", msg.msg_id, self.name, attempt=n, reason=reason)
        self.state.calls.record(self.now, msg.msg_id, src, repr(msg.request_id), msg.key, status, reason)
        self.send(src, ApplyReply(msg.request_id, status))


# -- the protocol -----------------------------------------------------------------------------------
def _topology() -> Topology:
    return build(Topology, {"exchanges": [{"name": DLX, "type": "fanout"}],
                            "queues": [{"name": WORK, "dead_letter_exchange": DLX}, {"name": DLQ}],
                            "bindings": [{"exchange": DLX, "queue": DLQ}]}, "topology")


class ConsumerLabState:
    """Per-run state: the messaging log (broker, publisher, consumers) and the ledger's call log.

    ``ledger_calls``: one row per ``Apply`` the ledger completed (time, message,
    calling consumer, request id, key, status, and why it was unavailable:
    ``transient`` or ``poison``); ``delivery``: the delivery
    checker's report, set when the run finishes.
    """

    CALL_COLUMNS = ("time", "msg_id", "consumer", "request_id", "key", "status", "reason")

    def __init__(self, cfg: ConsumerLabConfig, world: Host) -> None:
        self.messaging_config = cfg.messaging()
        self.messaging = MessagingState(self.messaging_config, world)
        self.calls = world.events.channel("ledger_calls", self.CALL_COLUMNS, {"time": "float64"})
        self.delivery: DeliveryReport | None = None


@register_protocol
@dataclass(frozen=True, kw_only=True)
class ConsumerLabConfig(ProtocolConfig[ConsumerLabState]):
    """Lab 3's protocol: broker, publisher, ledger, and the solution's ``ConsumerNode`` on c1 and c2."""

    tag: ClassVar[str] = "lab_consumer"
    solution: str = fld(doc="the solution's .py file (sim.labs.grade passes in-process classes by key)",
                        missing="name the solution's .py file")
    messages: int = fld(MESSAGES, check=at_least(1), doc="messages the publisher sends")
    rate: float = fld(RATE, check=positive, doc="messages published per second")
    failure_probability: float = fld(FAILURE_PROBABILITY, check=prob, doc="transient failure of one Apply")
    poison_probability: float = fld(POISON_PROBABILITY, check=prob, doc="fraction of messages every Apply fails")

    def check_scenario(self, scenario: Any, path: str) -> None:
        if scenario.workload.clients != 0:
            raise ScenarioError("workload.clients", "must be 0 for lab_consumer (the publisher 'pub' sends the work)")
        if sorted(scenario.nodes) != sorted(NODES):
            raise ScenarioError("cluster.nodes", f"lab_consumer runs on exactly the nodes {', '.join(NODES)}; "
                                                 f"got {', '.join(scenario.nodes)}")

    def messaging(self) -> MessagingConfig:
        """The broker-side setup, as the ``messaging`` protocol's config (for the broker and publisher nodes)."""
        publisher = PublisherSpec(node=PUBLISHER, exchange="", routing_keys=(WORK,), rate=self.rate,
                                  count=self.messages, confirm_timeout=CONFIRM_TIMEOUT)
        return MessagingConfig(broker=BROKER, topology=_topology(), publishers=(publisher,), heartbeat=HEARTBEAT,
                               consumer_timeout=CONSUMER_TIMEOUT, dead_letter_queues=(DLQ,))

    def new_state(self, world: Host) -> ConsumerLabState:
        return ConsumerLabState(self, world)

    def build_nodes(self, world: Host, state: ConsumerLabState) -> dict[str, Node]:
        cls = solution_classes(LAB, self.solution)["ConsumerNode"]
        mcfg = state.messaging_config
        nodes: dict[str, Node] = {
            BROKER: BrokerNode(world, BROKER, mcfg, state.messaging),
            PUBLISHER: PublisherNode(world, PUBLISHER, mcfg, state.messaging, mcfg.publishers[0]),
            LEDGER: LedgerNode(world, LEDGER, self, state),
        }
        for name in CONSUMERS:
            nodes[name] = cls(world, name, self, state)
        return {name: nodes[name] for name in world.scenario.nodes}

    def finish(self, world: World, state: ConsumerLabState) -> None:
        broker = world.nodes[BROKER]
        assert isinstance(broker, BrokerNode)
        state.delivery = state.messaging.close(broker, [DLQ])

    def summary(self, world: World, state: ConsumerLabState) -> dict[str, Any]:
        assert state.delivery is not None
        return {f"messaging.{k}": v for k, v in state.delivery.summary().items()}

    def tables(self, world: World, state: ConsumerLabState) -> dict[str, pd.DataFrame]:
        assert state.delivery is not None
        return {**world.events.frames(), "messages": state.delivery.messages}

    def verdicts(self, world: World, state: ConsumerLabState) -> dict[str, Any]:
        return {"delivery": state.delivery}

    def report(self, result: Any) -> list[str]:
        return delivery_lines(result.summary, "messaging.", result.verdicts.get("delivery"))


# -- the checks -----------------------------------------------------------------------------------
def dead_letter_probability(p: float, q: float, attempts: int = ATTEMPTS) -> float:
    """Probability that a message is dead-lettered: poison, or every one of ``attempts`` attempts failed."""
    return q + (1.0 - q) * dead_letter_fraction(p, attempts)


def dead_letter_allowance(n: int, p: float, q: float, attempts: int = ATTEMPTS, alpha: float = ALPHA) -> int:
    """The most dead-lettered messages out of ``n`` the grader accepts: the binomial (1 - alpha) quantile.

    A consumer that makes ``attempts`` attempts per message dead-letters
    Binomial(n, :func:`dead_letter_probability`) messages; more than this
    happens with probability below ``alpha``.
    """
    from scipy import stats

    return int(stats.binom.ppf(1.0 - alpha, n, dead_letter_probability(p, q, attempts)))


def _accepted(events: pd.DataFrame) -> list[str]:
    """Message ids the broker enqueued in ``work``, in order of first enqueue: the consumers' responsibility."""
    enq = events[(events["event"] == "enqueue") & (events["queue"] == WORK)]
    return list(dict.fromkeys(enq["msg_id"].tolist()))


_STORY_EVENTS = ("enqueue", "receive", "process", "ack", "reject", "abandon", "requeue", "dead_letter", "remain",
                 "lost", "drop")


def _dead_lettered(events: pd.DataFrame) -> list[str]:
    """Message ids that reached the dead-letter queue, in order of first arrival."""
    dlq = events[(events["event"] == "enqueue") & (events["queue"] == DLQ)]
    return list(dict.fromkeys(dlq["msg_id"].tolist()))


def _story(result: Any, msg_id: str) -> pd.DataFrame:
    """What happened to ``msg_id``, by time: queued, delivered, each Apply and the ledger's answer,
    settled, requeued, dead-lettered; and the crashes of the nodes involved meanwhile."""
    ev = result.tables["message_events"]
    ev = ev[(ev["msg_id"] == msg_id) & ev["event"].isin(_STORY_EVENTS)]
    rows = []
    for r in ev.itertuples(index=False):
        if r.event == "receive":
            what = f"delivered (tag {r.tag}{', redelivered' if r.redelivered else ''})"
        elif r.event == "process":
            what = f"sends Apply (attempt {r.attempt})"
        elif r.event in ("ack", "reject"):
            what = f"{r.event} (tag {r.tag})"
        elif r.event == "enqueue":
            what = f"enqueued in {r.queue}"
        else:
            what = f"{r.event.replace('_', ' ')} ({r.reason}{', ' + r.queue if r.queue else ''})"
        rows.append((round(float(r.time), 1), r.node, what))
    calls = result.tables["ledger_calls"]
    calls = calls[calls["msg_id"] == msg_id]
    for c in calls.itertuples(index=False):
        why = f" ({c.reason})" if c.reason else ""
        rows.append((round(float(c.time), 1), LEDGER,
                     f"Apply from {c.consumer} (request {c.request_id}, key {c.key!r}): {c.status}{why}"))
    if rows:
        t0, t1 = min(r[0] for r in rows), max(r[0] for r in rows)
        ne = result.node_events
        involved = sorted({r[1] for r in rows} | set(calls["consumer"]))
        ne = ne[(ne["time"] >= t0) & ne["node"].isin(involved)]
        near = ne[ne["time"] <= t1]
        after = ne[ne["time"] > t1].groupby("node", sort=False).head(1)  # what cut a node's work short
        rows += [(round(float(r.time), 1), r.node, f"node {r.event}")
                 for frame in (near, after) for r in frame.itertuples(index=False)]
    out = pd.DataFrame(rows, columns=["time", "node", "what"]).sort_values("time", kind="stable")
    width = int(out["what"].str.len().max()) if len(out) else 0
    out["what"] = out["what"].str.ljust(width)  # printed tables right-align text: pad to read it left-aligned
    return out.reset_index(drop=True)


def check_exactly_once(result: Any) -> Check:
    """Every accepted message applied exactly once, or never and dead-lettered; still queued counts as neither."""
    table = result.tables["messages"].set_index("msg_id")
    accepted = _accepted(result.tables["message_events"])
    mine = table.loc[accepted]
    effects = mine["side_effects"]
    twice = mine[effects > 1]
    missing = mine[~mine["status"].isin(["processed", "dead_lettered"])]
    if not len(twice) and not len(missing):
        dead = int((mine["status"] == "dead_lettered").sum())
        both = len(set(_dead_lettered(result.tables["message_events"])) & set(mine.index[effects == 1]))
        extra = f" ({both} of them also have a copy in the dead-letter queue)" if both else ""
        return Check(True, f"{len(mine)} messages: {len(mine) - dead} applied once{extra}, {dead} dead-lettered "
                           "and never applied")
    calls = result.tables["ledger_calls"]
    applied = calls[calls["status"] == "applied"]
    problems = []
    if len(twice):
        problems.append(f"{len(twice)} applied more than once")
    if len(missing):
        problems.append(f"{len(missing)} never applied and not dead-lettered")
    if len(twice):
        by_msg = applied[applied["msg_id"].isin(twice.index.tolist())]
        second = {str(m): float(g["time"].iloc[1]) for m, g in by_msg.groupby("msg_id", sort=False)}
        first_id = min(second, key=lambda m: second[m])  # the first duplicate to happen
        rows = applied[applied["msg_id"] == first_id]
        times = rows["time"].tolist()
        who = ", ".join(f"{c} at {t:.1f} ms (key {k!r})" for c, t, k in zip(rows["consumer"], times, rows["key"]))
        what = f"{first_id} was applied {len(rows)} times: {who}"
        window = (max(times[0] - 20.0, times[1] - 150.0), times[1] + 15.0)
    else:
        first_id = str(missing.index[0])
        status = str(missing.iloc[0]["status"])
        why = ("still queued or unacknowledged when the run ended" if status == "remaining"
               else "gone from the broker without its effect and not in the dead-letter queue")
        what = f"{first_id} was never applied and is {why}"
        story = _story(result, first_id)
        at_consumers = story[story["node"].isin(list(CONSUMERS))]
        last = float(at_consumers["time"].iloc[-1]) if len(at_consumers) else float(story["time"].iloc[-1])
        delivered = at_consumers[at_consumers["what"].str.startswith("delivered")]
        since = float(delivered["time"].iloc[-1]) if len(delivered) else last
        window = (max(0.0, since - 10.0, last - 200.0), last + 20.0)  # its last delivery, up to what ended it
    return Check(False, f"of {len(mine)} messages, {' and '.join(problems)}: {what}",
                 evidence=_story(result, first_id), window=window, highlight=(f"'{first_id}'",))


def check_retry_policy(result: Any) -> Check:
    """At most ATTEMPTS attempts per message, exponentially spaced; everything settled; dead letters within budget."""
    events = result.tables["message_events"]
    cfg = result.scenario.protocol
    accepted = _accepted(events)
    process = events[events["event"] == "process"].sort_values("time", kind="stable")
    attempts = process.groupby("msg_id", sort=False)
    counts = attempts.size()
    over = counts[counts > ATTEMPTS]
    if len(over):
        msg_id = str(over.index[0])
        times = attempts.get_group(msg_id)["time"].tolist()
        return Check(False, f"{msg_id} was attempted {int(over.iloc[0])} times; the budget is {ATTEMPTS} attempts, "
                            f"then dead-letter it ({len(over)} messages over budget)",
                     evidence=_story(result, msg_id), window=(times[0] - 5.0, times[ATTEMPTS] + 20.0),
                     highlight=(f"'{msg_id}'",))
    early = _early_retry(process)
    if early is not None:
        msg_id, i, t0, t1 = early
        need = BACKOFF_MS * 2 ** (i - 1)
        return Check(False, f"retry {i} of {msg_id} was sent {t1 - t0:.1f} ms after attempt {i}; exponential "
                            f"backoff needs at least {need:g} ms (BACKOFF_MS * 2**{i - 1})",
                     evidence=_story(result, msg_id), window=(t0 - 10.0, t1 + 20.0), highlight=(f"'{msg_id}'",))
    table = result.tables["messages"].set_index("msg_id").loc[accepted]
    open_ = table[~table["status"].isin(["processed", "dead_lettered"])]
    if len(open_):
        msg_id = str(open_.index[0])
        story = _story(result, msg_id)
        last = float(story["time"].iloc[-1]) if len(story) else 0.0
        return Check(False, f"{len(open_)} messages were neither applied nor dead-lettered by the end, "
                            f"e.g. {msg_id} ({open_.iloc[0]['status']})", evidence=story,
                     window=(max(0.0, last - 150.0), last + 20.0), highlight=(f"'{msg_id}'",))
    dead = [m for m in _dead_lettered(events) if m in table.index]
    n = len(accepted)
    p, q = cfg.failure_probability, cfg.poison_probability
    allowed = dead_letter_allowance(n, p, q)
    expected = dead_letter_probability(p, q)
    summary = (f"{len(dead)} of {n} messages dead-lettered ({len(dead) / max(n, 1):.1%}); expected "
               f"{expected:.2%} (p={p:g} per attempt, {ATTEMPTS} attempts, {q:.0%} poison), at most {allowed} allowed")
    if len(dead) <= allowed:
        return Check(True, summary)
    dead_rows = table.loc[dead, ["attempts"]].reset_index()
    dlq = events[(events["event"] == "enqueue") & (events["queue"] == DLQ)]
    first = float(dlq["time"].iloc[0])
    return Check(False, summary + ": a consumer that makes every attempt exceeds that with probability below "
                                  f"{ALPHA:g}", evidence=dead_rows, window=(first - 60.0, first + 20.0))


def _early_retry(process: pd.DataFrame) -> tuple[str, int, float, float] | None:
    """The first retry sent before its backoff: (message, retry number, previous attempt's time, its time)."""
    worst: tuple[str, int, float, float] | None = None
    for msg_id, group in process.groupby("msg_id", sort=False):
        times = group["time"].tolist()
        for i in range(1, len(times)):
            if times[i] - times[i - 1] < BACKOFF_MS * 2 ** (i - 1) and (worst is None or times[i] < worst[3]):
                worst = (str(msg_id), i, times[i - 1], times[i])
                break
    return worst


# -- the tests and their nemesis ---------------------------------------------------------------------
def _scenario(seed: int, solution: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": {"dist": "exponential", "mean": 2.0}},
        "workload": {"clients": 0},
        "faults": {"schedule": faults},
        "protocol": {"name": "lab_consumer", "solution": solution, "messages": MESSAGES, "rate": RATE,
                     "failure_probability": FAILURE_PROBABILITY, "poison_probability": POISON_PROBABILITY},
        "run": {"duration": DURATION, "seed": seed},
    }


def _nemesis_scenario(seed: int, solution: str) -> dict[str, Any]:
    """Consumer crashes (one down at a time), a partition of two random nodes, a window of 5% loss and
    one of 20% duplication on every link; on odd seeds also a broker or ledger crash."""
    rng = lab_rng("consumer", "exactly-once", seed)
    start, end = FAULTS
    faults = random_faults(rng, CONSUMERS, start=start, end=end, crashes=3, max_down=1, length=(100.0, 600.0))
    faults += random_faults(rng, NODES, start=start, end=end, partitions=1, loss=0.05, duplicate=0.2,
                            length=(200.0, 800.0))
    if seed % 2:
        faults += random_faults(rng, (BROKER, LEDGER), start=start, end=end, crashes=1, max_down=1,
                                length=(100.0, 400.0))
    faults.sort(key=lambda f: (f["start"], f["kind"]))
    return _scenario(seed, solution, faults)


def _clean_scenario(seed: int, solution: str) -> dict[str, Any]:
    """No faults: only the ledger's transient failures and poison messages, so p**ATTEMPTS holds exactly."""
    return _scenario(seed, solution, [])


_P_DEAD = dead_letter_probability(FAILURE_PROBABILITY, POISON_PROBABILITY)

LAB = Lab(
    id="consumer",
    number=3,
    title="An idempotent consumer: retries with backoff, a dead-letter queue, exactly-once effects",
    protocol="lab_consumer",
    classes={"ConsumerNode": ConsumerBase},
    skeleton="lab3_consumer.py",
    tests=(
        LabTest("exactly-once",
                "every message's effect is applied exactly once, or never and the message is dead-lettered, "
                "under consumer, broker and ledger crashes, a partition, loss and duplication",
                _nemesis_scenario, check_exactly_once),
        LabTest("dead-letter-budget",
                f"at most {ATTEMPTS} attempts per message with exponential backoff (retry i at least "
                f"{BACKOFF_MS:g} ms * 2**(i-1) after the attempt before), and at most the 99.99% binomial bound "
                f"of {_P_DEAD:.2%} of the messages dead-lettered",
                _clean_scenario, check_retry_policy),
    ),
)
