"""The cluster-history checks (sim.checkers.cluster_history) on hand-made histories, right and known-wrong."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sim.checkers.cluster_history import EVENTS, HISTORY_COLUMNS, check_confirmed_delivered, partition_report

SIDES = {"n1": "majority", "n2": "majority", "n3": "minority"}


def history(*rows: tuple) -> pd.DataFrame:
    """Rows of (time, client, node, msg_id, event[, detail])."""
    out = []
    for r in rows:
        t, client, node, msg, event = r[:5]
        detail = r[5] if len(r) > 5 else ""
        out.append((t, client, node, msg, event, EVENTS[event], False if event == "delivered" else None, detail))
    return pd.DataFrame(out, columns=HISTORY_COLUMNS)


def clean() -> list[tuple]:
    """p1 on n1 and p3 on n3 publish every 100 ms from 0 to 1 s, each confirmed 5 ms later and delivered."""
    rows: list[tuple] = []
    for client, node in (("p1", "n1"), ("p3", "n3")):
        for i in range(11):
            t = 100.0 * i
            msg = f"{client}-{i}"
            rows += [(t, client, node, msg, "published"), (t + 5, client, node, msg, "confirmed"),
                     (t + 6, "c1", "n1", msg, "delivered"), (t + 6, "c1", "n1", msg, "acked")]
    return rows


def report(rows: list[tuple], **kw):
    return partition_report(history(*rows), start=kw.pop("start", 200.0), end=kw.pop("end", 600.0), sides=SIDES, **kw)


def test_a_clean_history_is_all_available_with_nothing_lost():
    r = report(clean())
    assert r.counts["lost"] == r.counts["duplicates"] == r.counts["unconfirmed_delivered"] == 0
    assert r.availability == {"majority": 1.0, "minority": 1.0}
    assert r.recovery == 0.0  # the publish at the heal itself is confirmed in time
    assert check_confirmed_delivered(history(*clean())).ok


def test_a_confirmed_message_never_delivered_is_lost():
    rows = [r for r in clean() if not (r[3] == "p3-4" and r[4] in ("delivered", "acked"))]
    r = report(rows)
    assert r.lost == ["p3-4"] and r.counts["lost"] == 1
    assert not check_confirmed_delivered(history(*rows)).ok


def test_a_message_delivered_twice_is_a_duplicate():
    rows = [*clean(), (900.0, "c2", "n2", "p1-3", "delivered")]
    assert report(rows).duplicated == ["p1-3"]


def test_unknown_yet_delivered_is_reported_and_not_lost():
    rows = [r if not (r[3] == "p1-2" and r[4] == "confirmed") else (r[0], r[1], r[2], r[3], "unknown") for r in clean()]
    r = report(rows)
    assert r.unconfirmed_delivered == ["p1-2"] and r.counts["lost"] == 0 and r.counts["unknown"] == 1


def test_late_confirms_or_confirms_after_the_heal_are_not_availability():
    """The minority's publishes during the partition confirmed only late, or only after the heal: unavailable."""
    rows = []
    for r in clean():
        if r[1] == "p3" and r[4] == "confirmed" and 200.0 <= r[0] - 5 < 600.0:
            i = int(r[3].split("-")[1])
            late = (r[0], r[1], r[2], r[3], "confirmed", "late")
            rows.append(late if i % 2 else (700.0, r[1], r[2], r[3], "confirmed"))
        else:
            rows.append(r)
    r = report(rows)
    assert r.availability == {"majority": 1.0, "minority": 0.0}


def test_recovery_is_the_last_trouble_after_the_heal():
    """p3 is silent from the heal (600) until 900 (no connection): it recovers at 900, 300 ms after the heal."""
    rows = [r for r in clean() if not (r[1] == "p3" and 600.0 <= r[0] < 900.0) and
            r[3] not in {f"p3-{i}" for i in (6, 7, 8)}]
    r = report(rows)
    assert r.recovery == 300.0
    # a publisher that is never confirmed in time after the heal never recovered
    never = [r for r in clean() if not (r[3] in {f"p3-{i}" for i in range(6, 11)} and r[4] == "confirmed")]
    assert math.isnan(report(never).recovery)


@pytest.mark.parametrize("bad, match", [
    (lambda h: h.drop(columns=["detail"]), "lacks the column"),
    (lambda h: h.assign(event=h["event"].where(h.index != 0, "sent")), "unknown event"),
])
def test_malformed_histories_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        partition_report(bad(history(*clean())), start=200.0, end=600.0, sides=SIDES)


@pytest.mark.parametrize("kw, match", [
    ({"start": 600.0, "end": 200.0}, "after start"),
    ({"start": 0.0, "end": math.inf}, "finite"),
    ({"bin": 0.0}, "bin"),
    ({"gap": -1.0}, "gap"),
    ({"sides": {"n1": "majority"}}, "no side"),
])
def test_bad_arguments_are_refused(kw, match):
    args = {"start": 200.0, "end": 600.0, "sides": SIDES, **kw}
    with pytest.raises(ValueError, match=match):
        partition_report(history(*clean()), **args)
