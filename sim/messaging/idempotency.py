"""The idempotent consumer's dedup store: message ids whose effect already happened.

A consumer with idempotency checks the store before processing and records
the message id in the same step as the side effect (as a database transaction
that writes the effect and the id together would), so a redelivered or
republished duplicate is acknowledged without repeating the effect.

Where the store lives decides what it protects against (``IdempotencySpec.store``):

``shared``          one store for every consumer, surviving crashes (a database table):
                    no duplicate side effect ever, unless ``capacity`` evicts ids;
``local_durable``   one per consumer, on its disk: survives its crashes, but a duplicate
                    delivered to *another* consumer repeats the effect;
``local``           one per consumer, in memory: a crash forgets everything.

``capacity`` bounds a store to the most recently used ids (LRU); an evicted id
is forgotten, so a very late duplicate repeats its effect.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from ..config import at_least, fld

__all__ = ["DedupStore", "IdempotencySpec"]


@dataclass(frozen=True, kw_only=True)
class IdempotencySpec:
    """Turns a consumer into an idempotent consumer (see the module docstring)."""

    store: Literal["shared", "local_durable", "local"] = fld("shared")
    capacity: int | None = fld(None, check=at_least(1))


class DedupStore:
    """A set of message ids, optionally bounded to the ``capacity`` most recently used."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._ids

    def seen(self, msg_id: str) -> bool:
        """Whether ``msg_id`` was processed (a hit refreshes its LRU position)."""
        if msg_id in self._ids:
            self._ids.move_to_end(msg_id)
            return True
        return False

    def add(self, msg_id: str) -> None:
        """Remember ``msg_id``, evicting the least recently used id when full."""
        self._ids[msg_id] = None
        self._ids.move_to_end(msg_id)
        if self.capacity is not None:
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
                self.evicted += 1
