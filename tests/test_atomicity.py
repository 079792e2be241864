"""The atomicity checker on hand-made participant records."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.checkers.atomicity import VIOLATION_KINDS, check_atomicity


def _events(*rows):
    return pd.DataFrame(rows, columns=["time", "gtid", "node", "state"])


PARTS = {"t1": ("a", "b", "c")}


def test_all_committed_is_atomic_and_complete():
    """Every participant prepared then committed: no violation, the explanation says so."""
    ev = _events(*[(1, "t1", n, "prepared") for n in "abc"], *[(5, "t1", n, "committed") for n in "abc"])
    r = check_atomicity(ev, PARTS, {"t1": "ok"})
    assert r.ok and r.atomic and r.complete and r.client_consistent
    assert r.transactions == 1 and len(r.violations) == 0
    assert r.explanation == "all 1 transactions atomic and applied everywhere"


def test_presumed_abort_participant_without_record_is_fine():
    """An aborted transaction a participant never heard of is not incomplete (presumed abort)."""
    ev = _events((1, "t1", "a", "prepared"), (2, "t1", "b", "aborted"), (4, "t1", "a", "aborted"))
    r = check_atomicity(ev, PARTS, {"t1": "fail"})
    assert r.ok


def test_split_decision_is_reported_with_evidence():
    """Committed at a, aborted at b and c: one split violation naming both sides."""
    ev = _events(*[(1, "t1", n, "prepared") for n in "abc"], (5, "t1", "a", "committed"),
                 (6, "t1", "b", "aborted"), (7, "t1", "c", "aborted"))
    r = check_atomicity(ev, PARTS)
    assert not r.atomic and r.count("split") == 1
    row = r.violations.iloc[0]
    assert (row["gtid"], row["kind"], row["committed"], row["aborted"]) == ("t1", "split", "a", "b,c")
    assert "split" in r.explanation and "t1" in r.explanation


def test_flip_at_one_participant():
    """A participant that aborted and later committed the same transaction is a flip."""
    ev = _events((1, "t1", "a", "aborted"), (2, "t1", "a", "prepared"), (3, "t1", "a", "committed"),
                 (3, "t1", "b", "committed"), (3, "t1", "c", "committed"))
    r = check_atomicity(ev, PARTS)
    assert r.count("flip") == 1 and not r.atomic
    assert r.violations.iloc[0]["detail"] == "a both committed and aborted t1"


def test_in_doubt_after_recovery_is_not_a_flip():
    """Aborted, back in doubt after a crash lost the abort record, aborted again: fine."""
    ev = _events((1, "t1", "a", "prepared"), (2, "t1", "a", "aborted"), (9, "t1", "a", "prepared"),
                 (12, "t1", "a", "aborted"))
    assert check_atomicity(ev, {"t1": ("a",)}).ok


def test_commit_not_applied_everywhere_is_incomplete():
    """Committed at a while b is still prepared at the end: atomic so far, but incomplete."""
    ev = _events((1, "t1", "a", "prepared"), (1, "t1", "b", "prepared"), (5, "t1", "a", "committed"))
    r = check_atomicity(ev, {"t1": ("a", "b")})
    assert r.atomic and not r.complete
    assert r.violations.iloc[0]["detail"] == "committed, but not applied at b by the end"
    assert r.violations.iloc[0]["pending"] == "b"


def test_abort_still_locked_is_incomplete():
    """Aborted at a, b still holds its lock (prepared) at the end: incomplete."""
    ev = _events((1, "t1", "a", "aborted"), (1, "t1", "b", "prepared"))
    r = check_atomicity(ev, {"t1": ("a", "b")})
    assert r.count("incomplete") == 1 and r.atomic


def test_uncertain_everywhere_is_not_decided():
    """Everyone still prepared and the client told nothing: undecided, not a violation."""
    ev = _events((1, "t1", "a", "prepared"), (1, "t1", "b", "prepared"))
    assert check_atomicity(ev, {"t1": ("a", "b")}, {"t1": "info"}).ok


def test_client_told_ok_but_aborted():
    """The coordinator said committed while every participant aborted: a client violation."""
    ev = _events((1, "t1", "a", "aborted"), (1, "t1", "b", "aborted"))
    r = check_atomicity(ev, {"t1": ("a", "b")}, {"t1": "ok"})
    assert r.atomic and not r.client_consistent
    assert r.violations["kind"].tolist() == ["incomplete", "client"]


def test_client_told_fail_but_committed():
    """A client told aborted while the transaction committed everywhere: a client violation."""
    ev = _events((1, "t1", "a", "committed"), (1, "t1", "b", "committed"))
    r = check_atomicity(ev, {"t1": ("a", "b")}, {"t1": "fail"})
    assert r.violations["kind"].tolist() == ["client"]


def test_events_order_by_time_not_by_row():
    """Rows out of time order are sorted: the last state by time is the final one."""
    ev = _events((5, "t1", "a", "committed"), (1, "t1", "a", "prepared"), (5, "t1", "b", "committed"),
                 (1, "t1", "b", "prepared"))
    assert check_atomicity(ev, {"t1": ("a", "b")}).ok


def test_many_transactions_counted_per_kind():
    """Violations of several transactions are counted per kind; unknown kinds are refused."""
    ev = _events((1, "t1", "a", "committed"), (1, "t1", "b", "aborted"),
                 (1, "t2", "a", "committed"), (1, "t2", "b", "committed"),
                 (1, "t3", "a", "committed"), (1, "t3", "b", "prepared"))
    r = check_atomicity(ev, dict.fromkeys(("t1", "t2", "t3"), ("a", "b")))
    assert {k: r.count(k) for k in VIOLATION_KINDS} == {"split": 1, "flip": 0, "incomplete": 1, "client": 0}
    assert r.explanation.startswith("2 of 3 transactions violate")
    with pytest.raises(ValueError, match="kind must be one of"):
        r.count("bogus")


def test_missing_columns_are_named():
    """Events without a state column are rejected with the missing column's name."""
    with pytest.raises(ValueError, match="state"):
        check_atomicity(pd.DataFrame({"gtid": [], "node": [], "time": []}), {})
