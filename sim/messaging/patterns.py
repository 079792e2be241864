"""What the saga, notification and transactional-message protocols share.

* :class:`ArrivalSpec` and :class:`Arrivals`: when a node starts new business
  operations (Poisson or periodic, ``count`` at most, in ``[start, stop)``);
  operations that would start while the node is down are skipped;
* :func:`crash_and_restart`: a seeded process crash (the process dies at a
  chosen point and is restarted ``restart_after`` later), as opposed to a
  machine crash from the fault schedule;
* :func:`check_roles`: every cluster node plays exactly one role;
* :func:`prepare_run`: the seed override and protocol check of the ``run_*`` functions;
* :func:`percentiles`: latency summaries of the reports.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..config import Duration, at_least, fld, positive
from ..dists import Exponential, buffered_sampler
from ..errors import ScenarioError

__all__ = ["ArrivalSpec", "Arrivals", "crash_and_restart", "check_roles", "prepare_run", "percentiles"]


@dataclass(frozen=True, kw_only=True)
class ArrivalSpec:
    """New operations at ``rate`` per second (``poisson`` or ``periodic`` gaps), ``count`` at most,
    from ``start`` until ``stop`` (default: the run's duration)."""

    rate: float = fld(10.0, check=positive)
    process: Literal["poisson", "periodic"] = fld("poisson")
    count: int | None = fld(None, check=at_least(0))
    start: Duration = fld(0.0)
    stop: Duration | None = fld(None)

    def _validate(self, path: str) -> None:
        if self.stop is not None and self.stop <= self.start:
            raise ScenarioError(f"{path}.stop", f"must be after start ({self.start} ms), got {self.stop}")


class Arrivals:
    """The arrival clock of one node; survives the node's crashes (ids are never reused)."""

    def __init__(self, spec: ArrivalSpec, rng: np.random.Generator, duration: float) -> None:
        self.spec = spec
        self.index = 0
        self.stop = spec.stop if spec.stop is not None else duration
        mean_gap = 1000.0 / spec.rate
        self._gap = buffered_sampler(Exponential(mean_gap), rng) if spec.process == "poisson" else (lambda: mean_gap)
        self._started = False

    def resume(self, node: Any, fire: Callable[[int], None]) -> None:
        """(Re)start the clock on ``node`` (call from ``boot``); ``fire(i)`` starts operation ``i``."""
        first = self.spec.start if not self._started else node.now
        self._started = True
        self._next(node, fire, first)

    def _next(self, node: Any, fire: Callable[[int], None], after: float) -> None:
        t = max(after, node.now) + self._gap()
        if t < self.stop and (self.spec.count is None or self.index < self.spec.count):
            node.set_timer(t - node.now, self._arrive, node, fire)

    def _arrive(self, node: Any, fire: Callable[[int], None]) -> None:
        i = self.index
        self.index += 1
        fire(i)
        if node.alive:
            self._next(node, fire, node.now)


def crash_and_restart(node: Any, restart_after: float) -> None:
    """The node's process dies now (volatile state lost) and restarts ``restart_after`` ms later."""
    node.crash()
    crashes = node.crashes
    ev = node.env.timeout(restart_after)
    ev.callbacks.append(lambda _e: node.recover() if node.crashes == crashes else None)


def check_roles(scenario: Any, roles: list[tuple[str, str]], path: str, protocol: str) -> None:
    """Every node in ``roles`` (field, node) plays one role and every cluster node plays one."""
    if scenario.workload.clients != 0:
        raise ScenarioError("workload.clients", f"must be 0 for the {protocol} protocol "
                            "(its operations are started by the protocol's own nodes)")
    seen: dict[str, str] = {}
    for field, name in roles:
        if name in seen:
            raise ScenarioError(f"{path}.{field}", f"node {name!r} already plays the role of {seen[name]}")
        seen[name] = field
    for i, node in enumerate(scenario.nodes):
        if node not in seen:
            accepted = ", ".join(sorted({f.split("[")[0] for f, _ in roles}))
            raise ScenarioError(f"cluster.nodes[{i}]", f"node {node!r} has no {protocol} role ({accepted})")


def prepare_run(scenario: Any, seed: int | None, config_type: type, runner: str) -> Any:
    """Check ``scenario`` runs ``config_type`` and apply the ``seed`` override."""
    from ..scenario import Scenario

    if not isinstance(scenario, Scenario):
        raise TypeError(f"{runner}() needs a Scenario, got {type(scenario).__name__}")
    if not isinstance(scenario.protocol, config_type):
        raise ScenarioError("protocol.name",
                            f"{runner} needs protocol {config_type.tag!r}, got {scenario.protocol.tag!r}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ScenarioError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    return scenario


def percentiles(values: Any, prefix: str) -> dict[str, float]:
    """``{prefix}.p50`` / ``p99`` / ``mean`` of the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {f"{prefix}.p50": math.nan, f"{prefix}.p99": math.nan, f"{prefix}.mean": math.nan}
    p50, p99 = np.percentile(arr, [50.0, 99.0])
    return {f"{prefix}.p50": float(p50), f"{prefix}.p99": float(p99), f"{prefix}.mean": float(arr.mean())}
