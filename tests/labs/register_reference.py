"""Lab 1 reference solution: an ABD majority register (kept out of the student material).

Writes and reads run two phases against a majority: query the versions, then
store (a write stores a new, higher version; a read writes back the newest
version it saw before answering). Versions are (counter, node name). Requests
are retransmitted every 60 ms to replicas that have not answered, so lost
messages delay an operation instead of failing it; duplicated client requests
are recognised by (client, op id): the network may reorder, so not by the highest id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.labs.register import ClientRequest, RegisterBase

RESEND_MS = 60.0


@dataclass(frozen=True)
class Query:
    rid: tuple
    key: int


@dataclass(frozen=True)
class QueryReply:
    rid: tuple
    version: tuple
    value: Any


@dataclass(frozen=True)
class Store:
    rid: tuple
    key: int
    version: tuple
    value: Any


@dataclass(frozen=True)
class StoreAck:
    rid: tuple


class RegisterNode(RegisterBase):
    def boot(self):
        self.store = self.disk.setdefault("store", {})       # key -> (version, value)
        self.seen = self.disk.setdefault("seen", set())      # (client, op_id) of requests taken
        self.ops = {}                                        # rid -> the operation in progress
        self.next_rid = 0

    # -- replica side ----------------------------------------------------------------------
    def handle_Query(self, msg, src):
        version, value = self.store.get(msg.key, ((0, ()), None))
        self.send(src, QueryReply(msg.rid, version, value))

    def handle_Store(self, msg, src):
        if msg.version > self.store.get(msg.key, ((0, ()), None))[0]:
            self.store[msg.key] = (msg.version, msg.value)
        self.send(src, StoreAck(msg.rid))

    # -- coordinator side ----------------------------------------------------------------------
    def handle_ClientRequest(self, msg: ClientRequest, src):
        if (src, msg.op_id) in self.seen:
            return                                           # a duplicate of a request already taken
        self.seen.add((src, msg.op_id))
        self.next_rid += 1
        rid = (self.name, self.epoch, self.next_rid)
        self.ops[rid] = {"client": src, "req": msg, "phase": "query", "replies": {}, "acks": set()}
        self._broadcast(rid)

    def _message(self, rid):
        op = self.ops[rid]
        if op["phase"] == "query":
            return Query(rid, op["req"].key)
        return Store(rid, op["req"].key, op["version"], op["value"])

    def _broadcast(self, rid):
        op = self.ops.get(rid)
        if op is None:
            return
        answered = op["replies"] if op["phase"] == "query" else op["acks"]
        msg = self._message(rid)
        for node in self.nodes:
            if node not in answered:
                self.send(node, msg)
        self.set_timer(RESEND_MS, self._resend, rid, op["phase"])

    def _resend(self, rid, phase):
        op = self.ops.get(rid)
        if op is not None and op["phase"] == phase:
            self._broadcast(rid)

    def handle_QueryReply(self, msg, src):
        op = self.ops.get(msg.rid)
        if op is None or op["phase"] != "query":
            return
        op["replies"][src] = (msg.version, msg.value)
        if len(op["replies"]) < self.majority:
            return
        version, value = max(op["replies"].values(), key=lambda vv: vv[0])
        req = op["req"]
        if req.op == "write":
            version, value = (version[0] + 1, msg.rid), req.value     # rid: unique even for concurrent writes here
        op.update(phase="store", version=version, value=value)
        self._broadcast(msg.rid)

    def handle_StoreAck(self, msg, src):
        op = self.ops.get(msg.rid)
        if op is None or op["phase"] != "store":
            return
        op["acks"].add(src)
        if len(op["acks"]) >= self.majority:
            del self.ops[msg.rid]
            req = op["req"]
            self.reply(op["client"], req.op_id, True, op["value"] if req.op == "read" else None)
