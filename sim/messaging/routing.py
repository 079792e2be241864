"""Exchange routing: direct, fanout and topic (``*`` = exactly one word, ``#`` = zero or more).

Routing keys and binding keys are dot-separated words. As in RabbitMQ, the
empty key has *no* words: binding ``#`` matches it, binding ``*`` does not.
"""

from __future__ import annotations

from functools import lru_cache

from .topology import DEFAULT_EXCHANGE, Topology

__all__ = ["topic_matches", "route"]


def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=8192)
def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether a topic binding key matches a routing key.

    >>> topic_matches("order.*", "order.created"), topic_matches("order.#", "order")
    (True, True)
    >>> topic_matches("*.created", "order.eu.created"), topic_matches("#.created", "order.eu.created")
    (False, True)
    """
    pattern, words = _words(binding_key), _words(routing_key)
    np, nw = len(pattern), len(words)
    # reach[j]: the first i pattern words can match the first j key words.
    reach = [True] + [False] * nw
    for i in range(np):
        p = pattern[i]
        nxt = [False] * (nw + 1)
        if p == "#":
            seen = False
            for j in range(nw + 1):  # '#' extends any reachable prefix by zero or more words
                seen = seen or reach[j]
                nxt[j] = seen
        else:
            for j in range(nw):
                if reach[j] and (p == "*" or p == words[j]):
                    nxt[j + 1] = True
        reach = nxt
    return reach[nw]


def route(topology: Topology, exchange: str, routing_key: str) -> list[str]:
    """Names of the queues a message published to ``exchange`` with ``routing_key`` reaches.

    Each queue appears once, in binding declaration order. The default exchange
    routes to the queue named ``routing_key`` if it exists.
    """
    if exchange == DEFAULT_EXCHANGE:
        return [q.name for q in topology.queues if q.name == routing_key]
    kind = topology.exchange(exchange).type
    out: list[str] = []
    for b in topology.bindings_of(exchange):
        if b.queue in out:
            continue
        if kind == "fanout" or (kind == "direct" and b.routing_key == routing_key) or (
                kind == "topic" and topic_matches(b.routing_key, routing_key)):
            out.append(b.queue)
    return out
