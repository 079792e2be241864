"""State machine safety (Raft's Figure 3): no two nodes apply different entries at one log index.

An apply is one node (in one of its lives: ``life`` counts its crashes) applying the
entry at ``index`` to its state machine; an entry is identified by its ``term`` and its
operation id ``op_id`` (0 for a no-op). A node that crashes and replays its log applies
the same entries again: no violation. Two applies at one index whose entries differ
(another term, or another operation) are one, whoever made them and whenever.

Two forms of the same check:

* :func:`check_state_machine_safety` takes a table with one row per apply (columns
  :data:`REQUIRED_COLUMNS`), as the labs record it;
* :class:`AppliedEntries` is fed the applies one at a time while a run goes on and keeps
  only the first apply of each index (and the conflicts), so a long run costs one small
  record per index, not one per apply; :meth:`AppliedEntries.compacted` drops the
  indices no node will ever apply again (every node's snapshot covers them).

Both report, per index applied as two different entries, its first apply and the
first apply of another entry there; the explanation names the earliest such conflict.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["check_state_machine_safety", "AppliedEntries", "StateMachineSafetyResult", "Apply", "REQUIRED_COLUMNS",
           "VIOLATION_COLUMNS"]

REQUIRED_COLUMNS = ("time", "node", "life", "index", "term", "op_id")
VIOLATION_COLUMNS = ("index", "first_node", "first_life", "first_term", "first_op_id", "first_time",
                     "second_node", "second_life", "second_term", "second_op_id", "second_time")
#: conflicts kept as rows (the rest are only counted): a badly broken protocol may conflict at every index
MAX_VIOLATIONS = 1000


@dataclass(frozen=True, slots=True)
class Apply:
    """One node applying one entry: when, which node in which life, the index and the entry (term, op id)."""

    time: float
    node: str
    life: int
    index: int
    term: int
    op_id: int


@dataclass(frozen=True, eq=False)
class StateMachineSafetyResult:
    """The verdict and its evidence.

    ``applies``: applies checked; ``indices``: distinct indices applied; ``violations``:
    one row per index applied as two different entries (columns :data:`VIOLATION_COLUMNS`,
    in the order the conflicts happened); ``conflicts``: applies that disagreed with the
    first apply of their index (at least ``len(violations)``).
    """

    applies: int
    indices: int
    violations: pd.DataFrame
    conflicts: int
    explanation: str

    @property
    def ok(self) -> bool:
        return self.conflicts == 0


def _text(a: Apply) -> str:
    what = "a no-op" if a.op_id == 0 else f"op {a.op_id}"
    return f"{a.node} applied {what} of term {a.term} at {a.time:.1f} ms"


class AppliedEntries:
    """The applies of one run, checked as they happen (see the module docstring).

    Memory: about 34 bytes per index applied and not yet compacted away by every node
    (its first apply, in flat arrays), plus the conflicts (at most :data:`MAX_VIOLATIONS`
    rows).
    """

    def __init__(self, nodes: Iterable[str] = ()) -> None:
        self.applies = 0
        self.conflicts = 0
        self.violations: list[tuple[Apply, Apply]] = []  # (first apply, first other entry) per index
        self._conflicted: set[int] = set()
        self._indices = 0
        self._names: list[str] = []
        self._codes: dict[str, int] = {}
        for name in nodes:
            self._code(name)
        self._floors = dict.fromkeys(self._names, 0)  # node -> every index up to this is in its snapshot
        # the first apply of index base + 1 + k is at position k (term -1: not applied yet)
        self._base = 0
        self._term = array("q")
        self._op = array("q")
        self._time = array("d")
        self._node = array("L")
        self._life = array("q")

    def _code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    @property
    def remembered(self) -> range:
        """The indices whose first apply is kept (those below are in every node's snapshot)."""
        return range(self._base + 1, self._base + 1 + len(self._term))

    def first(self, index: int) -> Apply | None:
        """The first apply of ``index`` (None: not applied, or forgotten)."""
        k = index - self._base - 1
        if k < 0 or k >= len(self._term) or self._term[k] == -1:
            return None
        return Apply(self._time[k], self._names[self._node[k]], self._life[k], index, self._term[k], self._op[k])

    def record(self, time: float, node: str, life: int, index: int, term: int, op_id: int) -> None:
        """``node`` (in life ``life``) applies the entry (``term``, ``op_id``) at ``index`` at ``time``."""
        self.applies += 1
        k = index - self._base - 1
        terms = self._term
        n = len(terms)
        if 0 <= k < n and terms[k] == term and self._op[k] == op_id:
            return  # the common case: the entry the first apply of this index applied
        if k < 0:
            return  # every node's snapshot covers it: nothing to compare with
        if k >= n:
            if k > n:  # indices nobody applied (each node applies its log in order, so not in Raft)
                gap = k - n
                self._term.extend([-1] * gap)
                self._op.extend([0] * gap)
                self._time.extend([0.0] * gap)
                self._node.extend([0] * gap)
                self._life.extend([0] * gap)
            self._term.append(term)
            self._op.append(op_id)
            self._time.append(time)
            self._node.append(self._code(node))
            self._life.append(life)
            self._indices += 1
            return
        first_term = self._term[k]
        if first_term == -1:
            self._term[k], self._op[k], self._time[k] = term, op_id, time
            self._node[k], self._life[k] = self._code(node), life
            self._indices += 1
            return
        if first_term == term and self._op[k] == op_id:
            return
        self.conflicts += 1
        if index not in self._conflicted and len(self.violations) < MAX_VIOLATIONS:
            self._conflicted.add(index)
            first = self.first(index)
            assert first is not None
            self.violations.append((first, Apply(time, node, life, index, term, op_id)))

    def compacted(self, node: str, index: int) -> None:
        """``node``'s snapshot now covers its log up to ``index``: it never applies those indices again.
        The indices every node's snapshot covers are forgotten (the nodes are those given at creation)."""
        floors = self._floors
        if node not in floors:
            raise ValueError(f"unknown node {node!r}: AppliedEntries was created for {', '.join(floors) or 'none'}")
        floors[node] = max(floors[node], index)
        floor = min(floors.values())
        drop = floor - self._base
        if drop <= 0:
            return
        for arr in (self._term, self._op, self._time, self._node, self._life):
            del arr[:drop]
        self._base = floor

    def result(self) -> StateMachineSafetyResult:
        rows = [(a.index, a.node, a.life, a.term, a.op_id, a.time, b.node, b.life, b.term, b.op_id, b.time)
                for a, b in self.violations]
        table = pd.DataFrame(rows, columns=list(VIOLATION_COLUMNS))
        if self.violations:
            a, b = self.violations[0]
            more = self.conflicts - 1
            explanation = (f"two entries applied at index {a.index}: {_text(a)}; {_text(b)}"
                           + (f" ({more} more conflicting applies)" if more else ""))
        elif self.applies:
            explanation = f"{self._indices} log indices applied ({self.applies} applies), one entry each"
        else:
            explanation = "nothing was applied"
        return StateMachineSafetyResult(self.applies, self._indices, table, self.conflicts, explanation)


def check_state_machine_safety(applied: pd.DataFrame) -> StateMachineSafetyResult:
    """No two rows of ``applied`` (one per apply: time, node, life, index, term, op_id) with one index carry
    different entries (term, op_id)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in applied.columns]
    if missing:
        raise ValueError(f"applied table lacks column(s) {', '.join(missing)}; needs {', '.join(REQUIRED_COLUMNS)}")
    record = AppliedEntries()
    ordered: Any = applied.sort_values("time", kind="stable")
    for t, node, life, index, term, op_id in zip(*(ordered[c] for c in REQUIRED_COLUMNS), strict=True):
        record.record(float(t), str(node), int(life), int(index), int(term), int(op_id or 0))
    return record.result()
