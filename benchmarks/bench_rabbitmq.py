"""RabbitMQ adapter throughput and latency on the local broker.

Three measurements, each through the adapter itself (``run_rabbitmq``, one
SelectConnection per actor on one event loop, every message recorded in the
event table):

publish   one publisher sends N persistent messages as fast as it can to a durable
          classic queue with publisher confirms, pipelined (never one round trip per
          message); rate = N / (last confirm - first publish).
consume   the consumer is cut off from the broker (a partition fault) while the
          publisher fills the queue with N messages; then it consumes them with
          ``prefetch`` P and one manual ack per message, nothing to process;
          rate = N / (last ack - first receive).
latency   the calibration ping run: 100 messages at 200/s, one at a time
          (publish -> receive and publish -> confirm percentiles).
reference pika's BlockingConnection with ``confirm_delivery()``: every publish waits for
          its confirm (one round trip per message), what pipelining avoids.

Target: >= 5,000 messages/s for publish and for consume. Best of ``--repeat``.

    python benchmarks/bench_rabbitmq.py [--quick] [--messages N] [--prefetch P] [--url URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sim.rabbitmq import AmqpSettings, RunNames, declared_topology, run_rabbitmq
from sim.rabbitmq.amqp import close_quietly, connect_blocking, pika_module
from sim.rabbitmq.calibrate import calibrate
from sim.scenario import Scenario

TARGET = 5000.0


def scenario(messages: int, prefetch: int, consume: bool) -> Scenario:
    nodes = ["broker", "pub"] + (["c1"] if consume else [])
    data = {
        "name": "bench",
        "cluster": {"nodes": nodes},
        "workload": {"clients": 0},
        "protocol": {
            "name": "messaging",
            "topology": {"queues": [{"name": "bench"}]},
            "publishers": [{"node": "pub", "exchange": "", "routing_keys": ["bench"], "rate": 1e9,
                            "arrivals": "periodic", "count": messages}],
            "consumers": [{"node": "c1", "queue": "bench", "prefetch": prefetch, "processing_time": 0}]
            if consume else [],
        },
        "run": {"duration": "120s"},
    }
    if consume:  # hold the consumer off until the queue is full
        data["faults"] = {"schedule": [{"kind": "isolate", "node": "c1", "start": 0, "end": 1}]}
    return Scenario.from_dict(data)


def publish_rate(settings: AmqpSettings, messages: int) -> float:
    r = run_rabbitmq(scenario(messages, 0, consume=False), settings=settings)
    ev = r.tables["message_events"]
    assert r.verdicts["delivery"]["confirmed"] == messages, r.verdicts["delivery"].counts
    t0 = ev.loc[ev["event"] == "publish", "time"].min()
    t1 = ev.loc[ev["event"] == "confirm", "time"].max()
    return messages / ((t1 - t0) / 1000.0)


def consume_rate(settings: AmqpSettings, messages: int, prefetch: int) -> float:
    s = scenario(messages, prefetch, consume=True)
    # the partition lasts until every message is confirmed: set its end from a publish-only estimate
    s = s.variant({"faults.schedule[0].end": max(200.0, messages / 4.0)})
    r = run_rabbitmq(s, settings=settings)
    ev = r.tables["message_events"]
    assert r.verdicts["delivery"]["processed"] == messages, r.verdicts["delivery"].counts
    last_confirm = ev.loc[ev["event"] == "confirm", "time"].max()
    first = ev.loc[ev["event"] == "receive", "time"].min()
    assert first > last_confirm, "the consumer started before the queue was full; raise the partition's end"
    t1 = ev.loc[ev["event"] == "ack", "time"].max()
    return messages / ((t1 - first) / 1000.0)


def blocking_confirm_rate(settings: AmqpSettings, messages: int) -> float:
    """Publishes through BlockingConnection.confirm_delivery(): each basic_publish returns after its confirm."""
    pika = pika_module()
    topo = scenario(1, 0, consume=False).protocol.topology
    with declared_topology(settings, topo, RunNames.new("bench-blocking")) as names:
        conn = connect_blocking(settings)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2)
            t0 = time.perf_counter()
            for _ in range(messages):
                ch.basic_publish("", names.real("bench"), b"x", props)
            return messages / (time.perf_counter() - t0)
        finally:
            close_quietly(conn)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer messages, one repetition")
    p.add_argument("--messages", type=int, default=None, help="messages per throughput run (default 20000)")
    p.add_argument("--prefetch", type=int, default=200, help="consumer prefetch (default 200)")
    p.add_argument("--repeat", type=int, default=None, help="repetitions, best kept (default 3)")
    p.add_argument("--url", default=None, help="amqp:// URL (default: $CAPSIM_AMQP_URL or the local broker)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    n = args.messages or (5000 if args.quick else 20000)
    repeat = args.repeat or (1 if args.quick else 3)
    settings = AmqpSettings.resolve(args.url)
    pub = max(publish_rate(settings, n) for _ in range(repeat))
    con = max(consume_rate(settings, n, args.prefetch) for _ in range(repeat))
    blocking = blocking_confirm_rate(settings, max(500, n // 10))
    cal = calibrate(settings)
    r, c = cal.publish_to_receive, cal.publish_to_confirm
    out = {"messages": n, "prefetch": args.prefetch, "publish_per_s": pub, "consume_per_s": con,
           "blocking_confirm_publish_per_s": blocking,
           "latency_p50_ms": r["p50"], "latency_p95_ms": r["p95"], "latency_p99_ms": r["p99"],
           "confirm_p50_ms": c["p50"], "confirm_p95_ms": c["p95"], "broker": cal.broker.get("version", "?")}
    print(f"RabbitMQ {out['broker']} at {settings.redacted_url()}, {n} messages, best of {repeat}")
    print(f"  publish, pipelined confirms : {pub:8.0f} msg/s  (target >= {TARGET:.0f})")
    print(f"  consume, prefetch {args.prefetch:<4d}      : {con:8.0f} msg/s  (target >= {TARGET:.0f})")
    print(f"  reference: blocking confirms: {blocking:8.0f} msg/s  (one round trip per message)")
    print(f"  low-load latency publish->receive: p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} ms, p99 {r['p99']:.2f} ms")
    print(f"  low-load publish->confirm        : p50 {c['p50']:.2f} ms, p95 {c['p95']:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    figures = main()
    sys.exit(0 if min(figures["publish_per_s"], figures["consume_per_s"]) >= TARGET else 1)
