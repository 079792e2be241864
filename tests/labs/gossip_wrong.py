"""Lab 6 known-wrong solutions: each breaks one thing the reference gets right."""

from __future__ import annotations

from dataclasses import dataclass

from gossip_reference import Gossip, GossipNode, Sibling, join


class LastWriterWins(GossipNode):
    """Keeps one value per key, the one with the highest (local clock, node) stamp: of two
    concurrent writes one silently disappears (and a clock running ahead beats later writes)."""

    def new_sibling(self, msg):
        return Sibling((self.clock(), self.name), (), msg.value)     # the stamp in place of a dot

    def context(self, siblings):
        return ()

    def merge(self, mine, theirs):
        everything = (*mine, *theirs)
        return (max(everything),) if everything else ()


class NoAntiEntropy(GossipNode):
    """Pushes each write to the peers once and never repairs: a replica that missed a push
    (partitioned, crashed, message lost) never gets it."""

    def gossip(self):
        pass


class OverwriteOnGossip(GossipNode):
    """Takes a peer's siblings in place of its own whenever they differ, instead of merging them."""

    def absorb(self, state):
        for key, siblings in state:
            self.store[key] = tuple(siblings)


class ServerVersionVectors(GossipNode):
    """Classic version vectors without dots: a write's vector is its context with the node's own
    entry set to its next counter, and a sibling goes when another's vector dominates it. Two blind
    writes at one node then look ordered, and the first is dropped."""

    def new_sibling(self, msg):
        sibling = super().new_sibling(msg)
        return Sibling(sibling.dot, join(sibling.context, (sibling.dot,)), sibling.value)

    def merge(self, mine, theirs):
        pool = {s.dot: s for s in (*mine, *theirs)}
        keep = [s for s in pool.values()
                if not any(o is not s and _dominates(o.context, s.context) for o in pool.values())]
        return tuple(sorted(keep))


def _dominates(a, b):
    da = dict(a)
    return a != b and all(da.get(node, 0) >= n for node, n in b)


class VolatileCounter(GossipNode):
    """Keeps the dot counter in memory: after a crash the node hands out dots it already used,
    which the others take for writes they have seen (or replaced) and drop."""

    def boot(self):
        super().boot()
        self.counter = 0

    def new_sibling(self, msg):
        self.counter += 1
        return Sibling((self.name, self.counter), tuple(msg.context or ()), msg.value)


class KeepEverything(GossipNode):
    """Never drops a sibling: nothing is lost, but a value a client overwrote stays forever."""

    def merge(self, mine, theirs):
        return tuple(sorted({s.dot: s for s in (*mine, *theirs)}.values()))


@dataclass(frozen=True)
class Stored:
    rid: tuple


class MajorityAck(GossipNode):
    """Acknowledges a write only once two peers stored it (three copies): consistent-minded,
    but a node cut off with fewer than two peers leaves its clients waiting."""

    def boot(self):
        super().boot()
        self.waiting = {}

    def handle_Put(self, msg, src):
        if (src, msg.op_id) in self.taken:
            return
        self.taken.add((src, msg.op_id))
        self.store[msg.key] = self.merge(self.store.get(msg.key, ()), (self.new_sibling(msg),))
        rid = (src, msg.op_id)
        self.waiting[rid] = set()
        for peer in self.peers:
            self.send(peer, Gossip(((msg.key, self.store[msg.key]),), answer=False))
            self.send(peer, StoreRequest(rid, msg.key, self.store[msg.key]))

    def handle_StoreRequest(self, msg, src):
        self.absorb(((msg.key, msg.siblings),))
        self.send(src, Stored(msg.rid))

    def handle_Stored(self, msg, src):
        acks = self.waiting.get(msg.rid)
        if acks is None:
            return
        acks.add(src)
        if len(acks) >= 2:
            del self.waiting[msg.rid]
            self.reply_put(msg.rid[0], msg.rid[1])


@dataclass(frozen=True)
class StoreRequest:
    rid: tuple
    key: int
    siblings: tuple


class NodeWideContext(GossipNode):
    """Hands out one version vector for the whole node (everything it has seen, on any key) as a
    read's context: a Put then also replaces writes to that key the node has not received yet."""

    def handle_Get(self, msg, src):
        siblings = self.store.get(msg.key, ())
        everything = join(*(self.context(s) for s in self.store.values()))
        self.reply_get(src, msg.op_id, [s.value for s in siblings], everything)



class NoDedup(GossipNode):
    """Treats every Put delivered as a new write: a duplicated Put becomes a second sibling with the
    same value and a dot of its own, which the overwrite of the first copy does not cover."""

    def handle_Put(self, msg, src):
        self.taken.discard((src, msg.op_id))
        super().handle_Put(msg, src)
