"""Compare-and-set: the checker's cas model, the workload's cas and counter patterns, and the protocols."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import sim
from sim.checkers import check_counter, check_linearizable
from sim.checkers.linearizability import _prepare
from sim.checkers.linearizability.casmodel import _cas_search
from sim.checkers.linearizability.search import _search
from sim.errors import ScenarioError
from sim.kernel.messages import CAS_MISMATCH
from sim.scenario import Scenario

NAN = math.nan
INF = math.inf
MISS = CAS_MISMATCH
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "scenarios" / "raft-cas-counter.toml"

# -- helpers -----------------------------------------------------------------------------------


def hist(*ops: tuple[Any, ...]) -> pd.DataFrame:
    """A history from (op, value, invoke, complete, outcome[, error]) tuples on key 0."""
    rows = []
    for i, (op, value, invoke, complete, outcome, *error) in enumerate(ops):
        rows.append((i + 1, f"c{i}", op, 0, value, float(invoke), float(complete), outcome,
                     error[0] if error else None))
    df = pd.DataFrame(rows, columns=["op_id", "client", "op", "key", "value", "invoke", "complete", "outcome",
                                     "error"], dtype=object)
    return df.astype({"op_id": "int64", "invoke": float, "complete": float})


def brute_force(df: pd.DataFrame) -> bool:
    """Linearizability of a one-key history with cas, by trying every subset of info ops and every order."""
    def applies(o: Any, state: Any) -> tuple[bool, Any]:
        if o.op == "read":
            return o.value == state, state
        if o.op == "write":
            return True, o.value
        expected, new = o.value
        if o.outcome == "fail":  # missed: it saw another value
            return expected != state, state
        return expected == state, new

    def done(o: Any) -> float:
        return INF if o.outcome == "info" else o.complete

    def orderable(remaining: list[Any], state: Any) -> bool:
        if not remaining:
            return True
        for o in remaining:
            rest = [p for p in remaining if p is not o]
            if any(done(p) < o.invoke for p in rest):
                continue
            good, after = applies(o, state)
            if good and orderable(rest, after):
                return True
        return False

    cols = ["op", "value", "invoke", "complete", "outcome", "error"]
    ops = [SimpleNamespace(**dict(zip(cols, rec))) for rec in zip(*(df[c].tolist() for c in cols))]
    must = [o for o in ops if o.outcome == "ok" or (o.outcome == "fail" and o.op == "cas" and o.error == MISS)]
    maybe = [o for o in ops if o.outcome == "info" and o.op != "read"]
    subsets = itertools.chain.from_iterable(itertools.combinations(maybe, k) for k in range(len(maybe) + 1))
    return any(orderable(must + list(extra), None) for extra in subsets)


def cas_register_history(rng: np.random.Generator, *, clients: int, ops_per_client: int, keys: int,
                         p_info: float = 0.05, mean_duration: float = 5.0) -> pd.DataFrame:
    """A history of an atomic register with cas under random concurrent clients.

    Every operation takes effect at a random instant between its invoke and
    complete (an ``info`` one possibly later, or never); a cas is decided at
    that instant: applied (``ok``), or ``fail`` with "precondition failed". A
    cas expects None or one of the last values issued for its key.
    """
    rows: list[dict[str, Any]] = []
    issued: dict[int, list[Any]] = {}
    fresh = itertools.count(1)
    for c in range(clients):
        t = float(rng.exponential(2.0))
        for _ in range(ops_per_client):
            complete = t + 0.01 + float(rng.exponential(mean_duration))
            key = int(rng.integers(keys))
            op = str(rng.choice(["read", "write", "cas", "cas"]))
            value: Any = None
            recent = [None, *issued.get(key, [])[-3:]]
            if op == "write":
                value = next(fresh)
                issued.setdefault(key, []).append(value)
            elif op == "cas":
                value = (recent[int(rng.integers(len(recent)))], next(fresh))
                issued.setdefault(key, []).append(value[1])
            info = rng.random() < p_info
            effect: float | None = float(rng.uniform(t, complete))
            if info and rng.random() < 0.3:
                effect = None
            elif info:
                effect = float(rng.uniform(t, complete + 20 * mean_duration))
            rows.append(dict(op_id=len(rows) + 1, client=f"c{c}", op=op, key=key, value=value, invoke=t,
                             complete=NAN if info else complete, outcome="info" if info else "ok", error=None,
                             effect=effect))
            t = complete + float(rng.exponential(2.0))
    state: dict[int, Any] = {}
    for row in sorted((r for r in rows if r["effect"] is not None), key=lambda r: r["effect"]):
        key = row["key"]
        if row["op"] == "write":
            state[key] = row["value"]
        elif row["op"] == "read":
            row["value"] = state.get(key)
        elif state.get(key) == row["value"][0]:
            state[key] = row["value"][1]
        elif row["outcome"] == "ok":
            row["outcome"], row["error"] = "fail", MISS
    df = pd.DataFrame(rows).drop(columns=["effect"])
    df["value"] = pd.Series([r["value"] for r in rows], dtype=object)
    return df.sort_values("invoke", kind="stable").reset_index(drop=True)


# -- the checker: hand-made histories -----------------------------------------------------------

GOOD = {
    "a chain of cas from the initial value": hist(
        ("cas", (None, 1), 0, 1, "ok"), ("cas", (1, 2), 2, 3, "ok"), ("read", 2, 4, 5, "ok")),
    "two concurrent cas from one value: one applied, the other missed": hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, 5, "ok"), ("cas", (1, 3), 2, 5, "fail", MISS),
        ("read", 2, 6, 7, "ok")),
    "a missed cas overlapping the write that changed the value": hist(
        ("write", 1, 0, 1, "ok"), ("write", 2, 2, 6, "ok"), ("cas", (1, 3), 3, 4, "fail", MISS)),
    "a cas refused for another reason constrains nothing": hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, 3, "fail", "no leader known"), ("read", 1, 4, 5, "ok")),
    "an info cas that took effect long after its client gave up": hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, NAN, "info"), ("read", 1, 10, 11, "ok"),
        ("read", 2, 20, 21, "ok")),
    "an info cas that never took effect": hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, NAN, "info"), ("cas", (1, 3), 10, 11, "ok"),
        ("read", 3, 12, 13, "ok")),
    "an info cas applied between two ok cas": hist(
        ("cas", (None, 1), 0, 1, "ok"), ("cas", (1, 2), 2, NAN, "info"), ("cas", (2, 3), 5, 6, "ok")),
    "cas of a counter with a lost reply": hist(
        ("cas", (None, 1), 0, NAN, "info"), ("read", 1, 5, 6, "ok"), ("cas", (1, 2), 7, 8, "ok")),
}

BAD = {
    "a cas applied from a value nobody wrote": (hist(
        ("write", 5, 0, 1, "ok"), ("cas", (7, 2), 2, 3, "ok")), "no operation wrote 7"),
    "a cas applied from a value overwritten before it began": (hist(
        ("write", 5, 0, 1, "ok"), ("write", 6, 2, 3, "ok"), ("cas", (5, 8), 4, 5, "ok")),
        "compare-and-set semantics"),
    "two cas applied one after the other from the same value (a lost update)": (hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, 3, "ok"), ("cas", (1, 3), 4, 5, "ok")), "lost update"),
    "two counter increments from the initial value": (hist(
        ("cas", (None, 1), 0, 1, "ok"), ("cas", (None, 1), 2, 3, "ok")), "lost update"),
    "a cas that missed although the value surely matched": (hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, 3, "fail", MISS)), "compare-and-set semantics"),
    "a read of the old value after an applied cas": (hist(
        ("write", 1, 0, 1, "ok"), ("cas", (1, 2), 2, 3, "ok"), ("read", 1, 4, 5, "ok")),
        "compare-and-set semantics"),
    "an info cas whose new value is read though its expected value was never there": (hist(
        ("write", 1, 0, 1, "ok"), ("cas", (9, 2), 2, NAN, "info"), ("read", 2, 10, 11, "ok")),
        "compare-and-set semantics"),
}


@pytest.mark.parametrize("name", GOOD)
def test_linearizable_cas_histories_pass(name):
    """Known-right histories with applied, missed, refused and info cas are linearizable."""
    df = GOOD[name]
    assert brute_force(df)
    res = check_linearizable(df)
    assert res.linearizable is True, res.explanation


@pytest.mark.parametrize("name", BAD)
def test_wrong_cas_histories_are_rejected(name):
    """Known-wrong histories fail, with a counterexample that fails alone and a story that says why."""
    df, story = BAD[name]
    assert not brute_force(df)
    res = check_linearizable(df)
    assert res.linearizable is False
    assert story in res.explanation, res.explanation
    assert res.counterexample is not None and check_linearizable(res.counterexample).linearizable is False


def test_a_missed_cas_without_an_error_column_constrains_nothing():
    """Without the error column a failed cas cannot be told from a refused one, so it is dropped."""
    df = BAD["a cas that missed although the value surely matched"][0]
    assert check_linearizable(df).linearizable is False
    assert check_linearizable(df.drop(columns=["error"])).linearizable is True


def test_bad_cas_rows_are_rejected():
    """A cas whose value is not an (expected, new) pair, or a missed cas without completion, is a ValueError."""
    with pytest.raises(ValueError, match=r"cas's value must be the pair \(expected, new\)"):
        check_linearizable(hist(("cas", (1, 2, 3), 0, 1, "ok")))
    with pytest.raises(ValueError, match="precondition needs complete >= invoke"):
        check_linearizable(hist(("cas", (1, 2), 0, NAN, "fail", MISS)))


small_op = st.tuples(
    st.sampled_from(["read", "write", "cas", "cas"]),
    st.sampled_from([None, 1, 2]),  # read/write value, or cas expected
    st.sampled_from([1, 2, 3]),  # cas new value
    st.integers(0, 8),  # invoke
    st.integers(0, 4),  # duration
    st.sampled_from(["ok", "ok", "ok", "info", "fail"]),
    st.sampled_from([MISS, MISS, "refused"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(small_op, min_size=0, max_size=7))
def test_agrees_with_brute_force_on_small_cas_histories(ops):
    """On arbitrary tiny histories (repeated values, ties, all outcomes) the verdict matches brute force."""
    rows = []
    for op, value, new, invoke, duration, outcome, error in ops:
        if op == "write" and value is None:
            value = new
        if op == "cas":
            value = (value, new)
        if op != "cas" and outcome == "fail":
            error = "refused"
        complete = invoke + duration if outcome != "info" else NAN
        rows.append((op, value, invoke, complete, outcome, error if outcome == "fail" else None))
    df = hist(*rows)
    res = check_linearizable(df)
    assert res.linearizable is brute_force(df)
    if res.linearizable is False:
        assert not brute_force(res.counterexample)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(1, 8), ops_per_client=st.integers(1, 30),
       keys=st.integers(1, 3))
def test_atomic_cas_register_histories_are_linearizable(seed, clients, ops_per_client, keys):
    """Histories of an atomic register with cas under random concurrent clients always pass; the same
    history with one applied cas claiming an expected value nobody wrote always fails."""
    rng = np.random.default_rng(seed)
    df = cas_register_history(rng, clients=clients, ops_per_client=ops_per_client, keys=keys)
    res = check_linearizable(df, time_limit=30)
    assert res.linearizable is True, res.explanation
    applied = df.index[(df["op"] == "cas") & (df["outcome"] == "ok")]
    if len(applied) == 0:
        return
    idx = applied[int(rng.integers(len(applied)))]
    bad = df.copy()
    bad.at[idx, "value"] = (-1, df.at[idx, "value"][1])
    res = check_linearizable(bad, time_limit=30)
    assert res.linearizable is False
    assert idx in res.counterexample.index and "no operation wrote -1" in res.explanation


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), stale=st.booleans())
def test_general_search_agrees_with_the_register_search(seed, n, stale):
    """On read/write histories (one key, repeated values, info writes), the cas search's verdict is the
    register search's."""
    rng = np.random.default_rng(seed)
    rows = []
    state: Any = None
    for i in range(n):  # one sequential-ish history, then a few reads made wrong
        invoke = float(i * 2 + rng.integers(0, 3))
        complete = invoke + float(rng.integers(0, 6))
        if rng.random() < 0.5:
            state = int(rng.integers(1, 4))
            outcome = "info" if rng.random() < 0.1 else "ok"
            rows.append(("write", state, invoke, NAN if outcome == "info" else complete, outcome))
        else:
            value = int(rng.integers(1, 4)) if stale and rng.random() < 0.2 else state
            rows.append(("read", value, invoke, complete, "ok"))
    (kops,) = _prepare(hist(*rows)) or [None]
    if kops is None:
        return
    subset = range(len(kops))
    assert _cas_search(kops, subset, INF)[0] is _search(kops, subset, INF)[0]


# -- the workload --------------------------------------------------------------------------------

def base(**workload: Any) -> dict[str, Any]:
    return {
        "cluster": {"count": 3},
        "network": {"latency": {"dist": "exponential", "mean": 1.0}},
        "workload": {"clients": 6, "mode": "closed", "think_time": 5.0, "keys": 2, "timeout": 200.0, **workload},
        "protocol": {"name": "raft"},
        "run": {"duration": 1500.0, "seed": 1},
    }


def test_register_pattern_cas_expects_the_last_value_the_client_saw():
    """With cas_fraction > 0 each cas expects what its client last read or wrote of the key (None when it
    knows nothing, and after its own cas failed or timed out); on Raft some apply, some miss, all linearizable."""
    r = sim.run(Scenario.from_dict(base(cas_fraction=0.4, read_fraction=0.3)))
    h = r.history.sort_values(["client", "op_id"])
    cas = h[h["op"] == "cas"]
    assert (cas["outcome"] == "ok").sum() > 0 and (cas["error"] == MISS).sum() > 0
    checked = 0
    for _client, ops in h.groupby("client"):
        known: dict[Any, Any] = {}
        for row in ops.itertuples():  # closed loop: one operation at a time, in op_id order
            if row.op == "cas":
                assert row.value[0] == known.get(row.key), row
                checked += 1
            if row.outcome == "ok":
                known[row.key] = row.value if row.op != "cas" else row.value[1]
            elif row.op == "cas":
                known.pop(row.key, None)
    assert checked == len(cas)
    assert check_linearizable(r.history, time_limit=30).linearizable is True
    # an applied cas is a committed version: a linearizable store's reads of it are never stale
    assert r.summary["staleness.reads"] > 0 and r.summary["staleness.stale_reads"] == 0
    assert r.summary["latency.cas.count"] == (cas["outcome"] == "ok").sum()
    measured = h[(h["invoke"] < 1500.0) & h["node_up"]]
    answered = (measured["outcome"] == "ok") | (measured["error"] == MISS)  # a missed cas was answered
    assert r.summary["availability"] == pytest.approx(answered.mean())
    assert answered.mean() > (measured["outcome"] == "ok").mean()


def test_counter_pattern_reads_then_increments():
    """The counter client reads a key it does not know, then issues cas(v, v + 1) from what it saw."""
    r = sim.run(Scenario.from_dict(base(pattern="counter")))
    h = r.history
    assert set(h["op"]) == {"read", "cas"}
    cas = h[h["op"] == "cas"]
    assert all(new == (old or 0) + 1 for old, new in cas["value"])
    assert r.verdicts["counter"].ok and r.summary["counter.lost_increments"] == 0
    assert r.summary["counter.increments_ok"] == (cas["outcome"] == "ok").sum() > 0


def test_cas_runs_are_deterministic():
    """The same cas scenario and seed give the same history, summary and counter verdict."""
    sc = Scenario.from_dict(base(cas_fraction=0.3))
    a, b = sim.run(sc), sim.run(sc)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert a.summary.keys() == b.summary.keys()
    sc = Scenario.from_dict(base(pattern="counter"))
    a, b = sim.run(sc), sim.run(sc)
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.verdicts["counter"].keys, b.verdicts["counter"].keys)


def test_cas_fraction_zero_leaves_runs_unchanged():
    """cas_fraction = 0 issues no cas and gives the same history as a scenario that never mentions it."""
    a = sim.run(Scenario.from_dict(base()))
    b = sim.run(Scenario.from_dict(base(cas_fraction=0.0)))
    pd.testing.assert_frame_equal(a.history, b.history)
    assert "cas" not in set(a.history["op"]) and "latency.cas.count" not in a.summary


@pytest.mark.parametrize("protocol, fragment", [
    ({"name": "quorum", "mode": "abd"}, "solves consensus (Herlihy 1991)"),
    ({"name": "quorum"}, "Use protocol 'raft'"),
    ({"name": "eventual", "conflict": "vv"}, "use conflict = 'lww'"),
])
@pytest.mark.parametrize("workload, field", [({"cas_fraction": 0.2}, "workload.cas_fraction"),
                                             ({"pattern": "counter"}, "workload.pattern")])
def test_protocols_without_cas_refuse_it(protocol, fragment, workload, field):
    """A cas workload on a protocol that cannot offer cas is a ScenarioError naming the field and why."""
    data = base(**workload)
    data["protocol"] = protocol
    with pytest.raises(ScenarioError, match=field) as err:
        Scenario.from_dict(data)
    assert "cannot run compare-and-set operations" in str(err.value) and fragment in str(err.value)
    del data["workload"][next(iter(workload))]
    Scenario.from_dict(data)  # the same scenario without cas is fine


@pytest.mark.parametrize("workload, message", [
    ({"cas_fraction": 0.6, "read_fraction": 0.5}, "read_fraction + cas_fraction must be at most 1, got 0.5 + 0.6"),
    ({"cas_fraction": -0.1}, "must be in [0, 1], got -0.1"),
    ({"pattern": "counter", "cas_fraction": 0.2}, "only applies to pattern = 'register'"),
    ({"pattern": "bank"}, "pattern"),
])
def test_bad_cas_settings_name_the_field(workload, message):
    """Bad cas settings, from TOML too, name the field and what is accepted."""
    data = base(**workload)
    with pytest.raises(ScenarioError, match="workload") as err:
        Scenario.from_dict(data)
    assert message in str(err.value)
    toml = '[protocol]\nname = "raft"\n[workload]\n' + "".join(
        f"{k} = {v!r}\n".replace("'", '"') for k, v in workload.items())
    with pytest.raises(ScenarioError, match="workload"):
        Scenario.from_toml_string(toml)


# -- the counter on Raft and on eventual consistency ------------------------------------------------

SEEDS = range(1, 9)


def counter_scenario(protocol: dict[str, Any]) -> Scenario:
    """Five nodes, ten counter clients on two keys, a crash of n1 and a partition of n4, n5."""
    return Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": {"dist": "lognormal", "mu": 0.0, "sigma": 0.5}},
        "faults": {"schedule": [
            {"kind": "crash", "node": "n1", "start": 600.0, "end": 1000.0},
            {"kind": "partition", "start": 1300.0, "end": 1800.0, "groups": [["n4", "n5"]]},
        ]},
        "workload": {"clients": 10, "mode": "closed", "think_time": 5.0, "pattern": "counter", "keys": 2,
                     "timeout": 200.0},
        "protocol": protocol,
        "run": {"duration": 2000.0, "settle": 500.0},
    })


def test_raft_counter_loses_no_increment():
    """On Raft, over seeds with a crash and a partition, every key ends between its acknowledged increments and
    those plus the timed-out ones, and the history is linearizable."""
    sc = counter_scenario({"name": "raft"})
    for seed in SEEDS:
        r = sim.run(sc, seed)
        counter = r.verdicts["counter"]
        assert counter.ok, (seed, counter.explanation)
        assert counter.increments_ok > 100
        assert check_linearizable(r.history, time_limit=30).linearizable is True, seed


def test_eventual_counter_loses_increments():
    """On eventual consistency (LWW) the same clients lose acknowledged increments: the mean lost fraction's 95%
    confidence interval over seeds lies above zero; no increment is ever made up."""
    sc = counter_scenario({"name": "eventual", "conflict": "lww"})
    lost = []
    for seed in SEEDS:
        r = sim.run(sc, seed)
        counter = r.verdicts["counter"]
        assert counter.phantom_increments == 0
        assert counter.final_total <= counter.increments_ok + counter.increments_unknown
        lost.append(counter.lost_increments / counter.increments_ok)
    low, _high = stats.t.interval(0.95, len(lost) - 1, loc=np.mean(lost), scale=stats.sem(lost))
    assert low > 0, lost
    res = check_linearizable(r.history, time_limit=30)
    assert res.linearizable is False and "lost update" in res.explanation


def test_counter_checker_on_known_inputs():
    """check_counter counts lost and made-up increments per key; only +1 cas count as increments."""
    h = hist(("cas", (None, 1), 0, 1, "ok"), ("cas", (1, 2), 2, 3, "ok"), ("cas", (2, 3), 4, NAN, "info"),
             ("cas", (2, 3), 4, 5, "fail", MISS), ("cas", (5, 9), 6, 7, "ok"))
    assert check_counter(h, {0: 2}).ok and check_counter(h, {0: 3}).ok
    lost = check_counter(h, {0: 1})
    assert not lost.ok and lost.lost_increments == 1 and "1 acknowledged increment(s) lost" in lost.explanation
    made_up = check_counter(h, {0: 4})
    assert not made_up.ok and made_up.phantom_increments == 1
    assert check_counter(h, {}).lost_increments == 2  # a key no replica holds is 0
    with pytest.raises(ValueError, match="must be an integer"):
        check_counter(h, {0: "2"})


def test_example_scenario_keeps_every_increment():
    """experiments/scenarios/raft-cas-counter.toml: Raft through a leader crash and a partition keeps every
    acknowledged increment, and its history is linearizable."""
    r = sim.run(Scenario.from_toml(EXAMPLE))
    counter = r.verdicts["counter"]
    assert counter.ok and counter.increments_ok > 500, counter.explanation
    assert r.summary["faults"] == 2
    assert check_linearizable(r.history, time_limit=30).linearizable is True


@pytest.mark.parametrize("protocol", [{"name": "single_copy"}, {"name": "primary_backup"}])
def test_one_decider_loses_no_increment(protocol):
    """A single owner, or a fixed synchronous primary, decides every cas alone: no increment lost, linearizable."""
    sc = counter_scenario(protocol)
    for seed in SEEDS[:3]:
        r = sim.run(sc, seed)
        assert r.verdicts["counter"].ok, (seed, r.verdicts["counter"].explanation)
        assert check_linearizable(r.history, time_limit=30).linearizable is True, seed


def test_elected_primaries_lose_increments_in_a_split_brain():
    """Elected primaries (degrade) decide cas on both sides of the partition; the minority's are rolled back,
    so acknowledged increments are lost: the 95% confidence interval of the lost fraction is above zero."""
    sc = counter_scenario({"name": "primary_backup", "primary": "elected", "on_backup_unreachable": "degrade"})
    lost = []
    for seed in SEEDS:
        counter = sim.run(sc, seed).verdicts["counter"]
        assert counter.phantom_increments == 0
        lost.append(counter.lost_increments / counter.increments_ok)
    low, _high = stats.t.interval(0.95, len(lost) - 1, loc=np.mean(lost), scale=stats.sem(lost))
    assert low > 0, lost
