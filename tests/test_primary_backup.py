"""Primary-backup: a CP system when synchronous with a fixed primary, split brain when elected."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import sim
from sim.checkers import check_linearizable
from sim.errors import ScenarioError
from sim.kernel.world import World
from sim.runner import build_world
from sim.scenario import Scenario

CUT_N3 = {"kind": "partition", "start": 2000, "end": 4000, "groups": [["n3"]]}  # a backup alone
CUT_N1 = {"kind": "partition", "start": 2000, "end": 4000, "groups": [["n1"]]}  # the primary alone


def scenario(protocol: dict[str, Any] | None = None, faults: tuple = (), **sections: Any) -> Scenario:
    """Three nodes (n1 primary), six clients homed two per node, five keys, 6 s."""
    data: dict[str, Any] = {
        "cluster": {"count": 3},
        "workload": {"clients": 6, "rate": 20, "keys": 5, "read_fraction": 0.5, "timeout": 500},
        "faults": {"schedule": list(faults)},
        "protocol": {"name": "primary_backup", **(protocol or {})},
        "run": {"duration": 6000},
    }
    data.update(sections)
    return Scenario.from_dict(data)


def during(history: pd.DataFrame, lo: float, hi: float, **eq: Any) -> pd.DataFrame:
    """Operations invoked in [lo, hi) whose columns equal the given values."""
    h = history[(history["invoke"] >= lo) & (history["invoke"] < hi)]
    for col, val in eq.items():
        h = h[h[col] == val]
    return h


def replica_states(world: World) -> list[dict]:
    return [world.nodes[n].replica_state() for n in world.scenario.nodes]


# -- synchronous, fixed primary: consistent, not available -----------------------------------------


def test_sync_without_faults_is_linearizable_and_fully_available():
    """Sync replication with refuse and no faults: every op succeeds, the history is linearizable."""
    res = sim.run(scenario({"replication": "sync", "on_backup_unreachable": "refuse"}), seed=1)
    assert res.summary["availability"] == 1.0
    assert res.summary["protocol.writes_refused"] == 0
    verdict = check_linearizable(res.history)
    assert verdict.linearizable is True, verdict.explanation
    assert verdict.ops_checked > 500


def test_sync_fixed_side_without_the_primary_refuses_and_reads_are_never_stale():
    """A backup cut off with its clients serves nothing; the history stays linearizable."""
    res = sim.run(scenario({"replication": "sync"}, faults=(CUT_N3,)), seed=2)
    s = res.summary
    assert s["ops.minority"] > 20
    assert s["availability.minority"] == 0.0
    refused = during(res.history, 2400, 4000, side="minority")
    assert len(refused) > 10 and (refused["outcome"] == "fail").all()  # refused, not timed out
    assert refused["error"].str.contains("no reachable primary").all()
    verdict = check_linearizable(res.history)
    assert verdict.linearizable is True, verdict.explanation


def test_sync_refuse_primary_cut_from_a_backup_refuses_writes_but_serves_reads():
    """With refuse, the primary stops taking writes while a backup is unreachable."""
    res = sim.run(scenario({"replication": "sync", "on_backup_unreachable": "refuse"}, faults=(CUT_N3,)), seed=2)
    majority = during(res.history, 2300, 4000, side="majority")
    writes, reads = majority[majority["op"] == "write"], majority[majority["op"] == "read"]
    assert len(writes) > 20 and (writes["outcome"] == "fail").all()
    assert writes["error"].str.contains("backup n3 unreachable").all()
    assert len(reads) > 20 and (reads["outcome"] == "ok").all()
    assert res.summary["protocol.writes_refused"] >= len(writes)
    after = during(res.history, 4300, 6000)
    assert len(after) > 100 and (after["outcome"] == "ok").all()  # n3 caught up: writes flow again


def test_sync_degrade_drops_the_unreachable_backup_and_stays_available():
    """With degrade, the primary's side keeps writing; the dropped backup catches up after heal."""
    s = scenario({"replication": "sync", "on_backup_unreachable": "degrade"}, faults=(CUT_N3,))
    world = build_world(s)
    world.run()
    summary = world.scenario.protocol.summary(world, world.state)
    assert summary["protocol.backups_dropped"] == 1
    assert summary["protocol.divergent_keys_at_end"] == 0
    res = sim.run(s)
    assert res.summary["availability.majority"] > 0.97
    assert res.summary["availability.minority"] == 0.0
    assert check_linearizable(res.history).linearizable is True
    states = replica_states(world)
    assert states[0] and states[0] == states[1] == states[2]


def test_backups_repair_lost_replication_messages():
    """With 10% message loss, heartbeats reveal gaps and every backup ends with the primary's log."""
    s = scenario({"replication": "async"}, network={"loss": 0.1}, run={"duration": 3000})
    world = build_world(s)
    world.run()
    world.env.run(until=world.now + 500)  # no more writes: let the last gaps close
    logs = [world.nodes[n].log for n in world.scenario.nodes]
    assert len(logs[0]) > 100 and logs[0] == logs[1] == logs[2]


# -- elected primary: failover, split brain, lost writes ---------------------------------------------


def test_elected_backup_takes_over_when_the_primary_crashes():
    """n2 becomes primary in view 1 after failover_timeout; writes succeed again."""
    crash = {"kind": "crash", "node": "n1", "start": 2000, "end": "inf"}
    res = sim.run(scenario({"replication": "async", "primary": "elected"}, faults=(crash,)), seed=1)
    s = res.summary
    assert s["protocol.failovers"] == 1 and s["protocol.max_view"] == 1
    later = during(res.history, 2600, 6000)
    later = later[later["node"] != "n1"]
    assert len(later) > 100 and (later["outcome"] == "ok").all()
    assert s["protocol.lost_on_failover"] == 0  # nothing was rolled back: n1 never came back


@pytest.mark.parametrize("replication, missing", [("async", True), ("sync", False)])
def test_writes_acknowledged_before_replication_die_with_the_primary(replication, missing):
    """Async: writes the primary acked but never replicated are gone after failover; sync: none."""
    cut = [{"kind": "loss", "src": "n1", "dst": dst, "probability": 1.0, "start": 1800, "end": 2000}
           for dst in ("n2", "n3")]
    crash = {"kind": "crash", "node": "n1", "start": 2000, "end": "inf"}
    s = scenario({"replication": replication, "primary": "elected", "on_backup_unreachable": "degrade"},
                 faults=(*cut, crash), workload={"clients": 6, "rate": 40, "keys": 5, "timeout": 500})
    summary = sim.run(s, seed=1).summary
    assert summary["protocol.failovers"] == 1
    assert summary["protocol.lost_on_failover"] == 0  # n1 never returns, so nothing is rolled back
    if missing:
        assert summary["protocol.acked_missing_at_end"] >= 5
    else:
        assert summary["protocol.acked_missing_at_end"] == 0


def test_async_elected_partition_splits_the_brain_and_loses_acknowledged_writes():
    """The cut-off primary and a newly elected one both accept writes; the old side's are lost."""
    s = scenario({"replication": "async", "primary": "elected"}, faults=(CUT_N1,))
    res = sim.run(s, seed=1)
    summary = res.summary
    assert summary["protocol.max_primaries"] == 2 and summary["protocol.split_brain_time"] > 1000
    old_side = during(res.history, 2000, 4000, side="minority", op="write", outcome="ok")
    new_side = during(res.history, 2400, 4000, side="majority", op="write", outcome="ok")
    assert len(old_side) > 20 and len(new_side) > 20  # both sides acknowledged writes
    assert summary["protocol.split_brain_acks"] > 20
    assert summary["protocol.lost_on_failover"] > 20
    assert summary["protocol.stepdowns"] == 1 and summary["protocol.divergent_keys_at_end"] == 0
    verdicts = [check_linearizable(sim.run(s, seed=seed).history).linearizable for seed in range(1, 4)]
    assert False in verdicts


def test_sync_fixed_never_loses_acknowledged_writes_under_the_same_partition():
    """The same partition with a fixed synchronous primary: no split brain, nothing lost."""
    res = sim.run(scenario({"replication": "sync"}, faults=(CUT_N1,)), seed=1)
    s = res.summary
    assert s["protocol.max_primaries"] == 1 and s["protocol.lost_on_failover"] == 0
    assert s["availability.majority"] == 0.0  # n2, n3 have no primary: refuse
    assert check_linearizable(res.history).linearizable is True


# -- configuration and determinism ---------------------------------------------------------------------


def test_bad_configs_are_rejected_with_the_field_path():
    """Unknown primary node, unknown mode and a timeout shorter than a heartbeat are errors."""
    with pytest.raises(ScenarioError, match=r"protocol\.primary_node"):
        scenario({"primary_node": "n9"})
    with pytest.raises(ScenarioError, match=r"protocol\.replication"):
        scenario({"replication": "semi"})
    with pytest.raises(ScenarioError, match=r"protocol\.failover_timeout"):
        scenario({"heartbeat_interval": 100, "failover_timeout": 100})


def test_fixed_primary_can_be_any_node_and_runs_repeat_exactly():
    """primary_node picks the primary; the same seed gives the same history."""
    s = scenario({"primary_node": "n2", "replication": "async"}, faults=(CUT_N1,))
    a, b = sim.run(s, seed=4), sim.run(s, seed=4)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert a.summary["protocol.failovers"] == 0 and a.summary["protocol.max_primaries"] == 1
    assert a.summary["availability.minority"] == 0.0  # n1 is a backup cut from n2: refuses
    assert a.summary["availability.majority"] == 1.0


def test_a_lone_elected_backup_promotes_itself_and_its_view_wins_after_heal():
    """Without consensus an isolated backup takes over; on heal the majority adopts its older log."""
    s = scenario({"primary_node": "n2", "primary": "elected", "replication": "async"}, faults=(CUT_N1,))
    res = sim.run(s, seed=4)
    summary = res.summary
    assert summary["protocol.failovers"] == 1 and summary["protocol.max_view"] == 3  # view 3 is n1's
    lone = during(res.history, 2400, 4000, side="minority")
    assert len(lone) > 10 and (lone["outcome"] == "ok").all()  # n1 serves its clients as primary
    majority_writes = during(res.history, 2000, 4000, side="majority", op="write", outcome="ok")
    assert len(majority_writes) > 20
    assert summary["protocol.lost_on_failover"] >= len(majority_writes) // 2  # the majority lost
    assert summary["protocol.stepdowns"] == 1
