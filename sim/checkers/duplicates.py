"""Duplicate applications: writes a server applied more than once.

A client that retries a write whose first attempt took effect but whose answer
was lost or late sends it again; a server that does not recognise the retry
(no idempotency key, or a key its duplicate table has forgotten) applies it a
second time. For a register that rewrites the same value it may look harmless;
for an append, a counter increment or a payment it is the bug (a double
charge). The checker counts it either way, from the servers' record of what
they applied (``Result.tables["applications"]``, one row per application with
the value written; values identify operations) against the history. A
replicated state machine applies every operation once on each replica: an
operation's count is the most times one node applied it, at distinct ``slot``
values when the record has them (a replica replaying its log after a restart
applies the same slots again, which is no duplicate):

* ``duplicated``: operations applied more than once, ``extra`` the applications
  beyond the first summed over them;
* ``applied_after_fail``: operations the client was told definitely failed
  (``fail``) that were applied all the same: a broken promise, never allowed;
* ``lost_ok``: ``ok`` writes that no server applied (a server that acknowledges
  before applying, or a record with rows missing).

A compare-and-set counts as a write of its new value. It guards itself against
a plain retry (the retry finds the value its first attempt wrote and fails its
precondition), so it shows up here only through a server bug, or when values
repeat: a ``counter`` workload's increments share values, and its runs have no
duplicates verdict (the counter verdict judges them).

``ok`` is True when no operation was applied twice and none after a ``fail``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["duplicate_applications", "DuplicatesResult"]


@dataclass(frozen=True, eq=False)
class DuplicatesResult:
    """Counts plus ``table``: one row per write or cas of the history (``value``: what it writes) and ``applied``."""

    writes: int
    duplicated: int
    extra: int
    applied_after_fail: int
    lost_ok: int
    table: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.duplicated == 0 and self.applied_after_fail == 0

    def summary(self) -> dict[str, int]:
        return {"duplicates.writes": self.writes, "duplicates.duplicated": self.duplicated,
                "duplicates.extra": self.extra, "duplicates.applied_after_fail": self.applied_after_fail,
                "duplicates.lost_ok": self.lost_ok}


def duplicate_applications(history: pd.DataFrame, applications: pd.DataFrame) -> DuplicatesResult:
    """Count writes of ``history`` applied more than once according to ``applications``.

    ``applications`` needs a ``value`` column (one row per application), and
    may have ``node`` and ``slot`` columns; every value in it must be the value
    of a write in ``history``, or the new value of a compare-and-set (``op``
    ``cas``, whose history value is the pair ``(expected, new)``).
    """
    writes = history[history["op"].isin(("write", "cas"))]
    values = writes["value"]
    cas = (writes["op"] == "cas").to_numpy(dtype=bool)
    if cas.any():  # a compare-and-set writes the second of its (expected, new) pair
        values = values.copy()
        values[cas] = [pair[1] for pair in values[cas]]
    if values.duplicated().any():
        dup = values[values.duplicated()].iloc[0]
        raise ValueError(f"two writes in the history wrote {dup!r}: values must identify operations")
    counts = _applications_per_value(applications)
    unknown = set(counts.index) - set(values)
    if unknown:
        raise ValueError(f"applications of values no write in the history wrote: {sorted(unknown, key=repr)[:5]}")
    applied = values.map(counts).fillna(0).astype("int64")
    columns = ["op_id", "client", "op", "key", "value", "outcome"]
    table = writes[columns + ["attempts"] if "attempts" in writes.columns else columns].copy()
    table["value"] = values.to_numpy()
    table["applied"] = applied.to_numpy()
    outcome = table["outcome"].to_numpy()
    times = table["applied"].to_numpy()
    return DuplicatesResult(
        writes=len(table),
        duplicated=int((times > 1).sum()),
        extra=int((times[times > 1] - 1).sum()),
        applied_after_fail=int(((outcome == "fail") & (times > 0)).sum()),
        lost_ok=int(((outcome == "ok") & (times == 0)).sum()),
        table=table,
    )


def _applications_per_value(applications: pd.DataFrame) -> pd.Series:
    """Value -> how many times the node that applied it most often applied it (distinct slots)."""
    if not len(applications):
        return pd.Series(dtype="int64")
    rows = applications
    if "slot" in rows.columns:
        rows = rows.drop_duplicates(subset=[c for c in ("node", "slot", "value") if c in rows.columns])
    if "node" not in rows.columns:
        return rows["value"].value_counts(sort=False)
    return rows.groupby(["value", "node"], sort=False).size().groupby(level="value", sort=False).max()
