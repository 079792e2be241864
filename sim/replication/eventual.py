"""Eventual consistency: write to one replica, push asynchronously, repair by anti-entropy.

Every node holds a full replica of every key (``self.disk["data"]``, durable).
A client operation is served entirely by the node it reached:

* a **write** is applied there and acknowledged at once, then pushed to every
  other node (best effort: a push that is lost or blocked by a partition is
  not retried);
* a **read** returns what that replica holds now, so during a partition each
  side answers (available) with its own, possibly stale, data;
* a **compare-and-set** (``conflict = "lww"`` only) compares with what that
  replica holds now and, if it matches, is a write of the new value there
  (else ``ok=False``, ``"precondition failed"``). Nothing coordinates it with
  the other replicas, so two clients can both succeed from the same value on
  different nodes (or on one node before a push arrives): one of the two writes
  loses under LWW, and a counter built on cas loses increments. That is the
  point of offering it; a linearizable cas needs consensus (see ``raft``).

**Anti-entropy** repairs what pushes missed: every ``anti_entropy_interval`` each
node picks ``fanout`` distinct random peers (stream ``eventual/<node>``) and runs
a push-pull digest exchange with each one, three messages:

1. ``Digest``: the initiator's version summary of every key it holds (the LWW
   timestamp, or the version vectors of the siblings);
2. ``DigestReply``: the peer sends its own entry for every key whose summary
   differs, and lists the keys it wants (its entry differs or is missing);
3. ``Entries``: the initiator sends its own entries for the wanted keys, as they
   were *before* it merged the peer's (each side pushes its own data, as in a
   repair stream; the receiver decides what wins).

So after a partition heals every pair that talks converges, and repeated rounds
spread every version to every live node.

**Conflict resolution** (``conflict``):

* ``"lww"``: a version is ``((clock, node, seq), value)``: the coordinating node's
  *wall* clock reading (``self.clock()``, moved by ``clock_skew`` and ``clock_step`` faults), its
  name to break ties, and a per-node write counter to order two writes a node
  stamps at the same instant. The highest stamp wins everywhere. A version
  presented to a replica (a client write at its coordinator, a push, an
  anti-entropy entry) that already holds a higher stamp is *discarded*, even if it
  was acknowledged: ``protocol.lww_discarded`` counts each distinct write once
  (concurrent losers, late pushes of superseded writes, slow-clock victims).
  ``protocol.lww_lost_realtime`` counts, with :func:`sim.checkers.lost_writes.lost_writes`
  and the stamps as the order, the acknowledged writes whose stamp is lower than
  that of a write completed before they were invoked (a real-time inversion,
  whether or not a replica ever had to reject them): zero with synchronised
  clocks, what a slow clock costs otherwise.
* ``"vv"``: a key holds a set of *siblings* ``(version vector, value)``; merging
  keeps every sibling no other sibling's vector strictly dominates, so concurrent
  writes survive side by side. A read returns the single value, or a sorted
  tuple of the sibling values. Client context: a write *supersedes every sibling
  the coordinating node holds at that moment* (its vector is the merge of theirs
  with the node's own entry set to its next write counter), as if the client had
  read from that node just before writing. A write at a node that has seen both
  sides' siblings therefore resolves them; one made where only one side's
  sibling is known keeps the other as a sibling.

**Versions for the convergence measure** (:meth:`EventualNode.replica_versions`):
the causal context of the value a replica holds, as a version vector over the
nodes' write counters. Under ``vv`` that is the sibling's own vector. Under
``lww`` the protocol keeps no vectors, so the run's stats do it on the side
(instrumentation, never read by the protocol): a write's context is everything
its coordinator had merged for the key (winners and discarded losers alike)
plus the write itself. Two sides that both wrote a key during a partition then
hold *conflicting* versions, which LWW resolves by discarding one; a replica that
only missed a write *lags*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..checkers.lost_writes import lost_writes
from ..config import MaybeInfDuration, at_least, fld, positive
from ..kernel.messages import CAS_MISMATCH, ClientReply, ClientRequest
from ..kernel.node import Node
from ..protocol import ProtocolConfig, register_protocol

__all__ = ["EventualConfig", "EventualNode", "EventualStats", "vv_merge", "vv_dominates"]

# A version vector: ((node, counter), ...) sorted by node name, so it is hashable and
# two equal vectors compare equal. A sibling: (vector, value).
VV = tuple[tuple[str, int], ...]
Sibling = tuple[VV, Any]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class EventualConfig(ProtocolConfig[None]):
    """Write-one eventual replication: ``conflict`` is ``"lww"`` or ``"vv"``; ``push`` sends
    each write to the other nodes at once; anti-entropy every ``anti_entropy_interval``
    (``"inf"``: never) with ``fanout`` random peers."""

    tag: ClassVar[str] = "eventual"
    conflict: Literal["lww", "vv"] = fld("lww")
    push: bool = fld(True)
    anti_entropy_interval: MaybeInfDuration = fld(250.0, check=positive, every="node")
    fanout: int = fld(1, check=at_least(1))

    def check_scenario(self, scenario, path):
        from ..errors import ScenarioError

        peers = len(scenario.nodes) - 1
        if peers >= 1 and self.fanout > peers:
            raise ScenarioError(f"{path}.fanout", f"must be <= the number of other nodes ({peers}), got {self.fanout}")

    def cas_refusal(self) -> str | None:
        if self.conflict != "lww":
            return ("under conflict = 'vv' a replica may hold several siblings, which no single expected value "
                    "matches; use conflict = 'lww'")
        return None  # compared at the replica reached: available, not linearizable

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        return (ClientRequest, ClientReply, Push, Digest, DigestReply, Entries)

    def build_nodes(self, world, state: None):
        stats = EventualStats()
        return {name: EventualNode(world, name, self, stats) for name in world.scenario.nodes}

    def summary(self, world, state: None) -> dict[str, Any]:
        nodes = [world.nodes[n] for n in world.scenario.nodes]
        stats: EventualStats = nodes[0].stats
        lost = 0
        if self.conflict == "lww" and stats.order:
            lost = lost_writes(world.history.to_frame(), order=stats.order).count
        states: list[dict[Any, Any]] = []
        for n in nodes:
            replica = n.replica_state() if n.alive else None
            if replica is not None:
                states.append(replica)
        keys: dict[Any, None] = {}  # first-seen order, never a set iteration
        for replica in states:
            keys.update(dict.fromkeys(replica))
        divergent = sum(1 for k in keys if any(s.get(k) != states[0].get(k) for s in states[1:]))
        with_siblings = sum(1 for k in keys if any(isinstance(s.get(k), frozenset) for s in states))
        return {
            "protocol.lww_discarded": len(stats.discarded),
            "protocol.lww_lost_realtime": lost,
            "protocol.max_siblings": stats.max_siblings,
            "protocol.siblings_resolved": stats.resolved,
            "protocol.keys_with_siblings_at_end": with_siblings,
            "protocol.anti_entropy_rounds": stats.rounds,
            "protocol.entries_repaired": stats.repaired,
            "protocol.divergent_keys_at_end": divergent,
        }


class EventualStats:
    """Run-wide counters shared by the nodes (instrumentation, not protocol state)."""

    def __init__(self) -> None:
        self.discarded: set[tuple[float, str, int]] = set()  # stamps of discarded LWW writes
        self.order: dict[Any, tuple[float, str, int]] = {}  # write value -> its LWW stamp
        self.max_siblings = 1
        self.resolved = 0  # client writes that replaced two or more siblings
        self.rounds = 0  # anti-entropy exchanges started
        self.repaired = 0  # entries an anti-entropy exchange changed
        # LWW only, for the convergence measure: stamp -> the version vector of the write's
        # causal context, and (node, key) -> the join of the contexts that node merged
        self.context: dict[tuple[float, str, int], dict[str, int]] = {}
        self.seen: dict[tuple[str, Any], dict[str, int]] = {}


@dataclass(frozen=True, slots=True)
class Push:
    """A new write, sent by its coordinator to every other node."""

    key: Any
    record: Any


@dataclass(frozen=True, slots=True)
class Digest:
    """Anti-entropy step 1: (key, version summary) for every key the sender holds."""

    versions: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True, slots=True)
class DigestReply:
    """Anti-entropy step 2: the peer's differing entries and the keys it wants."""

    entries: tuple[tuple[Any, Any], ...]
    want: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Entries:
    """Anti-entropy step 3: the initiator's entries for the wanted keys."""

    entries: tuple[tuple[Any, Any], ...]


def vv_dominates(a: VV, b: VV) -> bool:
    """Whether vector ``a`` has seen everything ``b`` has, and more (strictly greater)."""
    da = dict(a)
    if any(da.get(node, 0) < count for node, count in b):
        return False
    return a != b


def vv_merge(*sibling_sets: tuple[Sibling, ...]) -> tuple[Sibling, ...]:
    """The union of sibling sets without dominated siblings or duplicates, sorted by vector."""
    pool: dict[VV, Any] = {}
    for siblings in sibling_sets:
        for vv, value in siblings:
            pool.setdefault(vv, value)
    keep = [(vv, value) for vv, value in pool.items() if not any(vv_dominates(o, vv) for o in pool)]
    keep.sort(key=lambda s: s[0])
    return tuple(keep)


class EventualNode(Node):
    def __init__(self, world, name: str, cfg: EventualConfig, stats: EventualStats) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.stats = stats
        self.lww = cfg.conflict == "lww"
        self.peers = tuple(n for n in world.scenario.nodes if n != name)
        self.rng = world.streams[f"eventual/{name}"]

    def boot(self) -> None:
        self.data: dict[Any, Any] = self.disk.setdefault("data", {})
        self.disk.setdefault("seq", 0)  # writes this node coordinated, ever (durable)
        interval = self.cfg.anti_entropy_interval
        if self.peers and math.isfinite(interval):
            # a random phase, so that the nodes' rounds do not all start together
            self.set_timer(float(self.rng.uniform(0.0, interval)), self.anti_entropy)

    # -- client operations ------------------------------------------------------
    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        if msg.op == "write":
            self.write(msg, src, msg.value)
        elif msg.op == "cas":
            expected, new = msg.value
            current = self.read(msg.key)
            if current == expected:
                self.write(msg, src, new)
            else:
                self.send(src, ClientReply(msg.op_id, False, current, CAS_MISMATCH))
        else:
            self.send(src, ClientReply(msg.op_id, True, self.read(msg.key)))

    def write(self, msg: ClientRequest, src: str, value: Any) -> None:
        """Apply a write of ``value`` to ``msg.key`` here, acknowledge it, push it to the others."""
        self.disk["seq"] += 1
        seq = self.disk["seq"]
        if self.lww:
            record: Any = ((self.clock(), self.name, seq), value)
            self.stats.order[value] = record[0]
            self.stats.context[record[0]] = {**self.stats.seen.get((self.name, msg.key), {}), self.name: seq}
        else:
            seen = self.data.get(msg.key, ())
            if len(seen) > 1:
                self.stats.resolved += 1
            context: dict[str, int] = {}
            for vv, _value in seen:
                for node, count in vv:
                    context[node] = max(context.get(node, 0), count)
            context[self.name] = seq  # seq exceeds every count this node ever issued
            record = ((tuple(sorted(context.items())), value),)
        self.merge(msg.key, record)  # under LWW a slow clock may discard it right here
        self.send(src, ClientReply(msg.op_id, True))
        if self.cfg.push:
            for peer in self.peers:
                self.send(peer, Push(msg.key, record))

    def read(self, key: Any) -> Any:
        record = self.data.get(key)
        if record is None:
            return None
        if self.lww:
            return record[1]
        if len(record) == 1:
            return record[0][1]
        return tuple(sorted(value for _vv, value in record))

    # -- merging ----------------------------------------------------------------
    def merge(self, key: Any, record: Any) -> bool:
        """Fold a version (LWW) or sibling set (VV) into the replica; True if it changed."""
        current = self.data.get(key)
        if self.lww:
            self._note_seen(key, record[0])
            if current is None or record[0] > current[0]:
                self.data[key] = record
                return True
            if record[0] < current[0]:
                self.stats.discarded.add(record[0])
            return False
        merged = vv_merge(current or (), record)
        if merged == current:
            return False
        self.data[key] = merged
        if len(merged) > self.stats.max_siblings:
            self.stats.max_siblings = len(merged)
        return True

    def _note_seen(self, key: Any, stamp: tuple[float, str, int]) -> None:
        """Join the context of the write ``stamp`` into what this node has seen of ``key``."""
        context = self.stats.context.get(stamp)
        if context is not None:
            seen = self.stats.seen.setdefault((self.name, key), {})
            for node, count in context.items():
                if count > seen.get(node, 0):
                    seen[node] = count

    def version(self, record: Any) -> Any:
        """What a digest says about an entry: the LWW stamp, or the siblings' vectors."""
        return record[0] if self.lww else tuple(vv for vv, _value in record)

    def handle_Push(self, msg: Push, src: str) -> None:
        self.merge(msg.key, msg.record)

    # -- anti-entropy -----------------------------------------------------------
    def anti_entropy(self) -> None:
        self.set_timer(self.cfg.anti_entropy_interval, self.anti_entropy)
        k = min(self.cfg.fanout, len(self.peers))
        picks = sorted(self.rng.choice(len(self.peers), size=k, replace=False).tolist())
        digest = Digest(tuple((key, self.version(rec)) for key, rec in self.data.items()))
        for i in picks:
            self.stats.rounds += 1
            self.send(self.peers[i], digest)

    def handle_Digest(self, msg: Digest, src: str) -> None:
        theirs = dict(msg.versions)
        entries, want = [], []
        for key, record in self.data.items():
            if theirs.get(key) != self.version(record):
                entries.append((key, record))
                if key in theirs:
                    want.append(key)
        want.extend(key for key in theirs if key not in self.data)
        if entries or want:
            self.send(src, DigestReply(tuple(entries), tuple(want)))

    def handle_DigestReply(self, msg: DigestReply, src: str) -> None:
        mine = tuple((key, self.data[key]) for key in msg.want if key in self.data)  # before merging
        self.merge_entries(msg.entries)
        if mine:
            self.send(src, Entries(mine))

    def handle_Entries(self, msg: Entries, src: str) -> None:
        self.merge_entries(msg.entries)

    def merge_entries(self, entries: tuple[tuple[Any, Any], ...]) -> None:
        for key, record in entries:
            if self.merge(key, record):
                self.stats.repaired += 1

    # -- observation ------------------------------------------------------------
    def replica_state(self) -> dict[Any, Any]:
        """{key: value}, or {key: frozenset of sibling values} for a key with siblings."""
        out: dict[Any, Any] = {}
        for key, record in self.data.items():
            if self.lww or len(record) == 1:
                out[key] = self.read(key)
            else:
                out[key] = frozenset(value for _vv, value in record)
        return out

    def replica_versions(self, keys: Sequence[Any]) -> dict[Any, tuple[Mapping[Any, Any], ...]]:
        """The causal context of each held value (one vector per sibling); see the module docstring."""
        out: dict[Any, tuple[Mapping[Any, Any], ...]] = {}
        for key in keys:
            record = self.data.get(key)
            if record is None:
                continue
            if not self.lww:
                out[key] = tuple(dict(vv) for vv, _value in record)
            elif record[0] in self.stats.context:
                out[key] = (self.stats.context[record[0]],)
        return out
