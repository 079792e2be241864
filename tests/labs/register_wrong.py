"""Lab 1 known-wrong solutions: each breaks one thing the reference gets right."""

from __future__ import annotations

from register_reference import RegisterNode as Reference
from register_reference import Store


class NoMajority(Reference):
    """Answers from the local copy and replicates in the background: fast, available, not linearizable."""

    def handle_ClientRequest(self, msg, src):
        version, value = self.store.get(msg.key, ((0, ()), None))
        if msg.op == "read":
            self.reply(src, msg.op_id, True, value)
            return
        version = (version[0] + 1, (self.name, self.epoch, msg.op_id))
        self.store[msg.key] = (version, msg.value)
        for peer in self.peers:
            self.send(peer, Store(("bg", self.name, msg.op_id), msg.key, version, msg.value))
        self.reply(src, msg.op_id, True)

    def handle_StoreAck(self, msg, src):
        if msg.rid[0] != "bg":
            super().handle_StoreAck(msg, src)


class NoWriteBack(Reference):
    """Reads return the newest version a majority reported without writing it back first."""

    def handle_QueryReply(self, msg, src):
        op = self.ops.get(msg.rid)
        if op is not None and op["phase"] == "query" and op["req"].op == "read":
            op["replies"][src] = (msg.version, msg.value)
            if len(op["replies"]) >= self.majority:
                del self.ops[msg.rid]
                value = max(op["replies"].values(), key=lambda vv: vv[0])[1]
                self.reply(op["client"], op["req"].op_id, True, value)
            return
        super().handle_QueryReply(msg, src)


class WaitForAll(Reference):
    """Waits for every replica instead of a majority: linearizable, but stalls in any partition."""

    def boot(self):
        super().boot()
        self.majority = len(self.nodes)
