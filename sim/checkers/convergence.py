"""Convergence: do the live replicas agree, and how long after a heal until they do?

:class:`DivergenceSampler` (a probe the run adds to every world) samples each live
node's ``replica_state()`` every ``run.sample_interval`` (default ``duration / 200``)
and at the end of the run. A key is *divergent* at a sample when the live nodes
holding a replica of it (``protocol.replicas_for``) do not all hold the same value
(a missing key counts as ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ..kernel.world import World

__all__ = ["divergent_keys", "convergence_summary", "DivergenceSampler", "SAMPLE_COLUMNS"]

SAMPLE_COLUMNS = ("time", "divergent", "live", "keys")


class DivergenceSampler:
    """Samples replica divergence through a run; inactive when no node holds replica state."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int, list[Any]]] = []
        self.active = False
        self._every = 0.0

    def start(self, world: World) -> None:
        self.active = any(node.replica_state() is not None for node in world.nodes.values())
        if self.active:
            cfg = world.scenario.run
            self._every = cfg.sample_interval or cfg.duration / 200
            self._sample(world)

    def finish(self, world: World) -> None:
        if self.active:
            self._take(world)

    def frame(self) -> pd.DataFrame | None:
        """The samples (``None`` when inactive): time, divergent key count, live nodes, the keys."""
        return pd.DataFrame(self.samples, columns=list(SAMPLE_COLUMNS)) if self.active else None

    def _sample(self, world: World) -> None:
        self._take(world)
        world.env.timeout(self._every).callbacks.append(lambda _e: self._sample(world))

    def _take(self, world: World) -> None:
        states = {}
        for name, node in world.nodes.items():
            state = node.replica_state() if node.alive else None
            if state is not None:
                states[name] = state
        nodes = world.scenario.nodes
        protocol = world.scenario.protocol
        keys = divergent_keys(states, lambda key: protocol.replicas_for(key, nodes))
        now = world.env.now
        if self.samples and self.samples[-1][0] == now:
            self.samples.pop()
        self.samples.append((now, len(keys), len(states), keys))


def divergent_keys(states: dict[str, dict[Any, Any]], replicas_for: Callable[[Any], tuple[str, ...]]) -> list[Any]:
    """Keys whose live replicas disagree; ``states`` maps live node -> replica state."""
    keys: dict[Any, None] = {}
    for state in states.values():
        for k in state:
            keys.setdefault(k, None)
    out = []
    for key in sorted(keys, key=repr):
        holders = [n for n in replicas_for(key) if n in states]
        values = [states[n].get(key) for n in holders]
        if any(v != values[0] for v in values[1:]):
            out.append(key)
    return out


def convergence_summary(samples: pd.DataFrame, faults: pd.DataFrame, last_write: float) -> dict[str, Any]:
    """Convergence numbers from the divergence samples.

    ``convergence.after_heal``: time from the last heal (end of the last partition
    or crash) until every key that was divergent at that moment had agreed at some
    sample. ``convergence.after_quiesce``: time from the later of the last heal and
    the last write until all live replicas agree on every key and keep agreeing to
    the end of the run. NaN when it did not happen within the run (the matching
    ``...converged`` flag is False) or when there was nothing to measure.
    """
    out: dict[str, Any] = {
        "convergence.samples": int(len(samples)),
        "convergence.divergent_keys_max": int(samples["divergent"].max()) if len(samples) else 0,
        "convergence.divergent_keys_at_end": int(samples["divergent"].iloc[-1]) if len(samples) else 0,
    }
    heals = [e for k, e in zip(faults["kind"], faults["end"]) if k in ("partition", "crash") and math.isfinite(e)]
    heal = max(heals) if heals else math.nan
    out["convergence.last_heal"] = heal
    after_heal, healed = math.nan, False
    if len(samples) and math.isfinite(heal):
        later = samples[samples["time"] >= heal]
        if len(later):
            pending = set(map(repr, later.iloc[0]["keys"]))
            for t, keys in zip(later["time"], later["keys"]):
                pending &= set(map(repr, keys))
                if not pending:
                    after_heal, healed = t - heal, True
                    break
    out["convergence.after_heal"] = after_heal
    out["convergence.healed"] = healed
    known = [x for x in (heal, last_write) if math.isfinite(x)]
    ref = max(known) if known else math.nan
    after_quiet, converged = math.nan, False
    if len(samples) and math.isfinite(ref):
        later = samples[samples["time"] >= ref]
        div = later["divergent"].to_numpy()
        times = later["time"].to_numpy()
        # first sample from which every later sample shows agreement
        nonzero = [i for i, d in enumerate(div) if d]
        first_ok = (nonzero[-1] + 1) if nonzero else 0
        if len(div) and first_ok < len(div):
            after_quiet, converged = float(times[first_ok] - ref), True
    out["convergence.after_quiesce"] = after_quiet
    out["convergence.converged"] = converged
    return out
