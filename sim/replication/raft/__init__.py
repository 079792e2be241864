"""Raft: leader election, log replication and linearizable reads for a key-value store.

Every node runs the same deterministic handlers (Ongaro and Ousterhout 2014, and
the extensions of Ongaro's thesis, chapters 3, 6 and 9):

- **Elections.** A follower that hears nothing from a leader for a random
  election timeout (uniform in ``[election_timeout_min, election_timeout_max)``,
  drawn from the stream ``raft/<node>``) first asks for pre-votes (``pre_vote``:
  granted only by nodes that hear no leader either and whose logs are no newer,
  so a node that could not win changes no one's term), then becomes a candidate
  for the next term. A vote goes to at most one candidate per term, and only to one
  whose log is at least as up to date (last term, then last index).
- **Replication.** The leader sends AppendEntries with the previous entry's
  index and term; a follower whose log does not match refuses and returns a
  conflict hint (its log length, or the conflicting term and its first index),
  so the leader skips back a whole term at a time. The leader advances
  ``nextIndex`` optimistically after each send and falls back on a refusal. An
  entry is committed once a majority stores it *and* it belongs to the
  leader's current term (the rule of Figure 8); older entries commit with it.
  A new leader appends a no-op to commit its predecessors' entries.
- **Clients.** A node that is not the leader forwards a request to the leader
  it knows. It answers ``ok=False`` ("no leader known") only for a write it has
  never forwarded or appended, since only then is it sure no copy exists.
  Writes are answered after they are applied; a leader that loses leadership
  keeps quiet about its uncommitted writes (they may still commit; the client
  sees a timeout, ``info``). The state machine ignores an operation id it has
  already applied, so duplicated requests never apply a write twice.
- **Compare-and-set.** ``cas(key, expected, new)`` is a log entry like a write;
  it is decided when it is applied, in log order, so every replica decides it
  the same way: ``ok`` if the key held ``expected`` (now ``new``), else
  ``ok=False`` with ``error = "precondition failed"`` (and the value found).
  Routing and refusals treat it as a write.
- **Idempotency keys** (``workload.retry.idempotency_keys``). A client's retry
  is a new request (new ``op_id``), so the applied-operation table does not
  recognise it; with keys every attempt of one operation carries the same key,
  which the leader copies into the entry with the time it appends it (``at``).
  When the state machine applies a write or cas whose key it has decided, it
  skips it and answers with the first decision (``ok``, or the precondition
  failure), so a retried cas whose first attempt applied hears ``ok``. Keys
  expire by the entries' ``at``, not by when a replica applies them, so every
  replica keeps and forgets the same keys and decides alike.
- **Reads** (``read_mode``): ``read_index`` (default) takes the commit index
  (at least the leader's first entry of its term), confirms leadership with a
  heartbeat round sent after the read arrived and acknowledged by a majority,
  then serves once that index is applied. ``lease`` serves at once while the
  leader holds a lease renewed by such rounds (see below). ``log`` puts reads
  in the log like writes. ``local`` is the *unsafe* teaching mode: the leader
  answers from its state machine without any check, so a deposed leader that
  does not know it serves stale values.
- **Check-quorum** (``check_quorum``): a leader that has not heard from a
  majority for ``election_timeout_max`` steps down, so clients on a minority
  side stop getting answers. It also turns on leader stickiness: a node that
  heard from a leader less than ``election_timeout_min`` ago (local clock)
  ignores vote requests for a higher term (and a leader ignores them).

**Observing it.** Every role or term change is appended to the node's ``roles``
list and recorded as a node event (``"raft leader term=3 (won election)"``);
``RaftConfig.leader(world)`` names the current leader; ``summary()`` reports
elections, leader changes, step-downs, terms, committed entries, log length
(entries held, after compaction), snapshots taken, sent (and the records they
carried) and installed, and forwarding entries that expired.

**What is durable** (``self.disk``, written before any message that depends
on it is sent, as if fsynced): ``term``, ``voted_for``, ``log`` (a list of
``(term, op_id, op, key, value, idempotency_key, at)`` entries; index 0 is a sentinel, or with
compaction a stand-in for the snapshot's last entry) and ``snapshot``. Everything
else is volatile and rebuilt on recovery: the role (follower), the known
leader, the commit index (0, or the snapshot's last index; relearned from the
leader), the key-value state machine with its applied-operation table and its
idempotency-key table (the snapshot's, or empty, then rebuilt by replaying the
log as the commit index advances again), and all leader and client bookkeeping.

**Log compaction** (``snapshot_threshold``, off by default: the log then grows
for ever). Section 7 of the paper: once ``snapshot_threshold`` applied entries
sit in a node's log, the node saves its state machine as a
:class:`~.messages.Snapshot` (data, applied-operation table, idempotency-key
table, last included index and term) in ``self.disk["snapshot"]`` and cuts its log to a payload-free
stand-in for the last included entry; each node does so on its own. After a
crash the state machine starts from the snapshot and replays only the log after
it. AppendEntries whose previous index lies inside a follower's snapshot is
checked only beyond the snapshot (those entries are committed, so they equal
the leader's). A follower whose ``nextIndex`` is at or below the leader's log
start gets ``InstallSnapshot`` (one message holding the whole snapshot, of kind
``snapshot`` for ``network.message_latency``, leaving ``snapshot_record_time`` per
record of the snapshot after the leader sends it, so a bigger state takes longer;
resent after ``snapshot_timeout`` without an answer, which should exceed that
transfer time; heartbeats from the snapshot's base keep the follower's timer
meanwhile). The follower replaces its state machine by the snapshot and
keeps the log entries after it only if it holds the snapshot's last entry
(same index and term); otherwise its whole log goes.

**Bounded bookkeeping.** Two tables keep an operation from applying twice,
and each has its own bound. The *applied-operation table* is keyed by request
id (``op_id``): it makes copies of one request harmless (the network's
duplicates, a request forwarded twice), and it grows with every operation;
``dedup_window = N`` (0: keep
everything) keeps about the N newest operation ids (at most 2N) and counts every
older id as applied: an entry or request that old is dropped unanswered (its
client timed out long before; op ids grow with invocation time). Every node
forgets after the same applied entry, so state machines stay identical, and the
table travels in snapshots. The write ids a node forwarded or refused are
bounded the same way. The *idempotency-key table* is keyed by the client's
key, shared by all attempts (requests) of one operation: it makes a client's
retries harmless. ``dedup.ttl`` and ``dedup.max_entries`` bound it (a key
expires ``ttl`` after the append time of the entry that decided it; past
``max_entries`` the oldest goes); a retry arriving after its key is gone is
applied again. It too travels in snapshots, with each key's time: the log
entries that decided those keys are gone after compaction, so a table rebuilt
from the log alone would forget them, and a node that restarted from or
installed a snapshot would apply a retry the others skip. ``dedup_window``
never drops idempotency keys, nor ``dedup`` op ids. A forwarding node forgets a request's client
``forward_ttl`` after forwarding it (default: the client timeout), so replies
lost on the way do not pile up.

**Leases and clocks.** Raft measures every duration (election timeouts, "heard
from the leader lately", check-quorum, leases) on the node's monotonic clock
(``Node.monotonic()``), which only drifts, and its timers run on it too. Say a
majority acknowledged a heartbeat round the leader sent at time ``t`` on its own
clock. Each of those nodes ignores vote requests until ``election_timeout_min``
after it received the round, on *its* clock. If no clock's rate is off by more
than ``lease_drift_bound`` (rho), that lasts at least
``election_timeout_min/(1+rho)`` of real time, which the leader's clock measures
as at least ``election_timeout_min*(1-rho)/(1+rho)``; so the leader serves lease
reads until that much, less ``lease_margin``, after ``t`` on its clock
(``RaftConfig.lease_duration``). A rate off by more than the bound eats into the
margin (``clock_skew`` faults with a larger ``drift``: a follower whose clock runs
fast times out early, a leader whose clock runs slow overstays its lease); past it
a new leader can commit writes while the old one still serves lease reads, which
are then stale. With an exact leader clock that becomes possible once a follower's
``election_timeout_min/(1+drift)`` is shorter than ``lease_duration``
(``experiments/scenarios/raft-lease-clock-drift.toml``). Steps of the wall clock
(``clock_skew`` offsets, ``clock_step``) change no monotonic reading and no timer,
so they cannot break a lease. Read-index does not depend on clocks.
"""

from .config import RaftConfig
from .messages import (
    NOOP,
    AppendEntries,
    AppendReply,
    Entry,
    FromLeader,
    InstallSnapshot,
    RequestVote,
    Role,
    Snapshot,
    SnapshotReply,
    ToLeader,
    VoteReply,
)
from .node import RaftNode

__all__ = [
    "RaftConfig",
    "RaftNode",
    "Role",
    "Entry",
    "NOOP",
    "RequestVote",
    "VoteReply",
    "AppendEntries",
    "AppendReply",
    "Snapshot",
    "InstallSnapshot",
    "SnapshotReply",
    "ToLeader",
    "FromLeader",
]
