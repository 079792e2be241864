"""The history of client operations: one row per operation, invoke to completion."""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["History", "HISTORY_COLUMNS", "ATTEMPT_COLUMNS", "OUTCOMES"]

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
    "attempts",
)
ATTEMPT_COLUMNS = ("op_id", "attempt", "request_id", "node", "send", "end", "outcome", "error")


class _Names:
    """A column of repeated names (clients, nodes, outcomes ...) kept as small integer codes."""

    def __init__(self, *known: Any) -> None:
        self.names: list[Any] = list(known)
        self.codes: dict[Any, int] = {name: i for i, name in enumerate(known)}
        self.column = array("i")

    def code(self, name: Any) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code

    def to_numpy(self) -> np.ndarray:
        return _objects(self.names)[np.array(self.column, dtype=np.int32)]


class History:
    """Columnar, append-only record of operations.

    ``outcome`` is ``ok`` (happened), ``fail`` (definitely did not happen) or
    ``info`` (unknown: timed out, or still in flight when the run ended).
    ``value`` is the value written, or for an ``ok`` read the value returned;
    for a compare-and-set (``op == "cas"``) it is the pair ``(expected, new)``,
    and its outcome is ``ok`` (applied), ``fail`` (not applied; ``error`` is
    ``"precondition failed"`` when the key held another value) or ``info``.
    ``side`` is the client's partition side at invoke (``none`` when no
    partition is active, else ``majority`` or ``minority``); ``node_up`` says
    whether the target node was up at invoke. ``attempts`` is how many requests
    the client sent for the operation (1 unless it retries, see
    :mod:`sim.client_retry`); with retries, :meth:`attempts_frame` has one row
    per attempt (its node, send and end times, outcome and error), and ``complete``
    and ``outcome`` are the operation's: the last attempt's end and the outcome the
    client concluded from all of them.

    Numbers are kept in typed arrays and repeated names as codes, so a row costs
    about 60 bytes rather than a dozen Python objects: a million operations fit
    in tens of megabytes until :meth:`to_frame` builds the table.
    """

    def __init__(self) -> None:
        self._op_id = array("q")
        self._invoke = array("d")
        self._complete = array("d")
        self._node_up = array("b")
        self._attempts = array("i")
        self._attempt_rows: list[tuple[Any, ...]] = []
        self._keys: list[Any] = []
        self._values: list[Any] = []
        self._client = _Names()
        self._op = _Names("read", "write")
        self._outcome = _Names(*OUTCOMES)
        self._node = _Names()
        self._side = _Names("none", "majority", "minority")
        self._error = _Names(None)
        self._read = self._op.codes["read"]
        self._frame: pd.DataFrame | None = None
        self.pending = 0

    def __len__(self) -> int:
        return len(self._op_id)

    def invoke(self, op_id: int, client: str, op: str, key: Any, value: Any, time: float,
               node: str, side: str, node_up: bool) -> int:
        row = len(self._op_id)
        self._op_id.append(op_id)
        self._client.column.append(self._client.code(client))
        self._op.column.append(self._op.code(op))
        self._keys.append(key)
        self._values.append(value)
        self._invoke.append(time)
        self._complete.append(math.nan)
        self._outcome.column.append(2)  # info
        self._node.column.append(self._node.code(node))
        self._side.column.append(self._side.code(side))
        self._node_up.append(bool(node_up))
        self._error.column.append(0)  # None
        self._attempts.append(1)
        self.pending += 1
        self._frame = None
        return row

    def complete(self, row: int, time: float, outcome: str, value: Any = None, error: str | None = None) -> None:
        self._complete[row] = time
        self._outcome.column[row] = self._outcome.code(outcome)
        if self._op.column[row] == self._read and outcome == "ok":
            self._values[row] = value
        self._error.column[row] = self._error.code(error)
        self.pending -= 1
        self._frame = None

    def retried(self, row: int) -> int:
        """Count one more attempt of the operation in ``row``; returns its attempt number."""
        self._attempts[row] += 1
        self._frame = None
        return self._attempts[row]

    def attempts_of(self, row: int) -> int:
        """How many attempts the operation in ``row`` has made so far."""
        return self._attempts[row]

    def attempt(self, row: int, attempt: int, request_id: int, node: str, send: float, end: float,
                outcome: str, error: str | None) -> None:
        """Record one finished attempt of the operation in ``row`` (``end`` NaN: never answered)."""
        self._attempt_rows.append((self._op_id[row], attempt, request_id, node, send, end, outcome, error))

    def attempts_frame(self) -> pd.DataFrame:
        """One row per recorded attempt (:data:`ATTEMPT_COLUMNS`), in the order they ended."""
        frame = pd.DataFrame.from_records(self._attempt_rows, columns=list(ATTEMPT_COLUMNS))
        return frame.astype({"op_id": "int64", "attempt": "int64", "request_id": "int64", "send": "float64",
                             "end": "float64"})

    def operation(self, row: int) -> tuple[str, Any, Any]:
        """``(op, key, value)`` of the operation at ``row``."""
        return self._op.names[self._op.column[row]], self._keys[row], self._values[row]

    def to_frame(self) -> pd.DataFrame:
        """The history as a DataFrame (built once until the history changes; callers get their own view)."""
        if self._frame is None:
            columns = {
                "op_id": np.array(self._op_id, dtype=np.int64),
                "client": self._client.to_numpy(),
                "op": self._op.to_numpy(),
                "key": _objects(self._keys),
                "value": _objects(self._values),
                "invoke": np.array(self._invoke, dtype=np.float64),
                "complete": np.array(self._complete, dtype=np.float64),
                "outcome": self._outcome.to_numpy(),
                "node": self._node.to_numpy(),
                "side": self._side.to_numpy(),
                "node_up": np.array(self._node_up, dtype=bool),
                "error": self._error.to_numpy(),
                "attempts": np.array(self._attempts, dtype=np.int64),
            }
            self._frame = pd.DataFrame({name: _column(data) for name, data in columns.items()}, copy=False)
        return self._frame.copy(deep=False)


def _objects(items: list[Any]) -> np.ndarray:
    """An object array holding ``items`` as they are (tuples stay elements, not rows)."""
    return np.fromiter(items, dtype=object, count=len(items))


def _column(data: np.ndarray) -> pd.Series:
    """A column keeping its numpy dtype (names stay Python objects, not pandas strings)."""
    return pd.Series(data, dtype=data.dtype, copy=False)
