"""The model checker's speed and memory on the commit-protocol cases of tests/test_search.py.

For each case: the verdict, distinct states, seconds, states per second, the bytes a
stored state costs (traced allocations at the peak of a second, traced run, over the
states it stored) and its pickled size. The baseline, measured side by side, is the
handlers alone: the same steps replayed on one state without cloning or hashing, so
``overhead`` says how many times the explorer's bookkeeping (clone, canonical form,
visited set, predicates) costs on top of running the protocol's code. Target (issue
#16): the 3-node 3PC split found in under a minute on 2 cores.

    python benchmarks/bench_search.py [--case NAME] [--no-memory] [--no-symmetry | --only-symmetry]

The Raft cases: the real Raft proved within depth 16 (one node crashing); the real Raft
with fsync = "never" (a hard crash forgets the vote) found breadth-first within depth 8
with election timeouts and latencies that make the interleaving short, and the same
configuration with fsync on every write proved within depth 8; the mutant that keeps its
vote in memory only (sim.search.mutants) found breadth-first in 8 steps (and by random
walks under ordering-only timing); the Figure 8 mutant (raft-figure8.toml) found
depth-first from its preloaded state, and breadth-first from the first 10 steps of that
trace, where the real Raft is proved to the same depth.

After the table, the effect of symmetry reduction: for each case, states and seconds
without and with ``search.symmetry``, or the reason it is refused (Raft, eventual
replication, a fault budget that singles a node out). Cases marked slow (minutes) run
only when named with ``--case``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sim.errors import ScenarioError
from sim.scenario import Scenario
from sim.search import OperationSpec, SearchConfig
from sim.search.config import load_search
from sim.search.explore import Explorer, SearchResult
from sim.search.state import clone, size_of

EXAMPLES = Path(__file__).resolve().parents[1] / "experiments" / "search"

CRASH = [{"kind": "crash", "node": "n1", "start": 0}]
PARTITION = [{"kind": "partition", "start": 0, "end": "inf", "groups": [["n1", "n2"], ["n3", "n4"]]}]


def scenario(protocol: str, faults: list[dict[str, Any]], participants: int, *, loss: float = 0.0,
             cooperative: bool | None = None, all_take_part: bool = False) -> Scenario:
    proto: dict[str, Any] = {"name": protocol, "force_time": 1}
    if all_take_part:  # every participant in the transaction: the ones other than the payer are interchangeable
        proto["min_participants"] = participants
    if cooperative is not None:
        proto["cooperative_termination"] = cooperative
    return Scenario.from_dict({
        "cluster": {"count": participants + 1}, "network": {"latency": 1, "loss": loss},
        "workload": {"clients": 1, "target": "fixed", "target_node": "n1", "keys": 1},
        "protocol": proto, "faults": {"schedule": faults}})


def raft_fsync(fsync: str, name: str = "raft", crash: str = "n2") -> Scenario:
    """As tests/test_search.py: n2 times out first, n3 2.6 ms later, n1 much later (seed 148)."""
    return Scenario.from_dict({
        "run": {"seed": 148}, "cluster": {"count": 3, "fsync": fsync},
        "network": {"latency": {"dist": "uniform", "low": 1, "high": 5}}, "workload": {"clients": 0},
        "protocol": {"name": name, "module": "sim.search.mutants", "pre_vote": False, "check_quorum": False,
                     "election_timeout_min": 150, "election_timeout_max": 250},
        "faults": {"schedule": [{"kind": "crash", "node": crash, "start": 0, "end": 100}]}})


def primary_backup(replication: str) -> Scenario:
    """Two nodes, an elected primary, short timeouts; n1 may crash and recover, one message may be lost."""
    return Scenario.from_dict({
        "cluster": {"count": 2}, "network": {"latency": 1, "loss": 0.01}, "workload": {"clients": 0},
        "protocol": {"name": "primary_backup", "replication": replication, "primary": "elected",
                     "heartbeat_interval": 10, "failover_timeout": 30, "backup_timeout": 20},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": 0, "end": 100}]}})


def raft(name: str) -> Scenario:
    return Scenario.from_dict({
        "cluster": {"count": 3}, "network": {"latency": 1}, "workload": {"clients": 0},
        "protocol": {"name": name, "module": "sim.search.mutants", "pre_vote": False, "check_quorum": False},
        "faults": {"schedule": [{"kind": "crash", "node": "n2", "start": 0, "end": 100}]}})


def figure8(protocol: str) -> tuple[Scenario, SearchConfig]:
    """experiments/search/raft-figure8.toml with ``protocol``."""
    sc, cfg = load_search(EXAMPLES / "raft-figure8.toml")
    return sc.variant({"protocol.name": protocol}), cfg


#: the first steps of the execution the depth-first search of raft-figure8.toml finds (as tests/test_search.py)
FIGURE8_PREFIX = [("crash", "n2"), ("timer", "n1"), ("deliver", "n1", "n3"), ("lost", "n1", "n2"),
                  ("deliver", "n3", "n1"), ("recover", "n2"), ("deliver", "n1", "n3"), ("lost", "n1", "n2"),
                  ("deliver", "n3", "n1"), ("deliver", "n1", "n3")]


class Guided(Explorer):
    """An explorer starting where FIGURE8_PREFIX leads."""

    def initial(self) -> Any:
        w = super().initial()
        for want in FIGURE8_PREFIX:
            for action in self.actions(w):
                child = clone(w)
                step = self.apply(child, action)
                got = (step.kind, step.node) if step.kind in ("crash", "recover", "timer") else \
                    (step.kind, step.src, step.dst)
                if got == want:
                    w = child
                    break
        return w


def guided(protocol: str) -> tuple[Scenario, SearchConfig]:
    sc, cfg = figure8(protocol)
    return sc, dataclasses.replace(cfg, strategy="bfs", max_depth=24 - len(FIGURE8_PREFIX))


CASES: dict[str, tuple[Scenario, SearchConfig]] = {
    "3pc-split-3p": (scenario("three_phase_commit", PARTITION, 3),
                     SearchConfig(max_depth=40, operations=(OperationSpec(),), predicates=("atomicity",))),
    "3pc-crash-2p": (scenario("three_phase_commit", CRASH, 2),
                     SearchConfig(max_depth=40, operations=(OperationSpec(),), predicates=("atomicity",))),
    "3pc-crash-3p-d24": (scenario("three_phase_commit", CRASH, 3),
                         SearchConfig(max_depth=24, operations=(OperationSpec(),), predicates=("atomicity",))),
    "2pc-blocked": (scenario("two_phase_commit", CRASH, 2),
                    SearchConfig(max_depth=30, operations=(OperationSpec(),), predicates=("blocked",))),
    "2pc-coop-loss": (scenario("two_phase_commit", CRASH, 2, loss=0.01, cooperative=True),
                      SearchConfig(max_depth=16, operations=(OperationSpec(),),
                                   predicates=("blocked_only_if_all_uncertain",))),
    "raft-3n-d16": (raft("raft"), SearchConfig(max_depth=16, predicates=("election_safety", "log_matching"))),
    "raft-no-fsync-d8": (raft_fsync("never"), SearchConfig(max_depth=8, predicates=("election_safety",
                                                                                     "log_matching"))),
    "raft-fsync-d8": (raft_fsync("always"), SearchConfig(max_depth=8, predicates=("election_safety",
                                                                                 "log_matching"))),
    # no lost acknowledged write: asynchronous primary-backup loses a write acknowledged before the
    # replicate message was lost and the primary failed over (20 steps)
    "pb-async-lost-write": (primary_backup("async"),
                            SearchConfig(max_depth=30, operations=(OperationSpec(node="n1"),),
                                         predicates=("acknowledged_writes_kept",))),
    # a vote kept in memory only: two leaders in one term. Under bounded delays with n1 crashing, found
    # breadth-first in 8 steps; the real Raft (fsync always) in the same configuration, proved to depth 8
    "raft-volatile-vote-d8": (raft_fsync("always", "raft_mutant_volatile_vote", "n1"),
                              SearchConfig(max_depth=8, predicates=("election_safety", "log_matching"))),
    "raft-fsync-n1-d8": (raft_fsync("always", "raft", "n1"),
                         SearchConfig(max_depth=8, predicates=("election_safety", "log_matching"))),
    # the same mutant under ordering-only timing: seeded random walks (breadth-first does not reach 9 steps)
    "raft-volatile-vote-walks": (raft("raft_mutant_volatile_vote"),
                                 SearchConfig(max_depth=12, timing="ordering", strategy="random", walks=100_000,
                                              max_seconds=300, predicates=("election_safety",))),
    # Figure 8 (experiments/search/raft-figure8.toml): from the preloaded state, depth-first to depth 24
    # (minutes); and breadth-first from the first 10 steps of its trace, the mutant and the real Raft
    "raft-figure8-dfs": figure8("raft_mutant_count_replicas"),
    "raft-figure8-guided": guided("raft_mutant_count_replicas"),
    "raft-figure8-guided-real": guided("raft_preloaded"),
    # symmetry reduction: transactions where every participant takes part (the payer is the one apart)
    "2pc-crash-3p-all": (scenario("two_phase_commit", CRASH, 3, all_take_part=True),
                         SearchConfig(max_depth=40, operations=(OperationSpec(),), predicates=("atomicity",))),
    "3pc-crash-3p-all-d40": (scenario("three_phase_commit", CRASH, 3, all_take_part=True),
                             SearchConfig(max_depth=40, operations=(OperationSpec(),), predicates=("atomicity",))),
    "2pc-crash-4p-all-d24": (scenario("two_phase_commit", CRASH, 4, all_take_part=True),
                             SearchConfig(max_depth=24, operations=(OperationSpec(),), predicates=("atomicity",))),
}

#: cases left out unless named with --case (minutes each)
SLOW = {"raft-figure8-dfs", "raft-volatile-vote-walks", "pb-async-lost-write"}
GUIDED = {"raft-figure8-guided", "raft-figure8-guided-real"}


def explorer(name: str, cfg: SearchConfig | None = None) -> Explorer:
    sc, base = CASES[name]
    return (Guided if name in GUIDED else Explorer)(sc, cfg or base)


def handlers_only(ex: Explorer, steps: int) -> float:
    """Seconds to take ``steps`` steps on one state (first enabled action each time, restarting when stuck)."""
    start = time.perf_counter()
    w = ex.initial()
    for _ in range(steps):
        actions = ex.actions(w, faults=False) or ex.actions(w)
        if not actions:
            w = ex.initial()
            continue
        ex.apply(w, actions[0])
    return time.perf_counter() - start


def symmetry_effect(name: str) -> str:
    """States and seconds without and with symmetry reduction, or why the reduction is refused."""
    _, cfg = CASES[name]
    try:
        reduced = explorer(name, dataclasses.replace(cfg, symmetry=True))
    except ScenarioError as exc:
        return f"refused: {exc}"
    plain = explorer(name).run()
    sym: SearchResult = reduced.run()
    same = "same verdict" if (plain.verdict, plain.depth) == (sym.verdict, sym.depth) else "VERDICT DIFFERS"
    return (f"{plain.states} -> {sym.states} states ({sym.states / plain.states:.0%}), "
            f"{plain.seconds:.2f} -> {sym.seconds:.2f} s, {len(reduced.symmetry or ())} renamings, {same}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the traced run")
    parser.add_argument("--no-symmetry", action="store_true", help="skip the runs with symmetry reduction")
    parser.add_argument("--only-symmetry", action="store_true", help="only the runs with and without it")
    args = parser.parse_args(argv)
    names = args.case or [n for n in CASES if n not in SLOW]
    if not args.only_symmetry:
        table(names, memory=not args.no_memory)
    if not args.no_symmetry:
        print("\nsymmetry reduction (search.symmetry = true): states and seconds without -> with")
        for name in names:
            if name in SLOW:
                continue
            print(f"{name:<25} {symmetry_effect(name)}", flush=True)


def table(names: list[str], memory: bool) -> None:
    """The verdict, states, depth, seconds, states/s, the explorer's overhead and bytes per state of each case."""
    print(f"{'case':<25} {'verdict':<16} {'states':>7} {'depth':>5} {'seconds':>8} {'states/s':>9} {'overhead':>9} "
          f"{'B/state':>8} {'pickled B':>9}")
    for name in names:
        ex = explorer(name)
        result = ex.run()
        base = handlers_only(explorer(name), result.transitions) / max(result.transitions, 1)
        per_transition = result.seconds / max(result.transitions, 1)
        pickled = size_of(result.final) if result.final is not None else size_of(ex.initial())
        per_state = float("nan")
        if memory:
            tracemalloc.start()
            traced = explorer(name).run()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            per_state = peak / max(traced.states, 1)
        print(f"{name:<25} {result.verdict:<16} {result.states:>7} {result.depth:>5} {result.seconds:>8.2f} "
              f"{result.states_per_second:>9.0f} {per_transition / base:>8.0f}x {per_state:>8.0f} {pickled:>9}",
              flush=True)


if __name__ == "__main__":
    main()
