"""Chapters 3-6's checked exercises: a right answer (derived here, not by the judge) passes, known-wrong
answers get their own feedback, an unanswered one says so, and the notebooks call every check."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

import sim
from sim.exercises import check, names
from sim.exercises.ch3 import DEAD_LIMIT, OUTAGE, P99_LIMIT, crashing_consumer, outage_scenario
from sim.exercises.ch4 import CHECK_MAX, DEADLINE, NAIVE, crash_after_commit, one_order
from sim.exercises.ch5 import one_transfer

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def judged(capsys, name, answer):
    """(whether ``check`` passed, what it printed)."""
    ok = check(name, answer)
    return ok, capsys.readouterr().out


def rejected(capsys, name, answer, *fragments):
    ok, out = judged(capsys, name, answer)
    assert not ok and out.startswith("Not yet."), out
    for fragment in fragments:
        assert fragment in out, (fragment, out)


@pytest.mark.parametrize("name", [n for c in (3, 4, 5, 6) for n in names(c)])
def test_an_unanswered_exercise_says_so(capsys, name):
    """None (the notebooks' starting value) is not an answer: the check says so and does not pass."""
    ok, out = judged(capsys, name, None)
    assert not ok and out.startswith("Not answered yet.")


def test_every_chapter_has_at_least_two_exercises():
    """Chapters 3 to 6 each register two or more exercises."""
    assert all(len(names(c)) >= 2 for c in (3, 4, 5, 6)), {c: names(c) for c in (3, 4, 5, 6)}


# -- chapter 3 ------------------------------------------------------------------------------------------------
def test_dead_letter_fraction(capsys):
    """Three independent attempts failing with probability 0.3 each: 0.3 cubed; p * k and percent are slips."""
    assert judged(capsys, "retry.dead_letter_fraction", 0.3 * 0.3 * 0.3)[0]
    assert judged(capsys, "retry.dead_letter_fraction", np.float32(0.027))[0]
    rejected(capsys, "retry.dead_letter_fraction", 0.9, "p * k")
    rejected(capsys, "retry.dead_letter_fraction", 2.7, "percentage")
    rejected(capsys, "retry.dead_letter_fraction", "0.027", "a number")


def _outage_numbers(limit, retry):
    """Dead-lettered fraction, p99 latency and messages left over two seeds, counted from the runs' own tables."""
    published = dead = left = 0
    latencies = []
    for seed in (1, 2):
        r = sim.run(outage_scenario(limit, retry, seed))
        events = r.tables["message_events"]
        published += events.loc[events["event"] == "publish", "msg_id"].nunique()
        dead += events[(events["event"] == "enqueue") & (events["queue"] == "dlq")]["msg_id"].nunique()
        effects = events[events["event"] == "side_effect"].groupby("msg_id")["time"].min()
        sent = events[events["event"] == "publish"].groupby("msg_id")["time"].min()
        latencies.append((effects - sent.loc[effects.index]).to_numpy())
        left += events.loc[(events["event"] == "remain") & (events["queue"] == "work"), "msg_id"].nunique()
    return dead / published, float(np.percentile(np.concatenate(latencies), 99)), left


def test_outage_policy_right_answer_meets_the_targets(capsys):
    """Exponential backoff from 200 ms capped at 2 s, 9 attempts: the attempts span well over the 3 s outage
    (9 x 100 ms timeouts + mean waits 100 + 200 + 400 + 800 + 4 x 1000 ms), the cap bounds the wait after it;
    the runs confirm both targets, and the judge agrees (numpy numbers included)."""
    retry = {"backoff": "exponential", "delay": 200, "max_delay": 2000, "jitter": "full"}
    span = 9 * 100 + 100 + 200 + 400 + 800 + 4 * 1000
    assert span > OUTAGE[1] - OUTAGE[0]
    dead, p99, left = _outage_numbers(8, retry)
    assert dead <= DEAD_LIMIT and p99 < P99_LIMIT and left == 0, (dead, p99, left)
    ok, out = judged(capsys, "retry.outage_policy", {"delivery_limit": np.int64(8), **retry,
                                                    "delay": np.float64(200)})
    assert ok, out


def test_outage_policy_wrong_answers(capsys):
    """Immediate retries storm the recovering service; too few attempts die in the outage; a long cap waits
    too long after it; the shape of the answer is checked first."""
    rejected(capsys, "retry.outage_policy", {"delivery_limit": 1000}, "retry storm")
    rejected(capsys, "retry.outage_policy", {"delivery_limit": 4, "backoff": "exponential", "delay": 100,
                                             "max_delay": 1000, "jitter": "full"}, "during the outage", "attempts")
    rejected(capsys, "retry.outage_policy", {"delivery_limit": 8, "backoff": "exponential", "delay": 200,
                                             "max_delay": 10_000, "jitter": "full"}, "Cap the delay lower")
    rejected(capsys, "retry.outage_policy", {"delivery_limit": 8, "mode": "requeue"}, "'delivery_limit'")
    rejected(capsys, "retry.outage_policy", {"delivery_limit": 8, "delay": -1}, "delay", "negative")
    rejected(capsys, "retry.outage_policy", {"limit": 8}, "unknown key 'limit'")
    rejected(capsys, "retry.outage_policy", 8, "a dict")


def _duplicate_side_effects(store):
    events = sim.run(crashing_consumer(store)).tables["message_events"]
    per_message = events[events["event"] == "side_effect"].groupby("msg_id").size()
    return int((per_message - 1).sum())


def test_cheapest_store(capsys):
    """The cheapest store with no message applied twice (counted from the event table) passes; memory fails
    (the crash forgets), the shared database is not the cheapest."""
    stores = ("local", "local_durable", "shared")
    counts = {s: _duplicate_side_effects(s) for s in stores}
    cheapest = next(s for s in stores if counts[s] == 0)
    assert counts["local"] > 0
    assert judged(capsys, "idempotency.cheapest_store", cheapest)[0]
    rejected(capsys, "idempotency.cheapest_store", "local", "dies with the crash")
    rejected(capsys, "idempotency.cheapest_store", "shared", "cheaper")
    rejected(capsys, "idempotency.cheapest_store", "redis", "answer one of")


# -- chapter 4 ------------------------------------------------------------------------------------------------
def test_never_notified(capsys):
    """Four independent losses of probability 0.2: 0.2 ** 4; 0.2 * 4 is the p * k slip."""
    assert judged(capsys, "notify.never_notified", 0.2 * 0.2 * 0.2 * 0.2)[0]
    assert judged(capsys, "notify.never_notified", np.float64(0.0016))[0]
    rejected(capsys, "notify.never_notified", 0.8, "p * k")
    rejected(capsys, "notify.never_notified", 0.16, "percentage")


def _message_times(result, kind, src=None, dst=None, pattern=""):
    trace = result.trace
    rows = trace[(trace["type"] == kind) & trace["message"].astype(str).str.contains(pattern, regex=False)]
    if src is not None:
        rows = rows[rows["src"] == src]
    if dst is not None:
        rows = rows[rows["dst"] == dst]
    return rows


def test_lost_compensation_right_answer(capsys):
    """From the fault-free trace: payment replies to the charge (it is applied), then the refund arrives;
    payment down from between the two until 300 ms loses the refund for the naive orchestrator only."""
    calm = sim.run(one_order(trace=True))
    charged = _message_times(calm, "StepReply", src="payment", pattern="compensate=False")["send"].iloc[0]
    refund = _message_times(calm, "StepCommand", dst="payment", pattern="compensate=True")["deliver"].iloc[0]
    assert charged < refund
    answer = [{"kind": "crash", "node": "payment", "start": np.float64((charged + refund) / 2), "end": 300}]
    naive = sim.run(one_order(answer, **NAIVE)).verdicts["saga"]
    assert naive.counts["inconsistent"] == 1
    ok, out = judged(capsys, "saga.lost_compensation", answer)
    assert ok, out


def test_lost_compensation_wrong_answers(capsys):
    """No fault undoes everything; an orchestrator crash makes the saga stuck, not inconsistent; payment down
    before the charge leaves nothing to undo; a fault that never ends breaks the robust saga too."""
    rejected(capsys, "saga.lost_compensation", [], "every compensation was acknowledged")
    rejected(capsys, "saga.lost_compensation", [{"kind": "crash", "node": "orch", "start": 125, "end": 400}],
             "stuck")
    rejected(capsys, "saga.lost_compensation", [{"kind": "crash", "node": "payment", "start": 110, "end": 400}],
             "nothing of it had been applied")
    rejected(capsys, "saga.lost_compensation", [{"kind": "crash", "node": "payment", "start": 125, "end": 5000}],
             "so does the robust one")
    rejected(capsys, "saga.lost_compensation", [{"kind": "crash", "node": "bank", "start": 1, "end": 2}],
             "answer[0].node", "unknown node")
    rejected(capsys, "saga.lost_compensation", "crash payment", "a list of faults")


def test_check_back_right_answer(capsys):
    """From a run's own events: the producer restarts at `back`; with scans every 500 ms the first scan after
    it checks the half message once it is old enough, which check_after just below that age guarantees."""
    probe = sim.run(crash_after_commit(check_after=1e6, check_interval=1e6, check_max=1))
    back = float(probe.node_events.query("node == 'app' and event == 'recover'")["time"].iloc[0])
    stored = float(probe.tables["txmsg_events"].query("event == 'half_stored'")["time"].iloc[0])
    committed = float(probe.tables["txmsg_events"].query("event == 'commit'")["time"].iloc[0])
    interval = 500
    scan = math.ceil(back / interval) * interval
    assert scan + 10 - committed < DEADLINE
    answer = {"check_after": scan - stored - 1, "check_interval": interval, "check_max": np.int64(CHECK_MAX)}
    ok, out = judged(capsys, "txmsg.check_back", answer)
    assert ok, out


def test_check_back_wrong_answers(capsys):
    """RocketMQ's defaults check too often and too late; checks that all fall in the outage lose the message."""
    rejected(capsys, "txmsg.check_back", {"check_after": 6000, "check_interval": 1000, "check_max": 15},
             "at most 4")
    rejected(capsys, "txmsg.check_back", {"check_after": 6000, "check_interval": 1000, "check_max": 4},
             "more than 4000 ms")
    rejected(capsys, "txmsg.check_back", {"check_after": 500, "check_interval": 500, "check_max": 4},
             "never arrived", "discarded")
    rejected(capsys, "txmsg.check_back", {"check_after": 500, "check_interval": 500}, "needs the key 'check_max'")


# -- chapter 5 ------------------------------------------------------------------------------------------------
def test_the_notebook_and_the_judge_run_the_same_transfer():
    """Chapter 5's one_transfer (run from the notebook's own cell) builds the scenarios the judges build."""
    nb = nbformat.read(NOTEBOOKS / "05-two-phase-commit.ipynb", as_version=4)
    source = next(c.source for c in nb.cells if c.cell_type == "code" and "def one_transfer" in c.source)
    scope: dict = {}
    exec(source, scope)
    faults = [{"kind": "partition", "start": 103.5, "end": 400, "groups": [["n3", "n4"]]}]
    assert scope["one_transfer"]("three_phase_commit", faults) == one_transfer("three_phase_commit", faults)
    assert scope["one_transfer"](faults=faults, cooperative_termination=True) == \
        one_transfer(faults=faults, cooperative_termination=True)


def _sent(result, kind):
    return float(result.trace.query("type == @kind")["send"].min())


def test_split_partition(capsys):
    """From the fault-free trace: a partition that starts after the votes left and no later than the
    pre-commits, cutting n3 and n4 off, leaves n2 committing with n1 and n3, n4 aborting among themselves."""
    calm = sim.run(one_transfer("three_phase_commit", trace=True), seed=1)
    votes, precommits = _sent(calm, "Vote"), _sent(calm, "PreCommit")
    answer = [{"kind": "partition", "start": (votes + precommits) / 2, "end": 400, "groups": [["n3", "n4"]]}]
    ok, out = judged(capsys, "tpc.split_partition", answer)
    assert ok and "n2 committed and n3, n4 aborted" in out, out
    too_late = [{**answer[0], "start": precommits + 1}]
    rejected(capsys, "tpc.split_partition", too_late, "every participant had its pre-commit")
    too_soon = [{**answer[0], "start": votes - 2}]
    rejected(capsys, "tpc.split_partition", too_soon, "vote timeout")
    alone = [{**answer[0], "groups": [["n1"]]}]
    rejected(capsys, "tpc.split_partition", alone, "split between the coordinator and the data")
    rejected(capsys, "tpc.split_partition", [{"kind": "crash", "node": "n1", "start": 104.5, "end": 600}],
             "only 'partition'")
    rejected(capsys, "tpc.split_partition", [], "without a partition")


def test_cooperative_blocked(capsys):
    """From the fault-free trace: cutting n4 off after its vote left and before the commits leave blocks it
    while n2 and n3 commit; a coordinator crash blocks everyone with nobody knowing; section 2's schedule
    lets n4 learn from its peers."""
    calm = sim.run(one_transfer(trace=True), seed=1)
    vote, commit = _sent(calm, "Vote"), _sent(calm, "Commit")
    answer = [{"kind": "partition", "start": (vote + commit) / 2, "end": 400, "groups": [["n4"]]}]
    ok, out = judged(capsys, "tpc.cooperative_blocked", answer)
    assert ok and out.startswith("Right. n4 stayed uncertain"), out
    crash = {"kind": "crash", "node": "n1", "start": 104.5, "end": 604.5}
    rejected(capsys, "tpc.cooperative_blocked", [crash], "nobody knew the outcome")
    lost = {"kind": "loss", "probability": 1.0, "src": "n1", "dst": "n4", "start": 104.9, "end": 110}
    rejected(capsys, "tpc.cooperative_blocked", [lost, {**crash, "start": 105.5, "end": 605.5}],
             "nobody stayed uncertain longer", "commit learned from")


# -- chapter 6 ------------------------------------------------------------------------------------------------
def _quorum_rules():
    """The script of the exercise, by RabbitMQ 3.10's rules for a quorum queue without a delivery limit: a nack
    with requeue goes to the back; messages of a dead connection go ahead of those never delivered, in order."""
    queue = ["m4", "m5"]  # never delivered
    for nacked in ("m3", "m1"):
        queue.append(nacked + "*")
    return ["m0*", "m2*", *queue]


def test_requeue_order(capsys):
    """The order the rules give passes, with or without the redelivery marks; the classic queue's order, the
    delivery-limit order and the nacks reversed each get their own feedback."""
    want = _quorum_rules()
    assert judged(capsys, "rabbit.requeue_order", " ".join(want))[0]
    assert judged(capsys, "rabbit.requeue_order", [m.rstrip("*") for m in want])[0]
    rejected(capsys, "rabbit.requeue_order", "m0* m1* m2* m3* m4 m5", "classic queue")
    rejected(capsys, "rabbit.requeue_order", "m3 m1 m0 m2 m4 m5", "*with* a delivery limit")
    rejected(capsys, "rabbit.requeue_order", "m0 m2 m4 m5 m1 m3", "m3 first")
    rejected(capsys, "rabbit.requeue_order", "m4 m5 m3 m1 m0 m2", "connection died")
    rejected(capsys, "rabbit.requeue_order", "m0 m2* m4 m5 m3 m1", "'*' marks")
    rejected(capsys, "rabbit.requeue_order", "m0 m2 m4", "exactly once")


def test_x_death(capsys):
    """Three rejections and three expiries before the 4th delivery: one entry per (queue, reason), count 3,
    the wait queue's (the latest) first; the reversed order, a count of 4 and an entry per event are slips."""
    want = [("wait", "expired", 3), ("work", "rejected", 3)]
    assert judged(capsys, "rabbit.x_death", want)[0]
    assert judged(capsys, "rabbit.x_death", "wait:expired:3|work:rejected:3")[0]
    assert judged(capsys, "rabbit.x_death", [{"queue": q, "reason": r, "count": np.int64(c)} for q, r, c in want])[0]
    rejected(capsys, "rabbit.x_death", want[::-1], "most recent dead-lettering first")
    rejected(capsys, "rabbit.x_death", [("wait", "expired", 4), ("work", "rejected", 4)], "has not failed yet")
    rejected(capsys, "rabbit.x_death", [("wait", "expired", 1), ("work", "rejected", 1)] * 3, "one entry per")
    rejected(capsys, "rabbit.x_death", [("work", "rejected", 3)], "entry of its own")
    rejected(capsys, "rabbit.x_death", "nonsense", "a list of (queue, reason, count)")


# -- the notebooks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chapter, stem", [(3, "03-retries-and-dead-letters"),
                                           (4, "04-sagas-notifications-transactional-messages"),
                                           (5, "05-two-phase-commit"), (6, "06-simulation-vs-real-rabbitmq")])
def test_notebooks_check_every_exercise_even_unanswered(chapter, stem):
    """Each exercise of the chapter has a cell that starts unanswered and calls check unconditionally."""
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    for name in names(chapter):
        cells = [s for s in code if f'check("{name}", answer)' in s]
        assert len(cells) == 1, name
        assert re.search(r"^answer = None\b", cells[0], re.M) and "is not None" not in cells[0], cells[0]
