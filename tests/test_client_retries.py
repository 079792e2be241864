"""Client retries: policies and their validation, per-attempt records, duplicates, idempotency keys, budgets, storms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import sim
from sim.backoff import capped_exponential, decorrelated, jittered
from sim.checkers import check_linearizable
from sim.checkers.duplicates import duplicate_applications
from sim.client_retry import ClientRetry
from sim.errors import ScenarioError
from sim.harness import Harness
from sim.kernel.messages import CAS_MISMATCH
from sim.messaging.retry import RetryPolicy
from sim.protocols.dedup import DedupConfig, DedupTable
from sim.replication.raft import Entry
from sim.replication.raft.messages import AppendReply
from sim.replication.raft.node import CasMismatch
from sim.scenario import Scenario
from tests.test_raft import scenario as raft_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "scenarios" / "client-retries.toml"
SEEDS = range(1, 9)

# one client next to the owner n1, talking only to it over a link that loses each message with probability P;
# constant latency L each way, so an attempt either answers after 2 L or times out after T
P, L, T = 0.2, 1.0, 20.0


def lossy(retry: dict, seed: int = 1, *, p: float = P, rate: float = 200.0, dedup: dict | None = None,
          duration: str = "5s") -> sim.Result:
    protocol = {"name": "single_copy", "owner": "n1"}
    if dedup is not None:
        protocol["dedup"] = dedup
    return sim.run(Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"loss": p, "latency": f"{L}ms", "client_latency": f"{L}ms"},
        "workload": {"clients": 1, "homes": ["n1"], "rate": rate, "keys": 5, "timeout": f"{T}ms", "retry": retry},
        "protocol": protocol,
        "run": {"duration": duration, "drain": "2s", "seed": seed},
    }))


# -- configuration ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("retry, path, message", [
    ({"policy": "sometimes"}, "workload.retry.policy", "must be one of 'none', 'immediate', 'fixed', 'exponential'"),
    ({"max_attempts": 3}, "workload.retry.max_attempts", "policy 'none' makes exactly one attempt"),
    ({"policy": "fixed", "max_attempts": 0}, "workload.retry.max_attempts", "must be >= 1"),
    ({"policy": "immediate", "jitter": "full"}, "workload.retry.jitter", "needs a delay"),
    ({"policy": "fixed", "jitter": "decorrelated"}, "workload.retry.jitter", "needs policy = 'exponential'"),
    ({"policy": "exponential", "jitter": "half"}, "workload.retry.jitter", "'none', 'full', 'equal', 'decorrelated'"),
    ({"policy": "exponential", "delay": "2s", "max_delay": "1s"}, "workload.retry.max_delay", "must be >= delay"),
    ({"policy": "fixed", "delay": -1}, "workload.retry.delay", "must not be negative"),
    ({"policy": "exponential", "multiplier": 0.5}, "workload.retry.multiplier", ">= 1.0"),
    ({"policy": "fixed", "retry_on": []}, "workload.retry.retry_on", "at least one of: info, fail"),
    ({"policy": "fixed", "retry_on": ["ok"]}, "workload.retry.retry_on[0]", "must be 'info' or 'fail'"),
    ({"policy": "fixed", "retry_on": ["info", "info"]}, "workload.retry.retry_on", "lists an outcome twice"),
    ({"budget_ratio": 0.1}, "workload.retry.budget_ratio", "policy 'none' never retries"),
    ({"policy": "fixed", "budget_ratio": -0.1}, "workload.retry.budget_ratio", ">= 0"),
    ({"policy": "fixed", "budget_burst": 0.5}, "workload.retry.budget_burst", ">= 1.0"),
    ({"policy": "fixed", "tries": 3}, "workload.retry.tries", "unknown key; accepted keys: policy"),
    ({"policy": "immediate", "delay": "50ms"}, "workload.retry.delay", "only for policy 'fixed' or 'exponential'"),
    ({"policy": "fixed", "multiplier": 3}, "workload.retry.multiplier", "only for policy 'exponential'"),
    ({"policy": "fixed", "max_delay": "1s"}, "workload.retry.max_delay", "only for policy 'exponential'"),
    ({"policy": "immediate", "budget_burst": 5}, "workload.retry.budget_burst", "needs budget_ratio"),
])
def test_bad_retry_settings_name_the_field(retry, path, message):
    """A wrong retry setting is a ScenarioError naming the field and what it accepts."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"protocol": {"name": "single_copy"}, "workload": {"retry": retry}})
    assert err.value.path == path and message in str(err.value), str(err.value)


def test_idempotency_keys_need_a_protocol_that_honours_them():
    """Keys sent to a protocol without a duplicate table would change nothing: refused, naming who honours them."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"protocol": {"name": "quorum"},
                            "workload": {"retry": {"policy": "immediate", "idempotency_keys": True}}})
    assert err.value.path == "workload.retry.idempotency_keys"
    assert "'quorum' keeps no duplicate table" in str(err.value)
    assert "raft, single_copy" in str(err.value)


@pytest.mark.parametrize("dedup, path", [({"ttl": 0}, "protocol.dedup.ttl"),
                                         ({"max_entries": 0}, "protocol.dedup.max_entries"),
                                         ({"size": 3}, "protocol.dedup.size")])
def test_bad_dedup_bounds_name_the_field(dedup, path):
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"protocol": {"name": "single_copy", "dedup": dedup}})
    assert err.value.path == path


def test_retry_settings_round_trip_through_toml():
    """A scenario with retries written as TOML reads back equal (and from Python objects too)."""
    s = Scenario.from_toml(EXAMPLE)
    assert Scenario.from_toml_string(s.to_toml()) == s
    retry = ClientRetry(policy="exponential", jitter="decorrelated", max_attempts=5)
    assert s.variant({"workload.retry": retry}).workload.retry == retry


# -- delays ----------------------------------------------------------------------------------------------------
@given(st.floats(0, 1e4), st.floats(1, 4), st.floats(0, 1e5), st.integers(1, 3000),
       st.sampled_from(["none", "full", "equal"]), st.floats(0, 1, exclude_max=True))
def test_messaging_delays_are_unchanged_by_the_shared_helper(base, multiplier, cap, attempt, jitter, u):
    """The consumer retry policy's delays equal the formula it had before sharing sim.backoff."""
    cap = max(cap, base)
    policy = RetryPolicy(mode="requeue", backoff="exponential", delay=base, multiplier=multiplier, max_delay=cap,
                         jitter=jitter)
    try:
        d = min(cap, base * multiplier ** (attempt - 1))
    except OverflowError:
        d = cap
    want = {"none": d, "full": u * d, "equal": d / 2 + u * d / 2}[jitter]
    assert policy.delay_for(attempt, u) == want


@given(st.floats(1, 1e3), st.floats(1, 1e3), st.floats(1, 1e5), st.floats(0, 1, exclude_max=True))
def test_decorrelated_jitter_stays_between_base_and_three_times_the_last(base, previous, cap, u):
    cap = max(cap, base)
    d = decorrelated(base, cap, previous, u)
    assert base <= d <= cap and d <= max(base, 3 * previous)


def test_jitter_ranges_and_policies():
    """full in [0, d), equal in [d/2, d); immediate waits 0; exponential doubles to the cap."""
    assert jittered(100, "full", 0.0) == 0 and jittered(100, "full", 0.999) < 100
    assert jittered(100, "equal", 0.0) == 50 and jittered(100, "equal", 0.999) < 100
    assert [capped_exponential(10, 2, 50, n) for n in range(1, 6)] == [10, 20, 40, 50, 50]
    assert ClientRetry(policy="immediate").delay_after(3, 0.0, 0.7) == 0.0
    exp = ClientRetry(policy="exponential", delay=10, max_delay=50)
    assert [exp.delay_after(n, 0.0, 0.5) for n in range(1, 6)] == [10, 20, 40, 50, 50]
    assert ClientRetry(policy="fixed", delay=30, jitter="equal").delay_after(4, 0.0, 0.5) == 22.5
    dec = ClientRetry(policy="exponential", delay=10, max_delay=1000, jitter="decorrelated")
    # the first draw is in [base, 3 * base): the previous delay counts as base
    assert dec.delay_after(1, 0.0, 0.0) == 10 and dec.delay_after(1, 0.0, 0.5) == 20
    assert dec.delay_after(2, 100.0, 0.5) == 10 + 0.5 * (300 - 10)


# -- default and records ---------------------------------------------------------------------------------------
def test_no_retry_is_the_default_and_changes_nothing():
    """Without retries: one attempt per operation, no attempts table; an explicit policy 'none' is the same run."""
    base = {"cluster": {"count": 3}, "network": {"loss": 0.1}, "protocol": {"name": "single_copy"},
            "run": {"duration": "2s", "seed": 5}}
    plain = sim.run(Scenario.from_dict(base))
    explicit = sim.run(Scenario.from_dict({**base, "workload": {"retry": {"policy": "none"}}}))
    assert (plain.history["attempts"] == 1).all() and "attempts" not in plain.tables
    assert "duplicates" not in plain.verdicts and not any(k.startswith("retry.") for k in plain.summary)
    pd.testing.assert_frame_equal(plain.history, explicit.history)


def test_attempts_table_has_one_row_per_attempt():
    """Each operation's attempts are numbered 1..n, the first uses the operation's id, and the last one's outcome
    is the operation's when it is ok."""
    r = lossy({"policy": "immediate", "max_attempts": 4})
    h, a = r.history, r.tables["attempts"]
    assert len(h) == h["op_id"].nunique()  # one history row per operation
    per_op = a.groupby("op_id")["attempt"].agg(["count", "min", "max"])
    counts = h.set_index("op_id")["attempts"]
    assert (per_op["count"] == counts.loc[per_op.index]).all() and (per_op["min"] == 1).all()
    assert (per_op["max"] == per_op["count"]).all()
    assert (h["attempts"] > 1).sum() > 50 and h["attempts"].max() == 4
    first = a[a["attempt"] == 1]
    assert (first["request_id"] == first["op_id"]).all()
    assert a["request_id"].is_unique
    last = a.sort_values("attempt").groupby("op_id").tail(1).set_index("op_id")
    ok = h[h["outcome"] == "ok"].set_index("op_id")
    assert (last.loc[ok.index, "outcome"] == "ok").all()
    assert np.allclose(last.loc[ok.index, "end"], ok["complete"])


def test_a_fail_after_a_timeout_is_info():
    """An operation whose attempt timed out may have taken effect: a later refusal does not make it a fail."""
    r = sim.run(Scenario.from_dict({
        "cluster": {"count": 3},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": 0}]},
        "workload": {"clients": 2, "rate": 50, "target": "round_robin", "timeout": "20ms",
                     "retry": {"policy": "immediate", "max_attempts": 2}},
        "protocol": {"name": "single_copy", "owner": "n1", "forward": False},
        "run": {"duration": "2s", "seed": 2},
    }))
    a = r.tables["attempts"]
    saw_info = a.groupby("op_id")["outcome"].agg(lambda s: (s == "info").any())
    outcome = r.history.set_index("op_id")["outcome"]
    assert (outcome.loc[saw_info[saw_info].index] == "info").all()
    assert (outcome.loc[saw_info[~saw_info].index] == "fail").all()
    # both kinds happen: n1 is down (timeouts), n2 and n3 refuse (not served here)
    assert saw_info.sum() > 20 and (~saw_info).sum() > 20
    mixed = a.groupby("op_id")["outcome"].agg(lambda s: s.iloc[0] == "info" and s.iloc[-1] == "fail")
    assert mixed.sum() > 10


def test_same_seed_same_attempts():
    """Jittered retries draw from the client's own stream: the same seed gives the same attempts."""
    retry = {"policy": "exponential", "delay": "5ms", "jitter": "full", "max_attempts": 5}
    one, two = lossy(retry, seed=7, duration="2s"), lossy(retry, seed=7, duration="2s")
    pd.testing.assert_frame_equal(one.tables["attempts"], two.tables["attempts"])
    other = lossy(retry, seed=8, duration="2s")
    assert not one.tables["attempts"]["send"].equals(other.tables["attempts"]["send"])


# -- closed forms over seeds -------------------------------------------------------------------------------------
def _ci(samples: list[float], level: float = 0.99) -> tuple[float, float]:
    mean = float(np.mean(samples))
    half = stats.t.ppf((1 + level) / 2, len(samples) - 1) * stats.sem(samples)
    return mean - half, mean + half


@pytest.mark.parametrize("k", [2, 4])
def test_retries_raise_availability_and_latency_as_predicted(k):
    """Each message is lost with probability p, so an attempt succeeds with 1 - q, q = 1 - (1-p)^2.

    Retrying timeouts up to k attempts: availability 1 - q^k (1 - q without retries); an ok operation took
    j attempts with probability q^(j-1) (1-q) / (1 - q^k), so its latency is 2 L + T (j - 1)."""
    q = 1 - (1 - P) ** 2
    j = np.arange(1, k + 1)
    pj = q ** (j - 1) * (1 - q) / (1 - q**k)
    want_latency = 2 * L + T * float(np.sum((j - 1) * pj))
    avail, latency, avail_none = [], [], []
    for seed in SEEDS:
        h = lossy({"policy": "immediate", "max_attempts": k, "retry_on": ["info"]}, seed, duration="3s").history
        avail.append(float((h["outcome"] == "ok").mean()))
        ok = h[h["outcome"] == "ok"]
        latency.append(float((ok["complete"] - ok["invoke"]).mean()))
        h0 = lossy({}, seed, duration="3s").history
        avail_none.append(float((h0["outcome"] == "ok").mean()))
    lo, hi = _ci(avail)
    assert lo <= 1 - q**k <= hi, (lo, 1 - q**k, hi)
    lo, hi = _ci(avail_none)
    assert lo <= 1 - q <= hi
    lo, hi = _ci(latency)
    assert lo <= want_latency <= hi, (lo, want_latency, hi)
    assert min(avail) > max(avail_none)  # retries turn info into ok ...
    assert want_latency > 2 * L + 1  # ... at a latency cost


def test_retried_writes_are_applied_twice_without_keys_and_once_with_them():
    """Without keys a write reaches the owner on every attempt whose request is not lost: (1-p) E[attempts]
    applications on average. With keys at most one, and exactly one unless every request was lost (p^k)."""
    k = 3
    q = 1 - (1 - P) ** 2
    mean_attempts = (1 - q**k) / (1 - q)
    plain, keyed = [], []
    for seed in SEEDS:
        r = lossy({"policy": "immediate", "max_attempts": k, "retry_on": ["info"]}, seed, duration="3s")
        found = r.verdicts["duplicates"]
        assert not found.ok and found.duplicated > 0 and found.applied_after_fail == 0 and found.lost_ok == 0
        plain.append(float(found.table["applied"].mean()))
        rk = lossy({"policy": "immediate", "max_attempts": k, "retry_on": ["info"], "idempotency_keys": True}, seed,
                   duration="3s")
        found = rk.verdicts["duplicates"]
        assert found.ok and found.duplicated == 0 and found.lost_ok == 0
        assert found.table["applied"].max() == 1
        assert rk.summary["protocol.dedup_hits"] > 0
        keyed.append(float(found.table["applied"].mean()))
    lo, hi = _ci(plain)
    assert lo <= (1 - P) * mean_attempts <= hi, (lo, (1 - P) * mean_attempts, hi)
    lo, hi = _ci(keyed)
    assert lo <= 1 - P**k <= hi, (lo, 1 - P**k, hi)


# -- the duplicate table's bound ---------------------------------------------------------------------------------
def test_past_the_bound_a_late_retry_is_applied_again():
    """A key that expired before the retry came is forgotten: with a ttl shorter than timeout + delay the keyed run
    applies exactly what the keyless one does; a ttl that outlasts the retries stops every duplicate."""
    retry = {"policy": "fixed", "delay": "30ms", "max_attempts": 3, "retry_on": ["info"]}
    none = lossy(retry, 3, duration="2s").verdicts["duplicates"]
    short = lossy({**retry, "idempotency_keys": True}, 3, duration="2s", dedup={"ttl": "40ms"})
    long = lossy({**retry, "idempotency_keys": True}, 3, duration="2s", dedup={"ttl": "1s"})
    assert none.duplicated > 10
    pd.testing.assert_series_equal(short.verdicts["duplicates"].table["applied"], none.table["applied"])
    assert short.summary["protocol.dedup_hits"] == 0 and short.summary["protocol.dedup_expired"] > 0
    assert long.verdicts["duplicates"].duplicated == 0


def test_a_full_table_evicts_the_oldest_key_and_its_retry_is_applied_again():
    """With room for one key, another operation's key pushes the first out before its retry arrives."""
    retry = {"policy": "fixed", "delay": "30ms", "max_attempts": 3, "retry_on": ["info"], "idempotency_keys": True}
    tiny = lossy(retry, 3, duration="2s", dedup={"max_entries": 1})
    roomy = lossy(retry, 3, duration="2s", dedup={"max_entries": 1000})
    assert tiny.summary["protocol.dedup_evicted"] > 0 and tiny.verdicts["duplicates"].duplicated > 0
    assert roomy.summary["protocol.dedup_evicted"] == 0 and roomy.verdicts["duplicates"].duplicated == 0


def test_dedup_table_expires_by_age_and_evicts_by_insertion_order():
    table = DedupTable(DedupConfig(ttl=100.0, max_entries=2))
    table.store("a", 0.0, 1)
    assert table.lookup("a", 99.9) == (True, 1)
    assert table.lookup("a", 100.0) == (False, None) and table.expired == 1  # an entry lives exactly ttl
    table.store("b", 200.0, 2)
    table.store("c", 210.0, 3)
    table.store("d", 220.0, 4)  # over two entries: the oldest (b) goes
    assert table.evicted == 1 and table.lookup("b", 221.0) == (False, None)
    assert table.lookup("c", 221.0) == (True, 3) and len(table) == 2


# -- the checker on known inputs ---------------------------------------------------------------------------------
def _history(rows):
    return pd.DataFrame(rows, columns=["op_id", "client", "op", "key", "value", "outcome"])


def test_checker_rejects_a_write_applied_twice_and_one_applied_after_fail():
    history = _history([(1, "c0", "write", 0, 10, "ok"), (2, "c0", "write", 0, 11, "fail"),
                        (3, "c0", "read", 0, 10, "ok"), (4, "c1", "write", 1, 12, "ok")])
    twice = duplicate_applications(history, pd.DataFrame({"value": [10, 10, 12]}))
    assert not twice.ok and twice.duplicated == 1 and twice.extra == 1 and twice.writes == 3
    after_fail = duplicate_applications(history, pd.DataFrame({"value": [10, 11, 12]}))
    assert not after_fail.ok and after_fail.applied_after_fail == 1 and after_fail.duplicated == 0
    clean = duplicate_applications(history, pd.DataFrame({"value": [12, 10]}))
    assert clean.ok and clean.extra == 0 and clean.lost_ok == 0
    lost = duplicate_applications(history, pd.DataFrame({"value": [10]}))
    assert lost.ok and lost.lost_ok == 1  # an ok write nobody applied is reported, not a duplicate


def test_checker_counts_per_replica_and_ignores_a_replayed_slot():
    """Each replica applies every write once; the same log slot applied again (a replay after a restart) is no
    duplicate, the same value at two slots of one replica is."""
    history = _history([(1, "c0", "write", 0, 10, "ok"), (2, "c0", "write", 0, 11, "ok")])
    replicated = pd.DataFrame({"node": ["n1", "n2", "n3", "n1", "n2", "n3"], "slot": [1, 1, 1, 2, 2, 2],
                               "value": [10, 10, 10, 11, 11, 11]})
    assert duplicate_applications(history, replicated).ok
    replay = pd.concat([replicated, replicated[replicated["node"] == "n2"]], ignore_index=True)
    assert duplicate_applications(history, replay).ok
    twice = pd.concat([replicated, pd.DataFrame({"node": ["n3"], "slot": [3], "value": [10]})], ignore_index=True)
    found = duplicate_applications(history, twice)
    assert not found.ok and found.duplicated == 1 and found.extra == 1


def test_checker_refuses_inputs_it_cannot_read():
    history = _history([(1, "c0", "write", 0, 10, "ok"), (2, "c0", "write", 0, 10, "ok")])
    with pytest.raises(ValueError, match="values must identify operations"):
        duplicate_applications(history, pd.DataFrame({"value": [10]}))
    with pytest.raises(ValueError, match="no write in the history wrote"):
        duplicate_applications(history.iloc[:1], pd.DataFrame({"value": [10, 99]}))


# -- outages: storms and budgets ---------------------------------------------------------------------------------
OUTAGE = (1000.0, 2500.0)


def outage(retry: dict, seed: int) -> sim.Result:
    """Six open-loop clients; the owner n1 is down for 1.5 s, so every attempt in that time times out."""
    return sim.run(Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"latency": "1ms", "client_latency": "0.5ms"},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": OUTAGE[0], "end": OUTAGE[1]}]},
        "workload": {"clients": 6, "rate": 20, "timeout": "100ms", "retry": retry},
        "protocol": {"name": "single_copy", "owner": "n1"},
        "run": {"duration": "4s", "seed": seed},
    }))


def multiplication(r: sim.Result) -> float:
    """Attempts sent during the outage per operation invoked during it: the load the clients add."""
    return float(_sent_in_outage(r) / _invoked_in_outage(r))


def _sent_in_outage(r: sim.Result) -> int:
    a = r.tables["attempts"]
    return int(((a["send"] >= OUTAGE[0]) & (a["send"] < OUTAGE[1])).sum())


def _invoked_in_outage(r: sim.Result) -> int:
    h = r.history
    return int(((h["invoke"] >= OUTAGE[0]) & (h["invoke"] < OUTAGE[1])).sum())


def test_immediate_retries_multiply_the_load_of_an_outage_as_predicted():
    """An operation invoked at s in an outage [a, b) retries every timeout T: min(k, ceil((b - s) / T)) attempts in
    it, on average k - T k (k-1) / (2 D) over the outage's length D. Backoff with jitter spreads the same attempts
    past the outage (fewer inside it); a retry budget caps them near 1 + ratio."""
    k, timeout, span = 5, 100.0, OUTAGE[1] - OUTAGE[0]
    want = k - timeout * k * (k - 1) / (2 * span)
    immediate, backoff = [], []
    for seed in range(1, 7):
        immediate.append(multiplication(outage({"policy": "immediate", "max_attempts": k}, seed)))
        backoff.append(multiplication(outage({"policy": "exponential", "delay": "200ms", "max_delay": "5s",
                                              "jitter": "full", "max_attempts": k}, seed)))
        budget = outage({"policy": "exponential", "delay": "200ms", "max_delay": "5s", "jitter": "full",
                         "max_attempts": k, "budget_ratio": 0.1, "budget_burst": 2}, seed)
        # a client enters the outage with at most burst tokens and earns ratio per first attempt in it
        invoked = _invoked_in_outage(budget)
        assert _sent_in_outage(budget) <= invoked * (1 + 0.1) + 6 * 2
        assert multiplication(budget) < 1.2
    lo, hi = _ci(immediate)
    assert lo <= want <= hi, (lo, want, hi)
    assert max(backoff) < min(immediate)


def test_a_budget_bounds_each_clients_retries():
    """However long the outage, a client's retries never exceed burst + ratio x its operations."""
    r = outage({"policy": "immediate", "max_attempts": 10, "budget_ratio": 0.2, "budget_burst": 3}, 4)
    h = r.history
    per_client = h.groupby("client").agg(ops=("op_id", "size"), attempts=("attempts", "sum"))
    retries = per_client["attempts"] - per_client["ops"]
    assert (retries <= 3 + 0.2 * per_client["ops"]).all()
    assert r.summary["retry.budget_denied"] > 0


# -- the example scenario ----------------------------------------------------------------------------------------
def test_the_example_scenario_applies_each_write_once_and_twice_without_keys():
    """experiments/scenarios/client-retries.toml: keys stop duplicates that the same run without keys has."""
    s = Scenario.from_toml(EXAMPLE)
    r = sim.run(s)
    assert r.verdicts["duplicates"].ok and r.summary["retry.retried_ops"] > 0
    assert r.summary["protocol.dedup_hits"] > 0
    without = sim.run(s.variant({"workload.retry.idempotency_keys": False}))
    assert not without.verdicts["duplicates"].ok and without.verdicts["duplicates"].duplicated > 0


def test_the_readme_retry_examples_are_valid_scenarios():
    """The README's TOML blocks that set retries or the duplicate table build (with a protocol where they lack one)."""
    import re

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    retry_blocks = [b for b in blocks if "[workload.retry]" in b]
    assert len(retry_blocks) >= 2
    for block in retry_blocks:
        s = Scenario.from_toml_string(block)
        assert s.workload.retry.policy == "exponential" and s.workload.retry.jitter == "full"


# -- raft -----------------------------------------------------------------------------------------------------
def raft_run(keys: bool) -> sim.Result:
    return sim.run(Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"loss": 0.1},
        "faults": {"schedule": [{"kind": "crash", "node": "@leader", "start": "2s", "end": "3s"}]},
        "workload": {"timeout": "50ms", "retry": {"policy": "immediate", "max_attempts": 4,
                                                  "idempotency_keys": keys}},
        "protocol": {"name": "raft"},
        "run": {"duration": "5s", "seed": 1},
    }))


def test_raft_applies_retried_writes_twice_without_keys_and_once_with_them():
    """A retry is a new log entry; with keys every replica's state machine skips the second one, the same way."""
    plain, keyed = raft_run(False), raft_run(True)
    assert plain.verdicts["duplicates"].duplicated > 0
    found = keyed.verdicts["duplicates"]
    assert found.ok and found.duplicated == 0 and keyed.summary["protocol.dedup_hits"] > 0
    applied = keyed.tables["applications"]
    # the crashed leader replayed its log after the restart: the same slots again, not counted as duplicates
    assert applied.duplicated(["node", "slot"]).any()
    # every replica kept the same keys: the same (slot, value) pairs up to the shortest one's last slot
    last = applied.groupby("node")["slot"].max().min()
    common = applied[applied["slot"] <= last].drop_duplicates(["node", "slot"])
    per_node = {node: list(zip(g["slot"], g["value"])) for node, g in common.sort_values("slot").groupby("node")}
    assert len(per_node) == 3 and len({tuple(v) for v in per_node.values()}) == 1


# -- compare-and-set ---------------------------------------------------------------------------------------------
def cas_run(keys: bool, protocol: str = "single_copy", seed: int = 1, **workload: Any) -> sim.Result:
    """Three clients next to n1 contending with cas on two keys over links that lose 20% of messages."""
    proto: dict[str, Any] = {"name": protocol}
    if protocol == "single_copy":
        proto["owner"] = "n1"
    return sim.run(Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"loss": 0.2, "latency": "1ms", "client_latency": "1ms"},
        "workload": {"clients": 3, "homes": ["n1"], "rate": 100, "keys": 2, "cas_fraction": 0.6,
                     "read_fraction": 0.2, "timeout": "20ms",
                     "retry": {"policy": "immediate", "max_attempts": 3, "retry_on": ["info"],
                               "idempotency_keys": keys}, **workload},
        "protocol": proto,
        "run": {"duration": "3s", "drain": "1s", "seed": seed},
    }))


def _cas_applications(r: sim.Result) -> pd.DataFrame:
    """Each cas operation with how often it was applied (most on one node) and whether the request that applied it
    was an earlier attempt than the one whose answer the client took."""
    h, a = r.history, r.tables["attempts"]
    cas = h[h["op"] == "cas"].set_index("op_id")
    applied = r.verdicts["duplicates"].table.set_index("op_id").loc[cas.index, "applied"]
    last_request = a.sort_values("attempt").groupby("op_id")["request_id"].last()
    app = r.tables["applications"].drop_duplicates(["node", "slot"])
    by_value = app.groupby("value")["request_id"].first()
    new = cas["value"].map(lambda pair: pair[1])
    applying = new.map(by_value)
    return pd.DataFrame({"outcome": cas["outcome"], "error": cas["error"], "attempts": cas["attempts"],
                         "applied": applied, "earlier": applying.notna() & (applying != last_request.loc[cas.index])})


@pytest.mark.parametrize("protocol", ["single_copy", "raft"])
def test_a_retried_cas_is_answered_from_the_key_table_and_applied_once(protocol):
    """A cas whose first attempt applied but timed out: without keys its retry finds the value it wrote itself,
    fails its precondition and the operation ends info; with keys the server answers the retry with its first
    decision, so the operation ends ok, applied once. A keyed precondition failure is the operation's answer:
    fail even after a timed-out attempt, and never applied. Both are linearizable in the keyed run."""
    plain, keyed = _cas_applications(cas_run(False, protocol)), _cas_applications(cas_run(True, protocol))
    for ops in (plain, keyed):
        assert ops["applied"].max() == 1  # a cas guards itself: never applied twice
        assert not ((ops["outcome"] == "ok") & (ops["applied"] == 0)).any()
        assert not ((ops["outcome"] == "fail") & (ops["applied"] > 0)).any()
    own_value = (plain["outcome"] == "info") & (plain["error"] == CAS_MISMATCH) & (plain["applied"] == 1)
    assert own_value.sum() >= 5 and not (plain["outcome"] == "ok").loc[plain["earlier"]].any()
    from_table = (keyed["outcome"] == "ok") & keyed["earlier"]
    assert from_table.sum() >= 5 and (keyed["applied"].loc[from_table] == 1).all()
    assert not ((keyed["outcome"] == "info") & (keyed["error"] == CAS_MISMATCH)).any()
    decided = (keyed["outcome"] == "fail") & (keyed["error"] == CAS_MISMATCH) & (keyed["attempts"] > 1)
    assert decided.sum() >= 5 and (keyed["applied"].loc[decided] == 0).all()



def test_raft_decides_a_keyed_cas_once():
    """Raft's state machine, driven by hand: a keyed cas's retry (a new op id) gets the first decision, applied or
    not, even when the key's value would now let it apply; without a key the retry is decided afresh."""
    for keyed in (True, False):
        h = Harness(raft_scenario(protocol={}, workload={"clients": 0, "retry": {"policy": "immediate",
                                                                               "idempotency_keys": keyed}}))
        n1 = h.nodes["n1"]
        n1._persist(1, "n1")
        n1._become_leader()
        key = (lambda k: k) if keyed else (lambda k: None)
        entries = [Entry(1, 11, "cas", 0, (None, "a"), key(11), 1.0),  # applies: key 0 was never written
                   Entry(1, 12, "cas", 0, (None, "a"), key(11), 2.0),  # its retry
                   Entry(1, 13, "cas", 1, ("z", "b"), key(13), 3.0),  # finds None: not applied
                   Entry(1, 14, "write", 1, "z", key(14), 4.0),  # now key 1 holds what the cas expected
                   Entry(1, 15, "cas", 1, ("z", "b"), key(13), 5.0)]  # the retry of the cas that missed
        n1.log.extend(entries)
        last = n1.log_start + len(n1.log) - 1
        for peer in ("n2", "n3"):
            h.deliver("n1", AppendReply(1, True, last, 0, 0, 1), src=peer)
        assert n1.last_applied == last and n1.results[11] is None and n1.results[13] == CasMismatch(None)
        if keyed:
            assert n1.results[12] is None and n1.results[15] == CasMismatch(None)
            assert n1.replica_state() == {0: "a", 1: "z"}
        else:
            assert n1.results[12] == CasMismatch("a") and n1.results[15] is None
            assert n1.replica_state() == {0: "a", 1: "b"}

def test_keyed_cas_retries_stay_linearizable():
    """The keyed runs on both protocols (answers from the key table, fails after timeouts) pass the checker."""
    for protocol in ("single_copy", "raft"):
        r = cas_run(True, protocol, seed=2)
        assert r.verdicts["duplicates"].ok
        assert check_linearizable(r.history, time_limit=30).linearizable is True, protocol


def test_a_precondition_failure_is_not_retried():
    """The server decided the cas: an attempt ending 'precondition failed' is its operation's last attempt,
    even with retry_on = ["info", "fail"] and attempts left."""
    r = cas_run(False, retry={"policy": "immediate", "max_attempts": 3})
    a = r.tables["attempts"]
    last = a.groupby("op_id")["attempt"].transform("max")
    missed = a["error"] == CAS_MISMATCH
    assert missed.sum() > 50 and (a.loc[missed, "attempt"] == last[missed]).all()
    assert (a["attempt"] > 1).sum() > 50  # other outcomes were retried


def test_a_cas_client_forgets_a_key_by_the_operations_outcome_not_each_attempt():
    """A cas client remembers the value of its last ok operation on a key and forgets it after a cas that ended
    fail or info, judging the operation when it ends, not its attempts: while an operation whose first attempt
    timed out is being retried, the client's other operations on the key still expect what it knew before."""
    r = cas_run(True, "single_copy")
    h, a = r.history, r.tables["attempts"]
    first_end = a[a["attempt"] == 1].set_index("op_id")["end"]
    checked = exercised = 0
    for _client, ops in h.groupby("client"):
        # the client's view changes when an operation ends: replay ends and invocations in time order
        events = sorted([(row.complete, 0, row) for row in ops.itertuples()]
                        + [(row.invoke, 1, row) for row in ops.itertuples()], key=lambda e: (e[0], e[1]))
        known: dict[Any, Any] = {}
        for _time, invoked, row in events:
            if not invoked:
                if row.outcome == "ok":
                    known[row.key] = row.value if row.op != "cas" else row.value[1]
                elif row.op == "cas":
                    known.pop(row.key, None)
                continue
            if row.op == "cas":
                assert row.value[0] == known.get(row.key), row
                checked += 1
                # another operation of this client on the key is between attempts, and the client knows a value
                busy = ops[(ops["key"] == row.key) & (ops["attempts"] > 1) & (ops["invoke"] < row.invoke)
                           & (ops["complete"] > row.invoke)]
                exercised += bool(len(busy)) and bool((first_end.loc[busy["op_id"]] < row.invoke).any()) \
                    and row.key in known
    assert checked == (h["op"] == "cas").sum() and exercised >= 5


# -- invariants over random policies ----------------------------------------------------------------------------
POLICIES = st.fixed_dictionaries({
    "policy": st.sampled_from(["immediate", "fixed", "exponential"]),
    "max_attempts": st.integers(1, 5),
    "retry_on": st.sampled_from([["info"], ["fail"], ["info", "fail"]]),
    "delay": st.sampled_from([0.0, 5.0, 30.0]),
    "budget_ratio": st.sampled_from([None, 0.0, 0.5]),
})


@given(POLICIES, st.sampled_from(["none", "full", "equal", "decorrelated"]), st.integers(0, 50))
@settings(max_examples=10, deadline=None)
def test_every_policy_keeps_the_attempt_rules(policy, jitter, seed):
    """Whatever the policy: at most max_attempts, waits within the policy's bounds, only listed outcomes retried,
    the operation's outcome follows from its attempts, and a budget holds."""
    if policy["policy"] != "immediate" and (jitter != "decorrelated" or policy["policy"] == "exponential"):
        policy = {**policy, "jitter": jitter}
    if policy["budget_ratio"] is None:
        del policy["budget_ratio"]
    if policy["policy"] == "immediate":
        del policy["delay"]  # immediate waits nothing: a delay is refused
    s = Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"loss": 0.1, "latency": "1ms"},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": "300ms", "end": "600ms"}]},
        "workload": {"clients": 2, "rate": 40, "target": "round_robin", "timeout": "20ms", "retry": policy},
        "protocol": {"name": "single_copy", "owner": "n1", "forward": False},
        "run": {"duration": "1s", "drain": "5s", "seed": seed},
    })
    retry = s.workload.retry
    r = sim.run(s)
    h, a = r.history, r.tables["attempts"].sort_values(["op_id", "attempt"])
    assert (h["attempts"] <= retry.attempts_allowed).all()
    assert a.groupby("op_id").size().reindex(h["op_id"]).fillna(0).astype(int).tolist() == h["attempts"].tolist()
    for op_id, tries in a.groupby("op_id", sort=False):
        outcomes = tries["outcome"].tolist()
        assert all(o in retry.retry_on for o in outcomes[:-1])  # only listed outcomes were retried
        waits = tries["send"].to_numpy()[1:] - tries["end"].to_numpy()[:-1]
        assert (waits >= -1e-9).all() and (waits <= retry.max_delay + 1e-9).all()
        if retry.policy in ("immediate", "fixed") and retry.jitter == "none":
            want = 0.0 if retry.policy == "immediate" else retry.delay
            assert np.allclose(waits, want)
        final = h.loc[h["op_id"] == op_id, "outcome"].item()
        if outcomes[-1] == "ok":
            assert final == "ok"
        elif "info" in outcomes:
            assert final == "info"
        else:
            assert final == "fail"
    if retry.budget_ratio is not None:
        per_client = h.groupby("client").agg(ops=("op_id", "size"), attempts=("attempts", "sum"))
        retries = per_client["attempts"] - per_client["ops"]
        assert (retries <= retry.budget_burst + retry.budget_ratio * per_client["ops"] + 1e-9).all()
