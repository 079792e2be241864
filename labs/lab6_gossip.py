"""Lab 6: an eventually consistent key-value store with anti-entropy and version vectors.

Five nodes (n1..n5) each hold a full replica of a few keys. A client next to
each node sends it Get(op_id, key) and Put(op_id, key, value, context),
resends an unanswered one every 100 ms and gives up after 300 ms. Every node answers its clients alone, so both
sides of a partition stay available; replicas repair each other by gossip.

A Get returns every sibling's value and an opaque causal context; a Put
carries the context of the read it is based on (None: a blind write) and
replaces exactly the values that read returned. Concurrent writes must survive
side by side as siblings. The statement, the tests and the API are in
labs/README.md (section "Lab 6"); grade with

    capsim lab grade lab6 lab6_gossip.py

Hints: give every write its own dot, (this node, a counter that never goes
back), and keep with it the context the client sent. A sibling is obsolete
when another sibling's context covers its dot. A read's context is what all of
its siblings know: their contexts and their dots. Merging two replicas is a
union followed by that rule, so it does not matter in which order, or how
many times, states meet. Anti-entropy: every self.gossip_interval ms, swap
state with self.pick_peers() (send yours, get theirs back). The network loses,
duplicates and reorders messages; nodes crash and keep only self.disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.labs.gossip import Get, GossipBase, Put

# Suggested data and messages: small frozen dataclasses. Rename, change, add as you need.


@dataclass(frozen=True, order=True)
class Sibling:
    """One concurrent version of a key: who made it (dot), what its writer had seen (context), the value."""

    dot: tuple            # (node, counter)
    context: tuple        # a version vector: ((node, counter), ...)
    value: int


@dataclass(frozen=True)
class Gossip:
    """Anti-entropy: the sender's siblings for some keys; `answer`: send yours back if they differ."""

    state: tuple          # ((key, (Sibling, ...)), ...)
    answer: bool


class GossipNode(GossipBase):
    """One replica. Available: self.name, self.nodes, self.peers, self.disk, self.gossip_interval,
    self.fanout, self.pick_peers(), self.rng, self.send(dst, msg), self.set_timer(ms, fn, *args),
    self.reply_get(client, op_id, values, context), self.reply_put(client, op_id), self.now.
    """

    def boot(self):
        # Runs at start and after every recovery. self.disk survives crashes; nothing else does,
        # timers included. What else must survive a crash?
        self.store: dict[int, tuple[Sibling, ...]] = self.disk.setdefault("store", {})
        # TODO: start the anti-entropy timer (self.set_timer(ms, self.gossip)).

    def handle_Get(self, msg: Get, src: str):
        # TODO: self.reply_get(src, msg.op_id, <every sibling's value>, <the context a Put will pass back>)
        raise NotImplementedError("TODO: handle_Get")

    def handle_Put(self, msg: Put, src: str):
        # TODO: add the write as a new sibling (msg.context is None for a blind write), drop the siblings
        # it replaces, acknowledge with self.reply_put(src, msg.op_id), and tell the peers.
        # Clients resend and the network duplicates: the same Put may arrive twice; it is one write.
        raise NotImplementedError("TODO: handle_Put")

    def gossip(self):
        # TODO: send this node's state to self.pick_peers(), then set the timer again.
        raise NotImplementedError("TODO: gossip")

    def handle_Gossip(self, msg: Gossip, src: str):
        # TODO: merge what the peer sent (never just replace your siblings with theirs), and if
        # msg.answer and you hold something it lacks, send yours back.
        raise NotImplementedError("TODO: handle_Gossip")

    def replica_state(self) -> dict[Any, Any]:
        # What a read here returns, per key (capsim compares replicas with it): keep it in step with handle_Get.
        return {key: frozenset(s.value for s in siblings) for key, siblings in self.store.items() if siblings}
