"""Chapter 6's exercises: predictions about RabbitMQ, judged by capsim's broker model.

The model (:class:`~sim.messaging.broker.Broker`) is what the chapter checks against a real
RabbitMQ 3.10 broker; both scripts below were run on one as well and gave the model's answers.
The judges drive the model when they are called: no answer is stored.
"""

from __future__ import annotations

from typing import Any

from . import Feedback, exercise
from ._judge import plain, sequence

_IDS = tuple(f"m{i}" for i in range(6))


def _broker(queues: list[dict[str, Any]], exchanges: list[dict[str, Any]] | None = None,
            bindings: list[dict[str, Any]] | None = None) -> Any:
    from ..config import build
    from ..messaging.broker import Broker
    from ..messaging.topology import Topology

    topology = build(Topology, {"queues": queues, "exchanges": exchanges or [], "bindings": bindings or []},
                     "topology")
    return Broker(topology)


def _requeue_script(queue: dict[str, Any]) -> list[str]:
    """The order (``*`` = redelivered) a new consumer gets after the exercise's script on ``queue``."""
    from ..messaging.broker import Delivery, Message

    b = _broker([{"name": "q", **queue}])
    b.open_channel("pub")
    for m in _IDS:
        b.publish(0, "pub", Message(m), exchange="", routing_key="q")
    b.open_channel("c")
    tags = {e.message.msg_id: e.delivery_tag for e in b.consume(1, "c", "q", consumer_tag="t", prefetch=4)
            if isinstance(e, Delivery)}
    b.cancel(2, "c", "t")
    b.nack(3, "c", tags["m3"], requeue=True)
    b.nack(4, "c", tags["m1"], requeue=True)
    b.close_channel(5, "c")
    b.open_channel("c2")
    return [f"{e.message.msg_id}{'*' if e.redelivered else ''}" for e in b.consume(6, "c2", "q", consumer_tag="t2")
            if isinstance(e, Delivery)]


def _bare(order: list[str]) -> list[str]:
    return [m.rstrip("*") for m in order]


@exercise("rabbit.requeue_order", chapter=6, question=(
    "A quorum queue without a delivery limit holds m0 .. m5. A consumer with prefetch 4 receives m0, m1, m2, m3, "
    "cancels its subscription, nacks m3 and then m1 with requeue, and then its connection dies with m0 and m2 "
    "still unacknowledged. In what order does the next consumer receive the six messages? Answer e.g. "
    "'m5 m4 m3 m2 m1 m0' (a '*' after an id, e.g. 'm3*', marks a redelivery; optional)."))
def requeue_order(answer: Any) -> Feedback:
    got = sequence(answer)
    if isinstance(got, Feedback):
        return got
    want = _requeue_script({"type": "quorum"})
    if sorted(_bare(got)) != sorted(_bare(want)):
        return Feedback(False, f"the queue holds each of {', '.join(_IDS)} exactly once again; got {' '.join(got)}.")
    marked = any(m.endswith("*") for m in got)
    if _bare(got) == _bare(want):
        if marked and got != want:
            return Feedback(False, "the order is right, but not the '*' marks: which messages had been delivered "
                                   "before?")
        return Feedback(True, "messages of the dead connection go ahead of those never delivered, in the order "
                              "they came back; nacked ones go to the back, in the order they were nacked.")
    alternatives = {
        "that is where a classic queue puts them (every message at its original position); a quorum queue does "
        "not keep positions.": _requeue_script({"type": "classic"}),
        "that is the order on a quorum queue *with* a delivery limit, where every return goes ahead of the "
        "messages never delivered; without one, a nack sends the message to the back.":
            _requeue_script({"type": "quorum", "delivery_limit": 5}),
    }
    for why, order in alternatives.items():
        if _bare(got) == _bare(order):
            return Feedback(False, why)
    back = [m for m in _bare(got) if m in ("m3", "m1")]
    if _bare(got)[-2:] == ["m1", "m3"] or back == ["m1", "m3"]:
        return Feedback(False, "the nacked messages go back in the order they were nacked: m3 first.")
    if _bare(got)[:2] != ["m0", "m2"]:
        return Feedback(False, "m0 and m2 were not nacked: they came back because their consumer's connection "
                               "died. Where does a quorum queue put those: at the back, like a nack, or somewhere "
                               "else? The chapter's requeue probes show it.")
    return Feedback(False, "apply the three rules of section 3 one return at a time.")


# -- x-death through a TTL wait queue -----------------------------------------------------------
_RETRY_TOPOLOGY: dict[str, Any] = {
    "exchanges": [{"name": "work.ex", "type": "direct"}, {"name": "wait.ex", "type": "fanout"}],
    "queues": [{"name": "work", "dead_letter_exchange": "wait.ex"},
               {"name": "wait", "message_ttl": 100, "dead_letter_exchange": "work.ex"}],
    "bindings": [{"exchange": "work.ex", "queue": "work", "routing_key": "job"},
                 {"exchange": "wait.ex", "queue": "wait"}],
}


def _x_death(delivery: int) -> list[tuple[str, str, int]]:
    """The x-death entries (most recent first) of a message on its ``delivery``-th delivery from ``work``
    when the consumer rejects (without requeue) every delivery before it."""
    from ..messaging.broker import Delivery, Message

    b = _broker(**_RETRY_TOPOLOGY)
    b.open_channel("pub")
    b.open_channel("c")
    b.publish(0, "pub", Message("m0"), exchange="work.ex", routing_key="job")
    effects = b.consume(1, "c", "work", consumer_tag="t", prefetch=1)
    now = 1.0
    for n in range(1, delivery + 1):
        (d,) = [e for e in effects if isinstance(e, Delivery)]
        if n == delivery:
            return [(x.queue, x.reason, x.count) for x in d.message.x_death]
        b.reject(now, "c", d.delivery_tag, requeue=False)
        now = b.next_deadline()
        effects = b.tick(now)
    raise ValueError(f"delivery must be >= 1, got {delivery}")


def _entries(answer: Any) -> list[tuple[str, str, int]] | Feedback:
    """An x-death answer as (queue, reason, count) triples: a list of triples or of dicts with those keys,
    or the text form 'wait:expired:1|work:rejected:1'."""
    answer = plain(answer)
    shape = Feedback(False, "the answer is a list of (queue, reason, count), most recent first, e.g. "
                            f"[('q', 'rejected', 1)] or 'q:rejected:1|...'; got {answer!r}.")
    if isinstance(answer, str):
        answer = [part.split(":") for part in answer.split("|") if part.strip()]
    if not isinstance(answer, list):
        return shape
    out = []
    for entry in answer:
        if isinstance(entry, dict):
            entry = [entry.get("queue"), entry.get("reason"), entry.get("count")]
        if not isinstance(entry, list) or len(entry) != 3:
            return shape
        queue, reason, count = entry
        if isinstance(count, str) and count.strip().isdigit():
            count = int(count)
        if not (isinstance(queue, str) and isinstance(reason, str) and isinstance(count, int)) or \
                isinstance(count, bool):
            return shape
        out.append((queue.strip(), reason.strip(), count))
    return out


@exercise("rabbit.x_death", chapter=6, question=(
    "Section 2's topology: the work queue's dead-letter exchange leads to the wait queue, whose 100 ms TTL "
    "dead-letters messages back to the work queue. A consumer rejects a message (without requeue) every time "
    "it gets it. What does the message's x-death header hold when it is delivered for the 4th time? Answer a "
    "list of (queue, reason, count), most recent first."))
def x_death(answer: Any) -> Feedback:
    got = _entries(answer)
    if isinstance(got, Feedback):
        return got
    want = _x_death(4)
    if got == want:
        return Feedback(True, "one entry per (queue, reason), its count incremented at every dead-lettering, and "
                              "the entry updated last moved to the front.")
    if sorted(got) == sorted(want):
        return Feedback(False, "the right entries in the wrong order: x-death lists the most recent "
                               "dead-lettering first.")
    pairs = sorted({(q, r) for q, r, _ in got})
    if pairs == sorted({(q, r) for q, r, _ in want}) and len(got) > len(pairs):
        return Feedback(False, "RabbitMQ keeps one entry per (queue, reason) and counts in it; it does not add an "
                               "entry per dead-lettering.")
    if pairs == sorted({(q, r) for q, r, _ in want}):
        counts = {c for _, _, c in got}
        if counts == {4}:
            return Feedback(False, "count says how often the message was dead-lettered from that queue for that "
                                   "reason: the 4th attempt has not failed yet.")
        return Feedback(False, "the right entries, but not the counts: how many times has the message left each "
                               "queue before its 4th delivery?")
    queues = {q for q, _, _ in got}
    if queues == {"work"}:
        return Feedback(False, "the wait queue dead-letters the message too when its TTL expires, and that gets "
                               "an entry of its own.")
    if any(q == "wait" and r != "expired" for q, r, _ in got):
        return Feedback(False, "a message leaves a TTL queue with the reason 'expired'.")
    if any(q == "work" and r != "rejected" for q, r, _ in got):
        return Feedback(False, "a message nacked or rejected without requeue leaves with the reason 'rejected'.")
    return Feedback(False, "follow one message: rejected from work, expired from wait, and again.")
