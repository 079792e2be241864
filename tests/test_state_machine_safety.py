"""The state-machine-safety checker (sim.checkers.state_machine_safety), on hand-made inputs."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.checkers.state_machine_safety import AppliedEntries, check_state_machine_safety

COLUMNS = ["time", "node", "life", "index", "term", "op_id"]


def test_two_nodes_applying_different_entries_at_one_index_is_a_violation():
    """n1 applies op 7 of term 1 at index 2, n2 later applies term 2's no-op there: rejected, with both applies."""
    bad = pd.DataFrame([(10.0, "n1", 0, 1, 1, 0), (11.0, "n1", 0, 2, 1, 7), (12.0, "n2", 0, 1, 1, 0),
                        (30.5, "n2", 0, 2, 2, 0), (31.0, "n3", 0, 2, 2, 0)], columns=COLUMNS)
    verdict = check_state_machine_safety(bad)
    assert not verdict.ok
    assert verdict.conflicts == 2 and verdict.applies == 5 and verdict.indices == 2
    assert verdict.explanation == ("two entries applied at index 2: n1 applied op 7 of term 1 at 11.0 ms; "
                                   "n2 applied a no-op of term 2 at 30.5 ms (1 more conflicting applies)")
    assert verdict.violations.to_dict("records") == [
        {"index": 2, "first_node": "n1", "first_life": 0, "first_term": 1, "first_op_id": 7, "first_time": 11.0,
         "second_node": "n2", "second_life": 0, "second_term": 2, "second_op_id": 0, "second_time": 30.5}]


def test_a_restarted_node_reapplying_its_entries_is_no_violation():
    """n1 applies indices 1-2, crashes, and replays them in its next life; n2 applies the same: ok."""
    good = pd.DataFrame([(10.0, "n1", 0, 1, 1, 0), (11.0, "n1", 0, 2, 1, 7), (50.0, "n1", 1, 1, 1, 0),
                         (50.0, "n1", 1, 2, 1, 7), (12.0, "n2", 0, 1, 1, 0), (13.0, "n2", 0, 2, 1, 7)],
                        columns=COLUMNS)
    verdict = check_state_machine_safety(good)
    assert verdict.ok and verdict.conflicts == 0 and len(verdict.violations) == 0
    assert verdict.explanation == "2 log indices applied (6 applies), one entry each"
    # the same op id in another term is another entry
    other = pd.concat([good, pd.DataFrame([(60.0, "n3", 0, 2, 2, 7)], columns=COLUMNS)])
    assert not check_state_machine_safety(other).ok
    with pytest.raises(ValueError, match="lacks column"):
        check_state_machine_safety(good.drop(columns="term"))


def test_compaction_forgets_only_what_every_node_has_in_its_snapshot():
    """Indices are dropped once every node's snapshot covers them; below that a conflict is still caught."""
    rec = AppliedEntries(["n1", "n2"])
    for i in range(1, 11):
        rec.record(float(i), "n1", 0, i, 1, i)
    rec.compacted("n1", 8)
    assert rec.remembered == range(1, 11)  # n2 has no snapshot yet: it may still apply them all
    rec.record(20.0, "n2", 0, 3, 2, 99)  # and a different entry at index 3 is caught
    rec.compacted("n2", 5)
    assert rec.remembered == range(6, 11) and rec.first(5) is None and rec.first(6).op_id == 6
    rec.record(21.0, "n2", 0, 7, 2, 99)
    verdict = rec.result()
    assert not verdict.ok and verdict.conflicts == 2 and list(verdict.violations["index"]) == [3, 7]
    with pytest.raises(ValueError, match="unknown node 'n9'"):
        rec.compacted("n9", 1)


def test_applies_out_of_index_order_are_compared_all_the_same():
    """A table need not be in index order: index 3 applied before 1 and 2, then a different entry at 3."""
    rows = [(1.0, "n1", 0, 3, 1, 3), (2.0, "n2", 0, 1, 1, 1), (3.0, "n2", 0, 2, 1, 2), (4.0, "n2", 0, 3, 2, 9)]
    verdict = check_state_machine_safety(pd.DataFrame(rows, columns=COLUMNS))
    assert verdict.indices == 3 and verdict.conflicts == 1
    assert verdict.violations[["index", "first_node", "second_node", "second_op_id"]].to_dict("records") == [
        {"index": 3, "first_node": "n1", "second_node": "n2", "second_op_id": 9}]
