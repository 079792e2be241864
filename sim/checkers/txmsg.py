"""Transactional-message checker: a message reaches consumers if and only if its local transaction committed.

Input: the producers' durable transaction table (one row per transaction id,
``state``: ``committed``, ``rolled_back`` or ``none`` = never finished, e.g. the
process died before committing), the message-event table of
:mod:`sim.messaging.history` (message id = transaction id), and two lists of
ids: ``pending`` (a copy is on its way to consumers: an unsent outbox row, a
publish not yet confirmed, a committed half message being published, a message
still in a queue) and ``unresolved`` (a half message still invisible, awaiting
commit, rollback or a check-back). A message is *published* once the broker
enqueued it and *delivered* once a consumer received it.

Outcome per transaction:

``delivered``  committed and delivered;
``pending``    committed, not delivered yet, but a copy is on its way (or its half
               message is unresolved: the check-back will find the commit);
``lost``       committed, never delivered and nothing left that will deliver it;
``phantom``    not committed, yet its message was published, delivered, or is on
               its way (consumers act on a transaction that never happened);
``absent``     not committed and no visible message: correct.

The invariant is ``lost == 0 and phantom == 0`` (:attr:`TxMsgReport.ok`), and
``pending == 0`` once the run has settled. Duplicates are counted, not
violations: ``duplicate_deliveries`` (receptions beyond the first) and
``duplicate_side_effects`` (what an idempotent consumer must bring to 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

__all__ = ["check_transactional", "TxMsgReport", "TXMSG_OUTCOMES"]

TXMSG_OUTCOMES = ("delivered", "pending", "lost", "phantom", "absent")
_STATES = ("committed", "rolled_back", "none")


@dataclass(frozen=True, eq=False)
class TxMsgReport:
    """Counts, one row per transaction (``outcome`` column) and the violating rows."""

    counts: dict[str, int]
    transactions: pd.DataFrame
    explanation: str

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    @property
    def violations(self) -> pd.DataFrame:
        return self.transactions[self.transactions["outcome"].isin(["lost", "phantom"])]

    @property
    def ok(self) -> bool:
        """Published if and only if committed: nothing lost, no phantom."""
        return self.counts["lost"] == 0 and self.counts["phantom"] == 0

    @property
    def settled(self) -> bool:
        return self.counts["pending"] == 0


def check_transactional(transactions: pd.DataFrame, events: pd.DataFrame, pending: Iterable[str] = (),
                        unresolved: Iterable[str] = ()) -> TxMsgReport:
    """Classify every transaction of ``transactions`` (columns ``txn``, ``state``) against ``events``."""
    for col in ("txn", "state"):
        if col not in transactions.columns:
            raise ValueError(f"transactions lacks column {col!r}")
    pending_ids = dict.fromkeys(pending)
    unresolved_ids = dict.fromkeys(unresolved)
    receives: dict[str, int] = {}
    effects: dict[str, int] = {}
    enqueued: dict[str, None] = {}
    for event, mid in zip(events["event"].tolist(), events["msg_id"].tolist()):
        if event == "receive":
            receives[mid] = receives.get(mid, 0) + 1
        elif event == "side_effect":
            effects[mid] = effects.get(mid, 0) + 1
        elif event == "enqueue":
            enqueued[mid] = None
    rows = []
    known = dict.fromkeys(transactions["txn"].tolist())
    for txn, state in zip(transactions["txn"].tolist(), transactions["state"].tolist()):
        if state not in _STATES:
            raise ValueError(f"transaction {txn!r} has state {state!r}; expected one of {', '.join(_STATES)}")
        rows.append(_row(txn, state, receives, effects, enqueued, pending_ids, unresolved_ids))
    for mid in list(enqueued) + list(receives):  # messages of no known transaction at all
        if mid not in known:
            known[mid] = None
            rows.append(_row(mid, "none", receives, effects, enqueued, pending_ids, unresolved_ids))
    table = pd.DataFrame(rows, columns=["txn", "state", "published", "deliveries", "side_effects", "in_flight",
                                        "unresolved", "outcome"])
    table = table.astype({"published": "bool", "deliveries": "int64", "side_effects": "int64", "in_flight": "bool",
                          "unresolved": "bool"})
    counts = {"transactions": len(table)}
    for state in _STATES:
        counts[state] = int((table["state"] == state).sum())
    for name in TXMSG_OUTCOMES:
        counts[name] = int((table["outcome"] == name).sum())
    counts["published"] = int(table["published"].sum())
    counts["deliveries"] = int(table["deliveries"].sum())
    counts["duplicate_deliveries"] = int((table["deliveries"] - 1).clip(lower=0).sum())
    counts["duplicate_side_effects"] = int((table["side_effects"] - 1).clip(lower=0).sum())
    return TxMsgReport(counts, table, _explain(counts, table))


def _row(txn: str, state: str, receives: dict[str, int], effects: dict[str, int], enqueued: dict[str, None],
         pending: dict[str, None], unresolved: dict[str, None]) -> tuple:
    delivered = receives.get(txn, 0)
    published = txn in enqueued
    in_flight = txn in pending
    waiting = txn in unresolved
    if state == "committed":
        outcome = "delivered" if delivered else ("pending" if in_flight or waiting else "lost")
    else:
        outcome = "phantom" if delivered or published or in_flight else "absent"
    return (txn, state, published, delivered, effects.get(txn, 0), in_flight, waiting, outcome)


def _explain(c: dict[str, int], table: pd.DataFrame) -> str:
    text = (f"{c['transactions']} transactions ({c['committed']} committed, {c['rolled_back']} rolled back, "
            f"{c['none']} unfinished): {c['delivered']} delivered, {c['pending']} pending, {c['lost']} lost, "
            f"{c['phantom']} phantom; {c['duplicate_deliveries']} duplicate deliveries")
    bad = table[table["outcome"].isin(["lost", "phantom"])]
    if len(bad):
        first = bad.iloc[0]
        why = "committed but its message never published" if first["outcome"] == "lost" else \
            f"{first['state'].replace('none', 'never committed').replace('_', ' ')} but its message was published"
        text += f"; e.g. {first['txn']}: {why}"
    return text
