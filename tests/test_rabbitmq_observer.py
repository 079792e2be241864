"""The adapter's idle probe (sim/rabbitmq/observer.py): a queue is empty only when nothing is ready, the broker
counts exactly the consumers the run has on it, and the answer was not slow enough to be a timed-out quorum query.

Without a broker: the decision rejects the answer a quorum queue gives while a crashed consumer's deliveries are
still checked out to it (0 ready, the dead consumer counted). With the local broker (marked ``rabbitmq``): that
answer really occurs, and the broker reports the return of the deliveries and the consumer's removal together, never
0 ready with the consumer gone while the deliveries are still out.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from sim.rabbitmq.observer import SLOW_ANSWER_MS, probe_says_empty


def test_a_queue_whose_crashed_consumer_the_broker_still_counts_is_not_empty():
    """0 ready with one consumer counted where the run has none: its deliveries are still out, not empty. The same
    answer with the consumer live is empty; anything ready is not; without the consumer check (None) the old rule."""
    none_now = {"w0": 0, "w1": 1}.__getitem__
    assert not probe_says_empty({"w0": (0, 1, 1.0), "w1": (0, 1, 1.0)}, none_now)  # the crashed consumer of w0
    assert probe_says_empty({"w0": (0, 0, 1.0), "w1": (0, 1, 1.0)}, none_now)
    assert not probe_says_empty({"w0": (3, 0, 1.0), "w1": (0, 1, 1.0)}, none_now)
    # a consume the broker has not seen yet
    assert not probe_says_empty({"w0": (0, 0, 1.0), "w1": (0, 0, 1.0)}, none_now)
    assert probe_says_empty({"w0": (0, 1, 1.0)}, None)
    assert probe_says_empty({}, none_now)


def test_a_timed_out_quorum_queue_answer_is_not_empty():
    """A quorum queue that does not answer the broker's query in 250 ms reports 0 ready and 0 consumers: with its two
    consumers connected (the generated scenario 263's w0, 9 messages in it) that is not empty; nor is any answer that
    took 250 ms or more, even where no consumer is expected (a TTL wait queue)."""
    two = {"w0": 2, "wait": 0}.__getitem__
    assert not probe_says_empty({"w0": (0, 0, 260.0), "wait": (0, 0, 1.0)}, two)
    assert not probe_says_empty({"w0": (0, 0, 5.0), "wait": (0, 0, 1.0)}, two)  # fast, but the consumers are missing
    assert not probe_says_empty({"w0": (0, 2, 5.0), "wait": (0, 0, SLOW_ANSWER_MS)}, two)
    assert probe_says_empty({"w0": (0, 2, 5.0), "wait": (0, 0, 1.0)}, two)


@pytest.mark.rabbitmq
def test_broker_a_crashed_quorum_consumer_is_counted_until_its_deliveries_return(rabbitmq):
    """A consumer with prefetch 20 takes all 10 messages of a quorum queue, then its socket is closed abruptly.
    Polled from another connection, the queue may answer (0 ready, 1 consumer) for a moment (in 3 of 5 trials once)
    before it answers (10 ready, 0 consumers): never 0 ready with no consumer, the answer the probe would take for an
    empty queue (RabbitMQ 3.10.8)."""
    import pika

    from sim.rabbitmq.amqp import connect_blocking

    observer = connect_blocking(rabbitmq)
    answers: set[tuple[int, int]] = set()
    try:
        och = observer.channel()
        for _ in range(4):
            q = f"capsim-test-probe-{uuid.uuid4().hex[:8]}"
            och.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum", "x-expires": 60_000})
            for i in range(10):
                och.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
            conn = connect_blocking(rabbitmq)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=20)
            got: list[int] = []
            ch.basic_consume(q, lambda _c, m, _p, _b, got=got: got.append(m.delivery_tag))
            deadline = time.monotonic() + 5
            while len(got) < 10 and time.monotonic() < deadline:
                conn.process_data_events(0.01)
            assert len(got) == 10
            sock = conn._impl._transport._sock  # the crash: the socket goes, no connection.close
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                f = och.queue_declare(q, passive=True).method
                answers.add((f.message_count, f.consumer_count))
                if (f.message_count, f.consumer_count) == (10, 0):
                    break
            och.queue_delete(q)
    finally:
        observer.close()
    assert (10, 0) in answers
    assert answers <= {(0, 1), (10, 0)}, answers
