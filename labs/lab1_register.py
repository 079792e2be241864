"""Lab 1: a replicated register that stays linearizable under partitions and crashes.

Five nodes (n1..n5) each keep a copy of a register. A client sends
ClientRequest(op_id, op, key, value) with op "read" or "write" to the node next
to it and waits 400 ms for a ClientReply. Make every history linearizable, and
keep the majority side of a partition available. The statement, the tests and
the API are in labs/README.md (section "Lab 1"); grade with

    capsim lab grade lab1 lab1_register.py

Hints: a node can wait for a majority (self.majority) of answers instead of all
of them; any two majorities share a node. Under partitions and loss a reply may
never come: resend on a timer. What must survive a crash goes in self.disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.labs.register import ClientRequest, RegisterBase

# Messages between nodes: small frozen dataclasses. Rename, change, add as you need.


@dataclass(frozen=True)
class Query:
    """Coordinator -> replica: what do you hold for `key`?"""

    rid: tuple
    key: int


@dataclass(frozen=True)
class QueryReply:
    rid: tuple
    version: tuple
    value: Any


@dataclass(frozen=True)
class Store:
    """Coordinator -> replica: keep `value` for `key` if `version` is newer than yours."""

    rid: tuple
    key: int
    version: tuple
    value: Any


@dataclass(frozen=True)
class StoreAck:
    rid: tuple


class RegisterNode(RegisterBase):
    """One replica, and the coordinator of the requests its clients send it.

    Available: self.name, self.nodes, self.peers, self.majority, self.disk,
    self.epoch (changes at each crash and recovery), self.send(dst, msg),
    self.set_timer(ms, fn, *args), self.reply(client, op_id, ok, value), self.now.
    """

    def boot(self):
        # Runs at start and after every recovery. self.disk survives crashes; nothing else does.
        self.store = self.disk.setdefault("store", {})   # key -> (version, value)
        self.ops = {}                                     # requests this node coordinates

    def handle_ClientRequest(self, msg: ClientRequest, src: str):
        # TODO: coordinate a read or a write with a majority of replicas, then self.reply(src, msg.op_id, ...).
        # The network may duplicate a request: do not run the same op_id twice.
        raise NotImplementedError("TODO: handle_ClientRequest")

    def handle_Query(self, msg: Query, src: str):
        # TODO: answer with what this replica holds.
        raise NotImplementedError("TODO: handle_Query")

    def handle_QueryReply(self, msg: QueryReply, src: str):
        # TODO: once a majority answered, choose the version to store (a write: a new, higher one;
        # a read: the newest seen, written back before the client gets it).
        raise NotImplementedError("TODO: handle_QueryReply")

    def handle_Store(self, msg: Store, src: str):
        # TODO: keep the value if its version is newer, and acknowledge.
        raise NotImplementedError("TODO: handle_Store")

    def handle_StoreAck(self, msg: StoreAck, src: str):
        # TODO: once a majority acknowledged, answer the client.
        raise NotImplementedError("TODO: handle_StoreAck")
