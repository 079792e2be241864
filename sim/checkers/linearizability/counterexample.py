"""Counterexamples: a few operations of a failed key that on their own are not linearizable, and why.

Shrinking re-checks ever smaller subsets, so its effort is bounded
(``SHRINK_SECONDS`` of wall time and ``SHRINK_CHECKS`` re-checks): past that
the counterexample is simply less small.

The explanation names the simplest story the operations support: a value
nobody wrote, a read before its write, a stale read, a new-old inversion,
two values that would each have to come first, or (failing those) that no
order respects both real time and the register.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .keyops import _KeyOps
from .search import _check

# Bounded effort spent shrinking a counterexample: seconds and number of re-checks.
SHRINK_SECONDS = 2.0
SHRINK_CHECKS = 2000

_INF = math.inf


def _shrink(kops: _KeyOps, hint: float | list[int], deadline: float) -> list[int]:
    """A small non-linearizable subset of one key's operations.

    Starts from the zone test's witness, or else from the operations invoked
    before the time the search got to, then greedily drops chunks of halving
    size while what is left stays non-linearizable. A read keeps a write of its
    value whenever the key has one, so the counterexample tells the real story
    (a stale read rather than "a value that was never written").
    """
    until = min(deadline, time.perf_counter() + SHRINK_SECONDS)
    checks = [0]

    def failing(subset: list[int]) -> bool:
        checks[0] += 1
        return _check(kops, subset, until)[0] is False

    def spent() -> bool:
        return checks[0] >= SHRINK_CHECKS or time.perf_counter() > until

    cur = list(range(len(kops)))
    written = {kops.value[j] for j in cur if kops.is_write[j]}
    if isinstance(hint, list):
        start = hint
    else:
        early = {j for j in cur if kops.invoke[j] <= hint}
        read_values = {kops.value[j] for j in early if not kops.is_write[j]}
        start = [j for j in cur if j in early or (kops.is_write[j] and kops.value[j] in read_values)]
    if len(start) < len(cur) and failing(start):
        cur = start

    def closed(subset: list[int]) -> bool:
        have = {kops.value[j] for j in subset if kops.is_write[j]}
        return all(kops.value[j] in have for j in subset
                   if not kops.is_write[j] and kops.value[j] in written)

    chunk = max(1, len(cur) // 2)
    while not spent():
        removed = False
        i = 0
        while i < len(cur) and not spent():
            cand = cur[:i] + cur[i + chunk:]
            if cand and closed(cand) and failing(cand):
                cur, removed = cand, True
            else:
                i += chunk
        if chunk > 1:
            chunk //= 2
        elif not removed:
            break
    return cur


def _explain(kops: _KeyOps, subset: list[int]) -> str:
    """One sentence on why the operations ``subset`` of a key are not linearizable."""
    key, vals = kops.key, kops.values
    everyone = range(len(kops))
    reads = sorted((j for j in subset if not kops.is_write[j]), key=lambda j: kops.complete[j])

    def writes_of(v: int, among: Any = everyone) -> list[int]:
        return [j for j in among if kops.is_write[j] and kops.value[j] == v]

    def last_done(v: int) -> float:
        """When every write of ``v`` had completed (the initial None is done at -inf)."""
        return max((kops.complete[j] for j in writes_of(v)), default=-_INF)

    def read(j: int) -> str:
        return (f"read of key {key!r} returned {_show(vals[kops.value[j]])} "
                f"at t=[{_t(kops.invoke[j])}, {_t(kops.complete[j])}] ms")

    for j in reads:  # a value nobody wrote
        v = kops.value[j]
        if v != 0 and not writes_of(v):
            why = "the only write of it failed" if v in kops.failed_writes else "no operation wrote it"
            return f"{read(j)}, but {why}"
    for j in reads:  # a value written only later
        ws = writes_of(kops.value[j])
        if ws and min(kops.invoke[w] for w in ws) > kops.complete[j]:
            first = min(kops.invoke[w] for w in ws)
            return f"{read(j)}, but the write of that value was invoked only at t={_t(first)} ms"
    for j in reads:  # a stale read
        v = kops.value[j]
        done = last_done(v)
        for x in sorted(_ok_writes_except(kops, subset, v), key=lambda x: -kops.complete[x]):
            if kops.complete[x] < kops.invoke[j] and done < kops.invoke[x]:
                if not writes_of(v):
                    return (f"{read(j)}, but write {_show(vals[kops.value[x]])} completed at "
                            f"t={_t(kops.complete[x])} ms, before the read started")
                return (f"{read(j)}, but write {_show(vals[kops.value[x]])} completed at t={_t(kops.complete[x])} ms, "
                        f"before the read started, and every write of {_show(vals[v])} had completed before it "
                        f"began, so none could be linearized after it")
    for j in reads:  # a new-old inversion: an earlier read saw a value written after every write of this one
        v = kops.value[j]
        done = last_done(v)
        for j1 in reads:
            y = kops.value[j1]
            ws = writes_of(y)
            if y == v or not ws or kops.complete[j1] >= kops.invoke[j]:
                continue
            earlier = (f"{read(j)}, but an earlier read, completed at t={_t(kops.complete[j1])} ms, had already "
                       f"returned {_show(vals[y])}")
            if done < min(kops.invoke[w] for w in ws):
                return (f"{earlier}, whose writes all began after every write of {_show(vals[v])} had completed "
                        f"(a new-old inversion)")
            if done < kops.invoke[j1]:
                return (f"{earlier}, and every write of {_show(vals[v])} had completed before that read began, "
                        f"so {_show(vals[v])} could not come back (a new-old inversion)")
    story = _cycle_story(kops, subset)
    if story:
        return story
    culprit = f"; the {read(reads[-1])} cannot be placed" if reads else ""
    return (f"no order of these {len(subset)} operations on key {key!r} respects both their real-time order and "
            f"register semantics{culprit}")


def _cycle_story(kops: _KeyOps, subset: list[int]) -> str | None:
    """With distinct written values: two values that would each have to come before the other."""
    clusters: dict[int, list[int]] = {}
    for j in subset:
        clusters.setdefault(kops.value[j], []).append(j)
    if any(sum(kops.is_write[j] for j in ops) != 1 for v, ops in clusters.items() if v != 0):
        return None
    ends = {v: (min(ops, key=lambda j: kops.complete[j]), max(ops, key=lambda j: kops.invoke[j]))
            for v, ops in clusters.items() if v != 0}

    def what(j: int) -> str:
        shown = _show(kops.values[kops.value[j]])
        return f"write {shown}" if kops.is_write[j] else f"a read returning {shown}"

    for a, (a1, a2) in ends.items():
        for b, (b1, b2) in ends.items():
            if a < b and kops.complete[a1] < kops.invoke[b2] and kops.complete[b1] < kops.invoke[a2]:
                va, vb = _show(kops.values[a]), _show(kops.values[b])
                return (f"values {va} and {vb} of key {kops.key!r} would each have to come before the other: "
                        f"{what(a1)} completed at t={_t(kops.complete[a1])} ms, before {what(b2)} began at "
                        f"t={_t(kops.invoke[b2])} ms, yet {what(b1)} completed at t={_t(kops.complete[b1])} ms, "
                        f"before {what(a2)} began at t={_t(kops.invoke[a2])} ms")
    return None


def _ok_writes_except(kops: _KeyOps, subset: list[int], v: int) -> list[int]:
    """The ``ok`` writes in ``subset`` of values other than ``v``."""
    return [x for x in subset if kops.is_write[x] and kops.value[x] != v and kops.complete[x] != _INF]


def _show(value: Any) -> str:
    """A value as an explanation shows it."""
    return "None (the initial value)" if value is None else repr(value)


def _t(ms: float) -> str:
    """A time in ms with at most three decimals and no trailing zeros."""
    return f"{ms:.3f}".rstrip("0").rstrip(".")
