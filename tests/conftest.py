"""Shared test helpers: a recorder protocol whose nodes log every message they get."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sim.config import fld
from sim.kernel.node import Host, Node
from sim.kernel.world import World
from sim.protocol import ProtocolConfig, register_protocol
from sim.runner import build_world
from sim.scenario import Scenario

# the labs' reference and known-wrong solutions import each other by module name
LAB_SOLUTIONS = Path(__file__).resolve().parent / "labs"
if str(LAB_SOLUTIONS) not in sys.path:
    sys.path.insert(0, str(LAB_SOLUTIONS))

# the RabbitMQ fixtures (rabbitmq: the local broker's settings; local_broker_node: a node of the test's own)
pytest_plugins = ["sim.rabbitmq.testing"]


@dataclass(frozen=True, slots=True)
class Note:
    """A test message carrying a sequence number."""

    seq: int


class RecorderNode(Node):
    """Logs (time, src, dst, seq) of every Note in the run's state; keeps a durable and a volatile counter."""

    def __init__(self, world: Host, name: str, log: list[tuple[float, str, str, int]]) -> None:
        super().__init__(world, name)
        self.log = log

    def boot(self) -> None:
        self.volatile_seen = 0
        self.disk.setdefault("durable_seen", 0)
        self.boots = getattr(self, "boots", 0) + 1

    def handle_Note(self, msg: Note, src: str) -> None:
        self.log.append((self.now, src, self.name, msg.seq))
        self.volatile_seen += 1
        self.disk["durable_seen"] += 1


@register_protocol
@dataclass(frozen=True, kw_only=True)
class RecorderConfig(ProtocolConfig[list]):
    """Nodes that record every Note they receive; the run's state is that record."""

    tag: ClassVar[str] = "test_recorder"
    unused: int = fld(0)

    def new_state(self, world: Host) -> list:
        return []

    def build_nodes(self, world: Host, state: list) -> dict[str, Node]:
        return {n: RecorderNode(world, n, state) for n in world.scenario.nodes}


def recorder_world(nodes: int = 3, seed: int = 1, **sections: Any) -> World:
    """A started world of recorder nodes with no clients, configured by scenario sections.

    ``world.state`` is the list of (time, src, dst, seq) of every Note delivered.
    """
    data: dict[str, Any] = {
        "cluster": {"count": nodes},
        "workload": {"clients": 0},
        "protocol": {"name": "test_recorder"},
        "run": {"duration": 1e9, "seed": seed},
    }
    data.update(sections)
    world = build_world(Scenario.from_dict(data))
    world.start()
    return world


@pytest.fixture
def make_world():
    return recorder_world


# -- running the suite on several workers (pytest-xdist, `make test`) ----------------------------------------
BROKER_FIXTURES = {"rabbitmq", "local_broker_node"}
# chapters that run their scenarios on the local broker too
BROKER_NOTEBOOKS = {
    "tests/test_notebooks.py::test_notebook_runs_and_shows_every_figure[06-simulation-vs-real-rabbitmq]",
}


def uses_real_broker(item: pytest.Item) -> bool:
    """Whether a test talks to a real RabbitMQ node (the local broker, a node or a cluster of its own)."""
    return (item.get_closest_marker("rabbitmq") is not None
            or bool(BROKER_FIXTURES & set(getattr(item, "fixturenames", ())))
            or item.nodeid in BROKER_NOTEBOOKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep every real-broker test on one worker, one at a time, and start them first.

    They share the local broker, fixed ports of nodes of their own and the namespaces of the
    cluster, and some judge timing, so they must not run beside each other; under
    ``--dist loadgroup`` one xdist group is one worker's. Started first, their wall-clock waits
    overlap the rest of the suite instead of ending it.
    """
    broker = [item for item in items if uses_real_broker(item)]
    for item in broker:
        item.add_marker(pytest.mark.xdist_group("real-broker"))
    others = [item for item in items if not uses_real_broker(item)]
    items[:] = broker + others
