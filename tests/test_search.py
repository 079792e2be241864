"""The model checker: every order of deliveries, timers and scheduled faults over the commit protocols' nodes."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sim.cli import main
from sim.errors import ScenarioError
from sim.protocol import register_protocol
from sim.runner import run as sim_run
from sim.scenario import Scenario
from sim.search import OperationSpec, SearchConfig, search
from sim.search.explore import Explorer
from sim.search.predicates import confirm_atomicity
from sim.search.replay import replay_scenario, reproduce, trace_table
from sim.search.state import clone
from sim.transactions.states import PState
from sim.transactions.two_phase import TwoPhaseCommitConfig, TwoPhaseParticipant

ONE_WRITE = (OperationSpec(),)
CRASH_COORDINATOR = [{"kind": "crash", "node": "n1", "start": 0}]
SPLIT_3_OF_4 = [{"kind": "partition", "start": 0, "end": "inf", "groups": [["n1", "n2"], ["n3", "n4"]]}]


def txn_scenario(protocol: str, faults: list[dict[str, Any]], participants: int = 3, *,
                 cooperative: bool | None = None, loss: float = 0.0) -> Scenario:
    """Coordinator n1 and ``participants`` participants; 1 ms links, 1 ms forced writes, the default timeouts."""
    proto: dict[str, Any] = {"name": protocol, "force_time": 1, "vote_timeout": 50, "decision_timeout": 150,
                             "retry_interval": 50}
    if cooperative is not None:
        proto["cooperative_termination"] = cooperative
    return Scenario.from_dict({
        "cluster": {"count": participants + 1},
        "network": {"latency": 1, "loss": loss},
        "workload": {"clients": 1, "target": "fixed", "target_node": "n1", "keys": 1, "mode": "closed"},
        "protocol": proto,
        "faults": {"schedule": faults},
        "run": {"duration": 100},
    })


def cfg(*predicates: str, **kw: Any) -> SearchConfig:
    return SearchConfig(operations=ONE_WRITE, predicates=predicates, **{"max_depth": 40, **kw})


# -- three-phase commit ------------------------------------------------------------------------------
def test_3pc_splits_under_one_partition_found_exhaustively():
    """Breadth-first over 3PC with three participants and one partition finds a split: one side
    commits, the other aborts; the official atomicity checker agrees on the final state."""
    result = search(txn_scenario("three_phase_commit", SPLIT_3_OF_4), cfg("atomicity"))
    assert result.verdict == "violation" and result.predicate == "atomicity"
    assert "split" in result.message
    assert [s.kind for s in result.trace].count("partition") == 1
    assert len(result.trace) == result.depth
    verdict = confirm_atomicity(result.final)
    assert verdict.count("split") == 1 and not verdict.atomic


def test_3pc_split_replays_in_the_simulator():
    """The replay scenario (explicit fault schedule from the trace) shows the same split in an ordinary run."""
    result = search(txn_scenario("three_phase_commit", SPLIT_3_OF_4), cfg("atomicity"))
    rep = reproduce(result)
    assert rep.reproduced is True
    assert rep.result.verdicts["atomicity"].count("split") == 1
    faults = rep.replay.scenario.faults.schedule
    assert len(faults) == 1 and faults[0].groups == (("n1", "n2"), ("n3", "n4"))
    text = rep.replay.scenario.to_toml()
    assert Scenario.from_toml_string(text) == rep.replay.scenario


def test_3pc_is_atomic_under_coordinator_crashes_with_bounded_delays():
    """Without a partition (the coordinator may crash at any point) no state splits, and the space
    is exhausted: what 3PC's timeout rules promise when delays are bounded (two participants; three
    take a minute, see benchmarks/search_bench.py)."""
    result = search(txn_scenario("three_phase_commit", CRASH_COORDINATOR, 2), cfg("atomicity"))
    assert result.verdict == "no_violation" and result.complete and result.exhausted
    assert result.states > 100


def test_other_strategies_find_the_3pc_split():
    """Depth-first to a bound and seeded random walks find the split too; random walks are reproducible."""
    scenario = txn_scenario("three_phase_commit", SPLIT_3_OF_4)
    assert search(scenario, cfg("atomicity", strategy="dfs", max_depth=30)).verdict == "violation"
    walks = [search(scenario, cfg("atomicity", strategy="random", seed=3)) for _ in range(2)]
    assert walks[0].verdict == "violation"
    assert walks[0].trace == walks[1].trace


def test_breadth_first_is_deterministic():
    """Two searches of one scenario return the same trace and the same counts."""
    scenario = txn_scenario("three_phase_commit", [{**SPLIT_3_OF_4[0], "groups": [["n1", "n2"], ["n3"]]}], 2)
    a, b = (search(scenario, cfg("atomicity")) for _ in range(2))
    assert a.trace == b.trace and (a.states, a.transitions) == (b.states, b.transitions)
    delivered = [s for s in a.trace if s.kind == "deliver"]
    assert all(0 < s.sent_step < a.trace.index(s) + 1 for s in delivered)  # sent by an earlier step
    table = trace_table(a)
    assert list(table["step"]) == list(range(1, len(a.trace) + 1))
    assert (table["kind"] == "partition").sum() == 1


# -- two-phase commit -------------------------------------------------------------------------------
def test_2pc_blocks_after_the_coordinator_crashes_post_vote():
    """A blocked state is reachable: a participant voted yes, then the coordinator crashed; the
    ordinary simulator, replaying the crash, ends with the participant still uncertain."""
    result = search(txn_scenario("two_phase_commit", CRASH_COORDINATOR, 2), cfg("blocked"))
    assert result.verdict == "goal_reached"
    kinds = [(s.kind, s.node, s.detail) for s in result.trace]
    crash = kinds.index(("crash", "n1", ""))
    voted = [i for i, (kind, node, detail) in enumerate(kinds) if kind == "timer" and detail == "_flushed"]
    assert voted and voted[0] < crash  # the prepared record was written (and the vote sent) before the crash
    rep = reproduce(result)
    assert rep.reproduced is True and rep.result.summary["txn.unresolved"] >= 1


def test_cooperative_termination_blocks_only_when_every_participant_is_uncertain():
    """With a coordinator crash and one lost message allowed, plain 2PC leaves a participant blocked
    while the other knows (or could still refuse); with cooperative termination no state within the
    exhausted space does."""
    plain = search(txn_scenario("two_phase_commit", CRASH_COORDINATOR, 2, cooperative=False, loss=0.01),
                   cfg("blocked_only_if_all_uncertain", max_depth=16))
    assert plain.verdict == "violation"
    assert "not every participant is uncertain" in plain.message
    coop = search(txn_scenario("two_phase_commit", CRASH_COORDINATOR, 2, cooperative=True, loss=0.01),
                  cfg("blocked_only_if_all_uncertain", max_depth=16))
    assert coop.verdict == "no_violation" and coop.complete
    assert not coop.exhausted  # a participant asks forever: the depth bound cuts the space
    assert coop.states > plain.states


def test_cooperative_termination_still_blocks_when_all_are_uncertain():
    """Cooperative termination cannot unblock participants that all voted yes: the goal is reached,
    and in that state every participant is prepared or about to be."""
    result = search(txn_scenario("two_phase_commit", CRASH_COORDINATOR, 2, cooperative=True), cfg("blocked"))
    assert result.verdict == "goal_reached"
    final = result.final
    gtid = next(iter(final.state.specs))
    states = {p: final.nodes[p].txns[gtid].state for p in ("n2", "n3") if gtid in final.nodes[p].txns}
    assert states and set(states.values()) <= {PState.WORKING, PState.PREPARED}
    assert PState.PREPARED in states.values()


def test_blocked_is_unreachable_without_a_crash():
    """Without faults 2PC never blocks: the search exhausts the space without reaching the goal."""
    result = search(txn_scenario("two_phase_commit", [], 2), cfg("blocked"))
    assert result.verdict == "goal_unreachable" and result.complete and result.exhausted


# -- the explorer's parts --------------------------------------------------------------------------
def test_a_clone_is_independent_and_hashes_equal():
    """Stepping a clone leaves the original as it was; equal states have equal keys."""
    ex = Explorer(txn_scenario("two_phase_commit", [], 2), cfg())
    w = ex.initial()
    ex.apply(w, ("client", 0))
    copy = clone(w)
    assert ex.key(copy) == ex.key(w)
    ex.apply(copy, ex.actions(copy)[0])
    assert ex.key(copy) != ex.key(w)
    assert len(w.network.flight) == 1 and w.nodes["n1"].txns == {}
    assert copy.nodes["n1"].txns and copy.nodes["n1"].transfers is not w.nodes["n1"].transfers


def test_ordering_timing_lets_timers_overtake_messages():
    """Under ordering-only timing a participant's decision timeout may fire before the coordinator
    even answers; under bounded delays it may not fire while messages it waits for are in flight."""
    scenario = txn_scenario("two_phase_commit", [], 2)
    for timing, expected in (("ordering", True), ("bounded", False)):
        ex = Explorer(scenario, cfg(timing=timing))
        w = ex.initial()
        for action in (("client", 0), ("deliver", 0), ("deliver", 0), ("deliver", 0)):
            ex.apply(w, action)
        while any(a[0] == "timer" and w.env.live()[a[1]].name == "_flushed" for a in ex.actions(w)):
            ex.apply(w, next(a for a in ex.actions(w) if a[0] == "timer" and w.env.live()[a[1]].name == "_flushed"))
        names = {w.env.live()[i].name for kind, i in ex.actions(w) if kind == "timer"}
        assert ("on_decision_timeout" in names) is expected, timing


def test_search_config_errors_name_the_field():
    """Unknown predicates, random faults, unbounded latency and unsupported fault kinds are clear errors."""
    with pytest.raises(ScenarioError, match=r"search\.predicates\[0\].*unknown predicate 'nope'"):
        from sim.search import parse_search

        parse_search({"predicates": ["nope"]})
    with pytest.raises(ScenarioError, match=r"search\.max_depth"):
        parse_search({"max_depth": 0})
    with pytest.raises(ScenarioError, match=r"search\.latency"):
        parse_search({"latency": [3, 1]})
    base = txn_scenario("two_phase_commit", [], 2)
    with pytest.raises(ScenarioError, match=r"network\.latency.*bounded delays"):
        Explorer(base.variant({"network.latency": {"dist": "exponential", "mean": 2}}), cfg())
    with pytest.raises(ScenarioError, match=r"faults\.random"):
        Explorer(base.variant({"faults.random": {"crash_mtbf": 100}}), cfg())
    with pytest.raises(ScenarioError, match=r"faults\.schedule\[0\]\.kind.*partition and crash"):
        Explorer(base.variant({"faults.schedule": [{"kind": "loss", "start": 0, "end": 5, "probability": 1}]}),
                 cfg())
    with pytest.raises(ScenarioError, match=r"search\.target"):
        Explorer(base, cfg(target="n9"))


def test_replay_places_faults_before_or_after_their_instant():
    """A fault's replay time is halfway into the gap before (or after) the instant of its step."""
    result = search(txn_scenario("three_phase_commit", SPLIT_3_OF_4), cfg("atomicity"))
    step = next(s for s in result.trace if s.kind == "partition")
    before = replay_scenario(result, "before").scenario.faults.schedule[0].start
    after = replay_scenario(result, "after").scenario.faults.schedule[0].start
    assert before < step.time < after
    with pytest.raises(ValueError, match="placement"):
        replay_scenario(result, "during")


# -- the command ----------------------------------------------------------------------------------------
SEARCH_EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "experiments" / "search").glob("*.toml"))


def test_every_search_example_is_tested():
    """The example search scenarios are the ones the command tests below run."""
    assert [p.name for p in SEARCH_EXAMPLES] == ["2pc-blocking.toml", "3pc-partition.toml", "raft-figure8.toml"]


def test_capsim_search_finds_the_3pc_split_and_writes_a_replay(tmp_path, capsys):
    """``capsim search`` prints the verdict and the trace, runs the replay, and writes the files;
    a violated invariant exits 1."""
    out = tmp_path / "split"
    assert main(["search", str(SEARCH_EXAMPLES[1]), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "verdict violation  predicate atomicity" in text and "split" in text
    assert "replay in the simulator: reproduces the finding" in text
    replay = Scenario.from_toml(out / "replay.toml")
    assert replay.faults.schedule[0].tag == "partition"
    summary = json.loads((out / "search.json").read_text())
    assert summary["verdict"] == "violation" and summary["replay_reproduced"] is True
    assert len((out / "trace.csv").read_text().splitlines()) == summary["depth"] + 1
    assert (out / "diagram.png").stat().st_size > 10_000


def test_capsim_search_2pc_example_and_overrides(capsys):
    """The 2PC example violates its invariant; with --predicate blocked the goal is reached (exit 0)."""
    assert main(["search", str(SEARCH_EXAMPLES[0]), "--no-replay"]) == 1
    assert "not every participant is uncertain" in capsys.readouterr().out
    assert main(["search", str(SEARCH_EXAMPLES[0]), "--predicate", "blocked"]) == 0
    assert "verdict goal_reached" in capsys.readouterr().out


def test_capsim_search_bad_input_names_the_field(tmp_path, capsys):
    """An unknown [search] key, a missing predicate and a bad depth are one-line errors (exit 2)."""
    text = SEARCH_EXAMPLES[1].read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('strategy = "bfs"', 'strategy = "bfs"\ndepth = 3'))
    assert main(["search", str(bad)]) == 2
    assert "search.depth: unknown key" in capsys.readouterr().err
    bad.write_text(text.replace('predicates = ["atomicity"]', ''))
    assert main(["search", str(bad)]) == 2
    assert "search.predicates" in capsys.readouterr().err
    assert main(["search", str(SEARCH_EXAMPLES[1]), "--max-depth", "0"]) == 2
    assert "search.max_depth" in capsys.readouterr().err


def test_docs_search_python_blocks_run():
    """The ```python blocks of docs/search.md execute as written."""
    guide = Path(__file__).resolve().parents[1] / "docs" / "search.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(guide), "exec", dont_inherit=True), namespace)
    assert namespace["result"].verdict == "goal_reached"


# -- a lab's student protocol ---------------------------------------------------------------------------
def lab5_scenario(classes: dict[str, type]) -> Scenario:
    """Lab 5 (two-phase commit) with a solution's classes: two participants, a coordinator that may
    crash and recover, one message that may be lost."""
    from sim.labs import commit as lab5
    from sim.labs.core import solution_key

    return Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"latency": 1, "loss": 0.01},
        "workload": {"clients": 1, "target": "fixed", "target_node": "n1", "keys": 1},
        "protocol": {"name": "lab_commit", "solution": solution_key(lab5.LAB, classes), "coordinator": "n1",
                     "force_time": 1, "vote_timeout": 50, "decision_timeout": 100, "retry_interval": 25},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": 0, "end": 500}]},
    })


def test_search_grades_lab5_solutions_on_a_small_configuration():
    """On the same small configuration the reference solution keeps atomicity within the depth, and the
    known-wrong participant that aborts when its decision timeout expires (although it voted yes) splits."""
    import commit_reference as ref
    from commit_wrong import VARIANTS

    reference = search(lab5_scenario({"Coordinator": ref.Coordinator, "Participant": ref.Participant}),
                       cfg("atomicity", max_depth=16))
    assert reference.verdict == "no_violation" and reference.complete
    wrong = search(lab5_scenario(VARIANTS["abort-on-timeout"]), cfg("atomicity", max_depth=16))
    assert wrong.verdict == "violation" and "split" in wrong.message
    assert confirm_atomicity(wrong.final).count("split") == 1


# -- Raft -------------------------------------------------------------------------------------------------
RAFT = {"cluster": {"count": 3}, "network": {"latency": 1}, "workload": {"clients": 0},
        "protocol": {"name": "raft", "pre_vote": False, "check_quorum": False},
        "faults": {"schedule": [{"kind": "crash", "node": "n2", "start": 0, "end": 100}]}}


def test_raft_keeps_election_safety_and_log_matching_within_depth():
    """Three Raft nodes, n2 crashing and recovering at any point, bounded delays: no state within
    depth 16 has two leaders of one term or logs that agree on an entry's term but not before it."""
    result = search(Scenario.from_dict(RAFT), SearchConfig(max_depth=16, predicates=("election_safety",
                                                                                       "log_matching")))
    assert result.verdict == "no_violation" and result.complete
    assert result.states > 300  # the state count the proof covers (564 when written)
    assert any(str(c.role) == "leader" for n in Explorer(Scenario.from_dict(RAFT), cfg()).initial().nodes.values()
               for c in n.roles) is False  # nobody leads at the start: the search had to elect


def test_raft_predicates_reject_known_wrong_states():
    """Two leaders of one term violate election safety; logs agreeing on entry 2's term but not on
    entry 1 violate log matching; logs that diverge only after their last common term do not."""
    from sim.replication.raft.messages import SENTINEL, Entry, Role
    from sim.replication.raft.node import RoleChange
    from sim.search.predicates import PREDICATES

    ex = Explorer(Scenario.from_dict(RAFT), cfg())
    w = ex.initial()
    safety, matching = PREDICATES["election_safety"], PREDICATES["log_matching"]
    assert safety.test(w, ex) is None and matching.test(w, ex) is None
    w.nodes["n1"].roles.append(RoleChange(5.0, 1, Role.LEADER, "won election"))
    assert safety.test(w, ex) is None
    w.nodes["n3"].roles.append(RoleChange(6.0, 1, Role.LEADER, "won election"))
    assert safety.test(w, ex) == "two leaders in term 1: n1, n3"
    a, b, c = (Entry(1, 1, "write", 0, 1), Entry(1, 2, "write", 0, 2), Entry(2, 3, "write", 0, 3))
    w.nodes["n1"].log[:] = [SENTINEL, a, c]
    w.nodes["n2"].log[:] = [SENTINEL, a, Entry(3, 4, "write", 0, 4)]
    assert matching.test(w, ex) is None  # they differ only after entry 1, where they agree
    w.nodes["n2"].log[:] = [SENTINEL, b, c]
    assert "agree on the term of entry 2" in matching.test(w, ex)


def raft_fsync(fsync: str) -> Scenario:
    """Three Raft nodes, n2 losing power and coming back at any point. Messages take 1 to 5 ms and
    election timeouts are drawn from 150-250 ms; with seed 148 n2 times out first (151 ms), n3 about
    2.6 ms later and n1 much later (233 ms), so one node can win an election, lose power and come back
    before the next one asks for its vote."""
    return Scenario.from_dict({
        "run": {"seed": 148},
        "cluster": {"count": 3, "fsync": fsync},
        "network": {"latency": {"dist": "uniform", "low": 1, "high": 5}}, "workload": {"clients": 0},
        "protocol": {"name": "raft", "pre_vote": False, "check_quorum": False,
                     "election_timeout_min": 150, "election_timeout_max": 250},
        "faults": {"schedule": [{"kind": "crash", "node": "n2", "start": 0, "end": 100}]}})


def test_raft_without_fsync_elects_two_leaders_in_one_term_and_with_fsync_does_not():
    """The real Raft with fsync = "never": a hard crash takes n2 back to term 0 with no vote, so it votes
    twice in term 1. Breadth-first finds the two leaders within depth 8 (the shortest trace: n2 wins,
    loses power, comes back and votes for n3); the same Raft with fsync on every write (the default) has
    no violating state within the same depth."""
    bound = SearchConfig(max_depth=8, predicates=("election_safety", "log_matching"))
    never = search(raft_fsync("never"), bound)
    assert never.verdict == "violation" and never.predicate == "election_safety"
    assert never.message.startswith("two leaders in term 1")
    kinds = [s.kind for s in never.trace]
    assert kinds.count("crash") == 1 and kinds.count("recover") == 1 and len(kinds) == 8
    assert kinds.index("crash") < kinds.index("recover") < len(kinds) - 1  # it voted again after coming back
    always = search(raft_fsync("always"), bound)
    assert always.verdict == "no_violation" and always.complete
    assert always.states > never.states  # the whole space within depth 8 (about 6,000 states when written)


class _RaisingParticipant(TwoPhaseParticipant):
    def handle_Prepare(self, msg: Any, src: str) -> None:
        raise RuntimeError(f"{self.name} cannot prepare {msg.gtid}")


@register_protocol
@dataclass(frozen=True, kw_only=True)
class _RaisingTwoPhase(TwoPhaseCommitConfig):
    """2PC whose participants raise on a prepare (a broken student handler)."""

    tag: ClassVar[str] = "two_phase_commit_raising"
    participant_class: ClassVar[type] = _RaisingParticipant


def test_a_handler_that_raises_is_a_violation_with_its_trace():
    """An exception in a protocol's handler ends that execution as a violation with the shortest
    trace to it, instead of stopping the search."""
    result = search(txn_scenario("two_phase_commit_raising", [], 2), cfg("atomicity"))
    assert result.verdict == "violation" and result.predicate == "exception"
    assert "RuntimeError: n2 cannot prepare t1-1" in result.message or "n3 cannot prepare" in result.message
    assert [s.kind for s in result.trace] == ["client", "deliver", "error"]


# -- linearizability of the history so far -------------------------------------------------------------
WRITE_THEN_READ_ELSEWHERE = (OperationSpec(op="write", key=0, node="n1"), OperationSpec(op="read", key=0, node="n2"))


def kv_scenario(protocol: dict[str, Any]) -> Scenario:
    return Scenario.from_dict({"cluster": {"count": 3}, "network": {"latency": 1}, "workload": {"clients": 0},
                               "protocol": protocol})


def test_linearizability_violation_found_in_eventual_replication():
    """A write acknowledged by n1, then a read at n2 before the update arrives: the checker rejects the
    history, and breadth-first finds it in four steps."""
    result = search(kv_scenario({"name": "eventual"}),
                    SearchConfig(max_depth=20, operations=WRITE_THEN_READ_ELSEWHERE, predicates=("linearizable",)))
    assert result.verdict == "violation" and result.predicate == "linearizable"
    assert "returned None" in result.message
    assert [s.kind for s in result.trace] == ["client", "deliver", "client", "deliver"]


def test_single_copy_and_primary_backup_histories_stay_linearizable():
    """The same two operations against one owner (exhausted) and synchronous primary-backup (within depth
    20) never give a non-linearizable history."""
    ops = SearchConfig(max_depth=20, operations=WRITE_THEN_READ_ELSEWHERE, predicates=("linearizable",))
    single = search(kv_scenario({"name": "single_copy", "owner": "n1"}), ops)
    assert single.verdict == "no_violation" and single.exhausted
    backup = search(kv_scenario({"name": "primary_backup"}), ops)
    assert backup.verdict == "no_violation" and backup.complete and backup.states > 100
    with pytest.raises(ScenarioError, match=r"search\.operations\[0\]\.node"):
        Explorer(kv_scenario({"name": "eventual"}), SearchConfig(operations=(OperationSpec(node="n7"),)))


def test_3pc_splits_without_any_fault_when_time_is_ordering_only():
    """With bounded delays and no fault 3PC is atomic (exhausted); when time is ordering only a timeout
    no longer means a crash, and a seeded random walk finds a split with no fault at all."""
    scenario = txn_scenario("three_phase_commit", [], 2)
    calm = search(scenario, cfg("atomicity"))
    assert calm.verdict == "no_violation" and calm.exhausted
    walk = search(scenario, cfg("atomicity", timing="ordering", strategy="random", max_depth=30, walks=5000))
    assert walk.verdict == "violation" and "split" in walk.message
    assert not {"crash", "partition", "drop"} & {s.kind for s in walk.trace}


# -- no lost acknowledged write ---------------------------------------------------------------------------
def eventual_power_loss(fsync: str) -> Scenario:
    """Eventual replication without anti-entropy; n1 (fsync as given) may lose power and come back, and
    the search may drop two messages."""
    return Scenario.from_dict({
        "cluster": {"count": 3, "node_fsync": {"n1": fsync}}, "network": {"latency": 1, "loss": 0.01},
        "workload": {"clients": 0}, "protocol": {"name": "eventual", "anti_entropy_interval": "inf"},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": 0, "end": 100}]}})


def test_lost_acknowledged_write_found_when_the_acknowledging_node_does_not_fsync():
    """n1 acknowledges a write, both pushes are lost, n1 loses power and comes back without it: every
    node is up, nothing is in flight and no replica holds the write. With fsync on every write n1 keeps it:
    the whole space (to depth 12) holds no such state."""
    bound = SearchConfig(max_depth=12, max_drops=2, operations=(OperationSpec(node="n1"),),
                         predicates=("acknowledged_writes_kept",))
    lost = search(eventual_power_loss("never"), bound)
    assert lost.verdict == "violation" and "write 1 (0=1) was acknowledged" in lost.message
    assert [s.kind for s in lost.trace] == ["client", "deliver", "drop", "drop", "crash", "recover"]
    kept = search(eventual_power_loss("always"), bound)
    assert kept.verdict == "no_violation" and kept.exhausted


def test_lost_write_predicate_rejects_known_wrong_states_and_respects_superseding_writes():
    """A state where no replica holds an acknowledged write violates it; the same state with a later write
    of the key, or with the write still in flight, or with a node down, does not."""
    from sim.search.predicates import PREDICATES
    from sim.search.state import InFlight, Op

    kept = PREDICATES["acknowledged_writes_kept"]
    ex = Explorer(eventual_power_loss("always"), cfg())
    w = ex.initial()
    w.ops.append(Op("c0", 1, "write", 0, 7, "n1", 0.0, 1, complete=0.0, complete_step=2, outcome="ok"))
    assert kept.test(w, ex) == "write 1 (0=7) was acknowledged, nothing superseded it, and no replica holds it"
    w.nodes["n3"].data[0] = ((0.0, "n3", 1), 7)
    assert kept.test(w, ex) is None  # one replica holding it is enough
    del w.nodes["n3"].data[0]
    w.network.flight.append(InFlight("n1", "n2", "a push", 0.0, w.nodes["n2"].epoch))
    assert kept.test(w, ex) is None  # not judged while something is on its way
    w.network.flight.clear()
    w.nodes["n2"].crash()
    assert kept.test(w, ex) is None  # nor while a node is down
    w.nodes["n2"].recover()
    assert kept.test(w, ex) is not None
    w.ops.append(Op("c1", 2, "write", 0, 8, "n1", 0.0, 1))  # concurrent with write 1: may supersede it
    assert kept.test(w, ex) is None
    w.ops[-1].invoke_step = 3  # began after write 1 completed: may supersede it too
    assert kept.test(w, ex) is None
    w.ops[-1].invoke_step, w.ops[-1].complete_step, w.ops[-1].outcome = 0, 0, "ok"  # done before write 1 began
    assert kept.test(w, ex) is not None


def test_canonical_form_keeps_the_contents_of_deques():
    """Two states that differ only in what a node holds in a deque (Raft's round clock) are different states."""
    ex = Explorer(Scenario.from_dict(RAFT), cfg())
    a = ex.initial()
    b = clone(a)
    assert ex.key(a) == ex.key(b)
    b.nodes["n1"].round_clock.append(7.0)
    assert ex.key(a) != ex.key(b)


def test_a_disk_is_copied_with_its_durable_image_and_states_differing_there_differ():
    """Under fsync "interval" a node's disk has contents and a durable image: a clone keeps both (a power
    loss in the clone restores the image), and two states that differ only in the image are different."""
    from sim.kernel.disk import Disk

    scenario = Scenario.from_dict({**RAFT, "cluster": {"count": 3, "fsync": {"policy": "interval",
                                                                             "interval": 50}}})
    ex = Explorer(scenario, cfg())
    a = ex.initial()
    disk = a.nodes["n1"].disk
    assert isinstance(disk, Disk)
    disk["term"] = 4
    b = clone(a)
    assert ex.key(a) == ex.key(b)
    b.nodes["n1"].disk.sync()
    assert ex.key(a) != ex.key(b)  # same contents, a different durable image
    c = clone(b)
    c.nodes["n1"].disk["term"] = 9
    c.nodes["n1"].crash()
    assert c.nodes["n1"].disk["term"] == 4 and b.nodes["n1"].disk["term"] == 4
    a.nodes["n1"].crash()
    assert "term" not in a.nodes["n1"].disk  # a was never flushed: its image is still empty


# -- Raft mutants: Figure 8 and a vote kept in memory only -------------------------------------------------
def test_state_machine_safety_rejects_known_wrong_states():
    """Two nodes that applied different entries at one index violate it, also after one of them crashed (the
    search remembers what was applied); the same entry applied everywhere, or a differing entry not yet
    applied, does not."""
    from sim.replication.raft.messages import NOOP, SENTINEL, Entry
    from sim.search.predicates import PREDICATES

    safety = PREDICATES["state_machine_safety"]
    ex = Explorer(Scenario.from_dict(RAFT), cfg())
    w = ex.initial()
    write, noop2 = Entry(1, 1, "write", 0, 1), Entry(2, 0, NOOP, None, None)
    n1, n2, n3 = (w.nodes[n] for n in ("n1", "n2", "n3"))
    n1.log[:] = [SENTINEL, Entry(1, 0, NOOP, None, None), write]
    n2.log[:] = [SENTINEL, Entry(1, 0, NOOP, None, None), noop2]
    n1.last_applied = 2
    assert safety.test(w, ex) is None  # n2 holds another entry 2, but has not applied it
    n2.last_applied = 1
    assert safety.test(w, ex) is None  # they agree on entry 1
    n1.crash()
    n2.last_applied = 2
    assert safety.test(w, ex) == ("entry 2 applied as write 1 (0=1) of term 1 at n1 and as a no-op of term 2 at n2")
    n3.log[:] = list(n2.log)
    n3.last_applied = 2
    assert "at n2, n3" in safety.test(w, ex)
    fresh = ex.initial()
    for node in fresh.nodes.values():
        node.log[:] = [SENTINEL, write]
        node.last_applied = 1
    assert safety.test(fresh, ex) is None


FIGURE8 = SEARCH_EXAMPLES[2] if len(SEARCH_EXAMPLES) > 2 else None
#: the first steps of the execution a depth-first search of raft-figure8.toml finds (24 steps, about
#: 89,000 states): n2 crashes; n1 times out, wins term 3 with n3's vote, is refused its no-op and sends its
#: term-1 write alone, which n3 accepts. Both the mutant and the real Raft take these steps; what the
#: leader does with n3's answer (still in flight) is where they differ.
FIGURE8_PREFIX = [("crash", "n2"), ("timer", "n1"), ("deliver", "n1", "n3"), ("lost", "n1", "n2"),
                  ("deliver", "n3", "n1"), ("recover", "n2"), ("deliver", "n1", "n3"), ("lost", "n1", "n2"),
                  ("deliver", "n3", "n1"), ("deliver", "n1", "n3")]


class GuidedExplorer(Explorer):
    """An explorer whose initial state is the one a given prefix of steps reaches (the steps taken: ``taken``)."""

    prefix: ClassVar[list[tuple[str, ...]]] = []
    taken: ClassVar[list[Any]] = []

    def initial(self) -> Any:
        w = super().initial()
        GuidedExplorer.taken = []
        for want in self.prefix:
            for action in self.actions(w):
                child = clone(w)
                step = self.apply(child, action)
                got = (step.kind, step.node) if step.kind in ("crash", "recover", "timer") else \
                    (step.kind, step.src, step.dst)
                if got == want:
                    w = child
                    GuidedExplorer.taken.append(step)
                    break
            else:
                raise AssertionError(f"no step {want} enabled")
        return w


def figure8(protocol: str) -> tuple[Scenario, SearchConfig]:
    from sim.search.config import load_search

    scenario, config = load_search(FIGURE8)
    scenario = scenario.variant({"protocol.name": protocol})
    return scenario, dataclasses.replace(config, strategy="bfs", max_depth=24 - len(FIGURE8_PREFIX))


def test_figure8_mutant_loses_a_committed_entry_and_the_real_raft_does_not():
    """From the example's preloaded state and the first 10 steps of its trace, breadth-first finds the
    Figure 8 violation for the mutant that commits an earlier term's entry by counting replicas (n1 applies
    its term-1 write at index 2, n2 later applies its term-2 no-op there) in 14 more steps; the real Raft
    from the same steps has no violating state within the same 14 (the whole space to that depth; the full
    search from the preloaded state is the example itself, depth-first, a few minutes). The replay of the
    whole trace (prefix included) in the simulator shows the violation as its state_machine_safety verdict,
    and the real Raft under the replay's fault schedule keeps it."""
    scenario, config = figure8("raft_mutant_count_replicas")
    GuidedExplorer.prefix = FIGURE8_PREFIX
    mutant = GuidedExplorer(scenario, config).run()
    assert mutant.verdict == "violation" and mutant.predicate == "state_machine_safety"
    assert mutant.message == ("entry 2 applied as write 1 (0=1) of term 1 at n1 and as a no-op of term 2 at n2")
    assert mutant.depth == 14 and len(mutant.trace) == mutant.depth
    kinds = [s.kind for s in mutant.trace]
    assert kinds.count("crash") == 2 and kinds.count("recover") == 1  # n3 down and up, n1 down
    final = mutant.final
    assert final.nodes["n2"].log[2].term == 2 and final.nodes["n2"].last_applied >= 2
    # the whole execution (prefix and found steps) replayed in the simulator shows the same violation
    whole = dataclasses.replace(mutant, trace=GuidedExplorer.taken + mutant.trace)
    rep = reproduce(whole)
    assert rep.reproduced is True and rep.replay.notes == []
    # with each fault placed just after its step's instant; placed before, n2's recovery moves ahead of n3's vote
    # reply of the same instant, n2 is up when n1's first AppendEntries of term 3 leaves, and follows n1
    assert rep.replay.scenario.faults == replay_scenario(whole, "after").scenario.faults
    assert sim_run(replay_scenario(whole, "before").scenario).verdicts["state_machine_safety"].ok
    verdict = rep.result.verdicts["state_machine_safety"]
    assert verdict.violations[["index", "first_node", "first_term", "first_op_id", "second_node", "second_term",
                               "second_op_id"]].to_dict("records") == [
        {"index": 2, "first_node": "n1", "first_term": 1, "first_op_id": 1, "second_node": "n2", "second_term": 2,
         "second_op_id": 0}]
    assert rep.result.verdicts["election_safety"].ok  # one leader per term: only the commit rule is broken
    # the real Raft under the same fault schedule, run on until n2 has committed in term 4, applies one entry
    # per index (n1 never applies its term-1 write: it had no entry of term 3 on a majority)
    same = rep.replay.scenario.variant({"protocol.name": "raft_preloaded", "run.duration": 1000})
    real_run = sim_run(same).verdicts["state_machine_safety"]
    assert real_run.ok and real_run.indices >= 2 and real_run.applies > real_run.indices
    real_scenario, _ = figure8("raft_preloaded")
    real = GuidedExplorer(real_scenario, config).run()
    assert real.verdict == "no_violation" and real.complete
    assert real.states > 1000  # the state count the claim covers (1,813 when written)


def test_raft_mutant_that_keeps_its_vote_in_memory_elects_two_leaders():
    """A Raft that persists its term and log but not its vote (fsync on every write): n1 votes for n2, crashes,
    comes back with no vote in term 1 and votes for n3. Breadth-first finds the two leaders in 8 steps."""
    scenario = raft_fsync("always").variant({"protocol.name": "raft_mutant_volatile_vote",
                                             "protocol.module": "sim.search.mutants",
                                             "faults.schedule": [{"kind": "crash", "node": "n1", "start": 0,
                                                                  "end": 100}]})
    result = search(scenario, SearchConfig(max_depth=8, predicates=("election_safety", "log_matching")))
    assert result.verdict == "violation" and result.message == "two leaders in term 1: n2, n3"
    kinds = [s.kind for s in result.trace]
    assert len(kinds) == 8 and kinds.count("crash") == 1 and kinds.index("crash") < kinds.index("recover")
    crash, recover = (s for s in result.trace if s.kind in ("crash", "recover"))
    assert crash.time == recover.time  # down and up in one instant: the replay still has the crash end after it
    for placement in ("before", "after"):
        fault = replay_scenario(result, placement).scenario.faults.schedule[0]
        assert fault.start < fault.end and (fault.start < crash.time) == (placement == "before")
    assert "crash" not in [s.kind for s in search(scenario.variant({"protocol.name": "raft"}), SearchConfig(
        max_depth=4, predicates=("election_safety",))).trace]  # the real one within a short bound: no finding


def test_mutants_preload_errors_name_the_field():
    """A preloaded log entry or term that makes no sense is a one-line error naming its place."""
    base = {**RAFT, "protocol": {"name": "raft_preloaded", "module": "sim.search.mutants"}}
    for preload, field in (({"n9": {}}, "protocol.preload.n9"),
                           ({"n1": {"log": [[0]]}}, r"protocol.preload.n1.log\[0\]"),
                           ({"n1": {"term": 1, "log": [[2]]}}, "protocol.preload.n1.term"),
                           ({"n1": {"log": [[2], [1]]}}, r"protocol.preload.n1.log\[1\]"),
                           ({"n1": {"vote": "n2"}}, "protocol.preload.n1.vote"),
                           ({"n1": {"voted_for": "n7"}}, "protocol.preload.n1.voted_for")):
        with pytest.raises(ScenarioError, match=field):
            Scenario.from_dict({**base, "protocol": {**base["protocol"], "preload": preload}})


# -- symmetry reduction ----------------------------------------------------------------------------------
def test_symmetry_reduction_keeps_verdicts_with_fewer_states():
    """2PC with three participants in the transaction and a coordinator that may crash: with the two
    participants other than the payer merged under renaming, the same verdicts come from fewer states
    (the 3PC split too, where the partition leaves n3 and n4 interchangeable)."""
    scenario = txn_scenario("two_phase_commit", CRASH_COORDINATOR, 3).variant({"protocol.min_participants": 3})
    for predicate, verdict in (("atomicity", "no_violation"), ("blocked", "goal_reached")):
        plain = search(scenario, cfg(predicate, max_depth=20))
        reduced = search(scenario, cfg(predicate, max_depth=20, symmetry=True))
        assert plain.verdict == reduced.verdict == verdict
        assert (plain.depth, plain.complete) == (reduced.depth, reduced.complete)
        if verdict == "no_violation":
            assert reduced.states < plain.states
    split = search(txn_scenario("three_phase_commit", SPLIT_3_OF_4), cfg("atomicity", symmetry=True))
    assert split.verdict == "violation" and "split" in split.message


def test_symmetry_is_refused_where_nodes_are_not_interchangeable():
    """Raft (own random streams), random votes, two operations, and a fault budget that singles out one
    participant are refused, each with its reason."""
    with pytest.raises(ScenarioError, match=r"search\.symmetry.*raft.*election timeouts"):
        Explorer(Scenario.from_dict(RAFT), SearchConfig(symmetry=True))
    two = txn_scenario("two_phase_commit", [], 2)
    with pytest.raises(ScenarioError, match=r"search\.symmetry.*abort_probability"):
        Explorer(two.variant({"protocol.abort_probability": 0.1}), cfg(symmetry=True))
    with pytest.raises(ScenarioError, match=r"search\.symmetry.*2 client operations"):
        Explorer(two, SearchConfig(operations=(OperationSpec(), OperationSpec()), symmetry=True))
    with pytest.raises(ScenarioError, match=r"search\.symmetry.*no renaming.*\{n2, n3\}"):
        Explorer(txn_scenario("two_phase_commit", [{"kind": "crash", "node": "n2", "start": 0}], 2),
                 cfg(symmetry=True))
    with pytest.raises(ScenarioError, match=r"search\.symmetry.*eventual"):
        Explorer(kv_scenario({"name": "eventual"}), SearchConfig(symmetry=True))


def test_capsim_search_symmetry_flag(tmp_path, capsys):
    """``--symmetry`` finds the 3PC split as without it; asked of Raft it is a one-line error (exit 2)."""
    assert main(["search", str(SEARCH_EXAMPLES[1]), "--symmetry", "--no-replay"]) == 1
    assert "verdict violation  predicate atomicity" in capsys.readouterr().out
    assert main(["search", str(SEARCH_EXAMPLES[2]), "--symmetry"]) == 2
    err = capsys.readouterr().err
    assert "search.symmetry" in err and "election timeouts" in err and "Traceback" not in err


def test_symmetric_states_share_a_key_only_with_reduction():
    """Three participants all in the transfer (n3 pays): the state where only n2 got its prepare and the one
    where only n4 got it are one state under symmetry reduction, two without; n3 (the payer) getting it is
    another state either way."""
    scenario = txn_scenario("two_phase_commit", [], 3).variant({"protocol.min_participants": 3})

    def prepared_at(ex: Explorer, node: str) -> Any:
        w = ex.initial()
        ex.apply(w, ("client", 0))
        ex.apply(w, ("deliver", 0))
        spec = next(iter(w.state.specs.values()))
        assert spec.participants == ("n2", "n3", "n4") and spec.payer == "n3"
        i = next(i for i, m in enumerate(w.network.flight) if m.dst == node)
        ex.apply(w, ("deliver", i))
        return ex.key(w)

    plain, reduced = Explorer(scenario, cfg()), Explorer(scenario, cfg(symmetry=True))
    assert prepared_at(plain, "n2") != prepared_at(plain, "n4")
    assert prepared_at(reduced, "n2") == prepared_at(reduced, "n4")
    assert prepared_at(reduced, "n2") != prepared_at(reduced, "n3")
