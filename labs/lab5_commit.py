"""Lab 5: two-phase commit that stays atomic under crashes and decides without its coordinator.

The coordinator n1 turns each client request into a transaction over two to four
of the participants n2..n5 and calls start_transaction(gtid, participants). Make
every transaction atomic (committed everywhere or aborted everywhere) under
crashes, partitions, loss and duplication; let an uncertain participant learn the
outcome from the other participants while the coordinator is down (cooperative
termination); and commit everything when nothing fails. The statement, the
tests, the bound and the API are in labs/README.md (section "Lab 5"); grade with

    capsim lab grade lab5 lab5_commit.py

Hints: the log (self.write_log / self.log) is the only thing that survives a crash,
and a write is durable only when its callback runs. Decide first, durably, then
tell. A participant that voted yes may not change its mind on its own. Timeouts:
self.config.vote_timeout, self.config.decision_timeout, self.config.retry_interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.labs.commit import CoordinatorBase, ParticipantBase, Vote

# Messages: small frozen dataclasses. Rename, change, add as you need. Vote is the lab's
# (ParticipantBase.vote sends it); the coordinator receives it in handle_Vote.


@dataclass(frozen=True)
class Prepare:
    """Coordinator -> participant: can you commit your part of `gtid`? (The participants are
    listed so that each knows whom else it may ask.)"""

    gtid: str
    participants: tuple


@dataclass(frozen=True)
class Commit:
    gtid: str


@dataclass(frozen=True)
class Abort:
    gtid: str


@dataclass(frozen=True)
class Ack:
    """Participant -> coordinator: the commit is durable here."""

    gtid: str


@dataclass(frozen=True)
class DecisionRequest:
    """An uncertain participant asks the coordinator, or another participant, what was decided."""

    gtid: str


class Coordinator(CoordinatorBase):
    """The coordinator, n1.

    Available: self.name, self.participants, self.log, self.write_log(gtid, record, then, *args),
    self.decide(gtid, "commit" | "abort"), self.send(dst, msg), self.set_timer(ms, fn, *args),
    self.config (timeouts), self.now.
    """

    def boot(self):
        # Runs at start and after every recovery: rebuild what you need from self.log, a tuple
        # of (gtid, record) pairs in the order they became durable.
        self.txns = {}
        # TODO: after a crash, finish what the log says was decided.

    def start_transaction(self, gtid, participants):
        # TODO: ask every participant of the transaction to prepare; do not wait forever for votes.
        raise NotImplementedError("TODO: start_transaction")

    def handle_Vote(self, msg: Vote, src: str):
        # TODO: decide once the votes allow it. A commit must be durable in the log before
        # anyone hears of it (self.decide tells the client).
        raise NotImplementedError("TODO: handle_Vote")

    def handle_Ack(self, msg: Ack, src: str):
        # TODO: once every participant has the commit, the log may say the transaction is over.
        raise NotImplementedError("TODO: handle_Ack")

    def handle_DecisionRequest(self, msg: DecisionRequest, src: str):
        # TODO: answer with the decision, if there is one. What does a coordinator answer about
        # a transaction it has no record of?
        raise NotImplementedError("TODO: handle_DecisionRequest")


class Participant(ParticipantBase):
    """A participant, n2..n5.

    Available: self.name, self.coordinator, self.can_commit(gtid), self.vote(gtid, yes),
    self.decide(gtid, "commit" | "abort"), self.log, self.write_log(gtid, record, then, *args),
    self.send(dst, msg), self.set_timer(ms, fn, *args), self.config (timeouts), self.now.
    """

    def boot(self):
        # Runs at start and after every recovery. A transaction the log shows prepared but not
        # decided is in doubt: this participant voted yes and must find out the outcome.
        self.txns = {}
        # TODO: rebuild from self.log, and start finding out about the transactions in doubt.

    def handle_Prepare(self, msg: Prepare, src: str):
        # TODO: vote no if can_commit says so; otherwise log that you are prepared and vote yes
        # once that record is durable. Prepares may arrive twice, or after an Abort.
        raise NotImplementedError("TODO: handle_Prepare")

    def handle_Commit(self, msg: Commit, src: str):
        # TODO: apply (self.decide) and acknowledge; the coordinator may forget the transaction
        # once everyone acknowledged, so what must happen before the Ack?
        raise NotImplementedError("TODO: handle_Commit")

    def handle_Abort(self, msg: Abort, src: str):
        # TODO: abort here (self.decide).
        raise NotImplementedError("TODO: handle_Abort")

    def handle_DecisionRequest(self, msg: DecisionRequest, src: str):
        # TODO (cooperative termination): tell a peer the outcome if you know it. If you have not
        # voted, you may still abort, and then say so; if you are uncertain yourself, you cannot help.
        raise NotImplementedError("TODO: handle_DecisionRequest")
