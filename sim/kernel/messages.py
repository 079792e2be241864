"""Messages between clients and nodes (protocols define their own internal ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ClientRequest", "ClientReply", "CAS_MISMATCH"]

#: ``ClientReply.error`` of a compare-and-set whose key did not hold the expected value
#: (Maelstrom's error 22, "precondition failed"): the operation definitely had no effect,
#: and it observed a value other than the expected one.
CAS_MISMATCH = "precondition failed"


@dataclass(frozen=True, slots=True, repr=False)
class ClientRequest:
    """A client operation: ``op`` is ``"read"``, ``"write"`` or ``"cas"``.

    ``value`` is what a write writes; for a compare-and-set it is the pair
    ``(expected, new)``: set the key to ``new`` if it holds ``expected`` (``None``
    matches a key never written), else change nothing and answer
    ``ok=False, error=CAS_MISMATCH``.

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

    ``ok=True``: the operation happened (``value`` is what a read returned; a
    compare-and-set with ``ok=True`` was applied).
    ``ok=False``: it definitely did not happen; ``error`` says why
    (:data:`CAS_MISMATCH` for a compare-and-set that found another value).
    """

    op_id: int
    ok: bool
    value: Any = None
    error: str | None = None
