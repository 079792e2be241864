"""Known, documented differences between the model and RabbitMQ 3.10, recognised in a comparison.

A known difference is one the project has measured, explained and decided
to keep in the model; the comparison reports it as such ("known difference:
...", with its reason) instead of as a disagreement, but only for the rows
and messages it accounts for *exactly*: any further difference in the same
rows is still reported as one.

There is one:

**The redelivered flag after a clean broker restart.** After a clean restart
(``stop_app`` / ``start_app``, which is how the adapter restarts a broker:
:mod:`sim.rabbitmq.node`) RabbitMQ 3.10.8 marks only the messages of a
classic queue that had been delivered before the restart as redelivered. The
model's broker crash (:meth:`sim.messaging.broker.Broker.crash`) marks every
message a classic queue recovers, which is what RabbitMQ does after a killed
node, where it cannot know which messages were delivered. The messages it
explains: on a classic queue, never received before the broker went down
(in either run), whose deliveries differ only in flags the simulation sets
and the broker does not. ``tests/test_rabbitmq_restart.py`` keeps the flag
comparison as a strict expected failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..checkers.delivery import DeliveryReport
from ..messaging.protocol import messaging_config
from ..result import Result

__all__ = ["KnownDifference", "known_differences", "RESTART_REDELIVERED"]

RESTART_REDELIVERED = "redelivered flag after a clean broker restart"
_RESTART_REASON = ("RabbitMQ 3.10 marks only classic-queue messages it had delivered before a clean restart "
                   "(stop_app/start_app) as redelivered; the model's broker crash marks every recovered message, as "
                   "RabbitMQ does after a killed node (sim.messaging.broker.Broker.crash; "
                   "tests/test_rabbitmq_restart.py)")


@dataclass(frozen=True)
class KnownDifference:
    """A documented model difference: which comparison rows and messages it accounts for, and why."""

    name: str
    reason: str
    rows: tuple[str, ...]
    messages: tuple[str, ...]

    def describe(self) -> str:
        ids = ", ".join(self.messages[:8]) + (f" and {len(self.messages) - 8} more" if len(self.messages) > 8 else "")
        rows = ", ".join(self.rows)
        return f"known difference: {self.name} ({rows}; {len(self.messages)} messages: {ids}): {self.reason}"


def _broker_down_at(result: Result) -> float | None:
    """When the run's broker first went down: ``broker_down`` on a real broker, ``crash`` in the simulation."""
    broker = messaging_config(result.scenario).broker
    ne = result.node_events
    down = ne[(ne["node"] == broker) & ne["event"].isin(("broker_down", "crash"))]
    return float(down["time"].min()) if not down.empty else None


def _received_before(result: Result, t: float) -> set[str]:
    ev = result.tables["message_events"]
    return set(ev.loc[(ev["event"] == "receive") & (ev["time"] < t), "msg_id"])


def _flag_only(sim: str, real: str) -> int:
    """How many deliveries the simulation flags redelivered and the broker does not, if that is all that differs
    (else -1)."""
    a, b = str(sim).split(), str(real).split()
    if len(a) != len(b):
        return -1
    extra = 0
    for x, y in zip(a, b):
        if x == y:
            continue
        if x != y + "r":
            return -1
        extra += 1
    return extra


def restart_redelivered(sim: Result, real: Result, messages: pd.DataFrame) -> tuple[KnownDifference, int] | None:
    """The messages the clean-restart redelivered flag explains, and how many flags (module docstring)."""
    t_real, t_sim = _broker_down_at(real), _broker_down_at(sim)
    if t_real is None or t_sim is None:
        return None
    cfg = messaging_config(real.scenario)
    classic = {q.name for q in cfg.topology.queues if not q.is_quorum}
    ev = real.tables["message_events"]
    queue_of = ev[ev["event"] == "receive"].groupby("msg_id")["queue"].first()
    early = _received_before(real, t_real) | _received_before(sim, t_sim)
    explained, flags = [], 0
    for msg_id, row in messages[~messages["deliveries_agree"]].iterrows():
        extra = _flag_only(row["deliveries_sim"], row["deliveries_real"])
        if extra > 0 and msg_id not in early and queue_of.get(msg_id) in classic:
            explained.append(str(msg_id))
            flags += extra
    if not explained:
        return None
    return KnownDifference(RESTART_REDELIVERED, _RESTART_REASON, (), tuple(explained)), flags


def _redeliveries(result: Result) -> int:
    report = result.verdicts["delivery"]
    return int(report["redeliveries"]) if isinstance(report, DeliveryReport) else 0


def known_differences(sim: Result, real: Result, messages: pd.DataFrame) -> list[KnownDifference]:
    """The known differences between ``sim`` and ``real``, each naming the count rows it accounts for exactly
    (``messages``: the comparison's per-message table)."""
    found = restart_redelivered(sim, real, messages)
    if found is None:
        return []
    known, flags = found
    rows = []
    if _redeliveries(sim) - flags == _redeliveries(real):
        rows.append("redelivered")
    unexplained = int((~messages["deliveries_agree"]).sum()) - len(known.messages)
    if unexplained == 0:
        rows.append("messages with the same deliveries")
    return [KnownDifference(known.name, known.reason, tuple(rows), known.messages)]
