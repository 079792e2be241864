"""Saga checker: did every saga end the way the orchestrator says, in every service's data?

Input: what the orchestrator claims (one row per saga: ``saga_id`` and
``status``: ``completed``, ``compensated``, ``running`` = still unfinished in its
log at the end, ``forgotten`` = it has no record, e.g. a volatile log lost in a
crash) and the ground truth, the services' durable effect ledgers (one row per
saga and step: ``applies`` = how often the step's action took effect,
``undos`` = how often its compensation did). A missing ledger row means 0 and 0.

With ``net = applies - undos`` per step, each saga gets one outcome:

``completed``     marked completed and every step's net is exactly 1;
``compensated``   marked compensated and every step's net is exactly 0;
``inconsistent``  marked completed or compensated, yet some step's net disagrees:
                  an effect left in place (net 1 after compensation), applied twice
                  (net 2: a retried, non-idempotent action), or undone without having
                  been applied (net -1: an "empty" compensation that refunded anyway);
``stuck``         not finished by the end (``running`` or ``forgotten``); ``dirty``
                  when some step's net is not 0 (an effect nobody will ever undo).

The robust saga's invariant: no ``inconsistent`` ever, and no ``stuck`` once
faults have healed and the run has had time to finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["check_sagas", "SagaReport", "SAGA_OUTCOMES", "SAGA_STATUSES"]

SAGA_OUTCOMES = ("completed", "compensated", "inconsistent", "stuck")
SAGA_STATUSES = ("completed", "compensated", "running", "forgotten")
_EXPECTED_NET = {"completed": 1, "compensated": 0}


@dataclass(frozen=True, eq=False)
class SagaReport:
    """The verdict of :func:`check_sagas`: counts, one row per saga, and the violations."""

    counts: dict[str, int]
    sagas: pd.DataFrame
    violations: pd.DataFrame
    explanation: str

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    @property
    def consistent(self) -> bool:
        """No finished saga disagrees with the services and no unfinished one left an effect."""
        return self.counts["inconsistent"] == 0 and self.counts["stuck_dirty"] == 0

    @property
    def ok(self) -> bool:
        """Consistent, and every saga finished."""
        return self.counts["inconsistent"] == 0 and self.counts["stuck"] == 0


def check_sagas(sagas: pd.DataFrame, effects: pd.DataFrame, steps: Sequence[str]) -> SagaReport:
    """Classify every saga in ``sagas`` (columns ``saga_id``, ``status``) against ``effects``
    (columns ``saga_id``, ``step`` = index into ``steps``, ``applies``, ``undos``)."""
    for name, table, cols in (("sagas", sagas, ("saga_id", "status")),
                              ("effects", effects, ("saga_id", "step", "applies", "undos"))):
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {', '.join(missing)}")
    net: dict[tuple[str, int], int] = {}
    for sid, step, applies, undos in zip(effects["saga_id"], effects["step"], effects["applies"], effects["undos"]):
        key = (sid, int(step))
        net[key] = net.get(key, 0) + int(applies) - int(undos)
    n = len(steps)
    outcomes, dirty, details, rows = [], [], [], []
    for sid, status in zip(sagas["saga_id"], sagas["status"]):
        if status not in SAGA_STATUSES:
            raise ValueError(f"saga {sid!r} has status {status!r}; expected one of {', '.join(SAGA_STATUSES)}")
        nets = [net.get((sid, i), 0) for i in range(n)]
        is_dirty = any(v != 0 for v in nets)
        detail = ""
        if status in _EXPECTED_NET:
            want = _EXPECTED_NET[status]
            wrong = [(steps[i], v) for i, v in enumerate(nets) if v != want]
            outcome = "inconsistent" if wrong else status
            if wrong:
                detail = f"marked {status}, but " + "; ".join(_describe(step, v, want) for step, v in wrong)
                rows.append({"saga_id": sid, "status": status, "detail": detail})
        else:
            outcome = "stuck"
            if is_dirty:
                applied = [steps[i] for i, v in enumerate(nets) if v != 0]
                detail = f"{status}, with {', '.join(applied)} applied and never undone"
        outcomes.append(outcome)
        dirty.append(is_dirty)
        details.append(detail)
    table = sagas.copy()
    table["outcome"] = pd.Series(outcomes, index=table.index, dtype=object)
    table["dirty"] = pd.Series(dirty, index=table.index, dtype=bool)
    table["detail"] = pd.Series(details, index=table.index, dtype=object)
    counts = {"sagas": len(table)}
    for name in SAGA_OUTCOMES:
        counts[name] = int((table["outcome"] == name).sum())
    stuck = table["outcome"] == "stuck"
    counts["stuck_dirty"] = int((stuck & table["dirty"]).sum())
    counts["forgotten"] = int((table["status"] == "forgotten").sum())
    violations = pd.DataFrame(rows, columns=["saga_id", "status", "detail"])
    return SagaReport(counts, table, violations, _explain(counts, violations))


def _describe(step: str, value: int, want: int) -> str:
    if value > want and value > 1:
        return f"{step} applied {value} times"
    if value < 0:
        return f"{step} compensated {-value} time(s) more than applied"
    if want == 0:
        return f"{step} still applied"
    return f"{step} not applied"


def _explain(counts: dict[str, int], violations: pd.DataFrame) -> str:
    parts = [f"{counts[k]} {k}" for k in SAGA_OUTCOMES if counts[k]]
    text = f"{counts['sagas']} sagas: " + (", ".join(parts) or "none")
    if counts["stuck_dirty"]:
        text += f" ({counts['stuck_dirty']} stuck with effects never undone)"
    if len(violations):
        first = violations.iloc[0]
        text += f"; e.g. {first['saga_id']}: {first['detail']}"
    return text
