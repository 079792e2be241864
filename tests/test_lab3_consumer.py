"""Lab 3 (idempotent consumer): the reference passes, each known-wrong consumer fails the test its
mistake breaks, the checks reject hand-made bad runs, and the ledger's failures follow the stated closed form."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import consumer_reference
import consumer_wrong
import pandas as pd
import pytest
from scipy import stats

import sim
from sim.errors import ScenarioError
from sim.labs import consumer as lab3
from sim.labs import get_lab, grade, labs_folder, skeleton_path
from sim.labs.consumer import (
    ATTEMPTS,
    BACKOFF_MS,
    Apply,
    ApplyReply,
    check_exactly_once,
    check_retry_policy,
    dead_letter_allowance,
    dead_letter_probability,
)
from sim.labs.core import solution_key
from sim.messaging.broker import Message
from sim.messaging.frames import BasicAck, BasicDeliver, ConnectionOpenOk
from sim.messaging.history import MessageLog
from sim.messaging.retry import decision_uniform

LAB = get_lab("lab3")
EXACTLY_ONCE, BUDGET = (t.name for t in LAB.tests)


def _scenario(test: str, seed: int, cls=consumer_reference.ConsumerNode) -> sim.Scenario:
    chosen = next(t for t in LAB.tests if t.name == test)
    return sim.Scenario.from_dict(chosen.scenario(seed, solution_key(LAB, cls)))


# -- grading ------------------------------------------------------------------------------------
def test_reference_passes_every_test(tmp_path):
    report = grade("lab3", consumer_reference.ConsumerNode, out=tmp_path)
    assert report.passed, str(report)
    assert [t.runs for t in report.tests] == [50, 50]
    assert not any(tmp_path.iterdir())


WRONG = [
    (consumer_wrong.NoIdempotencyKey, EXACTLY_ONCE, r"applied more than once: pub-\d+ was applied 2 times"),
    (consumer_wrong.LocalDedup, EXACTLY_ONCE, r"applied more than once: pub-\d+ was applied 2 times"),
    (consumer_wrong.AckFirst, EXACTLY_ONCE, r"never applied and is gone from the broker"),
    (consumer_wrong.RetryForever, EXACTLY_ONCE, r"still queued or unacknowledged when the run ended"),
    (consumer_wrong.ImmediateRetry, BUDGET, r"retry \d of pub-\d+ was sent [\d.]+ ms after attempt"),
    (consumer_wrong.NoRetry, BUDGET, r"messages dead-lettered \(3\d\.\d%\)"),
]


@pytest.mark.parametrize(("variant", "test", "says"), WRONG, ids=[v.__name__ for v, _, _ in WRONG])
def test_known_wrong_consumers_fail_the_test_they_break(variant, test, says, tmp_path):
    report = grade("lab3", variant, out=tmp_path, tests=[test], shrink_seconds=5)
    outcome = report.tests[0]
    assert not outcome.passed, str(report)
    assert outcome.error is None and outcome.evidence is not None
    assert re.search(says, outcome.message), outcome.message
    for kind in ("replay", "diagram (png)", "diagram (svg)"):
        assert Path(outcome.files[kind]).stat().st_size > 0


@pytest.mark.parametrize(("variant", "test"), [
    (consumer_wrong.NoIdempotencyKey, BUDGET),
    (consumer_wrong.LocalDedup, BUDGET),
    (consumer_wrong.AckFirst, BUDGET),
    (consumer_wrong.ImmediateRetry, EXACTLY_ONCE),
    (consumer_wrong.NoRetry, EXACTLY_ONCE),
])
def test_each_mistake_breaks_only_its_own_guarantee(variant, test, tmp_path):
    """The two tests tell the mistakes apart (over 5 schedules here; the full 50 pass too)."""
    report = grade("lab3", variant, seeds=5, out=tmp_path, tests=[test])
    assert report.passed, str(report)


def test_retrying_forever_also_breaks_the_attempt_budget():
    check = check_retry_policy(sim.run(_scenario(BUDGET, 1, consumer_wrong.RetryForever)))
    assert not check.ok and f"the budget is {ATTEMPTS} attempts" in check.message


def test_grading_is_deterministic(tmp_path):
    a = grade("lab3", consumer_wrong.NoIdempotencyKey, seeds=2, out=tmp_path / "a", tests=[EXACTLY_ONCE])
    b = grade("lab3", consumer_wrong.NoIdempotencyKey, seeds=2, out=tmp_path / "b", tests=[EXACTLY_ONCE])
    assert [(t.test, t.passed, t.seed, t.message, t.faults) for t in a.tests] == \
        [(t.test, t.passed, t.seed, t.message, t.faults) for t in b.tests]
    one, two = (sim.run(_scenario(EXACTLY_ONCE, 7)) for _ in range(2))
    pd.testing.assert_frame_equal(one.tables["message_events"], two.tables["message_events"])


def test_untouched_skeleton_fails_with_the_students_traceback(tmp_path):
    report = grade("lab3", skeleton_path("lab3"), seeds=2, out=tmp_path)
    assert not report.passed
    for t in report.tests:
        assert "NotImplementedError: TODO" in t.error
        assert "lab3_consumer.py" in t.error and "sim/runner.py" not in t.error


# -- the system the lab states ----------------------------------------------------------------
def test_dead_letters_are_exactly_the_messages_the_closed_form_predicts():
    """On a clean network a consumer making every attempt dead-letters message m iff m is poison or its
    first ATTEMPTS draws fail: the ledger's failures are the stated p and q, per message and attempt."""
    for seed in (1, 2):
        result = sim.run(_scenario(BUDGET, seed))
        events = result.tables["message_events"]
        dead = set(events[(events["event"] == "enqueue") & (events["queue"] == lab3.DLQ)]["msg_id"])
        predicted = {f"pub-{i}" for i in range(lab3.MESSAGES)
                     if decision_uniform(seed, "lab_consumer/poison", f"pub-{i}", 0) < lab3.POISON_PROBABILITY
                     or all(decision_uniform(seed, "lab_consumer/fail", f"pub-{i}", n) < lab3.FAILURE_PROBABILITY
                            for n in range(1, ATTEMPTS + 1))}
        assert dead == predicted and len(dead) > 0


def test_the_allowance_is_the_binomial_quantile():
    n, p, q = 400, lab3.FAILURE_PROBABILITY, lab3.POISON_PROBABILITY
    pi = dead_letter_probability(p, q)
    assert pi == pytest.approx(q + (1 - q) * p**ATTEMPTS)
    k = dead_letter_allowance(n, p, q)
    assert stats.binom.sf(k, n, pi) <= lab3.ALPHA < stats.binom.sf(k - 1, n, pi)
    # giving up after the first failure is far outside it
    assert n * dead_letter_probability(p, q, 1) > 4 * k


def test_the_readme_states_the_codes_numbers():
    text = (labs_folder() / "README.md").read_text()
    section = text[text.index("## Lab 3"):]
    n, p, q = lab3.MESSAGES, lab3.FAILURE_PROBABILITY, lab3.POISON_PROBABILITY
    k = dead_letter_allowance(n, p, q)
    for fact in (f"{n} messages", f"{lab3.RATE:g} per second", f"at most {lab3.PREFETCH} deliveries",
                 f"probability {p:g} per attempt", f"{q:.0%} of the messages", f"after {ATTEMPTS} attempts",
                 f"{BACKOFF_MS:g} ms × 2^", f"= {dead_letter_probability(p, q):.2%}", f"at most {k} ({k / n:.2%})",
                 f"{1 - lab3.ALPHA:.2%} quantile", f"{lab3.HEARTBEAT:g} ms of missed heartbeats",
                 f"within {lab3.CONFIRM_TIMEOUT:g} ms", f"within {lab3.CONSUMER_TIMEOUT / 1000:g} s",
                 f"about {lab3.LEDGER_SERVICE_MS:g} ms"):
        assert fact in section, fact


def test_scenario_mistakes_name_the_field():
    good = next(iter(LAB.tests)).scenario(1, solution_key(LAB, consumer_reference.ConsumerNode))
    with pytest.raises(ScenarioError, match=r"cluster\.nodes.*exactly the nodes broker, pub, c1, c2, ledger"):
        sim.Scenario.from_dict({**good, "cluster": {"nodes": ["broker", "pub", "c1", "ledger"]}})
    with pytest.raises(ScenarioError, match="failure_probability"):
        sim.Scenario.from_dict({**good, "protocol": {**good["protocol"], "failure_probability": 1.5}})


# -- the ledger and the consumer base class, one handler at a time ---------------------------------
def _harness(p: float = 0.0, q: float = 0.0) -> sim.Harness:
    data = LAB.tests[1].scenario(1, solution_key(LAB, consumer_reference.ConsumerNode))
    data["protocol"] = {**data["protocol"], "failure_probability": p, "poison_probability": q}
    return sim.Harness(data)


def _replies(h: sim.Harness, n: int) -> list[str]:
    h.take()
    h.advance(1000)
    return [s.msg.status for s in h.take() if isinstance(s.msg, ApplyReply)][-n:]


def test_the_ledger_applies_a_key_once_and_records_it_with_the_effect():
    h = _harness()
    h.deliver("ledger", Apply(1, "pub-0", "pub-0"), src="c1")
    h.deliver("ledger", Apply(2, "pub-0", "pub-0"), src="c2")   # in service together: still one effect
    assert _replies(h, 2) == ["applied", "already_applied"]
    h.crash("ledger")
    h.recover("ledger")
    h.deliver("ledger", Apply(3, "pub-0", "pub-0"), src="c1")
    assert _replies(h, 1) == ["already_applied"]                # the key is on disk with the journal
    h.deliver("ledger", Apply(4, "pub-0", None), src="c1")
    assert _replies(h, 1) == ["applied"]                        # no key: applied again
    assert h.nodes["ledger"].journal == ["pub-0", "pub-0"]


def test_an_unavailable_ledger_does_nothing_and_a_crash_loses_requests_in_service():
    h = _harness(p=1.0)
    h.deliver("ledger", Apply(1, "pub-0", "pub-0"), src="c1")
    assert _replies(h, 1) == ["unavailable"] and h.nodes["ledger"].journal == []
    h = _harness()
    h.deliver("ledger", Apply(1, "pub-0", "pub-0"), src="c1")
    h.crash("ledger")
    h.recover("ledger")
    assert _replies(h, 1) == [] and h.nodes["ledger"].journal == []


def test_the_base_class_settles_once_and_not_on_a_lost_connection():
    h = _harness()
    c1 = h.nodes["c1"]
    conn = c1._opening
    h.deliver("c1", ConnectionOpenOk(conn), src="broker")
    msg = Message("pub-0")
    h.deliver("c1", BasicDeliver(conn, "c1.consumer", 1, "work", msg, False, 0), src="broker")
    (call,) = h.sent_to("ledger", Apply)
    assert call.key == "pub-0"                                   # the reference keys by message id
    h.deliver("c1", ApplyReply(call.request_id, "applied"), src="ledger")
    assert [m.delivery_tag for m in h.sent_to("broker", BasicAck)] == [1]
    d = lab3.Delivery("pub-0", 1, False, conn)
    with pytest.raises(RuntimeError, match="already settled by ack"):
        c1.ack(d)
    stale = lab3.Delivery("pub-1", 2, False, "c1#0")
    assert c1.reject(stale) is False and len(h.sent_to("broker", BasicAck)) == 1


# -- the checks on hand-made runs -------------------------------------------------------------
def _run(steps, calls=(), node_events=(), p=0.3, q=0.02):
    """A fake finished run: ``steps`` are (time, event, msg_id, node, fields) message events."""
    from sim.checkers.delivery import check_delivery

    log = MessageLog()
    for t, event, msg_id, node, fields in sorted(steps, key=lambda s: s[0]):
        log.record(t, event, msg_id, node, **fields)
    events = log.to_frame()
    rows = pd.DataFrame(list(calls), columns=list(lab3.ConsumerLabState.CALL_COLUMNS))
    return SimpleNamespace(
        tables={"message_events": events, "ledger_calls": rows,
                "messages": check_delivery(events, [lab3.DLQ]).messages},
        node_events=pd.DataFrame(list(node_events), columns=["time", "node", "event"]),
        scenario=SimpleNamespace(protocol=SimpleNamespace(failure_probability=p, poison_probability=q)))


def _published(msg_id, t=0.0):
    return [(t, "publish", msg_id, "pub", {}), (t + 1, "enqueue", msg_id, "broker", {"queue": "work"}),
            (t + 1, "confirm", msg_id, "pub", {})]


def _applied(msg_id, t, consumer="c1", key=None):
    return ([(t, "side_effect", msg_id, "ledger", {})],
            [(t, msg_id, consumer, "(0, 1)", key, "applied", "")])


def test_exactly_once_accepts_one_effect_or_a_dead_letter():
    steps, calls = _published("m1") + _published("m2"), []
    s, c = _applied("m1", 10.0)
    steps += s + [(20.0, "enqueue", "m2", "broker", {"queue": "dlq"})]
    calls += c
    check = check_exactly_once(_run(steps, calls))
    assert check.ok and "1 applied once, 1 dead-lettered" in check.message
    # a copy in the dead-letter queue of a message that was applied once is allowed, and said
    steps.append((30.0, "enqueue", "m1", "broker", {"queue": "dlq"}))
    check = check_exactly_once(_run(steps, calls))
    assert check.ok and "1 of them also have a copy" in check.message


def test_exactly_once_rejects_a_second_effect():
    steps, calls = _published("m1"), []
    for t, who in ((10.0, "c1"), (700.0, "c2")):
        s, c = _applied("m1", t, who)
        steps, calls = steps + s, calls + c
    check = check_exactly_once(_run(steps, calls, node_events=[(300.0, "c1", "crash")]))
    assert not check.ok
    assert "1 applied more than once: m1 was applied 2 times: c1 at 10.0 ms (key None), c2 at 700.0 ms" \
        in check.message
    assert "node crash" in check.evidence["what"].str.strip().tolist() and check.window == (550.0, 715.0)


@pytest.mark.parametrize(("last", "says"), [
    ((50.0, "remain", "m1", "broker", {"queue": "work", "reason": "unacked"}), "still queued or unacknowledged"),
    ((50.0, "settle", "m1", "broker", {"queue": "work"}), "gone from the broker"),
])
def test_exactly_once_rejects_a_message_neither_applied_nor_dead_lettered(last, says):
    steps = _published("m1") + [(5.0, "receive", "m1", "c1", {"queue": "work", "tag": 1}),
                                (6.0, "ack", "m1", "c1", {"queue": "work", "tag": 1}), last]
    check = check_exactly_once(_run(steps))
    assert not check.ok and "1 never applied and not dead-lettered" in check.message and says in check.message


def _attempts(msg_id, times):
    return [(t, "process", msg_id, "c1", {"queue": "work", "attempt": i + 1}) for i, t in enumerate(times)]


def test_retry_policy_rejects_too_many_attempts_and_early_retries():
    base = _published("m1")
    floors = [BACKOFF_MS * 2**i for i in range(ATTEMPTS)]
    spaced = [sum(floors[:i]) + i for i in range(ATTEMPTS + 1)]       # exponential, but one attempt too many
    check = check_retry_policy(_run(base + _attempts("m1", spaced) + _applied("m1", 500.0)[0]))
    assert not check.ok and f"m1 was attempted {ATTEMPTS + 1} times" in check.message
    early = [0.0, 12.0, 12.0 + 2 * BACKOFF_MS - 1]                   # retry 2 one ms early
    check = check_retry_policy(_run(base + _attempts("m1", early) + _applied("m1", 500.0)[0]))
    assert not check.ok and f"retry 2 of m1 was sent {2 * BACKOFF_MS - 1:.1f} ms after attempt 2" in check.message
    exact = [0.0, BACKOFF_MS, 3 * BACKOFF_MS]
    assert check_retry_policy(_run(base + _attempts("m1", exact) + _applied("m1", 500.0)[0])).ok


def test_retry_policy_rejects_too_many_dead_letters_and_unsettled_messages():
    n, p, q = 40, 0.3, 0.02
    allowed = dead_letter_allowance(n, p, q)
    steps = []
    for i in range(n):
        steps += _published(f"m{i}", float(i))
        if i <= allowed:                                              # one more than allowed
            steps.append((100.0 + i, "enqueue", f"m{i}", "broker", {"queue": "dlq"}))
        else:
            steps += _applied(f"m{i}", 100.0 + i)[0]
    check = check_retry_policy(_run(steps, p=p, q=q))
    assert not check.ok and f"{allowed + 1} of {n} messages dead-lettered" in check.message
    assert f"at most {allowed} allowed" in check.message
    within = [s for s in steps if not (s[2] == f"m{allowed}" and s[1] == "enqueue" and s[4]["queue"] == "dlq")]
    within += _applied(f"m{allowed}", 300.0)[0]
    assert check_retry_policy(_run(within, p=p, q=q)).ok
    unsettled = _published("m1")
    check = check_retry_policy(_run(unsettled))
    assert not check.ok and "neither applied nor dead-lettered" in check.message
