"""Running scenarios: :func:`run` one scenario with one seed."""

from __future__ import annotations

import dataclasses
import time
from importlib.metadata import PackageNotFoundError, version

import pandas as pd

from . import metrics
from .checkers.convergence import convergence_summary
from .checkers.staleness import staleness_summary
from .errors import ScenarioError
from .faultspec import describe
from .kernel.world import World
from .result import Result
from .scenario import Scenario

__all__ = ["run", "capsim_version"]


def capsim_version() -> str:
    try:
        return version("capsim")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def run(scenario: Scenario, seed: int | None = None) -> Result:
    """Run ``scenario`` once; ``seed`` overrides ``scenario.run.seed``.

    The same scenario and seed always give the same history, tables and summary.
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"run() needs a Scenario, got {type(scenario).__name__}; use Scenario.from_dict/from_toml")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ScenarioError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    t0 = time.perf_counter()
    world = World(scenario)
    world.run()
    runtime = time.perf_counter() - t0
    cfg = scenario.run
    history = world.history.to_frame()
    faults = pd.DataFrame([describe(f) for f in world.faults], columns=["kind", "start", "end", "detail"])
    window = cfg.timeline_window or cfg.duration / 50
    net = world.network
    messages = pd.DataFrame(sorted(net.sent_by_type.items()), columns=["type", "sent"])
    node_events = pd.DataFrame(world.node_events, columns=["time", "node", "event"])
    trace = None
    if cfg.trace:
        trace = pd.DataFrame(net.trace_rows(), columns=["id", "src", "dst", "type", "send", "deliver", "dropped", "message"])
    extra = world.protocol_summary()
    divergence = None
    if world.replicated:
        divergence = pd.DataFrame(world.samples, columns=["time", "divergent", "live", "keys"])
        writes = history[(history["op"] == "write") & history["complete"].notna()]
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
        tables=scenario.protocol.tables(world),
        meta={"capsim_version": capsim_version(), "sim_end": world.now},
    )
