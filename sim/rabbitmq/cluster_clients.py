"""Clients of the real cluster and their Jepsen-shaped history; a partition schedule over wall time.

:func:`run_cluster_workload` declares one queue (on a chosen node, so a quorum
queue's leader and a classic queue's master start there), connects publishers
and consumers to chosen nodes of a :class:`~sim.rabbitmq.cluster.RabbitCluster`
and applies a partition schedule (the simulation's ``[faults]`` format) while
they run. Every client is an :class:`~sim.rabbitmq.loop.Actor` on one pika
IOLoop, so clients and faults share one clock (ms since the workload's time 0)
and the run is single-threaded; an actor whose connection closes reconnects
after ``reconnect_delay``.

A publisher sends persistent messages ``<client>-<i>`` at a fixed rate to the
queue (default exchange) with publisher confirms, pipelined. Each message
ends ``confirmed`` (``basic.ack``), ``nacked`` (``basic.nack``) or ``unknown``
(no confirm within ``confirm_timeout``, or the connection closed first): a
Jepsen operation that completes ``ok``, ``fail`` or ``info``. A message is
published once, never republished, so the history reads as Jepsen's does; a
publisher without a connection publishes nothing until it has one again.
A confirm that arrives after the message was recorded unknown is still
recorded (``detail = "late"``). A consumer consumes with manual acks and
records ``delivered`` (with the ``redelivered`` flag) and ``acked`` (the
``basic.ack`` it sent) for every delivery; a consumer the broker cancels (its
queue's node went away) reconnects and consumes again.

The history is a DataFrame with one row per event: ``time`` (ms), ``client``,
``node`` (the node the client is connected to), ``msg_id``, ``event``
(:data:`EVENTS`), ``type`` (Jepsen's ``invoke``/``ok``/``fail``/``info``),
``redelivered`` and ``detail``. :func:`message_outcomes` folds it into one row
per message and :func:`check_confirmed_delivered` is the at-least-once verdict:
every confirmed message was delivered (both live in :mod:`sim.checkers.cluster_history`,
which reads the broker-cluster model's histories the same way). Alongside, the run records when faults
started and ended, every client's connection events, and when each node's
broker stopped (a ``pause_minority`` pause) and ran again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..checkers.cluster_history import (
    EVENTS,
    HISTORY_COLUMNS,
    DeliveryVerdict,
    check_confirmed_delivered,
    message_outcomes,
)
from ..faultspec import Fault
from ..partitions import partition_schedule
from .amqp import close_quietly, connect_blocking
from .errors import AdapterError
from .loop import Actor, Session
from .names import RunNames

if TYPE_CHECKING:

    from .cluster import RabbitCluster

__all__ = ["EVENTS", "HISTORY_COLUMNS", "ClusterRun", "run_cluster_workload", "partition_schedule",
           "run_fault_schedule", "message_outcomes", "check_confirmed_delivered", "DeliveryVerdict", "delete_queue"]

QUEUE_TYPES = ("quorum", "classic")


class _History:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.rows: list[tuple[Any, ...]] = []

    def record(self, client: str, node: str, msg_id: str, event: str, *, redelivered: bool | None = None,
               detail: str = "") -> None:
        self.rows.append((self.session.now(), client, node, msg_id, event, EVENTS[event], redelivered, detail))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=HISTORY_COLUMNS)


class _Publisher(Actor):
    def __init__(self, session: Session, name: str, home: str, cluster: RabbitCluster, queue: str, rate: float,
                 stop_at: float, confirm_timeout: float, history: _History) -> None:
        super().__init__(session, name, cluster.node(home).settings)
        self.home, self.queue, self.history = home, queue, history
        self.gap = 1000.0 / rate
        self.stop_at = stop_at
        self.confirm_timeout = confirm_timeout
        self.index = 0
        self.seq = 0
        self.unconfirmed: dict[int, tuple[str, Any]] = {}
        self.timed_out: set[str] = set()
        self.started = False
        self._timer: Any = None

    def setup(self, channel: Any, gen: int) -> None:
        g = self.s.guard
        channel.confirm_delivery(ack_nack_callback=g(self._on_confirm, gen), callback=g(lambda _f: self.set_ready(gen)))

    def on_ready(self) -> None:
        self.seq = 0  # delivery tags start again on every channel
        if self.started and self._timer is None:
            self._tick()

    def begin(self) -> None:
        self.started = True
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        if self.s.now() >= self.stop_at or self.s.stopping:
            return
        if self.ready and self.channel is not None:
            msg_id = f"{self.node}-{self.index}"
            self.index += 1
            props = self.s.pika.BasicProperties(delivery_mode=2, message_id=msg_id)
            self.channel.basic_publish("", self.queue, msg_id.encode(), props)
            self.seq += 1
            handle = self.s.call_later(self.confirm_timeout, self._timeout, self.gen, self.seq)
            self.unconfirmed[self.seq] = (msg_id, handle)
            self.history.record(self.node, self.home, msg_id, "published")
            self._timer = self.s.call_later(self.gap, self._tick)
        # not ready: on_ready resumes publishing after the reconnect

    def _on_confirm(self, gen: int, frame: Any) -> None:
        if gen != self.gen:
            return
        method = frame.method
        event = "confirmed" if isinstance(method, self.s.pika.spec.Basic.Ack) else "nacked"
        tags = [t for t in self.unconfirmed if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in sorted(tags):
            entry = self.unconfirmed.pop(tag, None)
            if entry is None:
                continue
            msg_id, handle = entry
            self.s.cancel(handle)
            self.history.record(self.node, self.home, msg_id, event,
                                detail="late" if msg_id in self.timed_out else "")

    def _timeout(self, gen: int, tag: int) -> None:
        entry = self.unconfirmed.get(tag) if gen == self.gen else None
        if entry is not None:
            self.timed_out.add(entry[0])
            self.history.record(self.node, self.home, entry[0], "unknown", detail="confirm timeout")

    def on_connection_lost(self, reason: str) -> None:
        for msg_id, handle in self.unconfirmed.values():
            self.s.cancel(handle)
            if msg_id not in self.timed_out:
                self.history.record(self.node, self.home, msg_id, "unknown", detail=f"connection lost: {reason}")
        self.unconfirmed.clear()
        self.s.cancel(self._timer)
        self._timer = None


class _Consumer(Actor):
    def __init__(self, session: Session, name: str, home: str, cluster: RabbitCluster, queue: str, prefetch: int,
                 history: _History) -> None:
        super().__init__(session, name, cluster.node(home).settings)
        self.home, self.queue, self.prefetch, self.history = home, queue, prefetch, history

    def setup(self, channel: Any, gen: int) -> None:
        g = self.s.guard

        def consume(_frame: Any) -> None:
            channel.basic_consume(self.queue, g(self._on_message, gen), auto_ack=False,
                                  callback=g(lambda _f: self.set_ready(gen)))

        channel.add_on_cancel_callback(g(self._cancelled, gen))
        channel.basic_qos(prefetch_count=self.prefetch, callback=g(consume))

    def _cancelled(self, gen: int, _frame: Any) -> None:
        """The broker cancelled the consumer (its queue's node went away): consume again on a new connection."""
        if gen == self.gen and self.conn is not None:
            self.s.node_event(self.node, "consumer_cancelled")
            if self.conn.is_open:
                self.conn.close()

    def _on_message(self, gen: int, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if gen != self.gen:
            return
        msg_id = props.message_id or body.decode(errors="replace")
        self.history.record(self.node, self.home, msg_id, "delivered", redelivered=bool(method.redelivered))
        channel.basic_ack(method.delivery_tag)
        self.history.record(self.node, self.home, msg_id, "acked")


# -- partition schedules ------------------------------------------------------------------------------
def _actions(schedule: Sequence[Fault]) -> list[tuple[float, int, str, Fault]]:
    out = [(f.start, i, "start", f) for i, f in enumerate(schedule)]
    out += [(f.end, i, "end", f) for i, f in enumerate(schedule) if math.isfinite(f.end)]
    return sorted(out, key=lambda a: (a[0], a[2] == "start", a[1]))  # heals before same-time starts


class _FaultPlayer:
    def __init__(self, cluster: RabbitCluster, now: Any) -> None:
        self.cluster, self.now = cluster, now
        self.keys: dict[int, int] = {}
        self.rows: list[tuple[float, int, str, str]] = []

    def act(self, index: int, what: str, fault: Fault) -> None:
        if what == "start":
            self.keys[index] = self.cluster.partition_fault(fault)
        elif index in self.keys:
            self.cluster.heal(self.keys.pop(index))
        groups = getattr(fault, "groups", ())
        self.rows.append((self.now(), index, what, f"groups={[list(g) for g in groups]} "
                                                   f"one_way={getattr(fault, 'one_way', False)}"))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["time", "fault", "event", "detail"])


def run_fault_schedule(cluster: RabbitCluster, schedule: Sequence[Fault]) -> pd.DataFrame:
    """Apply resolved partitions (:func:`partition_schedule`) over wall time, from now; blocks until the last
    scheduled heal. Returns when each fault started and ended (ms from the call)."""
    t0 = time.monotonic()
    player = _FaultPlayer(cluster, lambda: (time.monotonic() - t0) * 1000.0)
    for at, index, what, fault in _actions(schedule):
        time.sleep(max(0.0, at / 1000.0 - (time.monotonic() - t0)))
        player.act(index, what, fault)
    return player.frame()


# -- the workload ---------------------------------------------------------------------------------------
@dataclass
class ClusterRun:
    """What a workload on the real cluster recorded."""

    history: pd.DataFrame
    faults: pd.DataFrame
    client_events: pd.DataFrame
    queue: str
    meta: dict[str, Any] = field(default_factory=dict)
    node_states: pd.DataFrame = field(default_factory=pd.DataFrame)
    """``time``, ``node``, ``state`` (``running``, ``stopped``: broker paused, ``unknown``: no answer):
    each node's first state and every change, polled every ``watch`` ms."""


class _NodeWatch:
    """Polls whether each node's broker application runs (through the cluster's control node)."""

    def __init__(self, cluster: RabbitCluster, session: Session, every: float) -> None:
        self.cluster, self.session, self.every = cluster, session, every
        self.state: dict[str, str] = {}
        self.rows: list[tuple[float, str, str]] = []
        self.stopped = False

    def poll(self) -> None:
        if self.stopped:
            return
        for name in self.cluster.nodes:
            try:
                answer = self.cluster.eval(name, "rabbit:is_running().", timeout=5.0)
                state = {"true": "running", "false": "stopped"}.get(answer, "unknown")
            except AdapterError:
                state = "unknown"
            if self.state.get(name) != state:
                self.state[name] = state
                self.rows.append((self.session.now(), name, state))
        self.session.call_later(self.every, self.poll)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["time", "node", "state"])


def _declare(cluster: RabbitCluster, node: str, queue: str, queue_type: str) -> None:
    conn = connect_blocking(cluster.node(node).settings)
    try:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    finally:
        close_quietly(conn)


def run_cluster_workload(cluster: RabbitCluster, *, queue: str, queue_type: str = "quorum", declare_on: str = "n1",
                         publishers: Mapping[str, str], consumers: Mapping[str, str], rate: float = 50.0,
                         duration: float = 5000.0, faults: Sequence[Fault] = (), confirm_timeout: float = 2000.0,
                         drain_timeout: float = 30000.0, reconnect_delay: float = 500.0, prefetch: int = 50,
                         heartbeat: int = 5, quiet: float = 3000.0, watch: float = 250.0) -> ClusterRun:
    """Run publishers and consumers (client name -> node name) on ``queue`` for ``duration`` ms with the
    resolved partition ``faults`` (times in ms from the workload's start); every partition is healed at
    ``duration``; then, once no confirm is pending and every consumer is connected, consumers keep running
    until every confirmed message was delivered or nothing happened for ``quiet`` ms (at most
    ``drain_timeout`` ms). ``meta["messages_left"]`` is the queue's message count at the end;
    ``node_states`` says when each node's broker stopped (e.g. paused) and ran again."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue_type must be one of {', '.join(QUEUE_TYPES)}, got {queue_type!r}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0 messages per second, got {rate}")
    for name in [declare_on, *publishers.values(), *consumers.values()]:
        cluster.node(name)
    late = [f for f in faults if f.start >= duration]
    if late:
        raise ValueError(f"faults must start before the workload's end ({duration:g} ms); {late[0]!r} does not")
    _declare(cluster, declare_on, queue, queue_type)
    first = cluster.node(declare_on).settings
    session = Session(first, RunNames.new("cluster"), heartbeat=heartbeat, reconnect_delay=reconnect_delay)
    history = _History(session)
    pubs = [_Publisher(session, name, node, cluster, queue, rate, duration, confirm_timeout, history)
            for name, node in publishers.items()]
    cons = [_Consumer(session, name, node, cluster, queue, prefetch, history) for name, node in consumers.items()]
    player = _FaultPlayer(cluster, session.now)
    watcher = _NodeWatch(cluster, session, watch)
    try:
        for actor in [*cons, *pubs]:
            actor.connect()
        if not session.run_until(lambda: all(a.ready for a in session.actors), 30.0):
            missing = [a.node for a in session.actors if not a.ready]
            raise AdapterError(f"clients {missing} did not connect to the cluster within 30 s")
        session.start_clock()
        history.rows.clear()
        watcher.poll()
        for at, index, what, fault in _actions(faults):
            if at < duration:  # what is still cut at the end is healed then
                session.call_at(at, player.act, index, what, fault)
        for p in pubs:
            p.begin()
        session.run_until(lambda: session.now() >= duration, duration / 1000.0 + 60.0)
        cluster.heal()
        player.rows.append((session.now(), -1, "heal_all", ""))

        calm_since = [session.now(), len(history.rows)]

        def drained() -> bool:
            """Done when every confirmed message arrived, or when, with no confirm pending and every
            consumer connected, nothing was recorded for ``quiet`` ms."""
            settled = not any(p.unconfirmed for p in pubs) and all(c.ready for c in cons)
            if not settled or len(history.rows) != calm_since[1]:
                calm_since[:] = [session.now(), len(history.rows)]
            if not settled:
                return False
            frame = history.frame()
            confirmed = set(frame.loc[frame["event"] == "confirmed", "msg_id"])
            delivered = set(frame.loc[frame["event"] == "delivered", "msg_id"])
            return confirmed <= delivered or session.now() - calm_since[0] >= quiet

        drained_ok = session.run_until(drained, drain_timeout / 1000.0, poll_ms=200.0)
    finally:
        watcher.stopped = True
        cluster.heal()
        session.close()
    events = pd.DataFrame(session.node_events, columns=["time", "client", "event"])
    meta = {"queue_type": queue_type, "declare_on": declare_on, "drained": drained_ok,
            "messages_left": _message_count(cluster, declare_on, queue),
            "partition_handling": cluster.partition_handling, "net_ticktime": cluster.net_ticktime}
    return ClusterRun(history.frame(), player.frame(), events, queue, meta, watcher.frame())


def _message_count(cluster: RabbitCluster, node: str, queue: str) -> int | None:
    """Ready messages in ``queue`` now (None if it cannot be asked)."""
    try:
        conn = connect_blocking(cluster.node(node).settings)
    except AdapterError:
        return None
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    except Exception:
        return None
    finally:
        close_quietly(conn)


def delete_queue(cluster: RabbitCluster, node: str, queue: str) -> None:
    """Delete ``queue`` through node ``node`` (to reset the cluster between workloads)."""
    conn = connect_blocking(cluster.node(node).settings)
    try:
        conn.channel().queue_delete(queue)
    finally:
        close_quietly(conn)
