"""The ``messaging`` protocol: a broker node, publishers, consumers and downstream services.

Every cluster node plays exactly one role: the ``broker``, a publisher, a
consumer or a downstream service. Publishers and consumers are configured
here, not in ``[workload]`` (which must have ``clients = 0``); the run lasts
``run.duration`` (publishers may ``stop`` earlier to leave time to drain).
A complete scenario in TOML (``tests/test_broker_scenario.py`` runs it)::

    [cluster]
    nodes = ["broker", "pub", "c1", "c2"]

    [workload]
    clients = 0

    [run]
    duration = "10s"

    [protocol]
    name = "messaging"
    broker = "broker"

    [[protocol.topology.exchanges]]
    name = "orders"
    type = "topic"

    [[protocol.topology.exchanges]]
    name = "orders.dlx"
    type = "fanout"

    [[protocol.topology.queues]]
    name = "orders.work"
    type = "quorum"
    dead_letter_exchange = "orders.dlx"
    delivery_limit = 3                       # 4 attempts, then the DLQ

    [[protocol.topology.queues]]
    name = "orders.dlq"

    [[protocol.topology.bindings]]
    exchange = "orders"
    queue = "orders.work"
    routing_key = "order.#"

    [[protocol.topology.bindings]]
    exchange = "orders.dlx"
    queue = "orders.dlq"

    [[protocol.publishers]]
    node = "pub"
    exchange = "orders"
    routing_keys = ["order.created", "order.eu.paid"]
    rate = 200                               # messages per second
    count = 1000

    [[protocol.consumers]]
    node = "c1"
    queue = "orders.work"
    prefetch = 10
    processing_time = { dist = "exponential", mean = "4ms" }
    failure_probability = 0.3                # per attempt, seeded per (message id, attempt)
    crash_probability = 0.01                 # per delivery: the process dies after its side effect
    retry = { mode = "delivery_limit" }
    idempotency = { store = "shared" }

    [[protocol.consumers]]
    node = "c2"
    queue = "orders.work"
    prefetch = 10
    processing_time = { dist = "exponential", mean = "4ms" }
    failure_probability = 0.3
    retry = { mode = "delivery_limit" }
    idempotency = { store = "shared" }

    [[faults.schedule]]
    kind = "crash"                           # the broker is killed (clean = true: a clean restart)
    node = "broker"
    start = "2s"
    end = "2.5s"

Faults come from ``[faults]`` as for any protocol: ``crash`` the broker node
(persistence rules of :mod:`sim.messaging.broker`; ``clean = true`` for a clean
restart, which changes which recovered messages are marked redelivered), a consumer node (its
connection then times out) or a downstream; partition any of them. The AMQP frames travel
on the network's connections (``network.transport``): a partition shorter than the
``heartbeat`` delays them, a longer one closes the connection and the broker requeues its
unacked messages (:mod:`sim.messaging.broker_node`).

The drain (:mod:`sim.drain`): publishers stop at ``run.duration``. By default the run
stops there too, with whatever is still in flight; with ``[run] drain = { until = "idle",
limit = "5s" }`` it goes on until the run is idle (:meth:`MessagingConfig.idle`), at most
``limit``. The real-broker adapter applies the same policy and the same definition of idle
(:mod:`sim.rabbitmq.runner`), and both report the span they ran (``messaging.span``,
``messaging.drained``, ``messaging.drained_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..checkers.delivery import DeliveryReport, check_delivery
from ..config import Duration, MaybeInfDuration, at_least, fld, positive, prob
from ..dists import Constant, Dist
from ..drain import Span
from ..errors import ScenarioError
from ..kernel.node import Host
from ..kernel.world import World
from ..protocol import ProtocolConfig, register_protocol
from .broker_node import BrokerNode
from .clients import DownstreamNode, PublisherNode
from .consumer import ConsumerNode
from .costs import BrokerCosts
from .frames import FRAME_TYPES
from .history import MessageLog
from .idempotency import DedupStore, IdempotencySpec
from .report import delivery_lines
from .retry import RetryPolicy
from .topology import DEFAULT_EXCHANGE, Topology

if TYPE_CHECKING:
    import pandas as pd

    from ..result import Result
    from ..scenario import Scenario

__all__ = ["MessagingConfig", "PublisherSpec", "ConsumerSpec", "DownstreamSpec", "MessagingState", "messaging_config",
           "span_of", "SPAN_PREFIX"]

#: prefix of the span numbers in a messaging run's summary (``messaging.span`` ...)
SPAN_PREFIX = "messaging."


@dataclass(frozen=True, kw_only=True)
class PublisherSpec:
    """A publishing application on ``node``; message ``i`` uses ``routing_keys[i % len]``."""

    node: str = fld()
    exchange: str = fld("")
    routing_keys: tuple[str, ...] = fld()
    rate: float = fld(100.0, check=positive)
    arrivals: Literal["poisson", "periodic"] = fld("poisson")
    count: int | None = fld(None, check=at_least(0))
    start: Duration = fld(0.0)
    stop: Duration | None = fld(None)
    persistent: bool = fld(True)
    confirms: bool = fld(True)
    mandatory: bool = fld(False)
    republish: bool = fld(True)
    republish_delay: Duration = fld(100.0)
    confirm_timeout: Duration | None = fld(None, check=positive)
    priority: int | None = fld(None, check=at_least(0))
    expiration: Duration | None = fld(None)

    def _validate(self, path: str) -> None:
        if not self.routing_keys:
            raise ScenarioError(f"{path}.routing_keys", "must list at least one routing key")
        if self.stop is not None and self.stop <= self.start:
            raise ScenarioError(f"{path}.stop", f"must be after start ({self.start} ms), got {self.stop}")
        if self.priority is not None and self.priority > 255:
            raise ScenarioError(f"{path}.priority", f"must be in [0, 255], got {self.priority}")
        if self.republish and not self.confirms:
            raise ScenarioError(f"{path}.republish", "needs confirms = true (set republish = false without confirms)")
        if self.confirm_timeout is not None and not self.confirms:
            raise ScenarioError(f"{path}.confirm_timeout", "needs confirms = true")


@dataclass(frozen=True, kw_only=True)
class ConsumerSpec:
    """A consuming application on ``node`` (its decisions: :mod:`sim.messaging.consumer_core`)."""

    node: str = fld()
    queue: str = fld()
    prefetch: int = fld(1, check=at_least(0))
    auto_ack: bool = fld(False)
    concurrency: int = fld(1, check=at_least(1))
    processing_time: Dist = fld(Constant(1.0))
    failure_probability: float = fld(0.0, check=prob)
    poison_probability: float = fld(0.0, check=prob)
    crash_probability: float = fld(0.0, check=prob)
    crash_point: Literal["before_effect", "after_effect"] = fld("after_effect")
    restart_after: Duration = fld(1000.0)
    retry: RetryPolicy = fld(RetryPolicy())
    idempotency: IdempotencySpec | None = fld(None)
    downstream: str | None = fld(None)
    call_timeout: Duration = fld(1000.0, check=positive)

    def _validate(self, path: str) -> None:
        if self.auto_ack and self.retry.mode != "none":
            raise ScenarioError(f"{path}.retry.mode", "an auto-ack consumer cannot retry (nothing to nack); use 'none'")


@dataclass(frozen=True, kw_only=True)
class DownstreamSpec:
    """A service on ``node`` that consumers call once per processing attempt."""

    node: str = fld()
    servers: int = fld(1, check=at_least(1))
    service_time: Dist = fld(Constant(1.0))
    queue_limit: int | None = fld(None, check=at_least(0))


def messaging_config(scenario: Scenario) -> MessagingConfig:
    """The scenario's protocol config, which must be ``messaging``."""
    cfg = scenario.protocol
    if not isinstance(cfg, MessagingConfig):
        raise ScenarioError("protocol.name", f"needs protocol 'messaging', got {cfg.tag!r}")
    return cfg


class MessagingState:
    """Per-run state of the messaging nodes of one world (never shared by two worlds).

    ``log``: the message events and queue depths (channels ``message_events`` and
    ``queue_depth`` of the world's event log); ``shared_store``: the dedup store of
    consumers with ``idempotency.store = "shared"``; ``report``: the delivery
    checker's verdict, set when the run finishes.
    """

    def __init__(self, cfg: MessagingConfig, world: Host) -> None:
        self.log = MessageLog(world.events)
        duration = world.scenario.run.duration
        self.depth_interval = cfg.depth_interval if cfg.depth_interval is not None else duration / 200
        self.shared_store = DedupStore(cfg.shared_store_capacity)
        self._deliveries: dict[str, int] = {}
        self.report: DeliveryReport | None = None
        self.span: Span | None = None
        self.transit = cfg.transit_queues()  # checked after every event of an idle drain: computed once

    def next_delivery_number(self, msg_id: str) -> int:
        """1, 2, ... for successive processing starts of ``msg_id`` by any consumer (crash decisions)."""
        n = self._deliveries.get(msg_id, 0) + 1
        self._deliveries[msg_id] = n
        return n

    def close(self, broker: BrokerNode, dead_letter_queues: list[str]) -> DeliveryReport:
        """Record what is still queued (``remain`` events) and check delivery, once."""
        if self.report is None:
            broker.finish()
            self.report = check_delivery(self.log.to_frame(), dead_letter_queues)
        return self.report


@register_protocol
@dataclass(frozen=True, kw_only=True)
class MessagingConfig(ProtocolConfig[MessagingState]):
    """An AMQP broker scenario: topology, publishers, consumers, downstream services."""

    tag: ClassVar[str] = "messaging"
    broker: str = fld("broker")
    topology: Topology = fld(Topology())
    publishers: tuple[PublisherSpec, ...] = fld(())
    consumers: tuple[ConsumerSpec, ...] = fld(())
    downstreams: tuple[DownstreamSpec, ...] = fld(())
    dead_letter_queues: tuple[str, ...] | None = fld(None)
    heartbeat: Duration = fld(1000.0, check=positive, every="node")
    reconnect_delay: Duration = fld(200.0, check=positive)
    consumer_timeout: MaybeInfDuration = fld(1_800_000.0, check=positive)
    depth_interval: Duration | None = fld(None, check=positive, every="run")
    shared_store_capacity: int | None = fld(None, check=at_least(1))
    broker_costs: BrokerCosts = fld(BrokerCosts())

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        return FRAME_TYPES

    def node_refs(self) -> list[tuple[str, str]]:
        refs = [("broker", self.broker)]
        for group in ("publishers", "consumers", "downstreams"):
            refs += [(f"{group}[{i}].node", s.node) for i, s in enumerate(getattr(self, group))]
        return refs

    def check_scenario(self, scenario: Scenario, path: str) -> None:
        if scenario.workload.clients != 0:
            raise ScenarioError("workload.clients", "must be 0 for the messaging protocol "
                                "(publishers and consumers are protocol.publishers / protocol.consumers)")
        roles: dict[str, str] = {self.broker: "broker"}
        for field, name in self.node_refs()[1:]:
            if name in roles:
                raise ScenarioError(f"{path}.{field}", f"node {name!r} already plays the role of {roles[name]}")
            roles[name] = field
        for i, node in enumerate(scenario.nodes):
            if node not in roles:
                raise ScenarioError(f"cluster.nodes[{i}]", f"node {node!r} has no messaging role "
                                    "(broker, a publisher, a consumer or a downstream)")
        topo = self.topology
        queues = topo.queue_names()
        downstreams = [d.node for d in self.downstreams]
        for i, p in enumerate(self.publishers):
            if not topo.has_exchange(p.exchange):
                raise ScenarioError(f"{path}.publishers[{i}].exchange", f"unknown exchange {p.exchange!r}")
        for i, c in enumerate(self.consumers):
            cpath = f"{path}.consumers[{i}]"
            if c.queue not in queues:
                raise ScenarioError(f"{cpath}.queue",
                                    f"unknown queue {c.queue!r}; queues are {', '.join(queues) or '(none)'}")
            if c.downstream is not None and c.downstream not in downstreams:
                known = ", ".join(downstreams) or "none configured"
                raise ScenarioError(f"{cpath}.downstream",
                                    f"must name a downstream node ({known}), got {c.downstream!r}")
            self._check_retry(c, cpath)
        for i, q in enumerate(self.dead_letter_queues or ()):
            if q not in queues:
                raise ScenarioError(f"{path}.dead_letter_queues[{i}]", f"unknown queue {q!r}")

    def _check_retry(self, c: ConsumerSpec, cpath: str) -> None:
        pol, q = c.retry, self.topology.queue(c.queue)
        rpath = f"{cpath}.retry"
        if pol.mode == "delivery_limit" and (not q.is_quorum or q.delivery_limit is None):
            raise ScenarioError(f"{rpath}.mode",
                                f"'delivery_limit' needs queue {q.name!r} to be a quorum queue with a delivery_limit")
        if pol.mode == "dlx_wait" and q.dead_letter_exchange is None:
            raise ScenarioError(f"{rpath}.mode",
                                f"'dlx_wait' needs queue {q.name!r} to have a dead_letter_exchange (to its wait queue)")
        for name in ("via_exchange", "dead_letter_exchange"):
            ex = getattr(pol, name)
            if ex is not None and not self.topology.has_exchange(ex):
                raise ScenarioError(f"{rpath}.{name}", f"unknown exchange {ex!r}")

    # -- running ----------------------------------------------------------------------------
    def new_state(self, world: Host) -> MessagingState:
        return MessagingState(self, world)

    def build_nodes(self, world: Host, state: MessagingState) -> dict[str, Any]:
        nodes: dict[str, Any] = {self.broker: BrokerNode(world, self.broker, self, state)}
        for p in self.publishers:
            nodes[p.node] = PublisherNode(world, p.node, self, state, p)
        for c in self.consumers:
            nodes[c.node] = ConsumerNode(world, c.node, self, state, c)
        for d in self.downstreams:
            nodes[d.node] = DownstreamNode(world, d.node, d, state)
        return {name: nodes[name] for name in world.scenario.nodes}

    def dlq_names(self) -> list[str]:
        """The dead-letter queues: as configured, else derived from the topology.

        Derived: queues bound to the dead-letter exchange of a consumed queue (or
        to a ``dlx_wait`` policy's final exchange) that nobody consumes and that
        have no dead-letter exchange themselves (which tells them from TTL wait queues).
        """
        if self.dead_letter_queues is not None:
            return list(self.dead_letter_queues)
        topo = self.topology
        consumed = [c.queue for c in self.consumers]
        failing = [q for q in topo.queues if q.name in consumed and q.dead_letter_exchange is not None]
        exchanges = [q.dead_letter_exchange for q in failing]
        exchanges += [c.retry.dead_letter_exchange for c in self.consumers if c.retry.dead_letter_exchange]
        direct = [q.dead_letter_routing_key for q in failing if q.dead_letter_exchange == DEFAULT_EXCHANGE]
        out: list[str] = []
        for q in topo.queues:
            if q.name in consumed or q.dead_letter_exchange is not None:
                continue
            bound = [b.exchange for b in topo.bindings if b.queue == q.name]
            if q.name in direct or any(ex in exchanges for ex in bound):
                out.append(q.name)
        return out

    def transit_queues(self) -> list[str]:
        """The queues messages pass through: consumed, or with a dead-letter exchange and not a dead-letter queue
        (TTL wait queues). The others (dead-letter queues, queues nobody consumes) keep what reaches them, so an
        idle run may leave messages there."""
        consumed = {c.queue for c in self.consumers}
        dlqs = set(self.dlq_names())
        return [q.name for q in self.topology.queues
                if q.name in consumed or (q.dead_letter_exchange is not None and q.name not in dlqs)]

    def idle(self, world: World, state: MessagingState) -> bool:
        """Nothing in flight: the definition of idle that the real-broker adapter applies too.

        Idle when every fault of the schedule is over (none starts or ends later);
        the broker is up and no message is ready or unacked in a transit queue
        (:meth:`transit_queues`); every publisher has published its last
        message, has every publish confirmed (or given up) and no republish
        waiting; and no consumer holds, buffers, processes or waits to retry a
        message or for the confirm of a copy it published.
        """
        now = world.now
        if any(f.start > now or (f.end > now and f.end != float("inf")) for f in world.faults):
            return False
        broker = world.nodes[self.broker]
        assert isinstance(broker, BrokerNode)
        if not broker.alive:
            return False
        for q in state.transit:
            ready, unacked = broker.broker.depth(q)
            if ready or unacked:
                return False
        for node in world.nodes.values():
            if isinstance(node, PublisherNode) and not node.done:
                return False
            if isinstance(node, ConsumerNode) and not node.core.idle:
                return False
        return True

    def finish(self, world: World, state: MessagingState) -> None:
        broker = world.nodes[self.broker]
        assert isinstance(broker, BrokerNode)
        state.close(broker, self.dlq_names())
        end = world.drain_end if world.drain_end is not None else world.now
        state.span = span_of(state.log.to_frame(), end, bool(world.idle_at_drain_end))

    def summary(self, world: World, state: MessagingState) -> dict[str, Any]:
        assert state.report is not None and state.span is not None
        return {**{f"messaging.{k}": v for k, v in state.report.summary().items()}, **state.span.summary(SPAN_PREFIX)}

    def tables(self, world: World, state: MessagingState) -> dict[str, pd.DataFrame]:
        assert state.report is not None
        return {**world.events.frames(), "messages": state.report.messages}

    def verdicts(self, world: World, state: MessagingState) -> dict[str, Any]:
        return {"delivery": state.report}

    def report(self, result: Result) -> list[str]:
        return delivery_lines(result.summary, "messaging.", result.verdicts.get("delivery"))


def span_of(events: pd.DataFrame, end: float, drained: bool) -> Span:
    """The :class:`~sim.drain.Span` of a messaging run (simulated or real) that ran to ``end``.

    ``drained_at`` is the time of the last message event before the end (what
    is recorded as ``remain`` after the end does not count), NaN if not drained.
    """
    times = events.loc[(events["event"] != "remain") & (events["time"] <= end), "time"] if len(events) else None
    quiet = float(times.max()) if times is not None and len(times) else 0.0
    return Span(float(end), drained, quiet if drained else float("nan"))
