"""Lab 4: a saga orchestrator that leaves nothing half done.

An order goes through four services in turn: ``orders`` (create the order),
``stock`` (reserve it), ``payment`` (charge it), ``shipping`` (schedule it). Each
may refuse its step for business reasons (decided per saga and step, so a retry
gets the same answer). The student writes ``SagaOrchestrator`` (an
:class:`OrchestratorBase`) on node ``orch``: the base starts sagas at
:data:`ARRIVAL_RATE` per second and calls ``start_saga(saga_id)``; the
orchestrator sends each step's service a ``StepCommand`` and, when a step is
refused, undoes the steps already done with compensating ``StepCommand`` s in
reverse order. Messages are lost and duplicated, services and the orchestrator
crash (only ``self.disk`` survives), and the orchestrator must resume every
unfinished saga after a crash. Graded:

* ``all-or-nothing``: once the faults are over, every saga that started ended
  completed (every step applied once) or compensated (every applied step
  undone), the outcome the orchestrator reported agrees with the services'
  records, and it was reported only once the services were done;
* ``compensation-order``: the services saw each saga's actions in step order,
  no action after its compensation began, compensations in reverse order, and
  no compensation of a step that never took effect;
* ``finishes-promptly``: with 5% loss and duplication and no crash, 95% of the
  sagas end within 500 ms of their start.

The lab provides the services (:class:`SagaService`): they keep a durable
record per (saga id, step) and are idempotent, so a resent command is safe: a
repeated action gets the first answer, a repeated compensation does nothing
more. A step's outcome is never unknown for good here (services always come
back), so the semantics are crisp: resend a command until its reply arrives,
and compensate exactly the steps whose service replied ``ok=True``. The refused
step applied nothing and is not compensated. What the services did is recorded
in the ``lab_saga_effects`` channel: the checkers' ground truth
(:func:`sim.checkers.saga.check_sagas` for the end state,
:func:`sim.checkers.saga_order.check_saga_order` for the order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from ..checkers.saga import SagaReport, check_sagas
from ..checkers.saga_order import SagaOrderReport, check_saga_order
from ..config import fld
from ..dists import Exponential, buffered_sampler
from ..errors import ScenarioError
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..messaging.patterns import percentiles
from ..messaging.retry import decision_uniform
from ..messaging.saga import SagaStep, StepCommand, StepReply, StepState
from ..protocol import ProtocolConfig, register_protocol
from ..report import line, pairs, verdict_line
from ..workload.arrivals import Arrivals, ArrivalSpec
from .core import Check, Lab, LabNode, LabTest, lab_rng, random_faults, solution_classes

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["OrchestratorBase", "SagaService", "SagaLabConfig", "SagaLabState", "StepCommand", "StepReply",
           "STEPS", "LAB"]

ORCH = "orch"
LATENCY_MS = 3.0          # mean one-way network latency (exponential)
SERVICE_MS = 5.0          # mean time a service takes to run an action or a compensation (exponential)
STEPS: tuple[SagaStep, ...] = (
    SagaStep(name="create_order", service="orders", failure_probability=0.05, service_time=Exponential(SERVICE_MS)),
    SagaStep(name="reserve_stock", service="stock", failure_probability=0.1, service_time=Exponential(SERVICE_MS)),
    SagaStep(name="charge_payment", service="payment", failure_probability=0.1, service_time=Exponential(SERVICE_MS)),
    SagaStep(name="schedule_shipping", service="shipping", failure_probability=0.1,
             service_time=Exponential(SERVICE_MS)),
)
SERVICES: tuple[str, ...] = tuple(s.service for s in STEPS)
NODES: tuple[str, ...] = (ORCH, *SERVICES)
ARRIVAL_RATE = 30.0       # sagas per second (Poisson) ...
ARRIVALS_STOP = 4000.0    # ... until 4 s
FAULTS_END = 4500.0       # every fault heals by 4.5 s ...
DURATION = 7500.0         # ... and the run ends 3 s later
PROMPT_MS = 500.0         # finishes-promptly: a saga ends within this long of its start ...
PROMPT_FRACTION = 0.95    # ... for at least this fraction of the sagas ...
PROMPT_LOSS = 0.05        # ... with this much message loss and duplication, and no crash


class SagaLabState:
    """The observer's record of one run: sagas started, outcomes reported, what the services did.

    Channels: ``lab_saga_starts`` (time, saga_id), ``lab_saga_outcomes`` (time,
    saga_id, outcome: ``completed`` or ``compensated``), ``lab_saga_effects`` (time,
    saga_id, step, step_name, service, effect; the effects of
    :mod:`sim.checkers.saga_order`).
    """

    def __init__(self, world: Host) -> None:
        self.started: dict[str, float] = {}
        self.starts = world.events.channel("lab_saga_starts", ("time", "saga_id"), {"time": "float64"})
        self.outcomes = world.events.channel("lab_saga_outcomes", ("time", "saga_id", "outcome"), {"time": "float64"})
        self.effects = world.events.channel("lab_saga_effects",
                                            ("time", "saga_id", "step", "step_name", "service", "effect"),
                                            {"time": "float64", "step": "int64"})
        self.report: SagaReport | None = None
        self.order: SagaOrderReport | None = None

    def start(self, t: float, saga_id: str) -> None:
        self.started[saga_id] = t
        self.starts.record(t, saga_id)


class OrchestratorBase(LabNode):
    """What the lab-4 orchestrator starts with (the student writes ``start_saga`` and ``handle_StepReply``).

    ``self.steps``: the saga's steps in order (each has ``.name`` and ``.service``).
    ``self.send_command(saga_id, step, compensate=False, attempt=0)`` sends step
    ``step``'s service a :class:`StepCommand` (an action, or with ``compensate`` its
    compensation); the service answers a :class:`StepReply` (``ok``: done; for an
    action, ``False``: refused). ``self.report_completed(saga_id)`` /
    ``self.report_compensated(saga_id)`` tell the customer how the saga ended.

    A crash loses everything but ``self.disk``, as a real process loses its memory:
    every attribute the solution set (in ``__init__``, ``boot`` or a handler) is
    gone, and ``boot()`` runs again at recovery. Sagas that would start while the
    orchestrator is down are turned away (never started).
    """

    def __init__(self, world: Host, name: str, config: SagaLabConfig, lab: SagaLabState) -> None:
        super().__init__(world, name)
        self.config = config
        self.steps: tuple[SagaStep, ...] = STEPS
        self._lab = lab
        self._arrivals = Arrivals(ArrivalSpec(rate=ARRIVAL_RATE, stop=ARRIVALS_STOP),
                                  world.streams["lab_saga/arrivals"], world.scenario.run.duration)
        self.seal()

    # -- what the student writes -------------------------------------------------------------
    def start_saga(self, saga_id: str) -> None:
        """A new saga ``saga_id`` starts now: run its steps."""
        raise NotImplementedError("SagaOrchestrator must define start_saga(saga_id)")

    def handle_StepReply(self, msg: StepReply, src: str) -> None:
        raise NotImplementedError("SagaOrchestrator must define handle_StepReply(msg, src)")

    # -- helpers ------------------------------------------------------------------------------
    def send_command(self, saga_id: str, step: int, compensate: bool = False, attempt: int = 0) -> None:
        """Send step ``step``'s service the action (or, with ``compensate``, the compensation) of ``saga_id``."""
        if not (isinstance(step, int) and 0 <= step < len(self.steps)):
            raise ValueError(f"step must be a step index 0..{len(self.steps) - 1}, got {step!r}")
        self.send(self.steps[step].service, StepCommand(saga_id, step, bool(compensate), attempt))

    def report_completed(self, saga_id: str) -> None:
        """Tell the customer saga ``saga_id`` completed: every step took effect."""
        self._report(saga_id, "completed")

    def report_compensated(self, saga_id: str) -> None:
        """Tell the customer saga ``saga_id`` was cancelled: every step that took effect was undone."""
        self._report(saga_id, "compensated")

    def _report(self, saga_id: str, outcome: str) -> None:
        if saga_id not in self._lab.started:
            raise ValueError(f"report_{outcome}({saga_id!r}): no saga with that id was started")
        self._lab.outcomes.record(self.now, saga_id, outcome)

    def send(self, dst: str, msg: Any) -> None:
        """As :meth:`Node.send`; a :class:`StepCommand` must name a started saga and go to its step's service."""
        if isinstance(msg, StepCommand):
            if not (isinstance(msg.step, int) and 0 <= msg.step < len(self.steps)):
                raise ValueError(f"StepCommand.step must be a step index 0..{len(self.steps) - 1}, got {msg.step!r}")
            service = self.steps[msg.step].service
            if dst != service:
                raise ValueError(f"step {msg.step} ({self.steps[msg.step].name}) runs at {service!r}: send its "
                                 f"StepCommand there, not to {dst!r}")
            if msg.saga_id not in self._lab.started:
                raise ValueError(f"StepCommand for {msg.saga_id!r}: no saga with that id was started")
        super().send(dst, msg)

    # -- life cycle: arrivals follow the process; a crash wipes the process's memory -------------
    def start(self) -> None:
        super().start()
        self._arrivals.resume(self, self._arrive)

    def recover(self) -> None:
        if self.alive:
            return
        super().recover()
        if self.alive:
            self._arrivals.resume(self, self._arrive)

    def _arrive(self, i: int) -> None:
        saga_id = f"saga-{i}"
        self._lab.start(self.now, saga_id)
        self.start_saga(saga_id)


class SagaService(Node):
    """A participant: runs the actions and compensations of its steps, idempotently per (saga id, step).

    Its durable record of each (saga, step) is a :class:`~sim.messaging.saga.StepState`.
    A command runs after the step's service time (a crash in between loses it: no
    reply). An action with no record is applied or refused (business failure);
    with a record it gets the first answer again, and after a compensation it is
    refused. A compensation undoes an applied action once; of a refused action it
    does nothing; of an action never seen it leaves a tombstone (``cancelled``) so
    that the action, if it arrives late, is refused. Every compensation is
    acknowledged ``ok``. Each of these is recorded in ``lab_saga_effects``.
    """

    def __init__(self, world: Host, name: str, steps: dict[int, SagaStep], lab: SagaLabState) -> None:
        super().__init__(world, name)
        self.steps = steps
        self.lab = lab
        self.seed = world.seed
        self._work = {i: buffered_sampler(s.service_time, world.streams[f"lab_saga/{name}/{s.name}"])
                      for i, s in steps.items()}

    def boot(self) -> None:
        self.records: dict[tuple[str, int], StepState] = self.disk.setdefault("records", {})

    def handle_StepCommand(self, msg: StepCommand, src: str) -> None:
        if msg.step in self.steps:  # OrchestratorBase.send checks the address
            self.set_timer(float(self._work[msg.step]()), self._execute, msg, src)

    def _execute(self, msg: StepCommand, src: str) -> None:
        key = (msg.saga_id, msg.step)
        ok = self._undo(key) if msg.compensate else self._do(key)
        self.send(src, StepReply(msg.saga_id, msg.step, msg.compensate, ok, msg.attempt))

    def _do(self, key: tuple[str, int]) -> bool:
        state = self.records.get(key)
        if state is not None:
            return state == StepState.APPLIED
        sid, step = key
        if decision_uniform(self.seed, "lab_saga_business", sid, step) < self.steps[step].failure_probability:
            self.records[key] = StepState.FAILED
            self._effect(key, "refused")
            return False
        self.records[key] = StepState.APPLIED
        self._effect(key, "applied")
        return True

    def _undo(self, key: tuple[str, int]) -> bool:
        state = self.records.get(key)
        if state == StepState.APPLIED:
            self.records[key] = StepState.COMPENSATED
            self._effect(key, "undone")
        elif state is None:
            self.records[key] = StepState.CANCELLED
            self._effect(key, "undo_never_ran")
        elif state == StepState.FAILED:
            self._effect(key, "undo_refused")
        return True

    def _effect(self, key: tuple[str, int], effect: str) -> None:
        sid, step = key
        self.lab.effects.record(self.now, sid, step, self.steps[step].name, self.name, effect)


@register_protocol
@dataclass(frozen=True, kw_only=True)
class SagaLabConfig(ProtocolConfig[SagaLabState]):
    """Lab 4's protocol: the solution's ``SagaOrchestrator`` on ``orch``, the lab's services on the others."""

    tag: ClassVar[str] = "lab_saga"
    solution: str = fld(doc="the solution's .py file (sim.labs.grade passes in-process classes by key)",
                        missing="name the solution's .py file")

    def check_scenario(self, scenario: Any, path: str) -> None:
        if tuple(scenario.nodes) != NODES:
            raise ScenarioError("cluster.nodes", f"lab 4 runs on exactly the nodes {list(NODES)}, "
                                                 f"got {list(scenario.nodes)}")
        if scenario.workload.clients != 0:
            raise ScenarioError("workload.clients", "must be 0: the orchestrator starts the sagas itself")

    def new_state(self, world: Host) -> SagaLabState:
        return SagaLabState(world)

    def build_nodes(self, world: Host, state: SagaLabState) -> dict[str, Node]:
        cls = solution_classes(LAB, self.solution)["SagaOrchestrator"]
        nodes: dict[str, Node] = {ORCH: cls(world, ORCH, self, state)}
        for service in SERVICES:
            steps = {i: s for i, s in enumerate(STEPS) if s.service == service}
            nodes[service] = SagaService(world, service, steps, state)
        return nodes

    def finish(self, world: World, state: SagaLabState) -> None:
        starts, outcomes, effects = (ch.frame() for ch in (state.starts, state.outcomes, state.effects))
        state.report = check_sagas(saga_table(starts, outcomes), ledger(effects), [s.name for s in STEPS])
        state.order = check_saga_order(effects, [s.name for s in STEPS])

    def summary(self, world: World, state: SagaLabState) -> dict[str, Any]:
        assert state.report is not None and state.order is not None
        out: dict[str, Any] = {f"saga.{k}": v for k, v in state.report.counts.items()}
        out["saga.out_of_order"] = state.order.counts["violating_sagas"]
        out.update(percentiles(state.report.sagas["latency"], "saga.latency"))
        return out

    def tables(self, world: World, state: SagaLabState) -> dict[str, pd.DataFrame]:
        assert state.report is not None
        return {"sagas": state.report.sagas, **world.events.frames()}

    def verdicts(self, world: World, state: SagaLabState) -> dict[str, Any]:
        return {"saga": state.report, "saga_order": state.order}

    def report(self, result: Result) -> list[str]:
        s = result.summary
        return [
            line("sagas", pairs((k.replace("_", " "), s[f"saga.{k}"]) for k in (
                "sagas", "completed", "compensated", "stuck", "inconsistent", "out_of_order"))),
            line("  latency", "start to report, ms: " + pairs((k, s[f"saga.latency.{k}"]) for k in ("p50", "p99"))),
            verdict_line("saga end state", result.verdicts.get("saga"), "every saga completed or compensated"),
            verdict_line("saga order", result.verdicts.get("saga_order"), "steps in order, compensations reversed"),
        ]


# -- from the channels to the checkers' inputs ------------------------------------------------------
def saga_table(starts: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per started saga: its first reported outcome as ``status`` (``running`` if none), and when."""
    first = outcomes.drop_duplicates("saga_id").set_index("saga_id")
    status = [first["outcome"].get(sid, "running") for sid in starts["saga_id"]]
    finished = [float(first["time"].get(sid, float("nan"))) for sid in starts["saga_id"]]
    table = pd.DataFrame({"saga_id": starts["saga_id"].astype(object), "status": pd.Series(status, dtype=object),
                          "started": starts["time"].astype("float64"), "finished": finished})
    table["latency"] = table["finished"] - table["started"]
    return table


def ledger(effects: pd.DataFrame) -> pd.DataFrame:
    """How often each (saga, step) took effect (``applies``) and was undone (``undos``): check_sagas's ledger."""
    counts: dict[tuple[str, int], list[int]] = {}
    for sid, step, effect in zip(effects["saga_id"], effects["step"], effects["effect"]):
        row = counts.setdefault((sid, int(step)), [0, 0])
        row[0] += effect == "applied"
        row[1] += effect == "undone"
    return pd.DataFrame([(sid, step, a, u) for (sid, step), (a, u) in counts.items()],
                        columns=["saga_id", "step", "applies", "undos"]).astype(
        {"saga_id": object, "step": "int64", "applies": "int64", "undos": "int64"})


def report_problems(outcomes: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """Reports that are wrong whatever the end state: two different outcomes for one saga, or an
    outcome reported while the services were still applying or undoing its steps."""
    rows: list[tuple[str, float, str]] = []
    first: dict[str, tuple[float, str]] = {}
    for t, sid, outcome in zip(outcomes["time"], outcomes["saga_id"], outcomes["outcome"]):
        if sid not in first:
            first[sid] = (float(t), outcome)
        elif first[sid][1] != outcome:
            rows.append((sid, float(t), f"reported {first[sid][1]} at {first[sid][0]:.1f} ms, then {outcome}"))
    late: dict[str, tuple[float, str, str]] = {}
    for t, sid, name, effect in zip(effects["time"], effects["saga_id"], effects["step_name"], effects["effect"]):
        if effect in ("applied", "undone") and sid in first and float(t) > first[sid][0] and sid not in late:
            late[sid] = (float(t), name, effect)
    for sid, (t, name, effect) in late.items():
        rows.append((sid, t, f"reported {first[sid][1]} at {first[sid][0]:.1f} ms, but {name} was "
                             f"{'applied' if effect == 'applied' else 'undone'} only at {t:.1f} ms"))
    rows.sort(key=lambda r: r[1])
    return pd.DataFrame(rows, columns=["saga_id", "time", "detail"])


def saga_timeline(result: Any, saga_id: str, crashes: int = 4) -> pd.DataFrame:
    """Everything recorded about one saga, in time order: its start, what the services did, its reports,
    and the first ``crashes`` crash and recovery events of any node from its start until it was reported."""
    t = result.tables
    rows = [(float(r.time), "start", "", ORCH) for r in t["lab_saga_starts"].itertuples() if r.saga_id == saga_id]
    rows += [(float(r.time), r.effect, r.step_name, r.service) for r in t["lab_saga_effects"].itertuples()
             if r.saga_id == saga_id]
    reports = [(float(r.time), f"reported {r.outcome}", "", ORCH) for r in t["lab_saga_outcomes"].itertuples()
               if r.saga_id == saga_id]
    rows += reports
    if rows:
        start = min(r[0] for r in rows)
        end = reports[0][0] if reports else float("inf")
        nodes = [(float(r.time), r.event, "", r.node) for r in result.node_events.itertuples()
                 if start <= r.time <= end]
        rows += nodes[:crashes]
    rows.sort(key=lambda r: r[0])
    out = pd.DataFrame(rows, columns=["time", "event", "step", "node"])
    out["time"] = out["time"].astype("float64").round(1)
    return out


def _window(timeline: pd.DataFrame) -> tuple[float, float]:
    """The saga's own events (not the crashes around them), with a margin: what the diagram shows."""
    own = timeline[~timeline["event"].isin(["crash", "recover"])]
    start = float(own["time"].min()) if len(own) else 0.0
    end = float(own["time"].max()) if len(own) else start
    return max(0.0, start - 10.0), max(end, start + 100.0) + 20.0


# -- the tests' checks ------------------------------------------------------------------------------
def check_all_or_nothing(result: Any) -> Check:
    """Every started saga ended completed or compensated, as reported and as the services' records say."""
    report: SagaReport = result.verdicts["saga"]
    problems = report_problems(result.tables["lab_saga_outcomes"], result.tables["lab_saga_effects"])
    if report.ok and not len(problems):
        c = report.counts
        return Check(True, f"{c['sagas']} sagas: {c['completed']} completed, {c['compensated']} compensated")
    bad = report.sagas[report.sagas["outcome"].isin(["stuck", "inconsistent"])]
    if len(bad):
        row = bad.iloc[0]
        sid = row["saga_id"]
        if row["outcome"] == "stuck":
            live = _in_effect(result.tables["lab_saga_effects"], sid)
            message = f"{sid} never finished (no outcome reported): " + (
                f"{', '.join(live)} still in effect" if live else "no step in effect")
        else:
            message = f"{sid} {row['detail']}"
        others = len(bad) - 1 + len(problems)
    else:
        sid = str(problems.iloc[0]["saga_id"])
        message = f"{sid}: {problems.iloc[0]['detail']}"
        others = len(problems) - 1
    if others:
        message += f" (and {others} more)"
    timeline = saga_timeline(result, sid)
    return Check(False, message, evidence=timeline, window=_window(timeline), highlight=(f"'{sid}'",))


def _in_effect(effects: pd.DataFrame, saga_id: str) -> list[str]:
    """The steps of ``saga_id`` applied and not undone, in step order."""
    mine = effects[effects["saga_id"] == saga_id]
    net = dict.fromkeys([s.name for s in STEPS], 0)
    for name, effect in zip(mine["step_name"], mine["effect"]):
        net[name] += (effect == "applied") - (effect == "undone")
    return [name for name, n in net.items() if n]


def check_compensation_order(result: Any) -> Check:
    """Each saga's actions in step order, none after its compensation began, compensations in reverse
    order and only of steps that took effect."""
    order: SagaOrderReport = result.verdicts["saga_order"]
    if order.ok:
        return Check(True, order.explanation)
    first = order.violations.iloc[0]
    sid = str(first["saga_id"])
    others = order.counts["violating_sagas"] - 1
    message = f"{sid}: {first['detail']}" + (f" (and {others} more sagas)" if others else "")
    timeline = saga_timeline(result, sid)
    return Check(False, message, evidence=timeline, window=_window(timeline), highlight=(f"'{sid}'",))


def check_prompt(result: Any) -> Check:
    """At least PROMPT_FRACTION of the sagas reported an outcome within PROMPT_MS of their start."""
    sagas = result.verdicts["saga"].sagas
    if not len(sagas):
        return Check(False, "no saga started")
    latency = sagas["latency"].fillna(float("inf"))
    fast = float((latency <= PROMPT_MS).mean())
    if fast >= PROMPT_FRACTION:
        return Check(True, f"{fast:.0%} of {len(sagas)} sagas ended within {PROMPT_MS:g} ms")
    slow = sagas.assign(latency=latency).sort_values("latency", ascending=False, kind="stable")
    cols = ["saga_id", "status", "started", "finished", "latency"]
    sid = str(slow.iloc[0]["saga_id"])
    timeline = saga_timeline(result, sid)
    return Check(False, f"only {fast:.0%} of the {len(sagas)} sagas ended within {PROMPT_MS:g} ms of their start "
                        f"(needs at least {PROMPT_FRACTION:.0%}); the slowest: {sid}",
                 evidence=slow[cols].head(10).reset_index(drop=True), window=_window(timeline),
                 highlight=(f"'{sid}'",))


# -- the nemeses ------------------------------------------------------------------------------------
def _scenario(seed: int, solution: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": {"dist": "exponential", "mean": LATENCY_MS}},
        "workload": {"clients": 0},
        "faults": {"schedule": faults},
        "protocol": {"name": "lab_saga", "solution": solution},
        "run": {"duration": DURATION, "seed": seed},
    }


def _crashes_scenario(seed: int, solution: str) -> dict[str, Any]:
    """Up to four orchestrator crashes (one at a time), two service crashes, a partition, 10% loss and
    10% duplication windows."""
    rng = lab_rng("saga", "all-or-nothing", seed)
    faults = random_faults(rng, (ORCH,), start=200.0, end=FAULTS_END, crashes=4, max_down=1, length=(100.0, 600.0))
    faults += random_faults(rng, SERVICES, start=200.0, end=FAULTS_END, crashes=2, max_down=1)
    faults += random_faults(rng, NODES, start=200.0, end=FAULTS_END, partitions=1, loss=0.1, duplicate=0.1,
                            length=(200.0, 1500.0))
    return _scenario(seed, solution, sorted(faults, key=lambda f: (f["start"], f["kind"])))


def _reorder_scenario(seed: int, solution: str) -> dict[str, Any]:
    """Two slow nodes (messages ~60 ms later: commands overtake each other), 20% duplication, 10% loss,
    a service crash and two orchestrator crashes."""
    rng = lab_rng("saga", "compensation-order", seed)
    faults = random_faults(rng, NODES, start=200.0, end=FAULTS_END, slow_nodes=2, loss=0.1, duplicate=0.2,
                           length=(500.0, 2000.0))
    faults += random_faults(rng, (ORCH,), start=200.0, end=FAULTS_END, crashes=2, max_down=1, length=(100.0, 600.0))
    faults += random_faults(rng, SERVICES, start=200.0, end=FAULTS_END, crashes=1)
    return _scenario(seed, solution, sorted(faults, key=lambda f: (f["start"], f["kind"])))


def _lossy_scenario(seed: int, solution: str) -> dict[str, Any]:
    """Loss and duplication all run long, no crash."""
    faults = [{"kind": "loss", "start": 0.0, "end": DURATION, "probability": PROMPT_LOSS},
              {"kind": "duplicate", "start": 0.0, "end": DURATION, "probability": PROMPT_LOSS}]
    return _scenario(seed, solution, faults)


LAB = Lab(
    id="saga",
    number=4,
    title="A saga orchestrator with compensation",
    protocol="lab_saga",
    classes={"SagaOrchestrator": OrchestratorBase},
    skeleton="lab4_saga.py",
    tests=(
        LabTest("all-or-nothing",
                "every saga ends completed or fully compensated, as reported, despite orchestrator and "
                "service crashes, partitions, loss and duplication",
                _crashes_scenario, check_all_or_nothing),
        LabTest("compensation-order",
                "steps take effect in order, none after compensation began; compensations in reverse order, "
                "only of steps that took effect",
                _reorder_scenario, check_compensation_order),
        LabTest("finishes-promptly",
                f"with {PROMPT_LOSS:.0%} loss and duplication and no crash, at least {PROMPT_FRACTION:.0%} of the "
                f"sagas end within {PROMPT_MS:g} ms of their start",
                _lossy_scenario, check_prompt),
    ),
)
