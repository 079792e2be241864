"""Validation cases: the simulation against the live broker, same scenario, same seeded decisions.

1. retries through a TTL wait queue and a DLX; 2. requeue order after a nack (and after a connection
loss); 3. a quorum queue's delivery limit; 4. consumers crashing with an unacked message. Case 5, the
broker restart, is in test_rabbitmq_restart.py. 6. slow consumers not caught up at run.duration: the
drain policy (both sides run until idle) and the "spans differ" verdict without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sim
from sim.messaging.retry import decision_uniform
from sim.rabbitmq import run_rabbitmq
from sim.rabbitmq.compare import compare
from sim.rabbitmq.probes import MEASURED_3_10_8, real_requeue_order, sim_requeue_order
from sim.rabbitmq.validate import validate
from sim.scenario import Scenario

pytestmark = pytest.mark.rabbitmq

SCENARIOS = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"


def scenario(name):
    return Scenario.from_toml(SCENARIOS / f"rabbitmq-{name}.toml")


def row(table, quantity):
    return table.set_index("quantity").loc[quantity]


def fails_every_attempt(seed, msg_id, p, k):
    return all(decision_uniform(seed, "fail", msg_id, a) < p for a in range(1, k + 1))


# -- 1. retries through a TTL wait queue ------------------------------------------------------------------
P, K, TTL = 0.5, 3, 100.0


@pytest.fixture(scope="module")
def retry_validation(rabbitmq):
    s = scenario("retry-dlx").variant({f"protocol.consumers[{i}].failure_probability": P for i in range(2)})
    return validate(s, seed=21, settings=rabbitmq, probes=False)


def test_retry_dead_letters_and_attempts_are_equal(retry_validation):
    """Failing with p = 0.5 and at most 3 attempts: the same messages are dead-lettered after the same
    attempts on the broker as in the simulation, exactly those whose 3 seeded attempts all fail."""
    v = retry_validation
    c = v.comparison
    for q in ("published", "processed", "dead_lettered", "lost", "deliveries",
              "messages with the same status", "messages with the same attempts"):
        assert row(c.counts, q)["agree"], row(c.counts, q)
    assert c.attempts["agree"].all() and len(c.attempts) == K
    for result in (v.simulation, v.broker):
        m = result.tables["messages"]
        dead = set(m.loc[m["status"] == "dead_lettered", "msg_id"])
        assert dead == {i for i in m["msg_id"] if fails_every_attempt(v.seed, i, P, K)}
        assert 10 < len(dead) < 50 and (m["attempts"] <= K).all()


def test_retry_delays_wait_out_the_ttl_on_both_sides(retry_validation):
    """Each retry waits out the 100 ms TTL: every delay is at least the TTL, the medians lie close above it on both
    sides (within 10% on an idle machine; 25% allowed, as expiry and dead-lettering slow down on a loaded one and
    the simulation takes the dead-lettering cost measured there), and the delays' p50 and p95 are judged against an
    allowance from the broker runs' spread."""
    c = retry_validation.comparison
    table = c.retry_delays.to_string()
    assert row(c.retry_delays, "count")["simulation"] == row(c.retry_delays, "count")["broker"] > 50, table
    for q in ("p50 (ms)", "p95 (ms)"):
        r = row(c.retry_delays, q)
        assert r["broker"] >= TTL and r["simulation"] >= TTL and r["allowance"] > 0, table
        assert len(r["broker runs"].split()) == c.runs == 3, table
    r = row(c.retry_delays, "p50 (ms)")
    assert r["simulation"] <= 1.25 * TTL and all(TTL <= float(v) <= 1.25 * TTL for v in r["broker runs"].split()), table
    assert c.real_retry.min() >= TTL and c.sim_retry.min() >= TTL


# -- 2. requeue order ----------------------------------------------------------------------------------------
BROKER_ORDER = MEASURED_3_10_8  # '*' = delivered again with redelivered = true


@pytest.fixture(scope="module")
def broker_orders(rabbitmq):
    return {key: real_requeue_order(rabbitmq, *key) for key in BROKER_ORDER}


@pytest.mark.parametrize("kind, how", list(BROKER_ORDER))
def test_broker_requeue_order(broker_orders, kind, how):
    """m0..m4 queued, m0..m2 delivered, m0 and m2 returned: the order the broker then holds them in."""
    assert broker_orders[(kind, how)] == BROKER_ORDER[(kind, how)]


@pytest.mark.parametrize("kind, how", list(BROKER_ORDER))
def test_simulated_requeue_order_equals_the_broker(broker_orders, kind, how):
    """The simulated broker returns requeued messages to the same places as the real one."""
    assert sim_requeue_order(kind, how) == broker_orders[(kind, how)]


# -- 3. delivery limit on a quorum queue -----------------------------------------------------------------------
def test_delivery_limit_counts_and_dead_letter_reason_agree(rabbitmq):
    """delivery_limit = 2: deliveries counted 0, 1, 2 (redelivered from the second on), then dead-lettered with
    reason delivery_limit; per message the same on the broker as in the simulation."""
    s = scenario("delivery-limit")
    simulated, real = sim.run(s), run_rabbitmq(s, settings=rabbitmq)
    c = compare(simulated, real)
    for q in ("dead_lettered", "processed", "deliveries", "redelivered", "lost",
              "messages with the same deliveries", "messages with the same dead-letter"):
        assert row(c.counts, q)["agree"], row(c.counts, q)
    m = c.messages
    dead = m[m["status_real"] == "dead_lettered"]
    assert len(dead) == sum(fails_every_attempt(s.run.seed, i, 0.5, 3) for i in m.index) > 5
    assert (dead["dead_letter_real"] == "work:delivery_limit").all()
    assert (dead["deliveries_real"] == "0 1r 2r").all()
    ev = real.tables["message_events"]
    received = ev[(ev["event"] == "receive") & (ev["queue"] == "work")]
    assert received["delivery_count"].max() == 2
    assert (received["redelivered"] == (received["delivery_count"] > 0)).all()


# -- 4. consumer crash with unacked messages ---------------------------------------------------------------------
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_consumer_crash_redeliveries_agree_and_nothing_is_lost(rabbitmq, queue_type):
    """Consumers crash on the same seeded deliveries: the same messages come back redelivered (and, on a
    quorum queue, with the same delivery counts), the same effects are duplicated, nothing is lost."""
    s = scenario("consumer-crash").variant({"protocol.topology.queues[0].type": queue_type})
    simulated, real = sim.run(s), run_rabbitmq(s, settings=rabbitmq)
    c = compare(simulated, real)
    for q in ("processed", "deliveries", "redelivered", "duplicated", "lost",
              "messages with the same status", "messages with the same deliveries"):
        assert row(c.counts, q)["agree"], row(c.counts, q)

    def crashes(r):
        ev = r.tables["message_events"]
        return ev[(ev["event"] == "abandon") & (ev["reason"] == "crash")]["msg_id"].tolist()

    assert sorted(crashes(simulated)) == sorted(crashes(real)) and len(crashes(real)) >= 5
    report = real.verdicts["delivery"]
    assert report["lost"] == 0 and report["processed"] == report["published"]
    assert real.verdicts["delivery"]["redeliveries"] == len(crashes(real))
    restarts = real.node_events[real.node_events["event"] == "restart"]
    assert len(restarts) == len(crashes(real))


# -- 6. slow consumers and the drain policy -------------------------------------------------------------
def slow_consumers(drain: bool) -> Scenario:
    s = scenario("slow-consumers-drain")
    if drain:
        return s
    data = s.to_dict()
    del data["run"]["drain"]
    return Scenario.from_dict(data)


def test_with_the_idle_drain_both_sides_drain_and_their_counts_are_compared(rabbitmq):
    """Slow consumers still behind at run.duration: with drain = { until = "idle" } the model and the broker both
    stop publishing at 1.2 s and run until idle; both report a drained span and every count agrees."""
    s = slow_consumers(drain=True)
    sim_result, real = sim.run(s), run_rabbitmq(s, settings=rabbitmq)
    for r in (sim_result, real):
        assert r.summary["messaging.drained"] is True and r.summary["messaging.span"] > 1200.0
        assert r.summary["messaging.remaining"] == 0 and r.summary["messaging.unconfirmed"] == 0
    c = compare(sim_result, real)
    assert not c.spans_differ and c.semantics == "agree", c.semantic_differences
    assert any(line.startswith("spans: both drained") for line in c.verdict_lines())


def test_without_the_drain_the_comparison_says_the_spans_differ(rabbitmq):
    """The same scenario without the policy: the model stops at 1.2 s with messages queued, the broker run goes on
    until idle; compare refuses to judge the counts and says the spans differ, showing both."""
    s = slow_consumers(drain=False)
    sim_result, real = sim.run(s), run_rabbitmq(s, settings=rabbitmq)
    assert sim_result.summary["messaging.drained"] is False and sim_result.summary["messaging.remaining"] > 0
    assert real.summary["messaging.drained"] is True
    c = compare(sim_result, real)
    assert c.verdict == "spans differ" and c.semantics == "spans differ"
    lines = c.verdict_lines()
    assert lines[-1] == "verdict: spans differ"
    assert any("simulation: ran to 1200 ms, NOT drained" in line for line in lines)
    assert any(line.strip().startswith("broker run 1: ran to") and "drained (idle since" in line for line in lines)


def test_a_drain_cut_short_by_its_limit_is_undrained_on_both_sides(rabbitmq):
    """drain = { until = "idle", limit = "100ms" } ends both sides at 1.3 s with the backlog still queued: each
    reports an undrained span of at least 1.3 s, so the comparison does not call the spans different."""
    s = slow_consumers(drain=True).variant({"run.drain": {"until": "idle", "limit": "100ms"}})
    sim_result, real = sim.run(s), run_rabbitmq(s, settings=rabbitmq)
    for r in (sim_result, real):
        assert r.summary["messaging.drained"] is False and r.summary["messaging.span"] >= 1300.0
        assert r.summary["messaging.remaining"] > 0
    c = compare(sim_result, real)
    assert not c.spans_differ
    assert "spans: neither side drained: counts depend on where each stopped" in c.verdict_lines()


def test_a_broker_run_kept_to_its_end_time_still_says_it_drained(rabbitmq):
    """Without stopping early when idle the broker run goes on to its end time (1.2 s + a 3 s limit); the last
    probe there finds it idle, so it reports drained, with its last message event well before the end."""
    s = slow_consumers(drain=True).variant({"run.drain": {"until": "idle", "limit": "3s"}})
    real = run_rabbitmq(s, settings=rabbitmq, stop_when_idle=False)
    assert real.meta["broker"]["ended"] == "end_time"
    assert real.summary["messaging.drained"] is True and real.summary["messaging.span"] >= 4200.0
    assert real.summary["messaging.drained_at"] < real.summary["messaging.span"]
    assert real.summary["messaging.remaining"] == 0


# -- 7. the mixed scenario of the broker-agreement issue: topic routing, a quorum queue with a delivery limit and
# competing consumers that fail and crash, a classic queue that rejects publishes when full ----------------------
def test_topic_quorum_overflow_agrees_on_every_count_over_one_drained_span(rabbitmq):
    """Both sides drain; every count, every message's status, attempts and deliveries are equal; the publish
    rejections of the full classic queue happen on both sides; the simulation ran with measured broker costs."""
    v = validate(scenario("topic-quorum-overflow"), settings=rabbitmq, repeats=1, probes=False)
    c = v.comparison
    assert not c.spans_differ and c.semantics == "agree", c.semantic_differences
    for r in (v.simulation, v.broker):
        assert r.summary["messaging.drained"] is True and r.summary["messaging.publish_nacked"] > 0
        assert r.summary["messaging.processed"] == 240
    assert v.costs is not None and "quorum requeue" in c.report()
