"""Forwarding a client's request to the node that serves it, and relaying the answer."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Host, Node

__all__ = ["Forwarded", "ForwardedReply", "ForwardTable", "ProxyNode", "client_timeout"]


def client_timeout(world: Host) -> float:
    """The scenario's client timeout (``inf`` when it has no clients or they never time out)."""
    workload = getattr(world.scenario, "workload", None)
    return float(getattr(workload, "timeout", math.inf))


class ForwardTable:
    """The client behind each request a node forwarded, forgotten ``ttl`` ms after it was forwarded.

    A reply that comes back later finds no client and is dropped: by then the
    client has timed out (with the default ``ttl``, its own timeout) and would
    ignore it. Without expiry a node whose forwarded requests lose their replies
    (a crashed server, a partition, a lossy link) would remember them forever.
    Entries leave in the order they came (one deque, checked on every use), so
    the table holds at most the requests of the last ``ttl`` ms. Volatile:
    :meth:`clear` at boot; the ``expired`` count survives.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.expired = 0
        self._client: dict[int, tuple[str, float]] = {}
        self._queue: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        return len(self._client)

    def __contains__(self, op_id: int) -> bool:
        return op_id in self._client

    def clear(self) -> None:
        self._client.clear()
        self._queue.clear()

    def add(self, op_id: int, client: str, now: float) -> None:
        self.expire(now)
        deadline = now + self.ttl
        self._client[op_id] = (client, deadline)
        if math.isfinite(deadline):
            self._queue.append((deadline, op_id))

    def pop(self, op_id: int, now: float) -> str | None:
        """The client that asked for ``op_id`` (forgetting it), or None if unknown or expired."""
        self.expire(now)
        entry = self._client.pop(op_id, None)
        return None if entry is None else entry[0]

    def expire(self, now: float) -> None:
        queue, table = self._queue, self._client
        while queue and queue[0][0] <= now:
            deadline, op_id = queue.popleft()
            entry = table.get(op_id)
            if entry is not None and entry[1] == deadline:
                del table[op_id]
                self.expired += 1


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
    in ``waiting`` (a :class:`ForwardTable`; volatile: a crash forgets it, and the
    client times out) for ``forward_ttl`` ms, by default the client timeout.
    """

    server: str
    forward: bool = True
    forward_ttl: float | None = None

    def boot(self) -> None:
        ttl = self.forward_ttl if self.forward_ttl is not None else client_timeout(self.world)
        waiting = getattr(self, "waiting", None)
        if isinstance(waiting, ForwardTable) and waiting.ttl == ttl:
            waiting.clear()  # keeps its count of expired entries across crashes
        else:
            self.waiting = ForwardTable(ttl)

    def serves(self) -> bool:
        return self.name == self.server

    def serve(self, request: ClientRequest, reply: Any) -> None:
        raise NotImplementedError

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        if self.serves():
            self.serve(msg, lambda r, to=src: self.send(to, r))
        elif self.forward:
            self.waiting.add(msg.op_id, src, self.now)
            self.send(self.server, Forwarded(msg))
        else:
            self.send(src, ClientReply(msg.op_id, False, error=f"not served here; ask {self.server}"))

    def handle_Forwarded(self, msg: Forwarded, src: str) -> None:
        self.serve(msg.request, lambda r, to=src: self.send(to, ForwardedReply(r)))

    def handle_ForwardedReply(self, msg: ForwardedReply, src: str) -> None:
        client = self.waiting.pop(msg.reply.op_id, self.now)
        if client is not None:
            self.send(client, msg.reply)
