"""Chapter 4's exercises: sagas, notifications and transactional messages.

``saga.lost_compensation`` runs the student's fault schedule against the naive and the robust
orchestrator; ``txmsg.check_back`` runs the student's check-back settings. The scenarios,
:func:`one_order` and :func:`crash_after_commit`, are public so that the notebook can show them.
"""

from __future__ import annotations

from typing import Any

from ..errors import ScenarioError
from ..scenario import Scenario
from . import Feedback, exercise
from ._judge import invalid, number, schedule, settings

__all__ = ["one_order", "crash_after_commit", "NAIVE", "CHECK_MAX", "DEADLINE"]


@exercise("notify.never_notified", chapter=4, question=(
    "The network loses each message independently with probability 0.2 and the provider makes 4 notification "
    "attempts: what fraction of the results never reaches the merchant by notification?"))
def never_notified(answer: Any) -> Feedback:
    from ..messaging.notification import notification_oracle

    return number(answer, notification_oracle(0.2, 4)["p_never_notified"], slips={
        "p * k is not the chance that every attempt is lost: the losses are independent.": 0.2 * 4,
        "that is the chance that at least one attempt is lost; the result stays unknown only when all of them "
        "are.": 1 - 0.8**4,
        "that is the chance that the first three are lost: count all 4 attempts.": 0.2**3})


# -- a saga whose compensation gets lost ---------------------------------------------------------
#: the naive orchestrator of the chapter: volatile log, each compensation sent once
NAIVE = {"durable_log": False, "retry_compensation": False}
_STEPS = (("create_order", "orders", 0.0), ("reserve_stock", "stock", 0.0), ("charge_payment", "payment", 0.0),
          ("schedule_shipping", "shipping", 1.0))


def one_order(faults: Any = (), *, trace: bool = False, **variant: Any) -> Scenario:
    """One order at t = 100 ms through the chapter's four services; shipping always refuses, so the saga
    always compensates. Links take 1 ms, every action or compensation 5 ms; the orchestrator waits 50 ms
    for a reply and tries a step 3 times. ``variant``: saga settings (:data:`NAIVE` for the naive one)."""
    return Scenario.from_dict({
        "name": "one-order",
        "cluster": {"nodes": ["orch", "orders", "stock", "payment", "shipping"]},
        "workload": {"clients": 0},
        "faults": {"schedule": list(faults)},
        "protocol": {"name": "saga", "orchestrator": "orch", "step_timeout": 50, "max_attempts": 3,
                     "arrivals": {"rate": 10, "process": "periodic", "count": 1},
                     "steps": [{"name": n, "service": s, "failure_probability": p, "service_time": 5}
                               for n, s, p in _STEPS],
                     **variant},
        "run": {"duration": 2000, "seed": 1, "trace": trace},
    })


@exercise("saga.lost_compensation", chapter=4, question=(
    "Find a fault schedule (a list of faults, as in a scenario's faults.schedule) under which the naive saga "
    "of one order (sim.exercises.ch4.one_order, with durable_log = false and retry_compensation = false) "
    "ends 'compensated' while a step is still applied, and the robust saga under the same faults ends "
    "consistent."))
def lost_compensation(answer: Any) -> Feedback:
    from ..runner import run

    faults = schedule(answer)
    if isinstance(faults, Feedback):
        return faults
    try:
        naive = run(one_order(faults, **NAIVE))
        robust = run(one_order(faults))
    except ScenarioError as exc:
        return invalid(exc, {"faults.schedule": "answer"})
    saga = naive.tables["sagas"].iloc[0]
    fixed = robust.tables["sagas"].iloc[0]
    if saga["outcome"] == "inconsistent":
        if fixed["outcome"] in ("completed", "compensated"):
            return Feedback(True, f"the naive saga ends inconsistent ({saga['detail']}): its compensation went "
                                  "unanswered and was given up; the robust orchestrator retried it until the service "
                                  f"answered and ended '{fixed['outcome']}'.")
        return Feedback(False, f"the naive saga ends inconsistent ({saga['detail']}), but so does the robust one "
                               f"('{fixed['outcome']}'): the faults must end early enough for a retried "
                               "compensation to get through before the run ends (2 s).")
    if saga["outcome"] == "stuck":
        return Feedback(False, f"the naive saga ends stuck ({saga['status']}): the orchestrator's crash made it "
                               "forget the saga. That is a failure too, but not this one: here the orchestrator "
                               "should finish and claim 'compensated' while a service still holds an effect.")
    events = naive.tables["saga_events"]
    effects = naive.tables["saga_effects"].set_index("step")
    given_up = events[events["event"] == "compensation_given_up"]["step"].tolist()
    if given_up:
        names = ", ".join(_STEPS[s][0] for s in given_up)
        return Feedback(False, f"the naive orchestrator gave up on undoing {names}, but nothing of it had been "
                               "applied (the service never executed the action): nothing was left behind. The "
                               "action must take effect first, and only its compensation go unanswered.")
    applied = [_STEPS[s][0] for s in effects.index if effects.loc[s, "applies"] > 0]
    return Feedback(False, f"every compensation was acknowledged, so every applied step ({', '.join(applied)}) "
                           "was undone. One compensation must go unanswered: its service unreachable when it "
                           "arrives (look at when each compensate command is sent).")


# -- check-back settings for a producer that dies after committing ------------------------------
#: the exercise's limits: check-backs per half message, and how long after the commit the message must arrive
CHECK_MAX = 4
DEADLINE = 4000.0


def crash_after_commit(check_after: Any = 6000.0, check_interval: Any = 1000.0, check_max: Any = 15) -> Scenario:
    """One transaction at t = 100 ms by a producer that dies right after committing it (before sending
    End) and restarts 3 s later; the half-message store scans every ``check_interval`` ms from t = 0
    and checks back each half message at least ``check_after`` old, at most ``check_max`` times."""
    return Scenario.from_dict({
        "name": "crash-after-commit",
        "cluster": {"nodes": ["broker", "rmq-tx", "app", "c1"]},
        "workload": {"clients": 0},
        "protocol": {"name": "transactional_messages", "mode": "half_message", "coordinator": "rmq-tx",
                     "check_after": check_after, "check_interval": check_interval, "check_max": check_max,
                     "producers": [{"node": "app", "arrivals": {"rate": 10, "process": "periodic", "count": 1},
                                    "crash_probability": 1.0, "crash_point": "after_commit", "restart_after": 3000}],
                     "consumers": [{"node": "c1", "queue": "events"}]},
        "run": {"duration": 20_000, "seed": 1},
    })


@exercise("txmsg.check_back", chapter=4, question=(
    f"A producer commits one transaction (begun at t = 100 ms) and dies before sending End; it is back 3 s later "
    f"(sim.exercises.ch4.crash_after_commit). Choose the half-message store's check_after, check_interval and "
    f"check_max (at most {CHECK_MAX} check-backs) so that the message reaches the consumer within "
    f"{DEADLINE / 1000:g} s of the commit. Answer a dict {{'check_after': ms, 'check_interval': ms, "
    f"'check_max': n}}."))
def check_back(answer: Any) -> Feedback:
    from ..runner import run

    got = settings(answer, ("check_after", "check_interval", "check_max"),
                   required=("check_after", "check_interval", "check_max"),
                   what="a dict with 'check_after', 'check_interval' and 'check_max'")
    if isinstance(got, Feedback):
        return got
    if got["check_max"] == "unlimited" or (isinstance(got["check_max"], int) and got["check_max"] > CHECK_MAX):
        return Feedback(False, f"check_max = {got['check_max']!r}: the store may check back at most {CHECK_MAX} "
                               "times (each check is a request to a producer that may be down).")
    try:
        result = run(crash_after_commit(**got))
    except ScenarioError as exc:
        return invalid(exc, {"protocol.": ""})
    ev = result.tables["txmsg_events"]
    times = {e: ev[ev["event"] == e]["time"].tolist() for e in ("half_stored", "commit", "check_back")}
    committed = times["commit"][0]
    back = float(result.node_events.query("node == 'app' and event == 'recover'")["time"].iloc[0])
    received = result.tables["message_events"].query("event == 'receive'")["time"]
    checks = ", ".join(f"{t:.0f}" for t in times["check_back"]) or "none"
    if received.empty:
        return Feedback(False, f"the message never arrived: check-backs at {checks} ms, but the producer was down "
                               f"until {back:.0f} ms, so none was answered, and the store discarded the half "
                               "message: a committed transaction lost its message. A check must come after the "
                               "producer is back.")
    late = float(received.iloc[0]) - committed
    if late > DEADLINE:
        return Feedback(False, f"the message arrived {late:.0f} ms after the commit (check-backs at {checks} ms; the "
                               f"producer was back at {back:.0f} ms): more than {DEADLINE:.0f} ms. Check sooner after "
                               "the producer is back.")
    return Feedback(True, f"check-backs at {checks} ms: the first after the producer came back ({back:.0f} ms) found "
                          f"the commit, and the message arrived {late:.0f} ms after it.")
