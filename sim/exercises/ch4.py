"""Chapter 4's exercises: sagas, notifications and transactional messages."""

from __future__ import annotations

from typing import Any

from . import Feedback, exercise
from ._judge import number, word


@exercise("notify.never_notified", chapter=4, question=(
    "The network loses each message independently with probability 0.2 and the provider makes 4 notification "
    "attempts: what fraction of the results never reaches the merchant by notification?"))
def never_notified(answer: Any) -> Feedback:
    from ..messaging.notification import notification_oracle

    return number(answer, notification_oracle(0.2, 4)["p_never_notified"],
                  slips={"p * k is not the chance that every attempt is lost: the losses are independent.": 0.2 * 4})


def _phantom_mode() -> str:
    import sim

    phantoms = {}
    for mode in ("commit_then_publish", "publish_then_commit"):
        scenario = sim.Scenario.from_dict({
            "cluster": {"nodes": ["broker", "app", "c1"]},
            "workload": {"clients": 0},
            "protocol": {"name": "transactional_messages", "mode": mode,
                         "producers": [{"node": "app", "arrivals": {"rate": 50, "count": 100},
                                        "rollback_probability": 0.2}],
                         "consumers": [{"node": "c1", "queue": "events"}]},
            "run": {"duration": "5s", "seed": 1},
        })
        phantoms[mode] = sim.run(scenario).verdicts["transactional"].counts["phantom"]
    return max(phantoms, key=lambda mode: phantoms[mode])


@exercise("txmsg.phantom_mode", chapter=4, question=(
    "With local transactions that roll back 20% of the time and no crashes at all, which naive dual write "
    "delivers messages for transactions that never committed: 'commit_then_publish' or 'publish_then_commit'?"))
def phantom_mode(answer: Any) -> Feedback:
    return word(answer, _phantom_mode(), ("commit_then_publish", "publish_then_commit"),
                why="the message is out before the transaction decides, and a rollback cannot call it back.")
