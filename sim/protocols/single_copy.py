"""A single-copy key-value store: one node owns all the data, no replication.

The simplest "CP" system: while the owner is reachable every operation is
linearizable; clients cut off from it (or whose proxy node is) get nothing.
A compare-and-set is decided by the owner in one step (counted as a write when
it applies, as a read when it finds another value).
Other nodes forward requests to the owner (``forward = true``) or refuse them.

The owner honours idempotency keys (:mod:`sim.protocols.dedup`): a write or
compare-and-set whose key it already decided gets the answer it got then (``ok``,
or a cas's precondition failure) and is not applied again; the duplicate table
(bounded by ``dedup.ttl`` and ``dedup.max_entries``) is on disk with the data
when ``durable``. With client retries every write it applies is recorded in the
``applications`` table (a compare-and-set that applies, with its new value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..checkers.duplicates import duplicate_applications
from ..config import Duration, fld, positive
from ..kernel.messages import CAS_MISMATCH, ClientReply, ClientRequest
from ..protocol import ProtocolConfig, register_protocol
from ..report import verdict_line
from .dedup import DedupConfig, DedupTable, applications_channel
from .proxy import Forwarded, ForwardedReply, ProxyNode

__all__ = ["SingleCopyConfig", "SingleCopyNode"]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class SingleCopyConfig(ProtocolConfig[None]):
    """``owner`` (default: the first node) holds the data, on disk when ``durable``."""

    tag: ClassVar[str] = "single_copy"
    honours_idempotency_keys: ClassVar[bool] = True
    owner: str | None = fld(None)
    forward: bool = fld(True)
    durable: bool = fld(True)
    dedup: DedupConfig = fld(DedupConfig(), doc="bounds of the owner's idempotency-key table")
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
        out = {"protocol.reads": owner.reads, "protocol.writes": owner.writes, "protocol.forwards_expired": expired}
        if world.scenario.workload.retry.retries and world.scenario.workload.pattern != "counter":
            found = self.verdicts(world, state)["duplicates"]
            out.update(found.summary())
        if world.scenario.workload.retry.idempotency_keys:
            table = owner.dedup
            out.update({"protocol.dedup_hits": table.hits, "protocol.dedup_expired": table.expired,
                        "protocol.dedup_evicted": table.evicted})
        return out

    def verdicts(self, world, state: None) -> dict[str, Any]:
        """With client retries: the duplicate-application check (writes applied twice)."""
        applied = applications_channel(world)
        if applied is None or world.scenario.workload.pattern == "counter":
            return {}  # counter increments share values, which then identify no operation
        return {"duplicates": duplicate_applications(world.history.to_frame(), applied.frame())}

    def report(self, result) -> list[str]:
        found = result.verdicts.get("duplicates")
        if found is None:
            return []
        return [verdict_line("duplicates", found, "no write applied twice",
                             f"{found.duplicated} writes applied more than once ({found.extra} extra times), "
                             f"{found.applied_after_fail} applied after a fail")]


class SingleCopyNode(ProxyNode):
    def __init__(self, world, name: str, owner: str, cfg: SingleCopyConfig) -> None:
        super().__init__(world, name)
        self.server = owner
        self.forward = cfg.forward
        self.forward_ttl = cfg.forward_ttl
        self.durable = cfg.durable
        self.dedup_cfg = cfg.dedup
        self.reads = 0
        self.writes = 0
        self.applied = applications_channel(world)

    def boot(self) -> None:
        super().boot()
        if self.durable:
            self.data = self.disk.setdefault("data", {})
            self.dedup = self.disk.setdefault("dedup", DedupTable(self.dedup_cfg))
        else:
            self.data = {}
            self.dedup = DedupTable(self.dedup_cfg)

    def replica_state(self):
        return dict(self.data) if self.serves() else None

    def serve(self, request: ClientRequest, reply) -> None:
        op = request.op
        if op == "read":
            self.reads += 1
            reply(ClientReply(request.op_id, True, self.data.get(request.key)))
            return
        idem = request.idempotency_key
        if idem is not None:
            seen, answer = self.dedup.lookup(idem, self.now)
            if seen:  # decided before: the same answer again, nothing applied
                ok, value, error = answer
                reply(ClientReply(request.op_id, ok, value, error))
                return
        value = request.value
        if op == "cas":
            expected, value = value
            current = self.data.get(request.key)
            if current != expected:
                self.reads += 1
                if idem is not None:
                    self.dedup.store(idem, self.now, (False, current, CAS_MISMATCH))
                reply(ClientReply(request.op_id, False, current, CAS_MISMATCH))
                return
        self.data[request.key] = value
        self.writes += 1
        if self.applied is not None:
            self.applied.record(self.now, self.name, request.op_id, request.op_id, idem, request.key, value)
        if idem is not None:
            self.dedup.store(idem, self.now, (True, None, None))
        reply(ClientReply(request.op_id, True))
