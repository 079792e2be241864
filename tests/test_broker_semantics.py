"""RabbitMQ 3.10 facts of DESIGN.md section 7, each checked against the pure broker state machine."""

from __future__ import annotations

import math

import pytest

from sim.config import build
from sim.messaging.broker import Broker, Delivery, Message
from sim.messaging.history import MessageLog
from sim.messaging.topology import Topology


def broker_with(queues, exchanges=(), bindings=(), **kw):
    topo = build(Topology, {"queues": list(queues), "exchanges": list(exchanges), "bindings": list(bindings)},
                 "topology")
    log = MessageLog()
    return Broker(topo, log=log, **kw), log


def publish(b, now, ids, exchange="", routing_key="q", ch="pub", **props):
    b.open_channel(ch)
    for msg_id in ids:
        b.publish(now, ch, Message(msg_id, **props), exchange=exchange, routing_key=routing_key)


def deliveries(effects):
    return [e for e in effects if isinstance(e, Delivery)]


def requeue_order(queue_spec):
    """Deliver m0..m2 of m0..m4, cancel the consumer, nack m0 then m2 with requeue; the ready order."""
    b, _ = broker_with([queue_spec])
    publish(b, 0, [f"m{i}" for i in range(5)])
    b.open_channel("c")
    tags = {d.message.msg_id: d.delivery_tag for d in deliveries(b.consume(1, "c", "q", consumer_tag="t", prefetch=3))}
    assert list(tags) == ["m0", "m1", "m2"]
    b.cancel(2, "c", "t")
    b.nack(3, "c", tags["m0"], requeue=True)
    b.nack(4, "c", tags["m2"], requeue=True)
    order = b.ready_ids("q")
    again = deliveries(b.consume(5, "c", "q", consumer_tag="t2"))
    assert [d.message.msg_id for d in again] == order
    assert [d.redelivered for d in again] == [m in ("m0", "m2") for m in order]
    return order


def test_classic_requeue_returns_to_original_position():
    """Classic queue: requeued messages go back to their original positions (m0 before m2 before m3)."""
    assert requeue_order({"name": "q", "type": "classic"}) == ["m0", "m2", "m3", "m4"]


def test_quorum_requeue_without_delivery_limit_goes_to_back():
    """Quorum queue without a delivery limit: requeued messages go to the back, in return order."""
    assert requeue_order({"name": "q", "type": "quorum"}) == ["m3", "m4", "m0", "m2"]


def test_quorum_requeue_with_delivery_limit_goes_to_head():
    """Quorum queue with a delivery limit: requeued messages go ahead of the rest, in return order."""
    assert requeue_order({"name": "q", "type": "quorum", "delivery_limit": 5}) == ["m0", "m2", "m3", "m4"]


def test_quorum_connection_loss_returns_ahead_in_return_order():
    """Quorum queue, with or without a delivery limit: messages returned by a lost connection go ahead."""
    for spec in ({"name": "q", "type": "quorum"}, {"name": "q", "type": "quorum", "delivery_limit": 5}):
        b, _ = broker_with([spec])
        publish(b, 0, [f"m{i}" for i in range(5)])
        b.open_channel("c")
        sent = deliveries(b.consume(1, "c", "q", consumer_tag="t", prefetch=3))
        tags = {d.message.msg_id: d.delivery_tag for d in sent}
        b.ack(2, "c", tags["m1"])
        b.close_channel(3, "c")
        assert b.ready_ids("q") == ["m0", "m2", "m3", "m4"], spec


def test_quorum_delivery_count_increases_on_nack_and_connection_loss():
    """Quorum delivery count: +1 on a nack with requeue and +1 when the consumer's connection drops."""
    b, log = broker_with([{"name": "q", "type": "quorum"}])
    publish(b, 0, ["m"])
    b.open_channel("c1")
    (d0,) = deliveries(b.consume(1, "c1", "q", consumer_tag="t", prefetch=1))
    assert (d0.delivery_count, d0.redelivered, d0.message.header("x-delivery-count")) == (0, False, None)
    (d1,) = deliveries(b.nack(2, "c1", d0.delivery_tag, requeue=True))  # the consumer gets it straight back
    assert (d1.delivery_count, d1.redelivered, d1.message.header("x-delivery-count")) == (1, True, 1)
    b.close_channel(3, "c1")  # the connection drops with the message unacked
    assert b.ready_ids("q") == ["m"]
    b.open_channel("c2")
    (d2,) = deliveries(b.consume(4, "c2", "q", consumer_tag="t", prefetch=1))
    assert (d2.delivery_count, d2.redelivered, d2.message.header("x-delivery-count")) == (2, True, 2)
    assert [r["reason"] for r in log.rows("requeue")] == ["nack", "connection"]


def test_classic_queue_keeps_no_delivery_count():
    """Classic queue: a requeued message comes back redelivered, but no delivery count is kept."""
    b, _ = broker_with([{"name": "q"}])
    publish(b, 0, ["m"])
    b.open_channel("c")
    (d0,) = deliveries(b.consume(1, "c", "q", consumer_tag="t", prefetch=1))
    (d1,) = deliveries(b.nack(2, "c", d0.delivery_tag, requeue=True))
    assert (d1.delivery_count, d1.redelivered, d1.message.header("x-delivery-count")) == (0, True, None)


def test_exceeding_delivery_limit_dead_letters_with_reason_delivery_limit():
    """x-delivery-limit = 2: three deliveries (counts 0, 1, 2); the third return dead-letters it."""
    b, log = broker_with(
        [{"name": "work", "type": "quorum", "delivery_limit": 2, "dead_letter_exchange": "dlx"}, {"name": "dlq"}],
        exchanges=[{"name": "dlx", "type": "fanout"}], bindings=[{"exchange": "dlx", "queue": "dlq"}])
    publish(b, 0, ["m"], routing_key="work")
    b.open_channel("c")
    counts = []
    effects = b.consume(1, "c", "work", consumer_tag="t", prefetch=1)
    for t in range(2, 10):
        ds = deliveries(effects)
        if not ds:
            break
        counts.append(ds[0].delivery_count)
        effects = b.nack(t, "c", ds[0].delivery_tag, requeue=True)
    assert counts == [0, 1, 2]
    assert b.ready_ids("work") == [] and b.ready_ids("dlq") == ["m"]
    (row,) = log.rows("dead_letter")
    assert (row["queue"], row["reason"], row["x_death"]) == ("work", "delivery_limit", "work:delivery_limit:1")


def test_x_death_lists_queue_reason_count_most_recent_first():
    """A work -> wait (TTL) -> work retry loop: x-death holds (queue, reason, count), newest first."""
    b, _ = broker_with(
        [{"name": "work", "dead_letter_exchange": "wait.ex"},
         {"name": "wait", "message_ttl": 100, "dead_letter_exchange": "work.ex"}],
        exchanges=[{"name": "work.ex"}, {"name": "wait.ex"}],
        bindings=[{"exchange": "work.ex", "queue": "work", "routing_key": "job"},
                  {"exchange": "wait.ex", "queue": "wait", "routing_key": "job"}])
    publish(b, 0, ["m"], exchange="work.ex", routing_key="job")
    b.open_channel("c")
    (d,) = deliveries(b.consume(0, "c", "work", consumer_tag="t", prefetch=1))
    seen = []
    for rejected_at in (1.0, 102.0):
        assert deliveries(b.reject(rejected_at, "c", d.delivery_tag, requeue=False)) == []
        assert b.next_deadline() == rejected_at + 100  # waits out the TTL in the wait queue
        (d,) = deliveries(b.tick(rejected_at + 100))
        seen.append([(x.queue, x.reason, x.count) for x in d.message.x_death])
    assert seen == [
        [("wait", "expired", 1), ("work", "rejected", 1)],
        [("wait", "expired", 2), ("work", "rejected", 2)],
    ]
    first = d.message.x_death[-1]
    assert (first.exchange, first.routing_keys, first.time) == ("work.ex", ("job",), 1.0)
    assert d.message.exchange == "work.ex" and d.message.routing_key == "job"


def test_ttl_wait_queue_and_dlx_give_a_delayed_retry():
    """Rejecting into a TTL wait queue brings the message back to its consumer exactly TTL ms later."""
    b, log = broker_with(
        [{"name": "work", "type": "quorum", "dead_letter_exchange": "wait.ex"},
         {"name": "wait", "message_ttl": 250, "dead_letter_exchange": "work.ex"}],
        exchanges=[{"name": "work.ex", "type": "fanout"}, {"name": "wait.ex", "type": "fanout"}],
        bindings=[{"exchange": "work.ex", "queue": "work"}, {"exchange": "wait.ex", "queue": "wait"}])
    publish(b, 0, ["m"], exchange="work.ex")
    b.open_channel("c")
    (d,) = deliveries(b.consume(10, "c", "work", consumer_tag="t", prefetch=1))
    b.reject(20, "c", d.delivery_tag, requeue=False)
    assert deliveries(b.tick(269)) == [] and b.ready_ids("wait") == ["m"]
    (again,) = deliveries(b.tick(b.next_deadline()))
    assert [r["time"] for r in log.rows("deliver")] == [10, 270]
    assert again.message.death_count("wait", "expired") == 1 and again.message.death_count("work", "rejected") == 1


def test_per_message_ttl_expires_only_at_the_head():
    """Head-of-line blocking: a 10 ms message behind a 1 s one is dead-lettered only after it, at 1 s."""
    b, log = broker_with([{"name": "q", "dead_letter_exchange": "dlx"}, {"name": "dlq"}],
                         exchanges=[{"name": "dlx", "type": "fanout"}], bindings=[{"exchange": "dlx", "queue": "dlq"}])
    b.open_channel("p")
    b.publish(0, "p", Message("long", expiration=1000), exchange="", routing_key="q")
    b.publish(0, "p", Message("short", expiration=10), exchange="", routing_key="q")
    assert b.next_deadline() == 1000
    b.tick(500)
    assert b.ready_ids("q") == ["long", "short"]  # 'short' is 490 ms past its TTL, still queued
    b.tick(1000)
    assert b.ready_ids("q") == [] and b.ready_ids("dlq") == ["long", "short"]
    assert [(r["msg_id"], r["time"], r["reason"]) for r in log.rows("dead_letter")] == [
        ("long", 1000, "expired"), ("short", 1000, "expired")]
    b.open_channel("c")
    (d, _) = deliveries(b.consume(1001, "c", "dlq", consumer_tag="t"))
    assert d.message.expiration is None and d.message.x_death[0].original_expiration == 1000


def test_dead_lettering_is_at_most_once():
    """Dead-lettered messages are dropped when the DLX routes nowhere or the target queue refuses them."""
    b, log = broker_with(
        [{"name": "a", "dead_letter_exchange": "nowhere"},
         {"name": "b", "dead_letter_exchange": "dlx"},
         {"name": "dlq", "max_length": 1, "overflow": "reject-publish"}],
        exchanges=[{"name": "nowhere", "type": "fanout"}, {"name": "dlx", "type": "fanout"}],
        bindings=[{"exchange": "dlx", "queue": "dlq"}])
    b.open_channel("p")
    confirms = b.publish(0, "p", Message("a1"), exchange="", routing_key="a", seq=1)
    for i in (1, 2):
        confirms += b.publish(0, "p", Message(f"b{i}"), exchange="", routing_key="b", seq=i + 1)
    assert [c.ack for c in confirms] == [True, True, True]  # all three were safely enqueued
    b.open_channel("c")
    for queue in ("a", "b"):
        for d in deliveries(b.consume(1, "c", queue, consumer_tag=queue)):
            b.reject(2, "c", d.delivery_tag, requeue=False)
    assert b.ready_ids("dlq") == ["b1"]
    assert [(r["msg_id"], r["reason"]) for r in log.rows("drop")] == [
        ("a1", "dead_letter_unroutable"), ("b2", "dead_letter_rejected")]


def test_automatic_dead_letter_cycle_is_dropped():
    """A queue whose expired messages dead-letter back into itself drops them (no rejection in the cycle)."""
    b, log = broker_with([{"name": "q", "message_ttl": 10, "dead_letter_exchange": "", "dead_letter_routing_key": "q"}])
    publish(b, 0, ["m"])
    b.tick(10)
    assert b.ready_ids("q") == []
    assert [r["reason"] for r in log.rows("drop")] == ["dead_letter_cycle"]


def test_classic_restart_marks_every_recovered_message_redelivered():
    """Classic durable queue after a restart: even never-delivered persistent messages come back redelivered."""
    b, _ = broker_with([{"name": "q"}])
    publish(b, 0, ["delivered", "never"])
    b.open_channel("c")
    b.consume(1, "c", "q", consumer_tag="t", prefetch=1)  # 'delivered' stays unacked
    b.crash(2)
    b.recover(3)
    b.open_channel("c2")
    got = deliveries(b.consume(4, "c2", "q", consumer_tag="t"))
    assert [(d.message.msg_id, d.redelivered) for d in got] == [("delivered", True), ("never", True)]


def classic_restart(clean):
    """A classic queue holding an unacked message, a message delivered and requeued, and one never delivered,
    through a broker restart: each message's redelivered flag on its next delivery."""
    b, _ = broker_with([{"name": "q"}])
    publish(b, 0, ["unacked", "requeued", "never"])
    b.open_channel("c")
    tags = {d.message.msg_id: d.delivery_tag for d in deliveries(b.consume(1, "c", "q", consumer_tag="t",
                                                                              prefetch=2))}
    assert list(tags) == ["unacked", "requeued"]
    b.cancel(2, "c", "t")
    b.nack(2, "c", tags["requeued"], requeue=True)
    b.crash(3, clean=clean)
    b.recover(4)
    b.open_channel("c2")
    return {d.message.msg_id: d.redelivered for d in deliveries(b.consume(5, "c2", "q", consumer_tag="t"))}


def test_classic_clean_restart_marks_only_delivered_messages_redelivered():
    """Classic durable queue after a clean restart (stop_app/start_app on RabbitMQ 3.10.8): the messages
    delivered before (unacked at the restart, or delivered and requeued) come back redelivered, the one never
    delivered does not; after a hard kill all three do."""
    assert classic_restart(clean=True) == {"unacked": True, "requeued": True, "never": False}
    assert classic_restart(clean=False) == {"unacked": True, "requeued": True, "never": True}


def test_a_hard_kill_after_a_clean_restart_still_marks_what_it_recovered():
    """A message recovered by a hard kill stays marked redelivered through a later clean restart."""
    b, _ = broker_with([{"name": "q"}])
    publish(b, 0, ["m"])
    b.crash(1)
    b.recover(2)
    b.crash(3, clean=True)
    b.recover(4)
    b.open_channel("c")
    assert [d.redelivered for d in deliveries(b.consume(5, "c", "q", consumer_tag="t"))] == [True]


@pytest.mark.parametrize("clean", [False, True])
def test_quorum_restart_keeps_redelivered_for_returned_messages_only(clean):
    """Quorum queue after a restart, hard kill or clean: the unacked message returns ahead, as after a lost
    connection (count 1, redelivered); the other is fresh."""
    b, _ = broker_with([{"name": "q", "type": "quorum"}])
    publish(b, 0, ["delivered", "never"])
    b.open_channel("c")
    b.consume(1, "c", "q", consumer_tag="t", prefetch=1)
    b.crash(2, clean=clean)
    b.recover(3)
    b.open_channel("c2")
    got = deliveries(b.consume(4, "c2", "q", consumer_tag="t"))
    assert [(d.message.msg_id, d.redelivered, d.delivery_count) for d in got] == [
        ("delivered", True, 1), ("never", False, 0)]


@pytest.mark.parametrize("clean", [False, True])
def test_transient_messages_lost_on_classic_restart_kept_on_quorum(clean):
    """A restart, hard kill or clean, loses transient messages of a durable classic queue, keeps them on a
    quorum queue, and empties a non-durable queue."""
    b, log = broker_with([{"name": "classic"}, {"name": "quorum", "type": "quorum"},
                          {"name": "temp", "durable": False}])
    for q in ("classic", "quorum", "temp"):
        publish(b, 0, [f"{q}-persistent"], routing_key=q)
        publish(b, 0, [f"{q}-transient"], routing_key=q, persistent=False)
    b.crash(1, clean=clean)
    b.recover(2)
    assert b.ready_ids("classic") == ["classic-persistent"]
    assert b.ready_ids("quorum") == ["quorum-persistent", "quorum-transient"]
    assert b.ready_ids("temp") == []
    assert sorted(r["msg_id"] for r in log.rows("lost")) == ["classic-transient", "temp-persistent", "temp-transient"]
    assert math.isinf(b.next_deadline())
