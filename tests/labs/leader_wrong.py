"""Lab 2 known-wrong solutions: each breaks one thing the reference gets right."""

from __future__ import annotations

from leader_reference import ELECTION_MS, Entry, Vote
from leader_reference import LeaderNode as Reference


class TermInMemory(Reference):
    """Persists the log but keeps the current term and its vote in memory: a node that restarts is back
    in term 0 with no vote, so after a power failure old terms are used again, by other leaders."""

    def boot(self):
        self.current = (0, None)                        # (term, voted_for), lost at every crash
        super().boot()

    @property
    def term(self):
        return self.current[0]

    def set_term(self, term, voted_for):
        self.current = (term, voted_for)

    def handle_RequestVote(self, msg, src):
        if msg.term > self.term:
            self.step_down(msg.term)
        up_to_date = (msg.last_term, msg.last_index) >= (self.term_at(len(self.log)), len(self.log))
        granted = msg.term == self.term and self.current[1] in (None, src) and up_to_date
        if granted:
            self.set_term(self.term, src)
            self.reset_election_timer()
        self.send(src, Vote(self.term, granted))


class CountsVoteMessages(Reference):
    """Counts vote messages instead of voters: a duplicated vote counts twice."""

    def on_election_timeout(self):
        super().on_election_timeout()
        self.granted = 1

    def handle_Vote(self, msg, src):
        if msg.term > self.term:
            self.step_down(msg.term)
        elif self.role == "candidate" and msg.term == self.term and msg.granted:
            self.granted += 1
            if self.granted >= self.majority:
                self.win()


class VotesWithoutLogCheck(Reference):
    """Grants its vote to any candidate of the current term, however old the candidate's log."""

    def handle_RequestVote(self, msg, src):
        if msg.term > self.term:
            self.step_down(msg.term)
        granted = msg.term == self.term and self.disk["voted_for"] in (None, src)
        if granted:
            self.set_term(self.term, src)
            self.reset_election_timer()
        self.send(src, Vote(self.term, granted))


class AcksOnAppend(Reference):
    """Acknowledges a write as soon as the leader has it in its own log, before a majority stores it."""

    def route(self, client, request, hops):
        if self.role == "leader" and request.op == "write" and request.op_id not in self.appended:
            self.appended.add(request.op_id)
            self.log.append(Entry(self.term, request))
            for peer in self.peers:
                self.send_append(peer)
            self.reply(client, request.op_id, True)
            return
        super().route(client, request, hops)


class LocalReads(Reference):
    """The leader answers reads from what it has applied, without going through the log."""

    def boot(self):
        super().boot()
        self.data = {}

    def apply_committed(self):
        for entry in self.log[self.applied:self.commit]:
            if entry.request.op == "write":
                self.data[entry.request.key] = entry.request.value
        super().apply_committed()

    def route(self, client, request, hops):
        if self.role == "leader" and request.op == "read":
            self.reply(client, request.op_id, True, self.data.get(request.key))
            return
        super().route(client, request, hops)


class FixedElectionTimeout(Reference):
    """Every node waits the same 200 ms before standing: after a leader is lost, votes split again and again."""

    def reset_election_timer(self):
        if self.election_timer is not None:
            self.election_timer.cancel()
        self.election_timer = self.set_timer(sum(ELECTION_MS) / 2, self.on_election_timeout)
