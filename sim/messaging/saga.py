"""Sagas: a multi-step business operation whose completed steps are undone when a later one fails.

An **orchestrator** node runs each saga: it sends the service of step 0 a
``StepCommand``, waits for its ``StepReply``, then step 1, and so on. Commands
and replies travel over the simulated network directly (not through the broker):
the saga's guarantees come from the orchestrator's log, its retries and the
services' idempotency, and a direct request/reply keeps the failure modes to
those three (a broker leg would add its own, studied in :mod:`.protocol`).

Failures and what the orchestrator does:

* a **business failure** (step ``i``'s action refused, with probability
  ``failure_probability``, decided per saga and step: out of stock stays out of
  stock) → compensate steps ``i-1 .. 0`` in reverse order;
* a **timeout** (no reply in ``step_timeout``: command or reply lost, service
  down or slow) → resend, up to ``max_attempts`` in all; then compensate steps
  ``i .. 0``: step ``i`` may have been applied, so it is compensated too;
* compensations are sent one at a time, in reverse order, and (robust) resent
  every ``step_timeout`` until acknowledged; with ``retry_compensation = false``
  (naive) a compensation that is not acknowledged in time is given up on.

Services keep, per (saga id, step), a durable record and an effect ledger
(``applies``, ``undos``). Idempotent services (the default) apply an action at
most once, answer a repeat with the first answer, treat a compensation of a
step they never applied as done and remember it ("cancelled"), refusing the
action if it arrives late. Non-idempotent services apply every command they get.

The orchestrator's saga log is durable (``durable_log = true``: written before
each command is sent; after a crash it resumes every unfinished saga by
resending its current command) or volatile (naive: a crash forgets the sagas in
flight). ``crash_probability`` crashes the orchestrator's process right after
it sends a command (decided per saga and command), restarting it
``restart_after`` later; machine crashes and partitions come from ``[faults]``.
:mod:`sim.checkers.saga` checks the outcome against the services' ledgers.
A scenario::

    [cluster]
    nodes = ["orch", "orders", "stock", "payment", "shipping"]

    [workload]
    clients = 0

    [run]
    duration = "20s"

    [protocol]
    name = "saga"
    orchestrator = "orch"
    step_timeout = "100ms"
    max_attempts = 3
    arrivals = { rate = 50, count = 300 }

    [[protocol.steps]]
    name = "create_order"
    service = "orders"

    [[protocol.steps]]
    name = "reserve_stock"
    service = "stock"
    failure_probability = 0.1

    [[protocol.steps]]
    name = "charge_payment"
    service = "payment"
    failure_probability = 0.1
    service_time = { dist = "exponential", mean = "10ms" }

    [[protocol.steps]]
    name = "schedule_shipping"
    service = "shipping"
    failure_probability = 0.05

    [[faults.schedule]]
    kind = "crash"
    node = "payment"
    start = "2s"
    end = "3s"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from ..checkers.saga import SagaReport, check_sagas
from ..config import Duration, at_least, fld, positive, prob
from ..dists import Constant, Dist, buffered_sampler
from ..errors import ScenarioError
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..protocol import ProtocolConfig, register_protocol
from ..report import line, pairs, verdict_line
from ..states import State
from ..workload.arrivals import Arrivals, ArrivalSpec
from .patterns import check_roles, percentiles
from .retry import decision_uniform

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["SagaConfig", "SagaStep", "StepCommand", "StepReply", "OrchestratorNode", "SagaServiceNode",
           "SagaState"]

class Phase(State):
    """Where a saga is in the orchestrator's log."""

    FORWARD = "forward"  # running its steps in order
    COMPENSATING = "compensating"  # undoing the completed steps in reverse order
    COMPLETED = "completed"
    COMPENSATED = "compensated"


class StepState(State):
    """A service's durable record of one (saga, step)."""

    APPLIED = "applied"
    FAILED = "failed"  # the action was refused (business failure)
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"  # compensated before the action arrived: a late action is refused


_FINAL = (Phase.COMPLETED, Phase.COMPENSATED)


@dataclass(frozen=True, kw_only=True)
class SagaStep:
    """One step: an action at ``service`` (and its compensation there)."""

    name: str = fld()
    service: str = fld()
    failure_probability: float = fld(0.0, check=prob)
    service_time: Dist = fld(Constant(1.0))


@dataclass(frozen=True, slots=True)
class StepCommand:
    """Orchestrator -> service: do (or, with ``compensate``, undo) ``step`` of ``saga_id``."""

    saga_id: str
    step: int
    compensate: bool
    attempt: int


@dataclass(frozen=True, slots=True)
class StepReply:
    """Service -> orchestrator: ``ok`` = done; for an action, False = refused (business failure or too late)."""

    saga_id: str
    step: int
    compensate: bool
    ok: bool
    attempt: int


@register_protocol
@dataclass(frozen=True, kw_only=True)
class SagaConfig(ProtocolConfig["SagaState"]):
    """An orchestrated saga over ``steps`` (see the module docstring)."""

    tag: ClassVar[str] = "saga"
    orchestrator: str = fld("orchestrator")
    steps: tuple[SagaStep, ...] = fld()
    arrivals: ArrivalSpec = fld(ArrivalSpec())
    step_timeout: Duration = fld(200.0, check=positive)
    max_attempts: int = fld(3, check=at_least(1))
    retry_compensation: bool = fld(True)
    durable_log: bool = fld(True)
    idempotent_services: bool = fld(True)
    crash_probability: float = fld(0.0, check=prob)
    restart_after: Duration = fld(1000.0, check=positive)

    def _validate(self, path: str) -> None:
        if not self.steps:
            raise ScenarioError(f"{path}.steps", "must list at least one step")
        for i, step in enumerate(self.steps):
            if step.name in [s.name for s in self.steps[:i]]:
                raise ScenarioError(f"{path}.steps[{i}].name", f"duplicate step name {step.name!r}")
            if step.service == self.orchestrator:
                raise ScenarioError(f"{path}.steps[{i}].service",
                                    f"must not be the orchestrator ({self.orchestrator!r})")

    def node_refs(self) -> list[tuple[str, str]]:
        return [("orchestrator", self.orchestrator)] + [(f"steps[{i}].service", s.service)
                                                        for i, s in enumerate(self.steps)]

    def services(self) -> list[str]:
        """Service nodes in order of first appearance."""
        out: list[str] = []
        for s in self.steps:
            if s.service not in out:
                out.append(s.service)
        return out

    def check_scenario(self, scenario: Any, path: str) -> None:
        roles = [("orchestrator", self.orchestrator)]
        for i, s in enumerate(self.steps):
            if s.service not in [r[1] for r in roles]:
                roles.append((f"steps[{i}].service", s.service))
        check_roles(scenario, roles, path, "saga")

    def new_state(self, world: Host) -> SagaState:
        return SagaState(world)

    def build_nodes(self, world: Host, state: SagaState) -> dict[str, Node]:
        nodes: dict[str, Node] = {self.orchestrator: OrchestratorNode(world, self.orchestrator, self, state)}
        for service in self.services():
            steps = {i: s for i, s in enumerate(self.steps) if s.service == service}
            nodes[service] = SagaServiceNode(world, service, self, state, steps)
        return nodes

    def finish(self, world: World, state: SagaState) -> None:
        state.report, state.effects = saga_report(world, self, state)

    def summary(self, world: World, state: SagaState) -> dict[str, Any]:
        assert state.report is not None
        return _summary(state.report, state)

    def tables(self, world: World, state: SagaState) -> dict[str, pd.DataFrame]:
        assert state.report is not None and state.effects is not None
        return {"sagas": state.report.sagas, "saga_effects": state.effects, **world.events.frames()}

    def verdicts(self, world: World, state: SagaState) -> dict[str, Any]:
        return {"saga": state.report}

    def report(self, result: Result) -> list[str]:
        s = result.summary
        verdict = result.verdicts.get("saga")
        out = [
            line("sagas", pairs((k.replace("_", " "), s[f"saga.{k}"]) for k in (
                "sagas", "completed", "compensated", "stuck", "stuck_dirty", "forgotten", "inconsistent"))),
            line("  commands", pairs((k.replace("_", " "), s[f"saga.{k}"]) for k in (
                "commands", "retries", "timeouts", "compensations_sent", "orchestrator_crashes"))),
            line("  latency", "start to end, ms: " + pairs((k, s[f"saga.latency.{k}"]) for k in ("p50", "p99"))),
            verdict_line("saga consistency", verdict, "every saga finished, completed or fully compensated"),
        ]
        return out


class SagaState:
    """The observer's record of one run (not node state): starts, claimed ends, events, the report.

    Events (channel ``saga_events``): ``start``, ``command`` / ``compensate`` (sent, with
    the step and attempt), ``reply_ok``, ``reply_refused``, ``timeout``,
    ``compensation_given_up`` (naive), ``orchestrator_crash`` (seeded), ``resume`` (after
    a restart, durable log), ``completed``, ``compensated``.
    """

    EVENT_COLUMNS = ("time", "saga_id", "event", "step", "attempt")

    def __init__(self, world: Host) -> None:
        self.started: dict[str, float] = {}
        self.finished: dict[str, tuple[str, float]] = {}
        self.events = world.events.channel("saga_events", self.EVENT_COLUMNS)
        self.report: SagaReport | None = None
        self.effects: pd.DataFrame | None = None

    def event(self, t: float, saga_id: str, event: str, step: int = -1, attempt: int = 0) -> None:
        self.events.record(t, saga_id, event, step, attempt)


class _Record:
    """One saga in the orchestrator's log: phase, current step, steps left to undo."""

    __slots__ = ("phase", "step", "attempt", "to_undo")

    def __init__(self) -> None:
        self.phase = Phase.FORWARD
        self.step = 0
        self.attempt = 0
        self.to_undo: list[int] = []


class OrchestratorNode(Node):
    """Starts sagas at the configured arrival rate and drives each through its steps."""

    def __init__(self, world: Host, name: str, cfg: SagaConfig, runtime: SagaState) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.runtime = runtime
        self.seed = world.seed
        self.arrivals = Arrivals(cfg.arrivals, world.streams[f"saga/{name}"], world.scenario.run.duration)
        self._token = 0  # kept across crashes: a timer of an earlier life never matches
        self._sent: dict[str, int] = {}  # commands sent per saga (crash decisions)

    def boot(self) -> None:
        self.log: dict[str, _Record] = self.disk.setdefault("saga_log", {}) if self.cfg.durable_log else {}
        self.waiting: dict[str, int] = {}
        self.arrivals.resume(self, self._start)
        for sid, rec in list(self.log.items()):
            if not self.alive:
                break
            if rec.phase not in _FINAL:
                self.runtime.event(self.now, sid, "resume", self._current(rec))
                self._send(sid)

    def knows(self, saga_id: str) -> bool:
        """Whether the orchestrator still has a record of ``saga_id`` (a crashed one only its durable log)."""
        if self.cfg.durable_log:
            return saga_id in self.disk.get("saga_log", {})
        return self.alive and saga_id in self.log

    @staticmethod
    def _current(rec: _Record) -> int:
        return rec.step if rec.phase == Phase.FORWARD else rec.to_undo[0]

    def _start(self, i: int) -> None:
        sid = f"saga-{i}"
        self.log[sid] = _Record()
        self.runtime.started[sid] = self.now
        self.runtime.event(self.now, sid, "start")
        self._send(sid)

    def _send(self, sid: str) -> None:
        rec = self.log[sid]
        step = self._current(rec)
        compensate = rec.phase == Phase.COMPENSATING
        rec.attempt += 1
        self._token += 1
        self.waiting[sid] = self._token
        self.send(self.cfg.steps[step].service, StepCommand(sid, step, compensate, rec.attempt))
        self.runtime.event(self.now, sid, "compensate" if compensate else "command", step, rec.attempt)
        self.set_timer(self.cfg.step_timeout, self._timeout, sid, self._token)
        p = self.cfg.crash_probability
        if p > 0:
            n = self._sent[sid] = self._sent.get(sid, 0) + 1
            if decision_uniform(self.seed, "saga_crash", sid, n) < p:
                self.runtime.event(self.now, sid, "orchestrator_crash", step, rec.attempt)
                self.restart_after(self.cfg.restart_after)

    def handle_StepReply(self, msg: StepReply, src: str) -> None:
        sid = msg.saga_id
        rec = self.log.get(sid)
        if rec is None or rec.phase in _FINAL:
            return
        if msg.compensate != (rec.phase == Phase.COMPENSATING) or msg.step != self._current(rec):
            return  # a late reply to a command this saga has moved past
        self.waiting.pop(sid, None)
        self.runtime.event(self.now, sid, "reply_ok" if msg.ok else "reply_refused", msg.step, msg.attempt)
        if rec.phase == Phase.COMPENSATING:
            rec.to_undo.pop(0)
            rec.attempt = 0
            self._next_compensation(sid, rec)
        elif msg.ok:
            rec.step += 1
            rec.attempt = 0
            if rec.step == len(self.cfg.steps):
                self._finish(sid, rec, Phase.COMPLETED)
            else:
                self._send(sid)
        else:
            self._compensate(sid, rec, rec.step - 1)  # the refused step applied nothing

    def _timeout(self, sid: str, token: int) -> None:
        if self.waiting.get(sid) != token:
            return
        del self.waiting[sid]
        rec = self.log[sid]
        self.runtime.event(self.now, sid, "timeout", self._current(rec), rec.attempt)
        if rec.phase == Phase.FORWARD:
            if rec.attempt < self.cfg.max_attempts:
                self._send(sid)
            else:
                self._compensate(sid, rec, rec.step)  # the step may have been applied: undo it too
        elif self.cfg.retry_compensation:
            self._send(sid)
        else:  # naive: give up on this compensation and carry on as if it had been done
            self.runtime.event(self.now, sid, "compensation_given_up", rec.to_undo.pop(0), rec.attempt)
            rec.attempt = 0
            self._next_compensation(sid, rec)

    def _compensate(self, sid: str, rec: _Record, last: int) -> None:
        rec.phase = Phase.COMPENSATING
        rec.to_undo = list(range(last, -1, -1))
        rec.attempt = 0
        self._next_compensation(sid, rec)

    def _next_compensation(self, sid: str, rec: _Record) -> None:
        if rec.to_undo:
            self._send(sid)
        else:
            self._finish(sid, rec, Phase.COMPENSATED)

    def _finish(self, sid: str, rec: _Record, status: Phase) -> None:
        rec.phase = status
        self.runtime.finished[sid] = (status, self.now)
        self.runtime.event(self.now, sid, status)


class SagaServiceNode(Node):
    """Executes the actions and compensations of its steps against a durable store."""

    def __init__(self, world: Host, name: str, cfg: SagaConfig, runtime: SagaState,
                 steps: dict[int, SagaStep]) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.runtime = runtime
        self.steps = steps
        self.seed = world.seed
        self._work = {i: buffered_sampler(s.service_time, world.streams[f"saga/{name}/{s.name}"])
                      for i, s in steps.items()}

    def boot(self) -> None:
        self.records: dict[tuple[str, int], StepState] = self.disk.setdefault("records", {})
        self.ledger: dict[tuple[str, int], list[int]] = self.disk.setdefault("ledger", {})

    def handle_StepCommand(self, msg: StepCommand, src: str) -> None:
        self.set_timer(float(self._work[msg.step]()), self._execute, msg, src)

    def _execute(self, msg: StepCommand, src: str) -> None:
        key = (msg.saga_id, msg.step)
        ok = self._undo(key) if msg.compensate else self._do(key)
        self.send(src, StepReply(msg.saga_id, msg.step, msg.compensate, ok, msg.attempt))

    def _do(self, key: tuple[str, int]) -> bool:
        state = self.records.get(key)
        if self.cfg.idempotent_services and state is not None:
            return state == StepState.APPLIED  # a repeat gets the first answer; after a compensation: refused
        sid, step = key
        if decision_uniform(self.seed, "saga_business", sid, step) < self.steps[step].failure_probability:
            self.records[key] = StepState.FAILED
            return False
        self.records[key] = StepState.APPLIED
        self.ledger.setdefault(key, [0, 0])[0] += 1
        return True

    def _undo(self, key: tuple[str, int]) -> bool:
        state = self.records.get(key)
        if self.cfg.idempotent_services:
            if state == StepState.APPLIED:
                self.ledger.setdefault(key, [0, 0])[1] += 1
                self.records[key] = StepState.COMPENSATED
            elif state is None:
                self.records[key] = StepState.CANCELLED  # nothing to undo; a late action will be refused
            return True
        self.ledger.setdefault(key, [0, 0])[1] += 1  # naive: undo whatever the state
        self.records[key] = StepState.COMPENSATED
        return True


# -- results ------------------------------------------------------------------------
def saga_report(world: World, cfg: SagaConfig, runtime: SagaState) -> tuple[SagaReport, pd.DataFrame]:
    """Check the sagas of a finished world against its services' ledgers."""
    orch = world.nodes[cfg.orchestrator]
    assert isinstance(orch, OrchestratorNode)
    rows = []
    for sid, started in runtime.started.items():
        status, finished = runtime.finished.get(sid, (None, float("nan")))
        if status is None:
            status = "running" if orch.knows(sid) else "forgotten"
        rows.append((sid, status, started, finished))
    sagas = pd.DataFrame(rows, columns=["saga_id", "status", "started", "finished"])
    sagas = sagas.astype({"saga_id": object, "status": object, "started": "float64", "finished": "float64"})
    sagas["latency"] = sagas["finished"] - sagas["started"]
    effects_rows = []
    for service in cfg.services():
        node = world.nodes[service]
        records = node.disk.get("records", {})
        for (sid, step), (applies, undos) in node.disk.get("ledger", {}).items():
            effects_rows.append((sid, step, cfg.steps[step].name, service, applies, undos,
                                 records.get((sid, step), "")))
        for (sid, step), state in records.items():
            if (sid, step) not in node.disk.get("ledger", {}):
                effects_rows.append((sid, step, cfg.steps[step].name, service, 0, 0, state))
    effects = pd.DataFrame(effects_rows, columns=["saga_id", "step", "step_name", "service", "applies", "undos",
                                                  "state"])
    effects = effects.astype({"step": "int64", "applies": "int64", "undos": "int64"})
    effects = effects.sort_values(["saga_id", "step"], kind="stable").reset_index(drop=True)
    return check_sagas(sagas, effects, [s.name for s in cfg.steps]), effects


def _summary(report: SagaReport, runtime: SagaState) -> dict[str, Any]:
    out: dict[str, Any] = {f"saga.{k}": v for k, v in report.counts.items()}
    ev = runtime.events.rows
    out["saga.commands"] = sum(1 for e in ev if e[2] == "command")
    out["saga.retries"] = sum(1 for e in ev if e[2] in ("command", "compensate") and e[4] > 1)
    out["saga.compensations_sent"] = sum(1 for e in ev if e[2] == "compensate")
    out["saga.timeouts"] = sum(1 for e in ev if e[2] == "timeout")
    out["saga.orchestrator_crashes"] = sum(1 for e in ev if e[2] == "orchestrator_crash")
    finished = report.sagas[report.sagas["outcome"].isin(["completed", "compensated"])]
    out.update(percentiles(finished["latency"], "saga.latency"))
    return out
