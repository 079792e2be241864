"""Running a transaction scenario and keeping the world, for tables and notebooks.

``sim.run`` returns a :class:`~sim.result.Result` whose summary already holds the
``txn.*`` numbers (and, where the kernel collects protocol tables, the per-transaction
tables), but not the world they came from. :func:`run_transactions` runs the same
:class:`~sim.kernel.world.World`, keeps it, then lets it **settle**: clients stop at
``run.duration`` and the world stops when their operations are answered, possibly
while commits are still travelling or participants are still in doubt; settling keeps
simulating (faults scheduled later still start and end, nodes still recover) until no
transaction is in progress at any node and every node is up, or ``settle_for`` ms have
passed. The atomicity checker's "applied everywhere after recovery" needs that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .. import metrics
from ..checkers.atomicity import AtomicityResult
from ..errors import ScenarioError
from ..faultspec import describe
from ..kernel.world import World
from ..scenario import Scenario
from .tables import atomicity, transaction_tables

__all__ = ["run_transactions", "TransactionRun", "settle"]


@dataclass
class TransactionRun:
    """A finished transaction run: the world, its history, its tables and verdict."""

    scenario: Scenario
    seed: int
    world: World
    history: pd.DataFrame
    faults: pd.DataFrame
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    atomicity: AtomicityResult

    @property
    def transactions(self) -> pd.DataFrame:
        return self.tables["transactions"]

    @property
    def participants(self) -> pd.DataFrame:
        return self.tables["participants"]

    @property
    def events(self) -> pd.DataFrame:
        return self.tables["events"]

    def __repr__(self) -> str:
        s = self.summary
        return (f"<TransactionRun {self.scenario.protocol.tag} seed={self.seed} txns={s['txn.count']} "
                f"committed={s['txn.committed']} blocked={s['txn.blocked']} "
                f"violations={s['txn.atomicity_violations']}>")


def _quiet(world: World) -> bool:
    for node in world.nodes.values():
        if not node.alive or getattr(node, "txns", None):
            return False
    return True


def settle(world: World, limit: float) -> None:
    """Keep simulating until no transaction is in progress and every node is up (at most ``limit`` ms)."""
    cfg = world.scenario.protocol
    step = min(cfg.retry_interval, cfg.decision_timeout)
    stop = world.now + limit
    while world.now < stop and not _quiet(world):
        world.env.run(until=min(world.now + step, stop))


def run_transactions(scenario: Scenario, seed: int | None = None, *, settle_for: float = 10_000.0) -> TransactionRun:
    """Run a ``two_phase_commit`` / ``three_phase_commit`` scenario, settle it, tabulate it."""
    if not hasattr(scenario.protocol, "coordinator_class"):
        raise ScenarioError("protocol.name",
                            f"must be two_phase_commit or three_phase_commit, got {scenario.protocol.tag!r}")
    if seed is not None:
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    world = World(scenario)
    world.run()
    settle(world, settle_for)
    cfg = scenario.run
    history = world.history.to_frame()
    faults = pd.DataFrame([describe(f) for f in world.faults], columns=["kind", "start", "end", "detail"])
    summary = metrics.summarize(history, warmup=cfg.warmup, duration=cfg.duration, network=world.network,
                                faults=faults, extra=world.protocol_summary())
    return TransactionRun(scenario=scenario, seed=cfg.seed, world=world, history=history, faults=faults,
                          summary=summary, tables=transaction_tables(world), atomicity=atomicity(world))
