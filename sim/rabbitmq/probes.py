"""Requeue-order probes: the same five-message script on the real broker and on the simulated broker.

Script (as in ``tests/test_broker_semantics.py``): publish ``m0``..``m4`` to an
empty queue; a consumer with prefetch 3 receives ``m0``, ``m1``, ``m2``; then

``nack``        it cancels its subscription and nacks ``m0`` then ``m2`` with requeue;
``connection``  it cancels its subscription, acks ``m1``, and its connection ends abruptly
                (the socket closes, as when the process crashes) with ``m0`` and ``m2`` unacked.

The order in which the queue then holds its four messages is read back (a
``*`` marks a message delivered with ``redelivered = true``). The real side
runs on a run-unique queue that is deleted afterwards; the simulated side runs
the pure :class:`~sim.messaging.broker.Broker` the simulation uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..config import build
from ..messaging.broker import Broker, Delivery, Message
from ..messaging.protocol import MessagingConfig
from ..messaging.topology import Topology
from .amqp import abort_connection, close_quietly, connect_blocking, pika_module
from .errors import AdapterError
from .lease import Lease
from .settings import AmqpSettings
from .topology import declared_topology

__all__ = ["QUEUE_KINDS", "HOWS", "MEASURED_3_10_8", "queue_kind", "sim_requeue_order", "real_requeue_order",
           "requeue_orders", "kinds_in"]

QUEUE_KINDS = ("classic", "quorum", "quorum+limit")
HOWS = ("nack", "connection")
_IDS = [f"m{i}" for i in range(5)]
_LEASE = Lease(lifetime_ms=60_000.0)  # a probe takes a second; its waits are bounded by timeout_s (10 s each)

MEASURED_3_10_8 = {
    ("classic", "nack"): "m0* m2* m3 m4",
    ("quorum", "nack"): "m3 m4 m0* m2*",
    ("quorum+limit", "nack"): "m0* m2* m3 m4",
    ("classic", "connection"): "m0* m2* m3 m4",
    ("quorum", "connection"): "m0* m2* m3 m4",
    ("quorum+limit", "connection"): "m0* m2* m3 m4",
}
"""What :func:`real_requeue_order` gives on RabbitMQ 3.10.8, for every (queue kind, how).

Classic queues put a returned message back at its original position. A quorum
queue puts a message nacked with requeue at the back when it has no delivery
limit; every other return (a nack when it has a delivery limit, a lost
connection) goes ahead of the never-delivered messages, in return order.
"""


def _queue(kind: str) -> dict[str, Any]:
    if kind not in QUEUE_KINDS:
        raise ValueError(f"queue kind must be one of {', '.join(QUEUE_KINDS)}, got {kind!r}")
    spec: dict[str, Any] = {"name": "probe", "type": "classic" if kind == "classic" else "quorum"}
    if kind == "quorum+limit":
        spec["delivery_limit"] = 5
    return spec


def queue_kind(queue_type: str, delivery_limit: int | None) -> str:
    if queue_type == "classic":
        return "classic"
    return "quorum+limit" if delivery_limit is not None else "quorum"


def kinds_in(cfg: MessagingConfig) -> list[str]:
    """The kinds of the queues a scenario's consumers consume, in first-use order."""
    out: list[str] = []
    for c in cfg.consumers:
        q = cfg.topology.queue(c.queue)
        kind = queue_kind(q.type, q.delivery_limit)
        if kind not in out:
            out.append(kind)
    return out


def _show(entries: Iterable[tuple[str, bool]]) -> str:
    return " ".join(f"{m}{'*' if r else ''}" for m, r in entries)


def sim_requeue_order(kind: str, how: str = "nack") -> str:
    """The simulated broker's order after the script (see the module docstring)."""
    topo = build(Topology, {"queues": [_queue(kind)]}, "probe")
    b = Broker(topo)
    b.open_channel("p")
    for m in _IDS:
        b.publish(0, "p", Message(m), exchange="", routing_key="probe")
    b.open_channel("c")
    tags = {e.message.msg_id: e.delivery_tag for e in b.consume(1, "c", "probe", consumer_tag="t", prefetch=3)
            if isinstance(e, Delivery)}
    if how == "nack":
        b.cancel(2, "c", "t")
        b.nack(3, "c", tags["m0"], requeue=True)
        b.nack(4, "c", tags["m2"], requeue=True)
    elif how == "connection":
        b.cancel(2, "c", "t")
        b.ack(3, "c", tags["m1"])
        b.close_channel(4, "c")
    else:
        raise ValueError(f"how must be one of {', '.join(HOWS)}, got {how!r}")
    b.open_channel("c2")
    again = [e for e in b.consume(5, "c2", "probe", consumer_tag="t2") if isinstance(e, Delivery)]
    return _show((d.message.msg_id, d.redelivered) for d in again)


def _wait(conn: Any, done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AdapterError(f"requeue probe: {what} did not happen within {timeout_s:g} s")
        conn.process_data_events(0.02)


def real_requeue_order(settings: AmqpSettings, kind: str, how: str = "nack", *, timeout_s: float = 10.0) -> str:
    """The real broker's order after the script (see the module docstring)."""
    pika = pika_module()
    if how not in HOWS:
        raise ValueError(f"how must be one of {', '.join(HOWS)}, got {how!r}")
    topo = build(Topology, {"queues": [_queue(kind)]}, "probe")
    with declared_topology(settings, topo, label=f"probe-{kind.replace('+', '-')}-{how}",
                           lease=_LEASE) as names:
        queue = names.real("probe")
        pub = connect_blocking(settings)
        cons = connect_blocking(settings)
        try:
            ch = pub.channel()
            ch.confirm_delivery()
            for m in _IDS:
                ch.basic_publish("", queue, m.encode(), pika.BasicProperties(message_id=m, delivery_mode=2))
            cch = cons.channel()
            cch.basic_qos(prefetch_count=3)
            got: dict[str, int] = {}
            tag = cch.basic_consume(queue, lambda _c, method, props, _b: got.setdefault(props.message_id,
                                                                                       method.delivery_tag))
            _wait(cons, lambda: len(got) >= 3, timeout_s, "three deliveries")
            if list(got) != _IDS[:3]:
                raise AdapterError(f"requeue probe: expected m0, m1, m2 first, got {', '.join(got)}")
            if how == "nack":
                cch.basic_cancel(tag)
                cch.basic_nack(got["m0"], requeue=True)
                cch.basic_nack(got["m2"], requeue=True)
                cons.process_data_events(0)
            else:
                cch.basic_cancel(tag)
                cch.basic_ack(got["m1"])
                cons.process_data_events(0)
                abort_connection(cons)
            _wait(pub, lambda: ch.queue_declare(queue, passive=True).method.message_count >= 4, timeout_s,
                  "the requeue")
            order: list[tuple[str, bool]] = []
            while len(order) < 5:
                method, props, _body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                order.append((props.message_id, bool(method.redelivered)))
            return _show(order)
        finally:
            close_quietly(cons)
            close_quietly(pub)


def requeue_orders(settings: AmqpSettings, kinds: Iterable[str] = QUEUE_KINDS,
                   hows: Iterable[str] = HOWS) -> pd.DataFrame:
    """Both orders for each queue kind and way of returning messages, with ``agree`` (exact)."""
    rows = []
    for kind in kinds:
        for how in hows:
            sim, real = sim_requeue_order(kind, how), real_requeue_order(settings, kind, how)
            rows.append({"quantity": f"{kind}, after {'nack' if how == 'nack' else 'connection loss'}",
                         "simulation": sim, "broker": real, "difference": None, "rule": "exact",
                         "agree": sim == real})
    return pd.DataFrame(rows, columns=["quantity", "simulation", "broker", "difference", "rule", "agree"])
