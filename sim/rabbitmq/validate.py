"""The whole check: calibrate, simulate, run on the broker, compare (what ``capsim validate rabbitmq`` does).

:func:`validate` runs, in order: a ping run that calibrates the simulated
network latency (:mod:`sim.rabbitmq.calibrate`; through a queue of the type
the scenario's first consumer consumes, since quorum queues are slower); the simulation of the
calibrated scenario; the same scenario and seed on the real broker
(:func:`~sim.rabbitmq.runner.run_rabbitmq`); the requeue-order probes for the
kinds of queue the scenario consumes (:mod:`sim.rabbitmq.probes`); and
:func:`~sim.rabbitmq.compare.compare`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ScenarioError
from ..messaging.protocol import messaging_config
from ..result import Result
from ..runner import run, with_seed
from ..scenario import Scenario
from .calibrate import Calibration, calibrate
from .compare import Comparison, Tolerances, compare
from .faults import BrokerControl, FaultPlan
from .probes import kinds_in, requeue_orders
from .runner import check_supported, run_rabbitmq
from .settings import AmqpSettings

__all__ = ["Validation", "validate"]


@dataclass
class Validation:
    """Both runs, the calibration and their comparison."""

    scenario: Scenario
    seed: int
    calibration: Calibration | None
    simulation: Result
    broker: Result
    comparison: Comparison

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def report(self) -> str:
        """A header naming the scenario and the broker, the side-by-side tables, the verdict."""
        b = self.broker.meta["broker"]
        head = [f"scenario {self.scenario.name!r}, seed {self.seed}: simulation vs {b.get('product', 'broker')} "
                f"{b.get('version', '?')} at {b.get('url', '?')}",
                f"broker run: {self.broker.runtime:.2f} s wall clock, ended by {b.get('ended', '?')}; "
                f"simulation: {self.simulation.runtime:.2f} s"]
        overrun = float(b.get("broker_overrun_ms", 0.0) or 0.0)
        if overrun > 0:
            head.append(f"note: the real broker was down {overrun:.0f} ms longer than the scenario's crash window "
                        "(a restart takes that long); latencies of messages waiting through it include the difference")
        head += [f"note: {n}" for n in self.broker.meta["notes"]]
        return "\n".join(head) + "\n\n" + self.comparison.report()

    def save(self, out: str | Path) -> Path:
        """Comparison tables and figure, both event tables, the broker's connection events, the calibration."""
        folder = self.comparison.save(out)
        self.simulation.tables["message_events"].to_csv(folder / "simulation_events.csv", index=False)
        self.broker.tables["message_events"].to_csv(folder / "broker_events.csv", index=False)
        self.broker.node_events.to_csv(folder / "broker_connections.csv", index=False)
        self.simulation.tables["messages"].to_csv(folder / "simulation_messages.csv", index=False)
        self.broker.tables["messages"].to_csv(folder / "broker_messages.csv", index=False)
        real = self.broker.meta
        meta: dict[str, Any] = {"scenario": self.scenario.name, "seed": self.seed, "broker": real["broker"],
                                "names": real["names"], "notes": real["notes"], "verdict": self.verdict}
        if self.calibration is not None:
            meta["calibration"] = self.calibration.to_dict()
        (folder / "validation.json").write_text(json.dumps(meta, indent=2, default=str))
        (folder / "report.txt").write_text(self.report() + "\n")
        return folder


def validate(scenario: Scenario, seed: int | None = None, *, url: str | None = None,
             settings: AmqpSettings | None = None, broker: BrokerControl | None = None, calibrated: bool = True,
             ping_messages: int = 100, probes: bool = True, tolerances: Tolerances | None = None) -> Validation:
    """Run ``scenario`` simulated and on the broker with the same seed, and compare (see the module docstring)."""
    cfg = messaging_config(scenario)
    try:
        scenario = with_seed(scenario, seed)
    except ScenarioError as exc:
        raise ScenarioError("--seed", exc.reason) from None
    check_supported(scenario)  # fail on an unsupported scenario before any broker work
    FaultPlan.from_scenario(scenario, broker_control=broker is not None)
    if settings is None:
        settings = getattr(broker, "settings", None) or AmqpSettings.resolve(url)
    queue_type = cfg.topology.queue(cfg.consumers[0].queue).type if cfg.consumers else "classic"
    cal = calibrate(settings, messages=ping_messages, queue_type=queue_type) if calibrated else None
    sim_scenario = cal.apply(scenario) if cal is not None else scenario
    sim = run(sim_scenario)
    real = run_rabbitmq(scenario, settings=settings, broker=broker)
    order = requeue_orders(settings, kinds_in(cfg)) if probes else None
    text = cal.describe() if cal is not None else "Not calibrated: the scenario's own network latency was simulated."
    comparison = compare(sim, real, requeue_order=order, calibration=text, tolerances=tolerances)
    return Validation(scenario, scenario.run.seed, cal, sim, real, comparison)
