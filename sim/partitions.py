"""A partition schedule in the simulation's ``[faults]`` format, resolved for a cluster that only partitions.

The real RabbitMQ cluster (:mod:`sim.rabbitmq.cluster_clients`) and the broker-cluster
model (:mod:`sim.messaging.cluster_model`) both take their faults from here, so the
same ``[faults]`` table means the same cuts in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .config import build
from .errors import ScenarioError
from .faultspec import LEADER, Fault, FaultsConfig, Isolate, Partition, Split

if TYPE_CHECKING:
    import numpy as np

__all__ = ["partition_schedule"]


def partition_schedule(faults: FaultsConfig | Mapping[str, Any] | Sequence[Fault], nodes: Sequence[str], *,
                       until: float = math.inf, rng: np.random.Generator | None = None) -> list[Fault]:
    """The concrete partitions of a schedule in the simulation's format (a ``[faults]`` table, a
    :class:`~sim.faultspec.FaultsConfig` or a list of faults), checked against ``nodes``.

    ``split`` and ``isolate`` become partitions as in the simulation; a random split or
    ``[faults.random]`` needs ``rng`` (the simulation's ``faults`` stream). Other fault kinds
    raise :class:`ScenarioError` naming the fault.
    """
    from .kernel.faults import resolve_schedule

    config = build(FaultsConfig, faults, "faults") if isinstance(faults, Mapping) else faults
    if isinstance(config, FaultsConfig):
        schedule = list(config.schedule)
        for path, name in config.node_refs():
            if name not in nodes and name != LEADER:
                raise ScenarioError(f"faults.{path}", f"unknown node {name!r}; the cluster's nodes: {', '.join(nodes)}")
        if config.random is not None:
            if rng is None or not math.isfinite(until):
                raise ScenarioError("faults.random", "random faults need rng (the faults stream) and a finite until")
            schedule += config.random.generate(tuple(nodes), until, rng)
    else:
        schedule = list(config)
    for i, fault in enumerate(schedule):
        where = f"faults.schedule[{i}]"
        if not isinstance(fault, (Partition, Isolate, Split)):
            raise ScenarioError(f"{where}.kind", f"{fault.tag!r} is not supported on the real cluster; "
                                "accepted: partition, isolate, split")
        if isinstance(fault, Isolate) and fault.node == LEADER:
            raise ScenarioError(f"{where}.node", f"{LEADER!r} is not supported on the real cluster: name the node")
        if isinstance(fault, Split) and fault.pick == "random" and rng is None:
            raise ScenarioError(f"{where}.pick", "'random' needs rng (the faults stream); or use 'first' / 'last'")
        for path, name in fault.node_refs():
            if name not in nodes:
                raise ScenarioError(f"{where}.{path}",
                                    f"unknown node {name!r}; the cluster's nodes: {', '.join(nodes)}")
    if rng is None:
        import numpy as np

        rng = np.random.default_rng(0)  # never drawn from: random splits were refused above
    return resolve_schedule(schedule, tuple(nodes), rng)
