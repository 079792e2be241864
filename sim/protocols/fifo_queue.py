"""A FIFO service queue with ``servers`` identical servers (M/M/c when fed Poisson work).

Every client operation is a job: it waits in line at ``node``, is served for a
time drawn from ``service_time`` (stream ``service``), and is answered. With
``capacity`` set, a job that finds the system full is refused (M/M/c/K).
Queue contents are volatile: a crash loses every waiting job.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import at_least, fld
from ..dists import Dist, Exponential
from ..kernel.messages import ClientReply, ClientRequest
from ..protocol import ProtocolConfig, register_protocol
from .proxy import ProxyNode

__all__ = ["FifoQueueConfig", "FifoQueueNode"]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class FifoQueueConfig(ProtocolConfig[None]):
    """Clients' operations queue at ``node`` (default: the first) for ``servers`` servers."""

    tag: ClassVar[str] = "fifo_queue"
    node: str | None = fld(None)
    servers: int = fld(1, check=at_least(1))
    service_time: Dist = fld(Exponential(1.0))
    capacity: int | None = fld(None, check=at_least(1))
    forward: bool = fld(True)

    def node_refs(self):
        return [("node", self.node)] if self.node is not None else []

    def check_scenario(self, scenario, path):
        from ..errors import ScenarioError

        if self.capacity is not None and self.capacity < self.servers:
            raise ScenarioError(f"{path}.capacity", f"must be >= servers ({self.servers}), got {self.capacity}")

    def build_nodes(self, world, state: None):
        server = self.node or world.scenario.nodes[0]
        return {name: FifoQueueNode(world, name, server, self) for name in world.scenario.nodes}

    def summary(self, world, state: None) -> dict[str, Any]:
        node = world.nodes[self.node or world.scenario.nodes[0]]
        if node.alive:
            node.account()
        t = world.now
        return {
            "protocol.served": node.served,
            "protocol.refused": node.refused,
            "protocol.max_in_system": node.max_in_system,
            "protocol.mean_in_system": node.area / t if t > 0 else 0.0,
        }


class FifoQueueNode(ProxyNode):
    def __init__(self, world, name: str, server: str, cfg: FifoQueueConfig) -> None:
        super().__init__(world, name)
        self.server = server
        self.forward = cfg.forward
        self.cfg = cfg
        self._rng = world.streams["service"]
        self.served = 0
        self.refused = 0
        self.max_in_system = 0
        self.area = 0.0  # integral of the number in system over time
        self._last = 0.0

    def boot(self) -> None:
        super().boot()
        self.line: deque[tuple[ClientRequest, Any]] = deque()
        self.busy = 0
        self._last = self.now

    def account(self) -> None:
        """Advance the time integral of the number of jobs in the system (while up)."""
        now = self.now
        self.area += (len(self.line) + self.busy) * (now - self._last)
        self._last = now

    def on_crash(self) -> None:
        self.account()

    def serve(self, request: ClientRequest, reply) -> None:
        self.account()
        in_system = len(self.line) + self.busy
        if self.cfg.capacity is not None and in_system >= self.cfg.capacity:
            self.refused += 1
            reply(ClientReply(request.op_id, False, error="queue full"))
            return
        self.max_in_system = max(self.max_in_system, in_system + 1)
        if self.busy < self.cfg.servers:
            self._begin(request, reply)
        else:
            self.line.append((request, reply))

    def _begin(self, request: ClientRequest, reply) -> None:
        self.busy += 1
        self.set_timer(float(self.cfg.service_time.sample(self._rng)), self._done, request, reply)

    def _done(self, request: ClientRequest, reply) -> None:
        self.account()
        self.busy -= 1
        self.served += 1
        reply(ClientReply(request.op_id, True))
        if self.line:
            self._begin(*self.line.popleft())
