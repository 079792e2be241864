"""Forwarding a client's request to the node that serves it, and relaying the answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Node

__all__ = ["Forwarded", "ForwardedReply", "ProxyNode"]


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A client request passed on by the node the client reached."""

    request: ClientRequest


@dataclass(frozen=True, slots=True)
class ForwardedReply:
    reply: ClientReply


class ProxyNode(Node):
    """A node that serves requests when :meth:`serves` says so and forwards them otherwise.

    Subclasses implement ``serve(request, reply_to)`` which must eventually call
    ``reply_to(ClientReply)``. The forwarding node remembers which client asked
    (volatile: a crash forgets it, and the client times out).
    """

    server: str
    forward: bool = True

    def boot(self) -> None:
        self.waiting: dict[int, str] = {}

    def serves(self) -> bool:
        return self.name == self.server

    def serve(self, request: ClientRequest, reply: Any) -> None:
        raise NotImplementedError

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        if self.serves():
            self.serve(msg, lambda r, to=src: self.send(to, r))
        elif self.forward:
            self.waiting[msg.op_id] = src
            self.send(self.server, Forwarded(msg))
        else:
            self.send(src, ClientReply(msg.op_id, False, error=f"not served here; ask {self.server}"))

    def handle_Forwarded(self, msg: Forwarded, src: str) -> None:
        self.serve(msg.request, lambda r, to=src: self.send(to, ForwardedReply(r)))

    def handle_ForwardedReply(self, msg: ForwardedReply, src: str) -> None:
        client = self.waiting.pop(msg.reply.op_id, None)
        if client is not None:
            self.send(client, msg.reply)
