"""Election safety (Raft's Figure 3): at most one leader is elected in each term.

The input is every time a node became leader: one row per election won, with
``time``, ``node`` and ``term``. The same node winning one term twice (it forgot
it had, after a crash) is no second leader; two different nodes winning one term
is a violation, whatever happened to the first by then: a leader of a term may
append entries at any time of its life, and two leaders of one term can commit
different entries at the same index.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["check_election_safety", "ElectionSafetyResult", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("time", "node", "term")


@dataclass(frozen=True, eq=False)
class ElectionSafetyResult:
    """The verdict of :func:`check_election_safety` and its evidence.

    ``violations`` has one row per term with more than one leader: ``term``,
    ``leaders`` (comma-separated, in the order they won), ``first`` and ``second``
    (the times the first two won).
    """

    terms: int
    violations: pd.DataFrame
    explanation: str

    @property
    def ok(self) -> bool:
        return len(self.violations) == 0


def check_election_safety(leaders: pd.DataFrame) -> ElectionSafetyResult:
    """At most one node wins each term; ``leaders`` has one row per election won (time, node, term)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in leaders.columns]
    if missing:
        raise ValueError(f"leaders table lacks column(s) {', '.join(missing)}; needs {', '.join(REQUIRED_COLUMNS)}")
    rows: list[dict[str, object]] = []
    firsts: list[tuple[int, list[str], float, float]] = []
    ordered = leaders.sort_values(["term", "time"], kind="stable")
    for term, group in ordered.groupby("term", sort=True):
        first = group.drop_duplicates("node")
        if len(first) > 1:
            names = [str(n) for n in first["node"]]
            t1, t2 = float(first["time"].iloc[0]), float(first["time"].iloc[1])
            firsts.append((int(str(term)), names, t1, t2))
            rows.append({"term": int(str(term)), "leaders": ",".join(names), "first": t1, "second": t2})
    violations = pd.DataFrame(rows, columns=["term", "leaders", "first", "second"])
    terms = int(leaders["term"].nunique())
    if firsts:
        term, names, t1, t2 = firsts[0]
        explanation = (f"two leaders in term {term}: {names[0]} at {t1:.1f} ms and {names[1]} at {t2:.1f} ms"
                       + (f" ({len(rows)} such terms)" if len(rows) > 1 else ""))
    else:
        explanation = f"{terms} terms with a leader, one leader each"
    return ElectionSafetyResult(terms, violations, explanation)
