"""Lab 2 reference solution: Raft's election and log replication (kept out of the student material).

Figure 2 of the Raft paper, without snapshots or membership changes:

* durable (``self.disk``): the current term, the vote of that term and the log,
  each written before any message that depends on it is sent;
* elections: a follower that hears no leader for a random 150-300 ms becomes a
  candidate for the next term; a node grants one vote per term, and only to a
  candidate whose log is at least as up to date as its own (last term, then
  length); any message with a higher term turns a node into a follower;
* replication: the leader sends every peer the entries from its ``next_index``
  with the previous entry's index and term, on each new entry and every 50 ms;
  a follower whose log does not hold that previous entry refuses and says how
  long its log is, and the leader backs up. An entry is committed when a
  majority stores it and it is of the leader's term (older ones commit with it);
* clients: reads and writes both go through the log; a follower forwards a
  request to the leader it knows, the leader answers the client directly once
  the entry is applied. With no leader known a follower refuses a read (no
  effect, so certainly safe) and drops a write (a copy may be in some log: the
  client's timeout says "unknown").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sim.labs.leader import ClientRequest, LeaderBase

HEARTBEAT_MS = 50.0
ELECTION_MS = (150.0, 300.0)
MAX_HOPS = 3


class Entry(NamedTuple):
    term: int
    request: ClientRequest


@dataclass(frozen=True)
class RequestVote:
    term: int
    last_index: int
    last_term: int


@dataclass(frozen=True)
class Vote:
    term: int
    granted: bool


@dataclass(frozen=True)
class AppendEntries:
    term: int
    prev_index: int
    prev_term: int
    entries: tuple
    commit: int


@dataclass(frozen=True)
class AppendReply:
    term: int
    success: bool
    match: int          # success: the last index known to match; refusal: the follower's log length


@dataclass(frozen=True)
class Forward:
    client: str
    request: ClientRequest
    hops: int


class LeaderNode(LeaderBase):
    # -- state ----------------------------------------------------------------------------------
    def boot(self):
        self.disk.setdefault("term", 0)
        self.disk.setdefault("voted_for", None)
        self.log = self.disk.setdefault("log", [])       # entries; log index i is self.log[i - 1]
        self.role = "follower"
        self.leader = None
        self.commit = 0
        self.applied = 0
        self.votes = set()
        self.next_index = {}
        self.match_index = {}
        self.waiting = {}                                # op_id -> client to answer once applied
        self.appended = set()                            # op_ids this node appended as leader
        self.election_timer = None
        self.reset_election_timer()

    @property
    def term(self):
        return self.disk["term"]

    def set_term(self, term, voted_for):
        self.disk["term"] = term
        self.disk["voted_for"] = voted_for

    def term_at(self, index):
        return self.log[index - 1].term if index > 0 else 0

    def step_down(self, term):
        if term > self.term:
            self.set_term(term, None)
            self.leader = None
        self.role = "follower"

    # -- elections ---------------------------------------------------------------------------------
    def reset_election_timer(self):
        if self.election_timer is not None:
            self.election_timer.cancel()
        self.election_timer = self.set_timer(self.rng.uniform(*ELECTION_MS), self.on_election_timeout)

    def on_election_timeout(self):
        self.reset_election_timer()
        if self.role == "leader":
            return
        self.set_term(self.term + 1, self.name)
        self.role = "candidate"
        self.leader = None
        self.votes = {self.name}
        for peer in self.peers:
            self.send(peer, RequestVote(self.term, len(self.log), self.term_at(len(self.log))))

    def handle_RequestVote(self, msg, src):
        if msg.term > self.term:
            self.step_down(msg.term)
        up_to_date = (msg.last_term, msg.last_index) >= (self.term_at(len(self.log)), len(self.log))
        granted = (msg.term == self.term and self.disk["voted_for"] in (None, src) and up_to_date)
        if granted:
            self.set_term(self.term, src)
            self.reset_election_timer()
        self.send(src, Vote(self.term, granted))

    def handle_Vote(self, msg, src):
        if msg.term > self.term:
            self.step_down(msg.term)
        elif self.role == "candidate" and msg.term == self.term and msg.granted:
            self.votes.add(src)
            if len(self.votes) >= self.majority:
                self.win()

    def win(self):
        self.role = "leader"
        self.leader = self.name
        self.become_leader(self.term)
        self.appended = set()
        self.next_index = {p: len(self.log) + 1 for p in self.peers}
        self.match_index = dict.fromkeys(self.peers, 0)
        self.heartbeat(self.term)

    def heartbeat(self, term):
        if self.role == "leader" and self.term == term:
            for peer in self.peers:
                self.send_append(peer)
            self.set_timer(HEARTBEAT_MS, self.heartbeat, term)

    # -- replication -----------------------------------------------------------------------------
    def send_append(self, peer):
        prev = self.next_index[peer] - 1
        self.send(peer, AppendEntries(self.term, prev, self.term_at(prev), tuple(self.log[prev:]), self.commit))

    def handle_AppendEntries(self, msg, src):
        if msg.term < self.term:
            self.send(src, AppendReply(self.term, False, len(self.log)))
            return
        self.step_down(msg.term)
        self.leader = src
        self.reset_election_timer()
        if msg.prev_index > len(self.log) or self.term_at(msg.prev_index) != msg.prev_term:
            self.send(src, AppendReply(self.term, False, min(len(self.log), msg.prev_index - 1)))
            return
        for index, entry in enumerate(msg.entries, start=msg.prev_index + 1):
            if index <= len(self.log) and self.log[index - 1].term != entry.term:
                del self.log[index - 1:]                 # a conflicting suffix: never committed, drop it
            if index > len(self.log):
                self.log.append(entry)
        match = msg.prev_index + len(msg.entries)
        if min(msg.commit, match) > self.commit:
            self.commit = min(msg.commit, match)
            self.apply_committed()
        self.send(src, AppendReply(self.term, True, match))

    def handle_AppendReply(self, msg, src):
        if msg.term > self.term:
            self.step_down(msg.term)
            return
        if self.role != "leader" or msg.term != self.term:
            return
        if msg.success:
            self.match_index[src] = max(self.match_index[src], msg.match)
            self.next_index[src] = max(self.next_index[src], msg.match + 1)
            self.advance_commit()
        else:
            self.next_index[src] = max(1, min(self.next_index[src] - 1, msg.match + 1))
            self.send_append(src)

    def advance_commit(self):
        for n in range(len(self.log), self.commit, -1):
            if self.term_at(n) != self.term:
                return                                   # older terms' entries commit only under a newer one
            if 1 + sum(self.match_index[p] >= n for p in self.peers) >= self.majority:
                self.commit = n
                self.apply_committed()
                return

    def apply_committed(self):
        while self.applied < self.commit:
            self.applied += 1
            entry = self.log[self.applied - 1]
            result = self.apply(self.applied, entry.term, entry.request)
            client = self.waiting.pop(entry.request.op_id, None)
            if client is not None:
                self.reply(client, entry.request.op_id, True, result)

    # -- clients ---------------------------------------------------------------------------------
    def handle_ClientRequest(self, msg, src):
        self.route(src, msg, 0)

    def handle_Forward(self, msg, src):
        self.route(msg.client, msg.request, msg.hops)

    def route(self, client, request, hops):
        if self.role == "leader":
            self.waiting[request.op_id] = client
            if request.op_id not in self.appended:       # a duplicate is answered when the first copy applies
                self.appended.add(request.op_id)
                self.log.append(Entry(self.term, request))
                for peer in self.peers:
                    self.send_append(peer)
        elif self.leader is not None and hops < MAX_HOPS:
            self.send(self.leader, Forward(client, request, hops + 1))
        elif request.op == "read" and hops == 0:
            self.reply(client, request.op_id, False, error="no leader known")
