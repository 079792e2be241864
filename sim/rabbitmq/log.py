"""The message-event table of a real run: the simulation's columns, with the observer's source.

Events the adapter's publishers and consumers perform or receive are
``client`` events, exactly as in the simulation. Broker-side events cannot be
seen directly on a real broker; the adapter infers some of them from what it
observes (a message arriving in a dead-letter queue, a mandatory return, what
is left in the queues at the end) and records them with ``source = "observer"``
so they are never mistaken for the broker's own bookkeeping.
"""

from __future__ import annotations

from ..messaging.history import MessageLog

__all__ = ["ObservedLog", "OBSERVER"]

OBSERVER = "observer"


class ObservedLog(MessageLog):
    """A :class:`~sim.messaging.history.MessageLog` whose rows may carry ``source = "observer"``."""

    def observed(self, time: float, event: str, msg_id: str, node: str, **fields: object) -> None:
        """Record a broker event the adapter inferred from what it saw (``source = "observer"``)."""
        self.record(time, event, msg_id, node, **fields)  # type: ignore[arg-type]
        row = self._rows[-1]
        self._rows[-1] = row[:2] + (OBSERVER,) + row[3:]
