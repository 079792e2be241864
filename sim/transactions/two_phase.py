"""Two-phase commit with presumed abort, timeouts, cooperative termination and recovery.

The normal case, for a transaction with ``n`` participants::

    coordinator                          each participant
    Prepare  ──────────────────────────► lock the account, local check,
                                         force "prepared"             (n forced writes)
             ◄────────────────────────── Vote yes (or no: abort here, lazily logged)
    all yes: force "commit"  (1 forced write), answer the client ok
    Commit   ──────────────────────────► force "commit", apply, unlock (n forced writes)
             ◄────────────────────────── Ack
    all acks: lazy "end", forget

* committed: **4n messages** (Prepare, Vote, Commit, Ack) and **2n + 1 forced writes**;
* aborted with ``m`` no votes: Prepare ``n`` + Vote ``n`` + Abort to the ``n - m``
  participants that did not vote no = **3n - m messages** (no acks) and ``n - m``
  forced writes. Presumed abort: the coordinator logs nothing for an abort, and a
  coordinator asked about a transaction it has no record of answers abort.

The coordinator decides once every vote is in (or at ``vote_timeout``, abort), so the
counts above are exact; client request/reply messages are not counted.

Timeouts. A commit not acknowledged within ``retry_interval`` is sent again to the
participants that have not acknowledged it. A participant that voted yes and has no
decision after ``decision_timeout`` asks the coordinator (``DecisionRequest``), and
with ``cooperative_termination`` every other participant too, again every
``retry_interval``. A participant answers a peer's request with the decision if it
knows it; if it has not voted (never saw the prepare, or is still writing its
prepared record) it aborts unilaterally, forcing the abort record before it answers;
if it is uncertain itself it stays silent. While every participant is uncertain and
the coordinator is unreachable, nobody can decide: that is 2PC's blocking.

Recovery. The coordinator resends Commit for every commit record without an end
record. A participant re-locks every transaction prepared but not decided in its log
(in doubt) and asks at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import fld
from ..protocol import register_protocol
from .common import Abort, Ack, CoordinatorBase, CTxn, PTxn, ResourceManager, TransactionConfig, Vote
from .states import CState, Decision, LogRecord, PState, Record

__all__ = ["TwoPhaseCommitConfig", "TwoPhaseCoordinator", "TwoPhaseParticipant", "Prepare", "Commit",
           "DecisionRequest"]


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1: lock ``account``, check it can change by ``delta``, and vote."""

    gtid: str
    participants: tuple[str, ...]
    account: int
    delta: int


@dataclass(frozen=True, slots=True)
class Commit:
    """The decision commit (acknowledged with :class:`Ack`)."""

    gtid: str


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """An uncertain participant asks what was decided."""

    gtid: str


class TwoPhaseCoordinator(CoordinatorBase):
    """Log records: ``COMMIT`` with the transfer, forced; ``END``, lazy."""

    def boot(self) -> None:
        super().boot()
        ended = {r.gtid for r in self.log if r.kind == Record.END}
        for record in self.log:
            if record.kind == Record.COMMIT and record.gtid not in ended and record.spec is not None:
                txn = self.txns[record.gtid] = CTxn(record.spec, None, CState.COMMITTED)
                self._send_commit(txn)

    def start_txn(self, txn: CTxn) -> None:
        spec = txn.spec
        for p in spec.participants:
            self.tsend(p, Prepare(spec.gtid, spec.participants, spec.account, spec.delta(p)))
        txn.timer = self.set_timer(self.cfg.vote_timeout, self._vote_timeout, txn)

    def _vote_timeout(self, txn: CTxn) -> None:
        if txn.state == CState.COLLECTING:
            missing = [p for p in txn.spec.participants if p not in txn.votes]
            self.abort(txn, f"vote timeout (no vote from {', '.join(missing)})")

    def handle_Vote(self, msg: Vote, src: str) -> None:
        txn = self.txns.get(msg.gtid)
        if txn is None:
            if msg.yes:  # no record of it: presumed aborted
                self.rec.decision(msg.gtid, Decision.ABORT, "presumed")
                self.tsend(src, Abort(msg.gtid))
            return
        if txn.state != CState.COLLECTING or not self.record_vote(txn, src, msg.yes):
            return
        txn.timer.cancel()
        if all(txn.votes.values()):
            txn.state = CState.COMMITTING
            self.force(LogRecord(Record.COMMIT, txn.gtid, spec=txn.spec), self._commit_logged, txn)
        else:
            no = [p for p in txn.spec.participants if txn.votes.get(p) is False]
            self.abort(txn, f"vote no from {', '.join(no)}")

    def _commit_logged(self, txn: CTxn) -> None:
        txn.state = CState.COMMITTED
        self.rec.decision(txn.gtid, Decision.COMMIT, "all voted yes")
        self.answer_client(txn, True)
        self._send_commit(txn)

    def _send_commit(self, txn: CTxn) -> None:
        if self.txns.get(txn.gtid) is not txn:
            return
        for p in txn.spec.participants:
            if p not in txn.acks:
                self.tsend(p, Commit(txn.gtid))
        txn.timer = self.set_timer(self.cfg.retry_interval, self._send_commit, txn)

    def handle_Ack(self, msg: Ack, src: str) -> None:
        txn = self.txns.get(msg.gtid)
        if txn is None or txn.state != CState.COMMITTED or src not in txn.spec.participants:
            return
        txn.acks.add(src)
        if len(txn.acks) == len(txn.spec.participants):
            txn.timer.cancel()
            self.lazy(LogRecord(Record.END, txn.gtid))
            del self.txns[txn.gtid]

    def handle_DecisionRequest(self, msg: DecisionRequest, src: str) -> None:
        txn = self.txns.get(msg.gtid)
        if txn is None:
            self.rec.decision(msg.gtid, Decision.ABORT, "presumed")
            self.tsend(src, Abort(msg.gtid))
        elif txn.state == CState.COMMITTED:
            self.tsend(src, Commit(msg.gtid))
        # still collecting votes or forcing the commit record: the decision will come


class TwoPhaseParticipant(ResourceManager):
    """A resource manager speaking 2PC (see the module docstring)."""

    cfg: TwoPhaseCommitConfig

    def handle_Prepare(self, msg: Prepare, src: str) -> None:
        self.on_prepare(msg.gtid, msg.participants, msg.account, msg.delta, src)

    def on_decision_timeout(self, t: PTxn) -> None:
        if t.state == PState.PREPARED:
            self.ask(t)

    def resume_in_doubt(self, t: PTxn) -> None:
        self.ask(t)

    def ask(self, t: PTxn) -> None:
        """Ask the coordinator (and, cooperatively, every other participant) for the decision."""
        self.tsend(t.coordinator, DecisionRequest(t.gtid))
        if self.cfg.cooperative_termination:
            for p in t.participants:
                if p != self.name:
                    self.tsend(p, DecisionRequest(t.gtid))
        t.timer = self.set_timer(self.cfg.retry_interval, self.on_decision_timeout, t)

    def handle_Commit(self, msg: Commit, src: str) -> None:
        t = self.txns.get(msg.gtid)
        if t is not None and t.state == PState.PREPARED:
            self.commit(t, "commit from coordinator" if src == t.coordinator else f"commit learned from {src}")
            return
        if t is not None and t.state == PState.COMMITTING:
            return
        decided = self.decided.get(msg.gtid)
        if decided == Decision.COMMIT:
            if src == self.server:  # the coordinator resends until acknowledged
                self.tsend(src, Ack(msg.gtid))
        else:  # cannot happen in 2PC: kept as evidence if it ever does
            self.rec.note(msg.gtid, self.name, f"Commit from {src} ignored: state {t.state if t else decided}")

    def after_commit(self, t: PTxn) -> None:
        self.tsend(t.coordinator, Ack(t.gtid))

    def handle_Abort(self, msg: Abort, src: str) -> None:
        t = self.txns.get(msg.gtid)
        if t is not None and t.state in (PState.WORKING, PState.PREPARED):
            self.abort_local(t, "abort from coordinator" if src == t.coordinator else f"abort learned from {src}")
        elif t is not None or self.decided.get(msg.gtid) == Decision.COMMIT:
            # e.g. a presumed-abort answer to a request sent before the commit arrived
            self.rec.note(msg.gtid, self.name, f"stale Abort from {src} ignored: already committing/committed")
        else:
            self.decided.setdefault(msg.gtid, Decision.ABORT)  # a later prepare gets a no vote

    def handle_DecisionRequest(self, msg: DecisionRequest, src: str) -> None:
        decided = self.decided.get(msg.gtid)
        if decided is not None:
            self.tsend(src, Commit(msg.gtid) if decided == Decision.COMMIT else Abort(msg.gtid))
            return
        t = self.txns.get(msg.gtid)
        if t is None or t.state == PState.WORKING:
            self.abort_unilaterally(msg.gtid, self._tell_abort, msg.gtid, src)
        # uncertain itself: nothing to tell

    def _tell_abort(self, gtid: str, dst: str) -> None:
        self.tsend(dst, Abort(gtid))


@register_protocol
@dataclass(frozen=True, kw_only=True)
class TwoPhaseCommitConfig(TransactionConfig):
    """Two-phase commit; ``cooperative_termination`` lets uncertain participants ask each other."""

    tag: ClassVar[str] = "two_phase_commit"
    coordinator_class: ClassVar[type] = TwoPhaseCoordinator
    participant_class: ClassVar[type] = TwoPhaseParticipant
    cooperative_termination: bool = fld(False)
