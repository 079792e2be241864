"""Messages between clients and nodes (protocols define their own internal ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ClientRequest", "ClientReply", "CAS_MISMATCH"]

#: ``ClientReply.error`` of a compare-and-set whose key did not hold the expected value
#: (Maelstrom's error 22, "precondition failed"): the operation definitely had no effect,
#: and it observed a value other than the expected one.
CAS_MISMATCH = "precondition failed"


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client operation: ``op`` is ``"read"``, ``"write"`` or ``"cas"``.

    ``value`` is what a write writes; for a compare-and-set it is the pair
    ``(expected, new)``: set the key to ``new`` if it holds ``expected`` (``None``
    matches a key never written), else change nothing and answer
    ``ok=False, error=CAS_MISMATCH``.

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

    ``ok=True``: the operation happened (``value`` is what a read returned; a
    compare-and-set with ``ok=True`` was applied).
    ``ok=False``: it definitely did not happen; ``error`` says why
    (:data:`CAS_MISMATCH` for a compare-and-set that found another value).
    """

    op_id: int
    ok: bool
    value: Any = None
    error: str | None = None
