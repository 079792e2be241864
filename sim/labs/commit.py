"""Lab 5: two-phase commit that stays atomic under crashes and decides without its coordinator.

The student writes ``Coordinator`` (a :class:`CoordinatorBase`) and ``Participant``
(a :class:`ParticipantBase`). The coordinator ``n1`` turns every client request into
a transfer touching two to four of the participants ``n2``..``n5``; each participant
has a local check (:meth:`ParticipantBase.can_commit`) that may refuse. Durable state
is a write-ahead log whose writes take ``force_time`` and become durable in order (a
crash loses the writes still in progress). Graded, with the transaction recorder and
the atomicity checker of :mod:`sim.transactions`:

* ``atomic``: no transaction commits at one participant and aborts at another, none
  flips, every decided transaction is applied at every participant once the faults
  are over, and no client is told the opposite of what happened; under coordinator
  and participant crashes, a partition, loss, duplication and a slow node;
* ``blocking-bounded``: the coordinator crashes for :data:`OUTAGE` ms just after
  losing its link to one or two participants. No participant that voted yes stays
  uncertain longer than the bound ``vote_timeout + decision_timeout + 2 *
  retry_interval`` (the recorder's blocking threshold, 200 ms here), except while it
  cannot learn the outcome from anyone: in a transaction where every participant
  voted yes and none learned the outcome before the coordinator came back, only the
  time after the coordinator's recovery counts;
* ``commits-without-faults``: with no fault and every local check passing, every
  transaction commits and its client is told so (always aborting is atomic, and
  fails here).

Two-phase commit with presumed abort, timeouts, cooperative termination and
recovery from the log passes all three (``tests/labs/commit_reference.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from ..config import fld
from ..dists import buffered_sampler, uniform_sampler
from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..protocol import register_protocol
from ..transactions.common import ForwardingNode, TransactionConfig
from ..transactions.recorder import TxnRecorder
from ..transactions.states import Decision, PState
from ..workload.transfers import TransferWorkload
from .core import Check, Lab, LabNode, LabTest, lab_rng, random_faults, solution_classes

__all__ = ["CoordinatorBase", "ParticipantBase", "Vote", "CommitLabConfig", "CommitLabRecorder", "LAB",
           "check_atomic", "check_blocking", "check_commits"]

NODES = ("n1", "n2", "n3", "n4", "n5")
COORDINATOR = "n1"
PARTICIPANTS = NODES[1:]
DURATION = 3000.0
CALM_DURATION = 1500.0
VOTE_TIMEOUT = 50.0
DECISION_TIMEOUT = 100.0
RETRY_INTERVAL = 25.0
#: the bound of ``blocking-bounded`` (``TransactionConfig.threshold`` with these timeouts)
BOUND = VOTE_TIMEOUT + DECISION_TIMEOUT + 2 * RETRY_INTERVAL
FORCE_TIME = {"dist": "uniform", "low": 1.0, "high": 5.0}
LATENCY = {"dist": "exponential", "mean": 2.0}
CLIENT_TIMEOUT = 1000.0
SETTLE = 2000.0
#: ``atomic``: the coordinator's quick restarts and its longer outage (ms down), and how long
#: before each its link to some participants fails; the share of local checks that fail
RESTART = (10.0, 80.0)
LONG_OUTAGE = (150.0, 600.0)
RESTART_LEAD = (5.0, 40.0)
ATOMIC_REFUSALS = 0.1
#: ``blocking-bounded``: how long the coordinator stays down, how long before that its link fails
OUTAGE = 1200.0
OUTAGE_LEAD = (10.0, 80.0)
BLOCKING_REFUSALS = 0.2
OUTCOMES = ("commit", "abort")
#: the atomicity checker's violation kinds, most serious first (the first found is the one shown)
SEVERITY = ("split", "flip", "client", "incomplete")


@dataclass(frozen=True, slots=True)
class Vote:
    """Participant -> coordinator: its vote on ``gtid`` (sent by :meth:`ParticipantBase.vote`)."""

    gtid: str
    yes: bool


class CommitLabRecorder(TxnRecorder):
    """The commit protocols' recorder, also knowing which participants are uncertain right now.

    ``uncertain`` holds the (gtid, node) pairs whose last state is ``prepared``:
    the run goes on after the clients stop until it is empty (see
    :meth:`CommitLabConfig.finish`).
    """

    def __init__(self, world: Host, coordinator: str, participants: tuple[str, ...], threshold: float) -> None:
        super().__init__(world, coordinator, participants, threshold)
        self.uncertain: set[tuple[str, str]] = set()

    def state(self, gtid: str, node: str, state: PState, detail: str = "") -> None:
        super().state(gtid, node, state, detail)
        if state == PState.PREPARED:
            self.uncertain.add((gtid, node))
        else:
            self.uncertain.discard((gtid, node))


def _is_commit(outcome: str, who: str) -> bool:
    if outcome not in OUTCOMES:
        raise ValueError(f"{who}: outcome must be 'commit' or 'abort', got {outcome!r}")
    return outcome == "commit"


class _CommitNode(LabNode):
    """What both roles share: the write-ahead log and per-transaction message counts."""

    def __init__(self, world: Host, name: str, config: CommitLabConfig, rec: CommitLabRecorder) -> None:
        super().__init__(world, name)
        self.config = config
        self.rec = rec
        self.coordinator: str = rec.coordinator
        self._force_time = buffered_sampler(config.force_time, world.streams[f"disk/{name}"])
        self._log_free_at = 0.0

    # the lab's own volatile state is reset here, so that a solution's boot() need not call super()
    def start(self) -> None:
        self._restarted()
        super().start()

    def recover(self) -> None:
        if not self.alive:
            self._restarted()
        super().recover()

    def _restarted(self) -> None:
        self._log_free_at = 0.0  # the writes in progress died with the process

    @property
    def log(self) -> tuple[tuple[str, Any], ...]:
        """The durable log: ``(gtid, record)`` pairs in the order they were written."""
        return tuple(self.disk.get("log", ()))

    def write_log(self, gtid: str, record: Any, then: Callable[..., Any] | None = None, *args: Any) -> None:
        """Append ``(gtid, record)`` to the log durably, then call ``then(*args)``.

        The write takes ``force_time`` and completes after every earlier write (a
        log is written in order). A crash before it completes loses it, and
        ``then`` never runs.
        """
        self.rec.forced_write(gtid)
        done = max(self.now + self._force_time(), self._log_free_at)
        self._log_free_at = done
        self.set_timer(done - self.now, self._written, gtid, record, then, args)

    def _written(self, gtid: str, record: Any, then: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        self.disk.setdefault("log", []).append((gtid, record))
        if then is not None:
            then(*args)

    def send(self, dst: str, msg: Any) -> None:
        """Send ``msg``; a message with a ``gtid`` counts towards its transaction's message cost."""
        gtid = getattr(msg, "gtid", None)
        if isinstance(gtid, str) and self.alive:
            self.rec.message(gtid, msg)
        super().send(dst, msg)


class CoordinatorBase(_CommitNode):
    """What the lab-5 coordinator starts with.

    Each client request becomes a transaction: the base draws its participants
    (two to four of ``self.participants``) and calls
    :meth:`start_transaction` with a fresh global id. ``self.decide(gtid,
    outcome)`` records the decision and answers the client; call it once the
    decision is final (a commit: once its log record is durable).
    """

    def __init__(self, world: Host, name: str, config: CommitLabConfig, rec: CommitLabRecorder,
                 participants: tuple[str, ...]) -> None:
        super().__init__(world, name, config, rec)
        self.participants: tuple[str, ...] = participants
        self._transfers = TransferWorkload(uniform_sampler(world.streams["txn"]), participants,
                                           config.min_participants, config.max_participants or len(participants),
                                           config.max_amount)
        self._seq = 0
        self._clients: dict[str, tuple[str, int]] = {}
        self.seal()

    def _restarted(self) -> None:
        super()._restarted()
        self.disk["incarnation"] = self.disk.get("incarnation", 0) + 1  # ids stay unique across crashes
        self._seq = 0
        self._clients = {}

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        seen = self.disk.setdefault("requests", set())  # a duplicated request is one transaction
        if (src, msg.op_id) in seen:
            return
        seen.add((src, msg.op_id))
        self._seq += 1
        spec = self._transfers.draw(f"t{self.disk['incarnation']}-{self._seq}", msg.op_id, msg.key)
        self.rec.begin_txn(spec)
        self._clients[spec.gtid] = (src, msg.op_id)
        self.start_transaction(spec.gtid, spec.participants)

    def start_transaction(self, gtid: str, participants: tuple[str, ...]) -> None:
        raise NotImplementedError("Coordinator must define start_transaction(gtid, participants)")

    def decide(self, gtid: str, outcome: str, why: str = "") -> None:
        """The coordinator's decision on ``gtid`` (``"commit"`` or ``"abort"``): recorded, and the
        client told ok or not (if it is still waiting for this coordinator incarnation)."""
        commit = _is_commit(outcome, "Coordinator.decide")
        self.rec.decision(gtid, Decision.COMMIT if commit else Decision.ABORT, why)
        client = self._clients.pop(gtid, None)
        if client is not None:
            src, op_id = client
            self.send(src, ClientReply(op_id, commit, gtid if commit else None, None if commit else "aborted"))


class ParticipantBase(_CommitNode):
    """What a lab-5 participant starts with.

    ``self.can_commit(gtid)``: the local check (the same answer every time it is
    asked about one transaction). ``self.vote(gtid, yes)`` sends :class:`Vote` to
    the coordinator; ``self.decide(gtid, outcome)`` applies the outcome here. Both
    are recorded for the grader.
    """

    def __init__(self, world: Host, name: str, config: CommitLabConfig, rec: CommitLabRecorder) -> None:
        super().__init__(world, name, config, rec)
        self._check_u = uniform_sampler(world.streams[f"lab_commit/check/{name}"])
        self._checks: dict[str, bool] = {}  # a property of the data, not of the process: survives crashes
        self.seal()

    def can_commit(self, gtid: str) -> bool:
        """Whether this participant's part of ``gtid`` can commit here (its local check)."""
        ok = self._checks.get(gtid)
        if ok is None:
            ok = self._checks[gtid] = self._check_u() >= self.config.abort_probability
        return ok

    def vote(self, gtid: str, yes: bool) -> None:
        """Send this participant's vote on ``gtid`` to the coordinator.

        Vote yes only once the log durably says so: from then on the participant
        may not abort on its own. A no vote aborts the transaction here.
        """
        if yes and not self.can_commit(gtid):
            raise ValueError(f"Participant {self.name} votes yes on {gtid} although can_commit({gtid!r}) is False")
        self.rec.vote(gtid, self.name, yes, "" if yes else "voted no")
        self.rec.state(gtid, self.name, PState.PREPARED if yes else PState.ABORTED, "voted yes" if yes else "voted no")
        self.send(self.coordinator, Vote(gtid, yes))

    def decide(self, gtid: str, outcome: str, why: str = "") -> None:
        """Apply the outcome of ``gtid`` here: ``"commit"`` or ``"abort"``."""
        commit = _is_commit(outcome, "Participant.decide")
        self.rec.state(gtid, self.name, PState.COMMITTED if commit else PState.ABORTED, why)


@register_protocol
@dataclass(frozen=True, kw_only=True)
class CommitLabConfig(TransactionConfig):
    """Lab 5's protocol: the solution's ``Coordinator`` and ``Participant`` over the commit protocols' fields."""

    tag: ClassVar[str] = "lab_commit"
    solution: str = fld(doc="the solution's .py file (sim.labs.grade passes in-process classes by key)",
                        missing="name the solution's .py file")

    def new_state(self, world: Host) -> CommitLabRecorder:
        nodes = world.scenario.nodes
        return CommitLabRecorder(world, self.coordinator_of(nodes), self.participants_of(nodes), self.threshold)

    def build_nodes(self, world: Host, state: TxnRecorder) -> dict[str, Node]:
        assert isinstance(state, CommitLabRecorder)
        classes = solution_classes(LAB, self.solution)
        nodes = world.scenario.nodes
        coordinator, parts = self.coordinator_of(nodes), self.participants_of(nodes)
        out: dict[str, Node] = {}
        for name in nodes:
            if name == coordinator:
                out[name] = classes["Coordinator"](world, name, self, state, parts)
            elif name in parts:
                out[name] = classes["Participant"](world, name, self, state)
            else:
                out[name] = ForwardingNode(world, name, coordinator)
        return out

    def finish(self, world: World, state: TxnRecorder) -> None:
        """Keep going until no participant is uncertain and every node is up (at most ``settle_limit``)."""
        assert isinstance(state, CommitLabRecorder)
        stop = world.now + self.settle_limit
        while world.now < stop and (state.uncertain or not all(n.alive for n in world.nodes.values())):
            world.env.run(until=min(world.now + self.retry_interval, stop))


# -- the nemesis --------------------------------------------------------------------------------
def _scenario(seed: int, solution: str, faults: list[dict[str, Any]], *, abort_probability: float,
              rate: float, duration: float = DURATION) -> dict[str, Any]:
    return {
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": LATENCY},
        "workload": {"clients": 4, "rate": rate, "target": "fixed", "target_node": COORDINATOR, "keys": 100,
                     "timeout": CLIENT_TIMEOUT},
        "faults": {"schedule": sorted(faults, key=lambda f: (f["start"], f["kind"]))},
        "protocol": {"name": "lab_commit", "solution": solution, "coordinator": COORDINATOR,
                     "abort_probability": abort_probability, "force_time": FORCE_TIME,
                     "vote_timeout": VOTE_TIMEOUT, "decision_timeout": DECISION_TIMEOUT,
                     "retry_interval": RETRY_INTERVAL, "settle_limit": SETTLE},
        "run": {"duration": duration, "seed": seed},
    }


def _failing_coordinator(rng: Any, start: float, length: float, lead: tuple[float, float]) -> list[dict[str, Any]]:
    """The coordinator loses its link to one or two participants, then crashes for ``length`` ms.

    The link fails ``lead`` ms (a range) before the crash: a decision sent in
    between reaches some participants and not others, the case where only the
    participants' logs and each other can settle it.
    """
    t0, t1 = round(start, 1), round(start + length, 1)
    cut = sorted(rng.choice(len(PARTICIPANTS), size=1 + int(rng.integers(2)), replace=False).tolist())
    before = round(float(rng.uniform(*lead)), 1)
    faults = [{"kind": "loss", "start": round(t0 - before, 1), "end": t0, "probability": 1.0, "src": COORDINATOR,
               "dst": PARTICIPANTS[i]} for i in cut]
    return faults + [{"kind": "crash", "start": t0, "end": t1, "node": COORDINATOR}]


def _atomic_scenario(seed: int, solution: str) -> dict[str, Any]:
    """Three quick restarts of the coordinator and one longer outage, each just after its link to
    some participants failed; three crashes of any node, a partition, a window of 10% loss, one
    of 20% duplication and a slow node."""
    rng = lab_rng("commit", "atomic", seed)
    faults: list[dict[str, Any]] = []
    for i in range(4):
        length = float(rng.uniform(*(RESTART if i < 3 else LONG_OUTAGE)))
        start = float(rng.uniform(300.0, DURATION - 200.0 - length))
        faults += _failing_coordinator(rng, start, length, RESTART_LEAD)
    faults += random_faults(rng, NODES, start=200.0, end=DURATION - 200.0, partitions=1, crashes=3, loss=0.1,
                            duplicate=0.2, slow_nodes=1, length=(100.0, 800.0), max_down=2)
    return _scenario(seed, solution, faults, abort_probability=ATOMIC_REFUSALS, rate=25)


def _blocking_scenario(seed: int, solution: str) -> dict[str, Any]:
    """The coordinator loses its link to one or two participants, then stays down for OUTAGE ms."""
    rng = lab_rng("commit", "blocking-bounded", seed)
    faults = _failing_coordinator(rng, float(rng.uniform(800.0, 1400.0)), OUTAGE, OUTAGE_LEAD)
    return _scenario(seed, solution, faults, abort_probability=BLOCKING_REFUSALS, rate=40)


def _calm_scenario(seed: int, solution: str) -> dict[str, Any]:
    return _scenario(seed, solution, [], abort_probability=0.0, rate=25, duration=CALM_DURATION)


# -- the checks ---------------------------------------------------------------------------------
def check_atomic(result: Any) -> Check:
    """The atomicity checker's verdict: no split, no flip, nothing left unapplied, no client misled."""
    verdict = result.verdicts["atomicity"]
    if verdict.ok:
        return Check(True, verdict.explanation)
    v = verdict.violations
    first = v.iloc[int(v["kind"].map(SEVERITY.index).to_numpy().argmin())]  # a split before a late commit
    gtid = first["gtid"]
    txn = result.tables["transactions"].set_index("gtid").loc[gtid]
    events = result.tables["events"]
    ev = events[events["gtid"] == gtid][["time", "node", "state", "detail"]].reset_index(drop=True)
    begin = float(txn["begin"])
    last = float(ev["time"].max()) if len(ev) else begin
    others = v["gtid"].nunique() - 1
    more = f" ({others} more transactions violate)" if others else ""
    decision = txn["decision"] if isinstance(txn["decision"], str) else "none"
    evidence = (f"{ev.to_string()}\ncoordinator's decision: {decision}; client told: {txn['client_outcome']}")
    return Check(False, f"{first['kind']}: {gtid}: {first['detail']}{more}", evidence=evidence,
                 window=(max(0.0, begin - 10.0), max(last, begin) + 20.0), ops=(int(txn["op_id"]),),
                 highlight=(f"'{gtid}'",))


def _outages(result: Any, node: str) -> list[tuple[float, float]]:
    """When ``node`` was down: (crash, recovery) pairs, recovery ``inf`` if it never came back."""
    ev = result.node_events[result.node_events["node"] == node]
    out: list[tuple[float, float]] = []
    down: float | None = None
    for t, event in zip(ev["time"], ev["event"]):
        if event == "crash" and down is None:
            down = float(t)
        elif event == "recover" and down is not None:
            out.append((down, float(t)))
            down = None
    if down is not None:
        out.append((down, math.inf))
    return out


def _who_knew(group: pd.DataFrame, node: str) -> str:
    """Which other participant could have told ``node`` the outcome, and from when."""
    others = group[group["node"] != node]
    silent = others[others["vote"].isna()]
    if len(silent):
        return f"{', '.join(silent['node'])} never voted (it could abort and say so)"
    no = others[others["vote"] == "no"]
    if len(no):
        return f"{no['node'].iloc[0]} voted no at {no['vote_time'].iloc[0]:.1f} ms"
    knew = others.dropna(subset=["outcome_time"]).sort_values("outcome_time")
    if len(knew):
        return f"{knew['node'].iloc[0]} {knew['outcome'].iloc[0]} at {knew['outcome_time'].iloc[0]:.1f} ms"
    return "the coordinator was up"


def check_blocking(result: Any) -> Check:
    """No yes voter uncertain beyond the bound, except while nobody it can ask knows the outcome."""
    cfg = result.scenario.protocol
    limit = float(cfg.threshold)
    end = float(result.meta["sim_end"])
    outages = _outages(result, cfg.coordinator_of(result.scenario.nodes))
    parts = result.tables["participants"]
    yes = parts["vote"] == "yes"
    all_yes = yes.groupby(parts["gtid"], sort=False).transform("all")
    first = parts.groupby("gtid", sort=False)["outcome_time"].transform("min").fillna(math.inf)
    a = parts["vote_time"]
    b = parts["outcome_time"].where(~parts["unresolved"].astype(bool) & parts["outcome_time"].notna(), end)
    start = a.copy()
    for down, up in outages:  # nobody can tell it before the coordinator is back: count from then
        hit = all_yes & (down < b) & (a < up) & (first >= up)
        start = start.where(~hit, start.clip(lower=up))
    waited = (b - start).where(yes)
    over = waited[waited > limit]
    if len(over) == 0:
        return Check(True, f"every participant that voted yes decided within {limit:g} ms of when it could")
    i = over.idxmax()
    gtid, node = str(parts.at[i, "gtid"]), str(parts.at[i, "node"])
    voted, since, decided, longest = float(a[i]), float(start[i]), float(b[i]), float(over[i])
    group = parts[parts["gtid"] == gtid]
    txn = result.tables["transactions"].set_index("gtid").loc[gtid]
    coordinator = ", ".join(f"{d:g}-{u:g} ms" for d, u in outages) or "never"
    how = "never decided" if decided >= end else f"decided {longest:.0f} ms later"
    if since == voted:
        what = (f"{node} voted yes on {gtid} at {voted:.1f} ms and {how} (bound {limit:g} ms), although "
                f"{_who_knew(group, node)}")
        asks = voted + cfg.decision_timeout  # the diagram: from its vote to when it should have been asking around
        shown = voted - 5.0
    else:
        what = f"{node} was uncertain about {gtid} when the coordinator came back at {since:g} ms and {how} " \
               f"(bound {limit:g} ms)"
        asks = shown = since
        shown -= 15.0
    evidence = group[["node", "vote", "vote_time", "outcome", "outcome_time"]].reset_index(drop=True)
    more = f" ({len(over) - 1} more over the bound)" if len(over) > 1 else ""
    return Check(False, f"{what}; the coordinator was down {coordinator}{more}",
                 evidence=evidence, window=(shown, asks + 2 * cfg.retry_interval + 15.0),
                 ops=(int(txn["op_id"]),), highlight=(f"'{gtid}'",))


def check_commits(result: Any) -> Check:
    """With no fault and every local check passing, every transaction commits everywhere and its client hears ok."""
    txns = result.tables["transactions"]
    if len(txns) == 0:
        return Check(False, "no transaction started: no client request reached the coordinator")
    parts = result.tables["participants"]
    everywhere = parts.assign(c=parts["outcome"] == "committed").groupby("gtid", sort=False)["c"].all()
    good = txns["gtid"].map(everywhere).fillna(False).astype(bool) & (txns["client_outcome"] == "ok")
    if good.all():
        return Check(True, f"all {len(txns)} transactions committed")
    bad = txns[~good]
    first = bad.iloc[0]
    group = parts[parts["gtid"] == first["gtid"]]
    votes = ", ".join(f"{n} {v if isinstance(v, str) else 'no vote'}" for n, v in zip(group["node"], group["vote"]))
    decision = first["decision"] if isinstance(first["decision"], str) else "none"
    evidence = group[["node", "vote", "vote_time", "outcome", "outcome_time"]].reset_index(drop=True)
    begin = float(first["begin"])
    return Check(False, f"{len(bad)} of {len(txns)} transactions did not commit although nothing failed and every "
                        f"participant could commit; e.g. {first['gtid']}: votes {votes}; decision {decision}; "
                        f"client told {first['client_outcome']}",
                 evidence=evidence, window=(max(0.0, begin - 5.0), begin + VOTE_TIMEOUT + 30.0),
                 ops=(int(first["op_id"]),))


LAB = Lab(
    id="commit",
    number=5,
    title="Two-phase commit with cooperative termination",
    protocol="lab_commit",
    classes={"Coordinator": CoordinatorBase, "Participant": ParticipantBase},
    skeleton="lab5_commit.py",
    tests=(
        LabTest("atomic",
                "no transaction commits at one participant and aborts at another, and every decided one is "
                "applied everywhere, under crashes of the coordinator and participants, a partition, loss, "
                "duplication and a slow node",
                _atomic_scenario, check_atomic),
        LabTest("blocking-bounded",
                f"with the coordinator down for {OUTAGE:g} ms, a participant that voted yes decides within "
                f"{BOUND:g} ms (of the coordinator's return, if every participant was uncertain until then)",
                _blocking_scenario, check_blocking),
        LabTest("commits-without-faults",
                "with no fault and every local check passing, every transaction commits",
                _calm_scenario, check_commits),
    ),
)
