"""The one run path: :func:`build_world` and :func:`run`, for every protocol.

``run(scenario, seed)`` builds the world (kernel, the protocol's per-run state and
nodes, the workload's clients, the divergence sampler), runs it, lets the protocol
finish (:meth:`~sim.protocol.ProtocolConfig.finish`), and gathers one
:class:`~sim.result.Result`: the client history and its metrics, the fault and
message records, and the protocol's own summary numbers, tables and verdicts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from . import metrics
from .checkers.convergence import DivergenceSampler, convergence_summary
from .checkers.counter import check_counter, final_counter_values
from .checkers.staleness import staleness_summary
from .cost import check_cost
from .errors import ScenarioError
from .faultspec import describe
from .kernel.world import World
from .result import Result
from .scenario import Scenario
from .version import capsim_version
from .workload.clients import make_clients

__all__ = ["run", "build_world", "capsim_version", "with_seed"]


def with_seed(scenario: Scenario, seed: int | None) -> Scenario:
    """``scenario`` with ``run.seed = seed`` (unchanged when ``seed`` is None)."""
    if not isinstance(scenario, Scenario):
        raise TypeError(f"needs a Scenario, got {type(scenario).__name__}; use Scenario.from_dict/from_toml")
    if seed is None:
        return scenario
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ScenarioError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
    return dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))


def build_world(scenario: Scenario, seed: int | None = None) -> World:
    """A world ready to run: the protocol's state and nodes, the clients and the divergence sampler.

    Step it by hand with ``world.start()`` and ``world.env.run(until=t)``; or let
    :func:`run` run it to the end.
    """
    scenario = with_seed(scenario, seed)
    world = World(scenario)
    protocol = scenario.protocol
    world.state = protocol.new_state(world)
    world.add_nodes(protocol.build_nodes(world, world.state))
    world.add_clients(make_clients(world))
    world.add_probe(DivergenceSampler())
    return world


def _sampler(world: World) -> DivergenceSampler:
    return next(p for p in world.probes if isinstance(p, DivergenceSampler))


def run(scenario: Scenario, seed: int | None = None, *, keep_world: bool = False, allow_large: bool = False,
        progress: Callable[[float], None] | None = None) -> Result:
    """Run ``scenario`` once; ``seed`` overrides ``scenario.run.seed``.

    The same scenario and seed always give the same history, tables, verdicts and
    summary. ``keep_world`` keeps the finished world on ``result.world`` (to look at
    the nodes' state afterwards). A run estimated to be beyond :mod:`sim.cost`'s
    limits (days of events, more memory than a laptop has) is refused with a
    :class:`~sim.errors.ScenarioError` naming the field, unless ``allow_large``.
    ``progress(now)`` is called about a hundred times with the simulated time (ms)
    reached.
    """
    scenario = with_seed(scenario, seed)
    check_cost(scenario, allow_large=allow_large)
    t0 = time.perf_counter()
    world = build_world(scenario)
    world.run(progress)
    protocol = scenario.protocol
    protocol.finish(world, world.state)
    runtime = time.perf_counter() - t0
    return _collect(world, runtime, keep_world)


def _collect(world: World, runtime: float, keep_world: bool) -> Result:
    scenario = world.scenario
    protocol = scenario.protocol
    cfg = scenario.run
    history = world.history.to_frame()
    faults = pd.DataFrame([describe(f) for f in world.faults], columns=["kind", "start", "end", "detail"])
    window = cfg.timeline_window or cfg.duration / 50
    net = world.network
    messages = pd.DataFrame(sorted(net.sent_by_type.items()), columns=["type", "sent"])
    node_events = pd.DataFrame(world.node_events, columns=["time", "node", "event"])
    trace = None
    if cfg.trace:
        trace = pd.DataFrame(net.trace_rows(), columns=["id", "src", "dst", "type", "send", "deliver", "dropped",
                                                        "message"])
    extra: dict[str, Any] = protocol.summary(world, world.state)
    attempts = _attempts(world)
    if attempts is not None:
        extra.update(_retry_summary(world, history, attempts))
    counter = None
    if scenario.workload.pattern == "counter":
        counter = check_counter(history, final_counter_values([n.replica_state() for n in world.nodes.values()
                                                               if n.alive]))
        extra.update({"counter.increments_ok": counter.increments_ok,
                      "counter.increments_unknown": counter.increments_unknown,
                      "counter.final_total": counter.final_total,
                      "counter.lost_increments": counter.lost_increments,
                      "counter.phantom_increments": counter.phantom_increments})
    divergence = _sampler(world).frame()
    if divergence is not None:
        writes = history[history["op"].isin(("write", "cas")) & history["complete"].notna()
                         & ((history["op"] == "write") | (history["outcome"] == "ok"))]
        last_write = float(writes["complete"].max()) if len(writes) else float("nan")
        extra.update(convergence_summary(divergence, faults, last_write))
        extra.update(staleness_summary(history, cfg.warmup, cfg.duration))
    summary = metrics.summarize(history, warmup=cfg.warmup, duration=cfg.duration, network=net,
                                faults=faults, extra=extra)
    return Result(
        scenario=scenario,
        seed=cfg.seed,
        runtime=runtime,
        history=history,
        timeline=metrics.timeline(history, faults, cfg.duration, window),
        faults=faults,
        messages=messages,
        node_events=node_events,
        summary=summary,
        trace=trace,
        divergence=divergence,
        tables=_tables(protocol.tables(world, world.state), attempts),
        verdicts=_with_counter(protocol.verdicts(world, world.state), counter),
        meta={"capsim_version": capsim_version(), "sim_end": world.now},
        world=world if keep_world else None,
    )


def _attempts(world: World) -> pd.DataFrame | None:
    """The attempts table when clients retry (attempts still unanswered at the end end ``info``)."""
    if not world.scenario.workload.retry.retries:
        return None
    history = world.history
    for client in world.clients:
        unfinished = getattr(client, "unfinished_attempts", None)
        if unfinished is None:
            continue
        for row, request_id, node, sent in unfinished():
            history.attempt(row, history.attempts_of(row), request_id, node, sent, float("nan"), "info",
                            "unanswered at the end")
    return history.attempts_frame()


def _retry_summary(world: World, history: pd.DataFrame, attempts: pd.DataFrame) -> dict[str, Any]:
    ops = len(history)
    denied = sum(getattr(c, "retries_denied", 0) for c in world.clients)
    return {"retry.attempts": int(history["attempts"].sum()),
            "retry.attempts_per_op": float(history["attempts"].mean()) if ops else float("nan"),
            "retry.retried_ops": int((history["attempts"] > 1).sum()),
            "retry.budget_denied": int(denied)}


def _tables(tables: dict[str, pd.DataFrame], attempts: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    if attempts is not None:
        tables = {**tables, "attempts": attempts}
    return tables


def _with_counter(verdicts: dict[str, Any], counter: Any) -> dict[str, Any]:
    """The protocol's verdicts, and the counter verdict of a ``pattern = "counter"`` workload."""
    return verdicts if counter is None else {**verdicts, "counter": counter}
