"""What the broker takes beyond routing a message, per queue type (``[protocol.broker_costs]``).

The broker model settles an operation in the instant its frame arrives; the real
broker does not. A quorum queue's return, settlement and dead-lettering go through
its Raft log and a persistent publish is confirmed after the message is written,
so their effects leave the broker later. Each cost delays the frames an operation
sends, on the way out (the broker's state changes at once):

``confirm``      the ``basic.ack`` confirming a publish routed to a queue of the type (the largest
                 of the routed queues' costs; a ``basic.nack`` for a full queue is not delayed:
                 measured, it is as fast as routing)
``requeue``      a redelivery that a ``basic.nack``/``reject`` with requeue caused
``settle``       a delivery that an ack (or a nack without requeue) made room for
``dead_letter``  a delivery that a message's expiry caused (TTL; the delivering queue's type)

All default to 0 (the broker costs nothing: results are exactly those of a
model without costs); ``capsim validate rabbitmq`` measures them on the broker it
compares with and simulates with them. :mod:`sim.rabbitmq.costs` measures them on a real broker
(``experiments/broker_costs.py`` prints the tables to paste): each is an
operation's median less the median of a delivery through a classic queue, which
the calibrated network latency already stands for. On RabbitMQ 3.10.8 on the
development machine (loopback, 2 cores, loaded by other work), two runs gave:
quorum requeue 0.4 and 1.9 ms, quorum settle 0.4 and 3.8 ms, classic requeue and
settle 0 (within noise), confirm of a persistent message 1.1 ms (classic) and
0.4 ms (quorum), dead-lettering after a TTL 1.6-1.8 ms. The spread between runs
is the machine's load: measure where you compare.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Duration, fld, nonneg

__all__ = ["QueueCosts", "BrokerCosts"]


@dataclass(frozen=True, kw_only=True)
class QueueCosts:
    """The broker's costs for one queue type, in ms (see the module docstring)."""

    confirm: Duration = fld(0.0, check=nonneg)
    requeue: Duration = fld(0.0, check=nonneg)
    settle: Duration = fld(0.0, check=nonneg)
    dead_letter: Duration = fld(0.0, check=nonneg)

    @property
    def zero(self) -> bool:
        return not (self.confirm or self.requeue or self.settle or self.dead_letter)


@dataclass(frozen=True, kw_only=True)
class BrokerCosts:
    """Costs per queue type: ``[protocol.broker_costs.classic]`` and ``[protocol.broker_costs.quorum]``."""

    classic: QueueCosts = fld(QueueCosts())
    quorum: QueueCosts = fld(QueueCosts())

    @property
    def zero(self) -> bool:
        return self.classic.zero and self.quorum.zero

    def of(self, queue_type: str) -> QueueCosts:
        return self.quorum if queue_type == "quorum" else self.classic

    def delivery(self, queue_type: str, cause: str, redelivered: bool) -> float:
        """How long a delivery from a queue of ``queue_type`` waits, by what caused it."""
        c = self.of(queue_type)
        if cause == "ack":
            return c.settle
        if cause == "nack":
            return c.requeue if redelivered else c.settle
        if cause == "tick":
            return c.dead_letter
        return 0.0
