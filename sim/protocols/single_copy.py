"""A single-copy key-value store: one node owns all the data, no replication.

The simplest "CP" system: while the owner is reachable every operation is
linearizable; clients cut off from it (or whose proxy node is) get nothing.
A compare-and-set is decided by the owner in one step (counted as a write when
it applies, as a read when it finds another value).
Other nodes forward requests to the owner (``forward = true``) or refuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import Duration, fld, positive
from ..kernel.messages import CAS_MISMATCH, ClientReply, ClientRequest
from ..protocol import ProtocolConfig, register_protocol
from .proxy import Forwarded, ForwardedReply, ProxyNode

__all__ = ["SingleCopyConfig", "SingleCopyNode"]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class SingleCopyConfig(ProtocolConfig[None]):
    """``owner`` (default: the first node) holds the data, on disk when ``durable``."""

    tag: ClassVar[str] = "single_copy"
    owner: str | None = fld(None)
    forward: bool = fld(True)
    durable: bool = fld(True)
    forward_ttl: Duration | None = fld(None, check=positive,
                                       doc="a forwarding node forgets a request's client after this "
                                           "(default: the workload's client timeout)")

    def node_refs(self):
        return [("owner", self.owner)] if self.owner is not None else []

    def cas_refusal(self) -> str | None:
        return None  # the owner compares and sets in one step

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        return (ClientRequest, ClientReply, Forwarded, ForwardedReply)

    def build_nodes(self, world, state: None):
        owner = self.owner or world.scenario.nodes[0]
        return {name: SingleCopyNode(world, name, owner, self) for name in world.scenario.nodes}

    def leader(self, world) -> str | None:
        """The owner plays the leader's part (for ``@leader`` faults)."""
        return self.owner or world.scenario.nodes[0]

    def summary(self, world, state: None) -> dict[str, Any]:
        owner = world.nodes[self.owner or world.scenario.nodes[0]]
        expired = sum(world.nodes[name].waiting.expired for name in world.scenario.nodes)
        return {"protocol.reads": owner.reads, "protocol.writes": owner.writes, "protocol.forwards_expired": expired}


class SingleCopyNode(ProxyNode):
    def __init__(self, world, name: str, owner: str, cfg: SingleCopyConfig) -> None:
        super().__init__(world, name)
        self.server = owner
        self.forward = cfg.forward
        self.forward_ttl = cfg.forward_ttl
        self.durable = cfg.durable
        self.reads = 0
        self.writes = 0

    def boot(self) -> None:
        super().boot()
        if self.durable:
            self.data = self.disk.setdefault("data", {})
        else:
            self.data = {}

    def replica_state(self):
        return dict(self.data) if self.serves() else None

    def serve(self, request: ClientRequest, reply) -> None:
        if request.op == "cas":
            expected, new = request.value
            current = self.data.get(request.key)
            if current != expected:
                self.reads += 1
                reply(ClientReply(request.op_id, False, current, CAS_MISMATCH))
                return
            request = ClientRequest(request.op_id, "write", request.key, new)
        if request.op == "write":
            self.data[request.key] = request.value
            self.writes += 1
            reply(ClientReply(request.op_id, True))
        else:
            self.reads += 1
            reply(ClientReply(request.op_id, True, self.data.get(request.key)))
