"""Lab 2: leader-based replication with a view change (a Raft-style log).

The student writes ``LeaderNode`` (a :class:`LeaderBase`): five of them elect a
leader per term and replicate a log of client operations. Clients send
``ClientRequest`` (read or write) to the node next to them and wait
:data:`TIMEOUT` ms for a ``ClientReply``; a node that does not lead passes the
request on to the leader it knows, and the leader answers the client once the
operation is committed and applied. Reads go through the log like writes.

The base class records what the checkers need, through two hooks the student
must call: ``self.become_leader(term)`` when the node wins an election, and
``self.apply(index, term, request)`` for each committed entry, in index order
(it runs the operation on a small key-value state machine the base keeps, and
returns what a read returns). The state machine is volatile, like the commit
index: after a restart it is empty and the node applies its log from index 1
again. Graded:

* ``election-safety``: no two nodes become leader in the same term;
* ``state-machine-safety``: no two nodes (nor one node before and after a
  restart) apply different operations at the same log index;
* ``no-lost-writes``: every write a client saw acknowledged is, at the end of
  the run (faults healed, then :data:`SETTLE` ms without clients), applied by a
  majority, after every write acknowledged before it was sent; and the
  history of reads and writes is linearizable;
* ``leader-failover``: from :data:`RECOVERY_MS` after the leader is isolated
  or crashes, at least :data:`MIN_AVAILABILITY` of the operations sent to the
  other nodes succeed.

The safety tests run under partitions (random minorities, and the leader cut
off), crashes (random nodes, the leader, and a power failure of the whole
cluster; volatile state lost, ``self.disk`` kept), message loss and
duplication. Raft (Ongaro and Ousterhout 2014, Figure 2), without snapshots or
membership changes, passes all four.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..checkers import lost_writes
from ..checkers.state_machine_safety import check_state_machine_safety as state_machine_safety
from ..config import fld
from ..kernel.events import Channel
from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..protocol import ProtocolConfig, register_protocol
from .core import Check, Lab, LabNode, LabTest, lab_rng, random_faults, solution_classes
from .register import check_linearizable_history

__all__ = ["LeaderBase", "LeaderLabConfig", "LeaderRecords", "LAB", "ClientRequest", "ClientReply",
           "check_election_safety", "check_state_machine_safety", "check_no_lost_writes",
           "check_leader_failover"]

NODES = ("n1", "n2", "n3", "n4", "n5")
DURATION = 4000.0
"""Clients send operations for this long (ms)."""
FAULTS_END = 2800.0
"""Every fault of the safety tests heals by then: the last stretch of the run is fault-free."""
SETTLE = 1000.0
"""After the clients stop (and their last operations time out), the run goes on this long."""
TIMEOUT = 500.0
RATE = 10.0
"""Operations per second each of the five clients sends."""
RECOVERY_MS = 1000.0
MIN_AVAILABILITY = 0.9
LEADER_CRASHES = 3
LOSS = 0.05
DUPLICATE = 0.2

LEADERS = "leaders"
APPLIED = "applied"
LEADER_COLUMNS = ("time", "node", "term")
APPLIED_COLUMNS = ("time", "node", "life", "index", "term", "op_id", "op", "key", "value")


class LeaderRecords:
    """The observer's record of one run: who became leader in which term, and what each node applied."""

    def __init__(self, world: Host) -> None:
        self.leaders: Channel = world.events.channel(LEADERS, LEADER_COLUMNS)
        self.applied: Channel = world.events.channel(APPLIED, APPLIED_COLUMNS)


class LeaderBase(LabNode):
    """What a lab-2 node starts with.

    ``self.nodes``: every node's name, this one included, in a fixed order;
    ``self.peers``: the others; ``self.majority``: how many nodes make a
    majority; ``self.rng``: this node's random generator (numpy), e.g.
    ``self.rng.uniform(150, 300)`` for an election timeout.
    ``self.reply(client, op_id, ok, value)`` answers a client. Call
    ``self.become_leader(term)`` when this node wins the election of ``term``,
    and ``self.apply(index, term, request)`` for every committed entry, in order.
    Keep what must survive a crash in ``self.disk`` (a dict); set up everything
    else in ``boot()``, which runs at start and after each recovery. A crash
    loses every other attribute the solution set, also those set in ``__init__``.
    """

    def __init__(self, world: Host, name: str, config: LeaderLabConfig, records: LeaderRecords) -> None:
        super().__init__(world, name)
        self.config = config
        self._lab_records = records
        self.nodes: tuple[str, ...] = tuple(world.scenario.nodes)
        self.peers: tuple[str, ...] = tuple(n for n in self.nodes if n != name)
        self.majority: int = len(self.nodes) // 2 + 1
        self.rng: np.random.Generator = world.streams[f"lab_leader/{name}"]
        self._lab_led: tuple[int, int] | None = None   # (epoch, term) of the last become_leader call
        self._lab_life = -1                            # the life (crash count) the state machine belongs to
        self._lab_kv: dict[Any, Any] = {}
        self._lab_results: dict[int, Any] = {}         # op_id -> result of an operation already applied
        self._lab_applied = 0
        self.seal()

    def reply(self, client: str, op_id: int, ok: bool = True, value: Any = None, error: str | None = None) -> None:
        """Answer the client's operation ``op_id`` (``value``: what a read returns)."""
        self.send(client, ClientReply(op_id, ok, value, error))

    def become_leader(self, term: int) -> None:
        """Say that this node has just won the election of ``term`` (recorded for the checkers and the nemesis)."""
        self._lab_led = (self.epoch, int(term))
        self._lab_records.leaders.record(self.now, self.name, int(term))

    def leading_term(self) -> int | None:
        """The term of this node's last :meth:`become_leader` since it last restarted (None: none)."""
        if self._lab_led is None or self._lab_led[0] != self.epoch or not self.alive:
            return None
        return self._lab_led[1]

    def apply(self, index: int, term: int, request: ClientRequest | None) -> Any:
        """Apply the committed entry at ``index`` (of ``term``) and return its result.

        ``request`` is the client's ``ClientRequest`` (``None`` for a no-op). A
        write sets its key; a read returns the key's value (``None`` if never
        written). An operation id applied before (a duplicated request that got
        into the log twice) changes nothing and returns the first result. Entries
        must be applied once each, in index order from 1; the state machine is
        volatile, so after a restart it starts again from index 1.
        """
        if self._lab_life != self.crashes:             # first apply since (re)start: empty state machine
            self._lab_life, self._lab_kv, self._lab_results, self._lab_applied = self.crashes, {}, {}, 0
        if request is not None and not isinstance(request, ClientRequest):
            raise TypeError(f"apply(index, term, request): request must be the client's ClientRequest "
                            f"(or None for a no-op), got {request!r}")
        if index != self._lab_applied + 1:
            since = "since it started" if self.crashes == 0 else "since its last restart"
            raise ValueError(f"{self.name}: apply(index={index}) but the last index applied {since} is "
                             f"{self._lab_applied}: apply committed entries once each, in index order "
                             f"(from index 1 after a restart: the state machine is volatile)")
        self._lab_applied = index
        if request is None:
            self._lab_records.applied.record(self.now, self.name, self.crashes, index, int(term), 0, "noop", None,
                                             None)
            return None
        self._lab_records.applied.record(self.now, self.name, self.crashes, index, int(term), request.op_id,
                                    request.op, request.key, request.value)
        if request.op_id not in self._lab_results:
            if request.op == "write":
                self._lab_kv[request.key] = request.value
                self._lab_results[request.op_id] = None
            else:
                self._lab_results[request.op_id] = self._lab_kv.get(request.key)
        return self._lab_results[request.op_id]

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        raise NotImplementedError("LeaderNode must define handle_ClientRequest(msg, src)")


@register_protocol
@dataclass(frozen=True, kw_only=True)
class LeaderLabConfig(ProtocolConfig[LeaderRecords]):
    """Lab 2's protocol: the solution's ``LeaderNode`` on every cluster node."""

    tag: ClassVar[str] = "lab_leader"
    solution: str = fld(doc="the solution's .py file (sim.labs.grade passes in-process classes by key)",
                        missing="name the solution's .py file")

    def new_state(self, world: Host) -> LeaderRecords:
        return LeaderRecords(world)

    def build_nodes(self, world: Host, state: LeaderRecords) -> dict[str, Node]:
        cls = solution_classes(LAB, self.solution)["LeaderNode"]
        return {name: cls(world, name, self, state) for name in world.scenario.nodes}

    def leader(self, world: World) -> str | None:
        """The live node that called ``become_leader`` for the highest term since it last restarted."""
        best: tuple[int, str] | None = None
        for name in world.scenario.nodes:
            node = world.nodes[name]
            term = node.leading_term() if isinstance(node, LeaderBase) else None
            if term is not None and (best is None or term > best[0]):
                best = (term, name)
        return None if best is None else best[1]

    def summary(self, world: World, state: LeaderRecords) -> dict[str, Any]:
        terms = {row[2] for row in state.leaders}
        return {"protocol.leaders_elected": len(state.leaders), "protocol.terms_with_leader": len(terms),
                "protocol.applied": len(state.applied)}


# -- scenarios ----------------------------------------------------------------------------------
def _scenario(seed: int, solution: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": {"dist": "exponential", "mean": 3.0}},
        "workload": {"clients": 5, "rate": RATE, "keys": 2, "read_fraction": 0.5, "timeout": TIMEOUT},
        "faults": {"schedule": faults},
        "protocol": {"name": "lab_leader", "solution": solution},
        "run": {"duration": DURATION, "settle": SETTLE, "seed": seed},
    }


def _leader_fault(rng: np.random.Generator, kind: str, start: float, end: float,
                  length: tuple[float, float]) -> dict[str, Any]:
    span = float(rng.uniform(*length))
    t0 = float(rng.uniform(start, end - span))
    return {"kind": kind, "start": round(t0, 1), "end": round(t0 + span, 1), "node": "@leader"}


def _power_failure(rng: np.random.Generator, start: float, end: float) -> list[dict[str, Any]]:
    """Every node crashes at the same instant and restarts together 50-500 ms later (a rack loses power)."""
    span = float(rng.uniform(50.0, 500.0))
    t0 = round(float(rng.uniform(start, end - span)), 1)
    return [{"kind": "crash", "start": t0, "end": round(t0 + span, 1), "node": node} for node in NODES]


def _safety_scenario(test: str) -> Any:
    """The nemesis of the safety tests, all healed by FAULTS_END: random minorities cut off and random
    nodes crashed, the leader isolated once and crashed LEADER_CRASHES times, one power failure of the
    whole cluster, a window of 5% loss, and 20% duplication throughout."""

    def scenario(seed: int, solution: str) -> dict[str, Any]:
        rng = lab_rng("leader", test, seed)
        start, end = 300.0, FAULTS_END
        faults = random_faults(rng, NODES, start=start, end=end, partitions=2, crashes=3, loss=LOSS,
                               length=(200.0, 1000.0))
        faults.append(_leader_fault(rng, "isolate", start, end, (200.0, 1000.0)))
        faults += [_leader_fault(rng, "crash", start, end, (20.0, 300.0)) for _ in range(LEADER_CRASHES)]
        faults += _power_failure(rng, start, end)
        faults.append({"kind": "duplicate", "start": start, "end": end, "probability": DUPLICATE})
        faults.sort(key=lambda f: (f["start"], f["kind"]))
        return _scenario(seed, solution, faults)

    return scenario


def _failover_scenario(seed: int, solution: str) -> dict[str, Any]:
    """The leader is cut off (odd seeds) or crashes (even seeds) for 2.5-3 s; nothing else goes wrong."""
    rng = lab_rng("leader", "leader-failover", seed)
    fault = _leader_fault(rng, "isolate" if seed % 2 else "crash", 500.0, DURATION, (2500.0, 3000.0))
    return _scenario(seed, solution, [fault])


# -- checks -------------------------------------------------------------------------------------
ELECTION_WINDOW = 250.0
"""How far before a violation a failure's diagram starts: about one election timeout."""


def check_election_safety(result: Any) -> Check:
    """At most one node becomes leader in each term."""
    leaders = result.tables[LEADERS]
    if len(leaders) == 0:
        acked = result.history[(result.history["outcome"] == "ok")]
        if len(acked):
            return Check(False, f"{len(acked)} operations succeeded but no node called self.become_leader(term)")
        return Check(True, "no leader was elected (and no operation succeeded)")
    per_term = leaders.groupby("term", sort=True)["node"].nunique()
    bad = per_term[per_term > 1]
    if len(bad) == 0:
        return Check(True, f"{len(per_term)} terms with a leader, one leader each")
    term = int(bad.index[0])
    rows = leaders[leaders["term"] == term].drop_duplicates("node").reset_index(drop=True)
    names = " and ".join(f"{r.node} at {r.time:.1f} ms" for r in rows.itertuples())
    second = float(rows["time"].iloc[1])                # draw the election that made the second leader
    return Check(False, f"two leaders in term {term}: {names}", evidence=rows,
                 window=(max(0.0, second - ELECTION_WINDOW), second + 20.0))


def _applied(result: Any) -> pd.DataFrame:
    return result.tables[APPLIED]


def check_state_machine_safety(result: Any) -> Check:
    """No two applies of the same index (by any nodes, in any of their lives) carry different operations."""
    applied = _applied(result)
    if len(applied) == 0:
        acked = result.history[(result.history["outcome"] == "ok")]
        if len(acked):
            return Check(False, f"{len(acked)} operations succeeded but no node called self.apply(...)")
        return Check(True, "nothing was applied (and no operation succeeded)")
    verdict = state_machine_safety(applied)
    if verdict.ok:
        return Check(True, f"{int(applied['index'].max())} log indices, one operation each")
    index = int(verdict.violations["index"].min())
    rows = applied[applied["index"] == index].drop_duplicates(["node", "life", "term", "op_id"])
    first = rows.drop_duplicates(["term", "op_id"]).reset_index(drop=True)
    ops = tuple(int(op) for op in first["op_id"] if op)
    what = "; ".join(f"{r.node} applied op {r.op_id} ({r.op} of term {r.term}) at {r.time:.1f} ms"
                     for r in first.itertuples())
    second = float(first["time"].iloc[1])               # draw what led to the second operation being applied
    return Check(False, f"two operations applied at index {index}: {what}", evidence=rows.reset_index(drop=True),
                 window=(max(0.0, second - ELECTION_WINDOW), second + 20.0), ops=ops)


def check_no_lost_writes(result: Any) -> Check:
    """Acknowledged writes are applied by a majority at the end, in acknowledgement order; reads linearizable."""
    h = result.history
    acked = h[(h["outcome"] == "ok") & (h["op"] == "write")]
    applied = _applied(result)
    last_life = applied.groupby("node")["life"].transform("max") if len(applied) else applied["life"]
    final = applied[applied["life"] == last_life]               # each node's applies since its last restart
    holders = final.groupby("op_id")["node"].nunique()
    majority = len(result.scenario.nodes) // 2 + 1
    missing = acked[acked["op_id"].map(holders).fillna(0) < majority]
    if len(missing):
        row = missing.iloc[0]
        n = int(holders.get(row["op_id"], 0))
        cols = ["op_id", "client", "node", "op", "key", "value", "invoke", "complete", "outcome"]
        return Check(False, f"{len(missing)} acknowledged writes are not applied by a majority at the end; "
                            f"the first, op {int(row['op_id'])} (write {row['value']} to key {row['key']}, "
                            f"acknowledged at {row['complete']:.1f} ms), by {n} of {len(result.scenario.nodes)}",
                     evidence=missing[cols].head(10).reset_index(drop=True),
                     window=(max(0.0, float(row["invoke"]) - 30.0), float(row["complete"]) + 300.0),
                     ops=(int(row["op_id"]),))
    writes = applied[applied["op"] == "write"]          # a write takes effect where it is first applied
    order: dict[Any, int] = {v: int(i) for v, i in writes.groupby("value")["index"].min().items()}
    lost = lost_writes(h, order=order)
    if lost.count:
        row = lost.lost.iloc[0]
        beaten = int(row["beaten_by"])
        return Check(False, f"write {row['value']} to key {row['key']} was applied before write {beaten}, which was "
                            f"acknowledged before it was sent (log index {order[row['value']]} < {order[beaten]})",
                     evidence=lost.lost.head(10).reset_index(drop=True),
                     window=(max(0.0, float(row["invoke"]) - 100.0), float(row["complete"]) + 30.0),
                     ops=(int(row["op_id"]),))
    verdict = check_linearizable_history(result)
    if not verdict.ok:
        return verdict
    return Check(True, f"{len(acked)} acknowledged writes kept, in order; {verdict.message}")


def check_leader_failover(result: Any) -> Check:
    """Once the old leader has been cut off for RECOVERY_MS, operations at the other nodes succeed."""
    h = result.history
    if len(result.faults) == 0:
        return Check(True, "no fault in this schedule")
    fault = result.faults.iloc[0]
    start, end = float(fault["start"]), float(fault["end"])
    leaders = result.tables[LEADERS]
    if not (leaders["time"] < start).any():
        later = (f"the first call came at {float(leaders['time'].min()):.1f} ms" if len(leaders)
                 else "no node called it in the whole run")
        return Check(False, f"no node had called self.become_leader(term) by {start:g} ms, when the nemesis "
                            f"went to cut the leader off", evidence=later, window=(0.0, min(start, 500.0)))
    during = h[(h["invoke"] >= start + RECOVERY_MS) & (h["invoke"] < end - TIMEOUT) & h["node_up"]
               & (h["side"] != "minority")]
    if len(during) == 0:
        return Check(True, "no operation at the other nodes while the leader was cut off")
    ok = float((during["outcome"] == "ok").mean())
    if ok >= MIN_AVAILABILITY:
        return Check(True, f"{ok:.0%} of the operations at the other nodes succeeded while the old leader was "
                           f"cut off")
    failed = during[during["outcome"] != "ok"]
    first = float(failed["invoke"].min())
    cols = ["op_id", "client", "node", "op", "key", "invoke", "complete", "outcome", "error"]
    return Check(False, f"only {ok:.0%} of the {len(during)} operations at the other nodes succeeded from "
                        f"{RECOVERY_MS:g} ms after the leader was cut off ({start:g} ms) to {end:g} ms "
                        f"(needs at least {MIN_AVAILABILITY:.0%})",
                 evidence=failed[cols].head(10).reset_index(drop=True), window=(start - 10.0, first + 150.0),
                 ops=tuple(int(op) for op in failed["op_id"].head(3)))


LAB = Lab(
    id="leader",
    number=2,
    title="Leader-based replication with a view change (Raft-style log)",
    protocol="lab_leader",
    classes={"LeaderNode": LeaderBase},
    skeleton="lab2_leader.py",
    tests=(
        LabTest("election-safety", "at most one node becomes leader in each term",
                _safety_scenario("election-safety"), check_election_safety),
        LabTest("state-machine-safety", "every node applies the same operation at each log index",
                _safety_scenario("state-machine-safety"), check_state_machine_safety),
        LabTest("no-lost-writes",
                "every acknowledged write is applied by a majority at the end, in acknowledgement order, "
                "and the history is linearizable",
                _safety_scenario("no-lost-writes"), check_no_lost_writes),
        LabTest("leader-failover",
                f"from {RECOVERY_MS / 1000:g} s after the leader is cut off or crashes, at least "
                f"{MIN_AVAILABILITY:.0%} of the operations at the other nodes succeed",
                _failover_scenario, check_leader_failover),
    ),
)
