"""Siblings: did every acknowledged write survive, and does every overwritten write stay gone?

A store that keeps concurrent writes as *siblings* (Dynamo, Riak: version
vectors) promises two things about the state its replicas end in:

* **no lost write**: an acknowledged write is still there, unless a write
  that *read it first* replaced it (a client read the value, then wrote with
  the causal context of that read);
* **no resurrection**: a value that such a write replaced does not come back
  once the replacing write took effect.

The judge of "read it first" is the ground truth the clients record, never
the store's own version vectors (a store with wrong vectors would vouch for
itself): each write row lists ``seen``, the values that the read whose
context it passed returned (empty for a blind write). Since the value a
client saw was written before the client read it, "w saw v" is acyclic.

At one replica whose final state for ``key`` is the set ``F``, a value ``v``
is *accounted for* when ``v`` is in ``F``, or some write that saw ``v`` is
itself accounted for (it is in ``F``, or replaced in turn by one that is).
Then:

* an ``ok`` write that is not accounted for is **lost** (``info`` writes may or
  may not have happened; a ``fail`` one did not);
* a value in ``F`` that a write accounted for saw is **resurrected**: that write
  took effect (it is in ``F``, or a client read it) and replaced it;
* a value in ``F`` that no write of that key wrote is **invented**.

During the run, reads show the same thing at each replica: once a read at a
node returned a write ``a``, no later read there (invoked after that one
completed) may return a value ``a`` replaced, directly or through a chain of
overwrites (:func:`read_resurrections`). A replica that holds ``a`` holds its
context, which covers everything ``a`` replaced; a duplicated write applied
twice, or a context forgotten, brings such a value back, often only for a while.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["SiblingAudit", "audit_siblings", "AUDIT_COLUMNS", "replaced_values", "read_resurrections",
           "RESURRECTION_COLUMNS"]

AUDIT_COLUMNS = ("node", "key", "value", "problem", "because")


@dataclass(frozen=True, eq=False)
class SiblingAudit:
    """The findings, one row per (node, key, value): ``problem`` is ``lost``,
    ``resurrected`` or ``invented``; ``because`` the value of the write that
    replaced a resurrected one (None otherwise)."""

    findings: pd.DataFrame

    def of(self, problem: str) -> pd.DataFrame:
        return self.findings[self.findings["problem"] == problem].reset_index(drop=True)

    @property
    def lost(self) -> pd.DataFrame:
        return self.of("lost")

    @property
    def resurrected(self) -> pd.DataFrame:
        return self.of("resurrected")

    @property
    def invented(self) -> pd.DataFrame:
        return self.of("invented")


def audit_siblings(writes: pd.DataFrame, final: Mapping[tuple[str, Any], Iterable[Any]]) -> SiblingAudit:
    """Audit every replica's final state against the writes' ground truth.

    ``writes``: one row per write with columns ``key``, ``value`` (unique per
    write), ``outcome`` (``ok``/``info``/``fail``) and ``seen`` (the values the
    client had read before writing; empty for a blind write). ``final``:
    ``(node, key) -> values`` the replica holds at the end (what a read there
    returns); keys a replica does not list count as empty there.
    """
    by_key: dict[Any, list[tuple[Any, str, tuple[Any, ...]]]] = {}
    for key, value, outcome, seen in zip(writes["key"], writes["value"], writes["outcome"], writes["seen"]):
        by_key.setdefault(key, []).append((value, outcome, tuple(seen or ())))
    nodes = sorted({node for node, _key in final}, key=repr)
    keys = sorted(set(by_key) | {key for _node, key in final}, key=repr)
    rows: list[tuple[Any, ...]] = []
    for node in nodes:
        for key in keys:
            rows += _audit_one(node, key, by_key.get(key, []), frozenset(final.get((node, key), ())))
    return SiblingAudit(pd.DataFrame(rows, columns=list(AUDIT_COLUMNS)))


def _audit_one(node: str, key: Any, writes: list[tuple[Any, str, tuple[Any, ...]]],
               state: frozenset[Any]) -> list[tuple[Any, ...]]:
    readers: dict[Any, list[Any]] = {}  # value -> the writes that saw it, in write order
    for value, _outcome, seen in writes:
        for v in seen:
            readers.setdefault(v, []).append(value)
    done: dict[Any, bool] = {}
    active: set[Any] = set()

    def accounted(v: Any) -> bool:
        # iterative depth-first search; a value met again while still being resolved counts
        # as not accounted (only malformed input has such cycles: a value read before it was written)
        stack = [v]
        while stack:
            top = stack[-1]
            if top in done:
                stack.pop()
                continue
            if top in state:
                done[top] = True
                stack.pop()
                continue
            active.add(top)
            pending = [w for w in readers.get(top, ()) if w not in done and w not in active]
            if pending:
                stack.extend(pending)
                continue
            done[top] = any(done.get(w, False) for w in readers.get(top, ()))
            active.discard(top)
            stack.pop()
        return done[v]

    rows: list[tuple[Any, ...]] = []
    for value, outcome, _seen in writes:
        if outcome == "ok" and not accounted(value):
            rows.append((node, key, value, "lost", None))
    written = {value for value, _outcome, _seen in writes}
    for value in sorted(state, key=repr):
        if value not in written:
            rows.append((node, key, value, "invented", None))
            continue
        replacer = next((w for w in readers.get(value, ()) if accounted(w)), None)
        if replacer is not None:
            rows.append((node, key, value, "resurrected", replacer))
    return rows


RESURRECTION_COLUMNS = ("node", "key", "value", "read_op", "invoke", "earlier_op", "replaced_by")


def replaced_values(writes: pd.DataFrame) -> dict[Any, frozenset[Any]]:
    """value -> every value it replaced, directly (its ``seen``) or through a chain of overwrites."""
    seen = {value: tuple(s or ()) for value, s in zip(writes["value"], writes["seen"])}
    out: dict[Any, frozenset[Any]] = {}
    for root in seen:
        stack = [root]
        while stack:
            top = stack[-1]
            if top in out:
                stack.pop()
                continue
            pending = [v for v in seen.get(top, ()) if v not in out and v in seen and v not in stack]
            if pending:
                stack.extend(pending)
                continue
            acc: set[Any] = set()
            for v in seen.get(top, ()):
                acc.add(v)
                acc |= out.get(v, frozenset())
            out[top] = frozenset(acc)
            stack.pop()
    return out


def read_resurrections(reads: pd.DataFrame, writes: pd.DataFrame) -> pd.DataFrame:
    """Reads that returned a value an earlier read at the same node had shown replaced.

    ``reads``: ``ok`` reads with columns ``op_id``, ``node``, ``key``, ``invoke``,
    ``complete`` and ``values`` (the set returned); ``writes`` as for
    :func:`audit_siblings`. A read ``r2`` is flagged when a read ``r1`` at the same
    node and key completed before ``r2`` was invoked and returned a write that
    replaced (through any chain) a value ``r2`` returns. One row per (node, key, value).
    """
    replaced = replaced_values(writes)
    rows: list[tuple[Any, ...]] = []
    for (node, key), group in reads.groupby(["node", "key"], sort=True):
        ordered = sorted(zip(group["invoke"], group["complete"], group["op_id"], group["values"]),
                         key=lambda r: (r[0], r[2]))
        by_complete = sorted(ordered, key=lambda r: (r[1], r[2]))
        gone: dict[Any, tuple[Any, Any]] = {}  # replaced value -> (read op that showed it gone, its replacer)
        flagged: set[Any] = set()
        i = 0
        for invoke, _complete, op_id, values in ordered:
            while i < len(by_complete) and by_complete[i][1] < invoke:
                _inv, _c, earlier, shown = by_complete[i]
                for a in sorted(shown, key=repr):
                    for v in replaced.get(a, ()):
                        gone.setdefault(v, (earlier, a))
                i += 1
            for v in sorted(values, key=repr):
                if v in gone and v not in flagged:
                    flagged.add(v)
                    rows.append((node, key, v, op_id, invoke, *gone[v]))
    return pd.DataFrame(rows, columns=list(RESURRECTION_COLUMNS))
