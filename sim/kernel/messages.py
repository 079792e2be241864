"""Messages between clients and nodes (protocols define their own internal ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ClientRequest", "ClientReply"]


@dataclass(frozen=True, slots=True, repr=False)
class ClientRequest:
    """A client operation: ``op`` is ``"read"`` or ``"write"``; ``value`` is what a write writes.

    ``op_id`` is unique in the run and increases with every request a client
    sends, so a node can drop a duplicated request (the network may duplicate
    messages) by remembering the highest id it took from each client. A client
    that retries sends each attempt with a new ``op_id``; with idempotency keys
    every attempt also carries ``idempotency_key`` (the first attempt's id),
    which a server that honours keys answers from its duplicate table.
    """

    op_id: int
    op: str
    key: int
    value: Any = None
    idempotency_key: int | None = None

    def __repr__(self) -> str:
        key = "" if self.idempotency_key is None else f", idempotency_key={self.idempotency_key!r}"
        return f"ClientRequest(op_id={self.op_id!r}, op={self.op!r}, key={self.key!r}, value={self.value!r}{key})"


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The answer to a :class:`ClientRequest`.

    ``ok=True``: the operation happened (``value`` is what a read returned).
    ``ok=False``: it definitely did not happen; ``error`` says why.
    """

    op_id: int
    ok: bool
    value: Any = None
    error: str | None = None
