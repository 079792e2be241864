"""Sagas: the scenario format, the checker, idempotent services, the robust saga under faults, naive variants."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from scipy import stats

import sim
import sim.messaging.saga as saga_module
from sim.checkers.saga import check_sagas
from sim.errors import ScenarioError
from sim.messaging.saga import StepCommand
from sim.runner import build_world
from sim.scenario import Scenario

STEPS = [("create_order", "orders", 0.0), ("reserve_stock", "stock", 0.1), ("charge_payment", "payment", 0.1),
         ("schedule_shipping", "shipping", 0.05)]


def docstring_toml() -> str:
    return textwrap.dedent(saga_module.__doc__.split("::\n", 1)[1])


def faulty(seed_faults: bool = True, network: dict | None = None, **protocol) -> Scenario:
    """Four services, random crashes of three of them and of the orchestrator, isolations, loss, duplication."""
    faults = {"random": {"crash_mtbf": "3s", "crash_duration": {"dist": "uniform", "low": 100, "high": 800},
                         "crash_nodes": ["stock", "payment", "shipping", "orch"], "end": "6s",
                         "partition_mtbf": "2s", "partition_duration": 300, "partition": "isolate"}}
    proto = {"name": "saga", "orchestrator": "orch", "step_timeout": 50, "max_attempts": 3,
             "crash_probability": 0.01, "restart_after": 300, "arrivals": {"rate": 40, "stop": "5s"},
             "steps": [{"name": n, "service": s, "failure_probability": p,
                        "service_time": {"dist": "exponential", "mean": 3}} for n, s, p in STEPS]}
    proto.update(protocol)
    return Scenario.from_dict({
        "cluster": {"nodes": ["orch", "orders", "stock", "payment", "shipping"]},
        "workload": {"clients": 0},
        "network": network if network is not None else {"loss": 0.03, "duplicate": 0.03,
                                                        "latency": {"dist": "exponential", "mean": 2}},
        "faults": faults if seed_faults else {},
        "protocol": proto,
        "run": {"duration": "20s"},
    })


def test_documented_toml_example_runs():
    """The scenario in sim.messaging.saga's docstring parses, round-trips and finishes every saga consistently."""
    s = Scenario.from_toml_string(docstring_toml())
    assert Scenario.from_dict(s.to_dict()) == s
    r = sim.run(s, seed=1)
    c = r.verdicts["saga"].counts
    assert c["sagas"] == 300 and r.verdicts["saga"].ok
    assert c["completed"] + c["compensated"] == 300 and c["completed"] > 100 and c["compensated"] > 30
    assert r.summary["saga.timeouts"] > 0  # the payment service was down from 2 s to 3 s


def base(**protocol):
    data = {"cluster": {"nodes": ["orch", "a", "b"]}, "workload": {"clients": 0},
            "protocol": {"name": "saga", "orchestrator": "orch",
                         "steps": [{"name": "one", "service": "a"}, {"name": "two", "service": "b"}]}}
    data["protocol"].update(protocol)
    return data


@pytest.mark.parametrize(("patch", "path", "message"), [
    (lambda d: d["workload"].update(clients=1), "workload.clients", "must be 0"),
    (lambda d: d["cluster"]["nodes"].append("idle"), "cluster.nodes[3]", "no saga role"),
    (lambda d: d["protocol"].update(steps=[]), "protocol.steps", "at least one step"),
    (lambda d: d["protocol"]["steps"].append({"name": "one", "service": "b"}), "protocol.steps[2].name",
     "duplicate step name"),
    (lambda d: d["protocol"]["steps"][1].update(service="orch"), "protocol.steps[1].service",
     "must not be the orchestrator"),
    (lambda d: d["protocol"]["steps"][1].update(service="ghost"), "protocol.steps[1].service", "unknown node"),
    (lambda d: d["protocol"]["steps"][0].update(failure_probability=1.5), "protocol.steps[0].failure_probability",
     "must be in [0, 1]"),
    (lambda d: d["protocol"].update(max_attempts=0), "protocol.max_attempts", "must be >= 1"),
    (lambda d: d["protocol"].update(step_timeout="-1ms"), "protocol.step_timeout", "must not be negative"),
    (lambda d: d["protocol"].update(arrivals={"rate": 5, "start": "2s", "stop": "1s"}), "protocol.arrivals.stop",
     "must be after start"),
    (lambda d: d["protocol"].update(compensate=True), "protocol.compensate", "unknown key"),
])
def test_invalid_saga_scenarios_name_the_field(patch, path, message):
    """Bad saga configs raise ScenarioError naming the field path."""
    data = base()
    patch(data)
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    assert err.value.path == path, str(err.value)
    assert message in err.value.reason, str(err.value)


def test_checker_outcomes_from_claims_and_ledgers():
    """The checker compares each claimed status with the services' net effects, step by step."""
    sagas = pd.DataFrame({"saga_id": ["ok", "undone", "leak", "twice", "orphan", "clean"],
                          "status": ["completed", "compensated", "compensated", "completed", "forgotten", "running"]})
    effects = pd.DataFrame([("ok", 0, 1, 0), ("ok", 1, 1, 0), ("undone", 0, 1, 1), ("leak", 0, 1, 1),
                            ("leak", 1, 1, 0), ("twice", 0, 1, 0), ("twice", 1, 2, 0), ("orphan", 0, 1, 0)],
                           columns=["saga_id", "step", "applies", "undos"])
    report = check_sagas(sagas, effects, ["pay", "ship"])
    assert report.sagas.set_index("saga_id")["outcome"].to_dict() == {
        "ok": "completed", "undone": "compensated", "leak": "inconsistent", "twice": "inconsistent",
        "orphan": "stuck", "clean": "stuck"}
    c = report.counts
    assert (c["completed"], c["compensated"], c["inconsistent"], c["stuck"], c["stuck_dirty"], c["forgotten"]) == \
        (1, 1, 2, 2, 1, 1)
    details = report.violations.set_index("saga_id")["detail"]
    assert "ship still applied" in details["leak"] and "ship applied 2 times" in details["twice"]
    assert not report.ok and not report.consistent


def service_world(idempotent: bool):
    s = Scenario.from_dict(base(idempotent_services=idempotent, arrivals={"count": 0}))
    world = build_world(s)
    for node in world.nodes.values():
        node.start()
    return world.nodes["a"]


@pytest.mark.parametrize("idempotent", [True, False])
def test_service_handlers_idempotency_and_late_actions(idempotent):
    """An idempotent service applies an action once, turns a compensation of an unapplied step into a
    tombstone and refuses the late action; a naive one applies and undoes every command it gets."""
    svc = service_world(idempotent)
    svc._do(("s1", 0))
    svc._do(("s1", 0))  # a retried or duplicated command
    svc._undo(("s2", 0))  # compensation overtakes its action
    late = svc._do(("s2", 0))
    if idempotent:
        assert svc.ledger == {("s1", 0): [1, 0]}
        assert svc.records[("s2", 0)] == "cancelled" and late is False
    else:
        assert svc.ledger == {("s1", 0): [2, 0], ("s2", 0): [1, 1]}
        assert late is True


def test_replies_are_sent_after_the_service_time():
    """A command is executed after its step's service time and answered to the sender."""
    svc = service_world(True)
    sent = []
    svc.send = lambda dst, msg: sent.append((svc.now, dst, msg))
    svc.handle_StepCommand(StepCommand("s1", 0, False, 1), "orch")
    svc.env.run(until=5)
    assert [(t, dst, m.ok, m.compensate) for t, dst, m in sent] == [(1.0, "orch", True, False)]


@pytest.mark.slow
def test_robust_saga_keeps_its_invariant_under_crashes_and_network_faults():
    """Durable log, compensation retries and idempotent services: over 60 seeds with service and orchestrator
    crashes, isolations, loss and duplication, every saga finishes and agrees with every service's ledger."""
    crashes = resumes = compensated = 0
    for seed in range(60):
        r = sim.run(faulty(), seed=seed)
        assert r.verdicts["saga"].ok, (seed, r.verdicts["saga"].explanation)
        c = r.verdicts["saga"].counts
        assert c["completed"] + c["compensated"] == c["sagas"] > 50
        crashes += r.summary["saga.orchestrator_crashes"]
        resumes += int((r.tables["saga_events"]["event"] == "resume").sum())
        compensated += c["compensated"]
    assert crashes > 100 and resumes > 100 and compensated > 600


@pytest.mark.parametrize(("variant", "expect"), [
    ({"durable_log": False}, "stuck_dirty"),
    ({"retry_compensation": False}, "inconsistent"),
    ({"idempotent_services": False}, "inconsistent"),
])
def test_naive_variants_break_the_invariant_in_a_seed_search(variant, expect):
    """Searching seeds finds a run where the naive variant leaves effects behind; the robust saga, on the
    same seed and faults, leaves none."""
    found = None
    for seed in range(20):
        r = sim.run(faulty(**variant), seed=seed)
        if r.verdicts["saga"].counts[expect] > 0:
            found = seed
            break
    assert found is not None, f"no seed in 0..19 made {variant} violate"
    assert not r.verdicts["saga"].consistent
    assert sim.run(faulty(), seed=found).verdicts["saga"].ok


def test_non_idempotent_retries_apply_a_step_twice():
    """A timed-out command is retried; a non-idempotent service then applies its step twice."""
    r = sim.run(faulty(idempotent_services=False), seed=0)
    assert r.verdicts["saga"].violations["detail"].str.contains("applied 2 times").any()


def test_volatile_log_forgets_sagas_on_an_orchestrator_crash():
    """With a volatile log, sagas in flight at an orchestrator crash are forgotten with their effects in place."""
    r = sim.run(faulty(durable_log=False, seed_faults=False, network={}), seed=3)
    forgotten = r.tables["sagas"][r.tables["sagas"]["status"] == "forgotten"]
    assert r.summary["saga.orchestrator_crashes"] > 0 and len(forgotten) > 0
    assert forgotten["dirty"].sum() == r.verdicts["saga"].counts["stuck_dirty"] > 0


@pytest.mark.slow
def test_completed_fraction_matches_the_product_of_step_success_probabilities():
    """Without faults a saga completes with probability prod(1 - p_i); the 95% CI over seeds contains it,
    and every compensated saga undid its applied steps in reverse order."""
    predicted = float(np.prod([1 - p for _, _, p in STEPS]))
    fractions = []
    for seed in range(10):
        r = sim.run(faulty(seed_faults=False, network={}, crash_probability=0.0,
                            arrivals={"rate": 100, "count": 200}), seed=seed)
        assert r.verdicts["saga"].ok
        fractions.append(r.verdicts["saga"].counts["completed"] / r.verdicts["saga"].counts["sagas"])
        ev = r.tables["saga_events"][r.tables["saga_events"]["event"] == "compensate"]
        for _, steps in ev.groupby("saga_id", sort=False)["step"]:
            assert steps.tolist() == sorted(steps.tolist(), reverse=True)
    values = np.asarray(fractions)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    assert abs(values.mean() - predicted) <= half, (values.mean(), predicted, half)


def test_same_seed_same_result_and_the_result_round_trips(tmp_path):
    """The same scenario and seed give identical tables and verdicts; a saved result loads with its verdict."""
    s = faulty()
    a, b = sim.run(s, seed=5), sim.run(s, seed=5)
    assert set(a.tables) == {"sagas", "saga_effects", "saga_events"}
    for name, table in a.tables.items():
        pdt.assert_frame_equal(table, b.tables[name])
    assert a.verdicts["saga"].counts == b.verdicts["saga"].counts
    loaded = sim.Result.load(a.save(tmp_path / "run"))
    assert loaded.verdicts["saga"].counts == a.verdicts["saga"].counts
    assert loaded.verdicts["saga"].ok == a.verdicts["saga"].ok
    assert loaded.verdicts["saga"].explanation == a.verdicts["saga"].explanation
    assert len(loaded.tables["sagas"]) == len(a.tables["sagas"])
