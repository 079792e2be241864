"""How a run's queues and exchanges leave the broker when the run dies without cleaning up (``kill -9``).

:func:`~sim.rabbitmq.topology.declared_topology` deletes what a run declared
when the run ends, however it ends, as long as the process lives. A process
killed with ``SIGKILL`` (or a machine that dies) cannot; the broker itself
then removes the run's names, through mechanisms measured on RabbitMQ 3.10.8
(tests/test_rabbitmq_adapter.py kills a run to check them):

* a **classic queue** with ``x-expires`` is deleted once it has had no
  consumer, no ``queue.declare`` (passive or not), no ``basic.get`` and no
  binding change for that long, messages or not (publishing into it does not
  count); deleted 0.5-1 s after the expiry here;
* a **quorum queue** honours ``x-expires`` too, but a ``queue.declare``
  (passive or not) does not renew it: only a consumer or a ``basic.get``
  does, and both would take messages the run must not touch. Its expiry is
  checked on the queue's tick, every 5 s, so it goes up to about 6 s after
  the expiry;
* **exchanges** have no expiry. An auto-delete exchange is deleted when its
  last binding goes, including when the bound queue expires, and the
  deletion cascades along exchange-to-exchange bindings; an auto-delete
  exchange that never had a binding stays forever.

So a run holds a :class:`Lease`: every classic queue has ``x-expires =
idle_ms`` and a :class:`LeaseKeeper` thread renews it (passive declares) while
the run lives; every quorum queue has ``x-expires = lifetime_ms + idle_ms``
and the run never lasts longer than ``lifetime_ms`` (the runner stops it
before); every exchange is auto-delete and bound to the run's *anchor*, a
headers exchange bound to a classic queue with ``x-expires = idle_ms``, both
named :attr:`~sim.rabbitmq.names.RunNames.anchor` (the run's prefix). The anchor binding never
matches a message (it asks for a header no message carries), so routing,
``mandatory`` returns and confirms are those of the scenario; it keeps an
exchange alive while the run lives even when no queue is bound to it (or a
broker restart dropped its non-durable queues), and lets it go once the
anchor queue has expired. Nothing of this changes what a live run sees.

After a kill, classic queues and the anchor are gone about ``idle_ms``
later, quorum queues ``lifetime_ms + idle_ms`` (+ up to 6 s) after the run was
declared, and each exchange with the last of its queues. One gap remains: a
kill between declaring an exchange and binding it to the anchor (one round
trip) leaves that exchange behind.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from ..messaging.topology import QueueSpec, Topology
from .amqp import close_quietly, connect_blocking, pika_module
from .errors import AdapterError
from .names import RunNames
from .settings import AmqpSettings

__all__ = ["Lease", "LeaseKeeper", "declare_anchor", "anchor_exchange", "ANCHOR_HEADER", "DEFAULT_IDLE_MS",
           "RUN_GUARD_MS"]

ANCHOR_HEADER = "capsim-lease"
DEFAULT_IDLE_MS = 30_000.0
RUN_GUARD_MS = 180_000.0  # how much longer than its scenario's end a run may last (a slow broker restart)


@dataclass(frozen=True)
class Lease:
    """How long a run's names outlive it: ``idle_ms`` after its last renewal, quorum queues after ``lifetime_ms``.

    ``lifetime_ms`` is the longest the run may last from the moment its
    topology is declared; the runner stops a run that reaches it.
    """

    idle_ms: float = DEFAULT_IDLE_MS
    lifetime_ms: float = 600_000.0

    def __post_init__(self) -> None:
        for name in ("idle_ms", "lifetime_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 1.0):
                raise ValueError(f"Lease.{name} must be a finite number of ms >= 1, got {value!r}")

    @classmethod
    def for_run(cls, end_time_ms: float, idle_ms: float = DEFAULT_IDLE_MS) -> Lease:
        """The lease of a run that ends at ``end_time_ms``: its end plus :data:`RUN_GUARD_MS`."""
        return cls(idle_ms=idle_ms, lifetime_ms=end_time_ms + RUN_GUARD_MS)

    def expires_ms(self, spec: QueueSpec) -> int:
        """The queue's ``x-expires``: a quorum queue cannot be renewed, so it lasts the whole lifetime."""
        return int(math.ceil(self.idle_ms + (self.lifetime_ms if spec.is_quorum else 0.0)))

    @property
    def renew_every_s(self) -> float:
        """Renewals come four times per idle period: one late or lost renewal does not expire a queue."""
        return self.idle_ms / 4000.0


def declare_anchor(channel: Any, names: RunNames, lease: Lease) -> None:
    """Declare the run's anchor: a classic queue with ``x-expires = idle_ms`` and an auto-delete headers
    exchange bound to it by a binding no message matches."""
    anchor = names.anchor
    channel.queue_declare(anchor, durable=True, arguments={"x-queue-type": "classic",
                                                           "x-expires": int(math.ceil(lease.idle_ms))})
    channel.exchange_declare(anchor, exchange_type="headers", durable=True, auto_delete=True)
    channel.queue_bind(anchor, anchor, arguments={"x-match": "all", ANCHOR_HEADER: anchor})


def anchor_exchange(channel: Any, names: RunNames, exchange: str) -> None:
    """Bind run exchange ``exchange`` (a broker name) to the anchor exchange, which routes nothing on."""
    channel.exchange_bind(destination=names.anchor, source=exchange, routing_key=names.anchor)


class LeaseKeeper:
    """A thread renewing the expiry of a run's classic queues and anchor until :meth:`stop`.

    It has its own connection (heartbeats off: it is idle between renewals)
    and survives broker restarts: a failed renewal is retried at the next
    period, a queue a restart deleted (non-durable) is skipped until the run
    declares it again.
    """

    def __init__(self, settings: AmqpSettings, topology: Topology, names: RunNames, lease: Lease) -> None:
        self.settings = settings
        self.queues = [names.real(q.name) for q in topology.queues if not q.is_quorum] + [names.anchor]
        self.lease = lease
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"capsim-lease-{names.anchor}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(max(5.0, 2 * self.settings.connection_timeout))

    def _work(self) -> None:
        conn: Any = None
        try:
            while not self._stop.wait(self.lease.renew_every_s):
                conn = self._renew(conn)
        finally:
            close_quietly(conn)

    def _renew(self, conn: Any) -> Any:
        """Passive-declare every renewable queue; returns the connection to reuse (None after a failure)."""
        pika = pika_module()
        try:
            if conn is None or not conn.is_open:
                conn = connect_blocking(self.settings, heartbeat=0)
            channel = conn.channel()
            for queue in self.queues:
                try:
                    channel.queue_declare(queue, passive=True)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = conn.channel()  # gone (a restart dropped a non-durable queue): the run declares it again
            close_quietly(channel)
            self.renewals += 1
            return conn
        except (AdapterError, pika.exceptions.AMQPError, OSError):
            close_quietly(conn)
            return None
