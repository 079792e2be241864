"""Lab 2: leader-based replication with a view change (a Raft-style log).

Five nodes (n1..n5) elect a leader for each term and replicate a log of client
operations. A client sends ClientRequest(op_id, op, key, value) with op "read"
or "write" to the node next to it and waits 500 ms for a ClientReply. A node
that does not lead passes the request on to the leader; the leader appends it
to its log, replicates it, and answers the client once a majority stores it
and it has been applied. The statement, the tests and the API are in
labs/README.md (section "Lab 2"); grade with

    capsim lab grade lab2 lab2_leader.py

Two calls are part of the API and graded: self.become_leader(term) when this
node wins an election, and self.apply(index, term, request) for each committed
entry, in index order (it returns what a read returns).

Hints: follow Figure 2 of the Raft paper (Ongaro and Ousterhout, "In Search of
an Understandable Consensus Algorithm"). What a node must remember across a
crash goes in self.disk, before it sends anything that depends on it. Random
election timeouts keep candidates from splitting the vote forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sim.labs.leader import ClientRequest, LeaderBase

HEARTBEAT_MS = 50.0
ELECTION_MS = (150.0, 300.0)   # draw each election timeout with self.rng.uniform(*ELECTION_MS)


class Entry(NamedTuple):
    """One log entry: the term of the leader that appended it, and the client's request."""

    term: int
    request: ClientRequest


# Messages between nodes: small frozen dataclasses. Rename, change, add as you need.


@dataclass(frozen=True)
class RequestVote:
    """Candidate -> node: vote for me in `term`; my log ends at `last_index`, of term `last_term`."""

    term: int
    last_index: int
    last_term: int


@dataclass(frozen=True)
class Vote:
    term: int
    granted: bool


@dataclass(frozen=True)
class AppendEntries:
    """Leader -> follower: after the entry at `prev_index` (of term `prev_term`) come `entries`;
    everything up to `commit` is committed. No entries: a heartbeat."""

    term: int
    prev_index: int
    prev_term: int
    entries: tuple
    commit: int


@dataclass(frozen=True)
class AppendReply:
    """Follower -> leader. `match`: on success, the last index now known to equal the leader's log;
    on refusal, a hint where the leader should back up to (e.g. this follower's log length)."""

    term: int
    success: bool
    match: int


@dataclass(frozen=True)
class Forward:
    """A client's request on its way to the leader; the leader answers `client` directly.
    `hops` counts the nodes it went through: two nodes that each think the other leads
    would pass it back and forth, so give up after a few."""

    client: str
    request: ClientRequest
    hops: int


class LeaderNode(LeaderBase):
    """One node: follower, candidate or leader.

    Available: self.name, self.nodes, self.peers, self.majority, self.disk, self.rng,
    self.send(dst, msg), self.set_timer(ms, fn, *args) (returns a timer with .cancel()),
    self.reply(client, op_id, ok, value, error), self.become_leader(term),
    self.apply(index, term, request), self.now.
    """

    def boot(self):
        # Runs at start and after every recovery. self.disk survives crashes; nothing else does.
        self.log = self.disk.setdefault("log", [])     # Entry objects; log index i is self.log[i - 1]
        # TODO: what else must survive a crash? Keep it in self.disk as well.
        self.role = "follower"
        self.leader = None                             # the leader this node knows of, if any
        self.commit = 0                                # highest index known to be committed
        self.applied = 0                               # highest index passed to self.apply
        # TODO: start the election timer.

    # -- elections ------------------------------------------------------------------------------
    def on_election_timeout(self):
        # TODO: no leader heard from for a while: become a candidate for the next term and ask for votes.
        raise NotImplementedError("TODO: on_election_timeout")

    def handle_RequestVote(self, msg: RequestVote, src: str):
        # TODO: grant at most one vote per term, and only to a candidate whose log is at least as
        # up to date as this node's (compare the last entries' terms, then the lengths).
        raise NotImplementedError("TODO: handle_RequestVote")

    def handle_Vote(self, msg: Vote, src: str):
        # TODO: count the votes of distinct nodes; with a majority, lead: call self.become_leader(term)
        # and start sending AppendEntries (heartbeats every HEARTBEAT_MS).
        raise NotImplementedError("TODO: handle_Vote")

    # -- replication ------------------------------------------------------------------------------
    def handle_AppendEntries(self, msg: AppendEntries, src: str):
        # TODO: refuse an older term; refuse if the log has no entry at prev_index of prev_term;
        # otherwise drop any conflicting suffix, append what is missing, learn the commit index,
        # apply what is newly committed, and answer.
        raise NotImplementedError("TODO: handle_AppendEntries")

    def handle_AppendReply(self, msg: AppendReply, src: str):
        # TODO: on success, note how far this follower matches; an entry of the current term stored
        # by a majority is committed (and every entry before it). On refusal, back up and resend.
        raise NotImplementedError("TODO: handle_AppendReply")

    # -- clients --------------------------------------------------------------------------------------
    def handle_ClientRequest(self, msg: ClientRequest, src: str):
        # TODO: the leader appends the request to its log (reads too) and answers `src` with
        # self.reply(...) once the entry is applied; other nodes forward it to the leader they know.
        # The network may duplicate a request: do not append the same op_id twice.
        raise NotImplementedError("TODO: handle_ClientRequest")

    def handle_Forward(self, msg: Forward, src: str):
        # TODO: as handle_ClientRequest, answering msg.client.
        raise NotImplementedError("TODO: handle_Forward")
