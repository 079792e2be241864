"""Best-effort notification checker: how, and how soon, did each initiator learn each result?

Input: one row per transaction with the provider's facts (``ready``: when its
result existed at the provider, NaN if it never did; ``success``: the result)
and the initiator's (``learned``: when it first knew the result, NaN if never;
``source``: ``notify`` or ``reconcile``, ``""`` if never; ``known_success``:
the result it recorded; ``notifications``: how many notifications it received,
network duplicates and repeats after a lost acknowledgement included).

Every transaction with a result gets exactly one outcome, by how the initiator
*first* learned it:

``notified_in_time``  a notification, at most ``deadline`` ms after the result was ready;
``notified_late``     a notification, later than that;
``reconciled``        its own query found it first (``reconciled_never_notified``
                      counts those that no notification ever reached);
``never_known``       it did not know the result by the end of the run.

So ``notified_in_time + notified_late + reconciled + never_known == results``.
Transactions with no result at the provider (the request never got there, or
still processing) are counted as ``no_result`` and in no outcome.
``duplicates`` = notifications received beyond the first, summed over
transactions; ``duplicated`` = transactions notified more than once;
``mismatched`` = transactions whose recorded result differs from the provider's
(must be 0: a notification carries the result itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["check_notifications", "NotificationReport", "NOTIFY_OUTCOMES", "REQUIRED_COLUMNS"]

NOTIFY_OUTCOMES = ("notified_in_time", "notified_late", "reconciled", "never_known")
REQUIRED_COLUMNS = ("txn", "ready", "success", "learned", "source", "known_success", "notifications")


@dataclass(frozen=True, eq=False)
class NotificationReport:
    """Counts, the per-transaction table with its ``outcome`` column, and a sentence."""

    counts: dict[str, int]
    transactions: pd.DataFrame
    explanation: str

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    @property
    def ok(self) -> bool:
        """Every result known to its initiator, and no recorded result wrong."""
        return self.counts["never_known"] == 0 and self.counts["mismatched"] == 0


def check_notifications(table: pd.DataFrame, deadline: float) -> NotificationReport:
    """Classify every transaction of ``table`` (columns :data:`REQUIRED_COLUMNS`)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}")
    ready = table["ready"].to_numpy(dtype=float)
    learned = table["learned"].to_numpy(dtype=float)
    source = table["source"].to_numpy(dtype=object)
    received = table["notifications"].to_numpy(dtype=np.int64)
    has_result = ~np.isnan(ready)
    by_notify = has_result & (source == "notify")
    in_time = by_notify & (learned - ready <= deadline)
    outcome = np.full(len(table), "no_result", dtype=object)
    outcome[has_result] = "never_known"
    outcome[has_result & (source == "reconcile")] = "reconciled"
    outcome[by_notify] = "notified_late"
    outcome[in_time] = "notified_in_time"
    out = table.copy()
    out["outcome"] = pd.Series(outcome, index=out.index, dtype=object)
    known = source != ""
    mismatched = known & (table["known_success"].to_numpy(dtype=object) != table["success"].to_numpy(dtype=object))
    counts = {"transactions": len(out), "results": int(has_result.sum())}
    for name in NOTIFY_OUTCOMES:
        counts[name] = int((outcome == name).sum())
    counts["no_result"] = int((outcome == "no_result").sum())
    counts["reconciled_never_notified"] = int(((outcome == "reconciled") & (received == 0)).sum())
    counts["notifications_received"] = int(received.sum())
    counts["duplicates"] = int(np.clip(received - 1, 0, None).sum())
    counts["duplicated"] = int((received > 1).sum())
    counts["mismatched"] = int(mismatched.sum())
    return NotificationReport(counts, out, _explain(counts))


def _explain(c: dict[str, int]) -> str:
    parts = ", ".join(f"{c[k]} {k.replace('_', ' ')}" for k in NOTIFY_OUTCOMES)
    text = f"{c['results']} results: {parts}; {c['duplicates']} duplicate notifications"
    if c["mismatched"]:
        text += f"; {c['mismatched']} WRONG results recorded"
    return text
