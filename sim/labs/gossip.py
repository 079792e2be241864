"""Lab 6: an eventually consistent key-value store with anti-entropy and version vectors.

The student writes ``GossipNode`` (a :class:`GossipBase`): five replicas
``n1``..``n5`` of a small key-value store, each serving its clients alone
(available on every side of a partition) and repairing the others by
periodic anti-entropy. The API is Dynamo's: ``Get(key)`` returns every
sibling's value and an opaque causal *context*; ``Put(key, value, context)``
carries the context of the read it is based on (``None``: a blind write), so
it replaces exactly the values that read returned and nothing else.

The lab provides the clients (:class:`GossipClient`, one next to each node),
which record the ground truth the checkers use: which values each write's
client had read before writing. Graded:

* ``converges``: once the last fault healed and the last write was made, every
  replica holds the same state for every key within ``CONVERGE_MS``
  (``CONVERGE_ROUNDS`` anti-entropy rounds) and keeps it; reads from then on
  return the same siblings everywhere, and ``replica_state()`` says what reads return;
* ``no-lost-writes``: at the end, every acknowledged write is at every replica,
  unless a write whose client had read it replaced it (and that one is there,
  or was replaced in turn the same way): concurrent writes survive as siblings;
* ``no-resurrection``: a value a client read and then overwrote does not come
  back: not in a later read at a node that had shown the overwrite, not at the end
  once the overwrite took effect; and no replica returns a value nobody wrote;
* ``available``: every operation gets its answer within the client timeout, on
  both sides of every partition.

The first three run under partitions, crashes (disks survive), message loss and
duplication and a skewed clock; ``available`` under partitions and duplication.
Dotted version vectors pass all four: a sibling is (value, dot, context), the
dot a fresh (node, counter) from a durable counter, and a sibling is dropped
when another sibling's context covers its dot.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from ..checkers.convergence import convergence_summary
from ..checkers.siblings import audit_siblings, read_resurrections
from ..config import Duration, fld, positive
from ..kernel.node import Endpoint, Host, Node
from ..kernel.world import World
from ..protocol import ProtocolConfig, register_protocol
from .core import Check, Lab, LabNode, LabTest, lab_rng, random_faults, solution_classes

__all__ = ["GossipBase", "GossipClient", "GossipLabConfig", "GossipLabState", "Get", "GetReply", "Put", "PutReply",
           "LAB", "check_converges", "check_no_lost_writes", "check_no_resurrection", "check_available"]

NODES = ("n1", "n2", "n3", "n4", "n5")
KEYS = 3
RATE = 10.0                 # operations per second per client
TIMEOUT = 300.0             # the client's timeout (ms)
RETRY = 100.0               # the client resends an unanswered request this often (ms)
GOSSIP_MS = 100.0           # anti-entropy interval the statement asks for
FANOUT = 2                  # peers per anti-entropy round
CONVERGE_ROUNDS = 10
CONVERGE_MS = CONVERGE_ROUNDS * GOSSIP_MS
WRITE_UNTIL = 3000.0        # no write is issued from here on; every fault has healed by then
FINAL_READS = WRITE_UNTIL + CONVERGE_MS + 50.0
DURATION = FINAL_READS + 150.0
SAMPLE_MS = 10.0            # how often capsim samples the replicas' states


# -- messages between clients and nodes ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Get:
    """Client -> node: read ``key``."""

    op_id: int
    key: int


@dataclass(frozen=True, slots=True)
class GetReply:
    """Node -> client: every sibling's value (sorted), and the causal context to pass to a Put."""

    op_id: int
    values: tuple[int, ...]
    context: Any


@dataclass(frozen=True, slots=True)
class Put:
    """Client -> node: write ``value`` to ``key``, replacing what the read whose ``context``
    this is returned (``context=None``: a blind write, replacing nothing)."""

    op_id: int
    key: int
    value: int
    context: Any


@dataclass(frozen=True, slots=True)
class PutReply:
    """Node -> client: the write is accepted."""

    op_id: int


# -- what the student's node starts with ----------------------------------------------------
class GossipBase(LabNode):
    """What a lab-6 node starts with.

    ``self.nodes``: every replica, this one included, in a fixed order;
    ``self.peers``: the others; ``self.gossip_interval`` (ms) and ``self.fanout``:
    run anti-entropy at least that often with that many peers;
    ``self.pick_peers()``: ``fanout`` distinct random peers; ``self.rng``: this
    node's random stream. Answer clients with ``self.reply_get`` and
    ``self.reply_put``. Keep what must survive a crash in ``self.disk``; set up
    everything else (timers too) in ``boot()``, which runs at start and after
    each recovery. A crash loses every other attribute the solution set, also
    those set in ``__init__``.
    """

    def __init__(self, world: Host, name: str, config: GossipLabConfig) -> None:
        super().__init__(world, name)
        self.config = config
        self.nodes: tuple[str, ...] = tuple(world.scenario.nodes)
        self.peers: tuple[str, ...] = tuple(n for n in self.nodes if n != name)
        self.gossip_interval: float = GOSSIP_MS
        self.fanout: int = min(FANOUT, len(self.peers))
        self.rng = world.streams[f"lab-gossip/{name}"]
        self.seal()

    def pick_peers(self) -> list[str]:
        """``self.fanout`` distinct peers drawn at random (from this node's stream)."""
        picks = self.rng.choice(len(self.peers), size=self.fanout, replace=False)
        return [self.peers[int(i)] for i in sorted(picks.tolist())]

    def reply_get(self, client: str, op_id: int, values: Any, context: Any) -> None:
        """Answer a Get: ``values`` every sibling's value (ints), ``context`` what a Put based on
        this read passes back (copied, so later changes to your own objects do not reach it)."""
        vals = tuple(values)
        bad = [v for v in vals if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise TypeError(f"reply_get: values must be the values clients wrote (ints), got {bad[0]!r} in {values!r}")
        self.send(client, GetReply(op_id, tuple(sorted(set(vals))), copy.deepcopy(context)))

    def reply_put(self, client: str, op_id: int) -> None:
        """Acknowledge a Put: the write is accepted and will not be lost."""
        self.send(client, PutReply(op_id))

    def handle_Get(self, msg: Get, src: str) -> None:
        raise NotImplementedError("GossipNode must define handle_Get(msg, src)")

    def handle_Put(self, msg: Put, src: str) -> None:
        raise NotImplementedError("GossipNode must define handle_Put(msg, src)")

    def replica_state(self) -> dict[Any, Any] | None:
        raise NotImplementedError("GossipNode must define replica_state(): {key: frozenset of sibling values}")


# -- the lab's clients ------------------------------------------------------------------------
class GossipClient(Endpoint):
    """A client next to one node: reads, read-modify-writes and blind writes at Poisson times.

    Each operation draws a key and a kind: a read (``Get``); an update, a ``Get``
    followed at once by a ``Put`` with the context it returned; or a blind
    ``Put`` (context ``None``). An unanswered request is sent again, with the same
    op id, every ``retry`` ms until the ``timeout`` (as client libraries do: a node
    sees the same ``Put`` again when its answer was lost). Every operation goes in
    the run's history (reads as the sorted tuple of values returned, ``None`` for
    nothing) and, per write, which values its client had read: the ground truth of
    causality. From ``write_until`` on the client only reads; at ``final_reads`` it
    reads every key once.
    """

    world: World

    def __init__(self, world: World, name: str, home: str, cfg: GossipLabConfig, state: GossipLabState) -> None:
        super().__init__(world, name, home)
        self.cfg = cfg
        self.state = state
        self.rng = world.streams[f"lab-gossip-client/{name}"]
        self.stop = world.scenario.run.duration
        self.pending: dict[int, tuple[int, str, Get | Put]] = {}  # op_id -> (history row, kind, request)

    def start(self) -> None:
        self._schedule(0.0)
        if self.cfg.final_reads < self.stop:
            self.set_timer(self.cfg.final_reads, self._final_reads)

    def _schedule(self, after: float) -> None:
        t = after + float(self.rng.exponential(1000.0 / self.cfg.rate))
        if t < self.stop:
            self.set_timer(t - self.now, self._arrive)

    def _arrive(self) -> None:
        self._schedule(self.now)
        u, key = float(self.rng.random()), int(self.rng.integers(self.cfg.keys))
        cfg = self.cfg
        if self.now >= cfg.write_until or u < cfg.read_fraction:
            self._get(key, update=False)
        elif u < cfg.read_fraction + cfg.blind_fraction:
            self._put(key, None, None, ())
        else:
            self._get(key, update=True)

    def _final_reads(self) -> None:
        for key in range(self.cfg.keys):
            self._get(key, update=False)

    def _invoke(self, op: str, key: int, value: Any) -> tuple[int, int]:
        world = self.world
        op_id = world.next_op_id()
        row = world.history.invoke(op_id, self.name, op, key, value, self.now, self.home,
                                   world.network.side[self.name], world.nodes[self.home].alive)
        self.set_timer(self.cfg.timeout, self._timeout, op_id)
        return op_id, row

    def _get(self, key: int, update: bool) -> None:
        op_id, row = self._invoke("read", key, None)
        self._request(op_id, row, "update" if update else "read", Get(op_id, key))

    def _put(self, key: int, context: Any, read_op: int | None, seen: tuple[int, ...]) -> None:
        value = self.world.next_value()
        op_id, row = self._invoke("write", key, value)
        self.state.puts.record(self.now, op_id, self.name, self.home, key, value, read_op, seen)
        self._request(op_id, row, "write", Put(op_id, key, value, context))

    def _request(self, op_id: int, row: int, kind: str, msg: Get | Put) -> None:
        self.pending[op_id] = (row, kind, msg)
        self._send(op_id)

    def _send(self, op_id: int) -> None:
        entry = self.pending.get(op_id)
        if entry is not None:
            self.send(self.home, entry[2])
            self.set_timer(self.cfg.retry, self._send, op_id)

    def handle_GetReply(self, msg: GetReply, src: str) -> None:
        entry = self.pending.pop(msg.op_id, None)
        if entry is None:  # late or duplicated
            return
        row, kind, request = entry
        self._finish(row, "ok", msg.values or None)
        if kind == "update" and self.now < self.cfg.write_until:
            self._put(request.key, msg.context, msg.op_id, msg.values)

    def handle_PutReply(self, msg: PutReply, src: str) -> None:
        entry = self.pending.pop(msg.op_id, None)
        if entry is not None:
            self._finish(entry[0], "ok", None)

    def _timeout(self, op_id: int) -> None:
        entry = self.pending.pop(op_id, None)
        if entry is not None:
            self._finish(entry[0], "info", None, "timeout")

    def _finish(self, row: int, outcome: str, value: Any, error: str | None = None) -> None:
        self.world.history.complete(row, self.now, outcome, value, error)
        self.world.op_finished()


class GossipLabState:
    """Per-run record: every write with the values its client had read, and each replica's final state."""

    PUTS = ("time", "op_id", "client", "node", "key", "value", "read_op", "seen")
    FINAL = ("node", "key", "values")

    def __init__(self, world: Host) -> None:
        self.puts = world.events.channel("lab_gossip_puts", self.PUTS, {"read_op": "Int64"})
        self.final = world.events.channel("lab_gossip_final", self.FINAL)


@register_protocol
@dataclass(frozen=True, kw_only=True)
class GossipLabConfig(ProtocolConfig[GossipLabState]):
    """Lab 6's protocol: the solution's ``GossipNode`` on every cluster node and one lab client
    (:class:`GossipClient`) next to each; the scenario's own workload has no clients."""

    tag: ClassVar[str] = "lab_gossip"
    solution: str = fld(doc="the solution's .py file (sim.labs.grade passes in-process classes by key)",
                        missing="name the solution's .py file")
    rate: float = fld(RATE, check=positive, doc="operations per second per client")
    keys: int = fld(KEYS, check=positive, doc="keys 0..keys-1, chosen uniformly")
    read_fraction: float = fld(0.3, doc="share of operations that only read")
    blind_fraction: float = fld(0.2, doc="share that write without reading first; the rest read, then write")
    timeout: Duration = fld(TIMEOUT, check=positive, doc="the clients' timeout")
    retry: Duration = fld(RETRY, check=positive, doc="a client sends an unanswered request again this often")
    write_until: Duration = fld(WRITE_UNTIL, doc="clients only read from then on")
    final_reads: Duration = fld(FINAL_READS, doc="when each client reads every key once more")

    def check_scenario(self, scenario: Any, path: str) -> None:
        from ..errors import ScenarioError

        for name in ("read_fraction", "blind_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ScenarioError(f"{path}.{name}", f"must be between 0 and 1, got {getattr(self, name)}")
        if self.read_fraction + self.blind_fraction > 1.0:
            raise ScenarioError(f"{path}.blind_fraction", f"read_fraction + blind_fraction must be <= 1, got "
                                                          f"{self.read_fraction + self.blind_fraction}")
        if not self.write_until < self.final_reads < scenario.run.duration:
            raise ScenarioError(f"{path}.final_reads", f"must be after write_until ({self.write_until} ms) and "
                                                       f"before run.duration ({scenario.run.duration} ms), "
                                                       f"got {self.final_reads} ms")

    def new_state(self, world: Host) -> GossipLabState:
        return GossipLabState(world)

    def build_nodes(self, world: Host, state: GossipLabState) -> dict[str, Node]:
        cls = solution_classes(LAB, self.solution)["GossipNode"]
        nodes = {name: cls(world, name, self) for name in world.scenario.nodes}
        if isinstance(world, World):  # a run; a Harness (handlers alone) has no clients, as with workloads
            world.add_clients([GossipClient(world, f"c{i + 1}", name, self, state)
                               for i, name in enumerate(world.scenario.nodes)])
        return nodes

    def finish(self, world: World, state: GossipLabState) -> None:
        for name in world.scenario.nodes:
            node = world.nodes[name]
            replica = node.replica_state() if node.alive else None
            for key, value in sorted((replica or {}).items(), key=lambda kv: repr(kv[0])):
                state.final.record(name, key, tuple(sorted(as_values(value), key=repr)))


def as_values(value: Any) -> frozenset[Any]:
    """A replica_state / read value as a set of sibling values (None: nothing)."""
    if value is None:
        return frozenset()
    if isinstance(value, (set, frozenset, tuple, list)):
        return frozenset(value)
    return frozenset((value,))


# -- scenarios ------------------------------------------------------------------------------
def _scenario(seed: int, solution: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": {"dist": "exponential", "mean": 3.0}},
        "workload": {"clients": 0, "timeout": TIMEOUT},
        "faults": {"schedule": faults},
        "protocol": {"name": "lab_gossip", "solution": solution},
        "run": {"duration": DURATION, "seed": seed, "sample_interval": SAMPLE_MS},
    }


def _nemesis(test: str) -> Any:
    """Partitions (a minority cut off), crashes (a minority down at a time), 10% loss and
    10% duplication windows and one node's clock off by up to a second, all over by ``WRITE_UNTIL``."""

    def scenario(seed: int, solution: str) -> dict[str, Any]:
        rng = lab_rng("gossip", test, seed)
        faults = random_faults(rng, NODES, start=200.0, end=WRITE_UNTIL, partitions=2, crashes=2, loss=0.1,
                               duplicate=0.1, length=(300.0, 1200.0))
        t0 = round(float(rng.uniform(200.0, WRITE_UNTIL - 1000.0)), 1)
        offset = float(rng.choice([-1.0, 1.0]) * rng.uniform(100.0, 1000.0))
        faults.append({"kind": "clock_skew", "start": t0, "end": t0 + 1000.0,
                       "node": NODES[int(rng.integers(len(NODES)))], "offset": round(offset, 1)})
        faults.sort(key=lambda f: (f["start"], f["kind"]))
        return _scenario(seed, solution, faults)

    return scenario


def _partition_scenario(seed: int, solution: str) -> dict[str, Any]:
    """One node cut off alone and two nodes cut off together, in random windows, with duplication."""
    rng = lab_rng("gossip", "available", seed)
    faults = random_faults(rng, NODES, start=200.0, end=WRITE_UNTIL, partitions=1, duplicate=0.1,
                           length=(500.0, 1500.0))
    t0 = round(float(rng.uniform(200.0, WRITE_UNTIL - 1500.0)), 1)
    faults.append({"kind": "partition", "start": t0, "end": t0 + 1500.0,
                   "groups": [[NODES[int(rng.integers(len(NODES)))]]]})
    faults.sort(key=lambda f: (f["start"], f["kind"]))
    return _scenario(seed, solution, faults)


# -- checks --------------------------------------------------------------------------------------
def _config(result: Any) -> GossipLabConfig:
    cfg = result.scenario.protocol
    assert isinstance(cfg, GossipLabConfig)
    return cfg


def _settled(result: Any) -> tuple[float, float]:
    """(quiet, converged_by): no write from ``quiet`` on, every fault healed by then; the deadline."""
    cfg = _config(result)
    heals = [float(e) for k, e in zip(result.faults["kind"], result.faults["end"])
             if k in ("partition", "crash", "loss", "duplicate") and math.isfinite(e)]
    quiet = max([cfg.write_until, *heals])
    return quiet, quiet + CONVERGE_MS


def _late_reads(result: Any, since: float) -> pd.DataFrame:
    h = result.history
    return h[(h["op"] == "read") & (h["outcome"] == "ok") & (h["invoke"] >= since)]


def _final_states(result: Any, since: float) -> tuple[dict[tuple[str, Any], frozenset[Any]], list[tuple[str, int]]]:
    """Each (node, key)'s last read from ``since`` on, and the (node, key) pairs no read answered."""
    cfg = _config(result)
    reads = _late_reads(result, since).sort_values("invoke", kind="stable")
    final: dict[tuple[str, Any], frozenset[Any]] = {}
    for node, key, value in zip(reads["node"], reads["key"], reads["value"]):
        final[(node, key)] = as_values(value)
    missing = [(n, k) for n in result.scenario.nodes for k in range(cfg.keys) if (n, k) not in final]
    return final, missing


def check_converges(result: Any) -> Check:
    quiet, deadline = _settled(result)
    samples = result.divergence
    if samples is None or not len(samples):
        return Check(False, "no replica state to compare: replica_state() returned None on every node")
    conv = convergence_summary(samples, result.faults, last_write=quiet)
    after = conv["convergence.after_quiesce"]
    if not conv["convergence.converged"] or after > CONVERGE_MS:
        late = samples[samples["time"] >= deadline]
        keys = sorted({k for ks in late["keys"] for k in ks}, key=repr) if len(late) else []
        final = result.tables.get("lab_gossip_final")
        evidence = final[final["key"].isin(keys)].reset_index(drop=True) if final is not None else None
        if conv["convergence.converged"]:
            how = f"replicas agreed only {after:g} ms after the last write and heal ({quiet:g} ms)"
        else:
            how = f"replicas still disagree at the end of the run, after the last write and heal at {quiet:g} ms"
        return Check(False, f"{how}; allowed: {CONVERGE_MS:g} ms (key(s) {keys} differed from {deadline:g} ms on)",
                     evidence=evidence, window=(quiet, quiet + 2 * GOSSIP_MS))
    reads = _late_reads(result, deadline)
    for key, group in reads.groupby("key", sort=True):
        seen = {as_values(v) for v in group["value"]}
        if len(seen) > 1:
            cols = ["op_id", "client", "node", "key", "value", "invoke", "complete"]
            return Check(False, f"reads of key {key} from {deadline:g} ms on return different siblings: "
                                f"{sorted(sorted(s) for s in seen)}", evidence=group[cols].reset_index(drop=True),
                         window=(deadline, deadline + 2 * GOSSIP_MS), ops=tuple(int(o) for o in group["op_id"][:4]))
    final_reads, _missing = _final_states(result, deadline)
    table = result.tables.get("lab_gossip_final")
    states = {(n, k): frozenset(v) for n, k, v in zip(table["node"], table["key"], table["values"])}
    for (node, key), values in sorted(final_reads.items(), key=repr):
        if states.get((node, key), frozenset()) != values:
            return Check(False, f"{node}'s replica_state() says key {key} holds {sorted(states.get((node, key), ()))} "
                                f"but reads there return {sorted(values)}: replica_state() must describe what reads "
                                f"return")
    return Check(True, f"replicas agree {after:g} ms after the last write and heal")


def _writes(result: Any) -> pd.DataFrame:
    puts = result.tables["lab_gossip_puts"]
    h = result.history.set_index("op_id")
    out = puts.copy()
    out["outcome"] = [h.at[op, "outcome"] for op in puts["op_id"]]
    out["complete"] = [h.at[op, "complete"] for op in puts["op_id"]]
    return out


def _audit(result: Any) -> tuple[Any, pd.DataFrame, list[tuple[str, int]]]:
    _quiet, deadline = _settled(result)
    final, missing = _final_states(result, deadline)
    writes = _writes(result)
    return audit_siblings(writes, final), writes, missing


def _unanswered(missing: list[tuple[str, int]], deadline: float) -> Check:
    node, key = missing[0]
    return Check(False, f"{node} answered no read of key {key} from {deadline:g} ms on (every fault had healed): "
                        f"its final state cannot be checked", window=(deadline, deadline + 2 * GOSSIP_MS))


def check_no_lost_writes(result: Any) -> Check:
    audit, writes, missing = _audit(result)
    if missing:
        return _unanswered(missing, _settled(result)[1])
    lost = audit.lost
    if not len(lost):
        ok = int((writes["outcome"] == "ok").sum())
        return Check(True, f"all {ok} acknowledged writes survive or were overwritten by a write that read them")
    readers: dict[Any, list[Any]] = {}
    for value, seen in zip(writes["value"], writes["seen"]):
        for v in seen:
            readers.setdefault(v, []).append(value)
    gone_from = {v: ", ".join(sorted(g["node"])) for v, g in lost.groupby("value", sort=False)}
    cols = ["op_id", "client", "node", "key", "value", "time", "complete", "seen"]
    table = writes[writes["value"].isin(list(gone_from))][cols].rename(columns={"node": "written_at",
                                                                              "time": "invoke"})
    table["read_by"] = [tuple(readers.get(v, ())) for v in table["value"]]
    table["gone_from"] = [gone_from[v] for v in table["value"]]
    table = table.sort_values("invoke", kind="stable").reset_index(drop=True)
    unread = table[[not r for r in table["read_by"]]]
    first = (unread if len(unread) else table).iloc[0]
    why = ("no client had read it, so no write replaced it" if not first["read_by"] else
           f"the writes that read it ({', '.join(map(str, first['read_by']))}) are gone too")
    return Check(False, f"the acknowledged write of value {first['value']} to key {first['key']} (op {first['op_id']} "
                        f"at {first['written_at']}, {first['invoke']:g} ms) is gone from {first['gone_from']}: {why} "
                        f"({len(table)} acknowledged write{'s' if len(table) > 1 else ''} lost in all)",
                 evidence=table.head(12), ops=(int(first["op_id"]),),
                 window=(max(0.0, float(first["invoke"]) - 20.0), float(first["invoke"]) + 250.0))


def check_no_resurrection(result: Any) -> Check:
    audit, writes, missing = _audit(result)
    if missing:
        return _unanswered(missing, _settled(result)[1])
    invented = audit.invented
    if len(invented):
        first = invented.iloc[0]
        return Check(False, f"{first['node']} returns {first['value']} for key {first['key']}, which no client wrote "
                            f"to key {first['key']}", evidence=invented.drop(columns=["because"]))
    h = result.history
    reads = h[(h["op"] == "read") & (h["outcome"] == "ok")].copy()
    reads["values"] = [as_values(v) for v in reads["value"]]
    back = read_resurrections(reads, writes)
    if len(back):
        first = back.iloc[0]
        by = writes[writes["value"] == first["replaced_by"]].iloc[0]
        how = (f"client {by['client']} read {first['value']} and then wrote {by['value']} (op {by['op_id']})"
               if first["value"] in by["seen"] else "through a chain of such overwrites")
        return Check(False, f"{first['node']} returned {first['value']} for key {first['key']} at "
                            f"{first['invoke']:g} ms (op {first['read_op']}), after a read there (op "
                            f"{first['earlier_op']}) had returned {first['replaced_by']}, a write that replaced it "
                            f"({how}); {len(back)} such read{'s' if len(back) > 1 else ''} in all",
                     evidence=back.head(12),
                     window=(max(0.0, float(by["time"]) - 20.0), float(first["invoke"]) + 20.0),
                     ops=tuple(int(o) for o in (by["op_id"], first["earlier_op"], first["read_op"])))
    bad = audit.resurrected
    if not len(bad):
        return Check(True, "no overwritten value came back")
    first = bad.iloc[0]
    by = writes[writes["value"] == first["because"]].iloc[0]
    where = sorted(bad[bad["value"] == first["value"]]["node"])
    return Check(False, f"{', '.join(where)} still hold(s) {first['value']} for key {first['key']} at the end, though "
                        f"client {by['client']} read it and then overwrote it with {by['value']} (op {by['op_id']}, "
                        f"{by['time']:g} ms), which took effect ({bad['value'].nunique()} such values in all)",
                 evidence=bad.rename(columns={"because": "overwritten_by"}).drop(columns=["problem"]).head(12),
                 window=(max(0.0, float(by["time"]) - 50.0), float(by["time"]) + 200.0),
                 ops=tuple(int(o) for o in (by["read_op"], by["op_id"]) if pd.notna(o)))


def check_available(result: Any) -> Check:
    h = result.history
    asked = h[h["node_up"]]
    failed = asked[asked["outcome"] != "ok"]
    if not len(failed):
        return Check(True, f"all {len(asked)} operations answered within {_config(result).timeout:g} ms")
    first = failed.iloc[0]
    cols = ["op_id", "client", "node", "op", "key", "side", "invoke", "complete", "outcome", "error"]
    return Check(False, f"{len(failed)} of {len(asked)} operations got no answer within {_config(result).timeout:g} "
                        f"ms (the first: {first['op']} op {first['op_id']} at {first['node']}, "
                        f"{first['invoke']:g} ms, {first['side']} side)",
                 evidence=failed[cols].head(10).reset_index(drop=True),
                 window=(float(first["invoke"]) - 10.0, float(first["invoke"]) + 150.0),
                 ops=tuple(int(o) for o in failed["op_id"].head(3)))


LAB = Lab(
    id="gossip",
    number=6,
    title="An eventually consistent store: anti-entropy and version vectors",
    protocol="lab_gossip",
    classes={"GossipNode": GossipBase},
    skeleton="lab6_gossip.py",
    tests=(
        LabTest("converges",
                f"all replicas hold the same state within {CONVERGE_MS:g} ms ({CONVERGE_ROUNDS} anti-entropy rounds) "
                f"after the last write and the last heal, under partitions, crashes, loss and duplication",
                _nemesis("converges"), check_converges),
        LabTest("no-lost-writes",
                "every acknowledged write survives at every replica unless a write that read it replaced it: "
                "concurrent writes are kept as siblings",
                _nemesis("no-lost-writes"), check_no_lost_writes),
        LabTest("no-resurrection",
                "a value a client read and then overwrote never comes back where the overwrite was seen, "
                "nor anywhere at the end",
                _nemesis("no-resurrection"), check_no_resurrection),
        LabTest("available",
                f"every read and write is answered within {TIMEOUT:g} ms on both sides of every partition",
                _partition_scenario, check_available),
    ),
)
