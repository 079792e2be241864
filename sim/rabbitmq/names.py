"""Run-unique broker names, and the mapping between them and the scenario's names.

Every exchange and queue a run declares is named ``<prefix><scenario name>``
with a prefix unique to the run (``capsim.<label>.<random hex>.``), so runs
never collide with each other or with anything else on the broker, and the
cleanup deletes exactly what the run made. The default exchange ``""`` is not
renamed; routing keys on it name queues, so they are renamed too. Everything
recorded in the event table uses the scenario's names again
(:meth:`RunNames.sim`), so the table compares with the simulation's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from ..messaging.topology import DEFAULT_EXCHANGE, QueueSpec

__all__ = ["RunNames", "x_death_entries", "x_death_text", "death_count", "header_int"]

_LABEL = re.compile(r"[^A-Za-z0-9_-]+")


class RunNames:
    """Maps scenario names to the run's broker names and back."""

    def __init__(self, prefix: str) -> None:
        if not prefix or len(prefix.encode()) > 100:
            raise ValueError(f"prefix must be 1..100 bytes, got {prefix!r}")
        self.prefix = prefix

    @classmethod
    def new(cls, label: str = "run") -> RunNames:
        """A fresh prefix ``capsim.<label>.<8 hex digits>.``."""
        clean = _LABEL.sub("-", label).strip("-")[:40] or "run"
        return cls(f"capsim.{clean}.{secrets.token_hex(4)}.")

    def __repr__(self) -> str:
        return f"RunNames({self.prefix!r})"

    @property
    def anchor(self) -> str:
        """The name of the run's own anchor queue and exchange (:mod:`sim.rabbitmq.lease`): the prefix itself,
        which no scenario name maps to (scenario names are never empty)."""
        return self.prefix

    def real(self, name: str) -> str:
        """The broker's name for scenario exchange or queue ``name`` (the default exchange stays ``""``)."""
        return name if name == DEFAULT_EXCHANGE else self.prefix + name

    def sim(self, name: str) -> str:
        """The scenario's name for a broker name (names from outside the run are returned unchanged)."""
        return name[len(self.prefix):] if name.startswith(self.prefix) else name

    def routing_key(self, exchange: str, routing_key: str) -> str:
        """The broker routing key: on the default exchange it names a queue, so it is renamed."""
        return self.real(routing_key) if exchange == DEFAULT_EXCHANGE else routing_key

    def queue_arguments(self, spec: QueueSpec) -> dict[str, Any]:
        """``spec.arguments()`` with the dead-letter exchange (and a queue-naming key) renamed."""
        args = spec.arguments()
        dlx = spec.dead_letter_exchange
        if dlx is not None:
            args["x-dead-letter-exchange"] = self.real(dlx)
            if spec.dead_letter_routing_key is not None:
                args["x-dead-letter-routing-key"] = self.routing_key(dlx, spec.dead_letter_routing_key)
        return args


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def header_int(headers: Mapping[str, Any] | None, name: str, default: int = 0) -> int:
    """An integer header (pika gives longs as int), ``default`` if absent."""
    if not headers or headers.get(name) is None:
        return default
    return int(headers[name])


def x_death_entries(headers: Mapping[str, Any] | None, names: RunNames) -> list[tuple[str, str, int]]:
    """(queue, reason, count) of each ``x-death`` entry, most recent first, queue names as in the scenario."""
    deaths = (headers or {}).get("x-death") or []
    out = []
    for d in deaths:
        if isinstance(d, Mapping):
            out.append((names.sim(_text(d.get("queue", ""))), _text(d.get("reason", "")), int(d.get("count", 0))))
    return out


def x_death_text(headers: Mapping[str, Any] | None, names: RunNames) -> str:
    """The simulation's compact form: ``queue:reason:count`` entries joined by ``|``."""
    return "|".join(f"{q}:{r}:{c}" for q, r, c in x_death_entries(headers, names))


def death_count(headers: Mapping[str, Any] | None, names: RunNames, queue: str, reason: str) -> int:
    """The ``count`` of the x-death entry for (scenario queue name, reason), 0 if none."""
    for q, r, c in x_death_entries(headers, names):
        if q == queue and r == reason:
            return c
    return 0
