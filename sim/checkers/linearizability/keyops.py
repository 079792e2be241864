"""The checker's input: a validated history split into the operations of each key.

Only what can constrain a register enters a key's :class:`_KeyOps`: ``ok``
operations, ``info`` writes and compare-and-sets (an ``info`` operation gets
the completion time +inf), and compare-and-sets that failed because the key
held another value (``error`` = ``"precondition failed"``: they observed a
value other than the expected one). ``fail`` writes are kept aside as the
values nobody wrote, so an explanation can say "the only write of it failed";
a compare-and-set that failed for another reason (or in a history without an
``error`` column) constrains nothing. Values become small integers so the
search can compare and index them cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["REQUIRED_COLUMNS", "READ", "WRITE", "CAS", "CAS_MISSED"]

REQUIRED_COLUMNS = ("op", "key", "value", "invoke", "complete", "outcome")

# What an operation does to the register (_KeyOps.kind).
READ, WRITE, CAS, CAS_MISSED = 0, 1, 2, 3  # CAS_MISSED: a cas that found another value than expected

#: the ``error`` of a compare-and-set that found another value (as :data:`sim.kernel.messages.CAS_MISMATCH`)
_PRECONDITION_FAILED = "precondition failed"

_INF = math.inf


@dataclass(eq=False)
class _KeyOps:
    """The operations of one key that the search needs (``ok`` ones and ``info`` writes), in input order."""

    key: Any
    rows: list[int] = field(default_factory=list)  # positions in the input frame
    is_write: list[bool] = field(default_factory=list)  # writes and cas (a cas may write its new value)
    value: list[int] = field(default_factory=list)  # value ids (a cas: its new value); id 0 is None, the initial value
    kind: list[int] = field(default_factory=list)  # READ, WRITE, CAS or CAS_MISSED
    expected: list[int] = field(default_factory=list)  # a cas's expected value id; -1 for reads and writes
    invoke: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)  # +inf for info writes
    values: list[Any] = field(default_factory=lambda: [None])  # value id -> value
    value_ids: dict[Any, int] = field(default_factory=dict)
    failed_writes: set[int] = field(default_factory=set)  # value ids of writes that failed

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_cas(self) -> bool:
        """Whether compare-and-sets are among the operations (then the general search checks the key)."""
        return any(k >= CAS for k in self.kind)

    def value_id(self, value: Any) -> int:
        """A small integer for ``value``; ``None`` and NaN (a missing value) are id 0."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 0
        if not isinstance(value, Hashable):
            value = repr(value)
        vid = self.value_ids.get(value)
        if vid is None:
            vid = self.value_ids[value] = len(self.values)
            self.values.append(value)
        return vid


def _prepare(history: pd.DataFrame) -> list[_KeyOps]:
    """Validate the history and split the operations that matter by key."""
    if not isinstance(history, pd.DataFrame):
        raise TypeError(f"history must be a pandas DataFrame, got {type(history).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"history is missing column(s) {', '.join(missing)}; "
                         f"required: {', '.join(REQUIRED_COLUMNS)}")
    op = history["op"].to_numpy(dtype=object)
    outcome = history["outcome"].to_numpy(dtype=object)
    keys = history["key"].to_numpy(dtype=object)
    values = history["value"].to_numpy(dtype=object)
    invoke = history["invoke"].to_numpy(dtype=float)
    complete = history["complete"].to_numpy(dtype=float)

    is_read, is_write, is_cas = op == "read", op == "write", op == "cas"
    is_ok, is_fail, is_info = outcome == "ok", outcome == "fail", outcome == "info"
    _reject(history, ~(is_read | is_write | is_cas), "op must be 'read', 'write' or 'cas'", "op")
    _reject(history, ~(is_ok | is_fail | is_info), "outcome must be 'ok', 'fail' or 'info'", "outcome")
    _reject(history, ~np.isfinite(invoke), "invoke must be a finite time", "invoke")
    _reject(history, is_ok & ~(complete >= invoke), "an ok operation needs complete >= invoke", "complete")

    missed = np.zeros(len(op), dtype=bool)
    if is_cas.any():
        pairs = is_cas & ~np.fromiter((isinstance(v, (tuple, list)) and len(v) == 2 for v in values),
                                      dtype=bool, count=len(values))
        _reject(history, pairs, "a cas's value must be the pair (expected, new)", "value")
        if "error" in history.columns:
            missed = is_cas & is_fail & (history["error"].to_numpy(dtype=object) == _PRECONDITION_FAILED)
            _reject(history, missed & ~(complete >= invoke),
                    "a cas that failed its precondition needs complete >= invoke", "complete")

    groups: dict[Any, _KeyOps] = {}
    wanted = is_ok | (is_info & (is_write | is_cas)) | (is_fail & is_write) | missed
    for pos in np.flatnonzero(wanted).tolist():
        key = keys[pos]
        kops = groups.get(key)
        if kops is None:
            kops = groups[key] = _KeyOps(key)
        expected = -1
        if is_cas[pos]:
            expected = kops.value_id(values[pos][0])
            vid = kops.value_id(values[pos][1])
            kind = CAS_MISSED if missed[pos] else CAS
        else:
            vid = kops.value_id(values[pos])
            kind = WRITE if is_write[pos] else READ
        if is_fail[pos] and not missed[pos]:
            kops.failed_writes.add(vid)
            continue
        kops.rows.append(pos)
        kops.is_write.append(kind in (WRITE, CAS))
        kops.value.append(vid)
        kops.kind.append(kind)
        kops.expected.append(expected)
        kops.invoke.append(float(invoke[pos]))
        kops.complete.append(float(complete[pos]) if is_ok[pos] or missed[pos] else _INF)
    return list(groups.values())


def _reject(history: pd.DataFrame, bad: np.ndarray, what: str, column: str) -> None:
    """Raise a ValueError naming the first ``bad`` row (by ``op_id`` when there is one) and how many there are."""
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        label = history.index[pos]
        ident = f"op_id {history['op_id'].iloc[pos]!r}" if "op_id" in history.columns else f"index {label!r}"
        raise ValueError(f"history row {ident}: {what}, got {column}={history[column].iloc[pos]!r} "
                         f"({int(bad.sum())} bad row(s))")
