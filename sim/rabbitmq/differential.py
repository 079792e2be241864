"""Differential testing: the broker model and a real RabbitMQ run the same generated scenario.

:func:`differential` runs one scenario (from :mod:`sim.rabbitmq.generate`, or any
messaging scenario) in the simulation and on the broker and compares the
**semantic** verdict of :func:`~sim.rabbitmq.compare.compare`: the delivery
counts, the attempts, every message's status, attempts, deliveries (delivery
count and redelivered flag of each) and dead-letter reason. Timing is not judged.

The simulation runs with the scenario's own network latency (generated scenarios
use a constant one: a TCP connection never reorders). When the two differ, the
broker runs the scenario a second time: if its two runs differ from each other
too, the outcome depends on timing on the real broker, and the disagreement is
classed ``broker not reproducible`` rather than blamed on the model.

:attr:`Outcome.kind` names the class of an outcome: ``agree``; ``spans differ``
(one side drained and the other did not); ``undrained`` (neither did: counts
depend on where each stopped); ``differ: <rows>`` (the semantic rows that
differ, values left out and the attempts table's rows as one, so that
disagreements with the same cause fall in one class); ``broker not
reproducible: <rows>``.

:func:`shrink` asks hypothesis for the smallest generated scenario of a given
class (:func:`hypothesis.find`, whose shrinking removes parts and lowers
numbers), and :func:`~sim.rabbitmq.generate.compact_toml` prints it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..result import Result
from ..runner import run
from ..scenario import Scenario
from .compare import Comparison, compare
from .generate import compact_toml, scenarios
from .settings import AmqpSettings

__all__ = ["Outcome", "differential", "kind_of", "shrink", "Runner"]

#: runs one scenario on the broker (``run_rabbitmq`` with the test broker's settings, or a stand-in in tests)
Runner = Callable[[Scenario], Result]

_VALUE = re.compile(r": simulation .*$")
_ATTEMPTS = re.compile(r"^attempts: \d+ attempts?$")


@dataclass
class Outcome:
    """The simulation, the broker run(s) and their semantic comparison."""

    scenario: Scenario
    simulation: Result
    broker: Result
    comparison: Comparison
    broker_again: Result | None = None
    broker_differences: list[str] = field(default_factory=list)  # the broker's second run against its first

    @property
    def kind(self) -> str:
        return kind_of(self.comparison, self.broker_differences if self.broker_again is not None else None)

    @property
    def agrees(self) -> bool:
        return self.kind == "agree"

    def report(self) -> str:
        """The class, the differing rows and the scenario as compact TOML."""
        lines = [f"# {self.kind}"]
        lines += [f"#   {d}" for d in self.comparison.semantic_differences]
        if self.broker_again is not None:
            lines += [f"#   broker run 2 against broker run 1: {d}" for d in self.broker_differences] or [
                "#   the broker's second run agreed with its first"]
        lines += [f"#   {line}" for line in self.comparison.span_lines()]
        return "\n".join(lines) + "\n" + compact_toml(self.scenario)


def _rows(differences: list[str]) -> list[str]:
    """The rows that differ, without their values; the rows of the attempts table as one, ``attempts``."""
    return sorted({_ATTEMPTS.sub("attempts", _VALUE.sub("", d)) for d in differences})


def kind_of(comparison: Comparison, broker_differences: list[str] | None = None) -> str:
    """The class of a comparison (module docstring); ``broker_differences``: the broker's rerun against its first run,
    ``None`` when it was not rerun."""
    if comparison.spans_differ:
        return "spans differ"
    span = comparison.sim_span
    if span is not None and not span.drained:
        return "undrained"
    if comparison.semantics == "agree":
        return "agree"
    rows = ", ".join(_rows(comparison.semantic_differences))
    if broker_differences:
        return f"broker not reproducible: {rows}"
    return f"differ: {rows}"


def differential(scenario: Scenario, broker: Runner | AmqpSettings, *, recheck: bool = True) -> Outcome:
    """Run ``scenario`` simulated and on ``broker`` (settings of a live broker, or a runner) and compare semantics.

    ``recheck``: on a disagreement, run the broker once more to tell a timing-dependent outcome from a model error.
    """
    real_run = _runner(broker)
    simulated = run(scenario)
    real = real_run(scenario)
    comparison = compare(simulated, real)
    outcome = Outcome(scenario, simulated, real, comparison)
    if recheck and outcome.kind.startswith("differ"):
        again = real_run(scenario)
        outcome.broker_again = again
        outcome.broker_differences = compare(real, again).semantic_differences
    return outcome


def _runner(broker: Runner | AmqpSettings) -> Runner:
    if isinstance(broker, AmqpSettings):
        from .runner import run_rabbitmq

        settings = broker
        return lambda s: run_rabbitmq(s, settings=settings, label="diff")
    return broker


def shrink(broker: Runner | AmqpSettings, wanted: Callable[[str], bool], *, racy: bool = False, budget: int = 60,
           max_examples: int = 40, seed: int = 0, log: Callable[[str], None] | None = None) -> Outcome | None:
    """The smallest generated scenario whose outcome's class satisfies ``wanted``, by hypothesis's search and shrinking.

    At most ``max_examples`` generated scenarios are tried to find one, and ``budget`` scenarios are run in all
    (searching and shrinking): past it hypothesis keeps the smallest found so far. ``None`` when none was found.
    """
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    real_run = _runner(broker)
    seen: dict[str, Outcome] = {}
    started = time.monotonic()

    def condition(s: Scenario) -> bool:
        key = compact_toml(s)
        if key not in seen:
            if len(seen) >= budget:
                return False  # out of budget: nothing new counts as smaller
            seen[key] = differential(s, real_run)
            if log is not None:
                log(f"  shrink: run {len(seen)} ({time.monotonic() - started:.0f} s): {seen[key].kind}")
        return wanted(seen[key].kind)

    config = settings(max_examples=max_examples, database=None, deadline=None, derandomize=False,
                      phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    try:
        found = find(scenarios(racy=racy), condition, settings=config, random=random.Random(seed))
    except NoSuchExample:
        return None
    return seen[compact_toml(found)]


def describe(outcomes: list[Outcome]) -> dict[str, Any]:
    """The agreement rate and the outcomes by class (each with its first example)."""
    classes: dict[str, list[Outcome]] = {}
    for o in outcomes:
        classes.setdefault(o.kind, []).append(o)
    n = len(outcomes)
    agree = len(classes.get("agree", []))
    return {"scenarios": n, "agree": agree, "rate": agree / n if n else float("nan"), "classes": classes}
