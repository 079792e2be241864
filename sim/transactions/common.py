"""What two- and three-phase commit share.

* **The workload.** Every client operation (read or write alike) is one transfer
  transaction submitted to the coordinator, drawn by
  :class:`~sim.workload.transfers.TransferWorkload` (the client's ``key`` is the
  account). The global transaction id is the coordinator's; the client's ``op_id`` is
  kept with it. Clients should target the coordinator (``workload.target =
  "fixed"``); any other node forwards requests.
* **Client outcomes.** The coordinator replies ok once its commit decision is durable,
  ok=False once it decides abort, and nothing otherwise: a client that times out
  (``workload.timeout``) records ``info``. Client messages are not counted as
  protocol messages.
* **Resource managers.** Each participant keeps balances and a write-ahead log in
  ``self.disk`` (durable). A *forced* write takes ``force_time`` and is durable only
  once it completes (a crash during it loses it); a *lazy* write sits in a volatile
  buffer until the next forced write flushes it. The lock table and the state of
  running transactions are volatile and rebuilt from the log at recovery: a
  transaction prepared but not decided in the log is *in doubt* and keeps its lock
  until it is resolved. Locks are no-wait: a prepare that finds its account locked
  votes no (so there are no deadlocks, and a blocked lock costs throughput).
* **The recorder** (the protocol's per-run state, ``world.state``) is the observer's
  notebook, not node state: per transaction and participant it notes state changes
  (``working``, ``prepared``, ``precommitted``, ``committed``, ``aborted``), votes,
  lock holds, messages sent and log writes, so checkers and metrics can be computed
  after the run (class :class:`~sim.transactions.recorder.TxnRecorder`; tables in
  :mod:`sim.transactions.tables`).
* **Settling.** Clients stop at ``run.duration`` and the run stops when their
  operations are answered, possibly while commits are still travelling or
  participants are still in doubt. The protocol's ``finish`` keeps simulating (faults
  scheduled later still start and end, nodes still recover) until no transaction is
  in progress at any node and every node is up, or ``settle_limit`` ms have passed:
  the atomicity checker's "applied everywhere after recovery" needs that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from ..checkers.atomicity import AtomicityResult
from ..config import Duration, at_least, fld, positive, prob
from ..dists import Constant, Dist, buffered_sampler, uniform_sampler
from ..errors import ScenarioError
from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..protocol import ProtocolConfig
from ..protocols.proxy import ProxyNode
from ..workload.transfers import TransferWorkload, TxnSpec
from .recorder import TxnRecorder
from .report import transaction_lines
from .states import FINAL_STATES, UNCERTAIN_STATES, CState, Decision, LogRecord, PState, Record
from .tables import atomicity, summarize, transaction_tables

if TYPE_CHECKING:
    from ..result import Result

__all__ = [
    "TransactionConfig",
    "TxnSpec",
    "TxnNode",
    "CoordinatorBase",
    "ResourceManager",
    "ForwardingNode",
    "PTxn",
    "Vote",
    "Abort",
    "Ack",
    "UNCERTAIN_STATES",
    "FINAL_STATES",
]



# -- messages used by both protocols --------------------------------------------
@dataclass(frozen=True, slots=True)
class Vote:
    """A participant's vote; ``reason`` says why it voted no."""

    gtid: str
    yes: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Abort:
    """The decision abort (no acknowledgement: presumed abort)."""

    gtid: str


@dataclass(frozen=True, slots=True)
class Ack:
    """A participant has durably committed."""

    gtid: str


# -- the config both protocols share ------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TransactionConfig(ProtocolConfig[TxnRecorder]):
    """Fields shared by ``two_phase_commit`` and ``three_phase_commit`` (times in ms).

    ``coordinator`` defaults to the first node, ``participants`` to every other
    node. ``abort_probability`` is the chance that a participant's local prepare
    check fails (it votes no), independently per participant and transaction.
    ``force_time`` is how long a forced log write takes. The coordinator waits
    ``vote_timeout`` for votes; a participant that voted yes waits
    ``decision_timeout`` for the decision before acting on its own (asking, or
    terminating), then repeats every ``retry_interval``. A participant is counted
    *blocked* when it stays uncertain longer than ``block_threshold``, by default
    ``vote_timeout + decision_timeout + 2 * retry_interval``: the longest the protocols'
    own timeouts make it wait (the coordinator may wait ``vote_timeout`` for the other
    votes, 3PC's pre-commit may come that late, then the participant's timeout and a
    round of asking or terminating) plus a round of slack. Longer, and it is waiting
    for a failed or cut-off site to come back.
    """

    coordinator: str | None = fld(None)
    participants: tuple[str, ...] = fld(())
    min_participants: int = fld(2, check=at_least(1))
    max_participants: int | None = fld(None, check=at_least(1))
    abort_probability: float = fld(0.0, check=prob)
    initial_balance: int = fld(1000, check=at_least(0))
    max_amount: int = fld(100, check=at_least(1))
    force_time: Dist = fld(Constant(1.0))
    vote_timeout: Duration = fld(50.0, check=positive)
    decision_timeout: Duration = fld(150.0, check=positive)
    retry_interval: Duration = fld(50.0, check=positive, every="node")
    block_threshold: Duration | None = fld(None, check=positive)
    settle_limit: Duration = fld(10_000.0, doc="after the run, keep going until nothing is in progress, at most this "
                                               "long")

    def node_refs(self) -> list[tuple[str, str]]:
        refs = [("coordinator", self.coordinator)] if self.coordinator is not None else []
        return refs + [(f"participants[{i}]", p) for i, p in enumerate(self.participants)]

    def coordinator_of(self, nodes: tuple[str, ...]) -> str:
        return self.coordinator if self.coordinator is not None else nodes[0]

    def participants_of(self, nodes: tuple[str, ...]) -> tuple[str, ...]:
        if self.participants:
            return self.participants
        coordinator = self.coordinator_of(nodes)
        return tuple(n for n in nodes if n != coordinator)

    @property
    def threshold(self) -> float:
        """How long a participant may stay uncertain before it counts as blocked."""
        if self.block_threshold is not None:
            return self.block_threshold
        return self.vote_timeout + self.decision_timeout + 2 * self.retry_interval

    def check_scenario(self, scenario: Any, path: str) -> None:
        nodes = scenario.nodes
        coordinator = self.coordinator_of(nodes)
        for i, p in enumerate(self.participants):
            if p == coordinator:
                raise ScenarioError(f"{path}.participants[{i}]", f"must not be the coordinator ({coordinator!r})")
            if p in self.participants[:i]:
                raise ScenarioError(f"{path}.participants[{i}]", f"duplicate participant {p!r}")
        parts = self.participants_of(nodes)
        if len(parts) < self.min_participants:
            raise ScenarioError(f"{path}.min_participants",
                                f"must be <= the number of participants ({len(parts)}), got {self.min_participants}")
        if self.max_participants is not None:
            if self.max_participants < self.min_participants:
                raise ScenarioError(f"{path}.max_participants", f"must be >= min_participants "
                                    f"({self.min_participants}), got {self.max_participants}")
            if self.max_participants > len(parts):
                raise ScenarioError(f"{path}.max_participants", f"must be <= the number of participants "
                                    f"({len(parts)}), got {self.max_participants}")

    # subclasses say which node classes run the protocol
    coordinator_class: ClassVar[type]
    participant_class: ClassVar[type]

    def new_state(self, world: Host) -> TxnRecorder:
        nodes = world.scenario.nodes
        return TxnRecorder(world, self.coordinator_of(nodes), self.participants_of(nodes), self.threshold)

    def build_nodes(self, world: Host, state: TxnRecorder) -> dict[str, Node]:
        nodes = world.scenario.nodes
        coordinator = self.coordinator_of(nodes)
        parts = self.participants_of(nodes)
        out: dict[str, Node] = {}
        for name in nodes:
            if name == coordinator:
                out[name] = self.coordinator_class(world, name, self, state, parts)
            elif name in parts:
                out[name] = self.participant_class(world, name, self, state)
            else:
                out[name] = ForwardingNode(world, name, coordinator)
        return out

    def finish(self, world: World, state: TxnRecorder) -> None:
        settle(world, self.settle_limit)

    def summary(self, world: World, state: TxnRecorder) -> dict[str, Any]:
        return summarize(world)

    def tables(self, world: World, state: TxnRecorder) -> dict[str, pd.DataFrame]:
        """Per-transaction tables for ``Result.tables`` (see :func:`.tables.transaction_tables`), and the notes."""
        return {**transaction_tables(world), "notes": state.notes.frame()}

    def verdicts(self, world: World, state: TxnRecorder) -> dict[str, AtomicityResult]:
        return {"atomicity": atomicity(world)}

    def report(self, result: Result) -> list[str]:
        return transaction_lines(result)


def _quiet(world: World) -> bool:
    for node in world.nodes.values():
        if not node.alive or getattr(node, "txns", None):
            return False
    return True


def settle(world: World, limit: float) -> None:
    """Keep simulating until no transaction is in progress and every node is up (at most ``limit`` ms)."""
    cfg = world.scenario.protocol
    assert isinstance(cfg, TransactionConfig)
    step = min(cfg.retry_interval, cfg.decision_timeout)
    stop = world.now + limit
    while world.now < stop and not _quiet(world):
        world.env.run(until=min(world.now + step, stop))


# -- nodes ----------------------------------------------------------------------
class TxnNode(ProxyNode):
    """A node with a write-ahead log in ``self.disk`` and counted protocol messages."""

    def __init__(self, world: Host, name: str, cfg: TransactionConfig, rec: TxnRecorder) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.server = rec.coordinator
        self.rec = rec
        self._force_time = buffered_sampler(cfg.force_time, world.streams[f"disk/{name}"])

    def boot(self) -> None:
        super().boot()
        self.log: list[LogRecord] = self.disk.setdefault("log", [])
        self._buffer: list[LogRecord] = []  # lazy records not yet on disk (volatile)

    def tsend(self, dst: str, msg: Any) -> None:
        """Send a protocol message, counting it against its transaction."""
        self.rec.message(msg.gtid, msg)
        self.send(dst, msg)

    def force(self, record: LogRecord, then: Callable[..., None] | None = None, *args: Any) -> None:
        """Write ``record`` (and the buffered lazy records) durably, then call ``then``.

        Takes ``force_time``; a crash before it completes loses the record and the
        callback never runs.
        """
        self.rec.forced_write(record.gtid)
        self.set_timer(self._force_time(), self._flushed, record, then, args)

    def _flushed(self, record: LogRecord, then: Callable[..., None] | None, args: tuple) -> None:
        self.log.extend(self._buffer)
        self._buffer.clear()
        self.log.append(record)
        if then is not None:
            then(*args)

    def lazy(self, record: LogRecord) -> None:
        """Append ``record`` to the log buffer: durable only with the next forced write."""
        self.rec.lazy_write(record.gtid)
        self._buffer.append(record)


class ForwardingNode(ProxyNode):
    """A node taking no part in the transactions: it forwards client requests to the coordinator."""

    def __init__(self, world: Host, name: str, coordinator: str) -> None:
        super().__init__(world, name)
        self.server = coordinator


class CTxn:
    """The coordinator's volatile view of one transaction."""

    __slots__ = ("spec", "reply", "state", "votes", "acks", "timer")

    def __init__(self, spec: TxnSpec, reply: Callable[[ClientReply], None] | None, state: CState) -> None:
        self.spec = spec
        self.reply = reply
        self.state = state
        self.votes: dict[str, bool] = {}
        self.acks: set[str] = set()
        self.timer: Any = None

    @property
    def gtid(self) -> str:
        return self.spec.gtid


class CoordinatorBase(TxnNode):
    """Turns client operations into transactions (see the module docstring).

    Global transaction ids are ``t<incarnation>-<sequence>``: the incarnation is a
    durable counter bumped at every boot, so ids stay unique across crashes.
    """

    def __init__(self, world: Host, name: str, cfg: TransactionConfig, rec: TxnRecorder,
                 participants: tuple[str, ...]) -> None:
        super().__init__(world, name, cfg, rec)
        self.all_participants = participants
        self.transfers = TransferWorkload(uniform_sampler(world.streams["txn"]), participants, cfg.min_participants,
                                          cfg.max_participants or len(participants), cfg.max_amount)

    def boot(self) -> None:
        super().boot()
        self.disk["incarnation"] = self.disk.get("incarnation", 0) + 1
        self._seq = 0
        self.txns: dict[str, CTxn] = {}
        self._by_op: dict[int, str] = {}

    def serve(self, request: ClientRequest, reply: Callable[[ClientReply], None]) -> None:
        if request.op_id in self._by_op:  # a duplicated request: already running
            return
        spec = self.new_spec(request)
        self._by_op[request.op_id] = spec.gtid
        self.rec.begin_txn(spec)
        txn = self.txns[spec.gtid] = CTxn(spec, reply, CState.COLLECTING)
        self.start_txn(txn)

    def new_spec(self, request: ClientRequest) -> TxnSpec:
        """The transfer for ``request``, with a fresh global transaction id."""
        self._seq += 1
        return self.transfers.draw(f"t{self.disk['incarnation']}-{self._seq}", request.op_id, request.key)

    def start_txn(self, txn: CTxn) -> None:
        raise NotImplementedError

    def record_vote(self, txn: CTxn, src: str, yes: bool) -> bool:
        """Note a vote; True when this completes the set of votes."""
        if src not in txn.spec.participants or src in txn.votes:
            return False
        txn.votes[src] = yes
        return len(txn.votes) == len(txn.spec.participants)

    def answer_client(self, txn: CTxn, committed: bool, error: str | None = None) -> None:
        if txn.reply is not None:
            txn.reply(ClientReply(txn.spec.op_id, committed, txn.gtid if committed else None, error))
            txn.reply = None

    def abort(self, txn: CTxn, why: str) -> None:
        """Decide abort: tell every participant that did not vote no, forget the transaction."""
        if txn.timer is not None:
            txn.timer.cancel()
        self.rec.decision(txn.gtid, Decision.ABORT, why)
        for p in txn.spec.participants:
            if txn.votes.get(p) is not False:
                self.tsend(p, Abort(txn.gtid))
        self.answer_client(txn, False, f"aborted: {why}")
        self.txns.pop(txn.gtid, None)


class PTxn:
    """A participant's volatile view of one transaction it has locked."""

    __slots__ = ("gtid", "coordinator", "participants", "account", "delta", "state", "timer", "replies",
                 "precommitting")

    def __init__(self, gtid: str, coordinator: str, participants: tuple[str, ...], account: int, delta: int,
                 state: PState) -> None:
        self.gtid = gtid
        self.coordinator = coordinator
        self.participants = participants
        self.account = account
        self.delta = delta
        self.state = state
        self.timer: Any = None
        self.replies: dict[str, str] | None = None
        self.precommitting = False

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class ResourceManager(TxnNode):
    """A participant: balances, a write-ahead log, a no-wait lock table, a prepare check.

    Log records (:class:`~.states.LogRecord`): ``PREPARED`` with the coordinator,
    participants, account and change; ``PRECOMMITTED`` (3PC); ``COMMIT``; ``ABORT``.
    Balances live in ``disk["balances"]`` and change in the same instant the commit
    record becomes durable.
    """

    def __init__(self, world: Host, name: str, cfg: TransactionConfig, rec: TxnRecorder) -> None:
        super().__init__(world, name, cfg, rec)
        self._check_u = uniform_sampler(world.streams[f"txn/vote/{name}"])

    def boot(self) -> None:
        super().boot()
        self.balances: dict[int, int] = self.disk.setdefault("balances", {})
        self.txns: dict[str, PTxn] = {}
        self.locks: dict[int, str] = {}
        self.decided: dict[str, Decision] = {}  # from the log, plus volatile news
        prepared: dict[str, LogRecord] = {}
        precommitted: set[str] = set()
        for record in self.log:
            if record.kind == Record.PREPARED:
                prepared[record.gtid] = record
            elif record.kind == Record.PRECOMMITTED:
                precommitted.add(record.gtid)
            elif record.kind in (Record.COMMIT, Record.ABORT):
                self.decided[record.gtid] = Decision(record.kind.value)
        for gtid, r in prepared.items():
            if gtid in self.decided:
                continue
            state = PState.PRECOMMITTED if gtid in precommitted else PState.PREPARED
            t = self.txns[gtid] = PTxn(gtid, r.coordinator, r.participants, r.account, r.delta, state)
            self.lock(t)
            self.rec.state(gtid, self.name, state, "in doubt after recovery")
            self.resume_in_doubt(t)

    def resume_in_doubt(self, t: PTxn) -> None:
        """Called at recovery for every transaction the log leaves in doubt."""
        raise NotImplementedError

    def on_crash(self) -> None:
        for t in self.txns.values():
            if t.state == PState.WORKING:  # not voted yet: the work is lost, the transaction aborts here
                self.rec.state(t.gtid, self.name, PState.ABORTED, "crashed before voting")
                self.rec.unlock(t.gtid, self.name)

    # -- local data -------------------------------------------------------------
    def balance(self, account: int) -> int:
        return self.balances.get(account, self.cfg.initial_balance)

    def lock(self, t: PTxn) -> None:
        self.locks[t.account] = t.gtid
        self.rec.lock(t.gtid, self.name, t.account)

    def unlock(self, t: PTxn) -> None:
        if self.locks.get(t.account) == t.gtid:
            del self.locks[t.account]
        self.rec.unlock(t.gtid, self.name)

    def prepare_check(self, gtid: str, account: int, delta: int) -> str | None:
        """Why this participant must vote no, or None to vote yes."""
        u = self._check_u()  # drawn for every prepare, so the stream never shifts
        holder = self.locks.get(account)
        if holder is not None and holder != gtid:
            self.rec.conflict(self.name, account, gtid, holder)
            return f"account {account} locked by {holder}"
        if self.balance(account) + delta < 0:
            return "insufficient balance"
        if u < self.cfg.abort_probability:
            return "local check failed"
        return None

    # -- the vote -----------------------------------------------------------------
    def on_prepare(self, gtid: str, participants: tuple[str, ...], account: int, delta: int, src: str) -> None:
        """Handle a prepare (2PC) or can-commit (3PC) request from coordinator ``src``."""
        t = self.txns.get(gtid)
        if t is not None:
            if t.state in UNCERTAIN_STATES:  # a duplicate: repeat the vote
                self.tsend(src, Vote(gtid, True))
            return
        decided = self.decided.get(gtid)
        if decided is not None:
            if decided == Decision.ABORT:
                self.tsend(src, Vote(gtid, False, "already aborted"))
            return
        reason = self.prepare_check(gtid, account, delta)
        if reason is not None:
            self.decided[gtid] = Decision.ABORT
            self.lazy(LogRecord(Record.ABORT, gtid))
            self.rec.vote(gtid, self.name, False, reason)
            self.rec.state(gtid, self.name, PState.ABORTED, f"voted no: {reason}")
            self.tsend(src, Vote(gtid, False, reason))
            return
        t = self.txns[gtid] = PTxn(gtid, src, participants, account, delta, PState.WORKING)
        self.lock(t)
        self.rec.state(gtid, self.name, PState.WORKING)
        self.force(LogRecord(Record.PREPARED, gtid, src, participants, account, delta), self._prepared, t)

    def _prepared(self, t: PTxn) -> None:
        if t.state == PState.WORKING:
            t.state = PState.PREPARED
            self.rec.state(t.gtid, self.name, PState.PREPARED)
            self.rec.vote(t.gtid, self.name, True)
            self.tsend(t.coordinator, Vote(t.gtid, True))
            t.timer = self.set_timer(self.cfg.decision_timeout, self.on_decision_timeout, t)
        elif t.state == PState.ABORTED:  # aborted unilaterally while the prepare record was being written
            self.rec.vote(t.gtid, self.name, False, "aborted before voting")
            self.tsend(t.coordinator, Vote(t.gtid, False, "aborted before voting"))

    def on_decision_timeout(self, t: PTxn) -> None:
        raise NotImplementedError

    # -- decisions --------------------------------------------------------------------
    def commit(self, t: PTxn, how: str) -> None:
        """Force the commit record, then apply the transfer and release the lock."""
        t.cancel_timer()
        t.state = PState.COMMITTING
        self.force(LogRecord(Record.COMMIT, t.gtid), self._committed, t, how)

    def _committed(self, t: PTxn, how: str) -> None:
        self.balances[t.account] = self.balance(t.account) + t.delta
        self.decided[t.gtid] = Decision.COMMIT
        self.txns.pop(t.gtid, None)
        t.state = PState.COMMITTED
        self.unlock(t)
        self.rec.state(t.gtid, self.name, PState.COMMITTED, how)
        self.after_commit(t)

    def after_commit(self, t: PTxn) -> None:
        """Hook: what to send once the commit is durable."""

    def abort_local(self, t: PTxn, how: str, then: Callable[..., None] | None = None, *args: Any) -> None:
        """Abort ``t`` here: release the lock. With ``then`` the abort record is forced
        (and ``then`` runs when it is durable), otherwise written lazily."""
        t.cancel_timer()
        t.state = PState.ABORTED
        self.decided[t.gtid] = Decision.ABORT
        self.txns.pop(t.gtid, None)
        self.unlock(t)
        self.rec.state(t.gtid, self.name, PState.ABORTED, how)
        if then is not None:
            self.force(LogRecord(Record.ABORT, t.gtid), then, *args)
        else:
            self.lazy(LogRecord(Record.ABORT, t.gtid))

    def abort_unilaterally(self, gtid: str, then: Callable[..., None], *args: Any) -> None:
        """Abort a transaction this participant has not voted on (asked by a peer).

        The abort record is forced before ``then`` runs (it answers the peer): a
        participant that forgot it after a crash could otherwise vote yes later.
        """
        t = self.txns.get(gtid)
        if t is not None:
            self.abort_local(t, "unilateral abort before voting", then, *args)
            return
        self.decided[gtid] = Decision.ABORT
        self.rec.state(gtid, self.name, PState.ABORTED, "unilateral abort: never prepared")
        self.force(LogRecord(Record.ABORT, gtid), then, *args)
