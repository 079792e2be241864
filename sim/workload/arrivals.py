"""When protocol nodes start new business operations: orders, sagas, transactions.

Protocols whose nodes start their own work (a saga orchestrator, a merchant, a
transactional producer) take an :class:`ArrivalSpec` in their config and drive an
:class:`Arrivals` clock from the node: Poisson or periodic gaps, ``count`` at most,
in ``[start, stop)``; operations that would start while the node is down are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..config import Duration, at_least, fld, positive
from ..dists import Exponential, buffered_sampler
from ..errors import ScenarioError

__all__ = ["ArrivalSpec", "Arrivals"]


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
