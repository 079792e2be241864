"""The consuming application's core alone: events in, effects and recorded events out, no world and no broker."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sim.messaging.consumer_core as core_module
from sim.config import build
from sim.messaging.consumer_core import (
    Ack,
    CallDownstream,
    ConsumerCore,
    ConsumerCoreError,
    CrashProcess,
    Delivered,
    Nack,
    PublishCopy,
    RetryDelay,
    StartProcessing,
    copy_headers,
)
from sim.messaging.history import MessageLog
from sim.messaging.idempotency import DedupStore
from sim.messaging.protocol import ConsumerSpec
from sim.messaging.retry import decision_uniform
from sim.messaging.topology import Topology

SEED = 11
CONN = "c1#1"


class Numbers:
    """Processing starts per message id, as the run's shared counter gives them."""

    def __init__(self) -> None:
        self.n: dict[str, int] = {}

    def next_delivery_number(self, msg_id: str) -> int:
        self.n[msg_id] = self.n.get(msg_id, 0) + 1
        return self.n[msg_id]


def make(queue: dict | None = None, shared: DedupStore | None = None,
         **spec: object) -> tuple[ConsumerCore[tuple, str], MessageLog]:
    """A connected core consuming queue ``q`` (classic unless ``queue`` says otherwise); work takes 5 ms."""
    topo = build(Topology, {"queues": [{"name": "q", **(queue or {})}]}, "topology")
    cs = build(ConsumerSpec, {"node": "c1", "queue": "q", **spec}, "consumer")
    log = MessageLog()
    store = shared if shared is not None else DedupStore()
    c: ConsumerCore[tuple, str] = ConsumerCore(cs, topo, node="c1", seed=SEED, work=lambda: 5.0, shared_store=store,
                                               deliveries=Numbers(), log=log)
    c.connected(CONN)
    return c, log


def delivery(tag: int, msg_id: str = "m1", conn: str = CONN, delivery_count: int = 0, retry_count: int = 0,
             deaths: tuple = (), headers: tuple = ()) -> Delivered:
    return Delivered(conn, tag, msg_id, "ex", "key", tag > 1, delivery_count, retry_count, deaths, headers)


def only(effects, kind):
    (e,) = [e for e in effects if isinstance(e, kind)]
    return e


def events(log: MessageLog) -> list[tuple[str, str, int, str]]:
    return [(r["event"], r["msg_id"], r["attempt"], r["reason"]) for r in log.rows()]


def run_attempt(c: ConsumerCore, d: Delivered, now: float = 0.0) -> list:
    """Deliver ``d`` and let its processing finish; the effects of the finish."""
    start = only(c.deliver(now, d), StartProcessing)
    return c.processed(now + start.duration, start.held)


# -- success, failure, the retry policy ---------------------------------------------------------------
def test_success_records_the_effect_then_acks_on_the_delivery_connection():
    """A successful attempt records receive, process, side_effect and ack, and acks its own tag."""
    c, log = make()
    assert run_attempt(c, delivery(7)) == [Ack(CONN, 7)]
    assert [e[0] for e in events(log)] == ["receive", "process", "side_effect", "ack"]
    assert c.idle


def test_max_attempts_exhausted_rejects_without_requeue():
    """Under requeue with max_attempts 3 the third failed attempt is rejected (no requeue) to the queue's DLX."""
    c, log = make(queue={"type": "quorum"}, failure_probability=1.0, retry={"mode": "requeue", "max_attempts": 3})
    assert run_attempt(c, delivery(1, delivery_count=1)) == [Nack(CONN, 1, True)]
    assert run_attempt(c, delivery(2, delivery_count=2)) == [Nack(CONN, 2, False)]
    assert events(log)[-1] == ("reject", "m1", 3, "max_attempts")


def test_delivery_limit_mode_always_requeues_and_leaves_the_limit_to_the_broker():
    """Under delivery_limit the consumer nacks with requeue whatever the count: the quorum queue dead-letters."""
    c, log = make(queue={"type": "quorum", "delivery_limit": 2}, failure_probability=1.0,
                  retry={"mode": "delivery_limit"})
    assert run_attempt(c, delivery(1, delivery_count=2)) == [Nack(CONN, 1, True)]
    assert events(log)[-1] == ("nack", "m1", 3, "retry")


def test_republish_publishes_a_counted_copy_and_acks_the_original_only_on_its_confirm():
    """A failed attempt under republish waits, publishes a copy with x-retry-count, and acks after the confirm."""
    c, log = make(failure_probability=1.0, retry={"mode": "republish", "max_attempts": 3, "backoff": "fixed",
                                                  "delay": 40})
    wait = only(run_attempt(c, delivery(4, retry_count=1, headers=(("x-retry-count", 1), ("h", "v")))), RetryDelay)
    assert wait.delay == 40 and not c.idle
    copy = only(c.delay_elapsed(50.0, wait.held), PublishCopy)
    assert (copy.seq, copy.exchange, copy.routing_key, copy.retry_count, copy.purpose) == (1, "ex", "key", 2,
                                                                                          "retry_publish")
    assert copy_headers(copy.original, copy.retry_count) == [("h", "v"), ("x-retry-count", 2)]
    assert 4 in [tag for _conn, tag in c.held]  # the original is still held, unacked
    assert c.confirmed(60.0, CONN, 1, True) == [Ack(CONN, 4)]
    assert [e[0] for e in events(log)][-2:] == ["retry_publish", "ack"] and c.idle


def test_a_refused_copy_sends_the_original_back_to_the_queue():
    """A nacked confirm of a retry copy nacks the original with requeue (reason copy_nacked)."""
    c, log = make(failure_probability=1.0, retry={"mode": "republish", "max_attempts": 3})
    only(run_attempt(c, delivery(1)), PublishCopy)
    assert c.confirmed(9.0, CONN, 1, False) == [Nack(CONN, 1, True)]
    assert events(log)[-1] == ("nack", "m1", 1, "copy_nacked")


def test_multiple_confirm_settles_every_earlier_copy():
    """A confirm with multiple=true acks the originals of every copy up to its sequence number."""
    c, _ = make(failure_probability=1.0, concurrency=3, retry={"mode": "republish", "max_attempts": 5})
    starts = [only(c.deliver(0.0, delivery(t, f"m{t}")), StartProcessing) for t in (1, 2, 3)]
    for s in starts:
        c.processed(5.0, s.held)
    assert c.confirmed(6.0, CONN, 2, True, multiple=True) == [Ack(CONN, 1), Ack(CONN, 2)]
    assert list(c.confirm_waits) == [3]


def test_republish_via_a_ttl_exchange_sends_the_copy_at_once_with_its_delay_as_expiration():
    """With via_exchange the copy goes to the wait exchange immediately, its expiration being the delay."""
    c, _ = make(failure_probability=1.0, retry={"mode": "republish", "max_attempts": 4, "backoff": "exponential",
                                                "delay": 10, "via_exchange": "wait.ex"})
    copy = only(run_attempt(c, delivery(1, retry_count=2)), PublishCopy)
    assert (copy.exchange, copy.routing_key, copy.expiration, copy.retry_count) == ("wait.ex", "key", 40.0, 3)


def test_jittered_delay_is_the_seeded_decision_of_this_message_and_attempt():
    """Full jitter scales the delay by decision_uniform(seed, "jitter", id, attempt), nothing else."""
    c, _ = make(failure_probability=1.0, retry={"mode": "requeue", "max_attempts": 5, "backoff": "fixed",
                                                "delay": 100, "jitter": "full"})
    wait = only(run_attempt(c, delivery(1, "order-9")), RetryDelay)
    assert wait.delay == pytest.approx(100 * decision_uniform(SEED, "jitter", "order-9", 1))
    assert c.delay_elapsed(200.0, wait.held) == [Nack(CONN, 1, True)]


def test_dlx_wait_rejects_to_the_wait_queue_then_publishes_to_the_final_dlq():
    """dlx_wait rejects while attempts remain (x-death counts them) and publishes a dlq copy after the last."""
    c, log = make(failure_probability=1.0, retry={"mode": "dlx_wait", "max_attempts": 2, "dead_letter_exchange": "dlx",
                                                  "dead_letter_routing_key": "dead"})
    assert run_attempt(c, delivery(1)) == [Nack(CONN, 1, False)]
    deaths = (("wait", "expired", 1), ("q", "rejected", 1))
    copy = only(run_attempt(c, delivery(2, deaths=deaths)), PublishCopy)
    assert (copy.exchange, copy.routing_key, copy.retry_count, copy.purpose) == ("dlx", "dead", None, "dlq_publish")
    assert log.rows("receive")[-1]["x_death"] == "wait:expired:1|q:rejected:1"
    assert c.confirmed(20.0, CONN, 1, True) == [Ack(CONN, 2)]


def test_poison_message_fails_every_attempt():
    """A message picked as poison fails with reason poison on every attempt, whatever the failure probability."""
    c, log = make(poison_probability=1.0, retry={"mode": "requeue", "max_attempts": 3})
    run_attempt(c, delivery(1))
    assert events(log)[-2] == ("fail", "m1", 1, "poison")


# -- attempt numbers -----------------------------------------------------------------------------------
def test_classic_queue_attempts_come_from_the_durable_tally_across_crashes():
    """On a classic queue the consumer counts deliveries of an id itself, and a crash does not reset the count."""
    c, log = make()
    c.deliver(0.0, delivery(1))
    c.crash(1.0)
    c.connected("c1#2")
    c.deliver(2.0, delivery(1, conn="c1#2"))
    assert [r["attempt"] for r in log.rows("receive")] == [1, 2]


def test_quorum_and_republish_attempts_come_from_the_message():
    """A quorum queue's delivery count, or a copy's x-retry-count under republish, gives the attempt number."""
    quorum, qlog = make(queue={"type": "quorum"})
    quorum.deliver(0.0, delivery(1, delivery_count=3))
    republish, rlog = make(retry={"mode": "republish", "max_attempts": 9})
    republish.deliver(0.0, delivery(1, delivery_count=3, retry_count=5))
    assert qlog.rows("receive")[0]["attempt"] == 4 and rlog.rows("receive")[0]["attempt"] == 6


# -- idempotency, concurrency --------------------------------------------------------------------------
def test_idempotent_consumer_that_has_seen_the_id_skips_and_acks():
    """An id already in the dedup store is acked without processing (dedup_skip), and no effect is recorded."""
    store = DedupStore()
    store.add("m1")
    c, log = make(shared=store, idempotency={"store": "shared"})
    assert c.deliver(0.0, delivery(3)) == [Ack(CONN, 3)]
    assert [e[0] for e in events(log)] == ["receive", "dedup_skip", "ack"]


def test_a_concurrent_copy_that_took_effect_first_refuses_this_effect():
    """Two copies processed at once: the second to finish records dedup_skip, not a second side effect."""
    c, log = make(concurrency=2, idempotency={"store": "local"})
    first = only(c.deliver(0.0, delivery(1)), StartProcessing)
    second = only(c.deliver(0.0, delivery(2)), StartProcessing)
    assert c.processed(5.0, first.held) == [Ack(CONN, 1)]
    assert c.processed(5.0, second.held) == [Ack(CONN, 2)]
    assert [e[0] for e in events(log) if e[0] in ("side_effect", "dedup_skip")] == ["side_effect", "dedup_skip"]


def test_concurrency_bounds_the_attempts_in_progress():
    """With concurrency 2 a third delivery waits in the buffer and starts when an attempt ends."""
    c, _ = make(concurrency=2)
    starts = [c.deliver(0.0, delivery(t, f"m{t}")) for t in (1, 2, 3)]
    assert [len(s) for s in starts] == [1, 1, 0] and c.busy == 2
    after = c.processed(5.0, starts[0][0].held)
    assert after[0] == Ack(CONN, 1) and only(after, StartProcessing).held.msg_id == "m3"


def test_downstream_timeout_fails_the_attempt_and_a_late_reply_is_refused():
    """A downstream call that times out fails the attempt (reason timeout); the core refuses a reply after that."""
    c, log = make(downstream="svc", call_timeout=30, retry={"mode": "requeue", "max_attempts": 2})
    call = only(run_attempt(c, delivery(1)), CallDownstream)
    assert (call.service, call.timeout, call.attempt) == ("svc", 30.0, 1)
    assert c.call_timed_out(35.0, call.call_id) == [Nack(CONN, 1, True)]
    assert events(log)[-2] == ("fail", "m1", 1, "timeout")
    with pytest.raises(ConsumerCoreError, match="not pending"):
        c.call_replied(40.0, call.call_id, True)


# -- crashes and lost connections ----------------------------------------------------------------------
def test_crash_before_the_effect_leaves_the_message_unacked():
    """A crash decided before the effect asks the driver to crash; no effect or ack, the message is abandoned."""
    c, log = make(crash_probability=1.0, crash_point="before_effect", restart_after=300)
    assert run_attempt(c, delivery(1)) == [CrashProcess(300.0)]
    c.crash(6.0)
    assert [e[0] for e in events(log)] == ["receive", "process", "abandon"]
    assert log.rows("abandon")[0]["reason"] == "crash" and not c.held and c.conn is None


def test_crash_after_the_effect_records_it_but_never_acks():
    """crash_point after_effect: the side effect happens, then the process dies holding the message (a duplicate)."""
    c, log = make(crash_probability=1.0, crash_point="after_effect")
    assert run_attempt(c, delivery(1)) == [CrashProcess(1000.0)]
    c.crash(6.0)
    assert [e[0] for e in events(log)] == ["receive", "process", "side_effect", "abandon"]


def test_timers_of_an_earlier_life_are_ignored():
    """A processing timer that fires after the process crashed and restarted changes nothing."""
    c, log = make()
    start = only(c.deliver(0.0, delivery(1)), StartProcessing)
    c.crash(1.0)
    c.connected("c1#2")
    assert c.processed(5.0, start.held) == [] and c.idle
    assert "side_effect" not in [e[0] for e in events(log)]


def test_lost_connection_abandons_held_messages_and_their_pending_copies():
    """After the connection drops, an attempt still finishes but cannot be settled on the new connection."""
    c, log = make(concurrency=1)
    start = only(c.deliver(0.0, delivery(1)), StartProcessing)
    c.deliver(0.0, delivery(2, "m2"))
    c.connection_lost(2.0, CONN)
    c.connected("c1#2")
    assert c.processed(5.0, start.held) == []  # no ack, and m2 was dropped from the buffer
    assert [(r["msg_id"], r["reason"]) for r in log.rows("abandon")] == [("m1", "connection_lost"),
                                                                          ("m2", "connection_lost")]
    assert "side_effect" in [e[0] for e in events(log)] and c.idle


def test_auto_ack_consumer_never_settles_and_keeps_its_messages_when_the_connection_drops():
    """An auto-ack consumer sends no ack or nack and processes what it got even after the connection is gone."""
    c, log = make(auto_ack=True, failure_probability=1.0)
    start = only(c.deliver(0.0, delivery(1)), StartProcessing)
    c.connection_lost(1.0, CONN)
    assert c.processed(5.0, start.held) == [] and not log.rows("abandon")
    assert events(log)[-1] == ("fail", "m1", 1, "error") and c.idle


# -- what the core refuses -----------------------------------------------------------------------------
def test_core_refuses_events_that_cannot_happen():
    """Deliveries on a closed connection, a tag delivered twice, a second finish of one attempt are driver bugs."""
    c, _ = make()
    start = only(c.deliver(0.0, delivery(1)), StartProcessing)
    with pytest.raises(ConsumerCoreError, match="delivered twice"):
        c.deliver(0.0, delivery(1))
    with pytest.raises(ConsumerCoreError, match="open one"):
        c.deliver(0.0, delivery(2, conn="c1#0"))
    c.processed(5.0, start.held)
    with pytest.raises(ConsumerCoreError, match="not processing"):
        c.processed(6.0, start.held)
    with pytest.raises(ConsumerCoreError, match="lost connection"):
        c.connection_lost(7.0, "c1#0")


def test_core_module_imports_no_simulator_and_no_broker_client():
    """consumer_core imports nothing from SimPy, pika, sim.kernel or sim.rabbitmq: both drivers can run it."""
    tree = ast.parse(Path(core_module.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    banned = ("simpy", "pika", "..kernel", "sim.kernel", "..rabbitmq", "sim.rabbitmq")
    assert names and not [m for m in names if m.startswith(banned)]
