"""Lost increments of a counter built on compare-and-set (``workload.pattern = "counter"``).

A counter client increments a key with ``cas(key, v, v + 1)`` and reads it when
it does not know its value. Every cas that was applied added exactly one, from
the initial ``None`` (0), so on a store whose compare-and-set is atomic a key's
final value is the number of cas applied to it: at least the ``ok`` ones, at
most the ``ok`` and the ``info`` ones (a cas that timed out may have been
applied). A final value below the ``ok`` count means increments that were
acknowledged were lost (two clients incremented from the same value, or a
replica's write overwrote another's); one above ``ok + info`` means an
increment appeared that no client made.

The final value of a key is the largest any live replica holds at the end of
the run (``run.settle`` gives replicas time to converge first); a key no
replica holds is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["check_counter", "CounterResult", "final_counter_values"]

_COLUMNS = ["key", "increments_ok", "increments_unknown", "final", "lost", "phantom"]


@dataclass(frozen=True, eq=False)
class CounterResult:
    """Per key: acknowledged and unknown increments, the final value, and what was lost or made up.

    ``lost`` = ``increments_ok - final`` where positive; ``phantom`` =
    ``final - increments_ok - increments_unknown`` where positive.
    """

    keys: pd.DataFrame
    increments_ok: int
    increments_unknown: int
    final_total: int
    lost_increments: int
    phantom_increments: int
    explanation: str

    @property
    def ok(self) -> bool:
        return self.lost_increments == 0 and self.phantom_increments == 0


def check_counter(history: pd.DataFrame, final: Mapping[Any, Any]) -> CounterResult:
    """Compare each key's increments in ``history`` with its ``final`` value (missing: 0).

    ``history`` has the columns ``op``, ``key``, ``value`` (a cas's ``(expected,
    new)``) and ``outcome``. Only compare-and-sets that add one count as
    increments; ``final`` maps a key to an integer (or ``None``, the initial 0).
    """
    cas = history[history["op"] == "cas"]
    steps = [new == (0 if old is None else old) + 1 for old, new in cas["value"]]
    inc = cas[steps] if len(cas) else cas
    ok = inc[inc["outcome"] == "ok"].groupby("key").size()
    unknown = inc[inc["outcome"] == "info"].groupby("key").size()
    keys: list[Any] = sorted({*ok.index, *unknown.index, *final}, key=repr)
    rows = []
    for key in keys:
        value = final.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"final value of key {key!r} must be an integer or None, got {value!r}")
        n_ok, n_unknown, got = int(ok.get(key, 0)), int(unknown.get(key, 0)), int(value or 0)
        rows.append((key, n_ok, n_unknown, got, max(0, n_ok - got), max(0, got - n_ok - n_unknown)))
    table = pd.DataFrame(rows, columns=_COLUMNS)
    lost, phantom = int(table["lost"].sum()), int(table["phantom"].sum())
    n_ok, n_unknown, total = int(table["increments_ok"].sum()), int(table["increments_unknown"].sum()), int(
        table["final"].sum())
    if lost or phantom:
        key, k_ok, k_unknown, got, _lost, _phantom = max(rows, key=lambda row: row[4] + row[5])
        explanation = (f"{lost} acknowledged increment(s) lost and {phantom} made up; e.g. key {key!r}: "
                       f"{k_ok} ok and {k_unknown} unknown increments, final value {got}")
    else:
        explanation = (f"every key's final value lies between its ok increments and ok + unknown ones "
                       f"({n_ok} ok, {n_unknown} unknown, final total {total})")
    return CounterResult(table, n_ok, n_unknown, total, lost, phantom, explanation)


def final_counter_values(states: list[Mapping[Any, Any] | None]) -> dict[Any, Any]:
    """Per key, the largest integer value among the replicas' states (``None`` states are skipped)."""
    final: dict[Any, Any] = {}
    for state in states:
        for key, value in (state or {}).items():
            if isinstance(value, int) and not isinstance(value, bool) and value > (final.get(key) or 0):
                final[key] = value
    return final
