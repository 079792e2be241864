"""The drain policy: how a run ends after ``run.duration`` (``[run] drain``).

Clients and publishers stop issuing new work at ``run.duration``. What happens
next is the drain, one of two policies:

``drain = "2s"`` (``until = "operations"``, the default)
    go on until no client operation is in flight, for at most the given time
    (default: the client timeout, or ``duration`` when the timeout is
    infinite). Protocols without client operations (``messaging``) stop at
    ``duration``.

``drain = { until = "idle", limit = "5s" }``
    go on until the run is *idle*, for at most ``limit`` (same default): no
    client operation in flight and nothing left in flight in the protocol
    (:meth:`sim.protocol.ProtocolConfig.idle`; for ``messaging``: every
    publisher done and every publish confirmed, no republish waiting, no
    message ready or unacked in a queue messages pass through, no consumer
    holding, processing or retrying a message, every fault over). The real
    RabbitMQ adapter applies the same definition, so both sides of a
    validation run for the same span.

:class:`Span` is what a run reports about its end: where it stopped, whether
it was idle then (``drained``) and since when.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .config import Duration, build, fld
from .errors import ScenarioError

__all__ = ["DrainPolicy", "Span", "UNTIL"]

UNTIL = ("operations", "idle")
_ACCEPTS = ("a duration (e.g. \"2s\": wait for client operations in flight) or "
            "{ until = \"idle\", limit = \"5s\" }")


@dataclass(frozen=True, kw_only=True)
class DrainPolicy:
    """After ``run.duration``: run ``until`` no operation is in flight or the run is idle, at most ``limit``."""

    until: Literal["operations", "idle"] = fld("operations", doc="'operations' (client operations in flight "
                                                                "finish) or 'idle' (nothing left in flight at all)")
    limit: Duration | None = fld(None, doc="the longest the drain lasts (default: the client timeout, or the "
                                           "duration when the timeout is infinite)")

    def _validate(self, path: str) -> None:
        if self.until not in UNTIL:
            raise ScenarioError(f"{path}.until", f"must be one of {', '.join(map(repr, UNTIL))}, got {self.until!r}")
        if self.limit is not None and (not math.isfinite(self.limit) or self.limit < 0):
            raise ScenarioError(f"{path}.limit", f"must be a finite duration >= 0, got {self.limit!r}")

    @property
    def idle(self) -> bool:
        return self.until == "idle"

    @classmethod
    def from_plain(cls, value: Any, path: str) -> DrainPolicy:
        if isinstance(value, DrainPolicy):
            value._validate(path)
            return value
        if isinstance(value, Mapping):
            policy: DrainPolicy = build(cls, value, path)
            return policy
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ScenarioError(path, f"must be {_ACCEPTS}, got {type(value).__name__} {value!r}")
        try:
            limit: DrainPolicy = build(cls, {"limit": value}, path)  # a plain duration: the classic drain
        except ScenarioError:
            raise ScenarioError(path, f"must be {_ACCEPTS}, got {value!r}") from None
        return limit

    def to_plain(self) -> Any:
        if self.until == "operations" and self.limit is not None:
            return self.limit  # the classic form, as scenarios have always written it
        out: dict[str, Any] = {"until": self.until}
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    def __str__(self) -> str:
        limit = "default limit" if self.limit is None else f"at most {self.limit:g} ms"
        return f"until {'idle' if self.idle else 'no operation is in flight'}, {limit}"


@dataclass(frozen=True)
class Span:
    """How a run ended: it ran to ``end`` (ms); ``drained``: it was idle then; ``drained_at``: since when.

    ``drained_at`` is the time of the run's last message event (the moment it
    went quiet), ``NaN`` when the run did not drain.
    """

    end: float
    drained: bool
    drained_at: float

    def summary(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}span": self.end, f"{prefix}drained": self.drained, f"{prefix}drained_at": self.drained_at}

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], prefix: str) -> Span | None:
        if f"{prefix}span" not in summary:
            return None
        return cls(float(summary[f"{prefix}span"]), bool(summary[f"{prefix}drained"]),
                   float(summary[f"{prefix}drained_at"]))

    def describe(self) -> str:
        if self.drained:
            return f"ran to {self.end:.0f} ms, drained (idle since {self.drained_at:.0f} ms)"
        return f"ran to {self.end:.0f} ms, NOT drained (messages or work still in flight at the end)"
