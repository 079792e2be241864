"""Lab 5 known-wrong solutions: each breaks one thing the reference gets right.

Each is a (Coordinator, Participant) pair in ``VARIANTS``, by name.
"""

from __future__ import annotations

from commit_reference import Coordinator, DecisionRequest, Participant


class NoTerminationParticipant(Participant):
    """Asks only the coordinator: while it is down, an uncertain participant waits for it to come back."""

    def _ask(self, gtid):
        if gtid in self.waiting:
            self.send(self.coordinator, DecisionRequest(gtid))
            self.set_timer(self.config.retry_interval, self._ask, gtid)


class AbortOnTimeoutParticipant(Participant):
    """Gives up on a silent coordinator: after the decision timeout it aborts, although it voted yes."""

    def _ask(self, gtid):
        if gtid in self.waiting:
            del self.waiting[gtid]
            self.outcome[gtid] = "abort"
            self.write_log(gtid, "abort")
            self.decide(gtid, "abort", "no decision in time")


class EarlyVoteParticipant(Participant):
    """Votes yes as it starts writing its prepared record, not once the record is durable: after a
    crash it has no trace of a yes vote the coordinator may already have counted."""

    def handle_Prepare(self, msg, src):
        gtid = msg.gtid
        if gtid in self.waiting or gtid in self.preparing or gtid in self.outcome or not self.can_commit(gtid):
            super().handle_Prepare(msg, src)
            return
        self.waiting[gtid] = msg.participants
        self.vote(gtid, True)
        self.set_timer(self.config.decision_timeout, self._ask, gtid)
        self.write_log(gtid, ("prepared", msg.participants))


class UnloggedDecisionCoordinator(Coordinator):
    """Sends Commit (and answers the client) at once and never logs the decision: a coordinator that
    crashes forgets it, and answers 'abort' (presumed abort) to the participants still asking."""

    def handle_Vote(self, msg, src):
        txn = self.txns.get(msg.gtid)
        if (txn is not None and txn["state"] == "collecting" and msg.yes and src in txn["participants"]
                and len(txn["votes"] | {src: True}) == len(txn["participants"])):
            txn["votes"][src] = True
            self._commit_durable(msg.gtid)
            return
        super().handle_Vote(msg, src)


class EveryParticipantCoordinator(Coordinator):
    """Waits for a vote from every participant of the system, not only the transaction's: a transaction
    that touches fewer than all of them times out and aborts, even when nothing fails."""

    def handle_Vote(self, msg, src):
        txn = self.txns.get(msg.gtid)
        if txn is not None and txn["state"] == "collecting" and msg.yes and src in txn["participants"]:
            txn["votes"][src] = True
            if len(txn["votes"]) == len(self.participants):
                txn["state"] = "committing"
                self.write_log(msg.gtid, ("commit", txn["participants"]), self._commit_durable, msg.gtid)
            return
        super().handle_Vote(msg, src)


VARIANTS = {
    "no-termination": {"Coordinator": Coordinator, "Participant": NoTerminationParticipant},
    "abort-on-timeout": {"Coordinator": Coordinator, "Participant": AbortOnTimeoutParticipant},
    "early-vote": {"Coordinator": Coordinator, "Participant": EarlyVoteParticipant},
    "unlogged-decision": {"Coordinator": UnloggedDecisionCoordinator, "Participant": Participant},
    "every-participant": {"Coordinator": EveryParticipantCoordinator, "Participant": Participant},
}
