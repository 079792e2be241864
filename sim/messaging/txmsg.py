"""Transactional messages: publish a message if and only if a local transaction commits.

Each producer runs local transactions at its arrival rate (``local_txn_time``
each; rolled back with probability ``rollback_probability``, seeded per
transaction) and must get one message per *committed* transaction to the
consumers, through the broker of :mod:`sim.messaging.broker`. ``mode``:

``commit_then_publish`` (naive)  commit, then publish with confirms (retried while the
                                 process lives): a crash in between loses the message;
``publish_then_commit`` (naive)  publish, then run and commit the local transaction: a
                                 crash in between, or a rollback, leaves a phantom message;
``half_message``                 RocketMQ's protocol: send a *half* message to the
                                 ``coordinator`` (stored durably, invisible to consumers),
                                 run the local transaction only once it is stored, then send
                                 ``End(commit | rollback)`` once (it may be lost). A half
                                 message unresolved ``check_after`` ms after it was stored is
                                 checked back: every ``check_interval`` the coordinator asks
                                 the producer, who answers from its durable transaction table
                                 (committed -> commit; rolled back, or no record and not in
                                 progress: the process died before committing -> rollback; in
                                 progress -> unknown, ask again). Commit publishes the message
                                 to the broker (with confirms, retried across coordinator
                                 crashes); rollback discards it; after ``check_max`` checks
                                 without an answer it is discarded, as RocketMQ does
                                 (``check_max = "unlimited"``: never);
``outbox``                       write the business row and an outbox row in one local
                                 transaction; a relay in the producer process polls the outbox
                                 every ``poll_interval``, publishes unsent rows with confirms
                                 and deletes a row once confirmed. A crash between publishing
                                 and deleting publishes the row again: consumers deduplicate.

The half-message store is a separate node in front of the AMQP broker (in
RocketMQ it lives inside the broker): the RabbitMQ 3.10 broker model is reused
unchanged for everything visible to consumers. The relay runs inside the
producer's process, so a producer crash also stops the relay.

Faults: seeded process crashes of a producer at a step boundary
(``crash_probability`` per transaction, at ``crash_point``: ``before_commit``,
``after_commit``, ``after_publish`` (outbox relay: published, row not yet
deleted) or ``any`` of the mode's points, chosen per transaction), and
anything in ``[faults]``: broker, coordinator, producer or consumer crashes,
partitions, loss, duplication. :mod:`sim.checkers.txmsg` checks the invariant.
A scenario::

    [cluster]
    nodes = ["broker", "rmq-tx", "app", "c1"]

    [workload]
    clients = 0

    [[network.links]]                    # Half, End, CheckBack and replies get lost
    src = "app"
    dst = "rmq-tx"
    loss = 0.1

    [run]
    duration = "20s"

    [protocol]
    name = "transactional_messages"
    mode = "half_message"
    coordinator = "rmq-tx"
    check_after = "1s"
    check_interval = "500ms"

    [[protocol.producers]]
    node = "app"
    arrivals = { rate = 50, stop = "10s" }
    rollback_probability = 0.2
    crash_probability = 0.05
    restart_after = "500ms"

    [[protocol.consumers]]
    node = "c1"
    queue = "events"
    idempotency = { store = "shared" }

    [[faults.schedule]]
    kind = "crash"
    node = "rmq-tx"
    start = "4s"
    end = "4.5s"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd

from ..checkers.delivery import DeliveryReport
from ..checkers.txmsg import TxMsgReport, check_transactional
from ..config import Duration, MaybeInfDuration, at_least, fld, positive, prob
from ..dists import Constant, Dist, buffered_sampler
from ..errors import ScenarioError
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..protocol import ProtocolConfig, register_protocol
from ..report import line, pairs, verdict_line
from ..states import State
from ..workload.arrivals import Arrivals, ArrivalSpec
from .broker import Message
from .broker_node import BrokerNode
from .consumer import ConsumerNode
from .halfmsg import CheckBack, CheckReply, End, Half, HalfAck, HalfMessageStore
from .patterns import check_roles
from .protocol import ConsumerSpec, MessagingConfig, MessagingState
from .reliable import ReliablePublisher
from .report import delivery_lines
from .retry import decision_uniform
from .topology import Topology

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["TxMsgConfig", "TxProducerSpec", "TxProducerNode", "TxMsgState", "txmsg_report", "CRASH_POINTS", "MODES"]

MODES = ("commit_then_publish", "publish_then_commit", "half_message", "outbox")
CRASH_POINTS = {
    "commit_then_publish": ("before_commit", "after_commit"),
    "publish_then_commit": ("before_commit", "after_commit"),
    "half_message": ("before_commit", "after_commit"),
    "outbox": ("before_commit", "after_commit", "after_publish"),
}


# -- config ---------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TxProducerSpec:
    """A producer process on ``node`` (see the module docstring for the crash points)."""

    node: str = fld()
    arrivals: ArrivalSpec = fld(ArrivalSpec())
    local_txn_time: Dist = fld(Constant(5.0))
    rollback_probability: float = fld(0.0, check=prob)
    crash_probability: float = fld(0.0, check=prob)
    crash_point: Literal["before_commit", "after_commit", "after_publish", "any"] = fld("any")
    restart_after: Duration = fld(1000.0, check=positive)
    half_timeout: Duration = fld(200.0, check=positive)
    half_attempts: int = fld(3, check=at_least(1))


def _at_least_one_check(value: int | str) -> str | None:
    return None if value == "unlimited" or (isinstance(value, int) and value >= 1) else \
        f"must be >= 1 or 'unlimited', got {value!r}"


def _default_topology() -> Topology:
    from ..config import build

    return build(Topology, {"exchanges": [{"name": "events"}], "queues": [{"name": "events", "type": "quorum"}],
                            "bindings": [{"exchange": "events", "queue": "events", "routing_key": "event"}]},
                 "topology")


DEFAULT_TOPOLOGY = _default_topology()


@register_protocol
@dataclass(frozen=True, kw_only=True)
class TxMsgConfig(ProtocolConfig["TxMsgState"]):
    """Producers with local transactions, a broker, consumers, and (half_message) a half-message store."""

    tag: ClassVar[str] = "transactional_messages"
    mode: Literal["commit_then_publish", "publish_then_commit", "half_message", "outbox"] = fld("half_message")
    broker: str = fld("broker")
    coordinator: str | None = fld(None)
    topology: Topology = fld(DEFAULT_TOPOLOGY)
    exchange: str = fld("events")
    routing_key: str = fld("event")
    producers: tuple[TxProducerSpec, ...] = fld()
    consumers: tuple[ConsumerSpec, ...] = fld(())
    check_after: Duration = fld(6000.0, check=positive)
    check_interval: Duration = fld(1000.0, check=positive, every="run")
    check_max: int | Literal["unlimited"] = fld(15, check=_at_least_one_check)
    poll_interval: Duration = fld(100.0, check=positive, every="node")
    relay_batch: int = fld(100, check=at_least(1))
    confirm_timeout: Duration = fld(1000.0, check=positive)
    heartbeat: Duration = fld(1000.0, check=positive, every="node")
    reconnect_delay: Duration = fld(200.0, check=positive)
    consumer_timeout: MaybeInfDuration = fld(1_800_000.0, check=positive)

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        """The AMQP frames (on connections by default) and the half-message store's messages (datagrams)."""
        return (*MessagingConfig.message_types(), Half, HalfAck, End, CheckBack, CheckReply)

    def _validate(self, path: str) -> None:
        if not self.producers:
            raise ScenarioError(f"{path}.producers", "must list at least one producer")
        if self.mode == "half_message" and self.coordinator is None:
            raise ScenarioError(f"{path}.coordinator", "mode 'half_message' needs the node of the half-message store")
        if self.mode != "half_message" and self.coordinator is not None:
            raise ScenarioError(f"{path}.coordinator", f"only for mode 'half_message', not {self.mode!r}")
        points = CRASH_POINTS[self.mode]
        for i, p in enumerate(self.producers):
            if p.crash_point != "any" and p.crash_point not in points:
                raise ScenarioError(f"{path}.producers[{i}].crash_point",
                                    f"mode {self.mode!r} has crash points {', '.join(points)} (or 'any'), "
                                    f"got {p.crash_point!r}")
        if not self.topology.has_exchange(self.exchange):
            raise ScenarioError(f"{path}.exchange", f"unknown exchange {self.exchange!r}")
        queues = self.topology.queue_names()
        for i, c in enumerate(self.consumers):
            if c.queue not in queues:
                raise ScenarioError(f"{path}.consumers[{i}].queue",
                                    f"unknown queue {c.queue!r}; queues are {', '.join(queues) or '(none)'}")
            if c.downstream is not None:
                raise ScenarioError(f"{path}.consumers[{i}].downstream", "no downstream services here")

    def node_refs(self) -> list[tuple[str, str]]:
        refs = [("broker", self.broker)]
        if self.coordinator is not None:
            refs.append(("coordinator", self.coordinator))
        refs += [(f"producers[{i}].node", p.node) for i, p in enumerate(self.producers)]
        return refs + [(f"consumers[{i}].node", c.node) for i, c in enumerate(self.consumers)]

    def check_scenario(self, scenario: Any, path: str) -> None:
        check_roles(scenario, self.node_refs(), path, "transactional_messages")

    def messaging(self) -> MessagingConfig:
        """The broker-side part, as the ``messaging`` protocol's config (for the broker and consumer nodes)."""
        return MessagingConfig(broker=self.broker, topology=self.topology, consumers=self.consumers,
                               heartbeat=self.heartbeat, reconnect_delay=self.reconnect_delay,
                               consumer_timeout=self.consumer_timeout)

    def new_state(self, world: Host) -> TxMsgState:
        return TxMsgState(self, world)

    def build_nodes(self, world: Host, state: TxMsgState) -> dict[str, Node]:
        mcfg = self.messaging()
        nodes: dict[str, Node] = {self.broker: BrokerNode(world, self.broker, mcfg, state.messaging)}
        if self.coordinator is not None:
            nodes[self.coordinator] = HalfMessageStore(world, self.coordinator, self, mcfg, state)
        for p in self.producers:
            nodes[p.node] = TxProducerNode(world, p.node, self, mcfg, p, state)
        for c in self.consumers:
            nodes[c.node] = ConsumerNode(world, c.node, mcfg, state.messaging, c)
        return nodes

    def finish(self, world: World, state: TxMsgState) -> None:
        state.report, state.delivery = txmsg_report(world, self, state)

    def summary(self, world: World, state: TxMsgState) -> dict[str, Any]:
        assert state.report is not None
        return {f"txmsg.{k}": v for k, v in state.report.counts.items()}

    def tables(self, world: World, state: TxMsgState) -> dict[str, pd.DataFrame]:
        assert state.report is not None and state.delivery is not None
        frames = world.events.frames()
        return {"txmsg_transactions": state.report.transactions, "txmsg_events": frames["txmsg_events"],
                "message_events": frames["message_events"], "messages": state.delivery.messages,
                "queue_depth": frames["queue_depth"]}

    def verdicts(self, world: World, state: TxMsgState) -> dict[str, Any]:
        return {"transactional": state.report, "delivery": state.delivery}

    def report(self, result: Result) -> list[str]:
        s = {k.split(".", 1)[1]: v for k, v in result.summary.items() if k.startswith("txmsg.")}
        rows = (("transactions", ("transactions", "committed", "rolled_back", "none")),
                ("  committed", ("delivered", "pending", "lost")),
                ("  not committed", ("absent", "phantom")),
                ("  messages", ("published", "deliveries", "duplicate_deliveries", "duplicate_side_effects")))
        out = [line(label, pairs((k.replace("_", " "), s[k]) for k in keys if k in s)) for label, keys in rows]
        out.append(verdict_line("message iff commit", result.verdicts.get("transactional"),
                                "a message went out for every committed transaction and for no other"))
        delivery = result.verdicts.get("delivery")
        if delivery is not None:
            summary = {f"messaging.{k}": v for k, v in delivery.summary().items()}
            out += [""] + delivery_lines(summary, "messaging.", delivery)
        return out


class TxMsgState:
    """The observer's record of one run: transaction events, the message log, the reports.

    Events (channel ``txmsg_events``): ``begin``, ``commit``, ``rollback``, ``abandon``
    (no HalfAck: the local transaction never ran), ``crash_<point>`` (producer);
    ``half_stored``, ``committed_by_end`` / ``_by_check``, ``rolled_back_by_end`` /
    ``_by_check``, ``check_back``, ``discarded`` (half-message store). Message events
    (publish, enqueue, receive, ...) are in ``messaging.log``.
    """

    EVENT_COLUMNS = ("time", "txn", "node", "event")

    def __init__(self, cfg: TxMsgConfig, world: Host) -> None:
        self.begun: dict[str, str] = {}  # txn -> producer
        self.events = world.events.channel("txmsg_events", self.EVENT_COLUMNS)
        self.messaging = MessagingState(cfg.messaging(), world)
        self.report: TxMsgReport | None = None
        self.delivery: DeliveryReport | None = None

    def event(self, t: float, txn: str, node: str, event: str) -> None:
        self.events.record(t, txn, node, event)


# -- the producer -------------------------------------------------------------------------
class Stage(State):
    """Where a running transaction is in the producer's process (volatile)."""

    HALF = "half"  # waiting for the half-message store to acknowledge the half message
    LOCAL = "local"  # the local transaction is running


class _Running:
    __slots__ = ("msg", "stage")

    def __init__(self, msg: Message, stage: Stage) -> None:
        self.msg = msg
        self.stage = stage


class TxProducerNode(ReliablePublisher):
    """Runs local transactions and gets their messages out according to ``mode``."""

    def __init__(self, world: Host, name: str, cfg: TxMsgConfig, mcfg: MessagingConfig, spec: TxProducerSpec,
                 trace: TxMsgState) -> None:
        super().__init__(world, name, mcfg, trace.messaging)
        self.tcfg = cfg
        self.mode = cfg.mode
        self.spec = spec
        self.uses_broker = cfg.mode != "half_message"
        self.confirm_timeout = cfg.confirm_timeout
        self.trace = trace
        self.seed = world.seed
        self.arrivals = Arrivals(spec.arrivals, world.streams[f"txmsg/{name}"], world.scenario.run.duration)
        self._local = buffered_sampler(spec.local_txn_time, world.streams[f"txmsg/{name}/local"])
        self._crashed: dict[tuple[str, str], None] = {}  # (txn, point) crashes that already happened

    def boot(self) -> None:
        self.db: dict[str, Literal["committed", "rolled_back"]] = self.disk.setdefault("db", {})
        self.outbox: dict[str, Message] = self.disk.setdefault("outbox", {})  # unsent rows (outbox mode)
        self.running: dict[str, _Running] = {}  # volatile: dies with the process
        super().boot()
        self.arrivals.resume(self, self._begin)
        if self.mode == "outbox":
            self.set_timer(self.tcfg.poll_interval, self._poll)

    def _crash_at(self, txn: str, point: str) -> bool:
        """Whether the seeded decisions crash the process at ``point`` of ``txn`` (then it crashes)."""
        spec = self.spec
        if spec.crash_probability == 0 or (txn, point) in self._crashed:
            return False
        chosen: str = spec.crash_point
        if chosen == "any":
            points = CRASH_POINTS[self.mode]
            chosen = points[int(decision_uniform(self.seed, "txmsg_crash_point", txn, 0) * len(points))]
        if chosen != point or decision_uniform(self.seed, "txmsg_crash", txn, 0) >= spec.crash_probability:
            return False
        self._crashed[(txn, point)] = None
        self.trace.event(self.now, txn, self.name, f"crash_{point}")
        self.restart_after(spec.restart_after)
        return True

    def _begin(self, i: int) -> None:
        txn = f"{self.name}-{i}"
        msg = Message(txn, self.tcfg.exchange, self.tcfg.routing_key, True, publisher=self.name, seq=i,
                      published_at=self.now)
        self.trace.begun[txn] = self.name
        self.trace.event(self.now, txn, self.name, "begin")
        if self.mode == "half_message":
            self.running[txn] = _Running(msg, Stage.HALF)
            self._send_half(txn, 1)
            return
        self.running[txn] = _Running(msg, Stage.LOCAL)
        if self.mode == "publish_then_commit":
            self.publish_reliably(msg)
        self.set_timer(float(self._local()), self._end_local, txn)

    def _end_local(self, txn: str) -> None:
        msg = self.running[txn].msg
        if self._crash_at(txn, "before_commit"):
            return
        commit = decision_uniform(self.seed, "txmsg_rollback", txn, 0) >= self.spec.rollback_probability
        self.db[txn] = "committed" if commit else "rolled_back"
        if commit and self.mode == "outbox":
            self.outbox[txn] = msg  # the same local transaction as the business row
        self.trace.event(self.now, txn, self.name, "commit" if commit else "rollback")
        if self._crash_at(txn, "after_commit"):
            return
        del self.running[txn]
        if self.mode == "commit_then_publish" and commit:
            self.publish_reliably(msg)
        elif self.mode == "half_message":
            self.send(self._coordinator(), End(txn, commit))

    # -- half messages ----------------------------------------------------------------------
    def _coordinator(self) -> str:
        coordinator = self.tcfg.coordinator
        assert coordinator is not None, "half_message mode always names its half-message store"
        return coordinator

    def _send_half(self, txn: str, attempt: int) -> None:
        self.send(self._coordinator(), Half(self.running[txn].msg))
        self.set_timer(self.spec.half_timeout, self._half_timeout, txn, attempt)

    def _half_timeout(self, txn: str, attempt: int) -> None:
        entry = self.running.get(txn)
        if entry is None or entry.stage != Stage.HALF:
            return
        if attempt < self.spec.half_attempts:
            self._send_half(txn, attempt + 1)
        else:  # never stored as far as we know: do not run the local transaction
            del self.running[txn]
            self.trace.event(self.now, txn, self.name, "abandon")

    def handle_HalfAck(self, msg: HalfAck, src: str) -> None:
        entry = self.running.get(msg.txn)
        if entry is None or entry.stage != Stage.HALF:
            return
        if not msg.ok:
            del self.running[msg.txn]
            self.trace.event(self.now, msg.txn, self.name, "abandon")
            return
        entry.stage = Stage.LOCAL
        self.set_timer(float(self._local()), self._end_local, msg.txn)

    def handle_CheckBack(self, msg: CheckBack, src: str) -> None:
        state = self.db.get(msg.txn)
        answer: Literal["commit", "rollback", "unknown"]
        if state is not None:
            answer = "commit" if state == "committed" else "rollback"
        else:  # in progress in this process, or it died with an earlier one before committing
            answer = "unknown" if msg.txn in self.running else "rollback"
        self.send(src, CheckReply(msg.txn, answer))

    # -- the outbox relay -------------------------------------------------------------------
    def _poll(self) -> None:
        if self.conn is not None:
            sent = 0
            for txn, msg in list(self.outbox.items()):
                if sent >= self.tcfg.relay_batch or not self.alive:
                    break
                if txn not in self.outgoing:
                    self.publish_reliably(msg)
                    sent += 1
        if self.alive:
            self.set_timer(self.tcfg.poll_interval, self._poll)

    def after_publish(self, msg_id: str) -> None:
        if self.mode == "outbox":
            self._crash_at(msg_id, "after_publish")

    def on_confirmed(self, msg_id: str) -> None:
        if self.mode == "outbox":
            self.outbox.pop(msg_id, None)  # mark the row sent

    def pending(self) -> list[str]:
        """Messages this process still means to publish (only a live process publishes its volatile ones)."""
        out = list(self.outbox)
        if self.alive:
            out += [m for m in self.outgoing if m not in self.outbox]
        return out


# -- results ----------------------------------------------------------------------------------
def txmsg_report(world: World, cfg: TxMsgConfig, trace: TxMsgState) -> tuple[TxMsgReport, DeliveryReport]:
    """Finish the broker's records and check the invariant and delivery."""
    broker = world.nodes[cfg.broker]
    assert isinstance(broker, BrokerNode)
    delivery = trace.messaging.close(broker, cfg.messaging().dlq_names())
    events = trace.messaging.log.to_frame()
    pending: list[str] = []
    unresolved: list[str] = []
    for p in cfg.producers:
        producer = world.nodes[p.node]
        assert isinstance(producer, TxProducerNode)
        pending += producer.pending()
    if cfg.coordinator is not None:
        store = world.nodes[cfg.coordinator]
        assert isinstance(store, HalfMessageStore)
        committed, unresolved = store.pending()
        pending += committed
    remain = events[events["event"] == "remain"]["msg_id"].tolist()
    rows = []
    for txn, name in trace.begun.items():
        rows.append((txn, name, world.nodes[name].disk.get("db", {}).get(txn, "none")))
    transactions = pd.DataFrame(rows, columns=["txn", "producer", "state"])
    return check_transactional(transactions, events, pending + remain, unresolved), delivery
