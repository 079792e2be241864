"""One Raft server: the election, replication and client handlers (see :mod:`sim.replication.raft`)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ...dists import uniform_sampler
from ...kernel.messages import ClientReply, ClientRequest
from ...kernel.node import Host, Node, Timer
from .messages import (
    MAX_HOPS,
    NOOP,
    SENTINEL,
    AppendEntries,
    AppendReply,
    Entry,
    FromLeader,
    RequestVote,
    Role,
    ToLeader,
    VoteReply,
)

if TYPE_CHECKING:
    from .config import RaftConfig

__all__ = ["RaftNode", "RoleChange", "ReplyTo", "PendingRead"]


class RoleChange(NamedTuple):
    """One entry of a node's role history: when, in which term, the new role and why."""

    time: float
    term: int
    role: Role
    reason: str


class ReplyTo(NamedTuple):
    """Where an answer goes: to a client directly, or back to the node it asked (``via_origin``)."""

    dst: str
    via_origin: bool


class PendingRead(NamedTuple):
    """A read waiting at the leader for its index to be applied and its heartbeat round to be confirmed."""

    read_index: int
    need: int  # the first heartbeat round sent after the read arrived
    op_id: int
    key: Any
    target: ReplyTo


class RaftNode(Node):
    """One Raft server. Attributes set in ``__init__`` are counters and survive crashes."""

    #: counters and histories the model checker leaves out of a state's identity (sim.search)
    search_ignore: ClassVar[tuple[str, ...]] = ("roles", "elections", "leaderships", "stepdowns", "max_commit",
                                                "forwarded", "refused", "reads_confirmed", "reads_lease",
                                                "reads_local")

    def __init__(self, world: Host, name: str, cfg: RaftConfig) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.peers = tuple(n for n in world.scenario.nodes if n != name)
        self.majority = len(world.scenario.nodes) // 2 + 1
        self._u = uniform_sampler(world.streams[f"raft/{name}"])
        self._et_min = cfg.election_timeout_min
        self._et_span = cfg.election_timeout_max - cfg.election_timeout_min
        self._lease = cfg.lease_duration
        #: (time, term, role, reason) for every role or term change, and "down" at a crash
        self.roles: list[RoleChange] = []
        self.elections = 0
        self.leaderships = 0
        self.stepdowns = 0
        self.max_commit = 0
        self.forwarded = 0
        self.refused = 0
        self.reads_confirmed = 0
        self.reads_lease = 0
        self.reads_local = 0

    # -- lifecycle ----------------------------------------------------------------
    def boot(self) -> None:
        disk = self.disk
        self.term: int = disk.setdefault("term", 0)
        self.voted_for: str | None = disk.setdefault("voted_for", None)
        self.log: list[Entry] = disk.setdefault("log", [SENTINEL])
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.leader_contact = -math.inf  # local clock when a leader was last heard
        self.commit_index = 0
        self.last_applied = 0
        self.data: dict[Any, Any] = {}
        # for the convergence measure: entries per term in the applied prefix, and for each
        # key the prefix (as those counts) up to the entry that set its value
        self._applied_terms: dict[int, int] = {}
        self._key_versions: dict[Any, dict[int, int]] = {}
        self.results: dict[int, Any] = {}  # op_id -> result, for every applied operation
        self.waiters: dict[int, list[ReplyTo]] = {}  # op_id -> reply targets
        self.waiting: dict[int, str] = {}  # op_id -> client, for requests this node forwarded
        self.touched: set[int] = set()  # write op_ids this node forwarded or appended
        self.refused_ops: set[int] = set()  # write op_ids this node answered ok=False
        self.votes: set[str] = set()
        self._deadline = 0.0
        self._etimer: Timer | None = None
        self._clear_leader_state()
        self._set_role(Role.FOLLOWER, "boot")
        self._reset_election_timer()

    def on_crash(self) -> None:
        self.roles.append(RoleChange(self.now, self.term, Role.DOWN, "crash"))

    def replica_state(self) -> dict[Any, Any]:
        return dict(self.data)

    def replica_versions(self, keys: Sequence[Any]) -> dict[Any, tuple[Mapping[Any, Any], ...]]:
        """The applied log prefix behind each value (:func:`sim.checkers.convergence.log_versions`)."""
        return {key: (self._key_versions[key],) for key in keys if key in self._key_versions}

    def _clear_leader_state(self) -> None:
        self.next_index: dict[str, int] = {}
        self.match_index: dict[str, int] = {}
        self.acked_seq: dict[str, int] = {}
        self.last_ack: dict[str, float] = {}
        self.op_index: dict[int, int] = {}  # op_id -> index of not yet applied entries
        self.pending_reads: deque[PendingRead] = deque()
        self.hb_seq = 0
        self.quorum_seq = 0
        self.round_clock: list[float] = [0.0]
        self.lease_until = -math.inf
        self.term_start = 0

    def _set_role(self, role: Role, reason: str) -> None:
        self.role = role
        self.roles.append(RoleChange(self.now, self.term, role, reason))
        self.world.record_node_event(self.name, f"raft {role} term={self.term} ({reason})")

    def _persist(self, term: int, voted_for: str | None) -> None:
        self.term = term
        self.voted_for = voted_for
        self.disk["term"] = term
        self.disk["voted_for"] = voted_for

    # -- election timer: one pending timer, pushed back by moving the deadline ------
    def _reset_election_timer(self) -> None:
        now = self.now
        self._deadline = deadline = now + self._et_min + self._et_span * self._u()
        timer = self._etimer
        if timer is None or timer.at > deadline:
            if timer is not None:
                timer.cancel()
            self._etimer = self.set_timer(deadline - now, self._on_election_timer)

    def _on_election_timer(self) -> None:
        self._etimer = None
        rest = self._deadline - self.now
        if rest > 1e-9:  # the deadline moved while the timer was pending
            self._etimer = self.set_timer(rest, self._on_election_timer)
            return
        self._reset_election_timer()
        if self.role == Role.LEADER:
            return
        if self.cfg.pre_vote:
            self._start_prevote()
        else:
            self._start_election()

    def _hears_leader(self) -> bool:
        """Whether this node leads, or heard its leader less than election_timeout_min ago (local clock)."""
        if self.role == Role.LEADER:
            return True
        return self.leader is not None and self.clock() - self.leader_contact < self._et_min

    def _last(self) -> tuple[int, int]:
        last = len(self.log) - 1
        return last, self.log[last].term

    # -- elections ------------------------------------------------------------------
    def _start_prevote(self) -> None:
        self.leader = None
        if self.role != Role.PRECANDIDATE:
            self._set_role(Role.PRECANDIDATE, "election timeout")
        self.votes = {self.name}
        last, last_term = self._last()
        msg = RequestVote(self.term + 1, self.name, last, last_term, True)
        for peer in self.peers:
            self.send(peer, msg)
        if len(self.votes) >= self.majority:
            self._start_election()

    def _start_election(self) -> None:
        self._persist(self.term + 1, self.name)
        self.leader = None
        self.elections += 1
        self._set_role(Role.CANDIDATE, "election")
        self.votes = {self.name}
        last, last_term = self._last()
        msg = RequestVote(self.term, self.name, last, last_term)
        for peer in self.peers:
            self.send(peer, msg)
        if len(self.votes) >= self.majority:
            self._become_leader()

    def handle_RequestVote(self, msg: RequestVote, src: str) -> None:
        if msg.term < self.term:
            self.send(src, VoteReply(self.term, False, msg.pre, msg.term))
            return
        if msg.term > self.term and (msg.pre or self.cfg.check_quorum) and self._hears_leader():
            return  # a live leader is heard: no pre-vote, and with check-quorum no vote either
        last, last_term = self._last()
        up_to_date = (msg.last_term, msg.last_index) >= (last_term, last)
        if msg.pre:
            granted = msg.term > self.term and up_to_date
            self.send(src, VoteReply(self.term, granted, True, msg.term))
            return
        if msg.term > self.term:
            self._become_follower(msg.term, None, "higher term")
        granted = up_to_date and self.voted_for in (None, msg.candidate)
        if granted:
            self._persist(self.term, msg.candidate)
            self._reset_election_timer()
        self.send(src, VoteReply(self.term, granted, False, msg.term))

    def handle_VoteReply(self, msg: VoteReply, src: str) -> None:
        if msg.term > self.term and not msg.granted:
            self._become_follower(msg.term, None, "higher term")
            return
        if msg.pre:
            if self.role == Role.PRECANDIDATE and msg.granted and msg.asked == self.term + 1:
                self.votes.add(src)
                if len(self.votes) >= self.majority:
                    self._start_election()
        elif self.role == Role.CANDIDATE and msg.granted and msg.asked == self.term:
            self.votes.add(src)
            if len(self.votes) >= self.majority:
                self._become_leader()

    def _become_follower(self, term: int, leader: str | None, reason: str) -> None:
        was = self.role
        changed = term > self.term
        if changed:
            self._persist(term, None)
        self.leader = leader
        if was == Role.LEADER:
            self.stepdowns += 1
            self._end_leadership()
        if changed or was != Role.FOLLOWER:
            self._set_role(Role.FOLLOWER, reason)
        self._reset_election_timer()

    def _become_leader(self) -> None:
        self.leaderships += 1
        self.leader = self.name
        self._set_role(Role.LEADER, "won election")
        self._clear_leader_state()
        log = self.log
        n = len(log)
        now = self.now
        for peer in self.peers:
            self.next_index[peer] = n
            self.match_index[peer] = 0
            self.acked_seq[peer] = 0
            self.last_ack[peer] = now
        for i in range(self.last_applied + 1, n):
            if log[i].op != NOOP:
                self.op_index[log[i].op_id] = i
        log.append(Entry(self.term, 0, NOOP, None, None))  # commits the entries of earlier terms
        self.term_start = n
        self._broadcast()
        self._advance_commit()
        self.set_timer(self.cfg.heartbeat, self._tick, self.term)

    def _end_leadership(self) -> None:
        """Answer queued reads (they had no effect) and forget the leader's bookkeeping.

        Waiting writes keep their waiters: the entries may still commit, and if this
        node applies them it answers ok; otherwise the clients time out (info).
        """
        for _ri, _need, op_id, _key, target in self.pending_reads:
            self._reply(target, ClientReply(op_id, False, error="leadership lost"))
        self._clear_leader_state()

    def _tick(self, term: int) -> None:
        """Leader's periodic heartbeat round, with the check-quorum test."""
        if self.role != Role.LEADER or self.term != term:
            return
        if self.cfg.check_quorum and self.peers:
            now = self.now
            window = self.cfg.election_timeout_max
            heard = 1 + sum(1 for p in self.peers if now - self.last_ack[p] < window)
            if heard < self.majority:
                self._become_follower(self.term, None, "check quorum")
                return
        self._broadcast()
        self.set_timer(self.cfg.heartbeat, self._tick, term)

    # -- replication: leader side ----------------------------------------------------
    def _broadcast(self) -> None:
        """Start a new round: AppendEntries (new entries or a heartbeat) to every peer."""
        self.hb_seq += 1
        self.round_clock.append(self.clock())
        for peer in self.peers:
            self._send_append(peer)
        if not self.peers:
            self._update_quorum()

    def _send_append(self, peer: str) -> None:
        log = self.log
        nxt = self.next_index[peer]
        entries = tuple(log[nxt : nxt + self.cfg.max_batch]) if nxt < len(log) else ()
        self.next_index[peer] = nxt + len(entries)  # optimistic; a refusal moves it back
        self.send(peer, AppendEntries(self.term, self.name, nxt - 1, log[nxt - 1].term, entries,
                                      self.commit_index, self.hb_seq))

    def handle_AppendReply(self, msg: AppendReply, src: str) -> None:
        if msg.term > self.term:
            self._become_follower(msg.term, None, "higher term")
            return
        if self.role != Role.LEADER or msg.term != self.term or msg.seq == 0:
            return  # stale, or a refusal of an older leader's AppendEntries that only has our term
        self.last_ack[src] = self.now
        if msg.seq > self.acked_seq[src]:
            self.acked_seq[src] = msg.seq
            self._update_quorum()
        if msg.success:
            if msg.match > self.match_index[src]:
                self.match_index[src] = msg.match
                self._advance_commit()
            if self.next_index[src] <= msg.match:
                self.next_index[src] = msg.match + 1
            if self.next_index[src] < len(self.log):  # catching up a lagging follower
                self._send_append(src)
            return
        # refused: skip back using the conflict hint, never below what is known to match
        nxt = msg.conflict_index
        if msg.conflict_term:
            log = self.log
            i = len(log) - 1
            while i > 0 and log[i].term > msg.conflict_term:
                i -= 1
            if i > 0 and log[i].term == msg.conflict_term:
                nxt = i + 1
        self.next_index[src] = min(max(nxt, self.match_index[src] + 1), len(self.log))
        self._send_append(src)

    def _advance_commit(self) -> None:
        """Commit the highest index stored by a majority, if it is of the current term."""
        if self.peers:
            m = sorted(self.match_index.values(), reverse=True)[self.majority - 2]
        else:
            m = len(self.log) - 1
        if m > self.commit_index and self.log[m].term == self.term:
            self.commit_index = m
            self._apply()

    def _update_quorum(self) -> None:
        """Advance the newest round acknowledged by a majority; renew the lease, serve reads."""
        if self.peers:
            q = sorted(self.acked_seq.values(), reverse=True)[self.majority - 2]
        else:
            q = self.hb_seq
        if q <= self.quorum_seq:
            return
        self.quorum_seq = q
        self.lease_until = max(self.lease_until, self.round_clock[q] + self._lease)
        self._serve_reads()
        pending = self.pending_reads
        if pending and pending[-1].need > q and q >= self.hb_seq:
            self._broadcast()  # reads that arrived during the round need one more

    # -- replication: follower side --------------------------------------------------
    def handle_AppendEntries(self, msg: AppendEntries, src: str) -> None:
        if msg.term < self.term:  # seq 0: answers no round of any leader of our term
            self.send(src, AppendReply(self.term, False, 0, 0, 0, 0))
            return
        if msg.term > self.term or self.role != Role.FOLLOWER:
            self._become_follower(msg.term, msg.leader, "new leader")
        else:
            self.leader = msg.leader
            self._reset_election_timer()
        self.leader_contact = self.clock()
        log = self.log
        prev = msg.prev_index
        last = len(log) - 1
        if prev > last:
            self.send(src, AppendReply(self.term, False, 0, last + 1, 0, msg.seq))
            return
        if log[prev].term != msg.prev_term:
            term = log[prev].term
            first = prev
            while first > 1 and log[first - 1].term == term:
                first -= 1
            self.send(src, AppendReply(self.term, False, 0, first, term, msg.seq))
            return
        entries = msg.entries
        if entries:
            # keep entries that are already there; cut the log at the first conflict
            i, n, idx = 0, len(entries), prev + 1
            while i < n and idx <= last and log[idx].term == entries[i].term:
                i += 1
                idx += 1
            if i < n:
                if idx <= last:
                    if idx <= self.commit_index:
                        raise RuntimeError(f"raft {self.name}: leader {src} overwrites committed entry {idx}")
                    del log[idx:]
                log.extend(entries[i:])
        match = prev + len(entries)
        if msg.commit > self.commit_index and match > self.commit_index:
            self.commit_index = min(msg.commit, match)
            self._apply()
        self.send(src, AppendReply(self.term, True, match, 0, 0, msg.seq))

    # -- state machine ------------------------------------------------------------------
    def _apply(self) -> None:
        """Apply committed entries in order; an operation id already applied is skipped."""
        if self.commit_index > self.max_commit:
            self.max_commit = self.commit_index
        log, data, results, waiters = self.log, self.data, self.results, self.waiters
        while self.last_applied < self.commit_index:
            self.last_applied += 1
            term, op_id, op, key, value = log[self.last_applied]
            self._applied_terms[term] = self._applied_terms.get(term, 0) + 1
            if op == NOOP:
                continue
            if op_id not in results:
                if op == "write":
                    data[key] = value
                    self._key_versions[key] = dict(self._applied_terms)
                    results[op_id] = None
                else:
                    results[op_id] = data.get(key)
            self.op_index.pop(op_id, None)
            targets = waiters.pop(op_id, None)
            if targets:
                reply = ClientReply(op_id, True, results[op_id])
                for target in targets:
                    self._reply(target, reply)
        if self.pending_reads:
            self._serve_reads()

    # -- clients ----------------------------------------------------------------------------
    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        self._route(msg, ReplyTo(src, False), self.name, 0)

    def handle_ToLeader(self, msg: ToLeader, src: str) -> None:
        self._route(msg.request, ReplyTo(msg.origin, True), msg.origin, msg.hops)

    def handle_FromLeader(self, msg: FromLeader, src: str) -> None:
        client = self.waiting.pop(msg.reply.op_id, None)
        if client is not None:
            self.send(client, msg.reply)

    def _reply(self, target: ReplyTo, reply: ClientReply) -> None:
        dst, via_origin = target
        self.send(dst, FromLeader(reply) if via_origin else reply)

    def _route(self, req: ClientRequest, target: ReplyTo, origin: str, hops: int) -> None:
        """Serve ``req`` as the leader, pass it on to the leader, or refuse it if that is safe."""
        first_hop = hops == 0
        write = req.op == "write"
        if first_hop and write and req.op_id in self.refused_ops:
            return  # a late duplicate of a refused write must stay refused: drop it
        if self.role == Role.LEADER:
            if first_hop and write:
                self.touched.add(req.op_id)
            self._serve(req, target)
            return
        leader = self.leader
        if leader is not None and self.cfg.forward and hops < MAX_HOPS:
            if first_hop:
                self.waiting[req.op_id] = target.dst
                if write:
                    self.touched.add(req.op_id)
            self.forwarded += 1
            self.send(leader, ToLeader(req, origin, hops + 1))
            return
        if first_hop and (not write or req.op_id not in self.touched):
            # every copy of this request came through here and none went on: safe to refuse
            self.refused += 1
            if write:
                self.refused_ops.add(req.op_id)
            error = "no leader known" if leader is None else f"not the leader; leader is {leader}"
            self._reply(target, ClientReply(req.op_id, False, error=error))
        # otherwise drop it: a copy may be in some log, so the client must see a timeout

    def _serve(self, req: ClientRequest, target: ReplyTo) -> None:
        mode = self.cfg.read_mode
        if req.op == "write" or mode == "log":
            self._propose(req, target)
        elif mode == "local":
            self.reads_local += 1
            self._reply(target, ClientReply(req.op_id, True, self.data.get(req.key)))
        else:
            self._read(req, target)

    def _propose(self, req: ClientRequest, target: ReplyTo) -> None:
        op_id = req.op_id
        if op_id in self.results:  # a duplicate of an applied operation
            self._reply(target, ClientReply(op_id, True, self.results[op_id]))
            return
        targets = self.waiters.setdefault(op_id, [])
        if target not in targets:
            targets.append(target)
        if op_id in self.op_index:  # a duplicate of an entry already in the log
            return
        self.log.append(Entry(self.term, op_id, req.op, req.key, req.value))
        self.op_index[op_id] = len(self.log) - 1
        self._broadcast()
        self._advance_commit()

    def _read(self, req: ClientRequest, target: ReplyTo) -> None:
        """Read-index (and lease) reads at the leader."""
        read_index = max(self.commit_index, self.term_start)
        if (self.cfg.read_mode == "lease" and self.commit_index >= self.term_start
                and self.clock() < self.lease_until):
            self.reads_lease += 1
            self._reply(target, ClientReply(req.op_id, True, self.data.get(req.key)))
            return
        # needs a round sent after now: the next one
        self.pending_reads.append(PendingRead(read_index, self.hb_seq + 1, req.op_id, req.key, target))
        if self.quorum_seq >= self.hb_seq:
            self._broadcast()
        # else: _update_quorum starts the next round when the one in flight completes

    def _serve_reads(self) -> None:
        pending = self.pending_reads
        while pending:
            read_index, need, op_id, key, target = pending[0]
            if need > self.quorum_seq or read_index > self.last_applied:
                return
            pending.popleft()
            self.reads_confirmed += 1
            self._reply(target, ClientReply(op_id, True, self.data.get(key)))
