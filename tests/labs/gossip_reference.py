"""Lab 6 reference solution: dotted version vectors and push-pull anti-entropy (kept out of the student material).

A key holds a tuple of siblings ``(dot, context, value)``. The dot is a fresh
``(node, counter)`` from the coordinating node's durable counter, so every
write, blind or not, has its own; the context is the version vector the client
passed (what its read had seen). A sibling is obsolete when another sibling's
context covers its dot: exactly the values the client read and replaced. A
read returns the values and the join of the siblings' contexts and dots.

Writes are accepted locally (available under partitions), pushed to every
peer once, and repaired by anti-entropy: every ``gossip_interval`` each node
sends its whole state to ``fanout`` random peers, which merge it and send back
theirs when it differs (push-pull). A key's siblings always travel together,
so a node that knows a dot of a node also knows (or knows the replacement of)
that node's earlier dots on the key, which is what lets a vector summarise them.
Put requests are de-duplicated by (client, op id), durably: a duplicate that
arrived after its value was overwritten would otherwise bring it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.labs.gossip import Get, GossipBase, Put

Dot = tuple[str, int]
VV = tuple[tuple[str, int], ...]


@dataclass(frozen=True, order=True)
class Sibling:
    dot: Dot
    context: VV
    value: int


@dataclass(frozen=True)
class Gossip:
    """A node's state for some keys; ``answer``: send yours back if it differs (push-pull)."""

    state: tuple[tuple[int, tuple[Sibling, ...]], ...]
    answer: bool


def covers(context: VV, dot: Dot) -> bool:
    return dict(context).get(dot[0], 0) >= dot[1]


def join(*vectors: VV) -> VV:
    out: dict[str, int] = {}
    for vv in vectors:
        for node, n in vv:
            out[node] = max(out.get(node, 0), n)
    return tuple(sorted(out.items()))


class GossipNode(GossipBase):
    def boot(self):
        self.store = self.disk.setdefault("store", {})          # key -> tuple of Siblings, sorted
        self.disk.setdefault("counter", 0)                       # dots this node issued, ever
        self.taken = self.disk.setdefault("taken", set())        # (client, op_id) of Puts applied
        self.set_timer(float(self.rng.uniform(0, self.gossip_interval)), self.gossip)

    # -- clients ---------------------------------------------------------------------------
    def handle_Get(self, msg: Get, src):
        siblings = self.store.get(msg.key, ())
        self.reply_get(src, msg.op_id, [s.value for s in siblings], self.context(siblings))

    def handle_Put(self, msg: Put, src):
        if (src, msg.op_id) not in self.taken:
            self.taken.add((src, msg.op_id))
            self.store[msg.key] = self.merge(self.store.get(msg.key, ()), (self.new_sibling(msg),))
            for peer in self.peers:
                self.send(peer, Gossip(((msg.key, self.store[msg.key]),), answer=False))
        self.reply_put(src, msg.op_id)

    def new_sibling(self, msg: Put) -> Sibling:
        self.disk["counter"] += 1
        return Sibling((self.name, self.disk["counter"]), tuple(msg.context or ()), msg.value)

    def context(self, siblings) -> VV:
        return join(*(s.context for s in siblings), *(((s.dot[0], s.dot[1]),) for s in siblings))

    # -- merging ---------------------------------------------------------------------------
    def merge(self, mine, theirs):
        pool = {s.dot: s for s in (*mine, *theirs)}
        keep = [s for s in pool.values() if not any(o is not s and covers(o.context, s.dot) for o in pool.values())]
        return tuple(sorted(keep))

    def absorb(self, state) -> None:
        for key, siblings in state:
            self.store[key] = self.merge(self.store.get(key, ()), siblings)

    # -- anti-entropy ----------------------------------------------------------------------
    def gossip(self):
        self.set_timer(self.gossip_interval, self.gossip)
        state = tuple(sorted(self.store.items()))
        for peer in self.pick_peers():
            self.send(peer, Gossip(state, answer=True))

    def handle_Gossip(self, msg: Gossip, src):
        self.absorb(msg.state)
        if msg.answer:
            theirs = dict(msg.state)
            differ = tuple((k, s) for k, s in sorted(self.store.items()) if theirs.get(k) != s)
            if differ:
                self.send(src, Gossip(differ, answer=False))

    def replica_state(self):
        return {key: frozenset(s.value for s in siblings) for key, siblings in self.store.items() if siblings}


class AntiEntropyOnly(GossipNode):
    """The same store without the push at write time: anti-entropy alone must converge in time too."""

    def handle_Put(self, msg: Put, src):
        if (src, msg.op_id) not in self.taken:
            self.taken.add((src, msg.op_id))
            self.store[msg.key] = self.merge(self.store.get(msg.key, ()), (self.new_sibling(msg),))
        self.reply_put(src, msg.op_id)
