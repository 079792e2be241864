"""Primary-backup replication, synchronous or asynchronous, with a fixed or elected primary.

One node, the **primary**, orders every write: it appends ``(key, value, view)`` to
its log, applies it, and sends it to every backup (``Replicate``). Backups apply
log entries strictly in order and acknowledge their log length (``Ack``). Reads
are served by the primary from its own state, which includes writes it applied
but has not acknowledged yet: a fixed primary never undoes them (its log is
durable), but after an elected failover they may be rolled back, so even a
synchronous elected cluster is not linearizable. A client request that reaches a
backup is forwarded to the node that backup believes is primary, or refused
(``ok=False``, nothing done) when it has not heard from that node for
``failover_timeout``; a forwarded request that arrives at a node that is not
primary is refused too.

A **compare-and-set** is decided by the primary against its own state, like a
read: if the key holds the expected value it becomes a write of the new value
(replicated and acknowledged as above), else the client gets ``ok=False``
(``"precondition failed"``). It is exactly as consistent as the primary's
reads: with a fixed primary one node decides every cas; with elected primaries
both sides of a split brain decide them, and their writes are rolled back
like any other. The counts of lost acknowledged writes below tell writes apart
by value, so they need unique values: under ``workload.pattern = "counter"``
(where many increments write the same number) read the run's ``counter``
verdict instead.

Durable (``self.disk``): the view number, the log, the data it produces and
whether the log is known to be a prefix of the view's primary's log
(``synced``). Volatile: waiting client replies, acknowledgements, liveness.
Timeouts ("not heard from for ...") are measured on the node's monotonic clock
and its timers run on it, so a ``clock_skew`` drift stretches or shrinks them.

**Replication** (``replication``):

* ``"sync"``: the primary acknowledges a write once every backup in its
  synchronous set has acknowledged it. With ``on_backup_unreachable = "refuse"``
  the set is every other node, always, and while any backup has not been heard
  from for ``backup_timeout`` new writes are refused with ``ok=False`` before
  being applied (consistent, not available: a primary cut from a backup stops
  accepting writes); a write applied before that is neither refused nor
  acknowledged until the backup is back (the client times out: ``info``). With
  ``"degrade"`` a backup silent for ``backup_timeout`` is dropped from the set and
  the primary carries on; it rejoins once caught up. A write acknowledged while
  a backup was dropped lives on fewer nodes and is lost if a node that missed it
  becomes primary.
* ``"async"``: the primary acknowledges a write as soon as it applied it and
  replicates in the background. Writes acknowledged but not yet replicated are
  lost when another node takes over.

Backups repair gaps themselves: each heartbeat of the primary carries its log
length; a backup that is behind (a lost ``Replicate``) asks for the missing
suffix (``SyncRequest``/``Sync``).

**Primary** (``primary``):

* ``"fixed"``: ``primary_node`` (default: the first node) is primary forever
  (view 0). It survives its own crashes (its log is durable); while it is down or
  cut off, nobody serves.
* ``"elected"``: every node heartbeats every other node each
  ``heartbeat_interval``. A backup that has not heard from the primary for
  ``failover_timeout`` walks the node order from the primary onwards; if the first
  node it still hears from (or itself) is itself, it takes over in the next view
  it owns: view ``v`` belongs to ``nodes[v % len(nodes)]``, so each view has one
  primary and a higher view always wins. **There is no consensus**: a partition
  leaves the old primary serving on its side while a new one is elected on the
  other (split brain; even a lone backup elects itself). When the sides hear
  each other again, every node adopts the highest view, and a node from a lower
  view replaces its log with the new primary's (``Sync`` from position 0): the
  entries after the common prefix are rolled back. Acknowledged writes among them
  are counted in ``protocol.lost_on_failover``. ``protocol.acked_missing_at_end``
  counts every acknowledged write absent from the log of the primary of the
  highest view at the end, including those stranded on a primary that crashed
  before replicating them and never came back. Writes acknowledged by a primary
  whose view was no longer the highest in existence are counted in
  ``protocol.split_brain_acks``. With ``refuse`` an elected primary still needs
  every other node, including a dead predecessor, so it refuses writes until all
  are back: use ``degrade`` for an available elected cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..checkers.convergence import log_versions
from ..config import Duration, fld, positive
from ..kernel.messages import CAS_MISMATCH, ClientReply, ClientRequest
from ..protocol import ProtocolConfig, register_protocol
from ..protocols.proxy import Forwarded, ForwardedReply, ProxyNode

__all__ = ["PrimaryBackupConfig", "PrimaryBackupNode", "PrimaryBackupStats"]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class PrimaryBackupConfig(ProtocolConfig[None]):
    """Primary-backup: see the module docstring for what each field does."""

    tag: ClassVar[str] = "primary_backup"
    replication: Literal["sync", "async"] = fld("sync")
    primary: Literal["fixed", "elected"] = fld("fixed")
    primary_node: str | None = fld(None)
    on_backup_unreachable: Literal["refuse", "degrade"] = fld("refuse")  # sync only
    heartbeat_interval: Duration = fld(50.0, check=positive, every="node")
    failover_timeout: Duration = fld(300.0, check=positive)
    backup_timeout: Duration = fld(200.0, check=positive)
    forward_ttl: Duration | None = fld(None, check=positive,
                                       doc="a forwarding node forgets a request's client after this "
                                           "(default: the workload's client timeout)")

    def node_refs(self):
        return [("primary_node", self.primary_node)] if self.primary_node is not None else []

    def check_scenario(self, scenario, path):
        from ..errors import ScenarioError

        for name in ("failover_timeout", "backup_timeout"):
            if getattr(self, name) <= self.heartbeat_interval:
                raise ScenarioError(f"{path}.{name}", f"must be longer than heartbeat_interval "
                                    f"({self.heartbeat_interval} ms), got {getattr(self, name)} ms")

    def cas_refusal(self) -> str | None:
        return None  # the primary decides each cas against its own state

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        return (ClientRequest, ClientReply, Forwarded, ForwardedReply, Heartbeat, Replicate, Ack, SyncRequest, Sync)

    def build_nodes(self, world, state: None):
        stats = PrimaryBackupStats(world.scenario.nodes)
        return {name: PrimaryBackupNode(world, name, self, stats) for name in world.scenario.nodes}

    def summary(self, world, state: None) -> dict[str, Any]:
        nodes = [world.nodes[n] for n in world.scenario.nodes]
        stats: PrimaryBackupStats = nodes[0].stats
        stats.note_primaries(world.now)
        states: list[dict[Any, Any]] = []
        for n in nodes:
            replica = n.replica_state() if n.alive else None
            if replica is not None:
                states.append(replica)
        keys: dict[Any, None] = {}
        for replica in states:
            keys.update(dict.fromkeys(replica))
        # the lineage that survives: the log of the primary of the highest view (a live one
        # preferred), crashed or not, since its log is durable
        heads = [n for n in nodes if n.primary_of(n.view) == n.name]
        head = max(heads, key=lambda n: (n.view, n.alive)) if heads else None
        surviving = {e[1] for e in head.log} if head is not None else set()
        missing = sum(1 for v in stats.acked if v not in surviving) if head is not None else 0
        return {
            "protocol.failovers": stats.failovers,
            "protocol.max_view": stats.max_view,
            "protocol.stepdowns": stats.stepdowns,
            "protocol.writes_refused": stats.writes_refused,
            "protocol.reads_refused": stats.reads_refused,
            "protocol.backups_dropped": stats.backups_dropped,
            "protocol.rolled_back": stats.rolled_back,
            "protocol.lost_on_failover": len(stats.lost),
            "protocol.acked_missing_at_end": missing,
            "protocol.split_brain_acks": stats.split_brain_acks,
            "protocol.max_primaries": stats.max_primaries,
            "protocol.split_brain_time": stats.split_brain_time,
            "protocol.divergent_keys_at_end": sum(
                1 for k in keys if any(s.get(k) != states[0].get(k) for s in states[1:])),
        }


class PrimaryBackupStats:
    """Run-wide counters shared by the nodes (instrumentation, not protocol state)."""

    def __init__(self, nodes: tuple[str, ...]) -> None:
        self.failovers = 0
        self.stepdowns = 0
        self.max_view = 0
        self.writes_refused = 0
        self.reads_refused = 0
        self.backups_dropped = 0
        self.rolled_back = 0  # log entries discarded when a node adopted a newer primary's log
        self.acked: set[Any] = set()  # values of writes acknowledged ok to a client
        self.lost: set[Any] = set()  # ... of which later rolled back
        self.split_brain_acks = 0
        self.primary: dict[str, bool] = dict.fromkeys(nodes, False)  # live and acting as primary
        self.max_primaries = 0
        self.split_brain_time = 0.0  # ms with two or more acting primaries
        self._since = 0.0

    def note_primaries(self, now: float) -> None:
        """Account the time spent with >= 2 acting primaries up to ``now``."""
        count = sum(self.primary.values())
        if count >= 2:
            self.split_brain_time += now - self._since
        self._since = now
        self.max_primaries = max(self.max_primaries, count)

    def set_primary(self, node: str, acting: bool, now: float) -> None:
        self.note_primaries(now)
        self.primary[node] = acting
        self.note_primaries(now)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent by every node to every other node: liveness, view and log length."""

    view: int
    length: int
    synced: bool


@dataclass(frozen=True, slots=True)
class Replicate:
    """Log entry number ``index`` (1-based) of the primary of ``view``."""

    view: int
    index: int
    entry: tuple[Any, Any, int]


@dataclass(frozen=True, slots=True)
class Ack:
    """A backup's log length in ``view`` (cumulative)."""

    view: int
    length: int


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A backup asks the primary for log entries from ``length`` (or all, when not synced)."""

    view: int
    length: int
    synced: bool


@dataclass(frozen=True, slots=True)
class Sync:
    """Log entries ``start..`` of the primary of ``view``; ``start == 0``: the whole log."""

    view: int
    start: int
    entries: tuple[tuple[Any, Any, int], ...]


class PrimaryBackupNode(ProxyNode):
    def __init__(self, world, name: str, cfg: PrimaryBackupConfig, stats: PrimaryBackupStats) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.stats = stats
        self.nodes = world.scenario.nodes
        self.peers = tuple(n for n in self.nodes if n != name)
        self.fixed = cfg.primary_node or self.nodes[0]
        self.sync = cfg.replication == "sync"
        self.refuse = cfg.on_backup_unreachable == "refuse"
        self.forward_ttl = cfg.forward_ttl

    # -- state -------------------------------------------------------------------
    def boot(self) -> None:
        super().boot()
        d = self.disk
        first_view = 0 if self.cfg.primary == "fixed" else self.nodes.index(self.fixed)
        d.setdefault("view", first_view)
        d.setdefault("log", [])
        d.setdefault("synced", True)  # every log starts as the (empty) primary's prefix
        self.data: dict[Any, Any] = d.setdefault("data", {})
        self.log: list[tuple[Any, Any, int]] = d["log"]
        self.last_heard = dict.fromkeys(self.peers, self.monotonic())  # a grace period after boot
        self.last_sync_request = -float("inf")
        self.start_view()
        self.set_timer(self.cfg.heartbeat_interval, self.tick)

    @property
    def view(self) -> int:
        return self.disk["view"]

    @property
    def synced(self) -> bool:
        return self.disk["synced"]

    def primary_of(self, view: int) -> str:
        return self.fixed if self.cfg.primary == "fixed" else self.nodes[view % len(self.nodes)]

    @property
    def server(self) -> str:  # type: ignore[override]  # ProxyNode's attribute, computed here from the view
        return self.primary_of(self.view)

    def start_view(self) -> None:
        """(Re)build the volatile role state for the current view."""
        self.pending: dict[int, tuple[Any, ClientRequest]] = {}  # log index -> (reply, request)
        self.acked = dict.fromkeys(self.peers, 0)
        if self.refuse or not self.sync:
            self.sync_set = self.peers
        else:  # degrade: the backups heard from lately
            self.sync_set = tuple(p for p in self.peers if self.reachable(p, self.cfg.backup_timeout))
        self.stats.set_primary(self.name, self.serves(), self.now)

    def on_crash(self) -> None:
        self.stats.set_primary(self.name, False, self.now)

    def reachable(self, peer: str, within: float) -> bool:
        return self.monotonic() - self.last_heard[peer] <= within

    def see_view(self, view: int) -> None:
        """Adopt a higher view: become its primary's backup and ask for its whole log."""
        if view <= self.view:
            return
        if self.serves():
            self.stats.stepdowns += 1
        self.disk["view"] = view
        self.disk["synced"] = False
        self.stats.max_view = max(self.stats.max_view, view)
        self.start_view()  # pending client writes are dropped: those clients time out
        self.request_sync(force=True)

    # -- timers ------------------------------------------------------------------
    def tick(self) -> None:
        self.set_timer(self.cfg.heartbeat_interval, self.tick)
        beat = Heartbeat(self.view, len(self.log), self.synced)
        # an elected cluster needs everyone's liveness (who takes over?); a fixed one only
        # the primary's (backups) and the backups' (primary)
        everyone = self.cfg.primary == "elected" or self.serves()
        for peer in self.peers if everyone else (self.server,):
            self.send(peer, beat)
        if self.serves():
            if self.sync and not self.refuse:
                self.drop_silent_backups()
        elif self.cfg.primary == "elected" and not self.reachable(self.server, self.cfg.failover_timeout):
            self.maybe_take_over()

    def drop_silent_backups(self) -> None:
        keep = tuple(p for p in self.sync_set if self.reachable(p, self.cfg.backup_timeout))
        if keep != self.sync_set:
            self.stats.backups_dropped += len(self.sync_set) - len(keep)
            self.sync_set = keep
            self.commit()

    def maybe_take_over(self) -> None:
        """The first node after the silent primary that this node still hears from takes over."""
        n = len(self.nodes)
        start = self.nodes.index(self.server)
        for step in range(1, n):
            candidate = self.nodes[(start + step) % n]
            if candidate == self.name:
                break
            if self.reachable(candidate, self.cfg.failover_timeout):
                return  # that node should take over, not this one
        view = self.view + 1
        while self.primary_of(view) != self.name:
            view += 1
        self.disk["view"] = view
        self.disk["synced"] = True  # the new primary's log is the view's log by definition
        self.stats.failovers += 1
        self.stats.max_view = max(self.stats.max_view, view)
        self.start_view()

    # -- client operations (ProxyNode calls serve() on the primary) --------------
    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        if not self.serves() and not self.reachable(self.server, self.cfg.failover_timeout):
            self.refused(msg, lambda r, to=src: self.send(to, r), f"no reachable primary ({self.server} is silent)")
            return
        super().handle_ClientRequest(msg, src)

    def handle_Forwarded(self, msg: Forwarded, src: str) -> None:
        self.last_heard[src] = self.monotonic()

        def reply(r: ClientReply, to: str = src) -> None:
            self.send(to, ForwardedReply(r))

        if self.serves():
            self.serve(msg.request, reply)
        else:
            self.refused(msg.request, reply, f"not the primary (view {self.view}: {self.server})")

    def refused(self, request: ClientRequest, reply: Any, why: str) -> None:
        if request.op != "read":
            self.stats.writes_refused += 1
        else:
            self.stats.reads_refused += 1
        reply(ClientReply(request.op_id, False, error=why))

    def serve(self, request: ClientRequest, reply: Any) -> None:
        if request.op == "cas":
            expected, new = request.value
            current = self.data.get(request.key)
            if current != expected:
                reply(ClientReply(request.op_id, False, current, CAS_MISMATCH))
                return
            request = ClientRequest(request.op_id, "write", request.key, new)
        if request.op != "write":
            reply(ClientReply(request.op_id, True, self.data.get(request.key)))
            return
        if self.sync and self.refuse:
            for peer in self.peers:
                if not self.reachable(peer, self.cfg.backup_timeout):
                    self.refused(request, reply, f"backup {peer} unreachable")
                    return
        entry = (request.key, request.value, self.view)
        self.log.append(entry)
        self.data[request.key] = request.value
        index = len(self.log)
        for peer in self.peers:
            self.send(peer, Replicate(self.view, index, entry))
        if self.sync:
            self.pending[index] = (reply, request)
            self.commit()
        else:
            self.acknowledge(reply, request)

    def commit(self) -> None:
        """Acknowledge the waiting writes that every backup in the sync set now holds."""
        done = min((self.acked[p] for p in self.sync_set), default=len(self.log))
        while self.pending:
            index = next(iter(self.pending))  # the oldest (indices were inserted in order)
            if index > done:
                break
            self.acknowledge(*self.pending.pop(index))

    def acknowledge(self, reply: Any, request: ClientRequest) -> None:
        self.stats.acked.add(request.value)
        if self.view < self.stats.max_view:
            self.stats.split_brain_acks += 1
        reply(ClientReply(request.op_id, True))

    # -- replication ---------------------------------------------------------------
    def handle_Heartbeat(self, msg: Heartbeat, src: str) -> None:
        self.last_heard[src] = self.monotonic()
        self.see_view(msg.view)
        if msg.view != self.view:
            return
        if self.serves():
            if msg.synced:
                self.note_ack(src, msg.length)
        elif src == self.server and (not self.synced or msg.length > len(self.log)):
            self.request_sync()

    def handle_Replicate(self, msg: Replicate, src: str) -> None:
        self.last_heard[src] = self.monotonic()
        self.see_view(msg.view)
        if msg.view != self.view or self.serves() or not self.synced:
            return
        have = len(self.log)
        if msg.index == have + 1:
            self.append(msg.entry)
        elif msg.index > have + 1:
            self.request_sync()  # an earlier entry was lost or is late
            return
        self.send(src, Ack(self.view, len(self.log)))

    def handle_Ack(self, msg: Ack, src: str) -> None:
        self.last_heard[src] = self.monotonic()
        self.see_view(msg.view)
        if msg.view == self.view and self.serves():
            self.note_ack(src, msg.length)

    def note_ack(self, peer: str, length: int) -> None:
        if length > self.acked[peer]:
            self.acked[peer] = length
        if self.sync and not self.refuse and peer not in self.sync_set and self.acked[peer] == len(self.log):
            self.sync_set = tuple(p for p in self.peers if p in self.sync_set or p == peer)  # caught up: back in
        self.commit()

    def request_sync(self, force: bool = False) -> None:
        """Ask the primary for what this node misses (at most once per heartbeat interval)."""
        if force or self.monotonic() - self.last_sync_request >= self.cfg.heartbeat_interval:
            self.last_sync_request = self.monotonic()
            self.send(self.server, SyncRequest(self.view, len(self.log), self.synced))

    def handle_SyncRequest(self, msg: SyncRequest, src: str) -> None:
        self.last_heard[src] = self.monotonic()
        self.see_view(msg.view)
        if not self.serves():
            return
        if msg.view < self.view or not msg.synced:
            self.send(src, Sync(self.view, 0, tuple(self.log)))
        else:
            self.send(src, Sync(self.view, msg.length, tuple(self.log[msg.length:])))

    def handle_Sync(self, msg: Sync, src: str) -> None:
        self.last_heard[src] = self.monotonic()
        self.see_view(msg.view)
        if msg.view != self.view or self.serves():
            return
        if not self.synced:
            if msg.start != 0:
                return  # a reply to an older request; the full log is on its way
            self.install(msg.entries)
        else:  # our log is a prefix of the primary's: append what is new
            for i, entry in enumerate(msg.entries, start=msg.start):
                if i == len(self.log):
                    self.append(entry)
        self.send(src, Ack(self.view, len(self.log)))

    def append(self, entry: tuple[Any, Any, int]) -> None:
        self.log.append(entry)
        self.data[entry[0]] = entry[1]

    def install(self, entries: tuple[tuple[Any, Any, int], ...]) -> None:
        """Replace the log with the primary's, rolling back everything after the common prefix."""
        log = self.log
        common = 0
        while common < len(log) and common < len(entries) and log[common] == entries[common]:
            common += 1
        rolled = log[common:]
        if rolled:
            kept = {e[1] for e in entries[common:]}
            for _key, value, _view in rolled:
                if value not in kept:
                    self.stats.rolled_back += 1
                    if value in self.stats.acked:
                        self.stats.lost.add(value)
        del log[common:]
        log.extend(entries[common:])
        self.data.clear()
        for key, value, _view in log:
            self.data[key] = value
        self.disk["synced"] = True

    def replica_state(self) -> dict[Any, Any]:
        return dict(self.data)

    def replica_versions(self, keys: Sequence[Any]) -> dict[Any, tuple[Mapping[Any, Any], ...]]:
        """The log prefix behind each value, counted per view (one primary per view): replicas
        on the two sides of a split brain hold conflicting versions, a backup behind lags."""
        versions = log_versions((view, key) for key, _value, view in self.log)
        return {key: (versions[key],) for key in keys if key in versions}
