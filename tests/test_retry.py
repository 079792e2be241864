"""Retry policies: delays and jitter, the retry oracle over many seeds, broker- and consumer-side modes, storms."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from scipy import stats

import sim
from sim.config import build
from sim.errors import ScenarioError
from sim.messaging.retry import RetryPolicy, dead_letter_fraction, decision_uniform, mean_attempts
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]


def _ci95(values):
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def retry_scenario(mode, p=0.5, k=3, n=150, **retry_extra):
    """Two consumers failing each attempt with probability p, at most k attempts, then the DLQ."""
    exchanges = [{"name": "work.ex"}, {"name": "dlx", "type": "fanout"}]
    work = {"name": "work", "type": "quorum", "dead_letter_exchange": "dlx"}
    queues = [work, {"name": "dlq"}]
    bindings = [{"exchange": "work.ex", "queue": "work", "routing_key": "job"}, {"exchange": "dlx", "queue": "dlq"}]
    retry = {"mode": mode, "max_attempts": k, **retry_extra}
    if mode == "delivery_limit":  # broker-side: the quorum queue counts deliveries
        work["delivery_limit"] = k - 1
        del retry["max_attempts"]
    elif mode == "dlx_wait":  # broker-side: reject -> TTL wait queue -> back; the consumer reads x-death
        work["dead_letter_exchange"] = "wait.ex"
        exchanges.append({"name": "wait.ex", "type": "fanout"})
        queues.append({"name": "wait", "message_ttl": 20, "dead_letter_exchange": "work.ex"})
        bindings.append({"exchange": "wait.ex", "queue": "wait"})
        retry["dead_letter_exchange"] = "dlx"
    elif mode == "republish_via":  # consumer-side republish, broker-timed by a per-message TTL
        retry.update(mode="republish", via_exchange="wait.ex")
        exchanges.append({"name": "wait.ex", "type": "fanout"})
        queues.append({"name": "wait", "dead_letter_exchange": "work.ex"})
        bindings.append({"exchange": "wait.ex", "queue": "wait"})
    consumers = [{"node": c, "queue": "work", "prefetch": 10, "concurrency": 4, "failure_probability": p,
                  "retry": retry} for c in ("c1", "c2")]
    return Scenario.from_dict({
        "cluster": {"nodes": ["broker", "pub", "c1", "c2"]},
        "workload": {"clients": 0},
        "protocol": {"name": "messaging",
                     "topology": {"exchanges": exchanges, "queues": queues, "bindings": bindings},
                     "publishers": [{"node": "pub", "exchange": "work.ex", "routing_keys": ["job"], "rate": 500,
                                     "count": n}],
                     "consumers": consumers},
        "run": {"duration": "3s"},
    })


def policy(**kw):
    return build(RetryPolicy, {"mode": "requeue", **kw}, "retry")


def test_backoff_delays_fixed_exponential_and_capped():
    """Fixed delay is constant; exponential doubles from the base and stops at max_delay."""
    assert [policy(backoff="fixed", delay=30).base_delay(a) for a in (1, 2, 5)] == [30, 30, 30]
    exp = policy(backoff="exponential", delay=10, multiplier=2, max_delay=100)
    assert [exp.base_delay(a) for a in range(1, 7)] == [10, 20, 40, 80, 100, 100]
    assert policy().base_delay(3) == 0.0


def test_full_and_equal_jitter_ranges_and_means():
    """Full jitter is uniform on [0, d) (mean d/2); equal jitter on [d/2, d) (mean 3d/4)."""
    u = np.array([decision_uniform(7, "jitter", f"m{i}", 1) for i in range(20_000)])
    assert stats.kstest(u, "uniform").pvalue > 0.001
    full = policy(backoff="fixed", delay=100, jitter="full")
    equal = policy(backoff="fixed", delay=100, jitter="equal")
    f = np.array([full.delay_for(1, x) for x in u])
    e = np.array([equal.delay_for(1, x) for x in u])
    assert f.min() >= 0 and f.max() < 100 and abs(f.mean() - 50) < 1.5
    assert e.min() >= 50 and e.max() < 100 and abs(e.mean() - 75) < 1.0


def test_decisions_are_keyed_by_seed_message_and_attempt():
    """decision_uniform depends only on (seed, purpose, message id, attempt)."""
    assert decision_uniform(1, "fail", "m", 1) == decision_uniform(1, "fail", "m", 1)
    values = {decision_uniform(*key) for key in [(1, "fail", "m", 1), (2, "fail", "m", 1), (1, "crash", "m", 1),
                                                   (1, "fail", "n", 1), (1, "fail", "m", 2)]}
    assert len(values) == 5


def oracle_attempts(seed, msg_id, p, k):
    """Attempts the decision oracle prescribes: the first attempt that does not fail, or k."""
    return next(a for a in range(1, k + 1) if a == k or decision_uniform(seed, "fail", msg_id, a) >= p)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "p", "k", "seeds", "n"),
                         [("delivery_limit", 0.5, 3, 40, 200), ("republish", 0.3, 2, 20, 150)])
def test_retry_oracle_dead_letter_fraction_and_mean_attempts(mode, p, k, seeds, n):
    """Each attempt fails with probability p, at most k attempts: p^k dead-lettered, (1-p^k)/(1-p) attempts
    per message; the 95% CIs over seeds contain both, and every message follows its seeded decisions exactly."""
    fractions, attempts = [], []
    for seed in range(seeds):
        r = sim.run(retry_scenario(mode, p=p, k=k, n=n), seed=seed)
        c = r.verdicts["delivery"].counts
        assert c["lost"] == c["remaining"] == c["unconfirmed"] == c["dropped"] == 0
        assert c["processed"] + c["dead_lettered"] == c["published"] == n
        fractions.append(c["dead_lettered"] / c["published"])
        attempts.append(r.verdicts["delivery"].attempts["mean"])
        m = r.tables["messages"]
        expected = [oracle_attempts(seed, msg_id, p, k) for msg_id in m["msg_id"]]
        assert m["attempts"].tolist() == expected
        dead = m["status"] == "dead_lettered"
        assert dead.tolist() == [a == k and decision_uniform(seed, "fail", i, k) < p
                                 for a, i in zip(expected, m["msg_id"])]
    lo, hi = _ci95(fractions)
    assert lo <= dead_letter_fraction(p, k) <= hi, (lo, hi)
    lo, hi = _ci95(attempts)
    assert lo <= mean_attempts(p, k) <= hi, (lo, hi)


def test_broker_side_and_consumer_side_retries_face_the_same_decisions():
    """Every retry mode gives the same per-message outcome and attempt count for one seed."""
    tables = []
    for mode in ("requeue", "delivery_limit", "dlx_wait", "republish", "republish_via"):
        extra = {"backoff": "fixed", "delay": 5} if mode.startswith("republish") else {}
        r = sim.run(retry_scenario(mode, n=80, **extra), seed=11)
        tables.append(r.tables["messages"].set_index("msg_id")[["status", "attempts"]].sort_index())
        assert r.verdicts["delivery"]["dead_lettered"] > 0
    for t in tables[1:]:
        pdt.assert_frame_equal(tables[0], t)


def test_retry_delays_appear_in_the_event_times():
    """Exponential backoff with full jitter: the consumer nacks exactly delay_for(attempt, u) after a failure."""
    r = sim.run(retry_scenario("requeue", p=0.6, k=4, n=60, backoff="exponential", delay=20,
                                     jitter="full"), seed=3)
    ev = r.tables["message_events"]
    pol = r.scenario.protocol.consumers[0].retry
    fails = ev[ev["event"] == "fail"].set_index(["msg_id", "attempt"])["time"]
    nacks = ev[(ev["event"] == "nack")].set_index(["msg_id", "attempt"])["time"]
    assert len(nacks) > 20
    for (msg_id, attempt), t in nacks.items():
        expected = pol.delay_for(attempt, decision_uniform(r.seed, "jitter", msg_id, attempt))
        assert t - fails[(msg_id, attempt)] == pytest.approx(expected)


def test_ttl_wait_queue_delays_each_retry_by_its_ttl():
    """dlx_wait: a retry is processed no sooner than the wait queue's 20 ms TTL after the rejection."""
    r = sim.run(retry_scenario("dlx_wait", n=60), seed=2)
    ev = r.tables["message_events"]
    rejected = ev[(ev["event"] == "reject") & (ev["reason"] == "retry")].set_index(["msg_id", "attempt"])["time"]
    retried = ev[ev["event"] == "process"].set_index(["msg_id", "attempt"])["time"]
    gaps = [retried[(m, a + 1)] - t for (m, a), t in rejected.items()]
    assert len(gaps) > 10 and min(gaps) >= 20.0


@pytest.mark.parametrize(("retry", "path", "message"), [
    ({"mode": "none", "max_attempts": 3}, "retry.max_attempts", "exactly one attempt"),
    ({"mode": "requeue", "jitter": "full"}, "retry.jitter", "needs a delay"),
    ({"mode": "delivery_limit", "max_attempts": 2}, "retry.max_attempts", "delivery_limit decides"),
    ({"mode": "dlx_wait", "backoff": "fixed"}, "retry.backoff", "message_ttl is the delay"),
    ({"mode": "dlx_wait", "max_attempts": 3}, "retry.dead_letter_exchange", "final dead-letter queue"),
    ({"mode": "requeue", "via_exchange": "x"}, "retry.via_exchange", "only for mode 'republish'"),
    ({"mode": "requeue", "backoff": "exponential", "delay": 10, "max_delay": 5}, "retry.max_delay", ">= delay"),
    ({"mode": "forever"}, "retry.mode", "must be one of"),
])
def test_retry_policy_validation(retry, path, message):
    """Impossible retry policies are rejected with the field path."""
    with pytest.raises(ScenarioError) as err:
        build(RetryPolicy, retry, "retry")
    assert err.value.path == path and message in err.value.reason


def test_retry_storm_immediate_retry_vs_backoff_with_jitter(tmp_path):
    """Around a downstream outage, immediate retry offers more load, wastes more calls and drains later (or never)
    than exponential backoff with full jitter; the experiment writes its CSVs and figure."""
    spec = importlib.util.spec_from_file_location("retry_storm", ROOT / "experiments" / "retry_storm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--seeds", "1", "--out", str(tmp_path), "--executor", "serial"]) == 0
    assert (tmp_path / "retry_storm.png").stat().st_size > 10_000
    table = pd.read_csv(tmp_path / "retry_storm.csv").set_index("policy")
    assert len(table) == 2
    imm, bj = table.loc["immediate"], table.loc["backoff_jitter"]
    assert imm["outage_attempt_rate"] > 1.5 * bj["outage_attempt_rate"]
    assert imm["peak_attempt_rate"] > bj["peak_attempt_rate"]
    assert imm["downstream_calls_after"] > 1.5 * bj["downstream_calls_after"]
    assert imm["wasted_calls_after"] > 3 * bj["wasted_calls_after"]
    assert np.isfinite(bj["drain_time"]) and bj["drain_time"] < 3 * bj["drain_predicted"]
    assert not np.isfinite(imm["drain_time"]) or imm["drain_time"] > bj["drain_time"]
    assert bj["processed"] == bj["published"]
