"""Pure broker features: max-length overflow, priorities, prefetch, auto-ack, confirms, returns, channel errors."""

from __future__ import annotations

import pytest

from sim.config import build
from sim.messaging.broker import Broker, ChannelClosed, Confirm, Delivery, Message, Returned
from sim.messaging.history import MessageLog
from sim.messaging.topology import Topology


def broker_with(queues, exchanges=(), bindings=(), **kw):
    topo = build(Topology, {"queues": list(queues), "exchanges": list(exchanges), "bindings": list(bindings)},
                 "topology")
    log = MessageLog()
    return Broker(topo, log=log, **kw), log


def deliveries(effects):
    return [e for e in effects if isinstance(e, Delivery)]


DLX = {"exchanges": [{"name": "dlx", "type": "fanout"}], "bindings": [{"exchange": "dlx", "queue": "dlq"}]}


def test_max_length_drop_head_dead_letters_the_oldest():
    """x-max-length 2 with drop-head: publishing 4 keeps the newest 2; the oldest go to the DLX (maxlen)."""
    b, log = broker_with([{"name": "q", "max_length": 2, "dead_letter_exchange": "dlx"}, {"name": "dlq"}], **DLX)
    b.open_channel("p")
    acks = [c.ack for i in range(4) for c in b.publish(i, "p", Message(f"m{i}"), exchange="", routing_key="q", seq=i)]
    assert acks == [True] * 4
    assert b.ready_ids("q") == ["m2", "m3"] and b.ready_ids("dlq") == ["m0", "m1"]
    assert {r["reason"] for r in log.rows("dead_letter")} == {"maxlen"}


def test_max_length_counts_ready_messages_only():
    """Unacked messages do not count towards x-max-length."""
    b, _ = broker_with([{"name": "q", "max_length": 1, "overflow": "reject-publish"}])
    b.open_channel("p")
    b.open_channel("c")
    b.consume(0, "c", "q", consumer_tag="t", prefetch=1)
    acks = [c.ack for i in range(3) for c in b.publish(1, "p", Message(f"m{i}"), exchange="", routing_key="q", seq=i)
            if isinstance(c, Confirm)]
    assert acks == [True, True, False]  # m0 unacked, m1 ready (1 = the limit), m2 refused
    assert b.depth("q") == (1, 1)


def test_reject_publish_nacks_but_other_queues_still_get_the_message():
    """reject-publish: the full queue refuses (confirm nack) while another bound queue takes the message."""
    b, log = broker_with([{"name": "small", "max_length": 1, "overflow": "reject-publish"}, {"name": "big"}],
                         exchanges=[{"name": "f", "type": "fanout"}],
                         bindings=[{"exchange": "f", "queue": "small"}, {"exchange": "f", "queue": "big"}])
    b.open_channel("p")
    confirms = [c for i in range(2) for c in b.publish(0, "p", Message(f"m{i}"), exchange="f", routing_key="", seq=i)]
    assert [c.ack for c in confirms] == [True, False]
    assert b.ready_ids("small") == ["m0"] and b.ready_ids("big") == ["m0", "m1"]
    assert [r["msg_id"] for r in log.rows("publish_rejected")] == ["m1"]


@pytest.mark.parametrize(("queue_type", "limit", "taken"), [
    ("classic", 0, 0), ("classic", 1, 1), ("classic", 3, 3), ("quorum", 0, 1), ("quorum", 1, 2), ("quorum", 3, 4)])
def test_a_full_quorum_queue_refuses_only_once_over_its_limit(queue_type, limit, taken):
    """RabbitMQ 3.10.8 (tests/test_rabbitmq_costs.py checks it on the broker): a quorum queue with
    reject-publish takes one message beyond max_length, a classic queue none."""
    b, _ = broker_with([{"name": "q", "type": queue_type, "max_length": limit, "overflow": "reject-publish"}])
    b.open_channel("p")
    acks = [c.ack for i in range(6) for c in b.publish(0, "p", Message(f"m{i}"), exchange="", routing_key="q", seq=i)]
    assert acks == [True] * taken + [False] * (6 - taken)
    assert len(b.ready_ids("q")) == taken


def test_reject_publish_dlx_dead_letters_the_refused_message():
    """reject-publish-dlx: the refused message is nacked to the publisher and dead-lettered."""
    b, _ = broker_with([{"name": "q", "max_length": 0, "overflow": "reject-publish-dlx", "dead_letter_exchange": "dlx"},
                        {"name": "dlq"}], **DLX)
    b.open_channel("p")
    (c,) = b.publish(0, "p", Message("m"), exchange="", routing_key="q", seq=1)
    assert c.ack is False and b.ready_ids("dlq") == ["m"]


def test_priority_queue_delivers_highest_priority_first_capped_at_max():
    """x-max-priority 5: higher priority first, priorities above 5 count as 5, FIFO within a priority."""
    b, _ = broker_with([{"name": "q", "max_priority": 5}])
    b.open_channel("p")
    for msg_id, prio in (("p1", 1), ("p5", 5), ("none", None), ("p9", 9), ("p1b", 1)):
        b.publish(0, "p", Message(msg_id, priority=prio), exchange="", routing_key="q")
    assert b.ready_ids("q") == ["p5", "p9", "p1", "p1b", "none"]


def test_prefetch_limits_unacked_and_consumers_share_round_robin():
    """Prefetch 1 per consumer: two consumers alternate, and a consumer gets more only after acking."""
    b, _ = broker_with([{"name": "q"}])
    b.open_channel("p")
    for i in range(4):
        b.publish(0, "p", Message(f"m{i}"), exchange="", routing_key="q")
    b.open_channel("a")
    b.open_channel("b")
    (da,) = deliveries(b.consume(1, "a", "q", consumer_tag="ta", prefetch=1))
    (db,) = deliveries(b.consume(1, "b", "q", consumer_tag="tb", prefetch=1))
    assert (da.message.msg_id, db.message.msg_id) == ("m0", "m1")
    (next_a,) = deliveries(b.ack(2, "a", da.delivery_tag))
    assert (next_a.channel, next_a.message.msg_id, next_a.delivery_tag) == ("a", "m2", 2)
    assert b.depth("q") == (1, 2)


def test_auto_ack_ignores_prefetch_and_settles_at_delivery():
    """An auto-ack consumer receives every ready message at once and none stays unacked."""
    b, log = broker_with([{"name": "q"}])
    b.open_channel("p")
    for i in range(5):
        b.publish(0, "p", Message(f"m{i}"), exchange="", routing_key="q")
    b.open_channel("c")
    assert len(deliveries(b.consume(1, "c", "q", consumer_tag="t", prefetch=1, auto_ack=True))) == 5
    assert b.depth("q") == (0, 0)
    assert [r["reason"] for r in log.rows("settle")] == ["auto_ack"] * 5


def test_mandatory_unroutable_is_returned_before_its_confirm():
    """An unroutable mandatory message: basic.return, then a confirm ack; without mandatory only the ack."""
    b, log = broker_with([{"name": "q"}], exchanges=[{"name": "d"}], bindings=[{"exchange": "d", "queue": "q",
                                                                                  "routing_key": "k"}])
    b.open_channel("p")
    effects = b.publish(0, "p", Message("m"), exchange="d", routing_key="other", mandatory=True, seq=1)
    assert [type(e) for e in effects] == [Returned, Confirm]
    assert effects[0].reply_code == 312 and effects[1].ack
    assert [type(e) for e in b.publish(0, "p", Message("n"), exchange="d", routing_key="other", seq=2)] == [Confirm]
    assert [r["msg_id"] for r in log.rows("unroutable")] == ["m", "n"]


def test_ack_multiple_and_unknown_tag_closes_the_channel():
    """ack(multiple) settles every tag up to it; acking an unknown tag closes the channel and requeues."""
    b, log = broker_with([{"name": "q"}])
    b.open_channel("p")
    for i in range(4):
        b.publish(0, "p", Message(f"m{i}"), exchange="", routing_key="q")
    b.open_channel("c")
    b.consume(1, "c", "q", consumer_tag="t", prefetch=3)
    b.ack(2, "c", 2, multiple=True)
    assert [r["msg_id"] for r in log.rows("settle")] == ["m0", "m1"]
    effects = b.ack(3, "c", 99)
    assert [(type(e), e.reply_code) for e in effects if isinstance(e, ChannelClosed)] == [(ChannelClosed, 406)]
    assert "c" not in b.channels and b.ready_ids("q") == ["m2", "m3"]


def test_consumer_timeout_closes_the_channel_of_a_slow_consumer():
    """An unacked delivery older than the consumer timeout closes its channel (PRECONDITION_FAILED)."""
    b, _ = broker_with([{"name": "q", "type": "quorum"}], consumer_timeout=1000)
    b.open_channel("p")
    b.publish(0, "p", Message("m"), exchange="", routing_key="q")
    b.open_channel("c")
    b.consume(5, "c", "q", consumer_tag="t", prefetch=1)
    assert b.next_deadline() == 1005
    assert b.tick(1004) == []
    (closed,) = b.tick(1005)
    assert closed.reply_code == 406 and b.ready_ids("q") == ["m"]


def test_zero_ttl_message_is_delivered_if_a_consumer_is_ready_else_expires():
    """TTL 0: delivered when a consumer can take it at once, otherwise expired immediately."""
    b, log = broker_with([{"name": "q", "message_ttl": 0}])
    b.open_channel("p")
    b.publish(0, "p", Message("nobody"), exchange="", routing_key="q")
    b.open_channel("c")
    b.consume(1, "c", "q", consumer_tag="t", prefetch=1)
    b.publish(2, "p", Message("taken"), exchange="", routing_key="q")
    assert [r["msg_id"] for r in log.rows("drop")] == ["nobody"]
    assert [r["msg_id"] for r in log.rows("deliver")] == ["taken"]
