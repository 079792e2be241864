"""The transfer workload of the commit protocols: one client operation, one money transfer.

Every client operation (read or write alike) sent to the coordinator becomes one
transfer; the client's ``key`` is the account. :class:`TransferWorkload` draws from the
``txn`` stream how many participants the transfer touches (``min_participants`` ..
``max_participants``), which ones, which of them pays, and the amount: the payer's
account is debited ``amount * (k - 1)`` and each of the other ``k - 1`` accounts
credited ``amount``, so money is conserved exactly when every transaction is atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TxnSpec", "TransferWorkload"]


@dataclass(frozen=True, slots=True)
class TxnSpec:
    """One transfer: ``payer`` pays ``amount`` to every other participant, on ``account``."""

    gtid: str
    op_id: int
    participants: tuple[str, ...]
    account: int
    amount: int
    payer: str

    def delta(self, node: str) -> int:
        """The change to ``account`` at ``node`` if the transaction commits."""
        if node == self.payer:
            return -self.amount * (len(self.participants) - 1)
        return self.amount


class TransferWorkload:
    """Draws transfers over ``participants`` from a uniform sampler (the ``txn`` stream)."""

    def __init__(self, uniform: Callable[[], float], participants: tuple[str, ...], min_participants: int,
                 max_participants: int, max_amount: int) -> None:
        self._u = uniform
        self.participants = participants
        self.lo = min_participants
        self.hi = max_participants
        self.max_amount = max_amount

    def draw(self, gtid: str, op_id: int, account: int) -> TxnSpec:
        """The transfer of client operation ``op_id`` on ``account`` (uniform numbers only)."""
        u = self._u
        parts = self.participants
        lo, hi = self.lo, self.hi
        k = lo + min(int(u() * (hi - lo + 1)), hi - lo)
        order = list(range(len(parts)))
        for i in range(k):  # the first k steps of a Fisher-Yates shuffle
            j = i + min(int(u() * (len(order) - i)), len(order) - i - 1)
            order[i], order[j] = order[j], order[i]
        chosen = order[:k]
        amount = 1 + min(int(u() * self.max_amount), self.max_amount - 1)
        return TxnSpec(gtid=gtid, op_id=op_id, participants=tuple(parts[i] for i in sorted(chosen)),
                       account=account, amount=amount, payer=parts[chosen[0]])
