"""Running a messaging scenario against a real RabbitMQ broker: :func:`run_rabbitmq`.

The run goes through the scenario exactly as the simulation does (same message
ids, publish schedule, processing times and seeded failure/crash decisions),
with one actor and one connection per publisher and consumer plus an observer
(:mod:`sim.rabbitmq.observer`), all on one event loop (:mod:`sim.rabbitmq.loop`).
The topology is declared under run-unique names and deleted afterwards, even
when the run fails (:mod:`sim.rabbitmq.topology`); a run killed outright
leaves them to the broker, which removes them once the run's lease runs out
(:mod:`sim.rabbitmq.lease`). A run never lasts longer than its lease's
lifetime (by default its scenario's end plus three minutes): it is stopped
with an error first.

Publishers stop at ``run.duration`` (or their own earlier ``stop``), as in
the simulation. A run ends at the scenario's end time (``run.duration`` plus
the drain limit, :mod:`sim.drain`, moved later by however much longer a real
broker restart took than the scenario's crash window), or earlier, with
``stop_when_idle``, once it is idle by the simulation's definition
(:meth:`~sim.messaging.protocol.MessagingConfig.idle`): every publisher is done
(every publish confirmed, no republish waiting), every consumer is idle, every
fault is over, and the queues that messages pass through (consumed queues, TTL
wait queues) were found empty, ready and unacked, twice in a row (the broker
counting on each exactly the consumers the run has there now, so that the
deliveries of a consumer that just crashed count as still to come back:
:func:`~sim.rabbitmq.observer.probe_says_empty`). A run that
reaches its end time is probed once more, so that it too says whether it was
idle. Then the connections close (unacked messages return to their queues) and
:func:`~sim.rabbitmq.observer.drain_remaining` records what is left.

The summary reports the span the run went for, as the simulation's does:
``messaging.span`` (ms), ``messaging.drained`` (idle at the end) and
``messaging.drained_at`` (its last message event; :func:`~sim.messaging.protocol.span_of`).

The result is a :class:`~sim.result.Result` shaped like the simulation's for the
same scenario: ``tables["message_events"]``, ``tables["queue_depth"]`` and
``tables["messages"]``, ``verdicts["delivery"]``, the ``messaging.*`` summary numbers,
the connection events as ``node_events`` and the faults; ``meta`` describes the
broker side (``broker``: product, version, URL without password, how the run ended;
``notes``: what the adapter could not reproduce exactly; ``names``: the run's prefix).
"""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd

from .. import metrics
from ..checkers.delivery import DeliveryReport, check_delivery
from ..drain import Span
from ..history import History
from ..messaging.protocol import SPAN_PREFIX, messaging_config, span_of
from ..result import Result
from ..rng import Streams
from ..runner import capsim_version, with_seed
from ..scenario import Scenario
from .amqp import broker_info, close_quietly, connect_blocking
from .consumer import ConsumerActor, Shared
from .errors import AdapterError, UnsupportedScenario
from .faults import BrokerControl, BrokerRestarter, FaultPlan
from .lease import Lease
from .log import ObservedLog
from .loop import Session, raise_unreachable
from .names import RunNames
from .observer import ObserverActor, drain_remaining
from .publisher import PublisherActor
from .settings import AmqpSettings
from .topology import declare_topology, declared_topology

__all__ = ["run_rabbitmq", "check_supported", "DEFAULT_CONSUMER_TIMEOUT"]

DEFAULT_CONSUMER_TIMEOUT = 1_800_000.0  # RabbitMQ 3.10's consumer_timeout (30 min), set in rabbitmq.conf
_MIN_DEPTH_INTERVAL = 100.0  # ms between depth samples at most this often on a real broker


def check_supported(scenario: Scenario) -> list[str]:
    """Raise :class:`UnsupportedScenario` for what a real broker run cannot reproduce; return notes on the rest."""
    cfg = messaging_config(scenario)
    net = scenario.network
    for name in ("loss", "duplicate", "reorder"):
        if getattr(net, name) > 0:
            raise UnsupportedScenario(f"network.{name}", "needs control over the network; the adapter runs on the "
                                      "real network between this process and the broker")
    if net.links:
        raise UnsupportedScenario("network.links", "per-link network settings are not supported by the adapter")
    if cfg.downstreams:
        raise UnsupportedScenario("protocol.downstreams", "downstream services are not supported by the adapter")
    for i, c in enumerate(cfg.consumers):
        if c.downstream is not None:
            raise UnsupportedScenario(f"protocol.consumers[{i}].downstream", "not supported by the adapter")
    if cfg.consumer_timeout != DEFAULT_CONSUMER_TIMEOUT:
        raise UnsupportedScenario("protocol.consumer_timeout", "the broker's consumer_timeout is set in its "
                                  f"rabbitmq.conf (30 min by default); the scenario asks for {cfg.consumer_timeout} ms")
    notes = ["network.latency does not apply: messages cross the real network to the broker and back",
             f"heartbeat {cfg.heartbeat:g} ms -> {heartbeat_seconds(cfg.heartbeat)} s (AMQP counts whole seconds)"]
    if any(p.expiration is not None for p in cfg.publishers) or any(
            c.retry.via_exchange is not None for c in cfg.consumers):
        notes.append("per-message expiration is sent in whole milliseconds")
    if scenario.faults.schedule:
        notes.append("a crashed or cut-off client's connection ends at once on the real broker; in the simulation the "
                     "broker notices a machine failure or a partition only after missed heartbeats")
    return notes


def heartbeat_seconds(ms: float) -> int:
    return max(1, int(math.ceil(ms / 1000.0)))


def run_rabbitmq(scenario: Scenario, seed: int | None = None, *, url: str | None = None,
                 settings: AmqpSettings | None = None, broker: BrokerControl | None = None,
                 stop_when_idle: bool = True, label: str | None = None, lease: Lease | None = None) -> Result:
    """Run a ``messaging`` scenario against a real broker; ``seed`` overrides ``scenario.run.seed``.

    Connection settings: ``settings``, else ``broker.settings`` (a
    :class:`~sim.rabbitmq.node.LocalBrokerNode`), else ``url`` or
    ``CAPSIM_AMQP_URL`` or the local default. ``broker`` also enables broker
    restarts (``crash`` faults on the broker node). ``lease`` bounds how long
    the run's names outlive a killed run and how long the run may last
    (default :meth:`Lease.for_run <sim.rabbitmq.lease.Lease.for_run>`).
    """
    scenario = with_seed(scenario, seed)
    cfg = messaging_config(scenario)
    if settings is None:
        settings = getattr(broker, "settings", None) or AmqpSettings.resolve(url)
    notes = check_supported(scenario)
    plan = FaultPlan.from_scenario(scenario, broker_control=broker is not None)
    info = broker_info(settings)  # an unreachable broker fails here, at once
    t_wall = time.perf_counter()
    log = ObservedLog()
    lease = lease or Lease.for_run(scenario.end_time)
    deadline = time.monotonic() + lease.lifetime_ms / 1000.0
    with declared_topology(settings, cfg.topology, label=label or scenario.name, lease=lease) as names:
        runner = _Runner(scenario, settings, names, log, plan, broker, stop_when_idle, lease, deadline)
        try:
            runner.run()
        finally:
            runner.close()
        drain_remaining(settings, cfg, names, log, runner.session.now)
    span = span_of(log.to_frame(), runner.end_ms, runner.drained)
    report = check_delivery(log.to_frame(), cfg.dlq_names())
    broker_info_ = {**info, "broker_overrun_ms": runner.overrun_ms(), "ended": runner.ended,
                    **({"control": broker.describe()} if broker is not None and hasattr(broker, "describe") else {})}
    meta = {"capsim_version": capsim_version(), "source": "rabbitmq", "broker": broker_info_, "notes": notes,
            "names": names.prefix}
    return _result(scenario, time.perf_counter() - t_wall, log, report,
                   pd.DataFrame(runner.session.node_events, columns=["time", "node", "event"]),
                   pd.DataFrame(plan.rows, columns=["kind", "start", "end", "detail"]), meta, span)


def _result(scenario: Scenario, runtime: float, log: ObservedLog, report: DeliveryReport, node_events: pd.DataFrame,
            faults: pd.DataFrame, meta: dict[str, Any], span: Span) -> Result:
    """A :class:`Result` of a real run: no client operations and no simulated network."""
    history = History().to_frame()
    cfg = scenario.run
    summary: dict[str, Any] = {"ops": 0, "availability": math.nan, "faults": int(len(faults))}
    summary.update({f"messaging.{k}": v for k, v in report.summary().items()})
    summary.update(span.summary(SPAN_PREFIX))
    return Result(
        scenario=scenario, seed=cfg.seed, runtime=runtime, history=history,
        timeline=metrics.timeline(history, faults, cfg.duration, cfg.timeline_window or cfg.duration / 50),
        faults=faults, messages=pd.DataFrame({"type": pd.Series(dtype=object), "sent": pd.Series(dtype="int64")}),
        node_events=node_events, summary=summary,
        tables={"message_events": log.to_frame(), "queue_depth": log.depth_frame(), "messages": report.messages},
        verdicts={"delivery": report}, meta=meta,
    )


class _Runner:
    """The actors of one run on one :class:`Session`, and the run's end condition."""

    def __init__(self, scenario: Scenario, settings: AmqpSettings, names: RunNames, log: ObservedLog,
                 plan: FaultPlan, broker: BrokerControl | None, stop_when_idle: bool, lease: Lease,
                 deadline: float) -> None:
        cfg = messaging_config(scenario)
        self.scenario = scenario
        self.lease = lease
        self.deadline = deadline  # time.monotonic() the run must end by: its quorum queues expire after it
        self.cfg = cfg
        self.settings = settings
        self.names = names
        self.plan = plan
        self.stop_when_idle = stop_when_idle
        self.session = s = Session(settings, names, heartbeat=heartbeat_seconds(cfg.heartbeat),
                                   reconnect_delay=cfg.reconnect_delay, log=log)
        streams = Streams(scenario.run.seed)
        duration = scenario.run.duration
        self.shared = Shared(scenario.run.seed, cfg.shared_store_capacity)
        self.publishers = [PublisherActor(s, p, streams[f"publisher/{p.node}"], duration) for p in cfg.publishers]
        self.consumers = [ConsumerActor(s, c, cfg.topology, streams[f"consumer/{c.node}"], self.shared)
                          for c in cfg.consumers]
        interval = cfg.depth_interval if cfg.depth_interval is not None else duration / 200
        self.observer = ObserverActor(s, cfg, self.shared.dlq_copies, self._unacked,
                                      max(interval, _MIN_DEPTH_INTERVAL), consuming=self._consuming)
        self.by_node = {a.node: a for a in self.publishers + self.consumers}
        self.restarter = (BrokerRestarter(broker, s.ioloop, s.guard(self._broker_event), self._redeclare)
                          if broker is not None else None)
        self.ended = ""
        self.end_ms = 0.0  # when the run ended (ms on the run's clock)
        self.drained = False  # idle when it ended
        self._idle_streak = 0
        self._probing = False

    def _unacked(self, queue: str) -> int:
        return sum(len(c.held) for c in self.consumers if c.spec.queue == queue)

    def _consuming(self, queue: str) -> int:
        """How many of the run's consumers consume ``queue`` now (connected; a crashed one is not)."""
        return sum(1 for c in self.consumers if c.spec.queue == queue and c.ready and not c.crashed)

    def overrun_ms(self) -> float:
        return self.restarter.overrun_ms if self.restarter is not None else 0.0

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> None:
        s = self.session
        for actor in s.actors:
            actor.connect()
        if not s.run_until(lambda: all(a.ready for a in s.actors), self.settings.connection_timeout * 2 + 1):
            raise_unreachable(s.actors, self.settings)
        s.start_clock()
        self._schedule_faults()
        for actor in self.publishers + self.consumers + [self.observer]:
            actor.begin()
        cap_s = self.deadline - time.monotonic()  # a guard only: _finished ends the run long before
        if not s.run_until(self._finished, cap_s, poll_ms=20.0):
            raise AdapterError(f"the run did not reach its end within its lease's lifetime "
                               f"({self.lease.lifetime_ms / 1000.0:g} s)")
        self.end_ms = s.now()
        self.drained = self.ended == "idle" or self._idle_now()
        if self.restarter is not None and self.restarter.error is not None:
            raise AdapterError(f"broker restart failed: {self.restarter.error}")

    def _schedule_faults(self) -> None:
        s = self.session
        for start, end in self.plan.broker_restarts:
            s.call_at(start, self._restart_broker, end - start)
        for node, start, end in self.plan.crashes:
            actor = self.by_node[node]
            s.call_at(start, actor.crash)
            if math.isfinite(end):
                s.call_at(end, actor.restart)
        for node, start, end in self.plan.cuts:
            actor = self.by_node[node]
            s.call_at(start, actor.cut)
            if math.isfinite(end):
                s.call_at(end, actor.heal)

    def _restart_broker(self, down_ms: float) -> None:
        assert self.restarter is not None
        if self.restarter.busy:
            raise AdapterError("overlapping broker restarts are not supported")
        self.restarter.restart(down_ms)

    def _broker_event(self, event: str) -> None:
        self.session.node_event(self.cfg.broker, event)
        if event.startswith("broker_error"):
            raise AdapterError(f"broker restart failed: {event.split(': ', 1)[-1]}")

    def _redeclare(self) -> None:
        """After a restart (worker thread): declare the topology again; non-durable queues were deleted."""
        deadline = time.monotonic() + 30.0
        while True:
            try:
                conn = connect_blocking(self.settings)
                try:
                    declare_topology(conn.channel(), self.cfg.topology, self.names, self.lease)
                    return
                finally:
                    close_quietly(conn)
            except AdapterError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _finished(self) -> bool:
        s = self.session
        now = s.now()
        restarting = self.restarter is not None and self.restarter.busy
        if not restarting and now >= self.scenario.end_time + self.overrun_ms():
            self.ended = "end_time"
            return True
        if not self.stop_when_idle:
            return False
        if self._busy():
            self._idle_streak = 0
            self._probing = False
            return False
        if not self._probing:
            self.observer.probe()
            self._probing = True
            return False
        empty = self.observer.probe_result()
        if empty is None:
            return False
        self._probing = False
        self._idle_streak = self._idle_streak + 1 if empty else 0
        if self._idle_streak >= 2:
            self.ended = "idle"
            return True
        return False

    def _busy(self) -> bool:
        """Something the actors know of is in flight (the part of idleness that needs no question to the broker)."""
        s = self.session
        restarting = self.restarter is not None and self.restarter.busy
        return (restarting or any(not p.done for p in self.publishers) or any(not c.idle for c in self.consumers)
                or s.now() < self.plan.last_change + self.overrun_ms()
                or any(not a.ready for a in s.actors if not (a.crashed or a.cut_off)))

    def _idle_now(self) -> bool:
        """At the end time: whether the run is idle now (one probe of the transit queues)."""
        if self._busy() or not self.observer.ready:
            return False
        s = self.session
        self.observer.probe()
        answer: list[bool | None] = [None]

        def answered() -> bool:
            answer[0] = self.observer.probe_result()
            return answer[0] is not None

        return s.run_until(answered, 5.0, poll_ms=20.0) and bool(answer[0])

    def close(self) -> None:
        self.session.close()
        if self.restarter is not None:
            self.restarter.join(60.0)
