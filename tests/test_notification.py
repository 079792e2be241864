"""Best-effort notification: scenario format, outcome categories, the loss oracle, reconciliation, duplicates."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from scipy import stats

import sim
import sim.messaging.notification as notification_module
from sim.checkers.notification import NOTIFY_OUTCOMES, check_notifications
from sim.errors import ScenarioError
from sim.messaging import notification_oracle
from sim.scenario import Scenario


def docstring_toml() -> str:
    return textwrap.dedent(notification_module.__doc__.split("::\n", 1)[1])


def scenario(merchants=None, faults=(), network=None, **protocol) -> Scenario:
    proto = {"name": "notification", "provider": "pay", "schedule": [0, "1s", "2s", "10s"], "processing_time": "1s",
             "deadline": "5s"}
    proto.update(protocol)
    merchants = merchants or [{"node": "shop", "arrivals": {"rate": 50, "stop": "5s"}, "reconcile": False}]
    proto["merchants"] = merchants
    return Scenario.from_dict({
        "cluster": {"nodes": ["pay"] + [m["node"] for m in merchants]},
        "workload": {"clients": 0},
        "network": network or {},
        "faults": {"schedule": list(faults)},
        "protocol": proto,
        "run": {"duration": "40s"},
    })


def outcomes(report) -> dict[str, int]:
    return {k: report.counts[k] for k in NOTIFY_OUTCOMES}


def test_documented_toml_example_runs():
    """The docstring scenario parses, round-trips and runs; its outcome categories add up to the results."""
    s = Scenario.from_toml_string(docstring_toml())
    assert Scenario.from_dict(s.to_dict()) == s
    r = sim.run(s, seed=1)
    c = r.verdicts["notification"].counts
    assert c["results"] == c["transactions"] > 500
    assert sum(outcomes(r.verdicts["notification"]).values()) == c["results"]
    assert c["mismatched"] == 0 and c["duplicates"] > 50 and c["notified_in_time"] > 500


def base(**protocol):
    data = {"cluster": {"nodes": ["pay", "shop"]}, "workload": {"clients": 0},
            "protocol": {"name": "notification", "provider": "pay", "merchants": [{"node": "shop"}]}}
    data["protocol"].update(protocol)
    return data


@pytest.mark.parametrize(("patch", "path", "message"), [
    (lambda d: d["workload"].update(clients=3), "workload.clients", "must be 0"),
    (lambda d: d["cluster"]["nodes"].append("bank"), "cluster.nodes[2]", "no notification role"),
    (lambda d: d["protocol"].update(merchants=[]), "protocol.merchants", "at least one merchant"),
    (lambda d: d["protocol"]["merchants"].append({"node": "pay"}), "protocol.merchants[1].node",
     "already plays the role"),
    (lambda d: d["protocol"].update(schedule=[]), "protocol.schedule", "at least one"),
    (lambda d: d["protocol"].update(schedule=[0, "-1s"]), "protocol.schedule[1]", "must not be negative"),
    (lambda d: d["protocol"].update(success_probability=2), "protocol.success_probability", "must be in [0, 1]"),
    (lambda d: d["protocol"]["merchants"][0].update(reconcile_interval=0),
     "protocol.merchants[0].reconcile_interval", "must be > 0"),
    (lambda d: d["protocol"]["merchants"][0].update(reconcile_every="1s"), "protocol.merchants[0].reconcile_every",
     "unknown key"),
    (lambda d: d["protocol"].update(provider="ghost"), "protocol.provider", "unknown node"),
])
def test_invalid_notification_scenarios_name_the_field(patch, path, message):
    """Bad notification configs raise ScenarioError naming the field path."""
    data = base()
    patch(data)
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    assert err.value.path == path, str(err.value)
    assert message in err.value.reason, str(err.value)


def test_checker_classifies_by_how_the_initiator_first_learned():
    """In time / late by the deadline, reconciled when the query came first, never known, no result."""
    nan = math.nan
    table = pd.DataFrame([
        ("fast", 10.0, True, 12.0, "notify", True, 1),
        ("late", 10.0, True, 100.0, "notify", True, 3),
        ("asked", 10.0, False, 50.0, "reconcile", False, 0),
        ("asked_then_told", 10.0, True, 50.0, "reconcile", True, 2),
        ("dark", 10.0, True, nan, "", None, 0),
        ("nothing", nan, None, nan, "", None, 0),
    ], columns=["txn", "ready", "success", "learned", "source", "known_success", "notifications"])
    report = check_notifications(table, deadline=20.0)
    assert report.transactions.set_index("txn")["outcome"].to_dict() == {
        "fast": "notified_in_time", "late": "notified_late", "asked": "reconciled", "asked_then_told": "reconciled",
        "dark": "never_known", "nothing": "no_result"}
    c = report.counts
    assert sum(outcomes(report).values()) == c["results"] == 5 and c["no_result"] == 1
    assert c["reconciled_never_notified"] == 1 and c["duplicates"] == 3 and c["duplicated"] == 2
    assert c["mismatched"] == 0 and not report.ok


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "duplicate", "attempts"), [(0.5, 0.2, 3), (0.3, 0.0, 2)])
def test_never_notified_and_duplicates_match_the_oracle(loss, duplicate, attempts):
    """Independent loss q, k attempts: q^k of the results are never notified and the mean duplicates per result
    follow notification_oracle; the 95% CIs over 10 seeds contain both."""
    s = scenario(merchants=[{"node": "shop", "arrivals": {"rate": 40, "stop": "12s"}, "reconcile": False}],
                 network={"loss": loss, "duplicate": duplicate}, processing_time={"dist": "exponential", "mean": 50},
                 schedule=[0] + ["1s"] * (attempts - 1))
    never, dups = [], []
    for seed in range(10):
        t = sim.run(s, seed=seed).tables["notifications"]
        t = t[t["ready"].notna()]
        never.append(float((t["notifications"] == 0).mean()))
        dups.append(float((t["notifications"] - 1).clip(lower=0).mean()))
    want = notification_oracle(loss, attempts, duplicate)
    for values, key in ((never, "p_never_notified"), (dups, "mean_duplicates")):
        v = np.asarray(values)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        assert abs(v.mean() - want[key]) <= half, (key, v.mean(), want[key], half)


def test_reconciliation_turns_never_known_into_reconciled():
    """The merchant is down for longer than the whole schedule of some results: without reconciliation it never
    learns them; with it, exactly those results are reconciled (never notified) and nothing stays unknown."""
    crash = [{"kind": "crash", "node": "shop", "start": "2s", "end": "20s"}]

    def shop(reconcile):
        return [{"node": "shop", "arrivals": {"rate": 50, "stop": "5s"}, "reconcile": reconcile,
                 "reconcile_delay": "10s", "reconcile_interval": "5s"}]

    without = sim.run(scenario(shop(False), crash), seed=1)
    with_ = sim.run(scenario(shop(True), crash), seed=1)
    dark = without.tables["notifications"].query("outcome == 'never_known'")["txn"].tolist()
    reconciled = with_.tables["notifications"].query("outcome == 'reconciled' and notifications == 0")["txn"].tolist()
    assert len(dark) > 20 and dark == reconciled
    assert with_.verdicts["notification"].counts["never_known"] == 0 and with_.verdicts["notification"].ok
    in_time = [outcomes(run.verdicts["notification"])["notified_in_time"] for run in (without, with_)]
    assert in_time[0] == in_time[1]
    queried = with_.tables["notification_events"][with_.tables["notification_events"]["event"] == "query"]
    assert queried["time"].min() >= 20_000  # the first reconciliation job after the merchant came back


def test_outcome_categories_add_up_with_crashes_and_loss():
    """Two merchants down for 4 s, one reconciling, over a lossy network: every result is in exactly one
    category, late and reconciled ones appear, and recorded results are never wrong."""
    merchants = [{"node": "a", "arrivals": {"rate": 30, "stop": "6s"}, "reconcile": True, "reconcile_delay": "8s",
                  "reconcile_interval": "1s"},
                 {"node": "b", "arrivals": {"rate": 30, "stop": "6s"}, "reconcile": False}]
    faults = [{"kind": "crash", "node": n, "start": "2s", "end": "6s"} for n in ("a", "b")]
    r = sim.run(scenario(merchants, faults, network={"loss": 0.3}), seed=2)
    t = r.tables["notifications"]
    c = r.verdicts["notification"].counts
    assert sum(outcomes(r.verdicts["notification"]).values()) == c["results"] == len(t) - c["no_result"]
    assert c["notified_in_time"] > 0 and c["notified_late"] > 0 and c["reconciled"] > 0 and c["never_known"] > 0
    assert set(t.loc[t["outcome"] == "reconciled", "merchant"]) == {"a"}
    assert set(t.loc[t["outcome"] == "never_known", "merchant"]) == {"b"}
    assert c["mismatched"] == 0
    late = t[t["outcome"] == "notified_late"]
    assert (late["learned"] - late["ready"] > 5000).all()


def test_duplicates_are_counted_from_what_the_merchant_received():
    """Network duplication and lost acks make merchants receive a result more than once; the report's
    duplicates equal the receptions beyond the first in the event log."""
    r = sim.run(scenario(network={"loss": 0.2, "duplicate": 0.3}), seed=4)
    ev = r.tables["notification_events"]
    received = ev[ev["event"] == "notified"].groupby("txn").size()
    assert r.verdicts["notification"].counts["duplicates"] == int((received - 1).sum()) > 20
    assert r.verdicts["notification"].counts["duplicated"] == int((received > 1).sum())
    assert r.verdicts["notification"].counts["notifications_received"] == len(ev[ev["event"] == "notified"])


def test_provider_crash_resumes_the_durable_schedule():
    """A provider down from 1 s to 4 s sends nothing meanwhile, then resumes its schedules: every result known."""
    r = sim.run(scenario(faults=[{"kind": "crash", "node": "pay", "start": "1s", "end": "4s"}],
                                  network={"loss": 0.2}), seed=3)
    sent = r.tables["notification_events"][(r.tables["notification_events"]["event"] == "notify")]
    assert not sent["time"].between(1000, 4000, inclusive="neither").any()
    assert (sent["time"] == 4000).sum() > 0  # attempts that fell due during the outage go out at recovery
    counts = r.verdicts["notification"].counts
    assert counts["never_known"] == 0 and counts["notified_late"] > 0


def test_exercise_answer_is_loss_to_the_power_of_attempts():
    """The notebook exercise accepts q^k for q = 0.2 and k = 4, and refuses q * k."""
    from sim.exercises import check

    assert check("notify.never_notified", 0.2**4) and not check("notify.never_notified", 0.2 * 4)
    # numpy numbers, as a notebook computes them, count like Python's
    assert check("notify.never_notified", np.float32(0.2) ** 4) and check("notify.never_notified", np.float64(0.0016))
    assert not check("notify.never_notified", np.float32(0.2) * 4)
    assert check("quorum.min_w", np.int64(5)) and not check("quorum.min_w", np.int64(4))  # N = 7, R = 3


def test_same_seed_same_result_and_the_result_round_trips(tmp_path):
    """The same seed gives identical tables and verdicts; a saved result loads with its verdict."""
    s = Scenario.from_toml_string(docstring_toml())
    a, b = sim.run(s, seed=9), sim.run(s, seed=9)
    assert set(a.tables) == {"notifications", "notification_events"}
    for name, table in a.tables.items():
        pdt.assert_frame_equal(table, b.tables[name])
    loaded = sim.Result.load(a.save(tmp_path / "run"))
    assert loaded.verdicts["notification"].counts == a.verdicts["notification"].counts
    assert loaded.verdicts["notification"].ok == a.verdicts["notification"].ok
