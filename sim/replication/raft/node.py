"""One Raft server: the election, replication and client handlers (see :mod:`sim.replication.raft`)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ...checkers.state_machine_safety import AppliedEntries
from ...dists import uniform_sampler
from ...kernel.messages import CAS_MISMATCH, ClientReply, ClientRequest
from ...kernel.node import Host, Node, Timer
from ...protocols.dedup import DedupTable, applications_channel
from ...protocols.proxy import ForwardTable, client_timeout
from .messages import (
    MAX_HOPS,
    NOOP,
    SENTINEL,
    AppendEntries,
    AppendReply,
    Entry,
    FromLeader,
    InstallSnapshot,
    RequestVote,
    Role,
    Snapshot,
    SnapshotReply,
    ToLeader,
    VoteReply,
)

if TYPE_CHECKING:
    from .config import RaftConfig

__all__ = ["RaftNode", "RoleChange", "ReplyTo", "PendingRead", "CasMismatch"]


class CasMismatch(NamedTuple):
    """The result of an applied compare-and-set that found ``current`` instead of the expected value."""

    current: Any


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
                                                "reads_local", "applies")

    def __init__(self, world: Host, name: str, cfg: RaftConfig, applies: AppliedEntries | None = None) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        #: the run's record of every entry any node applies (state machine safety), if kept
        self.applies = applies
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
        self.applied = applications_channel(world)  # None unless the clients retry
        self.snapshots_taken = 0
        self.snapshots_sent = 0
        self.snapshots_installed = 0
        self.snapshot_records_sent = 0
        ttl = cfg.forward_ttl
        self.forwards = ForwardTable(ttl if ttl is not None else client_timeout(world))
        self.panics = 0

    # -- lifecycle ----------------------------------------------------------------
    def boot(self) -> None:
        disk = self.disk
        self.term: int = disk.setdefault("term", 0)
        self.voted_for: str | None = disk.setdefault("voted_for", None)
        # log[i] is entry log_start + i; log[0] is the last entry the snapshot covers (a
        # payload-free stand-in keeping its term), or the sentinel without a snapshot
        self.log: list[Entry] = disk.setdefault("log", [SENTINEL])
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.leader_contact = -math.inf  # monotonic clock when a leader was last heard
        self.waiters: dict[int, list[ReplyTo]] = {}  # op_id -> reply targets
        self.forwards.clear()  # op_id -> client, for requests this node forwarded
        self.touched: set[int] = set()  # write op_ids this node forwarded or appended
        self.refused_ops: set[int] = set()  # write op_ids this node answered ok=False
        self.route_floor = 0  # with dedup_window: touched/refused_ops forgot every id up to this
        self._load_state_machine(disk.get("snapshot"))
        self.votes: set[str] = set()
        self._deadline = 0.0  # election deadline, on the monotonic clock
        self._etimer: Timer | None = None
        self._etimer_due = 0.0  # when the pending election timer fires, on the monotonic clock
        self._clear_leader_state()
        self._set_role(Role.FOLLOWER, "boot")
        self._reset_election_timer()

    def _load_state_machine(self, snap: Snapshot | None) -> None:
        """Start the state machine from ``snap`` (or empty); the log after it is replayed as commits advance."""
        if snap is None:
            self.log_start = 0
            self.data: dict[Any, Any] = {}
            self.results: dict[int, Any] = {}  # op_id -> result (a CasMismatch: cas not applied), every applied op
            self.floor = 0  # with dedup_window: every op id up to this counts as applied
            # for the convergence measure: entries per term in the applied prefix, and for each
            # key the prefix (as those counts) up to the entry that set its value
            self._applied_terms: dict[int, int] = {}
            self._key_versions: dict[Any, dict[int, int]] = {}
            # idempotency keys of decided writes and cas: rebuilt by replaying the log
            self.dedup = DedupTable(self.cfg.dedup)
        else:
            self.log_start = snap.last_index
            self.data = dict(snap.data)
            self.results = dict(snap.results)
            self.floor = snap.floor
            self._applied_terms = dict(snap.applied_terms)
            self._key_versions = dict(snap.key_versions)  # the per-key dicts are never mutated
            # the keys decided by the entries the snapshot replaced: the log no longer has them
            keys = snap.idempotency_keys
            self.dedup = keys.copy() if keys is not None else DedupTable(self.cfg.dedup)
        self.commit_index = self.log_start
        self.last_applied = self.log_start

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
        self.round_clock: deque[float] = deque([0.0])  # send time of rounds round_base, round_base + 1, ...
        self.round_base = 0
        self.snapshot_sent: dict[str, float] = {}  # peer -> when its InstallSnapshot left
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
        now = self.monotonic()
        self._deadline = deadline = now + self._et_min + self._et_span * self._u()
        timer = self._etimer
        if timer is None or self._etimer_due > deadline:
            if timer is not None:
                timer.cancel()
            delay = deadline - now
            self._etimer = self.set_timer(delay, self._on_election_timer)
            self._etimer_due = now + delay  # as the timer computes it (not always == deadline)

    def _on_election_timer(self) -> None:
        self._etimer = None
        now = self.monotonic()
        rest = self._deadline - now
        if rest > 1e-9:  # the deadline moved while the timer was pending
            self._etimer = self.set_timer(rest, self._on_election_timer)
            self._etimer_due = now + rest
            return
        self._reset_election_timer()
        if self.role == Role.LEADER:
            return
        if self.cfg.pre_vote:
            self._start_prevote()
        else:
            self._start_election()

    def _hears_leader(self) -> bool:
        """Whether this node leads, or heard its leader less than election_timeout_min ago (monotonic clock)."""
        if self.role == Role.LEADER:
            return True
        return self.leader is not None and self.monotonic() - self.leader_contact < self._et_min

    def _last(self) -> tuple[int, int]:
        return self.log_start + len(self.log) - 1, self.log[-1].term

    def _term_at(self, index: int) -> int:
        return self.log[index - self.log_start].term

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
        log, start = self.log, self.log_start
        n = start + len(log)
        now = self.monotonic()
        for peer in self.peers:
            self.next_index[peer] = n
            self.match_index[peer] = 0
            self.acked_seq[peer] = 0
            self.last_ack[peer] = now
        for i in range(self.last_applied + 1, n):
            entry = log[i - start]
            if entry.op != NOOP:
                self.op_index[entry.op_id] = i
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
            now = self.monotonic()
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
        self.round_clock.append(self.monotonic())
        for peer in self.peers:
            self._send_append(peer)
        if not self.peers:
            self._update_quorum()

    def _send_append(self, peer: str) -> None:
        log, start = self.log, self.log_start
        nxt = self.next_index[peer]
        if nxt <= start:  # the entries it needs are compacted away
            self._send_snapshot(peer)
            return
        p = nxt - start
        entries = tuple(log[p : p + self.cfg.max_batch]) if p < len(log) else ()
        self.next_index[peer] = nxt + len(entries)  # optimistic; a refusal moves it back
        self.send(peer, AppendEntries(self.term, self.name, nxt - 1, log[p - 1].term, entries,
                                      self.commit_index, self.hb_seq))

    def _send_snapshot(self, peer: str) -> None:
        """InstallSnapshot, unless one is in flight; then a heartbeat from the snapshot's base.

        The heartbeat keeps the follower's election timer and the leader's rounds
        going while the snapshot travels; the follower refuses it (its log ends
        before the base), and :meth:`handle_AppendReply` does not answer that
        refusal with another send while the snapshot is in flight.
        """
        now = self.now
        if now - self.snapshot_sent.get(peer, -math.inf) >= self.cfg.snapshot_timeout:
            snap: Snapshot = self.disk["snapshot"]
            self.snapshot_sent[peer] = now
            self.snapshots_sent += 1
            self.snapshot_records_sent += snap.size
            msg = InstallSnapshot(self.term, self.name, snap, self.hb_seq)
            transfer = snap.size * self.cfg.snapshot_record_time
            if transfer > 0:  # the bytes leave over that long; the message arrives a latency after
                self.set_timer(transfer, self.send, peer, msg)
            else:
                self.send(peer, msg)
        else:
            self.send(peer, AppendEntries(self.term, self.name, self.log_start, self.log[0].term, (),
                                          self.commit_index, self.hb_seq))

    def _snapshot_in_flight(self, peer: str) -> bool:
        return self.now - self.snapshot_sent.get(peer, -math.inf) < self.cfg.snapshot_timeout

    def handle_AppendReply(self, msg: AppendReply, src: str) -> None:
        if msg.term > self.term:
            self._become_follower(msg.term, None, "higher term")
            return
        if self.role != Role.LEADER or msg.term != self.term or msg.seq == 0:
            return  # stale, or a refusal of an older leader's AppendEntries that only has our term
        self.last_ack[src] = self.monotonic()
        if msg.seq > self.acked_seq[src]:
            self.acked_seq[src] = msg.seq
            self._update_quorum()
        if msg.success:
            if msg.match >= self.log_start + len(self.log):
                # only a disk that forgot (sim.fsync): the follower took another leader's entries in our term
                self._panic(f"{src} matched index {msg.match}, beyond this leader's log "
                            f"(last index {self.log_start + len(self.log) - 1}) in term {self.term}")
                return
            if msg.match > self.match_index[src]:
                self.match_index[src] = msg.match
                self._advance_commit()
            if self.next_index[src] <= msg.match:
                self.next_index[src] = msg.match + 1
            if self.next_index[src] < self.log_start + len(self.log):  # catching up a lagging follower
                self._send_append(src)
            return
        # refused: skip back using the conflict hint, never below what is known to match
        log, start = self.log, self.log_start
        nxt = msg.conflict_index
        if msg.conflict_term:
            i = start + len(log) - 1
            while i > start and log[i - start].term > msg.conflict_term:
                i -= 1
            if i > start and log[i - start].term == msg.conflict_term:
                nxt = i + 1
        self.next_index[src] = min(max(nxt, self.match_index[src] + 1), start + len(log))
        if self.next_index[src] <= start and self._snapshot_in_flight(src):
            return  # the snapshot on its way answers this refusal
        self._send_append(src)

    def handle_SnapshotReply(self, msg: SnapshotReply, src: str) -> None:
        if msg.term > self.term:
            self._become_follower(msg.term, None, "higher term")
            return
        if self.role != Role.LEADER or msg.term != self.term or msg.seq == 0:
            return
        self.snapshot_sent.pop(src, None)
        self.last_ack[src] = self.monotonic()
        if msg.seq > self.acked_seq[src]:
            self.acked_seq[src] = msg.seq
            self._update_quorum()
        if msg.match > self.match_index[src]:
            self.match_index[src] = msg.match
            self._advance_commit()
        if self.next_index[src] <= msg.match:
            self.next_index[src] = msg.match + 1
        if self.next_index[src] < self.log_start + len(self.log):
            self._send_append(src)

    def _advance_commit(self) -> None:
        """Commit the highest index stored by a majority, if it is of the current term."""
        if self.peers:
            m = sorted(self.match_index.values(), reverse=True)[self.majority - 2]
        else:
            m = self.log_start + len(self.log) - 1
        if m > self.commit_index and self._term_at(m) == self.term:
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
        clocks = self.round_clock
        while self.round_base < q:  # rounds before q are never looked at again
            clocks.popleft()
            self.round_base += 1
        self.lease_until = max(self.lease_until, clocks[0] + self._lease)
        self._serve_reads()
        pending = self.pending_reads
        if pending and pending[-1].need > q and q >= self.hb_seq:
            self._broadcast()  # reads that arrived during the round need one more

    # -- replication: follower side --------------------------------------------------
    def _accept_leader(self, term: int, leader: str) -> None:
        """Follow ``leader`` of ``term`` (>= ours), whose AppendEntries or InstallSnapshot just arrived."""
        if term > self.term or self.role != Role.FOLLOWER:
            self._become_follower(term, leader, "new leader")
        else:
            self.leader = leader
            self._reset_election_timer()
        self.leader_contact = self.monotonic()

    def handle_AppendEntries(self, msg: AppendEntries, src: str) -> None:
        if msg.term < self.term:  # seq 0: answers no round of any leader of our term
            self.send(src, AppendReply(self.term, False, 0, 0, 0, 0))
            return
        self._accept_leader(msg.term, msg.leader)
        log, start = self.log, self.log_start
        prev = msg.prev_index
        last = start + len(log) - 1
        if prev > last:
            self.send(src, AppendReply(self.term, False, 0, last + 1, 0, msg.seq))
            return
        entries = msg.entries
        if prev < start:
            # our snapshot covers prev: entries up to start are committed, so they equal the
            # leader's (Leader Completeness); check only what lies beyond
            entries = entries[start - prev :]
            prev = start
        elif log[prev - start].term != msg.prev_term:
            term = log[prev - start].term
            first = prev
            while first > start + 1 and log[first - 1 - start].term == term:
                first -= 1
            self.send(src, AppendReply(self.term, False, 0, first, term, msg.seq))
            return
        if entries:
            # keep entries that are already there; cut the log at the first conflict
            i, n, idx = 0, len(entries), prev + 1
            while i < n and idx <= last and log[idx - start].term == entries[i].term:
                i += 1
                idx += 1
            if i < n:
                if idx <= last:
                    if idx <= self.commit_index:
                        self._panic(f"leader {src} of term {msg.term} overwrites committed entry {idx}")
                        return
                    del log[idx - start :]
                log.extend(entries[i:])
        match = prev + len(entries)
        if msg.commit > self.commit_index and match > self.commit_index:
            self.commit_index = min(msg.commit, match)
            self._apply()
        self.send(src, AppendReply(self.term, True, match, 0, 0, msg.seq))

    def _panic(self, why: str) -> None:
        """A broken invariant (only a disk that forgot what it was told, see :mod:`sim.fsync`, causes one):
        like etcd's raft, the process stops rather than apply a second history; it restarts only when
        the fault schedule recovers it."""
        self.panics += 1
        self.world.record_node_event(self.name, f"raft panic: {why}")
        self.crash(power_loss=False)

    # -- state machine ------------------------------------------------------------------
    def _apply(self) -> None:
        """Apply committed entries in order; an operation id already applied is skipped."""
        if self.commit_index > self.max_commit:
            self.max_commit = self.commit_index
        log, start, data, results, waiters = self.log, self.log_start, self.data, self.results, self.waiters
        window = self.cfg.dedup_window
        record = None if self.applies is None else self.applies.record
        now, name, life = self.now, self.name, self.crashes
        while self.last_applied < self.commit_index:
            self.last_applied += 1
            entry = log[self.last_applied - start]
            term, op_id, op, key, value = entry[:5]
            if record is not None:
                record(now, name, life, self.last_applied, term, op_id)
            self._applied_terms[term] = self._applied_terms.get(term, 0) + 1
            if op == NOOP:
                continue
            if op_id not in results:
                if op_id <= self.floor:
                    # forgotten: it may have been applied already, so it is not applied now,
                    # and its client hears nothing (it timed out long ago)
                    self.op_index.pop(op_id, None)
                    waiters.pop(op_id, None)
                    continue
                idem = entry.idempotency_key
                if op == "read":
                    results[op_id] = data.get(key)
                elif idem is not None and self._decided(idem, entry.at, op_id):
                    pass  # a retry of an operation decided before: its first answer, nothing applied
                else:
                    if op == "cas":  # decided here, at its place in the log, so every replica agrees
                        expected, value = value
                        current = data.get(key)
                        outcome = None if current == expected else CasMismatch(current)
                    else:
                        outcome = None
                    if outcome is None:
                        data[key] = value
                        self._key_versions[key] = dict(self._applied_terms)
                        if self.applied is not None:
                            self.applied.record(self.now, self.name, self.last_applied, op_id, idem, key, value)
                    results[op_id] = outcome
                    if idem is not None:
                        self.dedup.store(idem, entry.at, outcome)
                if window and len(results) > 2 * window:
                    self._forget_results(window)
            self.op_index.pop(op_id, None)
            targets = waiters.pop(op_id, None)
            if targets:
                reply = _result_reply(op_id, results[op_id])
                for target in targets:
                    self._reply(target, reply)
        if self.pending_reads:
            self._serve_reads()
        threshold = self.cfg.snapshot_threshold
        if threshold and self.last_applied - start >= threshold:
            self._take_snapshot()

    def _forget_results(self, keep: int) -> None:
        """Keep the ``keep`` newest operation ids; the others count as applied from now on.

        Op ids grow with invocation time, so the forgotten ones belong to
        operations invoked before every remembered one. It runs after the same
        applied entry on every node, so every state machine forgets the same ids.
        """
        results = self.results
        ids = sorted(results)
        old = ids[: len(ids) - keep]
        for op_id in old:
            del results[op_id]
        self.floor = max(self.floor, old[-1])

    # -- log compaction (section 7 of the Raft paper) -------------------------------------
    def _take_snapshot(self) -> None:
        """Save the state machine at ``last_applied`` and drop the log up to it."""
        index = self.last_applied
        cut = index - self.log_start
        snap = Snapshot(index, self.log[cut].term, dict(self.data), dict(self.results), self.floor,
                        dict(self._applied_terms), dict(self._key_versions), self.dedup.copy())
        self.snapshots_taken += 1
        self._install(snap, self.log[cut + 1 :])

    def _install(self, snap: Snapshot, rest: Sequence[Entry]) -> None:
        """Make ``snap`` the durable base: the log becomes its stand-in entry followed by ``rest``."""
        log = self.log
        log[:] = [Entry(snap.last_term, 0, NOOP, None, None), *rest]
        self.disk["snapshot"] = snap
        self.log_start = snap.last_index
        if self.applies is not None:
            self.applies.compacted(self.name, snap.last_index)

    def handle_InstallSnapshot(self, msg: InstallSnapshot, src: str) -> None:
        if msg.term < self.term:
            self.send(src, SnapshotReply(self.term, 0, 0))
            return
        self._accept_leader(msg.term, msg.leader)
        snap = msg.snapshot
        if snap.last_index > self.commit_index:
            start = self.log_start
            last = start + len(self.log) - 1
            rest: list[Entry] = []
            if snap.last_index <= last and self._term_at(snap.last_index) == snap.last_term:
                rest = self.log[snap.last_index - start + 1 :]  # §7: keep the entries that follow it
            self._install(snap, rest)
            self._load_state_machine(snap)
            self.snapshots_installed += 1
            if self.max_commit < snap.last_index:
                self.max_commit = snap.last_index
            for op_id in [op_id for op_id in self.waiters if op_id in self.results]:
                reply = _result_reply(op_id, self.results[op_id])
                for target in self.waiters.pop(op_id):
                    self._reply(target, reply)
        # everything up to the snapshot's index is committed here, so equals the leader's log
        self.send(src, SnapshotReply(self.term, snap.last_index, msg.seq))

    def _decided(self, idem: Any, at: float, op_id: int) -> bool:
        """Whether an operation with idempotency key ``idem`` was decided before (as of time ``at``).

        If so its answer (None: applied, or a :class:`CasMismatch`) becomes the
        result of ``op_id``, the retry being applied now, without applying it.
        """
        seen, answer = self.dedup.lookup(idem, at)
        if seen:
            self.results[op_id] = answer
        return seen

    # -- clients ----------------------------------------------------------------------------
    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        self._route(msg, ReplyTo(src, False), self.name, 0)

    def handle_ToLeader(self, msg: ToLeader, src: str) -> None:
        self._route(msg.request, ReplyTo(msg.origin, True), msg.origin, msg.hops)

    def handle_FromLeader(self, msg: FromLeader, src: str) -> None:
        client = self.forwards.pop(msg.reply.op_id, self.now)
        if client is not None:
            self.send(client, msg.reply)

    def _reply(self, target: ReplyTo, reply: ClientReply) -> None:
        dst, via_origin = target
        self.send(dst, FromLeader(reply) if via_origin else reply)

    def _route(self, req: ClientRequest, target: ReplyTo, origin: str, hops: int) -> None:
        """Serve ``req`` as the leader, pass it on to the leader, or refuse it if that is safe."""
        first_hop = hops == 0
        write = req.op != "read"  # a write or a compare-and-set: it may enter the log
        if first_hop and write and (req.op_id in self.refused_ops or req.op_id <= self.route_floor):
            return  # a late duplicate of a refused write must stay refused (or a forgotten one): drop it
        if self.role == Role.LEADER:
            if first_hop and write:
                self._touch(req.op_id)
            self._serve(req, target)
            return
        leader = self.leader
        if leader is not None and self.cfg.forward and hops < MAX_HOPS:
            if first_hop:
                self.forwards.add(req.op_id, target.dst, self.now)
                if write:
                    self._touch(req.op_id)
            self.forwarded += 1
            self.send(leader, ToLeader(req, origin, hops + 1))
            return
        if first_hop and (not write or req.op_id not in self.touched):
            # every copy of this request came through here and none went on: safe to refuse
            self.refused += 1
            if write:
                self.refused_ops.add(req.op_id)
                self._bound_route_sets()
            error = "no leader known" if leader is None else f"not the leader; leader is {leader}"
            self._reply(target, ClientReply(req.op_id, False, error=error))
        # otherwise drop it: a copy may be in some log, so the client must see a timeout

    def _touch(self, op_id: int) -> None:
        self.touched.add(op_id)
        self._bound_route_sets()

    def _bound_route_sets(self) -> None:
        """With ``dedup_window``: keep the newest ids of ``touched`` and ``refused_ops``.

        An id at or below ``route_floor`` is then treated as both touched and
        refused: a request that old is dropped, never refused nor served.
        """
        keep = self.cfg.dedup_window
        for ids in (self.touched, self.refused_ops):
            if keep and len(ids) > 2 * keep:
                old = sorted(ids)[: len(ids) - keep]
                ids.difference_update(old)
                self.route_floor = max(self.route_floor, old[-1])

    def _serve(self, req: ClientRequest, target: ReplyTo) -> None:
        mode = self.cfg.read_mode
        if req.op != "read" or mode == "log":
            self._propose(req, target)
        elif mode == "local":
            self.reads_local += 1
            self._reply(target, ClientReply(req.op_id, True, self.data.get(req.key)))
        else:
            self._read(req, target)

    def _propose(self, req: ClientRequest, target: ReplyTo) -> None:
        op_id = req.op_id
        if op_id in self.results:  # a duplicate of an applied operation
            self._reply(target, _result_reply(op_id, self.results[op_id]))
            return
        if op_id <= self.floor:
            return  # forgotten (dedup_window): it may have been applied; the client has timed out
        targets = self.waiters.setdefault(op_id, [])
        if target not in targets:
            targets.append(target)
        if op_id in self.op_index:  # a duplicate of an entry already in the log
            return
        self.log.append(Entry(self.term, op_id, req.op, req.key, req.value, req.idempotency_key, self.now))
        self.op_index[op_id] = self.log_start + len(self.log) - 1
        self._broadcast()
        self._advance_commit()

    def _read(self, req: ClientRequest, target: ReplyTo) -> None:
        """Read-index (and lease) reads at the leader."""
        read_index = max(self.commit_index, self.term_start)
        if (self.cfg.read_mode == "lease" and self.commit_index >= self.term_start
                and self.monotonic() < self.lease_until):
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


def _result_reply(op_id: int, result: Any) -> ClientReply:
    """The answer to an applied operation: its result, or a refusal for a cas that found another value."""
    if isinstance(result, CasMismatch):
        return ClientReply(op_id, False, result.current, CAS_MISMATCH)
    return ClientReply(op_id, True, result)
