"""Shared test helpers: a recorder protocol whose nodes log every message they get."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from sim.config import fld
from sim.kernel.node import Node
from sim.kernel.world import World
from sim.protocols.base import ProtocolConfig
from sim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Note:
    """A test message carrying a sequence number."""

    seq: int


class RecorderNode(Node):
    """Logs (time, src, seq) of every Note; keeps a durable and a volatile counter."""

    def boot(self) -> None:
        self.volatile_seen = 0
        self.disk.setdefault("durable_seen", 0)
        self.boots = getattr(self, "boots", 0) + 1

    def handle_Note(self, msg: Note, src: str) -> None:
        self.world.log.append((self.now, src, self.name, msg.seq))
        self.volatile_seen += 1
        self.disk["durable_seen"] += 1


@ProtocolConfig.register
@dataclass(frozen=True, kw_only=True)
class RecorderConfig(ProtocolConfig):
    tag: ClassVar[str] = "test_recorder"
    unused: int = fld(0)

    def build_nodes(self, world):
        world.log = []
        return {n: RecorderNode(world, n) for n in world.scenario.nodes}


def recorder_world(nodes: int = 3, seed: int = 1, **sections: Any) -> World:
    """A started world of recorder nodes with no clients, configured by scenario sections."""
    data: dict[str, Any] = {
        "cluster": {"count": nodes},
        "workload": {"clients": 0},
        "protocol": {"name": "test_recorder"},
        "run": {"duration": 1e9, "seed": seed},
    }
    data.update(sections)
    world = World(Scenario.from_dict(data))
    world.start()
    return world


@pytest.fixture
def make_world():
    return recorder_world
