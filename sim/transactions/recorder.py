"""The recorder: what happened to every transaction, kept outside the nodes.

It is the observer's notebook, not node state, so crashes do not touch it: the commit
protocols' per-run state (``world.state``). Nodes call it as they act;
:mod:`sim.transactions.tables` turns it into DataFrames after the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..kernel.node import Host
    from ..workload.transfers import TxnSpec
    from .states import Decision, PState

__all__ = ["TxnRecorder"]


class TxnRecorder:
    """Everything that happened to every transaction, kept outside the nodes.

    ``events`` rows are ``(time, gtid, node, state, detail)``; a row is added only
    when a participant's state changes. ``events``, ``conflicts`` (prepares refused
    because another transaction held the lock) and ``notes`` (what the protocol
    decided and why, in words) are channels of the run's event log. ``locks`` rows are
    ``[gtid, node, account, acquired, released]`` (``released`` NaN while held).
    ``decisions[gtid]`` is the coordinator's first decision ``(time, decision, how)``
    (``time`` is when it sent the decision); ``votes[(gtid, node)]`` is
    ``(time sent, yes, reason)``.
    """

    def __init__(self, world: Host, coordinator: str, participants: tuple[str, ...], threshold: float) -> None:
        self.env = world.env
        self.coordinator = coordinator
        self.participants = participants
        self.threshold = threshold
        self.specs: dict[str, TxnSpec] = {}
        self.begin: dict[str, float] = {}
        self.events = world.events.channel("txn_events", ("time", "gtid", "node", "state", "detail"))
        self._last: dict[tuple[str, str], str] = {}
        self.votes: dict[tuple[str, str], tuple[float, bool, str]] = {}
        self.decisions: dict[str, tuple[float, str, str]] = {}
        self.messages: dict[str, dict[str, int]] = {}
        self.forced: dict[str, int] = {}
        self.lazy: dict[str, int] = {}
        self.locks: list[list[Any]] = []
        self._held: dict[tuple[str, str], int] = {}
        self.conflicts = world.events.channel("txn_lock_refusals", ("time", "node", "account", "gtid", "holder"))
        self.notes = world.events.channel("txn_notes", ("time", "gtid", "node", "text"))
        self._tables: Any = None  # caches of sim.transactions.tables
        self._verdict: Any = None

    def begin_txn(self, spec: TxnSpec) -> None:
        self.specs[spec.gtid] = spec
        self.begin[spec.gtid] = self.env.now

    def state(self, gtid: str, node: str, state: PState, detail: str = "") -> None:
        key = (gtid, node)
        if self._last.get(key) != state:
            self._last[key] = state
            self.events.record(self.env.now, gtid, node, state, detail)

    def current(self, gtid: str, node: str) -> str | None:
        return self._last.get((gtid, node))

    def vote(self, gtid: str, node: str, yes: bool, reason: str = "") -> None:
        self.votes.setdefault((gtid, node), (self.env.now, yes, reason))

    def decision(self, gtid: str, decision: Decision, how: str) -> None:
        self.decisions.setdefault(gtid, (self.env.now, decision, how))

    def message(self, gtid: str, msg: Any) -> None:
        per = self.messages.get(gtid)
        if per is None:
            per = self.messages[gtid] = {}
        name = msg.__class__.__name__
        per[name] = per.get(name, 0) + 1

    def forced_write(self, gtid: str) -> None:
        self.forced[gtid] = self.forced.get(gtid, 0) + 1

    def lazy_write(self, gtid: str) -> None:
        self.lazy[gtid] = self.lazy.get(gtid, 0) + 1

    def lock(self, gtid: str, node: str, account: int) -> None:
        if (gtid, node) not in self._held:
            self._held[(gtid, node)] = len(self.locks)
            self.locks.append([gtid, node, account, self.env.now, float("nan")])

    def unlock(self, gtid: str, node: str) -> None:
        i = self._held.pop((gtid, node), None)
        if i is not None:
            self.locks[i][4] = self.env.now

    def conflict(self, node: str, account: int, gtid: str, holder: str) -> None:
        self.conflicts.record(self.env.now, node, account, gtid, holder)

    def note(self, gtid: str, node: str, text: str) -> None:
        self.notes.record(self.env.now, gtid, node, text)
