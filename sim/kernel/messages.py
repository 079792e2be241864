"""Messages between clients and nodes (protocols define their own internal ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ClientRequest", "ClientReply"]


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client operation: ``op`` is ``"read"`` or ``"write"``; ``value`` is what a write writes.

    ``op_id`` is unique in the run and increases with every operation a client
    issues, so a node can drop a duplicated request (the network may duplicate
    messages) by remembering the highest id it took from each client.
    """

    op_id: int
    op: str
    key: int
    value: Any = None


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
