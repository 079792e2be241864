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

:func:`timed` judges timing too: it runs the scenario through
:func:`~sim.rabbitmq.validate.validate` (calibration ping runs, the broker's
costs measured, ``repeats`` broker runs, the timing verdict of
:mod:`sim.rabbitmq.timing`). :attr:`Timed.timing_kind` names the class of its
timing outcome: ``agree``, ``not judged`` (the spans differ), or ``differ:``
and the judged rows outside their allowance, each with the side that is faster
(``latency p50: simulation slower``). :meth:`Timed.rows` gives every judged row
with its difference relative to the allowance and whether the measured noise
was as large as the broker's value itself (``loose``: a verdict that could not
have told a quantity from twice it).
"""

from __future__ import annotations

import math
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
from .timing import TIMING_COLUMNS

__all__ = ["Outcome", "differential", "kind_of", "shrink", "Runner", "Timed", "timed", "timing_kind"]

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


_JUDGED_TABLES = ("latency", "retry_delays")


def judged_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """Every judged timing row: table, quantity, the values, ``ratio`` = |difference| / allowance and ``loose``
    (the measured noise is at least the broker's value)."""
    out = []
    for table in _JUDGED_TABLES:
        df = getattr(comparison, table)
        for _, r in df[df["agree"].isin((True, False))].iterrows():
            row = {"table": table, **{c: r[c] for c in TIMING_COLUMNS}}
            row["quantity"] = str(r["quantity"]).removesuffix(" (ms)")
            allowance, difference = float(r["allowance"]), float(r["difference"])
            # nan when there is nothing to measure (no message was processed on either side)
            row["ratio"] = abs(difference) / allowance if allowance > 0 and math.isfinite(difference) else math.nan
            row["loose"] = bool(float(r["noise"]) >= abs(float(r["broker"])))
            row["agree"] = bool(r["agree"])
            out.append(row)
    return out


def timing_kind(comparison: Comparison) -> str:
    """The class of a comparison's timing outcome (module docstring)."""
    if comparison.spans_differ:
        return "not judged"
    wrong = [r for r in judged_rows(comparison) if not r["agree"]]
    if not wrong:
        return "agree"
    return "differ: " + ", ".join(sorted(
        f"{r['table']} {r['quantity']}: simulation {'slower' if r['simulation'] > r['broker'] else 'faster'}"
        for r in wrong))


@dataclass
class Timed:
    """A scenario judged by :func:`~sim.rabbitmq.validate.validate`: semantics over every broker run, and timing."""

    scenario: Scenario
    comparison: Comparison
    broker_differences: list[str] = field(default_factory=list)  # later broker runs against the first

    @property
    def kind(self) -> str:
        """The semantic class, as :func:`kind_of` names it (``broker not reproducible`` when the broker's own runs
        differ from each other)."""
        return kind_of(self.comparison, self.broker_differences or None)

    @property
    def timing_kind(self) -> str:
        return timing_kind(self.comparison)

    def rows(self) -> list[dict[str, Any]]:
        return judged_rows(self.comparison)

    def report(self) -> str:
        """The semantic and timing classes, the timing rows that differ, the scenario as compact TOML."""
        lines = [f"# semantics: {self.kind}", f"# timing: {self.timing_kind}"]
        lines += [f"#   {d}" for d in self.comparison.semantic_differences]
        lines += [f"#   {r['table']} {r['quantity']}: simulation {r['simulation']:.2f} ms, broker {r['broker']:.2f} ms "
                  f"(runs {r['broker runs']}), allowance {r['allowance']:.2f} ms = noise {r['noise']:.2f} + "
                  f"accuracy; |difference| = {r['ratio']:.2f} x allowance"
                  for r in self.rows() if not r["agree"]]
        lines += [f"#   {line}" for line in self.comparison.span_lines()]
        return "\n".join(lines) + "\n" + compact_toml(self.scenario)


def timed(scenario: Scenario, settings: AmqpSettings, *, repeats: int = 3) -> Timed:
    """Validate ``scenario`` against the broker of ``settings`` with ``repeats`` broker runs (no requeue-order
    probes) and compare the broker's runs with each other, so that a semantic disagreement that the broker does not
    reproduce is classed as such."""
    from .validate import validate

    v = validate(scenario, settings=settings, repeats=repeats, probes=False)
    own: list[str] = []
    if v.comparison.semantics == "differ":
        for i, r in enumerate(v.brokers[1:], start=2):
            own += [f"broker run {i}: {d}" for d in compare(v.brokers[0], r).semantic_differences]
    return Timed(v.scenario, v.comparison, own)
