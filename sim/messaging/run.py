"""Running a messaging scenario: the message-event table, queue depths and the delivery report.

:func:`run_messaging` runs one scenario and returns a :class:`MessagingResult`
with the tables that :func:`sim.run` has no place for (its ``Result`` holds
client-operation tables). ``sim.run`` on the same scenario and seed gives the
same ``messaging.*`` numbers in ``result.summary``: both come from
:func:`delivery_report`, computed once per world.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..checkers.delivery import DeliveryReport, check_delivery
from ..errors import ScenarioError
from ..faultspec import describe
from ..kernel.world import World
from ..scenario import Scenario
from .protocol import MessagingConfig

__all__ = ["run_messaging", "MessagingResult", "delivery_report"]


@dataclass
class MessagingResult:
    """One messaging run: the resolved scenario, the seed and its tables.

    ``events``: one row per message event (:mod:`sim.messaging.history`);
    ``depth``: queue depth samples; ``report``: the delivery checker's verdict,
    counts and per-message table (``report.messages``); ``summary``: flat numbers.
    """

    scenario: Scenario
    seed: int
    runtime: float
    events: pd.DataFrame
    depth: pd.DataFrame
    report: DeliveryReport
    summary: dict[str, Any]
    node_events: pd.DataFrame
    faults: pd.DataFrame
    world: Any = dataclasses.field(default=None, repr=False)

    @property
    def messages(self) -> pd.DataFrame:
        """One row per published message id: status, attempts, deliveries, latency."""
        return self.report.messages

    @property
    def dead_letter_queues(self) -> list[str]:
        return self.scenario.protocol.dlq_names()


def delivery_report(world: World) -> DeliveryReport:
    """Finish the broker's records (``remain`` events) and check delivery; cached per world."""
    runtime = world.messaging
    cached = getattr(runtime, "report", None)
    if cached is not None:
        return cached
    cfg: MessagingConfig = world.scenario.protocol
    world.nodes[cfg.broker].finish()
    runtime.events = runtime.log.to_frame()
    report = check_delivery(runtime.events, cfg.dlq_names())
    runtime.report = report
    return report


def run_messaging(scenario: Scenario, seed: int | None = None, *, keep_world: bool = False) -> MessagingResult:
    """Run a ``messaging`` scenario once; ``seed`` overrides ``scenario.run.seed``.

    ``keep_world`` keeps the finished :class:`~sim.kernel.world.World` on the
    result (for inspecting node state in tests).
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"run_messaging() needs a Scenario, got {type(scenario).__name__}")
    if not isinstance(scenario.protocol, MessagingConfig):
        raise ScenarioError("protocol.name", f"run_messaging needs protocol 'messaging', got {scenario.protocol.tag!r}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ScenarioError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    t0 = time.perf_counter()
    world = World(scenario)
    world.run()
    report = delivery_report(world)
    runtime = time.perf_counter() - t0
    log = world.messaging.log
    summary = {f"messaging.{k}": v for k, v in report.summary().items()}
    return MessagingResult(
        scenario=scenario,
        seed=scenario.run.seed,
        runtime=runtime,
        events=world.messaging.events,
        depth=log.depth_frame(),
        report=report,
        summary=summary,
        node_events=pd.DataFrame(world.node_events, columns=["time", "node", "event"]),
        faults=pd.DataFrame([describe(f) for f in world.faults], columns=["kind", "start", "end", "detail"]),
        world=world if keep_world else None,
    )
