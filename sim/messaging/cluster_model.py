"""A RabbitMQ 3.10 cluster under network partitions: a deterministic model of what happens to one queue's messages.

:func:`run_cluster_model` runs a :class:`~sim.messaging.cluster_scenario.ClusterScenario`
(nodes, partition handling, one durable queue, publishers with confirms, consumers
with manual acks, partitions from the simulation's ``[faults]`` format) and returns a
:class:`ClusterModelRun` whose ``history`` has exactly the shape the real cluster's
clients record (:mod:`sim.rabbitmq.cluster_clients`, read by
:mod:`sim.checkers.cluster_history`), so model and real cluster can be compared side
by side. The model is an event loop over the scenario's times; it draws no random
number (random faults draw from the seed's ``faults`` stream before it starts), so
the same scenario gives the same history.

Facts it relies on (RabbitMQ documentation: partitions, quorum queues, classic
queue mirroring; Jepsen's RabbitMQ analysis, 2014; measurements on the real 3-node
3.10 cluster of :mod:`sim.rabbitmq.cluster`), and the modelling choices, marked
*model*:

Detection and reconnection.
  A node declares a peer down when it has heard nothing from it for between 1 and
  1.25 ``net_ticktime`` (the Erlang distribution's tick); *model*: at ``detection``
  after the cut (default 1.125 x ``net_ticktime``; 4.5 s for 4 s, as measured). A cut
  shorter than that only delays the traffic between the nodes (TCP retransmits); when
  the peer is declared down the traffic in flight is lost (except, as measured, a
  quorum queue's deliveries: see below). One-way cuts break the
  connection too (the ticks of one direction are lost). After a heal the nodes
  reconnect ``reconnect`` later (*model*). Two running nodes that come back into
  contact, each having thought the other down, are *partitioned* (Mnesia's
  ``inconsistent_database``): each side keeps its own view of the queue.
Partition handling.
  ``pause_minority``: a node that sees no more than half of the cluster's nodes
  (itself included) stops its broker application: its client connections close and
  new ones are refused; it starts again (``boot``) once it sees a majority again
  (measured: paused ~4.5 s after the cut, running ~1.3 s after the heal). Nothing is
  partitioned when it returns, its copies rejoin the majority's. ``autoheal``: both
  sides keep running; when the nodes reconnect, the partition with the most client
  connections wins (a draw: the most nodes; then, *model*, the one holding the
  cluster's first node) and every node of the other partitions restarts (``boot``),
  closing its connections and rejoining the winners (measured: the losing node stopped
  0.1-0.6 s after the heal and ran again 0.8 s later; the model's ``reconnect`` and
  ``boot`` defaults fit ``pause_minority``'s 1.3 s, so it restarts the loser about 0.5 s
  late). ``ignore``: both sides keep
  running and stay partitioned after the heal until an operator restarts the losing
  side, as the documentation's recovery says (``manual_restart`` after the
  reconnection; default never).
Classic queue (not mirrored).
  Its messages live on its one node. A publish from a node that does not see the
  queue's node (declared down, or paused) is *confirmed and dropped*: measured on the
  real 3.10 cluster (a classic queue on the isolated node confirmed the majority
  side's publishes while its node was paused, and never delivered them: 55-74 of
  them at 20 messages/s, about the pause's length, not the cut's). A publish sent to
  the queue's node while the cut is not yet detected waits, and is *nacked* when the
  node is declared down (the channel sees the queue process exit with
  ``noconnection``, an abnormal reason; *model*, consistent with the count above).
  Once the nodes reconnect the queue is reachable again, also under ``ignore`` (the
  durable queue's record keeps its process). Durable queue, persistent messages: a
  paused or restarted node recovers them from disk. A persistent message is confirmed
  once it is on disk: the queue process syncs every ``sync_interval`` (RabbitMQ's
  ``SYNC_INTERVAL``, 25 ms; *model*: exactly that long after it arrived), but a consumer
  may get it before: a connection closed in between leaves a message unconfirmed yet
  delivered (seen on the real cluster: the isolated node paused 14 ms after a local
  publish that its consumer had already received).
Classic mirrored queue (3.10, ``ha-mode: all``, default ``ha-sync-mode: manual`` and
``ha-promote-on-failure: always``).
  A leader (master) and a mirror on every other node; the publishing channel sends a
  message to the leader and to every mirror, and the confirm comes once every member
  it was sent to, still in the queue's membership, has it on disk (a member declared down
  leaves the membership). When the leader is lost, the *oldest* mirror of the side
  is promoted, synchronised or not: what it lacks is lost. Deliveries and acks go
  through the leader; an ack that does not reach a mirror before it leaves lets that
  mirror, once promoted, deliver the message again (``redelivered``). A node that
  returns (resumes, restarts) rejoins as a new, empty, unsynchronised mirror and its
  old copy is discarded; its data is kept only when no other member survived (the
  durable queue is recovered from its disk). Under ``ignore``/``autoheal`` each side
  promotes its own leader: both accept and confirm publishes, and the losing side's
  copy, with the messages confirmed only there, is discarded when it restarts
  (Jepsen 2014: confirmed messages lost).
Quorum queue (Raft).
  Members on every node. *Model*: the Raft rules that matter, not a run of capsim's
  Raft nodes (:mod:`sim.replication.raft` runs on the simulated network through
  ``sim.run``; this model is an event loop of its own): a publish is committed, and
  confirmed, only when the publisher's node reaches a leader that reaches a majority of
  running members; the committed log is never lost or reordered. A publish that
  cannot be committed waits on its channel. Commands sent to a leader the channel's
  node then declares down are gone; ``rabbit_fifo_client`` resends its pending commands
  when a new leader announces itself (``leader_change``, to the channels it reaches)
  or when its timer fires: armed once 32 commands are pending (``SOFT_LIMIT``), 10 s
  later (``TIMER_TIME``). Measured on the real cluster under ``ignore``: the isolated
  node's publishes of the partition were committed 13.6 s into the run, 10 s after the
  32nd was pending, not at the reconnection. A closed channel (its node pauses or
  restarts; under ``autoheal`` the losing side restarts first: measured, those
  publishes all ended unknown) resends nothing. When the leader is cut off from
  the majority, the majority's members elect a new one ``election`` after they
  detect the loss. The leader serves every consumer whose node it does not hold down,
  also across a cut not yet detected: those deliveries wait on the way; when the
  consumer's node is declared down the leader returns them to the queue (delivered
  again, ``redelivered``, to a consumer it can reach) while the deliveries themselves
  still arrive when the cut ends, if the consumer's connection is still open (under
  ``autoheal`` and ``ignore``; a paused node has closed it): duplicates. Measured on
  the real 3.10 cluster under ``autoheal``: a consumer on the isolated node got, 48 ms
  after the heal and before its node restarted, 44 messages the majority's consumer
  had already received as redeliveries. *Model*: the mechanism inside RabbitMQ is not
  modelled, only this observed outcome.

Clients. A publisher publishes persistent messages ``<client>-<i>`` periodically at
``rate`` while it has a connection, each once; a connection closes when its node
pauses or restarts; the client reconnects every ``reconnect_delay`` to ``node``,
then its ``failover`` nodes, whichever runs. Outcomes and records as on the real
cluster: ``confirmed`` (``latency`` after the queue accepts it), ``unknown`` after
``confirm_timeout`` or when the connection closes, a later confirm recorded with
``detail = "late"``. A consumer acks every delivery at once. Client-to-node traffic
is never cut (as on the real cluster, where only the links between nodes are cut).
At ``run.duration`` publishers stop and every partition heals; consumers go on for
``run.drain``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..checkers.cluster_history import EVENTS, HISTORY_COLUMNS, PartitionReport, partition_report
from ..faultspec import Fault, Partition
from ..partitions import partition_schedule
from ..rng import Streams
from .cluster_scenario import ClusterScenario, load_cluster_scenario

__all__ = ["ClusterModelRun", "run_cluster_model", "model_report", "partition_sides"]

Pair = frozenset[str]

#: rabbit_fifo_client: a channel with this many pending quorum commands arms its resend timer ...
QQ_SOFT_LIMIT = 32
#: ... which resends them this many ms later
QQ_RESEND_TIMER = 10000.0


@dataclass
class ClusterModelRun:
    """What a run of the model recorded (the fields of :class:`sim.rabbitmq.cluster_clients.ClusterRun`)."""

    history: pd.DataFrame
    faults: pd.DataFrame
    client_events: pd.DataFrame
    queue: str
    meta: dict[str, Any] = field(default_factory=dict)
    node_states: pd.DataFrame = field(default_factory=pd.DataFrame)
    schedule: list[Fault] = field(default_factory=list)


class _Member:
    """One node's copy of a classic (mirrored) queue: ``msgs`` in order (deliverable), ``seen`` (received),
    ``synced`` (written to disk: what a confirm waits for)."""

    __slots__ = ("node", "msgs", "seen", "synced", "joined")

    def __init__(self, node: str, joined: float, msgs: list[str] | None = None) -> None:
        self.node = node
        self.msgs: list[str] = list(msgs or [])
        self.seen: set[str] = set(self.msgs)
        self.synced: set[str] = set(self.msgs)
        self.joined = joined


class _Instance:
    """The queue as one side of the cluster sees it: a leader and the mirrors it knows."""

    __slots__ = ("leader", "members")

    def __init__(self, leader: str, members: dict[str, _Member]) -> None:
        self.leader = leader
        self.members = members


class _Pub:
    __slots__ = ("msg_id", "client", "node", "time", "targets", "timed_out", "deadline")

    def __init__(self, msg_id: str, client: str, node: str, time: float, deadline: float) -> None:
        self.msg_id, self.client, self.node, self.time, self.deadline = msg_id, client, node, time, deadline
        self.targets: set[str] = set()
        self.timed_out = False


class _Client:
    __slots__ = ("spec", "kind", "node", "connected", "pending", "index", "held", "stalled", "resend_armed")

    def __init__(self, spec: Any, kind: str) -> None:
        self.spec, self.kind = spec, kind
        self.node: str = spec.node
        self.connected = False
        self.pending: dict[str, _Pub] = {}
        self.index = 0
        self.held: list[tuple[str, bool]] = []  # quorum deliveries on their way across a cut: (msg, returned)
        self.stalled = False  # quorum: its pending commands died with a connection; waiting for a resend
        self.resend_armed = False  # quorum: the client's resend timer runs


class _Model:
    def __init__(self, sc: ClusterScenario, schedule: list[Fault]) -> None:
        self.sc = sc
        cl = sc.broker.cluster
        self.cfg = cl
        self.nodes = cl.nodes
        self.mode = cl.partition_handling
        self.qtype = sc.broker.queue.type
        self.lat = cl.latency
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.rows: list[tuple[Any, ...]] = []
        self.fault_rows: list[tuple[float, int, str, str]] = []
        self.client_rows: list[tuple[float, str, str]] = []
        self.state_rows: list[tuple[float, str, str]] = []
        self.pairs = [frozenset((a, b)) for i, a in enumerate(self.nodes) for b in self.nodes[i + 1:]]
        self.cuts: dict[Pair, int] = dict.fromkeys(self.pairs, 0)
        self.cut_epoch: dict[Pair, int] = dict.fromkeys(self.pairs, 0)
        self.link: dict[Pair, bool] = dict.fromkeys(self.pairs, True)
        self.split: dict[Pair, bool] = dict.fromkeys(self.pairs, False)
        self.inflight: dict[Pair, list[Callable[[], None]]] = {p: [] for p in self.pairs}
        self.running = dict.fromkeys(self.nodes, True)
        self.booting: set[str] = set()
        self.heal_pending = False
        self.schedule = schedule
        home = sc.broker.queue.node
        # classic / mirrored
        self.instances: list[_Instance] = []
        self.stash: dict[str, _Member] = {}
        if self.qtype == "classic":
            self.instances.append(_Instance(home, {home: _Member(home, 0.0)}))
        elif self.qtype == "mirrored":
            order = [home] + [n for n in self.nodes if n != home]
            self.instances.append(_Instance(home, {n: _Member(n, float(i) * 1e-6) for i, n in enumerate(order)}))
        # quorum
        self.leader: str | None = home
        self.election_at: float | None = None
        self.log: list[str] = []
        self.returned: set[str] = set()  # quorum messages returned to the queue once (delivery count > 0)
        self.delivered: set[str] = set()
        self.rr = 0
        self.clients = [_Client(p, "publisher") for p in sc.broker.publishers]
        self.clients += [_Client(c, "consumer") for c in sc.broker.consumers]
        for n in self.nodes:
            self.state_rows.append((0.0, n, "running"))

    # -- the event loop ------------------------------------------------------------------------------
    def at(self, t: float, fn: Callable[..., None], *args: Any, prio: int = 1) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, prio, self._seq, fn, args))

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            t, _p, _s, fn, args = heapq.heappop(self._heap)
            self.now = max(self.now, t)
            fn(*args)
            self.settle()

    def record(self, t: float, client: str, node: str, msg_id: str, event: str, *, redelivered: bool | None = None,
               detail: str = "") -> None:
        self.rows.append((t, client, node, msg_id, event, EVENTS[event], redelivered, detail))

    # -- the network between nodes -----------------------------------------------------------------------
    def pair(self, a: str, b: str) -> Pair:
        return frozenset((a, b))

    def passable(self, a: str, b: str) -> bool:
        if a == b:
            return True
        p = self.pair(a, b)
        return self.cuts[p] == 0 and self.link[p]

    def send(self, a: str, b: str, fn: Callable[[], None]) -> None:
        """Node-to-node traffic: now if the link is open, after the cut if it is cut but not yet declared down,
        never if it is down."""
        if self.passable(a, b):
            fn()
        elif self.link[self.pair(a, b)]:
            self.inflight[self.pair(a, b)].append(fn)

    def fault_start(self, index: int, fault: Partition) -> None:
        fresh = []
        for p in _cut_pairs(self.nodes, fault):
            self.cuts[p] += 1
            if self.cuts[p] == 1:
                self.cut_epoch[p] += 1
                fresh.append((p, self.cut_epoch[p]))
        if fresh:  # the pairs of one cut are declared down together
            self.at(self.now + self.cfg.detection_delay, self.detect, fresh)
        self.fault_rows.append((self.now, index, "start",
                                f"groups={[list(g) for g in fault.groups]} one_way={fault.one_way}"))

    def fault_end(self, index: int, cut: list[Pair]) -> None:
        down = []
        for p in cut:
            self.cuts[p] = max(0, self.cuts[p] - 1) if index >= 0 else 0
            if self.cuts[p] == 0:
                if self.link[p]:
                    todo, self.inflight[p] = self.inflight[p], []
                    for fn in todo:
                        fn()
                else:
                    down.append((p, self.cut_epoch[p]))
        if down:
            self.at(self.now + self.cfg.reconnect, self.reconnect, down)
        self.fault_rows.append((self.now, index, "end" if index >= 0 else "heal_all", ""))

    def detect(self, pairs: list[tuple[Pair, int]]) -> None:
        hit = False
        for p, epoch in pairs:
            if self.cuts[p] and self.cut_epoch[p] == epoch and self.link[p]:
                self.link[p] = False
                self.inflight[p] = []  # the traffic in flight dies with the connection
                self.split[p] = hit = True
        if hit:
            self.split_instances()
            self.qq_return_held()
            if self.qtype == "quorum" and self.leader is not None:
                for c in self.clients:  # pending commands sent to a leader now held down are gone
                    if c.pending and c.node != self.leader and not self.link[self.pair(c.node, self.leader)]:
                        c.stalled = True

    def qq_return_held(self) -> None:
        """The quorum leader returns what it delivered to a consumer whose node it now holds down; the deliveries
        themselves stay on their way (they arrive after the heal if the consumer's connection is still open)."""
        if self.qtype != "quorum" or self.leader is None:
            return
        back: list[str] = []
        for c in self.clients:
            if c.held and c.node != self.leader and not self.link[self.pair(c.node, self.leader)]:
                back += [m for m, returned in c.held if not returned]
                c.held = [(m, True) for m, _ in c.held]
        self.returned.update(back)
        self.log[:0] = back

    def reconnect(self, pairs: list[tuple[Pair, int]]) -> None:
        heal = False
        for p, epoch in pairs:
            if self.cuts[p] or self.cut_epoch[p] != epoch or self.link[p]:
                continue
            self.link[p] = True
            a, b = sorted(p)
            if not self.split[p] or not (self.running[a] and self.running[b]):
                continue  # a paused or restarting node merges when it boots
            if self.mode == "pause_minority":
                self.split[p] = False  # one side was paused: nothing to reconcile
            else:
                heal = True
        if heal and self.mode == "autoheal":
            self.heal_partitions()  # before the channels of the losing side resend anything (measured: see above)
        elif heal and math.isfinite(self.cfg.manual_restart):
            self.at(self.now + self.cfg.manual_restart, self.heal_partitions)

    # -- views -----------------------------------------------------------------------------------------
    def view(self, n: str) -> set[str]:
        """The nodes ``n`` counts as its cluster now (not split from it)."""
        return {m for m in self.nodes if m == n or not self.split[self.pair(n, m)]}

    def linked(self, n: str) -> set[str]:
        return {m for m in self.nodes if m == n or self.link[self.pair(n, m)]}

    def partitions(self) -> list[set[str]]:
        left, out = list(self.nodes), []
        while left:
            comp = self.view(left[0]) & set(left)
            out.append(comp)
            left = [n for n in left if n not in comp]
        return out

    def heal_partitions(self) -> None:
        """Autoheal (or the operator under ignore): the winning partition stays, every other node restarts."""
        parts = self.partitions()
        if len(parts) < 2 or not all(self.link[p] for p in self.pairs):
            return
        conns = [sum(1 for c in self.clients if c.connected and c.node in part) for part in parts]
        first = self.nodes[0]
        winner = max(range(len(parts)), key=lambda i: (conns[i], len(parts[i]), first in parts[i]))
        for i, part in enumerate(parts):
            if i != winner:
                for n in sorted(part):
                    if self.running[n]:
                        self.stop(n, "restart")
                        self.at(self.now + self.cfg.boot, self.boot, n)

    # -- nodes -------------------------------------------------------------------------------------------
    def stop(self, n: str, why: str) -> None:
        self.running[n] = False
        self.state_rows.append((self.now, n, "stopped"))
        for c in self.clients:
            if c.connected and c.node == n:
                self.disconnect(c, f"connection lost: node {why}")
        for inst in list(self.instances):
            member = inst.members.pop(n, None)
            if member is None:
                continue
            self.stash[n] = member
            if not inst.members:
                self.instances.remove(inst)
            elif inst.leader == n:
                self.promote(inst)

    def boot(self, n: str) -> None:
        self.booting.discard(n)
        if self.running[n]:
            return
        if self.mode == "pause_minority" and not self.has_majority(n):
            return
        self.running[n] = True
        self.state_rows.append((self.now, n, "running"))
        for m in self.nodes:
            if m != n and self.link[self.pair(n, m)] and self.running[m]:
                self.split[self.pair(n, m)] = False
        stashed = self.stash.pop(n, None)
        mine = self.instance_for(n)
        if mine is not None and self.qtype == "mirrored":
            mine.members[n] = _Member(n, self.now)  # a new, empty, unsynchronised mirror
        elif mine is None and stashed is not None:
            self.instances.append(_Instance(n, {n: stashed}))  # the durable queue, recovered from disk

    def has_majority(self, n: str) -> bool:
        return 2 * len(self.linked(n)) > len(self.nodes)

    def promote(self, inst: _Instance) -> None:
        inst.leader = min(inst.members.values(), key=lambda m: m.joined).node

    def split_instances(self) -> None:
        """A member declared down leaves the membership; a side without the leader promotes its oldest mirror."""
        out: list[_Instance] = []
        for inst in self.instances:
            left = dict(inst.members)
            while left:
                anchor = inst.leader if inst.leader in left else next(iter(left))
                side = self.view(anchor)
                group = {n: m for n, m in left.items() if n in side}
                new = _Instance(anchor, group)
                if anchor != inst.leader:
                    self.promote(new)
                out.append(new)
                left = {n: m for n, m in left.items() if n not in side}
        self.instances = out

    def instance_for(self, n: str) -> _Instance | None:
        """The queue as node ``n`` routes to it: a classic queue's process wherever ``n`` is connected to its node
        (the durable queue record keeps its process id, reachable again after a reconnection); a mirrored
        queue's leader on ``n``'s side of a partition (each side's record names its own leader)."""
        side = self.linked(n) if self.qtype == "classic" else self.view(n)
        return next((i for i in self.instances if i.leader in side and self.running[i.leader]), None)

    # -- quorum queue --------------------------------------------------------------------------------------
    def qq_majority(self, leader: str) -> bool:
        reach = {m for m in self.nodes if self.running[m] and self.passable(leader, m)}
        return self.running[leader] and 2 * len(reach) > len(self.nodes)

    def qq_leader_for(self, n: str) -> str | None:
        if self.leader is not None and self.passable(n, self.leader) and self.qq_majority(self.leader):
            return self.leader
        return None

    def qq_side_majority(self, n: str) -> bool:
        """``n`` runs and is connected (not declared down) to a majority of running members, itself included."""
        return self.running[n] and 2 * len({m for m in self.linked(n) if self.running[m]}) > len(self.nodes)

    def qq_elect(self) -> None:
        """The majority's members elect a leader once they noticed the old one is gone (first by node order)."""
        self.election_at = None
        if self.leader is not None and self.qq_side_majority(self.leader):
            return
        old = self.leader
        self.leader = next((n for n in self.nodes if self.qq_side_majority(n)), self.leader)
        if self.leader != old and self.leader is not None:  # leader_change reaches the channels it can reach
            for c in self.clients:
                if c.stalled and self.passable(c.node, self.leader):
                    c.stalled = False

    def qq_resend(self, c: _Client) -> None:
        """The publishing channel's timer: it resends its pending commands (to the leader it knows)."""
        c.resend_armed = False
        c.stalled = False
        if len(c.pending) >= QQ_SOFT_LIMIT and c.connected:
            c.resend_armed = True
            self.at(self.now + QQ_RESEND_TIMER, self.qq_resend, c)

    # -- clients ----------------------------------------------------------------------------------------------
    def connect(self, c: _Client) -> None:
        if c.connected:
            return
        for n in (c.spec.node, *c.spec.failover):
            if self.running[n]:
                c.node, c.connected = n, True
                self.client_rows.append((self.now, c.spec.name, f"connected {n}"))
                return
        self.at(self.now + c.spec.reconnect_delay, self.connect, c)

    def disconnect(self, c: _Client, reason: str) -> None:
        c.connected = False
        self.client_rows.append((self.now, c.spec.name, reason))
        for pub in c.pending.values():
            if not pub.timed_out:
                self.record(self.now, c.spec.name, c.node, pub.msg_id, "unknown", detail=reason)
        c.pending.clear()
        c.stalled = False
        if c.held:  # the leader returns the closed consumer's deliveries it had not returned yet
            back = [m for m, returned in c.held if not returned]
            self.returned.update(back)
            self.log[:0] = back
            c.held = []
        self.at(self.now + c.spec.reconnect_delay, self.connect, c)

    def stop_at(self, c: _Client) -> float:
        return c.spec.stop if c.spec.stop is not None else self.sc.run.duration

    def tick(self, c: _Client) -> None:
        """Ticks run at ``start + k / rate`` until ``stop``; a tick without a connection publishes nothing."""
        if self.now >= self.stop_at(c):
            return
        self.at(self.now + 1000.0 / c.spec.rate, self.tick, c)
        if not c.connected:
            return
        msg_id = f"{c.spec.name}-{c.index}"
        c.index += 1
        pub = _Pub(msg_id, c.spec.name, c.node, self.now, self.now + c.spec.confirm_timeout)
        c.pending[msg_id] = pub
        self.record(self.now, c.spec.name, c.node, msg_id, "published")
        self.at(pub.deadline, self.timeout, c, pub)
        if self.qtype == "quorum" and len(c.pending) >= QQ_SOFT_LIMIT and not c.resend_armed:
            c.resend_armed = True
            self.at(self.now + QQ_RESEND_TIMER, self.qq_resend, c)
        if self.qtype != "quorum":
            inst = self.instance_for(c.node)
            if inst is not None:
                pub.targets = set(inst.members)
                for m in inst.members.values():
                    self.send(c.node, m.node, _bind(self.append, m, msg_id))

    def timeout(self, c: _Client, pub: _Pub) -> None:
        if c.pending.get(pub.msg_id) is pub and not pub.timed_out:
            pub.timed_out = True
            self.record(self.now, c.spec.name, c.node, pub.msg_id, "unknown", detail="confirm timeout")

    def append(self, m: _Member, msg_id: str) -> None:
        if msg_id not in m.seen:
            m.seen.add(msg_id)
            m.msgs.append(msg_id)
            self.at(self.now + self.cfg.sync_interval, m.synced.add, msg_id)

    def remove(self, m: _Member, msg_id: str) -> None:
        if msg_id in m.msgs:
            m.msgs.remove(msg_id)

    def confirm(self, c: _Client, pub: _Pub, *, ack: bool = True) -> None:
        """``basic.ack`` (or ``basic.nack``) reaches the client ``latency`` from now."""
        del c.pending[pub.msg_id]
        t = self.now + self.lat
        late = pub.timed_out
        if not late and t > pub.deadline:
            pub.timed_out = late = True
            self.record(pub.deadline, c.spec.name, c.node, pub.msg_id, "unknown", detail="confirm timeout")
        self.record(t, c.spec.name, c.node, pub.msg_id, "confirmed" if ack else "nacked", detail="late" if late else "")

    # -- settling: pauses, confirms, deliveries ----------------------------------------------------------------
    def settle(self) -> None:
        if self.mode == "pause_minority":
            for n in self.nodes:
                if self.running[n] and not self.has_majority(n):
                    self.stop(n, "paused")
                elif not self.running[n] and n not in self.booting and self.has_majority(n):
                    self.booting.add(n)
                    self.at(self.now + self.cfg.boot, self.boot, n)
        if self.qtype == "quorum" and self.election_at is None:
            lead = self.leader
            if (lead is None or not self.qq_side_majority(lead)) and any(self.qq_side_majority(n) for n in self.nodes):
                self.election_at = self.now + self.cfg.election
                self.at(self.election_at, self.qq_elect)
        for c in self.clients:
            if c.kind != "publisher" or not c.connected or not c.pending:
                continue
            if self.qtype == "quorum":
                if not c.stalled and self.qq_leader_for(c.node) is not None:
                    for pub in list(c.pending.values()):
                        self.log.append(pub.msg_id)
                        self.confirm(c, pub)
                continue
            inst = self.instance_for(c.node)
            members = inst.members if inst is not None else {}
            for pub in list(c.pending.values()):
                targets = pub.targets & members.keys()
                if pub.targets and not targets:
                    self.confirm(c, pub, ack=False)  # every member it was sent to was lost before taking it
                elif all(pub.msg_id in members[t].synced for t in targets):
                    self.confirm(c, pub)  # all members it was sent to have it on disk; or there was no queue
        self.deliver()

    def deliver(self) -> None:
        consumers = [c for c in self.clients if c.kind == "consumer" and c.connected]
        if self.qtype == "quorum":
            lead = self.leader
            if lead is None or not self.qq_majority(lead):
                return
            for c in consumers:  # held deliveries arrive once the cut ends (measured: even after a detection)
                if c.held and (c.node == lead or self.cuts[self.pair(c.node, lead)] == 0):
                    for msg_id, _returned in c.held:
                        self.record(self.now + self.lat, c.spec.name, c.node, msg_id, "delivered",
                                    redelivered=False)
                        self.record(self.now + self.lat, c.spec.name, c.node, msg_id, "acked")
                        self.delivered.add(msg_id)
                    c.held = []
            # the leader serves every consumer it does not hold down, also across a cut not yet detected
            ready = [c for c in consumers if c.node == lead or self.link[self.pair(c.node, lead)]]
            while ready and self.log:
                msg_id = self.log.pop(0)
                c = ready[self.rr % len(ready)]
                if self.passable(c.node, lead):
                    self.hand(ready, msg_id, redelivered=msg_id in self.returned)
                else:
                    self.rr += 1
                    c.held.append((msg_id, False))
            return
        for inst in self.instances:
            ready = [c for c in consumers if self.instance_for(c.node) is inst and self.passable(c.node, inst.leader)]
            head = inst.members[inst.leader]
            while ready and head.msgs:
                msg_id = head.msgs[0]
                self.hand(ready, msg_id)
                for m in inst.members.values():
                    self.send(inst.leader, m.node, _bind(self.remove, m, msg_id))

    def hand(self, ready: list[_Client], msg_id: str, *, redelivered: bool | None = None) -> None:
        c = ready[self.rr % len(ready)]
        self.rr += 1
        t = self.now + self.lat
        again = msg_id in self.delivered if redelivered is None else redelivered
        self.record(t, c.spec.name, c.node, msg_id, "delivered", redelivered=again)
        self.record(t, c.spec.name, c.node, msg_id, "acked")
        self.delivered.add(msg_id)

    def heal_everything(self) -> None:
        """Every partition heals at the end of the publishing (as on the real cluster)."""
        self.fault_end(-1, [p for p in self.pairs if self.cuts[p]])


def _bind(fn: Callable[[_Member, str], None], member: _Member, msg_id: str) -> Callable[[], None]:
    return lambda: fn(member, msg_id)


def _cut_pairs(nodes: tuple[str, ...], fault: Partition) -> list[Pair]:
    groups = [set(g) for g in fault.groups]
    rest = set(nodes) - set().union(*groups)
    if rest:
        groups.append(rest)
    out = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            ga = next(k for k, g in enumerate(groups) if a in g)
            gb = next(k for k, g in enumerate(groups) if b in g)
            if ga != gb and (not fault.one_way or 0 in (ga, gb)):
                out.append(frozenset((a, b)))
    return out


def run_cluster_model(scenario: ClusterScenario | Any) -> ClusterModelRun:
    """Run the model on a scenario (a :class:`ClusterScenario`, a mapping or a TOML path)."""
    sc = scenario if isinstance(scenario, ClusterScenario) else load_cluster_scenario(scenario)
    duration = sc.run.duration
    schedule = partition_schedule(sc.faults, sc.nodes, until=duration, rng=Streams(sc.run.seed)["faults"])
    model = _Model(sc, schedule)
    for i, fault in enumerate(schedule):
        assert isinstance(fault, Partition)  # partition_schedule resolves every fault to one
        if fault.start >= duration:
            continue
        model.at(fault.start, model.fault_start, i, fault, prio=1)
        end = min(fault.end, duration)
        if end < duration:
            model.at(end, model.fault_end, i, _cut_pairs(sc.nodes, fault), prio=0)
    model.at(duration, model.heal_everything, prio=0)
    for c in model.clients:
        model.at(c.spec.start, model.connect, c, prio=2)
        if c.kind == "publisher":
            model.at(c.spec.start, model.tick, c, prio=3)
    model.run(duration + sc.run.drain)
    history = pd.DataFrame(model.rows, columns=HISTORY_COLUMNS).sort_values("time", kind="stable")
    meta = {"queue_type": sc.broker.queue.type, "declare_on": sc.broker.queue.node,
            "partition_handling": sc.broker.cluster.partition_handling,
            "net_ticktime": sc.broker.cluster.net_ticktime, "messages_left": _messages_left(model)}
    return ClusterModelRun(history.reset_index(drop=True),
                           pd.DataFrame(model.fault_rows, columns=["time", "fault", "event", "detail"]),
                           pd.DataFrame(model.client_rows, columns=["time", "client", "event"]),
                           sc.broker.queue.name, meta,
                           pd.DataFrame(model.state_rows, columns=["time", "node", "state"]), schedule)


def _messages_left(model: _Model) -> int:
    if model.qtype == "quorum":
        return len(model.log)
    return sum(len(i.members[i.leader].msgs) for i in model.instances)


def partition_sides(nodes: tuple[str, ...] | list[str], fault: Partition) -> dict[str, str]:
    """Node -> ``majority`` / ``minority`` for a two-sided partition (``side1``, ``side2``... otherwise)."""
    groups = [list(g) for g in fault.groups]
    rest = [n for n in nodes if not any(n in g for g in groups)]
    if rest:
        groups.append(rest)
    if len(groups) == 2 and len(groups[0]) != len(groups[1]):
        big = 0 if len(groups[0]) > len(groups[1]) else 1
        return {n: ("majority" if i == big else "minority") for i, g in enumerate(groups) for n in g}
    return {n: f"side{i + 1}" for i, g in enumerate(groups) for n in g}


def model_report(run: ClusterModelRun, nodes: tuple[str, ...] | list[str], *, bin: float = 250.0) -> PartitionReport:
    """:func:`~sim.checkers.cluster_history.partition_report` of a run with (at least) one partition: its first."""
    parts = [f for f in run.schedule if isinstance(f, Partition)]
    if not parts:
        raise ValueError("the run had no partition: a partition report needs one ([faults.schedule])")
    first = parts[0]
    end = min(first.end, float(run.faults.loc[run.faults["event"] == "heal_all", "time"].max()))
    return partition_report(run.history, start=first.start, end=end, sides=partition_sides(nodes, first), bin=bin)
