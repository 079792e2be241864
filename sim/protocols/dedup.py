"""A server's bounded duplicate table for idempotency keys, and the record of applied writes.

A client that retries with idempotency keys sends the same key on every attempt
of an operation (:mod:`sim.client_retry`). A server that honours keys keeps,
per key it applied, the answer it gave; a request whose key is in the table is
answered from it and not applied again.

The table is bounded, as every real one is (Stripe keeps keys 24 hours, AWS
client tokens expire, Raft's client sessions are evicted): an entry expires
``ttl`` after it was written, and when more than ``max_entries`` are held the
oldest is dropped. *Past the bound a late retry is applied again*: a retry
arriving after its key expired or was evicted finds no entry and is treated as
a new write, so the duplicate the key was meant to stop happens. Size the
bound to outlast the client's whole retry schedule (``max_attempts`` times the
timeout plus the delays) under the key arrival rate.

When the workload's clients retry, the writes a server applies are recorded in
the run's ``applications`` channel (``Result.tables["applications"]``): one row
per application, with the node, its ``slot`` (where in the node's sequence of
applications it is: the log index for a replicated log, so that a replica
replaying its log after a restart is not counted twice) and the value written.
Values identify operations (each operation writes a fresh value and its
retries resend it), so :func:`sim.checkers.duplicates.duplicate_applications`
counts operations some node applied more than once. Without retries nothing is
recorded (a replicated log would add a row per write per replica).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..config import MaybeInfDuration, at_least, fld, positive

__all__ = ["DedupConfig", "DedupTable", "APPLICATION_COLUMNS", "applications_channel"]

APPLICATION_COLUMNS = ("time", "node", "slot", "request_id", "idempotency_key", "key", "value")


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """Bounds of a server's duplicate table: entries live ``ttl``, at most ``max_entries`` are kept."""

    ttl: MaybeInfDuration = fld(60_000.0, check=positive, doc="how long a key is remembered")
    max_entries: int = fld(100_000, check=at_least(1), doc="keys kept at most; the oldest go first")


class DedupTable:
    """Idempotency key -> the answer given, in insertion order, bounded by age and size.

    Deterministic: expiry is by the simulated time of the lookup, eviction by
    insertion order. ``expired`` and ``evicted`` count the entries dropped.
    """

    __slots__ = ("ttl", "max_entries", "_entries", "expired", "evicted", "hits")

    def __init__(self, cfg: DedupConfig) -> None:
        self.ttl = cfg.ttl
        self.max_entries = cfg.max_entries
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self.expired = 0
        self.evicted = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def copy(self) -> DedupTable:
        """An independent copy: the same entries (with the times they were stored), bounds and counts."""
        new = DedupTable.__new__(DedupTable)
        new.ttl, new.max_entries = self.ttl, self.max_entries
        new._entries = OrderedDict(self._entries)
        new.expired, new.evicted, new.hits = self.expired, self.evicted, self.hits
        return new

    def _expire(self, now: float) -> None:
        if math.isinf(self.ttl):
            return
        entries = self._entries
        while entries:
            _key, (stored, _answer) = next(iter(entries.items()))
            if stored + self.ttl > now:
                break
            entries.popitem(last=False)
            self.expired += 1

    def lookup(self, key: Any, now: float) -> tuple[bool, Any]:
        """``(True, answer)`` if ``key`` is held at ``now``, else ``(False, None)``."""
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        self.hits += 1
        return True, entry[1]

    def store(self, key: Any, now: float, answer: Any) -> None:
        """Remember the answer for ``key``, dropping the oldest entries past ``max_entries``."""
        self._expire(now)
        self._entries[key] = (now, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1


def applications_channel(world: Any) -> Any:
    """The run's ``applications`` channel (created on first use), or None when the clients do not retry."""
    if not world.scenario.workload.retry.retries:
        return None
    return world.events.channel("applications", APPLICATION_COLUMNS,
                                {"time": "float64", "slot": "int64", "request_id": "int64"})
