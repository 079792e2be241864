"""The states and log records of the commit protocols, shared by the nodes and the tables."""

from __future__ import annotations

from typing import NamedTuple

from ..states import State
from ..workload.transfers import TxnSpec

__all__ = ["PState", "CState", "Decision", "Record", "LogRecord", "UNCERTAIN_STATES", "FINAL_STATES"]


class PState(State):
    """A transaction at a participant."""

    WORKING = "working"  # locked, prepared record being written, not voted yet
    PREPARED = "prepared"  # voted yes: uncertain, waits for the decision with its lock held
    PRECOMMITTED = "precommitted"  # 3PC: knows everyone voted yes; still uncertain
    COMMITTING = "committing"  # writing its commit record
    COMMITTED = "committed"
    ABORTED = "aborted"


class CState(State):
    """A transaction at the coordinator."""

    COLLECTING = "collecting"  # waiting for the votes
    PRECOMMITTING = "precommitting"  # 3PC: waiting for the pre-commit acknowledgements
    COMMITTING = "committing"  # writing its commit record
    COMMITTED = "committed"  # decided commit; resending Commit until every participant acknowledged


class Decision(State):
    COMMIT = "commit"
    ABORT = "abort"


class Record(State):
    """The kinds of write-ahead log record."""

    PREPARED = "prepared"
    PRECOMMITTED = "precommitted"
    COMMIT = "commit"
    ABORT = "abort"
    END = "end"  # the coordinator: every participant acknowledged the commit


class LogRecord(NamedTuple):
    """One write-ahead log record: its kind, the transaction, and what recovery needs of it.

    A participant's ``PREPARED`` record carries the coordinator, the participants, the
    account and the change to it; the 2PC coordinator's ``COMMIT`` record carries the
    transfer (``spec``) so it can resend the commits after a crash.
    """

    kind: Record
    gtid: str
    coordinator: str = ""
    participants: tuple[str, ...] = ()
    account: int = 0
    delta: int = 0
    spec: TxnSpec | None = None


#: participant states in which it voted yes, holds its lock and waits for a decision
UNCERTAIN_STATES = (PState.PREPARED, PState.PRECOMMITTED)
FINAL_STATES = (PState.COMMITTED, PState.ABORTED)
