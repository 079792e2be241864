"""Random valid messaging scenarios for differential testing of the broker model against RabbitMQ.

:func:`scenarios` is a hypothesis strategy; :func:`sample` builds the same kind of
scenario from a plain seed (reproducible, no hypothesis needed: the experiment's
samples). Both call one builder, :func:`build`, through a :class:`Chooser`.

What a scenario may contain (everything both the model and the adapter run):

* publishers (1-2, 5-25 messages each at 50-200/s) to a ``direct``, ``topic`` or
  ``fanout`` exchange or to the default exchange, with or without confirms,
  ``mandatory`` (some routing keys route nowhere), republish on a nack,
  persistent or transient, with a priority when a queue has ``max_priority``;
* 1-2 work queues, classic or quorum, each with consumers: prefetch 1-5,
  concurrency 1-2, failures, poison messages, crashes before or after the effect,
  auto-ack (without retries), and one retry mode per queue: ``none``, ``requeue``
  (immediate or fixed delay), ``delivery_limit`` (quorum), ``republish`` (direct or
  through a TTL wait queue: ``via_exchange``) and ``dlx_wait`` (a TTL wait queue);
  idempotent consumers (a shared dedup store, or each consumer's own when it is
  the queue's only consumer; none when a message may reach both work queues,
  since which queue's consumer records it first in the shared store is timing);
  queue arguments: a dead-letter exchange to one shared dead-letter queue, a
  message TTL far beyond the run, ``max_priority`` (classic);
* at most one queue nobody consumes (a *sink*), with ``max_length`` and each
  ``overflow`` mode, or a short ``message_ttl`` that dead-letters everything
  (reason ``expired``).

Every scenario runs until idle: ``[run] drain = { until = "idle", limit = "5s" }``
(:mod:`sim.drain`), and uses a constant network latency (a TCP connection never
reorders, :meth:`~sim.rabbitmq.calibrate.Calibration.apply`).

``racy = False`` (the default) keeps to scenarios whose semantic outcome does not
depend on timing, so a disagreement there is the model's: a classic queue that
redelivers (retries, crashes) has one consumer (a classic queue does not count
deliveries, so the attempt number is each consumer's own tally), crashes only
with prefetch 1 and concurrency 1 (what else a crashed consumer held depends on
timing; nor on a queue whose consumers retry by its delivery limit, past which
RabbitMQ 3.10.8 leaks a credit; nor when a message may reach two consumed
queues, because a crash decision counts the processing starts of the message in
every queue), consumers of one queue crash alike, the sink's ``max_length`` only
with one publisher, no consumer's republished copy going to the sink or to the
other work queue (the order of the messages there is timing), no TTL short
enough to expire on a consumed queue. ``racy = True`` also allows those; their outcome depends on timing on the
real broker too, which :mod:`sim.rabbitmq.differential` detects by running the
broker twice.

Not generated, because the adapter refuses or cannot reproduce them
(:func:`~sim.rabbitmq.runner.check_supported`): downstream services, network loss,
duplication and reordering, per-link settings, another ``consumer_timeout``;
broker restarts need a broker node the adapter controls (a
:class:`~sim.rabbitmq.node.LocalBrokerNode`), which the shared test broker is not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ..scenario import Scenario

__all__ = ["Chooser", "RandomChooser", "build", "scenarios", "sample", "DRAIN"]

T = TypeVar("T")

#: the drain policy of every generated scenario: both sides run until idle, at most 5 s more
DRAIN = {"until": "idle", "limit": "5s"}
_LATENCY = {"dist": "constant", "value": 0.3}


class Chooser(Protocol):
    """The choices a scenario is built from (hypothesis draws, or a seeded random generator)."""

    def integer(self, low: int, high: int) -> int: ...

    def pick(self, options: Sequence[T]) -> T: ...

    def coin(self) -> bool: ...


class RandomChooser:
    """Choices from ``random.Random(seed)``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def coin(self) -> bool:
        return self.rng.random() < 0.5


class _DrawChooser:
    """Choices from a hypothesis ``draw``: each choice shrinks towards its first option, the low end, False."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        from hypothesis import strategies as st

        return int(self.draw(st.integers(low, high)))

    def pick(self, options: Sequence[T]) -> T:
        from hypothesis import strategies as st

        return options[self.draw(st.integers(0, len(options) - 1))]

    def coin(self) -> bool:
        from hypothesis import strategies as st

        return bool(self.draw(st.booleans()))


_ROUTES = {  # exchange type -> (binding key of work queue i, routing keys publishers pick from; unroutable last)
    "direct": (["k0", "k1"], ["k0", "k1", "kx"]),
    "topic": (["a.*", "#.b"], ["a.x", "c.b", "a.b", "c.d"]),
    "fanout": (["", ""], ["any"]),
}
_MODES = ("none", "requeue", "delivery_limit", "republish", "dlx_wait")


def build(c: Chooser, *, racy: bool = False, name: str = "differential") -> Scenario:
    """One random valid scenario from the choices of ``c`` (module docstring)."""
    seed = c.integer(1, 10_000)
    duration = c.pick([300, 500, 800])
    exchange_type = c.pick(["direct", "topic", "fanout", "default"])
    n_work = c.integer(1, 2)
    n_pub = c.integer(1, 2)
    exchanges: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    consumers: list[dict[str, Any]] = []
    uses_dlq = False
    priorities = False
    if exchange_type != "default":
        exchanges.append({"name": "in", "type": exchange_type})

    sink = c.pick(["none", "none", "max_length", "ttl"])
    sink_spec: dict[str, Any] = {"name": "sink"}
    if sink == "max_length":
        sink_spec["max_length"] = c.integer(0, 5)
        sink_spec["overflow"] = overflow = c.pick(["drop-head", "reject-publish", "reject-publish-dlx"])
        if overflow != "reject-publish" or c.coin():
            # a message discarded on overflow without a dead-letter exchange is seen by nobody on a real broker, so
            # every discarding overflow goes to the dead-letter queue; a queue with a dead-letter exchange is a
            # transit queue, idle only once empty: what it keeps expires a second later, long after the overflow
            # decisions (every message is published within 0.5 s)
            sink_spec.update(dead_letter_exchange="dlx", message_ttl="1s")
    # a full queue that rejects publishes refuses every copy sent to it again: a publisher's republish and a
    # consumer's republish retry (whose original is then requeued) would go on for ever, and never drain
    rejecting = sink_spec.get("overflow") in ("reject-publish", "reject-publish-dlx")
    # a consumer's republished copy goes back through the exchange it came from, to the sink too: its place among the
    # publisher's messages there is timing, and so is which message a max-length sink discards
    fans_out = n_work > 1 and exchange_type in ("topic", "fanout")  # a message may reach both work queues
    # ... and to the other work queue, where copies of one message then queue up in an order that is timing
    no_republish = rejecting or (not racy and (sink == "max_length" or fans_out))

    for i in range(n_work):
        q = f"w{i}"
        qtype = c.pick(["classic", "quorum"])
        spec: dict[str, Any] = {"name": q, "type": qtype}
        modes = [m for m in _MODES if (m != "delivery_limit" or qtype == "quorum")
                 and not (m == "republish" and no_republish)]
        mode = c.pick(modes)
        retry: dict[str, Any] = {"mode": mode}
        if mode == "delivery_limit":
            spec["delivery_limit"] = c.integer(0, 3)
        if mode in ("requeue", "republish"):
            retry["max_attempts"] = c.integer(1, 3)
            if c.coin():
                retry.update(backoff="fixed", delay=f"{c.pick([5, 20])}ms")
                if mode == "republish" and c.coin():
                    wait_ex = f"wait.{q}"
                    exchanges.append({"name": wait_ex, "type": "fanout"})
                    queues.append({"name": f"wait.{q}", "dead_letter_exchange": "", "dead_letter_routing_key": q})
                    bindings.append({"exchange": wait_ex, "queue": f"wait.{q}"})
                    retry["via_exchange"] = wait_ex
        if mode == "dlx_wait":
            wait_ex = f"wait.{q}"
            exchanges.append({"name": wait_ex, "type": "fanout"})
            queues.append({"name": f"wait.{q}", "message_ttl": f"{c.pick([10, 30])}ms", "dead_letter_exchange": "",
                           "dead_letter_routing_key": q})
            bindings.append({"exchange": wait_ex, "queue": f"wait.{q}"})
            spec["dead_letter_exchange"] = wait_ex
            retry.update(max_attempts=c.integer(1, 3), dead_letter_exchange="dlx")
            uses_dlq = True
        elif c.coin():
            spec["dead_letter_exchange"] = "dlx"
            uses_dlq = True
        if qtype == "classic" and c.coin():
            spec["max_priority"] = c.integer(1, 5)
            priorities = True
        if c.integer(0, 3) == 0:
            spec["message_ttl"] = "60s" if not racy else c.pick(["60s", "20ms"])
        if exchange_type in _ROUTES:
            bindings.append({"exchange": "in", "queue": q, "routing_key": _ROUTES[exchange_type][0][i]})
        queues.insert(i, spec)  # work queues first, then their wait queues, in declaration order
        fail = c.pick([0.0, 0.2, 0.5])
        poison = c.pick([0.0, 0.0, 0.1])
        crash = c.pick([0.0, 0.0, 0.1])
        if mode == "delivery_limit" and not racy:
            # past its delivery limit a nacked message leaks a credit (sim.messaging.broker): the consumer then holds
            # more than its prefetch, and which messages a crash catches is timing
            crash = 0.0
        if fans_out and not racy:
            # whether a delivery crashes counts the processing starts of its message id in every queue: with the
            # message in two consumed queues, how those interleave is timing
            crash = 0.0
        n_cons = 1 if (qtype == "classic" and not racy) else c.integer(1, 2)
        auto_ack = mode == "none" and crash == 0.0 and c.integer(0, 3) == 0
        # consumers of one queue crash alike: which of them gets a message is timing
        crash_point, restart_after = c.pick(["after_effect", "before_effect"]), f"{c.pick([20, 60])}ms"
        for _ in range(n_cons):
            node = f"c{len(consumers)}"
            cons: dict[str, Any] = {"node": node, "queue": q, "retry": dict(retry)}
            if auto_ack:
                cons["auto_ack"] = True
            else:
                cons["prefetch"] = 1 if (crash and not racy) else c.integer(1, 5)
                cons["concurrency"] = 1 if (crash and not racy) else c.integer(1, 2)
            cons["processing_time"] = (f"{c.pick([1, 3])}ms" if c.coin()
                                       else {"dist": "exponential", "mean": f"{c.pick([1, 3])}ms"})
            if fail:
                cons["failure_probability"] = fail
            if poison:
                cons["poison_probability"] = poison
            if crash:
                cons.update(crash_probability=crash, crash_point=crash_point, restart_after=restart_after)
            consumers.append(cons)

    if sink == "max_length" and n_pub > 1 and not racy:
        n_pub = 1
    if sink != "none":
        if sink == "ttl":
            sink_spec.update(message_ttl=f"{c.pick([10, 40])}ms", dead_letter_exchange="dlx")
        if "dead_letter_exchange" in sink_spec:
            uses_dlq = True
        queues.append(sink_spec)
        if exchange_type in _ROUTES:
            bindings.append({"exchange": "in", "queue": "sink", "routing_key": {"direct": "k0", "topic": "#",
                                                                                "fanout": ""}[exchange_type]})
    if uses_dlq:
        exchanges.append({"name": "dlx", "type": "fanout"})
        queues.append({"name": "dlq"})
        bindings.append({"exchange": "dlx", "queue": "dlq"})

    publishers: list[dict[str, Any]] = []
    for j in range(n_pub):
        if exchange_type == "default":
            keys = [f"w{i}" for i in range(n_work)] + (["sink"] if sink != "none" else []) + ["nowhere"]
            exchange = ""
        else:
            keys = _ROUTES[exchange_type][1]
            exchange = "in"
        routing = [k for k in keys if c.integer(0, 2) > 0] or [keys[0]]
        pub: dict[str, Any] = {"node": f"p{j}", "exchange": exchange, "routing_keys": routing,
                               "count": c.integer(5, 25), "rate": c.pick([50, 100, 200]),
                               "arrivals": c.pick(["periodic", "poisson"])}
        if j:
            pub["start"] = f"{c.pick([0, 50])}ms"
        confirms = c.integer(0, 3) > 0
        pub["confirms"] = confirms
        # republishing a message a full queue keeps rejecting never ends: the run could not drain
        pub["republish"] = confirms and not rejecting and c.coin()
        if c.coin():
            pub["mandatory"] = True
        if c.integer(0, 3) == 0:
            pub["persistent"] = False
        if priorities and c.coin():
            pub["priority"] = c.integer(0, 5)
        publishers.append(pub)

    # idempotent consumers, drawn last so that the rest of a numbered sample does not depend on it
    for i in range(n_work):
        mine = [x for x in consumers if x["queue"] == f"w{i}"]
        if mine[0].get("auto_ack") or (fans_out and not racy) or c.integer(0, 3) > 0:
            continue  # (the shared store is every consumer's: with a message in both work queues, the first wins)
        # a store of each consumer's own sees what that consumer processed: with two consumers, timing
        store = c.pick(["shared", "local_durable", "local"]) if len(mine) == 1 or racy else "shared"
        for x in mine:
            x["idempotency"] = {"store": store}

    protocol: dict[str, Any] = {
        "name": "messaging", "broker": "broker",
        "topology": {"exchanges": exchanges, "queues": queues, "bindings": bindings},
        "publishers": publishers, "consumers": consumers,
    }
    if uses_dlq:
        protocol["dead_letter_queues"] = ["dlq"]
    nodes = ["broker"] + [p["node"] for p in publishers] + [x["node"] for x in consumers]
    data = {"name": name, "cluster": {"nodes": nodes}, "workload": {"clients": 0},
            "network": {"latency": dict(_LATENCY)},
            "run": {"duration": f"{duration}ms", "seed": seed, "drain": dict(DRAIN)},
            "protocol": protocol}
    return Scenario.from_dict(data)


def sample(seed: int, *, racy: bool = False) -> Scenario:
    """The generated scenario number ``seed`` (the same on every machine)."""
    return build(RandomChooser(seed), racy=racy, name=f"differential-{'racy-' if racy else ''}{seed}")


def scenarios(*, racy: bool = False) -> Any:
    """A hypothesis strategy of generated scenarios (shrinking towards fewer, simpler parts)."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Callable[[Any], Any]) -> Scenario:
        return build(_DrawChooser(draw), racy=racy)

    return strategy()


def compact_toml(scenario: Scenario) -> str:
    """``scenario`` as TOML without the fields left at their defaults (reads back as an equal scenario)."""
    import dataclasses

    import tomli_w

    def prune(obj: Any, plain: Any) -> Any:
        if dataclasses.is_dataclass(obj) and isinstance(plain, dict):
            out = dict(plain)
            for f in dataclasses.fields(obj):
                if f.name not in out:
                    continue
                value = getattr(obj, f.name)
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    default = dataclasses.MISSING
                if default is not dataclasses.MISSING and value == default:
                    del out[f.name]
                else:
                    out[f.name] = prune(value, out[f.name])
            return out
        if isinstance(obj, (tuple, list)) and isinstance(plain, list) and len(obj) == len(plain):
            return [prune(o, p) for o, p in zip(obj, plain)]
        return plain

    data = prune(scenario, scenario.to_dict())
    data.setdefault("workload", {})["clients"] = 0
    text = tomli_w.dumps(data)
    if Scenario.from_toml_string(text) != scenario:  # a default that a container's own default differs from
        return scenario.to_toml()
    return text
