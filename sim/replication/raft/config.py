"""Raft's configuration (``protocol.name = "raft"``) and its run summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd

from ...checkers.duplicates import duplicate_applications
from ...checkers.election_safety import check_election_safety
from ...checkers.state_machine_safety import AppliedEntries
from ...config import Duration, at_least, fld, nonneg, positive
from ...errors import ScenarioError
from ...kernel.messages import ClientReply, ClientRequest
from ...kernel.node import Host
from ...kernel.world import World
from ...protocol import ProtocolConfig, register_protocol
from ...protocols.dedup import DedupConfig, applications_channel
from ...report import verdict_line
from ...scenario import Scenario
from .messages import (
    SENTINEL,
    AppendEntries,
    AppendReply,
    FromLeader,
    InstallSnapshot,
    RequestVote,
    Role,
    SnapshotReply,
    ToLeader,
    VoteReply,
)
from .node import RaftNode

if TYPE_CHECKING:
    from ...result import Result

__all__ = ["RaftConfig", "leaders_table"]


def leaders_table(nodes: list[RaftNode]) -> pd.DataFrame:
    """Every election won in the run: time, node, term (from each node's role history)."""
    rows = [(r.time, n.name, r.term) for n in nodes for r in n.roles if r.role == Role.LEADER]
    rows.sort()
    return pd.DataFrame(rows, columns=["time", "node", "term"])


def _drift_bound(x: float) -> str | None:
    return None if 0.0 <= x < 1.0 else f"must be in [0, 1), got {x!r}"


@register_protocol
@dataclass(frozen=True, kw_only=True)
class RaftConfig(ProtocolConfig[AppliedEntries]):
    """Raft over every cluster node; see the module docstring for the algorithm."""

    tag: ClassVar[str] = "raft"
    honours_idempotency_keys: ClassVar[bool] = True
    election_timeout_min: Duration = fld(150.0, check=positive, doc="lower bound of the random election timeout")
    election_timeout_max: Duration = fld(300.0, check=positive, doc="upper bound of the random election timeout")
    heartbeat: Duration = fld(50.0, check=positive, every="node", doc="leader's AppendEntries period")
    read_mode: Literal["read_index", "lease", "log", "local"] = fld("read_index", doc="how the leader serves reads")
    check_quorum: bool = fld(True, doc="leader steps down without a majority; voters stick to a live leader")
    pre_vote: bool = fld(True, doc="ask for pre-votes before starting an election")
    lease_drift_bound: float = fld(0.01, check=_drift_bound, doc="assumed max clock rate error (lease mode)")
    lease_margin: Duration = fld(5.0, doc="lease safety margin in ms (lease mode)")
    max_batch: int = fld(64, check=at_least(1), doc="max entries per AppendEntries")
    forward: bool = fld(True, doc="followers forward requests to the leader (else refuse them)")
    forward_ttl: Duration | None = fld(None, check=positive,
                                       doc="a forwarding node forgets a request's client after this "
                                           "(default: the workload's client timeout)")
    snapshot_threshold: int = fld(0, check=at_least(0),
                                  doc="snapshot the state machine once this many applied entries are in "
                                      "the log, and drop them (0: never compact)")
    snapshot_timeout: Duration = fld(300.0, check=positive,
                                     doc="leader resends an unanswered InstallSnapshot after this")
    snapshot_record_time: Duration = fld(0.0, check=nonneg,
                                         doc="transfer time per record (key, remembered op id or "
                                             "idempotency key) of an InstallSnapshot, before its network "
                                             "latency")
    dedup_window: int = fld(0, check=at_least(0),
                            doc="applied operation ids (request ids: copies of one request) remembered "
                                "for duplicate detection (0: all; else about the newest this many, older "
                                "ids are dropped)")
    dedup: DedupConfig = fld(DedupConfig(), doc="bounds of the state machine's idempotency-key table "
                                                "(keys shared by a client's retries of one operation)")

    @property
    def lease_duration(self) -> float:
        """How long after sending a confirmed round the leader may serve lease reads (leader clock)."""
        rho = self.lease_drift_bound
        return self.election_timeout_min * (1.0 - rho) / (1.0 + rho) - self.lease_margin

    def check_scenario(self, scenario: Scenario, path: str) -> None:
        if self.election_timeout_max < self.election_timeout_min:
            raise ScenarioError(f"{path}.election_timeout_max",
                                f"must be >= election_timeout_min ({self.election_timeout_min} ms), "
                                f"got {self.election_timeout_max} ms")
        if self.heartbeat >= self.election_timeout_min:
            raise ScenarioError(f"{path}.heartbeat",
                                f"must be shorter than election_timeout_min ({self.election_timeout_min} ms), "
                                f"got {self.heartbeat} ms")
        if self.read_mode == "lease":
            if not self.check_quorum:
                raise ScenarioError(f"{path}.read_mode",
                                    "'lease' needs check_quorum = true (voters must stick to a live leader)")
            if self.lease_duration <= 0:
                raise ScenarioError(f"{path}.lease_margin",
                                    f"leaves no lease: election_timeout_min*(1-rho)/(1+rho) - margin = "
                                    f"{self.lease_duration:g} ms")

    def cas_refusal(self) -> str | None:
        return None  # a cas is a log entry, decided in log order when applied

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        return (ClientRequest, ClientReply, RequestVote, VoteReply, AppendEntries, AppendReply, InstallSnapshot,
                SnapshotReply, ToLeader, FromLeader)

    def new_state(self, world: Host) -> AppliedEntries:
        """The run's record of applied entries (for ``state_machine_safety``), shared by the nodes."""
        return AppliedEntries(world.scenario.nodes)

    def build_nodes(self, world: Host, state: AppliedEntries) -> dict[str, RaftNode]:
        return {name: RaftNode(world, name, self, state) for name in world.scenario.nodes}

    @staticmethod
    def _nodes(world: World) -> list[RaftNode]:
        return [node for node in world.nodes.values() if isinstance(node, RaftNode)]

    def leader(self, world: World) -> str | None:
        """The live node that believes it leads in the highest term (None: no leader now)."""
        best: RaftNode | None = None
        for node in self._nodes(world):
            if node.alive and node.role == Role.LEADER and (best is None or node.term > best.term):
                best = node
        return None if best is None else best.name

    def tables(self, world: World, state: AppliedEntries) -> dict[str, pd.DataFrame]:
        """The event log's channels and ``leaders``: every election won (time, node, term)."""
        return {**world.events.frames(), "leaders": leaders_table(self._nodes(world))}

    def verdicts(self, world: World, state: AppliedEntries) -> dict[str, Any]:
        """``election_safety``: at most one leader per term (:mod:`sim.checkers.election_safety`);
        ``state_machine_safety``: no two nodes applied different entries at one index
        (:mod:`sim.checkers.state_machine_safety`); with client retries also ``duplicates``: writes
        some replica applied twice."""
        out: dict[str, Any] = {"election_safety": check_election_safety(leaders_table(self._nodes(world))),
                               "state_machine_safety": state.result()}
        duplicates = self._duplicates(world)
        if duplicates is not None:
            out["duplicates"] = duplicates
        return out

    def report(self, result: Result) -> list[str]:
        lines = [verdict_line("election safety", result.verdicts.get("election_safety"), "one leader per term"),
                 verdict_line("state machine safety", result.verdicts.get("state_machine_safety"),
                              "one entry applied per log index")]
        found = result.verdicts.get("duplicates")
        if found is not None:
            lines.append(verdict_line("duplicates", found, "no write applied twice",
                                      f"{found.duplicated} writes applied more than once ({found.extra} extra "
                                      f"times), {found.applied_after_fail} applied after a fail"))
        return lines

    def summary(self, world: World, state: AppliedEntries) -> dict[str, Any]:
        nodes = self._nodes(world)
        return {
            "protocol.elections": sum(n.elections for n in nodes),
            "protocol.leader_changes": sum(n.leaderships for n in nodes),
            "protocol.stepdowns": sum(n.stepdowns for n in nodes),
            "protocol.terms": max(n.disk.get("term", 0) for n in nodes),
            "protocol.committed": max(n.max_commit for n in nodes),
            "protocol.max_log": max(len(n.disk.get("log", (SENTINEL,))) - 1 for n in nodes),
            "protocol.forwarded": sum(n.forwarded for n in nodes),
            "protocol.refused": sum(n.refused for n in nodes),
            "protocol.reads_confirmed": sum(n.reads_confirmed for n in nodes),
            "protocol.reads_lease": sum(n.reads_lease for n in nodes),
            "protocol.reads_local": sum(n.reads_local for n in nodes),
            "protocol.snapshots_taken": sum(n.snapshots_taken for n in nodes),
            "protocol.snapshots_sent": sum(n.snapshots_sent for n in nodes),
            "protocol.snapshots_installed": sum(n.snapshots_installed for n in nodes),
            "protocol.snapshot_records_sent": sum(n.snapshot_records_sent for n in nodes),
            "protocol.forwards_expired": sum(n.forwards.expired for n in nodes),
            **self._retry_summary(world, nodes),
        }

    def _retry_summary(self, world: World, nodes: list[RaftNode]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if world.scenario.workload.retry.retries and world.scenario.workload.pattern != "counter":
            duplicates = self._duplicates(world)
            if duplicates is not None:
                out.update(duplicates.summary())
        if world.scenario.workload.retry.idempotency_keys:
            # every replica applies the same log: the one that applied the most tells
            most = max(nodes, key=lambda n: n.last_applied)
            out.update({"protocol.dedup_hits": most.dedup.hits, "protocol.dedup_expired": most.dedup.expired,
                        "protocol.dedup_evicted": most.dedup.evicted})
        return out

    def _duplicates(self, world: World) -> Any:
        """The duplicate-application check, when clients retry (None otherwise, and for a counter workload,
        whose increments share values that then identify no operation)."""
        applied = applications_channel(world)
        if applied is None or world.scenario.workload.pattern == "counter":
            return None
        return duplicate_applications(world.history.to_frame(), applied.frame())
