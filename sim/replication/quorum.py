"""Quorum replication, Dynamo style: N replicas per key, read and write quorums R and W.

Placement
    The cluster's nodes, in scenario order, form a ring. An integer key ``k``
    starts at ring position ``k mod len(nodes)`` (any other key at the CRC-32 of
    its ``repr``), and its *preference list* is the ``replicas`` nodes from
    there on; the remaining nodes, in ring order, are its *fallbacks* for a
    sloppy quorum. :meth:`QuorumConfig.replicas_for` returns the preference list.

Coordination
    The node a client reached coordinates the operation, whether or not it holds
    the key. It sends the request to all N replicas (to itself through the
    network too) and answers after R replies (reads) or W acknowledgements
    (writes) from distinct nodes. When the quorum is not reached within
    ``request_timeout`` it answers ``ok=False`` only if nothing was written: a
    read (reads change no value; see the ``abd`` note below) or an ``abd``
    write still collecting versions. A write that was sent to any replica gets
    no answer, and the client records ``info``: the write may still show up.
    A client request whose ``op_id`` the node has already taken from that client
    is dropped as a duplicate, so a duplicated write never runs twice; a request
    overtaken in the network by a later one of the same client is still served.

Versions
    Every replica keeps, per key, one ``(version, value)`` pair in ``self.disk``
    (it survives crashes) and replaces it only by a higher version. A version is
    the tuple ``(stamp, coordinator, seq)``, compared lexicographically:
    ``stamp`` orders the writes, and the writer id ``(coordinator, seq)`` (the
    coordinating node's name and its durable count of the writes it has
    coordinated) makes each write's version unique and breaks ties between
    equal stamps. A key that was never written has no version, which is older
    than every version.

``mode = "dynamo"``
    ``stamp`` is the coordinator's local clock, :meth:`Node.clock`, when the
    write arrives (clock-skew faults shift it). A read answers with the value of
    the highest version among the first R replies. Guarantee: with R + W > N and
    no sloppy quorum, a read that starts after a write completed ``ok`` returns
    that write's value or the value of a *higher version*. Versions follow real
    time only as far as the clocks agree: a write stamped by a clock that is
    behind loses to an earlier write (last writer wins drops it). Not
    linearizable even with R + W > N: while a write is in flight one read can
    return it and a later read miss it (a new-old inversion). With R + W <= N a
    read can miss a completed write, with the probability of the PBS WARS model
    (:mod:`sim.analysis.pbs`).

``mode = "abd"``
    The multi-writer ABD register (Attiya, Bar-Noy and Dolev 1995; Lynch and
    Shvartsman 1997); ``stamp`` is an integer counter. A write asks all replicas
    for their version, waits for R replies and writes with stamp ``highest
    counter seen + 1``. A read takes the highest version among R replies and,
    unless W of those replies already hold it, writes it back to W replicas
    before answering. Guarantee: with R + W > N and ``sloppy_quorum = false``,
    every history of single-key reads and writes is linearizable under any
    crashes (data and write counters are durable), partitions, message loss,
    delay, reordering and duplication; clocks are not used, so skew does not
    matter. An operation completes ``ok`` only if its coordinator stays up and
    hears from R replicas (then W, for writes and for reads that write back)
    within ``request_timeout``. A read that times out during its
    write-back answers ``ok=False``: the write-back only re-sends a version some
    write already sent, which is indistinguishable from that write's own message
    arriving late. With R + W <= N or a sloppy quorum, quorums need not
    intersect and there is no such guarantee.

Read repair (``read_repair``, dynamo mode only)
    Once a read has heard from every replica of the key, or at its timeout, the
    coordinator sends the newest version it received to the replicas that
    replied with an older one. (In abd mode the write-back already does this.)

Sloppy quorum with hinted handoff (``sloppy_quorum``)
    For every replica that has not answered ``handoff_timeout`` after the
    request went out, the coordinator asks the next fallback not yet tried for
    it, one more every ``handoff_timeout``; a write sent that way carries a hint
    naming the intended replica. Fallbacks count toward R and W, so both sides
    of a partition may accept writes (conflicting versions; the higher one
    wins). The coordinator keeps handing a write off until every replica of the
    key holds it or a hint for it, or ``request_timeout``. A hint holder keeps
    the newest hinted version per (key, intended replica) on disk, answers reads
    with it, sends it to the intended replica every ``hint_interval`` and
    deletes it once acknowledged, so after a heal the replicas converge.

Message kinds (for ``network.message_latency``, see :mod:`sim.netconfig`)
    ``Put`` is ``write``, ``PutAck`` ``write_ack``, ``Get`` ``read`` and
    ``GetReply`` ``read_reply``: the W, A, R and S delays of the PBS WARS model
    can each have their own distribution. The coordinator's messages to its own
    replica take ``network.self_latency`` when it is set.

Anti-entropy (``anti_entropy_interval``, dynamo mode only; default ``"inf"``: none)
    Replicas converge without any read. The keys that start at the same ring
    position (a *range*) share one preference list, so its N nodes hold the
    same keys. Each node keeps, per range it replicates, a Merkle tree over
    its own data (not hints): a key goes to leaf ``crc32(repr(key)) mod
    merkle_leaves``; a leaf's hash is the XOR of a 64-bit BLAKE2 hash of each
    of its ``(key, version)`` pairs and an inner node's the XOR of its
    children (so a write updates one leaf in O(1); inner hashes are computed
    when asked for). Every ``anti_entropy_interval`` a node takes the next
    (range, peer) pair in turn among the ranges it replicates and their other
    replicas (the first round at a random phase, stream
    ``anti_entropy/<node>``) and sends the tree's root. The two sides then
    walk down together: the receiver of a level's hashes answers with its
    hashes of the children of the nodes that differ, until the leaves; for
    differing leaves it sends its entries, the other side keeps the newer
    versions and answers with its own entries the first did not have as new.
    Nodes that agree exchange one hash; d differing keys cost about
    ``d * log2(merkle_leaves)`` hashes and the entries of d leaves, whatever
    the number of keys (``protocol.anti_entropy_hashes`` and
    ``protocol.anti_entropy_entries`` count them).

No compare-and-set: a scenario whose workload issues cas is refused. ABD gives
an atomic read/write register, which cannot implement a linearizable cas (that
would solve consensus, which registers cannot, Herlihy 1991, and ABD runs fully
asynchronously, where FLP rules consensus out); cas needs a protocol that
orders operations through an elected leader, such as ``raft``.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..config import Duration, MaybeInfDuration, at_least, fld, positive
from ..errors import ScenarioError
from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Node, Timer
from ..protocol import ProtocolConfig, register_protocol
from ..states import State

__all__ = [
    "QuorumConfig",
    "QuorumNode",
    "Get",
    "GetReply",
    "Put",
    "PutAck",
    "TreeLevel",
    "LeafEntries",
    "preference_ring",
    "newer",
]

_SEEN_OPS_KEPT = 4096  # op ids remembered per client for duplicate detection

Version = tuple[Any, str, int]
"""``(stamp, coordinator, seq)``: stamp is a clock reading (dynamo) or a counter (abd)."""

#: request id of messages that expect no coordinator (read repair, hint delivery)
NO_REQUEST = 0


def newer(a: Version | None, b: Version | None) -> bool:
    """Whether version ``a`` is strictly newer than ``b``; ``None`` (never written) is oldest."""
    return a is not None and (b is None or a > b)


def ring_position(key: Any, n: int) -> int:
    """Where ``key`` starts on a ring of ``n`` nodes (keys with the same position share a preference list)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key % n
    return zlib.crc32(repr(key).encode()) % n


def preference_ring(key: Any, nodes: tuple[str, ...]) -> tuple[str, ...]:
    """All nodes in ring order starting at ``key``'s position: preference list, then fallbacks."""
    start = ring_position(key, len(nodes))
    return nodes[start:] + nodes[:start]


def entry_hash(key: Any, version: Version) -> int:
    """A 64-bit hash of one ``(key, version)`` pair, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr((key, version)).encode(), digest_size=8).digest(), "little")


# -- messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Get:
    """Coordinator -> replica: send me your version of ``key`` (PBS's R: also an abd write's first phase)."""

    kind: ClassVar[str] = "read"
    rid: int
    key: Any


@dataclass(frozen=True, slots=True)
class GetReply:
    """Replica -> coordinator: my version of ``key`` and its value (PBS's S)."""

    kind: ClassVar[str] = "read_reply"
    rid: int
    key: Any
    version: Version | None
    value: Any


@dataclass(frozen=True, slots=True)
class Put:
    """Store ``(version, value)`` if newer; ``hint`` names the intended replica of a hinted write (PBS's W)."""

    kind: ClassVar[str] = "write"
    rid: int
    key: Any
    version: Version
    value: Any
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class PutAck:
    """The sender now holds ``version`` of ``key`` or a newer one (as a hint for ``hint``; PBS's A)."""

    kind: ClassVar[str] = "write_ack"
    rid: int
    key: Any
    version: Version
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class TreeLevel:
    """Anti-entropy: the sender's Merkle hashes ``(index, hash)`` at ``level`` (0 = root) of range ``span``."""

    kind: ClassVar[str] = "anti_entropy"
    span: int
    level: int
    hashes: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class LeafEntries:
    """Anti-entropy: the sender's ``(key, version, value)`` in differing ``leaves``; ``answer``: send yours back."""

    kind: ClassVar[str] = "anti_entropy"
    span: int
    leaves: tuple[int, ...]
    entries: tuple[tuple[Any, Version, Any], ...]
    answer: bool


def _power_of_two(x: int) -> str | None:
    return None if x >= 1 and x & (x - 1) == 0 else f"must be a power of two (1, 2, 4, ...), got {x!r}"


# -- config ----------------------------------------------------------------------------


@register_protocol
@dataclass(frozen=True, kw_only=True)
class QuorumConfig(ProtocolConfig[None]):
    """N = ``replicas`` copies per key; reads wait for ``r`` replies, writes for ``w`` acks."""

    tag: ClassVar[str] = "quorum"
    replicas: int = fld(3, check=at_least(1), doc="N: replicas per key")
    r: int = fld(2, check=at_least(1), doc="read quorum")
    w: int = fld(2, check=at_least(1), doc="write quorum")
    mode: Literal["dynamo", "abd"] = fld("dynamo", doc="versioning: coordinator clock, or ABD counters")
    request_timeout: Duration = fld(500.0, check=positive, doc="coordinator gives up on a quorum (ms)")
    read_repair: bool = fld(False, doc="push the newest version to replicas that answered older")
    sloppy_quorum: bool = fld(False, doc="fall back to the next ring nodes with hinted handoff")
    handoff_timeout: Duration = fld(50.0, check=positive, doc="wait before asking a fallback (ms)")
    hint_interval: Duration = fld(100.0, check=positive, every="node", doc="hint delivery retry period (ms)")
    anti_entropy_interval: MaybeInfDuration = fld(math.inf, check=positive, every="node",
                                                  doc="Merkle-tree exchange with one replica peer this often "
                                                      "(dynamo mode; inf: never)")
    merkle_leaves: int = fld(64, check=_power_of_two, doc="leaves of each range's Merkle tree (a power of two)")

    def _validate(self, path: str) -> None:
        for name in ("r", "w"):
            value = getattr(self, name)
            if value > self.replicas:
                raise ScenarioError(f"{path}.{name}", f"must be between 1 and replicas ({self.replicas}), got {value}")
        if self.read_repair and self.mode == "abd":
            raise ScenarioError(f"{path}.read_repair", "only applies to mode = 'dynamo' (abd reads write back already)")
        if math.isfinite(self.anti_entropy_interval) and self.mode != "dynamo":
            raise ScenarioError(f"{path}.anti_entropy_interval", "only applies to mode = 'dynamo' (set it to 'inf' "
                                "or use mode = 'dynamo')")
        if self.sloppy_quorum and self.handoff_timeout >= self.request_timeout:
            raise ScenarioError(f"{path}.handoff_timeout",
                                f"must be shorter than request_timeout ({self.request_timeout} ms), "
                                f"got {self.handoff_timeout} ms")

    def cas_refusal(self) -> str | None:
        return ("a linearizable compare-and-set solves consensus (Herlihy 1991), which quorum reads and writes "
                "cannot: ABD builds an atomic read/write register, whose consensus number is 1, and it works in a "
                "fully asynchronous network with a minority crashed, where no deterministic protocol reaches "
                "consensus (Fischer, Lynch and Paterson 1985); a cas made of a read quorum, a compare and a write "
                "quorum lets two clients succeed from the same value. Use protocol 'raft', whose elected leader "
                "orders every cas in its log")

    def check_scenario(self, scenario, path: str) -> None:
        n = len(scenario.nodes)
        if self.replicas > n:
            raise ScenarioError(f"{path}.replicas",
                                f"must be at most the number of cluster nodes ({n}), got {self.replicas}")
        if self.sloppy_quorum and self.replicas == n:
            raise ScenarioError(f"{path}.sloppy_quorum", f"needs fallback nodes: replicas ({self.replicas}) "
                                f"must be fewer than the cluster's {n} nodes")

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        """Client messages, then the PBS WARS messages: Put (W), PutAck (A), Get (R), GetReply (S)."""
        return (ClientRequest, ClientReply, Put, PutAck, Get, GetReply, TreeLevel, LeafEntries)

    def build_nodes(self, world, state: None):
        return {name: QuorumNode(world, name, self) for name in world.scenario.nodes}

    def replicas_for(self, key: Any, nodes: tuple[str, ...]) -> tuple[str, ...]:
        return preference_ring(key, nodes)[: self.replicas]

    def summary(self, world, state: None) -> dict[str, Any]:
        nodes = [world.nodes[name] for name in world.scenario.nodes]
        return {
            "protocol.read_repairs": sum(n.read_repairs for n in nodes),
            "protocol.write_backs": sum(n.write_backs for n in nodes),
            "protocol.handoffs": sum(n.handoffs for n in nodes),
            "protocol.hints_stored": sum(n.hints_stored for n in nodes),
            "protocol.hints_delivered": sum(n.hints_delivered for n in nodes),
            "protocol.hints_pending": sum(n.pending_hints() for n in nodes),
            "protocol.coordinator_timeouts": sum(n.timeouts for n in nodes),
            "protocol.anti_entropy_rounds": sum(n.ae_rounds for n in nodes),
            "protocol.anti_entropy_messages": sum(n.ae_messages for n in nodes),
            "protocol.anti_entropy_hashes": sum(n.ae_hashes for n in nodes),
            "protocol.anti_entropy_entries": sum(n.ae_entries for n in nodes),
            "protocol.anti_entropy_repaired": sum(n.ae_repaired for n in nodes),
        }


# -- coordinator state -------------------------------------------------------------------


class Phase(State):
    """A coordinated operation's phase."""

    GET = "get"  # collecting versions from a read quorum
    PUT = "put"  # writing one version to a write quorum


class _Request:
    """One client operation this node coordinates (volatile: a crash forgets it)."""

    __slots__ = ("client", "op_id", "op", "key", "value", "ring", "phase", "rid", "replies", "acks",
                 "covered", "tried", "standins", "version", "answered", "timer", "handoff")

    def __init__(self, client: str, msg: ClientRequest, ring: tuple[str, ...]) -> None:
        self.client = client
        self.op_id = msg.op_id
        self.op = msg.op
        self.key = msg.key
        self.value = msg.value  # for a read: the value it will return
        self.ring = ring
        self.phase = Phase.GET
        self.rid = NO_REQUEST
        self.replies: dict[str, tuple[Version | None, Any]] = {}
        self.acks: dict[str, None] = {}  # distinct nodes that stored the version
        self.covered: dict[str, None] = {}  # preference-list replicas that have it or a hint for it
        self.tried: dict[str, int] = {}  # intended replica -> fallbacks asked for it so far
        self.standins: dict[str, list[str]] = {}  # fallback -> replicas it was asked to stand in for
        self.version: Version | None = None
        self.answered = False
        self.timer: Timer | None = None
        self.handoff: Timer | None = None


class QuorumNode(Node):
    def __init__(self, world, name: str, cfg: QuorumConfig) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.nodes = world.scenario.nodes
        self._rings: dict[Any, tuple[str, ...]] = {}
        # Request ids are never reused, even across crashes, so a reply can't reach the wrong request.
        self._next_rid = NO_REQUEST
        # Counters for the run summary (not protocol state: they survive crashes).
        self.read_repairs = 0
        self.write_backs = 0
        self.handoffs = 0
        self.hints_stored = 0
        self.hints_delivered = 0
        self.timeouts = 0
        self.ae_rounds = 0
        self.ae_messages = 0
        self.ae_hashes = 0
        self.ae_entries = 0
        self.ae_repaired = 0
        # anti-entropy: the ranges (ring positions) this node replicates, with their other replicas
        n, replicas = len(self.nodes), cfg.replicas
        self._spans = tuple(p for p in range(n) if name in (self.nodes + self.nodes)[p : p + replicas])
        self._pairs = tuple((p, peer) for p in self._spans
                            for peer in (self.nodes + self.nodes)[p : p + replicas] if peer != name)
        self._depth = cfg.merkle_leaves.bit_length() - 1

    def boot(self) -> None:
        self.data: dict[Any, tuple[Version, Any]] = self.disk.setdefault("data", {})
        self.hints: dict[Any, dict[str, tuple[Version, Any]]] = self.disk.setdefault("hints", {})
        self.disk.setdefault("seq", 0)
        self.requests: dict[int, _Request] = {}
        # The op ids taken from each client: a duplicated request is dropped (running a write
        # twice could make its value reappear after a later write). A request overtaken by a
        # later one of the same client is new and is served. Only the newest ids are kept;
        # anything at or below ``op_floor`` is taken for a very late duplicate.
        self.seen_ops: dict[str, set[int]] = {}
        self.op_floor: dict[str, int] = {}
        self.hint_timer: Timer | None = None
        if self.hints:
            self._schedule_hint_delivery()
        interval = self.cfg.anti_entropy_interval
        if math.isfinite(interval) and self._pairs:
            self._build_trees()
            self._next_pair = 0
            phase = float(self.world.streams[f"anti_entropy/{self.name}"].uniform(0.0, interval))
            self.set_timer(phase, self._anti_entropy)

    # -- helpers -------------------------------------------------------------------------
    def ring(self, key: Any) -> tuple[str, ...]:
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = preference_ring(key, self.nodes)
        return ring

    def stored(self, key: Any) -> tuple[Version, Any] | None:
        """This node's own replica of ``key`` (not hints): ``(version, value)`` or ``None``."""
        return self.data.get(key)

    def replica_state(self) -> dict[Any, Any]:
        return {key: value for key, (_version, value) in self.data.items()}

    def replica_versions(self, keys: Sequence[Any]) -> dict[Any, tuple[Mapping[Any, Any], ...]] | None:
        """abd: the ``(stamp, coordinator, seq)`` version, one total order that every write is
        placed in after asking a quorum, so replicas can only lag. dynamo: none (a clock
        order says nothing of which writes saw which)."""
        if self.cfg.mode != "abd":
            return None
        return {key: ({"abd": self.data[key][0]},) for key in keys if key in self.data}

    def pending_hints(self) -> int:
        return sum(len(per_key) for per_key in self.hints.values())

    def _new_phase(self, req: _Request) -> int:
        """A fresh request id for the next round of messages (replies to older rounds are ignored)."""
        self.requests.pop(req.rid, None)
        self._next_rid += 1
        req.rid = self._next_rid
        self.requests[req.rid] = req
        req.covered = {}
        req.tried = {}
        req.standins = {}
        if req.handoff is not None:
            req.handoff.cancel()
            req.handoff = None
        return req.rid

    def _next_version(self, stamp: Any) -> Version:
        self.disk["seq"] += 1
        return (stamp, self.name, self.disk["seq"])

    # -- client requests (coordinator side) -----------------------------------------------
    def _first_time(self, client: str, op_id: int) -> bool:
        """Whether this is the first copy of ``op_id`` from ``client`` (remembering it)."""
        seen = self.seen_ops.setdefault(client, set())
        if op_id in seen or op_id <= self.op_floor.get(client, -1):
            return False
        seen.add(op_id)
        if len(seen) > _SEEN_OPS_KEPT:
            oldest = sorted(seen)[: len(seen) // 2]
            seen.difference_update(oldest)
            self.op_floor[client] = oldest[-1]
        return True

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        if not self._first_time(src, msg.op_id):
            return
        if msg.op not in ("read", "write"):
            self.send(src, ClientReply(msg.op_id, False, error=f"unknown op {msg.op!r}"))
            return
        req = _Request(src, msg, self.ring(msg.key))
        if msg.op == "write" and self.cfg.mode == "dynamo":
            self._put(req, self._next_version(self.clock()), msg.value)
        else:  # reads, and abd writes, first collect versions
            self._get(req)
        req.timer = self.set_timer(self.cfg.request_timeout, self._expire, req)

    def _get(self, req: _Request) -> None:
        req.phase = Phase.GET
        req.replies = {}
        rid = self._new_phase(req)
        for node in req.ring[: self.cfg.replicas]:
            self.send(node, Get(rid, req.key))
        self._start_handoff(req)

    def _put(self, req: _Request, version: Version, value: Any) -> None:
        req.phase = Phase.PUT
        req.version = version
        req.value = value
        req.acks = {}
        rid = self._new_phase(req)
        for node in req.ring[: self.cfg.replicas]:
            self.send(node, Put(rid, req.key, version, value))
        self._start_handoff(req)

    def handle_GetReply(self, msg: GetReply, src: str) -> None:
        req = self.requests.get(msg.rid)
        if req is None or src in req.replies:
            return
        req.replies[src] = (msg.version, msg.value)
        if src in req.ring[: self.cfg.replicas]:
            req.covered[src] = None
        for intended in req.standins.get(src, ()):
            req.covered[intended] = None
        if not req.answered and len(req.replies) >= self.cfg.r:
            self._read_quorum(req)
        elif req.answered and len(req.covered) == self.cfg.replicas:
            self._finish(req)  # every replica answered: read repair can run now

    def _read_quorum(self, req: _Request) -> None:
        """R versions are in: choose the write's version (abd write) or the read's result."""
        best, value, holders = None, None, 0
        for version, v in req.replies.values():
            if newer(version, best):
                best, value, holders = version, v, 1
            elif version == best and version is not None:
                holders += 1
        if req.op == "write":  # abd: one past the highest counter seen
            self._put(req, self._next_version((best[0] if best is not None else 0) + 1), req.value)
        elif self.cfg.mode == "abd" and best is not None and holders < self.cfg.w:
            self.write_backs += 1
            self._put(req, best, value)  # answered once W replicas hold it
        else:
            self._answer(req, value)
            if not self.cfg.read_repair or len(req.covered) == self.cfg.replicas:
                self._finish(req)

    def handle_PutAck(self, msg: PutAck, src: str) -> None:
        if msg.rid == NO_REQUEST:
            self._hint_acked(msg, src)
            return
        req = self.requests.get(msg.rid)
        if req is None:
            return
        req.acks[src] = None
        req.covered[msg.hint or src] = None
        if not req.answered and len(req.acks) >= self.cfg.w:
            self._answer(req, req.value if req.op == "read" else None)
        # A sloppy write goes on until every replica holds it or a hint for it.
        if req.answered and (not self.cfg.sloppy_quorum or len(req.covered) == self.cfg.replicas):
            self._finish(req)

    def _answer(self, req: _Request, value: Any) -> None:
        req.answered = True
        self.send(req.client, ClientReply(req.op_id, True, value))

    def _expire(self, req: _Request) -> None:
        """request_timeout: answer ``fail`` only if nothing was written, then forget the request."""
        if not req.answered:
            self.timeouts += 1
            if req.op == "read" or req.phase == Phase.GET:
                need = self.cfg.r if req.phase == Phase.GET else self.cfg.w
                self.send(req.client, ClientReply(req.op_id, False, error=f"no quorum of {need} within "
                                                  f"{self.cfg.request_timeout:g} ms ({req.phase} phase)"))
        self._finish(req)

    def _finish(self, req: _Request) -> None:
        if self.requests.pop(req.rid, None) is None:
            return
        for timer in (req.timer, req.handoff):
            if timer is not None:
                timer.cancel()
        if self.cfg.read_repair and req.op == "read" and req.phase == Phase.GET and req.answered:
            self._read_repair(req)

    def _read_repair(self, req: _Request) -> None:
        best, value = None, None
        for version, v in req.replies.values():
            if newer(version, best):
                best, value = version, v
        if best is None:
            return
        for node in req.ring[: self.cfg.replicas]:
            reply = req.replies.get(node)
            if reply is not None and newer(best, reply[0]):
                self.read_repairs += 1
                self.send(node, Put(NO_REQUEST, req.key, best, value))

    # -- sloppy quorum: handing off to fallbacks ---------------------------------------------
    def _start_handoff(self, req: _Request) -> None:
        if self.cfg.sloppy_quorum:
            req.handoff = self.set_timer(self.cfg.handoff_timeout, self._handoff, req, req.rid)

    def _handoff(self, req: _Request, rid: int) -> None:
        """Ask the next untried fallback on behalf of every replica that has not answered."""
        if req.rid != rid or rid not in self.requests or (req.phase == Phase.GET and req.answered):
            return
        fallbacks = req.ring[self.cfg.replicas :]
        asked: dict[str, None] = {}
        more = False
        for intended in req.ring[: self.cfg.replicas]:
            if intended in req.covered:
                continue
            i = req.tried.get(intended, 0)
            if i >= len(fallbacks):
                continue
            req.tried[intended] = i + 1
            more = more or i + 1 < len(fallbacks)
            node = fallbacks[i]
            if req.phase == Phase.PUT:
                assert req.version is not None, "a put phase always has the version it writes"
                self.handoffs += 1
                self.send(node, Put(rid, req.key, req.version, req.value, hint=intended))
            elif node in req.replies:  # already answered, standing in for another replica
                req.covered[intended] = None
            else:
                req.standins.setdefault(node, []).append(intended)
                if node not in asked:
                    asked[node] = None
                    self.send(node, Get(rid, req.key))
        if more:
            req.handoff = self.set_timer(self.cfg.handoff_timeout, self._handoff, req, rid)

    # -- replica side ------------------------------------------------------------------------
    def handle_Get(self, msg: Get, src: str) -> None:
        version, value = None, None
        own = self.data.get(msg.key)
        if own is not None:
            version, value = own
        for hinted_version, hinted_value in self.hints.get(msg.key, {}).values():
            if newer(hinted_version, version):
                version, value = hinted_version, hinted_value
        self.send(src, GetReply(msg.rid, msg.key, version, value))

    def handle_Put(self, msg: Put, src: str) -> None:
        if msg.hint is None:
            self._store(msg.key, msg.version, msg.value)
        else:
            per_key = self.hints.setdefault(msg.key, {})
            held = per_key.get(msg.hint)
            if held is None or newer(msg.version, held[0]):
                per_key[msg.hint] = (msg.version, msg.value)
                self.hints_stored += 1
                if self.hint_timer is None:
                    self._schedule_hint_delivery()
        self.send(src, PutAck(msg.rid, msg.key, msg.version, msg.hint))

    # -- hint delivery -------------------------------------------------------------------------
    def _schedule_hint_delivery(self) -> None:
        self.hint_timer = self.set_timer(self.cfg.hint_interval, self._deliver_hints)

    def _deliver_hints(self) -> None:
        """Send every hint to its intended replica; an ack with a version at least as new deletes it."""
        self.hint_timer = None
        for key, per_key in self.hints.items():
            for intended, (version, value) in per_key.items():
                self.send(intended, Put(NO_REQUEST, key, version, value))
        if self.hints:
            self._schedule_hint_delivery()

    def _hint_acked(self, msg: PutAck, src: str) -> None:
        per_key = self.hints.get(msg.key)
        held = per_key.get(src) if per_key is not None else None
        if per_key is None or held is None or newer(held[0], msg.version):
            return  # no hint for src, or src acked an older version than the hint
        del per_key[src]
        if not per_key:
            del self.hints[msg.key]
        self.hints_delivered += 1

    # -- anti-entropy: Merkle trees per range ----------------------------------------------------
    def _store(self, key: Any, version: Version, value: Any) -> bool:
        """Keep ``(version, value)`` as this node's replica of ``key`` if it is newer; True if it was."""
        own = self.data.get(key)
        if own is not None and not newer(version, own[0]):
            return False
        self.data[key] = (version, value)
        trees = self._trees
        if trees is not None:
            leaves = trees.get(ring_position(key, len(self.nodes)))
            if leaves is not None:
                leaf = self._leaf(key)
                if own is not None:
                    leaves[leaf] ^= entry_hash(key, own[0])
                leaves[leaf] ^= entry_hash(key, version)
        return True

    _trees: dict[int, list[int]] | None = None

    def _leaf(self, key: Any) -> int:
        return zlib.crc32(repr(key).encode()) % self.cfg.merkle_leaves

    def _build_trees(self) -> None:
        """The leaf hashes of every range this node replicates, from its data (volatile: rebuilt at boot)."""
        self._trees = {span: [0] * self.cfg.merkle_leaves for span in self._spans}
        n = len(self.nodes)
        for key, (version, _value) in self.data.items():
            leaves = self._trees.get(ring_position(key, n))
            if leaves is not None:
                leaves[self._leaf(key)] ^= entry_hash(key, version)

    def _node_hash(self, span: int, level: int, index: int) -> int:
        """The XOR of the leaves under node ``index`` of ``level`` (0: the root)."""
        assert self._trees is not None, "anti-entropy is on"
        width = 1 << (self._depth - level)
        h = 0
        for leaf in self._trees[span][index * width : (index + 1) * width]:
            h ^= leaf
        return h

    def _ae_send(self, dst: str, msg: TreeLevel | LeafEntries) -> None:
        self.ae_messages += 1
        if isinstance(msg, TreeLevel):
            self.ae_hashes += len(msg.hashes)
        else:
            self.ae_entries += len(msg.entries)
        self.send(dst, msg)

    def _anti_entropy(self) -> None:
        """Start an exchange with the next (range, replica peer) pair: send the root."""
        self.set_timer(self.cfg.anti_entropy_interval, self._anti_entropy)
        span, peer = self._pairs[self._next_pair]
        self._next_pair = (self._next_pair + 1) % len(self._pairs)
        self.ae_rounds += 1
        self._ae_send(peer, TreeLevel(span, 0, ((0, self._node_hash(span, 0, 0)),)))

    def handle_TreeLevel(self, msg: TreeLevel, src: str) -> None:
        if self._trees is None or msg.span not in self._trees:
            return  # anti-entropy is off here, or the range is not ours
        span, level = msg.span, msg.level
        differ = [i for i, h in msg.hashes if self._node_hash(span, level, i) != h]
        if not differ:
            return
        if level == self._depth:
            self._ae_send(src, LeafEntries(span, tuple(differ), self._entries(span, differ), True))
        else:
            children = [c for i in differ for c in (2 * i, 2 * i + 1)]
            hashes = tuple((c, self._node_hash(span, level + 1, c)) for c in children)
            self._ae_send(src, TreeLevel(span, level + 1, hashes))

    def _entries(self, span: int, leaves: Sequence[int]) -> tuple[tuple[Any, Version, Any], ...]:
        """This node's ``(key, version, value)`` in ``leaves`` of range ``span``, in data order."""
        wanted, n = set(leaves), len(self.nodes)
        return tuple((key, version, value) for key, (version, value) in self.data.items()
                     if ring_position(key, n) == span and self._leaf(key) in wanted)

    def handle_LeafEntries(self, msg: LeafEntries, src: str) -> None:
        if self._trees is None or msg.span not in self._trees:
            return
        theirs = {key: version for key, version, _value in msg.entries}
        if msg.answer:  # what the sender lacks or holds older, taken before merging theirs
            mine = tuple(e for e in self._entries(msg.span, msg.leaves) if newer(e[1], theirs.get(e[0])))
            if mine:
                self._ae_send(src, LeafEntries(msg.span, msg.leaves, mine, False))
        for key, version, value in msg.entries:
            if self._store(key, version, value):
                self.ae_repaired += 1
