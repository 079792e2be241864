"""Lab 5 reference solution: 2PC with presumed abort and cooperative termination (kept out of the student material).

Coordinator. Sends Prepare to the transaction's participants and waits
``vote_timeout`` for the votes: any no, or a missing vote, aborts (nothing is
logged for an abort: presumed abort). All yes: the commit record is written to
the log, and only once it is durable is the decision final: the client is told and
Commit is sent, again every ``retry_interval`` until every participant has
acknowledged; then an end record lets recovery forget it. Asked about a
transaction it has no record of, it answers Abort. At recovery it resends Commit
for every commit record without an end record.

Participant. On Prepare: if the local check fails, it aborts and votes no;
otherwise it writes a prepared record (with the participant list) and votes yes
only once that record is durable. From then on it is uncertain: after
``decision_timeout`` without a decision it asks the coordinator and every other
participant (DecisionRequest), again every ``retry_interval``. It answers a peer's
request with the outcome if it knows it; if it has not voted at all it aborts
unilaterally (forcing the abort record before it answers, so that a later Prepare
gets a no); if it is uncertain itself, or still writing its prepared record, it
stays silent. A commit is written to the log before it is applied and
acknowledged (the coordinator forgets a transaction once all acknowledged). At
recovery every prepared record without an outcome is in doubt and asked about at
once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.labs.commit import CoordinatorBase, ParticipantBase, Vote


@dataclass(frozen=True)
class Prepare:
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
    gtid: str


@dataclass(frozen=True)
class DecisionRequest:
    gtid: str


class Coordinator(CoordinatorBase):
    def boot(self):
        self.txns = {}   # gtid -> {"participants", "votes", "state": collecting|committing|committed, "acks"}
        ended = {gtid for gtid, record in self.log if record == "end"}
        for gtid, record in self.log:
            if isinstance(record, tuple) and record[0] == "commit" and gtid not in ended:
                self.txns[gtid] = {"participants": record[1], "votes": {}, "state": "committed", "acks": set()}
                self._send_commit(gtid)

    def start_transaction(self, gtid, participants):
        self.txns[gtid] = {"participants": participants, "votes": {}, "state": "collecting", "acks": set()}
        for p in participants:
            self.send(p, Prepare(gtid, participants))
        self.set_timer(self.config.vote_timeout, self._vote_timeout, gtid)

    def _vote_timeout(self, gtid):
        txn = self.txns.get(gtid)
        if txn is not None and txn["state"] == "collecting":
            self._abort(gtid, "vote timeout")

    def _abort(self, gtid, why):
        txn = self.txns.pop(gtid)
        self.decide(gtid, "abort", why)
        for p in txn["participants"]:
            if txn["votes"].get(p) is not False:
                self.send(p, Abort(gtid))

    def handle_Vote(self, msg: Vote, src):
        txn = self.txns.get(msg.gtid)
        if txn is None:
            if msg.yes:
                self.send(src, Abort(msg.gtid))          # no record: presumed abort
            return
        if txn["state"] != "collecting" or src not in txn["participants"]:
            return
        txn["votes"][src] = msg.yes
        if not msg.yes:
            self._abort(msg.gtid, f"{src} voted no")
        elif len(txn["votes"]) == len(txn["participants"]):
            txn["state"] = "committing"
            self.write_log(msg.gtid, ("commit", txn["participants"]), self._commit_durable, msg.gtid)

    def _commit_durable(self, gtid):
        self.txns[gtid]["state"] = "committed"
        self.decide(gtid, "commit", "all voted yes")
        self._send_commit(gtid)

    def _send_commit(self, gtid):
        txn = self.txns.get(gtid)
        if txn is None:
            return
        for p in txn["participants"]:
            if p not in txn["acks"]:
                self.send(p, Commit(gtid))
        self.set_timer(self.config.retry_interval, self._send_commit, gtid)

    def handle_Ack(self, msg, src):
        txn = self.txns.get(msg.gtid)
        if txn is None or txn["state"] != "committed":
            return
        txn["acks"].add(src)
        if len(txn["acks"]) == len(txn["participants"]):
            del self.txns[msg.gtid]
            self.write_log(msg.gtid, "end")

    def handle_DecisionRequest(self, msg, src):
        txn = self.txns.get(msg.gtid)
        if txn is None:
            self.send(src, Abort(msg.gtid))
        elif txn["state"] == "committed":
            self.send(src, Commit(msg.gtid))
        # still collecting votes or writing the commit record: the decision will come


class Participant(ParticipantBase):
    def boot(self):
        self.outcome = {}    # gtid -> "commit" | "abort": known here (from the log, or learned since)
        self.waiting = {}    # gtid -> participants: voted yes, outcome unknown (uncertain)
        self.preparing = set()
        self.applying = set()  # commits known but not yet durable here: no Ack for them yet
        prepared = {}
        for gtid, record in self.log:
            if isinstance(record, tuple) and record[0] == "prepared":
                prepared[gtid] = record[1]
            elif record in ("commit", "abort"):
                self.outcome[gtid] = record
        for gtid, participants in prepared.items():
            if gtid not in self.outcome:             # in doubt: ask at once
                self.waiting[gtid] = participants
                self._ask(gtid)

    def handle_Prepare(self, msg: Prepare, src):
        gtid = msg.gtid
        if gtid in self.waiting:
            self.vote(gtid, True)                    # the vote may have been lost: repeat it
            return
        if gtid in self.preparing:
            return
        known = self.outcome.get(gtid)
        if known is not None:
            if known == "abort":
                self.vote(gtid, False)
            return
        if not self.can_commit(gtid):
            self.outcome[gtid] = "abort"
            self.write_log(gtid, "abort")
            self.vote(gtid, False)
            return
        self.preparing.add(gtid)
        self.write_log(gtid, ("prepared", msg.participants), self._prepared, gtid, msg.participants)

    def _prepared(self, gtid, participants):
        self.preparing.discard(gtid)
        if gtid in self.outcome:                     # an Abort came while the record was being written
            self.vote(gtid, False)
            return
        self.waiting[gtid] = participants
        self.vote(gtid, True)
        self.set_timer(self.config.decision_timeout, self._ask, gtid)

    def _ask(self, gtid):
        participants = self.waiting.get(gtid)
        if participants is None:
            return
        self.send(self.coordinator, DecisionRequest(gtid))
        for p in participants:
            if p != self.name:
                self.send(p, DecisionRequest(gtid))
        self.set_timer(self.config.retry_interval, self._ask, gtid)

    def handle_Commit(self, msg, src):
        gtid = msg.gtid
        if gtid in self.waiting:
            del self.waiting[gtid]
            self.outcome[gtid] = "commit"            # known now (peers may be told); applied once durable
            self.applying.add(gtid)
            self.write_log(gtid, "commit", self._committed, gtid, src)
        elif self.outcome.get(gtid) == "commit" and gtid not in self.applying and src == self.coordinator:
            self.send(src, Ack(gtid))

    def _committed(self, gtid, src):
        self.applying.discard(gtid)
        self.decide(gtid, "commit", f"commit from {src}")
        self.send(self.coordinator, Ack(gtid))

    def handle_Abort(self, msg, src):
        gtid = msg.gtid
        if gtid in self.waiting:
            del self.waiting[gtid]
            self.outcome[gtid] = "abort"
            self.write_log(gtid, "abort")
            self.decide(gtid, "abort", f"abort from {src}")
        elif gtid in self.preparing and gtid not in self.outcome:
            self.outcome[gtid] = "abort"             # the coordinator gave up before this vote
            self.write_log(gtid, "abort")
            self.decide(gtid, "abort", f"abort from {src} before voting")
        elif gtid not in self.outcome:
            self.outcome[gtid] = "abort"             # it overtook its Prepare: that Prepare gets a no
        # otherwise already decided (a presumed-abort answer can come late, after the commit): ignore

    def handle_DecisionRequest(self, msg, src):
        gtid = msg.gtid
        known = self.outcome.get(gtid)
        if known == "commit":
            self.send(src, Commit(gtid))
        elif known == "abort":
            self.send(src, Abort(gtid))
        elif gtid not in self.waiting and gtid not in self.preparing:
            self.outcome[gtid] = "abort"             # never voted: abort here, durably, then say so
            self.write_log(gtid, "abort", self._aborted_unilaterally, gtid, src)
        # uncertain, or about to vote: nothing to tell

    def _aborted_unilaterally(self, gtid, src):
        self.decide(gtid, "abort", f"asked by {src} before voting")
        self.send(src, Abort(gtid))
