"""Transactional messages: half messages with check-back, the outbox relay, and the naive dual writes they fix."""

from __future__ import annotations

import textwrap

import pandas as pd
import pandas.testing as pdt
import pytest

import sim
import sim.messaging.txmsg as txmsg_module
from sim.checkers.txmsg import check_transactional
from sim.errors import ScenarioError
from sim.messaging.history import EVENT_COLUMNS
from sim.scenario import Scenario


def docstring_toml() -> str:
    return textwrap.dedent(txmsg_module.__doc__.split("::\n", 1)[1])


def faulty(mode: str, crash: float = 0.05, rollback: float = 0.2, network: dict | None = None,
           producer: dict | None = None, faults: list | None = None, **protocol) -> Scenario:
    """Two producers crashing at seeded step boundaries, a broker restart, a coordinator restart (half
    messages), a partition cutting one producer off, loss and duplication everywhere."""
    nodes = ["broker", "app1", "app2", "c1"] + (["coord"] if mode == "half_message" else [])
    proto = {"name": "transactional_messages", "mode": mode, "consumer_timeout": "1s", "confirm_timeout": "300ms",
             "producers": [{"node": p, "arrivals": {"rate": 40, "stop": "5s"}, "rollback_probability": rollback,
                            "crash_probability": crash, "restart_after": "300ms", **(producer or {})}
                           for p in ("app1", "app2")],
             "consumers": [{"node": "c1", "queue": "events", "prefetch": 10, "idempotency": {"store": "shared"}}]}
    if mode == "half_message":
        proto.update(coordinator="coord", check_after="500ms", check_interval="250ms")
    proto.update(protocol)
    if faults is None:
        faults = [{"kind": "crash", "node": "broker", "start": "2s", "end": "2.4s"},
                  {"kind": "partition", "groups": [["app1"]], "start": "1s", "end": "1.5s"}]
        if mode == "half_message":
            faults.append({"kind": "crash", "node": "coord", "start": "3s", "end": "3.5s"})
    return Scenario.from_dict({
        "cluster": {"nodes": nodes},
        "workload": {"clients": 0},
        "network": network if network is not None else {"loss": 0.02, "duplicate": 0.02,
                                                        "latency": {"dist": "exponential", "mean": 1}},
        "faults": {"schedule": faults},
        "protocol": proto,
        "run": {"duration": "15s"},
    })


def test_documented_toml_example_runs():
    """The docstring scenario parses, round-trips and runs: every committed transaction's message is delivered,
    none of the others', and the check-back resolved half messages both ways."""
    s = Scenario.from_toml_string(docstring_toml())
    assert Scenario.from_dict(s.to_dict()) == s
    r = sim.run(s, seed=1)
    verdict = r.verdicts["transactional"]
    assert verdict.ok and verdict.settled, verdict.explanation
    c = r.verdicts["transactional"].counts
    assert c["committed"] == c["delivered"] > 100 and c["rolled_back"] > 10
    ev = r.tables["txmsg_events"]["event"].value_counts()
    assert ev["committed_by_check"] > 0 and ev["rolled_back_by_check"] > 0 and ev["check_back"] > 0


def base(**protocol):
    data = {"cluster": {"nodes": ["broker", "tx", "app", "c1"]}, "workload": {"clients": 0},
            "protocol": {"name": "transactional_messages", "mode": "half_message", "coordinator": "tx",
                         "producers": [{"node": "app"}], "consumers": [{"node": "c1", "queue": "events"}]}}
    data["protocol"].update(protocol)
    return data


@pytest.mark.parametrize(("patch", "path", "message"), [
    (lambda d: d["protocol"].pop("coordinator"), "protocol.coordinator", "needs the node of the half-message store"),
    (lambda d: d["protocol"].update(mode="outbox"), "protocol.coordinator", "only for mode 'half_message'"),
    (lambda d: d["protocol"].update(mode="two_phase"), "protocol.mode", "must be one of"),
    (lambda d: d["protocol"]["producers"][0].update(crash_point="after_publish"),
     "protocol.producers[0].crash_point", "has crash points before_commit, after_commit"),
    (lambda d: d["protocol"].update(producers=[]), "protocol.producers", "at least one producer"),
    (lambda d: d["protocol"].update(exchange="nowhere"), "protocol.exchange", "unknown exchange"),
    (lambda d: d["protocol"]["consumers"][0].update(queue="ghost"), "protocol.consumers[0].queue", "unknown queue"),
    (lambda d: d["protocol"]["producers"][0].update(node="tx"), "protocol.producers[0].node",
     "already plays the role"),
    (lambda d: d["cluster"]["nodes"].append("spare"), "cluster.nodes[4]", "no transactional_messages role"),
    (lambda d: d["protocol"]["producers"][0].update(rollback_probability=-0.1),
     "protocol.producers[0].rollback_probability", "must be in [0, 1]"),
    (lambda d: d["protocol"].update(check_max=0), "protocol.check_max", "must be >= 1 or 'unlimited'"),
    (lambda d: d["protocol"].update(check_max="never"), "protocol.check_max", "one of 'unlimited'"),
])
def test_invalid_txmsg_scenarios_name_the_field(patch, path, message):
    """Bad transactional-message configs raise ScenarioError naming the field path."""
    data = base()
    patch(data)
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    assert err.value.path == path, str(err.value)
    assert message in err.value.reason, str(err.value)


def test_checker_outcomes():
    """Committed and received: delivered; committed and in flight: pending; committed and gone: lost;
    not committed but enqueued or received: phantom; not committed and invisible: absent."""
    transactions = pd.DataFrame({"txn": ["ok", "wait", "half", "gone", "ghost", "quiet", "undecided"],
                                 "state": ["committed", "committed", "committed", "committed", "rolled_back",
                                           "rolled_back", "none"]})
    rows = [(1.0, "enqueue", "ok"), (2.0, "receive", "ok"), (3.0, "receive", "ok"), (2.0, "side_effect", "ok"),
            (4.0, "enqueue", "ghost"), (5.0, "receive", "stray")]
    events = pd.DataFrame([{**dict.fromkeys(EVENT_COLUMNS, ""), "time": t, "event": e, "msg_id": m}
                           for t, e, m in rows])
    report = check_transactional(transactions, events, pending=["wait"], unresolved=["half", "undecided"])
    assert report.transactions.set_index("txn")["outcome"].to_dict() == {
        "ok": "delivered", "wait": "pending", "half": "pending", "gone": "lost", "ghost": "phantom",
        "quiet": "absent", "undecided": "absent", "stray": "phantom"}
    c = report.counts
    assert (c["lost"], c["phantom"], c["pending"], c["duplicate_deliveries"]) == (1, 2, 2, 1)
    assert not report.ok and not report.settled
    assert report.violations["txn"].tolist() == ["gone", "ghost", "stray"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["half_message", "outbox"])
def test_robust_modes_publish_if_and_only_if_committed(mode):
    """Over 40 seeds with producer crashes at every step boundary, broker and coordinator restarts, a partition,
    loss and duplication: no lost and no phantom message, nothing pending at the end, and the idempotent
    consumer turns duplicate deliveries into a single side effect."""
    crashes = duplicates = checks = 0
    for seed in range(40):
        r = sim.run(faulty(mode), seed=seed)
        verdict = r.verdicts["transactional"]
        assert verdict.ok and verdict.settled, (seed, verdict.explanation)
        c = r.verdicts["transactional"].counts
        assert c["committed"] > 100 and c["duplicate_side_effects"] == 0
        ev = r.tables["txmsg_events"]["event"]
        crashes += int(ev.str.startswith("crash_").sum())
        checks += int((ev == "committed_by_check").sum())
        duplicates += c["duplicate_deliveries"]
    assert crashes > 150
    if mode == "half_message":
        assert checks > 50  # commits that only the check-back saved
    else:
        assert duplicates > 30  # rows republished after a crash between publish and delete


@pytest.mark.parametrize(("mode", "violation", "point"), [
    ("commit_then_publish", "lost", "after_commit"),
    ("publish_then_commit", "phantom", "before_commit"),
])
def test_naive_dual_writes_violate_the_invariant_in_a_seed_search(mode, violation, point):
    """Searching seeds finds a crash between the two writes that loses a committed message or publishes one
    for a transaction that never committed (no business rollbacks here); the half-message protocol and the
    outbox, on the same seed, keep the invariant."""
    found = None
    for seed in range(20):
        r = sim.run(faulty(mode, crash=0.02, rollback=0.0), seed=seed)
        if r.verdicts["transactional"].counts[violation] > 0:
            found = seed
            break
    assert found is not None, f"no seed in 0..19 made {mode} violate"
    bad = r.verdicts["transactional"].violations
    crashed = r.tables["txmsg_events"][r.tables["txmsg_events"]["event"] == f"crash_{point}"]["txn"].tolist()
    assert set(bad.loc[bad["outcome"] == violation, "txn"]) & set(crashed)
    for robust in ("half_message", "outbox"):
        assert sim.run(faulty(robust, crash=0.02, rollback=0.0), seed=found).verdicts["transactional"].ok


def test_publish_first_with_rollbacks_publishes_phantoms_without_any_crash():
    """Publishing before the local transaction: every rollback leaves a phantom message."""
    r = sim.run(faulty("publish_then_commit", crash=0.0, network={}, faults=[]), seed=0)
    assert r.verdicts["transactional"].counts["phantom"] == r.verdicts["transactional"].counts["rolled_back"] > 20
    assert r.verdicts["transactional"].counts["lost"] == 0


@pytest.mark.parametrize(("point", "resolved"), [("after_commit", "committed_by_check"),
                                                  ("before_commit", "rolled_back_by_check")])
def test_check_back_resolves_a_producer_crash_either_way(point, resolved):
    """A producer that always crashes at the same point: every half message is resolved by a check-back, a
    committed transaction's as commit, one that died with the process (before its commit, or still running
    when another transaction's crash took the process down) as rollback."""
    r = sim.run(faulty("half_message", crash=1.0, rollback=0.0, network={}, faults=[],
                         producer={"crash_point": point, "restart_after": "100ms"}), seed=0)
    ev = r.tables["txmsg_events"]["event"].value_counts()
    c = r.verdicts["transactional"].counts
    assert r.verdicts["transactional"].ok and r.verdicts["transactional"].settled
    by_check = ev.get("committed_by_check", 0) + ev.get("rolled_back_by_check", 0)
    assert by_check == ev["half_stored"] and ev[resolved] > 10  # no End ever arrived: all check-backs
    assert ev.get("committed_by_check", 0) == c["committed"] == c["delivered"]
    assert c["committed"] == (0 if point == "before_commit" else ev["commit"])


def test_check_max_discards_and_loses_a_commit_when_the_producer_stays_down():
    """RocketMQ's limit: a producer that crashes right after committing and stays down longer than check_max
    check-backs cannot answer, the store discards the half message and the committed transaction loses its
    message; with unlimited checks the same run loses nothing."""
    def run(check_max):
        return sim.run(faulty("half_message", crash=1.0, rollback=0.0, network={}, faults=[],
                                producer={"crash_point": "after_commit", "restart_after": "3s"},
                                check_max=check_max), seed=0)

    limited = run(3)
    c = limited.verdicts["transactional"].counts
    assert c["lost"] == c["committed"] > 2
    discarded = int((limited.tables["txmsg_events"]["event"] == "discarded").sum())
    assert discarded >= c["committed"]  # and died, uncommitted ones
    unlimited = run("unlimited")
    verdict = unlimited.verdicts["transactional"]
    assert verdict.ok and verdict.counts["delivered"] == verdict.counts["committed"] > 2


def test_exercise_check_backs_must_outlast_the_producer_outage():
    """The notebook exercise: check-backs that all fall while the producer is down lose the committed message;
    a check once it is back (3 s after its crash) delivers it."""
    from sim.exercises import check

    assert check("txmsg.check_back", {"check_after": 3000, "check_interval": 1000, "check_max": 1})
    assert not check("txmsg.check_back", {"check_after": 500, "check_interval": 500, "check_max": 4})


def test_same_seed_same_result_and_the_result_round_trips(tmp_path):
    """The same seed gives identical tables and verdicts; a saved result loads with both verdicts."""
    s = faulty("outbox")
    a, b = sim.run(s, seed=3), sim.run(s, seed=3)
    for name, table in a.tables.items():
        pdt.assert_frame_equal(table, b.tables[name])
    loaded = sim.Result.load(a.save(tmp_path / "run"))
    for name in ("transactional", "delivery"):
        assert loaded.verdicts[name].counts == a.verdicts[name].counts
        assert loaded.verdicts[name].ok == a.verdicts[name].ok
