"""Convergence: do the live replicas agree, and how long after a heal until they do?

:class:`DivergenceSampler` (a probe the run adds to every world) samples each live
node's ``replica_state()`` every ``run.sample_interval`` (default ``duration / 200``)
and at the end of the run. A key is *divergent* at a sample when the live nodes
holding a replica of it (``protocol.replicas_for``) do not all hold the same value
(a missing key counts as ``None``).

**Lagging or conflicting.** A divergent key is one of three kinds at a sample:

* *lagging*: the replicas hold points of **one history** of the key. Every
  value held carries a *version*, a version vector ``{origin: counter}``
  (what the value incorporates: that origin's updates up to ``counter``), and
  the versions of the live holders form a chain under ``a <= b`` (every origin
  of ``a`` is in ``b`` with a counter at least as high; a missing key has the
  empty version, below every other). The replicas behind only need to receive
  more updates; nothing any of them holds has to be thrown away.
* *conflicting*: two holders hold versions neither of which is ``<=`` the
  other (concurrent writes, diverged logs after a split brain), or some holder
  keeps *siblings* (more than one version side by side). Agreement needs a
  merge, or a resolution that discards a value (last writer wins).
* *unclassified*: a holder gave no version for the key (its protocol does not
  implement :meth:`sim.kernel.node.Node.replica_versions`).

So ``divergent = lagging + conflicting + unclassified`` at every sample. The
versions are the protocol's own order: Raft and primary-backup give log
prefixes (:func:`log_versions`), eventual consistency the causal context of the
value (its version vector under ``vv``; under ``lww`` the vector the writer had
seen, kept as instrumentation), the ABD quorum its (stamp, writer) order, which
is total, so its replicas can only lag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ..kernel.world import World

__all__ = ["divergent_keys", "divergence_kinds", "version_leq", "log_versions", "convergence_summary",
           "DivergenceSampler", "SAMPLE_COLUMNS", "VersionVector"]

SAMPLE_COLUMNS = ("time", "divergent", "live", "keys", "lagging", "conflicting")

#: origin -> counter (any values that compare with ``<=``): what a value incorporates
VersionVector = Mapping[Any, Any]


class DivergenceSampler:
    """Samples replica divergence through a run; inactive when no node holds replica state."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int, list[Any], int, int]] = []
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
        """The samples (``None`` when inactive): time, divergent key count, live nodes, the divergent
        keys, and how many of them are lagging and conflicting."""
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
        def replicas_for(key: Any) -> tuple[str, ...]:
            return protocol.replicas_for(key, nodes)

        keys = divergent_keys(states, replicas_for)
        lagging: list[Any] = []
        conflicting: list[Any] = []
        if keys:
            versions = {name: world.nodes[name].replica_versions(keys) for name in states}
            kinds = divergence_kinds(states, versions, replicas_for, keys)
            lagging, conflicting = kinds["lagging"], kinds["conflicting"]
        now = world.env.now
        if self.samples and self.samples[-1][0] == now:
            self.samples.pop()
        self.samples.append((now, len(keys), len(states), keys, len(lagging), len(conflicting)))


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


def version_leq(a: VersionVector, b: VersionVector) -> bool:
    """Whether version ``a`` is at or before ``b``: every origin of ``a`` is in ``b`` with a counter >=."""
    return all(origin in b and count <= b[origin] for origin, count in a.items())


def divergence_kinds(states: dict[str, dict[Any, Any]],
                     versions: Mapping[str, Mapping[Any, Sequence[VersionVector]] | None],
                     replicas_for: Callable[[Any], tuple[str, ...]],
                     keys: Iterable[Any]) -> dict[str, list[Any]]:
    """Sort divergent ``keys`` into ``lagging``, ``conflicting`` and ``unclassified`` (module docstring).

    ``states``: live node -> replica state; ``versions``: live node -> {key: the versions of
    the value it holds (one, or one per sibling)} or ``None`` when the node gives none. A
    node that does not hold a key has the empty version for it.
    """
    out: dict[str, list[Any]] = {"lagging": [], "conflicting": [], "unclassified": []}
    for key in keys:
        held: list[VersionVector] = []
        kind = "lagging"
        for node in replicas_for(key):
            if node not in states:
                continue
            if key not in states[node]:
                held.append({})
                continue
            mine = (versions.get(node) or {}).get(key)
            if not mine:
                kind = "unclassified"
                break
            if len(mine) > 1:
                kind = "conflicting"  # siblings: concurrent versions side by side
            held.extend(mine)
        if kind == "lagging" and any(not version_leq(a, b) and not version_leq(b, a)
                                     for i, a in enumerate(held) for b in held[i + 1:]):
            kind = "conflicting"
        out[kind].append(key)
    return out


def log_versions(entries: Iterable[tuple[Any, Any]]) -> dict[Any, dict[Any, int]]:
    """Versions of the values a replicated log sets: ``entries`` are ``(epoch, key)`` in log order,
    ``key`` None for an entry that sets nothing (a no-op, a read, a skipped duplicate).

    The version of a key's value is the log prefix up to the entry that set it, written
    as ``{epoch: entries of that epoch in the prefix}``. In a log where each epoch has a
    single writer that appends in order (a Raft term's leader, a primary-backup view's
    primary), the k-th entry of an epoch always sits at the same index, so one prefix
    is ``<=`` another exactly when it is a prefix of it.
    """
    counts: dict[Any, int] = {}
    out: dict[Any, dict[Any, int]] = {}
    for epoch, key in entries:
        counts[epoch] = counts.get(epoch, 0) + 1
        if key is not None:
            out[key] = dict(counts)
    return out


def convergence_summary(samples: pd.DataFrame, faults: pd.DataFrame, last_write: float) -> dict[str, Any]:
    """Convergence numbers from the divergence samples.

    ``convergence.after_heal``: time from the last heal (end of the last partition
    or crash) until every key that was divergent at that moment had agreed at some
    sample. ``convergence.after_quiesce``: time from the later of the last heal and
    the last write until all live replicas agree on every key and keep agreeing to
    the end of the run. NaN when it did not happen within the run (the matching
    ``...converged`` flag is False) or when there was nothing to measure.
    ``convergence.lagging_keys_max`` / ``conflicting_keys_max``: the most keys of
    each kind at one sample (when the samples have those columns).
    """
    out: dict[str, Any] = {
        "convergence.samples": int(len(samples)),
        "convergence.divergent_keys_max": int(samples["divergent"].max()) if len(samples) else 0,
        "convergence.divergent_keys_at_end": int(samples["divergent"].iloc[-1]) if len(samples) else 0,
    }
    for kind in ("lagging", "conflicting"):
        if kind in samples:
            out[f"convergence.{kind}_keys_max"] = int(samples[kind].max()) if len(samples) else 0
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
        nonzero = np.flatnonzero(div)
        first_ok = int(nonzero[-1]) + 1 if len(nonzero) else 0
        if first_ok < len(div):
            after_quiet, converged = float(times[first_ok] - ref), True
    out["convergence.after_quiesce"] = after_quiet
    out["convergence.converged"] = converged
    return out
