"""Three-phase commit (Skeen): can-commit, pre-commit, do-commit, with its timeout rules.

The normal case, for a transaction with ``n`` participants::

    coordinator                          each participant
    CanCommit ─────────────────────────► lock, local check, force "prepared"  (n forced)
              ◄───────────────────────── Vote
    all yes:
    PreCommit ─────────────────────────► force "precommitted"                 (n forced)
              ◄───────────────────────── PreCommitAck
    all acks (or vote_timeout: commit anyway, the silent ones are taken as crashed):
    force "commit" (1 forced write), answer the client ok
    DoCommit  ─────────────────────────► force "commit", apply, unlock         (n forced)

* committed: **5n messages** and **3n + 1 forced writes** (there is no final ack: a
  participant that misses the DoCommit terminates by itself, so the coordinator never
  resends);
* aborted with ``m`` no votes: **3n - m messages** and ``n - m`` forced writes, as in 2PC.

Timeout rules. The coordinator aborts if votes are missing after ``vote_timeout`` and
commits anyway if pre-commit acks are missing after another ``vote_timeout``. A
participant that voted yes (uncertain) or pre-committed and hears nothing for
``decision_timeout`` runs the termination protocol: it asks every other participant
for its state (``StateRequest``), collects the replies for ``retry_interval`` and
decides from its own state and the replies:

    some committed -> commit;  some aborted -> abort;
    some pre-committed -> commit;  all uncertain -> abort,

then sends its decision to the others (DoCommit or Abort). A participant asked for
its state that has not voted aborts unilaterally first (forced) and answers aborted.
Every participant that times out runs this rule itself (a decentralized termination
protocol); no one ever waits for the coordinator to come back.

Why the rule is safe under crashes. A PreCommit exists only once everyone voted yes,
so when some participant is pre-committed nobody can have aborted: commit is safe, even
if others are still uncertain (a PreCommit lost, or a coordinator that crashed while
sending them leaves such mixed states). And with bounded message delays,
``decision_timeout > 2 * vote_timeout`` plus delays and forced writes (so a live
coordinator always moves before anyone times out), the coordinator commits only once
every live participant has acknowledged its PreCommit or is silent because it crashed,
so when every live participant is uncertain nobody can have committed: abort is safe.
Why partitions break it: a timeout no longer means a crash, each side of a partition
terminates on its own, and a side holding a pre-committed participant (or the
coordinator, which commits after its ack timeout) commits while a side of uncertain
participants aborts.

Recovery. A participant in doubt waits ``decision_timeout`` and then terminates (a live
coordinator may still be finishing). A recovering coordinator does nothing and never
presumes abort: the participants may have committed without it. Like the textbook
protocol, this one assumes bounded delays and no total failure (if participants crash
too, the uncertain ones may come back and abort while a pre-committed one is down).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..protocol import register_protocol
from .common import (
    FINAL_STATES,
    UNCERTAIN_STATES,
    Abort,
    CoordinatorBase,
    CTxn,
    PTxn,
    ResourceManager,
    TransactionConfig,
    Vote,
)
from .states import CState, Decision, LogRecord, PState, Record

__all__ = ["ThreePhaseCommitConfig", "ThreePhaseCoordinator", "ThreePhaseParticipant", "CanCommit", "PreCommit",
           "PreCommitAck", "DoCommit", "StateRequest", "StateReply"]


@dataclass(frozen=True, slots=True)
class CanCommit:
    """Phase 1: lock ``account``, check it can change by ``delta``, and vote."""

    gtid: str
    participants: tuple[str, ...]
    account: int
    delta: int


@dataclass(frozen=True, slots=True)
class PreCommit:
    """Phase 2: everyone voted yes; get ready to commit."""

    gtid: str


@dataclass(frozen=True, slots=True)
class PreCommitAck:
    gtid: str


@dataclass(frozen=True, slots=True)
class DoCommit:
    """Phase 3: commit (from the coordinator or from a terminating participant)."""

    gtid: str


@dataclass(frozen=True, slots=True)
class StateRequest:
    """Termination protocol: what is your state?"""

    gtid: str


@dataclass(frozen=True, slots=True)
class StateReply:
    """``state`` is ``prepared`` (uncertain), ``precommitted``, ``committed`` or ``aborted``."""

    gtid: str
    state: PState


class ThreePhaseCoordinator(CoordinatorBase):
    """Log record: ``("commit", gtid)`` forced before the DoCommits go out."""

    def start_txn(self, txn: CTxn) -> None:
        spec = txn.spec
        for p in spec.participants:
            self.tsend(p, CanCommit(spec.gtid, spec.participants, spec.account, spec.delta(p)))
        txn.timer = self.set_timer(self.cfg.vote_timeout, self._timeout, txn)

    def _timeout(self, txn: CTxn) -> None:
        if txn.state == CState.COLLECTING:
            missing = [p for p in txn.spec.participants if p not in txn.votes]
            self.abort(txn, f"vote timeout (no vote from {', '.join(missing)})")
        elif txn.state == CState.PRECOMMITTING:
            missing = [p for p in txn.spec.participants if p not in txn.acks]
            self._do_commit(txn, f"pre-commit ack timeout (none from {', '.join(missing)})")

    def handle_Vote(self, msg: Vote, src: str) -> None:
        txn = self.txns.get(msg.gtid)
        if txn is None or txn.state != CState.COLLECTING or not self.record_vote(txn, src, msg.yes):
            return  # unknown after a crash: the participants terminate by themselves
        txn.timer.cancel()
        if all(txn.votes.values()):
            txn.state = CState.PRECOMMITTING
            for p in txn.spec.participants:
                self.tsend(p, PreCommit(txn.gtid))
            txn.timer = self.set_timer(self.cfg.vote_timeout, self._timeout, txn)
        else:
            no = [p for p in txn.spec.participants if txn.votes.get(p) is False]
            self.abort(txn, f"vote no from {', '.join(no)}")

    def handle_PreCommitAck(self, msg: PreCommitAck, src: str) -> None:
        txn = self.txns.get(msg.gtid)
        if txn is None or txn.state != CState.PRECOMMITTING or src not in txn.spec.participants:
            return
        txn.acks.add(src)
        if len(txn.acks) == len(txn.spec.participants):
            txn.timer.cancel()
            self._do_commit(txn, "all pre-committed")

    def _do_commit(self, txn: CTxn, how: str) -> None:
        txn.state = CState.COMMITTING
        self.force(LogRecord(Record.COMMIT, txn.gtid), self._commit_logged, txn, how)

    def _commit_logged(self, txn: CTxn, how: str) -> None:
        self.rec.decision(txn.gtid, Decision.COMMIT, how)
        self.answer_client(txn, True)
        for p in txn.spec.participants:
            self.tsend(p, DoCommit(txn.gtid))
        self.txns.pop(txn.gtid, None)


class ThreePhaseParticipant(ResourceManager):
    """A resource manager speaking 3PC (see the module docstring)."""

    def handle_CanCommit(self, msg: CanCommit, src: str) -> None:
        self.on_prepare(msg.gtid, msg.participants, msg.account, msg.delta, src)

    def handle_PreCommit(self, msg: PreCommit, src: str) -> None:
        t = self.txns.get(msg.gtid)
        if t is None or t.state not in UNCERTAIN_STATES:
            state = t.state if t else self.decided.get(msg.gtid)
            self.rec.note(msg.gtid, self.name, f"PreCommit ignored: state {state}")
        elif t.state == PState.PRECOMMITTED:
            self.tsend(src, PreCommitAck(msg.gtid))
        elif not t.precommitting:
            t.precommitting = True
            t.cancel_timer()
            self.force(LogRecord(Record.PRECOMMITTED, msg.gtid), self._precommitted, t)

    def _precommitted(self, t: PTxn) -> None:
        t.precommitting = False
        if t.state != PState.PREPARED:  # decided meanwhile by a termination protocol
            return
        t.state = PState.PRECOMMITTED
        self.rec.state(t.gtid, self.name, PState.PRECOMMITTED)
        self.tsend(t.coordinator, PreCommitAck(t.gtid))
        t.timer = self.set_timer(self.cfg.decision_timeout, self.on_decision_timeout, t)

    def on_decision_timeout(self, t: PTxn) -> None:
        if t.state in UNCERTAIN_STATES and t.replies is None:
            self.terminate(t)

    def resume_in_doubt(self, t: PTxn) -> None:
        t.timer = self.set_timer(self.cfg.decision_timeout, self.on_decision_timeout, t)

    # -- termination protocol ---------------------------------------------------
    def terminate(self, t: PTxn) -> None:
        t.replies = {}
        self.rec.note(t.gtid, self.name, f"termination protocol from state {t.state}")
        for p in t.participants:
            if p != self.name:
                self.tsend(p, StateRequest(t.gtid))
        self.set_timer(self.cfg.retry_interval, self._terminate_decide, t)

    def handle_StateRequest(self, msg: StateRequest, src: str) -> None:
        decided = self.decided.get(msg.gtid)
        if decided is not None:
            self.tsend(src, StateReply(msg.gtid, PState.COMMITTED if decided == Decision.COMMIT else PState.ABORTED))
            return
        t = self.txns.get(msg.gtid)
        if t is None or t.state == PState.WORKING:
            self.abort_unilaterally(msg.gtid, self._reply_aborted, msg.gtid, src)
            return
        self.tsend(src, StateReply(msg.gtid, PState.COMMITTED if t.state == PState.COMMITTING else t.state))

    def _reply_aborted(self, gtid: str, dst: str) -> None:
        self.tsend(dst, StateReply(gtid, PState.ABORTED))

    def handle_StateReply(self, msg: StateReply, src: str) -> None:
        t = self.txns.get(msg.gtid)
        if t is None or t.replies is None:
            return
        t.replies[src] = msg.state
        if msg.state in FINAL_STATES:  # definitive news: no need to wait for the others
            self._terminate_decide(t)

    def _terminate_decide(self, t: PTxn) -> None:
        if t.replies is None or t.state not in UNCERTAIN_STATES:
            return
        states = [t.state, *t.replies.values()]
        t.replies = None
        if PState.COMMITTED in states:
            commit, why = True, "termination: a participant had committed"
        elif PState.ABORTED in states:
            commit, why = False, "termination: a participant had aborted"
        elif PState.PRECOMMITTED in states:
            commit, why = True, "termination: a participant was pre-committed"
        else:
            commit, why = False, "termination: all reachable participants uncertain"
        others = [p for p in t.participants if p != self.name]
        if commit:
            self.commit(t, why)
            for p in others:
                self.tsend(p, DoCommit(t.gtid))
        else:
            self.abort_local(t, why)
            for p in others:
                self.tsend(p, Abort(t.gtid))

    # -- decisions ------------------------------------------------------------------
    def handle_DoCommit(self, msg: DoCommit, src: str) -> None:
        t = self.txns.get(msg.gtid)
        if t is not None and t.state in UNCERTAIN_STATES:
            self.commit(t, "do-commit from coordinator" if src == t.coordinator else f"commit learned from {src}")
        elif t is not None and t.state == PState.COMMITTING or self.decided.get(msg.gtid) == Decision.COMMIT:
            return
        else:
            state = t.state if t else self.decided.get(msg.gtid)
            self.rec.note(msg.gtid, self.name, f"DoCommit from {src} ignored: state {state}")

    def handle_Abort(self, msg: Abort, src: str) -> None:
        t = self.txns.get(msg.gtid)
        if t is not None and t.state in (PState.WORKING, *UNCERTAIN_STATES):
            self.abort_local(t, "abort from coordinator" if src == t.coordinator else f"abort learned from {src}")
        elif t is not None or self.decided.get(msg.gtid) == Decision.COMMIT:
            self.rec.note(msg.gtid, self.name, f"Abort from {src} ignored: already committing/committed")
        else:
            self.decided.setdefault(msg.gtid, Decision.ABORT)


@register_protocol
@dataclass(frozen=True, kw_only=True)
class ThreePhaseCommitConfig(TransactionConfig):
    """Three-phase commit with the decentralized termination protocol."""

    tag: ClassVar[str] = "three_phase_commit"
    coordinator_class: ClassVar[type] = ThreePhaseCoordinator
    participant_class: ClassVar[type] = ThreePhaseParticipant
