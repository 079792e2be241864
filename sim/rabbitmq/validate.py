"""The whole check: calibrate, run on the broker, simulate, compare (what ``capsim validate rabbitmq`` does).

:func:`validate` runs, in order: ``repeats`` rounds (3 by default) of a ping
run that calibrates the simulated network latency (:mod:`sim.rabbitmq.calibrate`;
through a queue of the type the scenario's first consumer consumes, since
quorum queues are slower) followed by the scenario with its seed on the real
broker (:func:`~sim.rabbitmq.runner.run_rabbitmq`); two simulations of the
scenario calibrated with every ping run's samples together (one with the
measured spread of latencies and the broker down as long as the real restarts
took, whose timing is compared; one with their median as a constant, whose
semantics are compared, because a real connection never reorders messages:
:meth:`~sim.rabbitmq.calibrate.Calibration.apply`); one more simulation per
ping run, calibrated with that run alone, whose spread tells how much the
prediction depends on when the network was measured; the
requeue-order probes for the kinds of queue the scenario consumes
(:mod:`sim.rabbitmq.probes`); and :func:`~sim.rabbitmq.compare.compare`.

Unless the scenario sets ``[protocol.broker_costs]`` itself (or ``costs=False``),
the broker's costs for the scenario's queue types are measured once too
(:func:`~sim.rabbitmq.costs.model_costs`: requeue, settlement, confirm and
dead-lettering beyond a delivery) and every simulation runs with them: a quorum
queue's returns take milliseconds on the broker, and a model that makes them free
redelivers sooner and more often than the broker does.

The broker runs are repeated because timing on a real broker is not
reproducible: the spread of the runs is the noise the timing verdict allows
for (:mod:`sim.rabbitmq.timing`), and every run must match the simulation's
semantics exactly. Interleaving the ping runs with them makes the calibration
stand for the same stretch of time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..cost import check_cost
from ..errors import ScenarioError
from ..faultspec import Crash
from ..messaging.protocol import messaging_config
from ..outdir import check_out, staged
from ..result import Result
from ..runner import run, with_seed
from ..scenario import Scenario
from .calibrate import Calibration, calibrate
from .compare import Comparison, compare
from .costs import model_costs
from .faults import BrokerControl, FaultPlan
from .probes import kinds_in, requeue_orders
from .runner import check_supported, run_rabbitmq
from .settings import AmqpSettings
from .timing import TimingRule

__all__ = ["Validation", "validate", "MAX_REPEATS"]

#: broker runs a validation may repeat (each takes seconds)
MAX_REPEATS = 20


@dataclass
class Validation:
    """The broker runs, the simulation, the calibration and their comparison."""

    scenario: Scenario
    seed: int
    calibration: Calibration | None
    simulation: Result
    brokers: list[Result]
    comparison: Comparison
    timing_simulation: Result | None = None  # the simulation whose timing was compared (None: ``simulation``)
    costs: pd.DataFrame | None = None  # the measured broker costs the simulations ran with (None: not measured)

    @property
    def broker(self) -> Result:
        """The first broker run (the one whose semantic tables the comparison shows)."""
        return self.brokers[0]

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def report(self) -> str:
        """A header naming the scenario and the broker, the side-by-side tables, the verdicts."""
        b = self.broker.meta["broker"]
        walls = ", ".join(f"{r.runtime:.2f}" for r in self.brokers)
        ended = ", ".join(sorted({str(r.meta["broker"].get("ended", "?")) for r in self.brokers}))
        head = [f"scenario {self.scenario.name!r}, seed {self.seed}: simulation vs {b.get('product', 'broker')} "
                f"{b.get('version', '?')} at {b.get('url', '?')}",
                f"broker runs: {len(self.brokers)} ({walls} s wall clock, ended by {ended}); "
                f"simulation: {self.simulation.runtime:.2f} s"]
        head.append(f"drain: {self.scenario.drain_policy} after run.duration {self.scenario.run.duration:g} ms "
                    "(sim.drain), on both sides")
        overrun = mean_overrun(self.brokers)
        if overrun > 0:
            head.append(f"note: the real broker was down {overrun:.0f} ms longer than the scenario's crash window "
                        "(a restart takes that long; the mean over the broker runs); the simulation whose timing is "
                        "compared keeps its broker down that much longer too")
        head += [f"note: {n}" for n in self.broker.meta["notes"]]
        return "\n".join(head) + "\n\n" + self.comparison.report()

    def save(self, out: str | Path) -> Path:
        """Comparison tables and figure, both event tables, the broker's connection events, the calibration, as the
        folder ``out``, whole (with its manifest.json; see :mod:`sim.outdir`)."""
        target = check_out(out, kind="validation", field="out")
        with staged(target, "validation") as stage:
            self._write_into(stage.path)
        return target

    def _write_into(self, folder: Path) -> None:
        self.comparison.write_into(folder)
        self.simulation.tables["message_events"].to_csv(folder / "simulation_events.csv", index=False)
        self.simulation.tables["messages"].to_csv(folder / "simulation_messages.csv", index=False)

        def runs(table: str) -> pd.DataFrame:  # every broker run's rows, with the run's number first
            return pd.concat([(r.node_events if table == "node_events" else r.tables[table]).assign(run=i)
                              for i, r in enumerate(self.brokers, start=1)], ignore_index=True)

        runs("message_events").to_csv(folder / "broker_events.csv", index=False)
        runs("node_events").to_csv(folder / "broker_connections.csv", index=False)
        runs("messages").to_csv(folder / "broker_messages.csv", index=False)
        real = self.broker.meta
        meta: dict[str, Any] = {"scenario": self.scenario.name, "seed": self.seed, "broker": real["broker"],
                                "names": [r.meta["names"] for r in self.brokers], "notes": real["notes"],
                                "verdict": self.verdict, "semantics": self.comparison.semantics,
                                "timing": self.comparison.timing}
        if self.calibration is not None:
            meta["calibration"] = self.calibration.to_dict()
        if self.costs is not None:
            self.costs.to_csv(folder / "broker_costs.csv", index=False)
            meta["broker_costs"] = dataclasses.asdict(messaging_config(self.simulation.scenario).broker_costs)
        (folder / "validation.json").write_text(json.dumps(meta, indent=2, default=str))
        (folder / "report.txt").write_text(self.report() + "\n")


def validate(scenario: Scenario, seed: int | None = None, *, url: str | None = None,
             settings: AmqpSettings | None = None, broker: BrokerControl | None = None, calibrated: bool = True,
             ping_messages: int = 100, probes: bool = True, repeats: int = 3,
             timing: TimingRule | None = None, allow_large: bool = False, costs: bool = True) -> Validation:
    """Run ``scenario`` on the broker ``repeats`` times and simulated, same seed, and compare (module docstring).

    A scenario beyond :mod:`sim.cost`'s limits is refused before any broker work, unless ``allow_large``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise ScenarioError("--repeats", f"must be an integer in [1, {MAX_REPEATS}], got {repeats!r}")
    cfg = messaging_config(scenario)
    try:
        scenario = with_seed(scenario, seed)
    except ScenarioError as exc:
        raise ScenarioError("--seed", exc.reason) from None
    check_cost(scenario, allow_large=allow_large)
    check_supported(scenario)  # fail on an unsupported scenario before any broker work
    FaultPlan.from_scenario(scenario, broker_control=broker is not None)
    if settings is None:
        settings = getattr(broker, "settings", None) or AmqpSettings.resolve(url)
    queue_type = cfg.topology.queue(cfg.consumers[0].queue).type if cfg.consumers else "classic"
    pings: list[Calibration] = []
    reals: list[Result] = []
    for _ in range(repeats):
        if calibrated:
            pings.append(calibrate(settings, messages=ping_messages, queue_type=queue_type))
        reals.append(run_rabbitmq(scenario, settings=settings, broker=broker))
    cal = Calibration.pooled(pings) if pings else None
    cost_table = None
    if costs and cfg.broker_costs.zero:
        types = sorted({q.type for q in cfg.topology.queues})
        measured, cost_table = model_costs(settings, types)
        scenario = scenario.variant({"protocol.broker_costs": measured})
    sim = run(cal.apply(scenario, spread=False) if cal is not None else scenario, allow_large=allow_large)
    as_run = restarts_as_run(scenario, mean_overrun(reals))
    timed = run(cal.apply(as_run) if cal is not None else as_run, allow_large=allow_large)
    each = [run(c.apply(as_run), allow_large=allow_large) for c in pings] if len(pings) > 1 else []
    order = requeue_orders(settings, kinds_in(cfg)) if probes else None
    text = cal.describe() if cal is not None else "Not calibrated: the scenario's own network latency was simulated."
    if cost_table is not None:
        text += "\nBroker costs measured and simulated (sim.messaging.costs): " + describe_costs(scenario)
    comparison = compare(sim, reals, requeue_order=order, calibration=text, timing=timing, timing_sim=timed,
                         calibrated=each)
    return Validation(scenario, scenario.run.seed, cal, sim, reals, comparison, timed, cost_table)


def describe_costs(scenario: Scenario) -> str:
    """The scenario's non-zero broker costs in one line, e.g. ``quorum requeue 1.10 ms, quorum settle 3.00 ms``."""
    bc = messaging_config(scenario).broker_costs
    parts = [f"{qtype} {name} {getattr(bc.of(qtype), name):.2f} ms" for qtype in ("classic", "quorum")
             for name in ("confirm", "requeue", "settle", "dead_letter") if getattr(bc.of(qtype), name)]
    return ", ".join(parts) or "all 0"


def mean_overrun(brokers: list[Result]) -> float:
    """How much longer than the scenario's crash windows the real broker was down, on average over the runs (ms)."""
    return sum(float(r.meta["broker"].get("broker_overrun_ms", 0.0) or 0.0) for r in brokers) / max(len(brokers), 1)


def restarts_as_run(scenario: Scenario, overrun_ms: float) -> Scenario:
    """``scenario`` with its broker crashes ``overrun_ms`` longer in all (shared out evenly), as the real restarts
    were: RabbitMQ needs about a second to start again, more than a scenario's crash window may allow, and a
    message waiting through the restart waits that much longer. The simulation whose timing is compared uses it."""
    broker = messaging_config(scenario).broker
    crashes = [i for i, f in enumerate(scenario.faults.schedule) if isinstance(f, Crash) and f.node == broker]
    if overrun_ms <= 0 or not crashes:
        return scenario
    longer = {f"faults.schedule[{i}].end": scenario.faults.schedule[i].end + overrun_ms / len(crashes) for i in crashes}
    return scenario.variant(longer)
