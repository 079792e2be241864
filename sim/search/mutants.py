"""Known-wrong variants of capsim's protocols: what the model checker must catch.

None of these is a protocol to run; each breaks one rule of the real one, so that a
search can show the rule matters (a predicate that never fires on a mutant proves
nothing). The real classes are untouched: a mutant is a subclass that overrides one
method. Scenarios name them with ``protocol.module = "sim.search.mutants"``.

Raft (:mod:`sim.replication.raft`):

* ``raft_mutant_count_replicas``: a leader commits the highest index a majority
  stores, whatever the term of its entry (the Raft paper's Figure 8, section 5.4.2).
  The real leader commits only an entry of its own term, and earlier ones with it.
* ``raft_mutant_volatile_vote``: a node persists its term and log but keeps its vote
  in memory only; after a crash it may vote a second time in the same term.

Both (and ``raft_preloaded``, the real Raft) accept ``preload``: what each node's disk
holds at the start (term, vote, log), so a search can begin from a state a long
execution would reach (the Figure 8 story after its first two elections).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..checkers.state_machine_safety import AppliedEntries
from ..config import fld
from ..errors import ScenarioError
from ..kernel.disk import Disk
from ..kernel.node import Host
from ..protocol import register_protocol
from ..replication.raft.config import RaftConfig
from ..replication.raft.messages import NOOP, SENTINEL, Entry
from ..replication.raft.node import RaftNode
from ..scenario import Scenario

__all__ = ["ReplicaCountingNode", "VolatileVoteNode", "PreloadedRaft", "ReplicaCountingRaft", "VolatileVoteRaft",
           "preloaded_disk"]


class ReplicaCountingNode(RaftNode):
    """Commits index N once a majority stores it, without requiring log[N].term == currentTerm (Figure 8)."""

    def _advance_commit(self) -> None:
        if self.peers:
            m = sorted(self.match_index.values(), reverse=True)[self.majority - 2]
        else:
            m = self.log_start + len(self.log) - 1
        if m > self.commit_index:  # the real rule adds: and self._term_at(m) == self.term
            self.commit_index = m
            self._apply()


class VolatileVoteNode(RaftNode):
    """Persists its term (and its log) but not its vote: after a crash it has voted for nobody."""

    def _persist(self, term: int, voted_for: str | None) -> None:
        self.term = term
        self.voted_for = voted_for
        self.disk["term"] = term
        self.disk["voted_for"] = None


def _entry(value: Any, path: str) -> Entry:
    """A log entry from ``[term]`` (a no-op) or ``[term, op_id, op, key, value]``."""
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 5) or not isinstance(value[0], int) \
            or value[0] < 1:
        raise ScenarioError(path, f"must be [term] (a no-op) or [term, op_id, op, key, value] with term >= 1, "
                            f"got {value!r}")
    if len(value) == 1:
        return Entry(value[0], 0, NOOP, None, None)
    term, op_id, op, key, val = value
    if op not in ("write", "read") or not isinstance(op_id, int) or op_id < 1:
        raise ScenarioError(path, f"op must be 'write' or 'read' and op_id an integer >= 1, got {value!r}")
    return Entry(term, op_id, op, key, val)


def preloaded_disk(spec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A node's disk from ``{term, voted_for, log}`` (the log's entries as :func:`_entry` reads them)."""
    unknown = set(spec) - {"term", "voted_for", "log"}
    if unknown:
        raise ScenarioError(f"{path}.{sorted(unknown)[0]}", "unknown key; accepted: term, voted_for, log")
    log = [SENTINEL] + [_entry(e, f"{path}.log[{i}]") for i, e in enumerate(spec.get("log", []))]
    term = spec.get("term", log[-1].term)
    if not isinstance(term, int) or term < log[-1].term:
        raise ScenarioError(f"{path}.term", f"must be an integer >= the last entry's term ({log[-1].term}), "
                            f"got {term!r}")
    for i in range(2, len(log)):
        if log[i].term < log[i - 1].term:
            raise ScenarioError(f"{path}.log[{i - 1}]", "entries' terms must not decrease along the log")
    return {"term": term, "voted_for": spec.get("voted_for"), "log": log}


@register_protocol
@dataclass(frozen=True, kw_only=True)
class PreloadedRaft(RaftConfig):
    """The real Raft, each node starting from the disk ``preload`` gives it (none: empty)."""

    tag: ClassVar[str] = "raft_preloaded"
    node_class: ClassVar[type[RaftNode]] = RaftNode
    preload: Any = fld(None, doc="node -> {term, voted_for, log}: its disk at the start; a log entry is [term] "
                                 "(a no-op) or [term, op_id, op, key, value]")

    def check_scenario(self, scenario: Scenario, path: str) -> None:
        super().check_scenario(scenario, path)
        if self.preload is None:
            return
        if not isinstance(self.preload, Mapping):
            raise ScenarioError(f"{path}.preload", "must be a table of node -> {term, voted_for, log}")
        for name, spec in self.preload.items():
            if name not in scenario.nodes:
                raise ScenarioError(f"{path}.preload.{name}", f"no node {name!r}; nodes: "
                                    f"{', '.join(scenario.nodes)}")
            if not isinstance(spec, Mapping):
                raise ScenarioError(f"{path}.preload.{name}", "must be a table {term, voted_for, log}")
            preloaded_disk(spec, f"{path}.preload.{name}")
            vote = spec.get("voted_for")
            if vote is not None and vote not in scenario.nodes:
                raise ScenarioError(f"{path}.preload.{name}.voted_for", f"no node {vote!r}; nodes: "
                                    f"{', '.join(scenario.nodes)}")

    def build_nodes(self, world: Host, state: AppliedEntries) -> dict[str, RaftNode]:
        nodes = {name: self.node_class(world, name, self, state) for name in world.scenario.nodes}
        for name, spec in (self.preload or {}).items():
            disk = nodes[name].disk
            disk.update(preloaded_disk(spec, f"protocol.preload.{name}"))
            if isinstance(disk, Disk):
                disk.sync()  # durable: the state a crash-free past left
        return nodes


@register_protocol
@dataclass(frozen=True, kw_only=True)
class ReplicaCountingRaft(PreloadedRaft):
    """Raft whose leaders commit entries of earlier terms by counting replicas (known wrong: Figure 8)."""

    tag: ClassVar[str] = "raft_mutant_count_replicas"
    node_class: ClassVar[type[RaftNode]] = ReplicaCountingNode


@register_protocol
@dataclass(frozen=True, kw_only=True)
class VolatileVoteRaft(PreloadedRaft):
    """Raft whose nodes keep their vote in memory only (known wrong: two leaders in one term)."""

    tag: ClassVar[str] = "raft_mutant_volatile_vote"
    node_class: ClassVar[type[RaftNode]] = VolatileVoteNode
