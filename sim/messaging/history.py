"""The message-event history: one row per thing that happened to a message.

Both the simulation and the real-RabbitMQ adapter produce this table, so one
checker (:mod:`sim.checkers.delivery`) reads either. Events carry the
``source`` that observed them: ``client`` events (publishers, consumers) are
observable against a real broker too; ``broker`` events are the simulated
broker's internals; ``downstream`` events are the service consumers call.

Client events:
  ``publish``        the application published the message (``attempt`` = publish try, 1 first)
  ``confirm``        publisher confirm ack; ``publish_nack``: a confirm nack (reason ``nack``) or
                     no confirm within ``confirm_timeout`` (reason ``timeout``)
  ``return``         returned as unroutable (mandatory)
  ``receive``        a consumer got a delivery (``redelivered``, ``delivery_count``, ``attempt``, ``x_death``)
  ``dedup_skip``     the idempotent consumer recognised an already-processed message id
  ``process``        a processing attempt started (one downstream call when a downstream is configured)
  ``fail``           the attempt failed (reason: ``error``, ``poison``, ``timeout``, ``downstream``)
  ``side_effect``    the attempt succeeded: the effect happened (atomically with the dedup store)
  ``ack`` / ``nack`` (requeue) / ``reject`` (no requeue) sent to the broker
  ``retry_publish``  a copy was republished for a later retry; ``dlq_publish``: a copy sent to a DLQ
  ``abandon``        the consumer lost a held message without settling it (crash, connection lost)
Broker events:
  ``enqueue``, ``deliver``, ``settle`` (acked, or auto-acked at delivery), ``requeue`` (reason
  ``nack``, ``connection``, ``broker_restart``), ``dead_letter`` (reason ``rejected``,
  ``expired``, ``maxlen``, ``delivery_limit``), ``drop`` (same reasons when there is no DLX,
  plus ``dead_letter_unroutable``, ``dead_letter_cycle``, ``dead_letter_rejected``),
  ``publish_rejected`` (reject-publish overflow), ``unroutable``, ``lost`` (discarded by a
  broker crash), ``remain`` (still queued, ready or unacked, when the run ended)
Downstream events: ``call`` (a request arrived), ``serve`` (a request was served).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..kernel.events import EventLog

__all__ = ["MessageLog", "EVENT_COLUMNS", "DEPTH_COLUMNS", "CLIENT_EVENTS", "BROKER_EVENTS", "DOWNSTREAM_EVENTS"]

CLIENT_EVENTS = ("publish", "confirm", "publish_nack", "return", "receive", "dedup_skip", "process", "fail",
                 "side_effect", "ack", "nack", "reject", "retry_publish", "dlq_publish", "abandon")
BROKER_EVENTS = ("enqueue", "deliver", "settle", "requeue", "dead_letter", "drop", "publish_rejected",
                 "unroutable", "lost", "remain")
DOWNSTREAM_EVENTS = ("call", "serve")

EVENT_COLUMNS = ("time", "event", "source", "msg_id", "node", "queue", "exchange", "routing_key", "tag",
                 "redelivered", "delivery_count", "attempt", "reason", "x_death")
DEPTH_COLUMNS = ("time", "queue", "ready", "unacked")

_SOURCE = {**dict.fromkeys(CLIENT_EVENTS, "client"), **dict.fromkeys(BROKER_EVENTS, "broker"),
           **dict.fromkeys(DOWNSTREAM_EVENTS, "downstream")}

_DTYPES = {"time": "float64", "tag": "int64", "redelivered": "bool", "delivery_count": "int64", "attempt": "int64"}
_DEPTH_DTYPES = {"time": "float64", "queue": "object", "ready": "int64", "unacked": "int64"}


class MessageLog:
    """Message events and queue-depth samples, as two channels of a run's event log.

    ``message_events`` has :data:`EVENT_COLUMNS`; ``queue_depth`` has
    :data:`DEPTH_COLUMNS`. Without an event log (the real-broker adapter) the log
    keeps its own.
    """

    def __init__(self, events: EventLog | None = None) -> None:
        events = events if events is not None else EventLog()
        self._events = events.channel("message_events", EVENT_COLUMNS, _DTYPES)
        self._depth = events.channel("queue_depth", DEPTH_COLUMNS, _DEPTH_DTYPES)
        self._rows = self._events.rows

    def __len__(self) -> int:
        return len(self._rows)

    def __deepcopy__(self, memo: dict[int, Any]) -> MessageLog:
        return self  # the run's record, not broker state: a copy of the broker's disk shares it

    def record(self, time: float, event: str, msg_id: str, node: str, *, queue: str = "", exchange: str = "",
               routing_key: str = "", tag: int = -1, redelivered: bool = False, delivery_count: int = 0,
               attempt: int = 0, reason: str = "", x_death: str = "") -> None:
        """Append one event row; ``event`` must be one of the documented names."""
        self._rows.append((time, event, _SOURCE[event], msg_id, node, queue, exchange, routing_key, tag,
                           redelivered, delivery_count, attempt, reason, x_death))

    def sample_depth(self, time: float, queue: str, ready: int, unacked: int) -> None:
        self._depth.record(time, queue, ready, unacked)

    def rows(self, event: str | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (optionally of one event kind): handy in unit tests."""
        return [dict(zip(EVENT_COLUMNS, r)) for r in self._rows if event is None or r[1] == event]

    def to_frame(self) -> pd.DataFrame:
        """The event table, in the order events happened."""
        return self._events.frame()

    def depth_frame(self) -> pd.DataFrame:
        """Queue depth samples: ready and unacked messages per queue over time."""
        return self._depth.frame()
