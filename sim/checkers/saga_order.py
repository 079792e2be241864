"""Saga order checker: did the services see each saga's steps, and its compensations, in order?

:func:`sim.checkers.saga.check_sagas` judges where each saga *ended* (every step's
net effect). This checker judges the *path*: the order in which the services
executed a saga's actions and compensations, from their own time-stamped log.
Input: one row per thing a service did (``time``, ``saga_id``, ``step`` = index
into ``steps``, ``effect``), where ``effect`` is

``applied``         the step's action took effect;
``refused``         the action was refused (a business failure: it applied nothing);
``undone``          the step's compensation undid its action;
``undo_refused``    a compensation arrived for a step whose action had been refused
                    (there was nothing to undo);
``undo_never_ran``  a compensation arrived for a step whose action had never arrived
                    (the service keeps a tombstone so that a late action is refused).

Rows with any other ``effect`` are ignored. The rules, per saga (times strictly
increasing where a rule says "before"):

``forward_order``       step ``j > 0`` took effect only after step ``j - 1`` had
                        (never after step ``j - 1`` was refused, nor before it ran);
``after_compensation``  no action took effect once the saga's first compensation
                        reached a service;
``reverse_order``       step ``j`` was undone only after every later step that had
                        taken effect was undone;
``undo_not_applied``    compensations went only to steps whose action had taken
                        effect (``undo_refused`` and ``undo_never_ran`` are violations).

Whether every applied step was eventually undone is ``check_sagas``'s question,
not this one's: a saga still compensating at the end breaks no rule here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["check_saga_order", "SagaOrderReport", "ORDER_RULES", "EFFECTS"]

EFFECTS = ("applied", "refused", "undone", "undo_refused", "undo_never_ran")
ORDER_RULES = ("forward_order", "after_compensation", "reverse_order", "undo_not_applied")
_COMPENSATIONS = ("undone", "undo_refused", "undo_never_ran")


@dataclass(frozen=True, eq=False)
class SagaOrderReport:
    """The verdict of :func:`check_saga_order`: counts per rule, the violations, a one-line explanation."""

    counts: dict[str, int]
    violations: pd.DataFrame
    explanation: str

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    @property
    def ok(self) -> bool:
        return len(self.violations) == 0


def check_saga_order(effects: pd.DataFrame, steps: Sequence[str]) -> SagaOrderReport:
    """Check every saga in ``effects`` (columns ``time``, ``saga_id``, ``step``, ``effect``) against the rules."""
    missing = [c for c in ("time", "saga_id", "step", "effect") if c not in effects.columns]
    if missing:
        raise ValueError(f"effects lacks column(s) {', '.join(missing)}")
    n = len(steps)
    by_saga: dict[str, list[tuple[float, int, str]]] = {}
    for t, sid, step, effect in zip(effects["time"], effects["saga_id"], effects["step"], effects["effect"]):
        if effect not in EFFECTS:
            continue
        if not 0 <= int(step) < n:
            raise ValueError(f"saga {sid!r}: step {step} is not an index into the {n} steps")
        by_saga.setdefault(sid, []).append((float(t), int(step), str(effect)))
    rows: list[tuple[str, float, str, str]] = []
    for sid, events in by_saga.items():
        events.sort(key=lambda e: e[0])  # stable: a service's same-time events keep their order
        rows += [(sid, t, rule, detail) for t, rule, detail in _saga_violations(events, steps)]
    violations = pd.DataFrame(rows, columns=["saga_id", "time", "rule", "detail"])
    violations = violations.astype({"saga_id": object, "time": "float64", "rule": object, "detail": object})
    counts = {"sagas": len(by_saga), "violating_sagas": int(violations["saga_id"].nunique())}
    for rule in ORDER_RULES:
        counts[rule] = int((violations["rule"] == rule).sum())
    return SagaOrderReport(counts, violations, _explain(counts, violations))


def _saga_violations(events: list[tuple[float, int, str]], steps: Sequence[str]) -> list[tuple[float, str, str]]:
    applied: dict[int, float] = {}
    refused: dict[int, float] = {}
    undone: dict[int, float] = {}
    first_compensation: tuple[float, int] | None = None
    out: list[tuple[float, str, str]] = []
    for t, step, effect in events:
        name = steps[step]
        if effect == "applied":
            if step > 0 and not applied.get(step - 1, t) < t:
                prev = steps[step - 1]
                out.append((t, "forward_order", f"{name} took effect although {prev} was refused"
                            if step - 1 in refused else f"{name} took effect before {prev} had"))
            if first_compensation is not None:
                t0, s0 = first_compensation
                out.append((t, "after_compensation", f"{name} took effect at {t:.1f} ms, after the compensation "
                                                     f"had begun ({steps[s0]} at {t0:.1f} ms)"))
            applied.setdefault(step, t)
        elif effect == "refused":
            refused.setdefault(step, t)
        else:
            if first_compensation is None:
                first_compensation = (t, step)
            if effect == "undone":
                still = [steps[k] for k in sorted(applied) if k > step and applied[k] < t
                         and not undone.get(k, t) < t]
                if still:
                    out.append((t, "reverse_order", f"{name} was undone while the later step(s) "
                                                    f"{', '.join(still)} still had effect"))
                undone.setdefault(step, t)
            else:
                what = "the service had refused its action" if effect == "undo_refused" else "its action never ran"
                out.append((t, "undo_not_applied", f"{name} was compensated, but {what}"))
    return out


def _explain(counts: dict[str, int], violations: pd.DataFrame) -> str:
    if not len(violations):
        return f"{counts['sagas']} sagas: every action and compensation in order"
    rules = ", ".join(f"{counts[r]} {r}" for r in ORDER_RULES if counts[r])
    first = violations.iloc[0]
    return (f"{counts['violating_sagas']} of {counts['sagas']} sagas out of order ({rules}); "
            f"e.g. {first['saga_id']}: {first['detail']}")
