"""Exchange routing: topic patterns with * and #, direct, fanout and the default exchange."""

from __future__ import annotations

import pytest

from sim.config import build
from sim.messaging.routing import route, topic_matches
from sim.messaging.topology import Topology

TOPIC_CASES = [
    # (binding key, routing key, matches)
    ("order.*", "order.created", True),
    ("order.*", "order", False),
    ("order.*", "order.eu.created", False),
    ("*.created", "order.created", True),
    ("*.created", "created", False),
    ("*.*", "a.b", True),
    ("*", "", False),
    ("order.#", "order", True),
    ("order.#", "order.eu.created", True),
    ("order.#", "orders.created", False),
    ("#.created", "created", True),
    ("#.created", "order.eu.created", True),
    ("#.created", "order.created.late", False),
    ("#", "", True),
    ("#", "anything.at.all", True),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("#.#", "x.y", True),
    ("*.#.*", "x", False),
    ("*.#.*", "x.y", True),
    ("a.b", "a.b", True),
    ("a.b", "a.bc", False),
    ("", "", True),
    ("", "a", False),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
]


@pytest.mark.parametrize(("binding", "key", "expected"), TOPIC_CASES)
def test_topic_matching(binding, key, expected):
    """Topic binding keys: '*' is exactly one word, '#' zero or more; the empty key has no words."""
    assert topic_matches(binding, key) is expected


def topology():
    return build(Topology, {
        "exchanges": [{"name": "t", "type": "topic"}, {"name": "d", "type": "direct"},
                      {"name": "f", "type": "fanout"}],
        "queues": [{"name": "eu"}, {"name": "all"}, {"name": "created"}],
        "bindings": [
            {"exchange": "t", "queue": "eu", "routing_key": "order.eu.*"},
            {"exchange": "t", "queue": "all", "routing_key": "#"},
            {"exchange": "t", "queue": "created", "routing_key": "*.*.created"},
            {"exchange": "t", "queue": "eu", "routing_key": "#.eu.#"},  # a second match: still one copy
            {"exchange": "d", "queue": "eu", "routing_key": "eu"},
            {"exchange": "d", "queue": "all", "routing_key": "eu"},
            {"exchange": "f", "queue": "created", "routing_key": "ignored"},
            {"exchange": "f", "queue": "all"},
        ],
    }, "topology")


def test_topic_exchange_routes_to_every_matching_queue_once():
    """A topic exchange delivers one copy per matching queue, in binding order."""
    topo = topology()
    assert route(topo, "t", "order.eu.created") == ["eu", "all", "created"]
    assert route(topo, "t", "order.us.created") == ["all", "created"]
    assert route(topo, "t", "eu") == ["all", "eu"]


def test_direct_fanout_and_default_exchanges():
    """Direct compares keys exactly; fanout ignores them; the default exchange targets the queue named by the key."""
    topo = topology()
    assert route(topo, "d", "eu") == ["eu", "all"]
    assert route(topo, "d", "EU") == []
    assert route(topo, "f", "whatever") == ["created", "all"]
    assert route(topo, "", "created") == ["created"]
    assert route(topo, "", "missing") == []
