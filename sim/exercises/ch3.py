"""Chapter 3's exercises: retries and dead letters, backoff through an outage, idempotent consumers.

``retry.outage_policy`` and ``idempotency.cheapest_store`` run the student's choice in the
simulator; :func:`outage_scenario` and :func:`crashing_consumer` are the scenarios they run, public
so that the notebook (and a curious student) can run them too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ScenarioError
from ..scenario import Scenario
from . import Feedback, exercise
from ._judge import invalid, number, settings

__all__ = ["outage_scenario", "crashing_consumer", "OUTAGE", "P99_LIMIT", "DEAD_LIMIT", "STORES"]


@exercise("retry.dead_letter_fraction", chapter=3, question=(
    "Each processing attempt fails independently with probability 0.3, and a message gets at most 3 attempts "
    "before it is dead-lettered: what fraction of the messages ends in the dead-letter queue?"))
def dead_letter_fraction(answer: Any) -> Feedback:
    from ..messaging.retry import dead_letter_fraction as fraction

    return number(answer, fraction(0.3, 3), slips={
        "p * k is not the chance that every attempt fails: the attempts are independent, so multiply the "
        "probabilities.": 0.3 * 3,
        "that is the chance that at least one attempt fails; the message is dead-lettered only when all of them "
        "do.": 1 - 0.7**3,
        "that is the chance that the first k - 1 attempts fail: count all 3.": 0.3**2})


# -- backoff and a delivery limit through a downstream outage ------------------------------------
#: the downstream service is down during [start, end) ms
OUTAGE = (1000.0, 4000.0)
#: the exercise's targets: at most this fraction dead-lettered, p99 end-to-end latency below this (ms)
DEAD_LIMIT = 0.01
P99_LIMIT = 5000.0
_SEEDS = (1, 2)
_RATE = 100.0  # published per second, from 0 to 5 s
_CALL_TIMEOUT = 100.0
_CAPACITY = 4 / 10.0  # downstream: 4 servers x 10 ms = 0.4 calls per ms
_RETRY_KEYS = ("backoff", "delay", "multiplier", "max_delay", "jitter")


def outage_scenario(delivery_limit: int, retry: dict[str, Any] | None = None, seed: int = 1) -> Scenario:
    """The exercise's run: 100 messages/s for 5 s into a quorum queue with ``delivery_limit``; two
    consumers (50 calls in flight each) call a downstream service (4 servers x 10 ms: 400 calls/s)
    that is down during :data:`OUTAGE`, and give up on a call after 100 ms. A failed attempt waits the
    ``retry`` backoff (keys of :class:`~sim.messaging.retry.RetryPolicy`: ``backoff``, ``delay``,
    ``multiplier``, ``max_delay``, ``jitter``) holding the message, then nacks it with requeue; the
    queue dead-letters it to ``dlq`` once it has been returned ``delivery_limit`` times."""
    policy = {"mode": "delivery_limit", **(retry or {})}
    consumers = [{"node": c, "queue": "work", "prefetch": 400, "concurrency": 50, "processing_time": 0,
                  "downstream": "downstream", "call_timeout": _CALL_TIMEOUT, "retry": policy} for c in ("c1", "c2")]
    return Scenario.from_dict({
        "name": "retry-through-an-outage",
        "cluster": {"nodes": ["broker", "pub", "downstream", "c1", "c2"]},
        "workload": {"clients": 0},
        "faults": {"schedule": [{"kind": "crash", "node": "downstream", "start": OUTAGE[0], "end": OUTAGE[1]}]},
        "protocol": {
            "name": "messaging",
            "topology": {"exchanges": [{"name": "dlx", "type": "fanout"}],
                         "queues": [{"name": "work", "type": "quorum", "delivery_limit": delivery_limit,
                                     "dead_letter_exchange": "dlx"}, {"name": "dlq"}],
                         "bindings": [{"exchange": "dlx", "queue": "dlq"}]},
            "publishers": [{"node": "pub", "routing_keys": ["work"], "rate": _RATE, "stop": 5000}],
            "downstreams": [{"node": "downstream", "servers": 4, "service_time": 10}],
            "consumers": consumers,
        },
        "run": {"duration": 12_000, "seed": seed},
    })


def _mean_delay(retry: dict[str, Any], attempt: int) -> float:
    """The mean wait after failed attempt ``attempt`` under ``retry`` (jitter averaged out)."""
    from ..config import build
    from ..messaging.retry import RetryPolicy

    policy = build(RetryPolicy, {"mode": "delivery_limit", **retry}, "retry")
    d = policy.base_delay(attempt)
    return {"full": d / 2, "equal": 3 * d / 4}.get(policy.jitter, d)


@exercise("retry.outage_policy", chapter=3, question=(
    "The downstream service is down from 1 s to 4 s while 100 messages/s arrive (sim.exercises.ch3."
    "outage_scenario). Choose the quorum queue's delivery_limit and the consumers' backoff so that at most 1% "
    "of the messages are dead-lettered and the p99 end-to-end latency stays under 5000 ms. Answer a dict: "
    "{'delivery_limit': ..., 'backoff': 'fixed' or 'exponential', 'delay': ms, 'multiplier': ..., "
    "'max_delay': ms, 'jitter': 'none', 'full' or 'equal'}."))
def outage_policy(answer: Any) -> Feedback:
    if isinstance(answer, dict) and ("mode" in answer or "max_attempts" in answer):
        return Feedback(False, "the queue counts the attempts here (mode 'delivery_limit'): give 'delivery_limit', "
                               "not 'mode' or 'max_attempts'.")
    got = settings(answer, ("delivery_limit", *_RETRY_KEYS), required=("delivery_limit",),
                   what="a dict with 'delivery_limit' and the backoff settings")
    if isinstance(got, Feedback):
        return got
    limit = got.pop("delivery_limit")
    try:
        runs = [_run(outage_scenario(limit, got, seed)) for seed in _SEEDS]
    except ScenarioError as exc:
        return invalid(exc, {"protocol.topology.queues[0].delivery_limit": "delivery_limit",
                             "protocol.consumers[0].retry.": ""})
    published = sum(r["published"] for r in runs)
    dead = sum(r["dead"] for r in runs) / published
    remaining = sum(r["remaining"] for r in runs)
    latency = np.concatenate([r["latency"] for r in runs])
    p99 = float(np.percentile(latency, 99)) if len(latency) else float("nan")
    offered = max(r["offered_after"] for r in runs)
    seen = f"{dead:.1%} dead-lettered, p99 {p99:.0f} ms over {len(_SEEDS)} runs"
    storm = (f"after the downstream came back, retries offered it {offered:.0f} calls/s against a capacity of "
             f"{1000 * _CAPACITY:.0f}/s, so calls queued past their {_CALL_TIMEOUT:.0f} ms timeout and failed "
             "again (a retry storm)")
    if remaining:
        return Feedback(False, f"{remaining} messages were still waiting when the runs ended: {storm}, and the "
                               "backlog never drained. Wait longer between attempts so that fewer retries compete.")
    if dead > DEAD_LIMIT:
        during = sum(r["dead_during"] for r in runs) / max(sum(r["dead"] for r in runs), 1)
        if during >= 0.5:
            attempts = limit + 1
            span = attempts * _CALL_TIMEOUT + sum(_mean_delay(got, a) for a in range(1, attempts))
            return Feedback(False, f"{seen}, most of them during the outage: {attempts} attempts (delivery_limit + 1)"
                                   f" with your delays span about {span:.0f} ms, less than the "
                                   f"{OUTAGE[1] - OUTAGE[0]:.0f} ms outage. Allow more attempts or wait longer "
                                   "between them.")
        return Feedback(False, f"{seen}, most of them after the downstream was back: {storm}. Wait longer between "
                               "attempts.")
    if not p99 < P99_LIMIT:
        return Feedback(False, f"{seen}: nothing is lost, but messages that failed during the outage wait too long "
                               "after it: a failed attempt late in the outage waits up to max_delay before the next "
                               "one. Cap the delay lower.")
    return Feedback(True, f"{seen}; the downstream got at most {offered:.0f} calls/s after it came back.")


def _run(scenario: Scenario) -> dict[str, Any]:
    """The numbers the judge of ``retry.outage_policy`` looks at, from one run."""
    from ..runner import run

    result = run(scenario)
    report = result.verdicts["delivery"]
    ev = result.tables["message_events"]
    dead = ev[(ev["event"] == "enqueue") & (ev["queue"] == "dlq")]
    calls = ev[(ev["event"] == "call") & (ev["time"] >= OUTAGE[1]) & (ev["time"] < OUTAGE[1] + 1000)]
    return {"published": report["published"], "dead": report["dead_lettered"], "remaining": report["remaining"],
            "dead_during": int((dead["time"] < OUTAGE[1]).sum()), "offered_after": float(len(calls)),
            "latency": report.messages["latency"].dropna().to_numpy(dtype=float)}


# -- where an idempotent consumer keeps the ids it has seen --------------------------------------
#: the dedup stores, cheapest first (memory, the consumer's own disk, a database every consumer shares)
STORES = ("local", "local_durable", "shared")


def crashing_consumer(store: str | None, seed: int = 1) -> Scenario:
    """The exercise's run: 300 messages at 100/s to one consumer (prefetch 5) whose process dies after
    the side effect and before the ack in 5% of the deliveries and restarts 200 ms later; ``store`` is
    its dedup store (``None``: not idempotent)."""
    consumer: dict[str, Any] = {"node": "c1", "queue": "work", "prefetch": 5,
                                "processing_time": {"dist": "exponential", "mean": 2}, "crash_probability": 0.05,
                                "crash_point": "after_effect", "restart_after": 200,
                                "retry": {"mode": "requeue", "max_attempts": 5}}
    if store is not None:
        consumer["idempotency"] = {"store": store}
    return Scenario.from_dict({
        "name": "one-crashing-consumer",
        "cluster": {"nodes": ["broker", "pub", "c1"]},
        "workload": {"clients": 0},
        "protocol": {"name": "messaging", "topology": {"queues": [{"name": "work"}]},
                     "publishers": [{"node": "pub", "routing_keys": ["work"], "rate": 100, "count": 300}],
                     "consumers": [consumer]},
        "run": {"duration": "6s", "seed": seed},
    })


def _duplicate_effects(store: str | None) -> int:
    from ..runner import run

    return int(run(crashing_consumer(store)).verdicts["delivery"]["duplicate_side_effects"])


_WHY = {
    None: "without a dedup store every redelivery after a crash repeats its effect.",
    "local": "a store in memory dies with the crash that causes the redelivery, so the redelivered copy is "
             "not recognised.",
}


@exercise("idempotency.cheapest_store", chapter=3, question=(
    "One consumer (sim.exercises.ch3.crashing_consumer) dies after the side effect and before the ack in 5% of "
    "its deliveries. Which is the cheapest dedup store that still prevents every duplicate side effect: "
    "'local' (memory), 'local_durable' (its own disk) or 'shared' (a database all consumers share)?"))
def cheapest_store(answer: Any) -> Feedback:
    if answer not in STORES:
        return Feedback(False, f"answer one of {', '.join(map(repr, STORES))}; got {answer!r}.")
    duplicates = _duplicate_effects(answer)
    if duplicates:
        return Feedback(False, f"with {answer!r} the run still shows {duplicates} duplicate side effects: "
                               + _WHY.get(answer, "look at which consumer gets the redelivered copies."))
    cheaper = [s for s in STORES[: STORES.index(answer)] if _duplicate_effects(s) == 0]
    if cheaper:
        return Feedback(False, f"{answer!r} prevents every duplicate, but so does the cheaper {cheaper[0]!r}: "
                               "who receives the copy that a crash sends back, when there is only one consumer?")
    return Feedback(True, f"no duplicate side effect with {answer!r}, and every cheaper store lets some through: "
                          "with one consumer every redelivered copy comes back to the consumer that crashed, so "
                          "its own disk remembers the id; a second consumer would need the shared store.")
