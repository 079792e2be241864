"""Cost probes: how long the real broker takes for the operations whose latency changes outcomes.

Each probe runs a tiny script on run-unique queues (deleted afterwards) and
times one operation, ``repeats`` times, from the client's side, with
``time.perf_counter``:

``deliver``            publish (no confirm) -> the idle consumer's callback: two hops and routing,
                       the baseline every other two-hop probe is compared with
``requeue``            ``basic.nack(requeue)`` -> the same message redelivered to the same consumer
                       (prefetch 1): a return; on a quorum queue it goes through the queue's Raft log
``settle``             ``basic.ack`` -> the next message delivered (prefetch 1, the queue holds more)
``confirm``            a persistent publish -> its confirm, one queue
``confirm_fanout``     the same through a fanout exchange to three queues of the type
``confirm_rejecting``  a fanout to one queue of the type and one full ``reject-publish`` classic
                       queue -> the ``basic.nack``
``overflow_nack``      a publish to a full ``reject-publish`` queue of the type -> its ``basic.nack``
``ttl_dead_letter``    publish to a queue with a 50 ms message TTL and a dead-letter exchange ->
                       delivery from the dead-letter queue, less the 50 ms: how late expiry and
                       dead-lettering are

for both queue types (classic, quorum). :func:`cost_table` gives the median and
95th percentile of each, and ``extra``: the median less the median of ``deliver``
on a classic queue. That baseline is what the simulation's calibrated network
already stands for (two hops and routing, :mod:`sim.rabbitmq.calibrate` pings
through a classic queue), so ``extra`` is what the broker model must add
(:mod:`sim.messaging.costs`): every probe above is two hops, or a round trip, or
(``ttl_dead_letter``) two hops after the expiry. The figures depend on the
machine (disk, load) and vary from run to run on a loaded one: run the probes
where the model will be compared (``experiments/broker_costs.py``).
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..config import build
from ..messaging.topology import Topology
from .amqp import close_quietly, connect_blocking, pika_module
from .errors import AdapterError
from .lease import Lease
from .settings import AmqpSettings
from .topology import declared_topology

__all__ = ["COSTS", "QUEUE_TYPES", "TTL_MS", "MODEL_COSTS", "measure_costs", "cost_table", "fill_until_nack",
           "toml_costs", "model_costs"]

COSTS = ("deliver", "requeue", "settle", "confirm", "confirm_fanout", "confirm_rejecting", "overflow_nack",
         "ttl_dead_letter")
QUEUE_TYPES = ("classic", "quorum")
TTL_MS = 50.0
#: the probes whose ``extra`` the model's costs (sim.messaging.costs) take
MODEL_COSTS = ("confirm", "requeue", "settle", "ttl_dead_letter")
_LEASE = Lease(lifetime_ms=120_000.0)


def _now_ms() -> float:
    return time.perf_counter() * 1000.0


def _wait(conn: Any, done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AdapterError(f"cost probe: {what} did not happen within {timeout_s:g} s")
        conn.process_data_events(0.001)


def _wait_more(conn: Any, got: list[Any], n: int, timeout_s: float, what: str) -> None:
    """Wait until ``got`` holds more than ``n`` entries."""
    _wait(conn, lambda: len(got) > n, timeout_s, what)


def _topology(cost: str, qtype: str) -> Topology:
    q: dict[str, Any] = {"name": "q", "type": qtype}
    queues: list[dict[str, Any]] = [q]
    exchanges: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    if cost == "confirm_fanout":
        exchanges = [{"name": "fan", "type": "fanout"}]
        queues = [{"name": f"q{i}", "type": qtype} for i in range(3)]
        bindings = [{"exchange": "fan", "queue": f"q{i}"} for i in range(3)]
    elif cost == "confirm_rejecting":
        exchanges = [{"name": "fan", "type": "fanout"}]
        queues = [q, {"name": "full", "type": "classic", "max_length": 0, "overflow": "reject-publish"}]
        bindings = [{"exchange": "fan", "queue": "q"}, {"exchange": "fan", "queue": "full"}]
    elif cost == "overflow_nack":
        q.update(max_length=1, overflow="reject-publish")
    elif cost == "ttl_dead_letter":
        exchanges = [{"name": "dlx", "type": "fanout"}]
        q.update(message_ttl=TTL_MS, dead_letter_exchange="dlx")
        queues = [q, {"name": "dead", "type": qtype}]
        bindings = [{"exchange": "dlx", "queue": "dead"}]
    return build(Topology, {"exchanges": exchanges, "queues": queues, "bindings": bindings}, "probe")


def fill_until_nack(ch: Any, exchange: str, key: str, props: Any, pika: Any, most: int = 20) -> int:
    """Publish until the broker nacks; how many it took. A classic queue of max-length 1 takes one; a
    quorum queue judges its length after the enqueue, so it takes one more than its limit."""
    for taken in range(most):
        try:
            ch.basic_publish(exchange, key, b"fill", props)
        except pika.exceptions.NackError:
            return taken
    raise AdapterError(f"cost probe overflow_nack: the broker confirmed {most} publishes to a full queue")


def _probe(settings: AmqpSettings, cost: str, qtype: str, repeats: int, timeout_s: float) -> list[float]:
    pika = pika_module()
    persistent = pika.BasicProperties(delivery_mode=2)
    samples: list[float] = []
    with declared_topology(settings, _topology(cost, qtype), label=f"cost-{cost}-{qtype}", lease=_LEASE) as names:
        q = names.real("q")
        pub = connect_blocking(settings)
        cons = connect_blocking(settings)
        try:
            ch = pub.channel()
            cch = cons.channel()
            cch.basic_qos(prefetch_count=1)
            got: list[tuple[float, int, bool]] = []  # (time, delivery tag, redelivered)

            def on_message(_c: Any, method: Any, _props: Any, _body: bytes) -> None:
                got.append((_now_ms(), method.delivery_tag, bool(method.redelivered)))

            if cost == "deliver":
                cch.basic_consume(q, on_message)
                for _ in range(repeats):
                    n = len(got)
                    sent = _now_ms()
                    ch.basic_publish("", q, b"x", persistent)
                    _wait_more(cons, got, n, timeout_s, "a delivery")
                    samples.append(got[-1][0] - sent)
                    cch.basic_ack(got[-1][1])
            elif cost == "requeue":
                ch.basic_publish("", q, b"x", persistent)
                cch.basic_consume(q, on_message)
                _wait(cons, lambda: len(got) > 0, timeout_s, "the first delivery")
                for _ in range(repeats):
                    n = len(got)
                    sent = _now_ms()
                    cch.basic_nack(got[-1][1], requeue=True)
                    _wait_more(cons, got, n, timeout_s, "a redelivery")
                    samples.append(got[-1][0] - sent)
                cch.basic_ack(got[-1][1])
            elif cost == "settle":
                ch.confirm_delivery()
                for _ in range(repeats + 1):
                    ch.basic_publish("", q, b"x", persistent)
                cch.basic_consume(q, on_message)
                _wait(cons, lambda: len(got) > 0, timeout_s, "the first delivery")
                for _ in range(repeats):
                    n = len(got)
                    sent = _now_ms()
                    cch.basic_ack(got[-1][1])
                    _wait_more(cons, got, n, timeout_s, "the next delivery")
                    samples.append(got[-1][0] - sent)
                cch.basic_ack(got[-1][1])
            elif cost in ("confirm", "confirm_fanout", "confirm_rejecting", "overflow_nack"):
                ch.confirm_delivery()
                exchange, key = ("", q) if cost in ("confirm", "overflow_nack") else (names.real("fan"), "")
                purge = [names.real(f"q{i}") for i in range(3)] if cost == "confirm_fanout" else [q]
                if cost == "overflow_nack":
                    purge = []
                    fill_until_nack(ch, exchange, key, persistent, pika)
                for _ in range(repeats):
                    sent = _now_ms()
                    try:
                        ch.basic_publish(exchange, key, b"x", persistent)
                        nacked = False
                    except pika.exceptions.NackError:
                        nacked = True
                    took = _now_ms() - sent
                    if nacked != (cost in ("confirm_rejecting", "overflow_nack")):
                        raise AdapterError(f"cost probe {cost} on a {qtype} queue: the broker "
                                           f"{'nacked' if nacked else 'confirmed'} the publish")
                    samples.append(took)
                    for name in purge:
                        ch.queue_purge(name)
            elif cost == "ttl_dead_letter":
                cch.basic_consume(names.real("dead"), on_message)
                for _ in range(repeats):
                    n = len(got)
                    sent = _now_ms()
                    ch.basic_publish("", q, b"x", persistent)
                    _wait_more(cons, got, n, timeout_s, "a dead-lettered delivery")
                    samples.append(got[-1][0] - sent - TTL_MS)
                    cch.basic_ack(got[-1][1])
            else:
                raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
        finally:
            close_quietly(cons)
            close_quietly(pub)
    return samples


def measure_costs(settings: AmqpSettings, *, repeats: int = 50, costs: Iterable[str] = COSTS,
                  queue_types: Iterable[str] = QUEUE_TYPES, warmup: int = 3, timeout_s: float = 10.0) -> pd.DataFrame:
    """One row per timed operation: ``cost``, ``queue_type``, ``sample`` (index) and ``ms``.

    The first ``warmup`` operations of each probe (a new queue and connection are slower) are
    left out.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 10_000:
        raise ValueError(f"repeats must be an integer in [1, 10000], got {repeats!r}")
    rows = []
    for cost in costs:
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
        for qtype in queue_types:
            if qtype not in QUEUE_TYPES:
                raise ValueError(f"queue type must be one of {', '.join(QUEUE_TYPES)}, got {qtype!r}")
            for i, ms in enumerate(_probe(settings, cost, qtype, repeats + warmup, timeout_s)[warmup:]):
                rows.append({"cost": cost, "queue_type": qtype, "sample": i, "ms": ms})
    return pd.DataFrame(rows, columns=["cost", "queue_type", "sample", "ms"])


def cost_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Per (cost, queue type): n, p50, p95 and mean in ms, and ``extra`` over its baseline (module docstring)."""
    g = samples.groupby(["cost", "queue_type"], sort=False)["ms"]
    table = pd.DataFrame({"n": g.size(), "p50": g.median(), "p95": g.quantile(0.95), "mean": g.mean()}).reset_index()
    base = table[(table["cost"] == "deliver") & (table["queue_type"] == "classic")]["p50"]
    baseline = float(base.iloc[0]) if len(base) else np.nan

    def extra(row: pd.Series) -> float:
        return np.nan if row["cost"] == "deliver" and row["queue_type"] == "classic" else float(row["p50"]) - baseline

    table["extra"] = table.apply(extra, axis=1) if len(table) else pd.Series(dtype=float)
    return table


def toml_costs(table: pd.DataFrame) -> str:
    """The ``[protocol.broker_costs]`` tables a cost table suggests (medians over the baseline, at least 0)."""
    extra = {(c, q): x for c, q, x in zip(table["cost"], table["queue_type"], table["extra"])}
    names = {"confirm": "confirm", "requeue": "requeue", "settle": "settle", "ttl_dead_letter": "dead_letter"}
    lines = []
    for qtype in QUEUE_TYPES:
        lines.append(f"[protocol.broker_costs.{qtype}]")
        for cost, name in names.items():
            x = extra.get((cost, qtype), np.nan)
            if not np.isnan(x):
                lines.append(f'{name} = "{max(x, 0.0):.2f}ms"')
        lines.append("")
    return "\n".join(lines)


def model_costs(settings: AmqpSettings, queue_types: Iterable[str], *, repeats: int = 15) -> tuple[dict, pd.DataFrame]:
    """Measure what the model needs for ``queue_types``: the ``[protocol.broker_costs]`` table and the cost table.

    Runs the classic ``deliver`` baseline and :data:`MODEL_COSTS` for each type (about a second at 15 repeats).
    """
    samples = pd.concat([measure_costs(settings, repeats=repeats, costs=["deliver"], queue_types=["classic"]),
                         measure_costs(settings, repeats=repeats, costs=MODEL_COSTS, queue_types=queue_types)],
                        ignore_index=True)
    table = cost_table(samples)
    return tomllib.loads(toml_costs(table))["protocol"]["broker_costs"], table
