"""Chapters 1 and 2's checked exercises: right answers (found here independently) pass, known slips get
their own feedback, an unanswered exercise says so, numpy values count as the numbers they hold."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

import sim
from sim.checkers import check_linearizable
from sim.dists import Pareto
from sim.exercises import check, names

NODES = ["n1", "n2", "n3", "n4", "n5"]


def judged(name, answer, capsys) -> tuple[bool, str]:
    ok = check(name, answer)
    return ok, capsys.readouterr().out


@pytest.mark.parametrize("name", names(1) + names(2))
def test_unanswered_exercises_say_so(name, capsys):
    """answer = None (the notebooks' starting value) is not judged, it says it is not answered yet."""
    ok, out = judged(name, None, capsys)
    assert not ok and out.startswith("Not answered yet.")


def test_each_chapter_has_at_least_two_exercises_and_a_base_one():
    assert len(names(1)) >= 2 and len(names(2)) >= 2
    assert any(n.startswith("base.") for n in names(1) + names(2))


# -- chapter 1 --------------------------------------------------------------------------------------------


def small(protocol: dict, schedule: list, **run) -> sim.Scenario:
    """The exercises' cluster: 5 nodes, 10 clients at 20 ops/s on 4 keys, 300 ms timeout."""
    return sim.Scenario.from_dict({
        "cluster": {"count": 5},
        "faults": {"schedule": schedule},
        "workload": {"clients": 10, "rate": 20, "keys": 4, "timeout": "300ms"},
        "protocol": protocol,
        "run": {"duration": 2500, "seed": 1, **run},
    })


def missed_a_write_100ms_old(history) -> bool:
    """Whether some ok read returned a value older than an ok write that completed >= 100 ms before it began
    (straight from the definition, one read and one write at a time)."""
    ok = history[history["outcome"] == "ok"]
    writes = list(ok[ok["op"] == "write"].itertuples())
    done = {w.value: w.complete for w in writes}
    for read in ok[ok["op"] == "read"].itertuples():
        if read.value is not None and read.value not in done:
            continue
        after = -math.inf if read.value is None else done[read.value]
        for w in writes:
            if w.key == read.key and w.invoke > after and w.complete <= read.invoke - 100:
                return True
    return False


def test_stale_schedule_a_schedule_found_by_search_passes(capsys):
    """The first partition (by length) under which eventual misses a 100 ms old write and Raft stays
    linearizable is accepted."""
    found = None
    for length, group in itertools.product((200, 400, 800), (["n4", "n5"], ["n1"])):
        schedule = [{"kind": "partition", "start": 800, "end": 800 + length, "groups": [group]}]
        if not missed_a_write_100ms_old(sim.run(small({"name": "eventual"}, schedule)).history):
            continue
        if check_linearizable(sim.run(small({"name": "raft"}, schedule)).history).linearizable:
            found = schedule
            break
    assert found is not None
    ok, out = judged("cap.stale_schedule", found, capsys)
    assert ok, out


def test_stale_schedule_slips(capsys):
    """No fault, a blip too short to matter, a malformed answer and an unknown node are each told why."""
    ok, out = judged("cap.stale_schedule", [], capsys)
    assert not ok and "with no fault" in out
    blip = [{"kind": "partition", "start": 500, "end": 510, "groups": [["n1"]]}]
    assert not missed_a_write_100ms_old(sim.run(small({"name": "eventual"}, blip)).history)
    ok, out = judged("cap.stale_schedule", blip, capsys)
    assert not ok and "no read missed a write that old" in out
    ok, out = judged("cap.stale_schedule", "partition", capsys)
    assert not ok and "list of fault dicts" in out
    ok, out = judged("cap.stale_schedule", [{"kind": "partition", "start": 0, "end": 900, "groups": [["n9"]]}],
                     capsys)
    assert not ok and "unknown node 'n9'" in out


def majority_availability(pair) -> float:
    fault = {"kind": "partition", "start": 1000, "end": 2000, "groups": [list(pair)]}
    return sim.run(small({"name": "raft"}, [fault])).summary["availability.majority"]


def test_keep_majority_every_pair_is_judged_by_what_it_does(capsys):
    """Brute force over all ten pairs: the pairs that keep the majority above 90% pass, the others fail
    with the leader named; numpy strings count."""
    by_pair = {pair: majority_availability(pair) for pair in itertools.combinations(NODES, 2)}
    good = [p for p, a in by_pair.items() if a > 0.9]
    bad = [p for p, a in by_pair.items() if a <= 0.9]
    assert good and bad
    ok, out = judged("cap.keep_majority", np.array(good[0]), capsys)
    assert ok, out
    ok, out = judged("cap.keep_majority", list(bad[0]), capsys)
    assert not ok and "was the leader" in out


def test_keep_majority_slips(capsys):
    ok, out = judged("cap.keep_majority", ["n1"], capsys)
    assert not ok and "exactly two" in out
    ok, out = judged("cap.keep_majority", ["n1", "n2", "n3"], capsys)
    assert not ok and "no side has a majority" in out
    ok, out = judged("cap.keep_majority", ["n1", "n7"], capsys)
    assert not ok and "unknown node 'n7'" in out


def base_run(config: dict, seed: int) -> dict:
    cut = {"kind": "partition", "start": 1000, "end": 2000, "groups": [["n4", "n5"]]}
    return sim.run(small({"name": "eventual", **config}, [cut], duration=2000, settle=1500, seed=seed)).summary


def test_base_converge_a_configuration_found_by_search_passes(capsys):
    """Search anti-entropy settings for one that converges within 500 ms of the heal on seeds 1-3 with at
    most 100 exchanges; the judge accepts it (the interval given as a numpy float)."""
    found = None
    for interval, fanout in itertools.product((1000.0, 500.0, 300.0, 250.0, 200.0), (1, 2)):
        runs = [base_run({"anti_entropy_interval": interval, "fanout": fanout}, seed) for seed in (1, 2, 3)]
        if all(s["convergence.healed"] and s["convergence.after_heal"] <= 500
               and s["protocol.anti_entropy_rounds"] <= 100 for s in runs):
            found = {"anti_entropy_interval": np.float64(interval), "fanout": np.int64(fanout)}
            break
    assert found is not None
    ok, out = judged("base.converge", found, capsys)
    assert ok, out


def test_base_converge_slips(capsys):
    """No anti-entropy never converges; too rare misses the deadline; too often breaks the budget."""
    ok, out = judged("base.converge", {"anti_entropy_interval": "inf"}, capsys)
    assert not ok and "never agreed" in out
    assert max(base_run({"anti_entropy_interval": 1000}, seed)["convergence.after_heal"] for seed in (1, 2, 3)) > 500
    ok, out = judged("base.converge", {"anti_entropy_interval": 1000}, capsys)
    assert not ok and "too rarely" in out
    ok, out = judged("base.converge", {"anti_entropy_interval": 20}, capsys)
    assert not ok and "budget" in out
    ok, out = judged("base.converge", {"anti_entropy": 20}, capsys)
    assert not ok and "unknown field" in out


# -- chapter 2 --------------------------------------------------------------------------------------------


def test_three_stale_reads_from_enumerating_quorums(capsys):
    """Count the read quorums of 2 among 7 that avoid a fixed write quorum of 3, cube the fraction."""
    written = {0, 1, 2}
    quorums = list(itertools.combinations(range(7), 2))
    one = Fraction(sum(1 for q in quorums if not written & set(q)), len(quorums))
    ok, out = judged("quorum.three_stale_reads", np.float64(float(one ** 3)), capsys)
    assert ok, out
    ok, out = judged("quorum.three_stale_reads", float(3 * one), capsys)
    assert not ok and "multiply" in out
    ok, out = judged("quorum.three_stale_reads", float(100 * one ** 3), capsys)
    assert not ok and "percentage" in out
    ok, out = judged("quorum.three_stale_reads", float(one), capsys)
    assert not ok and "ONE read" in out


def test_min_w_from_checking_every_pair_of_quorums(capsys):
    """The smallest W such that every 3-subset of 7 meets every W-subset; W with R + W = N is the classic slip."""
    def always_meet(w: int) -> bool:
        return all(set(r) & set(q) for r in itertools.combinations(range(7), 3)
                   for q in itertools.combinations(range(7), w))
    want = next(w for w in range(1, 8) if always_meet(w))
    ok, out = judged("quorum.min_w", np.int64(want), capsys)
    assert ok, out
    ok, out = judged("quorum.min_w", 7 - 3, capsys)
    assert not ok and "R + W > N" in out
    ok, out = judged("quorum.min_w", want + 1, capsys)
    assert not ok and "smaller W" in out


def wars_visibility(n: int, r: int, w: int, t: float, trials: int, rng: np.random.Generator) -> float:
    """P(a read t ms after commit sees the write), straight from the WARS definition."""
    d = Pareto(shape=1.5, scale=1 / 3)
    W, A, R, S = (np.asarray(d.sample(rng, trials * n)).reshape(trials, n) for _ in range(4))
    commit = np.sort(W + A, axis=1)[:, w - 1]
    responders = np.argsort(R + S, axis=1)[:, :r]
    fresh = (commit[:, None] + t + R) >= W  # the replica has the write when the read request arrives
    return float(np.take_along_axis(fresh, responders, axis=1).any(axis=1).mean())


def test_pick_rw_the_optimum_from_an_independent_monte_carlo(capsys):
    """Among W <= N - 1, the smallest R reaching 99.9% at 3 ms, then the smallest W, is accepted; a valid
    but slower choice is told it is not optimal."""
    rng = np.random.default_rng(99)
    p = {(r, w): wars_visibility(5, r, w, 3.0, 100_000, rng) for r in range(1, 6) for w in range(1, 5)}
    meets = sorted(rw for rw, v in p.items() if v >= 0.999)
    best = meets[0]  # smallest R, then smallest W
    ok, out = judged("quorum.pick_rw", np.array(best), capsys)
    assert ok, out
    slower_reads = next(rw for rw in meets if rw[0] > best[0])
    ok, out = judged("quorum.pick_rw", slower_reads, capsys)
    assert not ok and "not the fastest reads" in out
    slower_writes = next(rw for rw in meets if rw[0] == best[0] and rw[1] > best[1])
    ok, out = judged("quorum.pick_rw", slower_writes, capsys)
    assert not ok and f"W = {best[1]} already" in out
    ok, out = judged("quorum.pick_rw", (1, 5), capsys)
    assert not ok and "one replica down" in out
    too_stale = next(rw for rw, v in p.items() if v < 0.99 and rw[0] == 1)
    ok, out = judged("quorum.pick_rw", too_stale, capsys)
    assert not ok and "< 0.999" in out
