"""Raft's messages, log entries and roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ...kernel.messages import ClientReply, ClientRequest
from ...protocols.dedup import DedupTable
from ...states import State

__all__ = ["Role", "Entry", "NOOP", "SENTINEL", "MAX_HOPS", "Snapshot", "RequestVote", "VoteReply", "AppendEntries",
           "AppendReply", "InstallSnapshot", "SnapshotReply", "ToLeader", "FromLeader"]

#: the op of a leader's no-op entry (appended when it wins, to commit earlier terms' entries)
NOOP = "noop"
#: a forwarded request travels through at most this many nodes before it is dropped
MAX_HOPS = 3


class Role(State):
    """A node's role; ``DOWN`` is recorded in a node's role history when it crashes."""

    FOLLOWER = "follower"
    PRECANDIDATE = "precandidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    DOWN = "down"


class Entry(NamedTuple):
    """One log entry: the leader's term when it was appended, and the client operation (or a no-op).

    ``idempotency_key`` is the client's key (None without one) and ``at`` the time the
    leader appended the entry: every replica expires its duplicate table by the
    entries' ``at``, so all of them keep and forget the same keys. ``at`` is the
    simulation's time, not the leader's drifting clock, so the stamps of a log never
    go back when leadership moves to a node whose clock is behind.
    """

    term: int
    op_id: int
    op: str
    key: Any
    value: Any
    idempotency_key: Any = None
    at: float = 0.0


#: index 0 of every log: the entry before the first, of term 0
SENTINEL = Entry(0, 0, NOOP, None, None)


class Snapshot(NamedTuple):
    """The state machine after applying entries ``1..last_index`` (the last of term ``last_term``).

    Besides the key-value data it holds everything applying those entries
    produced: the applied-operation table (``results``, with ``floor``: every
    operation id at or below it counts as applied, see ``dedup_window``), the
    idempotency-key table (``idempotency_keys``: each key's answer and the
    append time it expires from, see ``dedup``) and the convergence measure's
    per-term counts and per-key versions. Nothing in it is ever mutated: a node
    copies what it installs.
    """

    last_index: int
    last_term: int
    data: dict[Any, Any]
    results: dict[int, Any]
    floor: int
    applied_terms: dict[int, int]
    key_versions: dict[Any, dict[int, int]]
    idempotency_keys: DedupTable | None = None

    @property
    def size(self) -> int:
        """Records it carries (keys, remembered operations and idempotency keys): what a transfer costs."""
        keys = self.idempotency_keys
        return len(self.data) + len(self.results) + (len(keys) if keys is not None else 0)


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A candidate asks for a vote in ``term``; ``pre``: a pre-vote that changes no state."""

    term: int
    candidate: str
    last_index: int
    last_term: int
    pre: bool = False


@dataclass(frozen=True, slots=True)
class VoteReply:
    """``term`` is the voter's current term; ``asked`` the term the request was for."""

    term: int
    granted: bool
    pre: bool
    asked: int


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Log entries after ``prev_index`` (empty: a heartbeat); ``seq`` numbers the leader's rounds."""

    term: int
    leader: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    seq: int


@dataclass(frozen=True, slots=True)
class AppendReply:
    """``match``: last index known to equal the leader's; on refusal, a conflict hint.

    ``conflict_term`` 0 means the follower's log ends before ``conflict_index``;
    otherwise ``conflict_index`` is the first index of ``conflict_term`` in its log.
    ``seq`` echoes the request's round; 0 answers a request from an older term.
    """

    term: int
    success: bool
    match: int
    conflict_index: int
    conflict_term: int
    seq: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The leader's snapshot, for a follower that needs entries the leader has compacted away.

    Sent whole (one chunk): it leaves ``snapshot_record_time`` per record after the
    leader decides to send it, and then takes the ``snapshot`` kind's latency in
    ``network.message_latency``. ``seq`` numbers the leader's round, as in AppendEntries.
    """

    kind: ClassVar[str] = "snapshot"
    term: int
    leader: str
    snapshot: Snapshot
    seq: int


@dataclass(frozen=True, slots=True)
class SnapshotReply:
    """``match``: the follower's log now equals the leader's up to this index (0: refused, older term)."""

    term: int
    match: int
    seq: int


@dataclass(frozen=True, slots=True)
class ToLeader:
    """A client request on its way to the leader; ``origin`` is the node the client asked."""

    request: ClientRequest
    origin: str
    hops: int


@dataclass(frozen=True, slots=True)
class FromLeader:
    """The leader's answer, sent back to the origin node, which relays it to the client."""

    reply: ClientReply
