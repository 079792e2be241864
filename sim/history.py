"""The history of client operations: one row per operation, invoke to completion."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["History", "HISTORY_COLUMNS", "OUTCOMES"]

OUTCOMES = ("ok", "fail", "info")
HISTORY_COLUMNS = (
    "op_id",
    "client",
    "op",
    "key",
    "value",
    "invoke",
    "complete",
    "outcome",
    "node",
    "side",
    "node_up",
    "error",
)


class History:
    """Columnar, append-only record of operations.

    ``outcome`` is ``ok`` (happened), ``fail`` (definitely did not happen) or
    ``info`` (unknown: timed out, or still in flight when the run ended).
    ``value`` is the value written, or for an ``ok`` read the value returned.
    ``side`` is the client's partition side at invoke (``none`` when no
    partition is active, else ``majority`` or ``minority``); ``node_up`` says
    whether the target node was up at invoke.
    """

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {c: [] for c in HISTORY_COLUMNS}
        self.pending = 0

    def __len__(self) -> int:
        return len(self._cols["op_id"])

    def invoke(self, op_id: int, client: str, op: str, key: Any, value: Any, time: float,
               node: str, side: str, node_up: bool) -> int:
        c = self._cols
        row = len(c["op_id"])
        c["op_id"].append(op_id)
        c["client"].append(client)
        c["op"].append(op)
        c["key"].append(key)
        c["value"].append(value)
        c["invoke"].append(time)
        c["complete"].append(math.nan)
        c["outcome"].append("info")
        c["node"].append(node)
        c["side"].append(side)
        c["node_up"].append(node_up)
        c["error"].append(None)
        self.pending += 1
        return row

    def complete(self, row: int, time: float, outcome: str, value: Any = None, error: str | None = None) -> None:
        c = self._cols
        c["complete"][row] = time
        c["outcome"][row] = outcome
        if c["op"][row] != "write" and outcome == "ok":
            c["value"][row] = value
        c["error"][row] = error
        self.pending -= 1

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({k: pd.Series(v, dtype=_DTYPES.get(k, object)) for k, v in self._cols.items()})
        return df


_DTYPES = {
    "op_id": "int64",
    "invoke": "float64",
    "complete": "float64",
    "node_up": "bool",
}
