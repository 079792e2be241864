"""Declaring a scenario's topology on the broker under run-unique names, and always deleting it.

:func:`declared_topology` is a context manager: it declares the exchanges,
queues (with their x-arguments) and bindings, yields the run's
:class:`~sim.rabbitmq.names.RunNames`, and deletes every one of those names
when the block ends, however it ends (an exception, ``KeyboardInterrupt``, a
broker that is restarting: deletion is retried until ``cleanup_timeout``).
When the process dies before it can delete anything (``kill -9``), the
broker removes the names itself once the run's :class:`~sim.rabbitmq.lease.Lease`
runs out: queues carry an ``x-expires``, exchanges are auto-delete and
anchored to the run (:mod:`sim.rabbitmq.lease`); a thread renews the lease
while the block runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..messaging.topology import Topology
from .amqp import close_quietly, connect_blocking, pika_module
from .errors import AdapterError, BrokerUnreachable
from .lease import Lease, LeaseKeeper, anchor_exchange, declare_anchor
from .names import RunNames
from .settings import AmqpSettings

__all__ = ["declared_topology", "declare_topology", "delete_topology"]


def declare_topology(channel: Any, topology: Topology, names: RunNames, lease: Lease) -> None:
    """Declare the run's anchor, exchanges (each anchored at once), queues, then bindings on a blocking channel."""
    pika = pika_module()
    try:
        declare_anchor(channel, names, lease)
        for ex in topology.exchanges:
            channel.exchange_declare(names.real(ex.name), exchange_type=ex.type, durable=ex.durable, auto_delete=True)
            anchor_exchange(channel, names, names.real(ex.name))
        for q in topology.queues:
            arguments = {**names.queue_arguments(q), "x-expires": lease.expires_ms(q)}
            channel.queue_declare(names.real(q.name), durable=q.durable, arguments=arguments)
        for b in topology.bindings:
            channel.queue_bind(names.real(b.queue), names.real(b.exchange), routing_key=b.routing_key)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise AdapterError(f"the broker refused the topology: {exc.reply_code} {exc.reply_text}") from None


def delete_topology(settings: AmqpSettings, topology: Topology, names: RunNames, *,
                    cleanup_timeout: float = 30.0) -> list[str]:
    """Delete the run's queues and exchanges; returns the names that could not be deleted (normally none)."""
    pika = pika_module()
    todo = [("queue", names.real(q.name)) for q in topology.queues] + [("queue", names.anchor)]
    todo += [("exchange", names.real(ex.name)) for ex in topology.exchanges] + [("exchange", names.anchor)]
    deadline = time.monotonic() + cleanup_timeout
    while todo:
        try:
            conn = connect_blocking(settings)
        except BrokerUnreachable:
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
            continue
        try:
            channel = conn.channel()
            while todo:
                kind, name = todo[0]
                try:
                    if kind == "queue":
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:  # 404: already gone (an auto-delete exchange goes with its queues)
                        raise
                    channel = conn.channel()
                todo.pop(0)
        except (pika.exceptions.AMQPError, OSError):
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        finally:
            close_quietly(conn)
    return [name for _kind, name in todo]


@contextmanager
def declared_topology(settings: AmqpSettings, topology: Topology, names: RunNames | None = None, *,
                      label: str = "run", lease: Lease | None = None,
                      cleanup_timeout: float = 30.0) -> Iterator[RunNames]:
    """Declare ``topology`` under run-unique names for the duration of the ``with`` block.

    ``lease`` (default :class:`~sim.rabbitmq.lease.Lease`: idle 30 s, lifetime 10 min) bounds how long the
    names outlive a process killed inside the block; the block must not outlast ``lease.lifetime_ms``.
    """
    names = names or RunNames.new(label)
    lease = lease or Lease()
    conn = connect_blocking(settings)  # unreachable: nothing was declared, nothing to delete
    keeper = LeaseKeeper(settings, topology, names, lease)
    try:
        try:
            declare_topology(conn.channel(), topology, names, lease)
        finally:
            close_quietly(conn)
        keeper.start()
        yield names
    finally:
        keeper.stop()
        left = delete_topology(settings, topology, names, cleanup_timeout=cleanup_timeout)
        if left:
            print(f"capsim: warning: could not delete {', '.join(left)} on {settings.redacted_url()}; "
                  "delete them by hand", file=sys.stderr)
