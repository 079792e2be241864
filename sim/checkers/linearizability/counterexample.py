"""Counterexamples: a few operations of a failed key that on their own are not linearizable, and why.

Shrinking re-checks ever smaller subsets, so its effort is bounded
(``SHRINK_SECONDS`` of wall time and ``SHRINK_CHECKS`` re-checks) and it
never runs past the caller's time limit: past either, the counterexample is
the smallest found so far, and :class:`_Shrunk` says that shrinking did not
finish and whether the time limit was the reason.

The explanation names the simplest story the operations support: a value
nobody wrote, a read before its write, a stale read, a new-old inversion,
two values that would each have to come first, or (failing those) that no
order respects both real time and the register. It only sorts and searches
sorted lists (O(n log n)), so it adds milliseconds even to a counterexample
of thousands of operations, which is what an unfinished shrink can leave.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from .keyops import CAS, CAS_MISSED, READ, _KeyOps
from .search import _check

# Bounded effort spent shrinking a counterexample: seconds and number of re-checks.
SHRINK_SECONDS = 2.0
SHRINK_CHECKS = 2000

_INF = math.inf


class _Shrunk(NamedTuple):
    """What shrinking found: the operations, whether it finished, and whether the deadline stopped it.

    ``finished`` means no single operation could be dropped any more (the
    counterexample is as small as greedy removal gets it); otherwise the
    budget or the deadline ran out first and ``ops`` is the smallest failing
    subset found by then.
    """

    ops: list[int]
    finished: bool
    out_of_time: bool  # the caller's deadline (not the shrink's own budget) had passed when it stopped


def _shrink(kops: _KeyOps, hint: float | list[int], deadline: float) -> _Shrunk:
    """A small non-linearizable subset of one key's operations.

    Starts from the zone test's witness, or else from the operations invoked
    before the time the search got to, then greedily drops chunks of halving
    size while what is left stays non-linearizable. A read keeps a write of its
    value whenever the key has one, so the counterexample tells the real story
    (a stale read rather than "a value that was never written"). Stops at the
    shrink's own budget or at ``deadline``, whichever comes first.
    """
    until = min(deadline, time.perf_counter() + SHRINK_SECONDS)
    checks = 0
    unsure = False  # a re-check ran out of time, so its candidate might have been droppable

    def failing(subset: list[int]) -> bool:
        nonlocal checks, unsure
        checks += 1
        verdict = _check(kops, subset, until)[0]
        unsure = unsure or verdict is None
        return verdict is False

    def spent() -> bool:
        return checks >= SHRINK_CHECKS or time.perf_counter() > until

    cur = list(range(len(kops)))
    written = {kops.value[j] for j in cur if kops.is_write[j]}
    if isinstance(hint, list):
        start = hint
    else:
        early = {j for j in cur if kops.invoke[j] <= hint}
        read_values = {kops.value[j] for j in early if not kops.is_write[j]}
        start = [j for j in cur if j in early or (kops.is_write[j] and kops.value[j] in read_values)]
    if len(start) < len(cur) and not spent() and failing(start):
        cur = start

    def closed(subset: list[int]) -> bool:
        have = {kops.value[j] for j in subset if kops.is_write[j]}
        if kops.has_cas:  # what a read or a cas expects must keep an operation that wrote it, and a cas that
            # missed None something that wrote another value
            missed_none = any(kops.kind[j] == CAS_MISSED and kops.expected[j] == 0 for j in subset)
            if missed_none and not have - {0} and written - {0}:
                return False
            return all(v in have for v in map(_observed(kops), subset) if v in written)
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
        elif not removed:  # a whole pass of single operations: finished, unless it was cut short
            finished = i >= len(cur) and not unsure
            return _Shrunk(cur, finished, not finished and time.perf_counter() > deadline)
    return _Shrunk(cur, False, time.perf_counter() > deadline)


def _explain(kops: _KeyOps, subset: list[int]) -> str:
    """One sentence on why the operations ``subset`` of a key are not linearizable.

    The stories are tried simplest first; each looks at the reads in order of
    completion and tells the first one it fits. What is said about a value's
    writes is about all of the key's writes of it, not only those in
    ``subset``. Each story sorts or binary-searches instead of rescanning the
    operations for every read, so the whole is O(n log n).
    """
    if kops.has_cas:
        return _cas_story(kops, subset)
    ev = _Evidence.of(kops, subset)
    story = (_unwritten_read(ev) or _read_before_its_write(ev) or _stale_read(ev, subset)
             or _new_old_inversion(ev) or _cycle_story(kops, subset))
    if story:
        return story
    culprit = f"; the {ev.read(ev.reads[-1])} cannot be placed" if ev.reads else ""
    return (f"no order of these {len(subset)} operations on key {kops.key!r} respects both their real-time order and "
            f"register semantics{culprit}")


@dataclass(frozen=True)
class _Evidence:
    """What the stories look at: the reads of the subset, by completion, and when each value was written.

    ``first_invoke`` and ``last_done`` are per value id over all of the key's
    writes (``ok`` and ``info``): when the earliest was invoked and when every
    one had completed (+inf if one is an ``info`` write). A value nobody
    wrote is in neither; :meth:`done` puts it at -inf (the initial ``None``
    is there from the start). Built in one pass, they answer in O(1) what
    would otherwise take a scan of every operation for each read.
    """

    kops: _KeyOps
    reads: list[int]
    first_invoke: dict[int, float]
    last_done: dict[int, float]

    @classmethod
    def of(cls, kops: _KeyOps, subset: list[int]) -> _Evidence:
        """The evidence for ``subset``: one pass over the key's writes and one sort of the subset's reads."""
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for j in range(len(kops)):
            if kops.is_write[j]:
                v = kops.value[j]
                first[v] = min(first.get(v, _INF), kops.invoke[j])
                last[v] = max(last.get(v, -_INF), kops.complete[j])
        reads = sorted((j for j in subset if not kops.is_write[j]), key=lambda j: kops.complete[j])
        return cls(kops, reads, first, last)

    def done(self, v: int) -> float:
        """When every write of ``v`` had completed (the initial ``None`` is done at -inf)."""
        return self.last_done.get(v, -_INF)

    def read(self, j: int) -> str:
        """The read ``j`` as the stories describe it."""
        kops = self.kops
        return (f"read of key {kops.key!r} returned {_show(kops.values[kops.value[j]])} "
                f"at t=[{_t(kops.invoke[j])}, {_t(kops.complete[j])}] ms")


def _unwritten_read(ev: _Evidence) -> str | None:
    """A read of a value (other than the initial ``None``) that no operation of the key wrote."""
    kops = ev.kops
    for j in ev.reads:
        v = kops.value[j]
        if v != 0 and v not in ev.first_invoke:
            why = "the only write of it failed" if v in kops.failed_writes else "no operation wrote it"
            return f"{ev.read(j)}, but {why}"
    return None


def _read_before_its_write(ev: _Evidence) -> str | None:
    """A read that completed before any write of its value was invoked."""
    kops = ev.kops
    for j in ev.reads:
        first = ev.first_invoke.get(kops.value[j], -_INF)
        if first > kops.complete[j]:
            return f"{ev.read(j)}, but the write of that value was invoked only at t={_t(first)} ms"
    return None


def _stale_read(ev: _Evidence, subset: list[int]) -> str | None:
    """A read that began after an ``ok`` write x of another value completed, every write of its value having
    completed before x began.

    For each read, the witness is the latest-completing such x in ``subset``
    (the first in subset order among equals). Sorted latest completion
    first, the writes completed before a read began are a suffix of the
    ``ok`` writes, so a suffix maximum of their invocation times says at once
    whether that suffix holds one invoked after the read's value was last
    written. A write of the read's own value never does (it was invoked
    before it completed), so it need not be set aside.
    """
    kops = ev.kops
    writes = sorted((x for x in subset if kops.is_write[x] and kops.complete[x] != _INF),
                    key=lambda x: -kops.complete[x])
    negated_done = [-kops.complete[x] for x in writes]
    latest_invoke = list(itertools.accumulate((kops.invoke[x] for x in reversed(writes)), max))[::-1]
    for j in ev.reads:
        v = kops.value[j]
        done = ev.done(v)
        k = bisect.bisect_right(negated_done, -kops.invoke[j])  # writes[k:] completed before the read began
        if k == len(writes) or latest_invoke[k] <= done:
            continue
        x = next(x for x in itertools.islice(writes, k, None) if kops.invoke[x] > done)
        shown, at = _show(kops.values[kops.value[x]]), _t(kops.complete[x])
        if v not in ev.first_invoke:
            return f"{ev.read(j)}, but write {shown} completed at t={at} ms, before the read started"
        return (f"{ev.read(j)}, but write {shown} completed at t={at} ms, before the read started, and every write of "
                f"{_show(kops.values[v])} had completed before it began, so none could be linearized after it")
    return None


def _new_old_inversion(ev: _Evidence) -> str | None:
    """A read of v after an earlier read (completed before it began) returned y, a value that could only have
    been written after every write of v had completed.

    An earlier read j1 of y counts when y != v, y has writes, and all of
    y's writes began, or j1 itself began, after every write of v had
    completed: when ``max(first write of y invoked, j1 invoked) > done(v)``.
    The earlier reads are a prefix of the reads by completion; the best two
    such times of distinct values in each prefix say at once whether it holds
    one for a given v, so a binary search finds the first.
    """
    kops = ev.kops
    completes = [kops.complete[j] for j in ev.reads]
    best = _prefix_best_two(ev)
    for j in ev.reads:
        v = kops.value[j]
        done = ev.done(v)
        i = _first_above(best, bisect.bisect_left(completes, kops.invoke[j]), v, done)
        if i is None:
            continue
        j1 = ev.reads[i]
        y = kops.value[j1]
        vs, ys = _show(kops.values[v]), _show(kops.values[y])
        earlier = (f"{ev.read(j)}, but an earlier read, completed at t={_t(kops.complete[j1])} ms, "
                   f"had already returned {ys}")
        if done < ev.first_invoke[y]:
            return f"{earlier}, whose writes all began after every write of {vs} had completed (a new-old inversion)"
        return (f"{earlier}, and every write of {vs} had completed before that read began, "
                f"so {vs} could not come back (a new-old inversion)")
    return None


# For each prefix of the reads: the largest time (see _new_old_inversion), the value it belongs to,
# and the largest time among the other values.
_BestTwo = tuple[list[float], list[int], list[float]]


def _prefix_best_two(ev: _Evidence) -> _BestTwo:
    """For every prefix of ``ev.reads``, the two largest times of distinct values (of reads of written values)."""
    kops = ev.kops
    top: list[float] = []
    top_value: list[int] = []
    other: list[float] = []
    t1, v1, t2 = -_INF, -1, -_INF
    for j in ev.reads:
        y = kops.value[j]
        t = max(ev.first_invoke[y], kops.invoke[j]) if y in ev.first_invoke else -_INF
        if y == v1:
            t1 = max(t1, t)
        elif t > t1:
            t1, v1, t2 = t, y, t1  # the old best belongs to another value than y
        else:
            t2 = max(t2, t)
        top.append(t1)
        top_value.append(v1)
        other.append(t2)
    return top, top_value, other


def _first_above(best: _BestTwo, prefix: int, v: int, bound: float) -> int | None:
    """The first of the first ``prefix`` reads whose time exceeds ``bound`` and whose value is not ``v``.

    Whether a prefix holds one is monotone in its length, and the best two
    times of distinct values answer it, so this is a binary search.
    """
    top, top_value, other = best

    def holds(i: int) -> bool:
        return (top[i] > bound and top_value[i] != v) or other[i] > bound

    i = bisect.bisect_left(range(prefix), True, key=holds)
    return i if i < prefix else None


def _cycle_story(kops: _KeyOps, subset: list[int]) -> str | None:
    """With distinct written values: two values that would each have to come before the other."""
    clusters: dict[int, list[int]] = {}
    for j in subset:
        clusters.setdefault(kops.value[j], []).append(j)
    if any(sum(kops.is_write[j] for j in ops) != 1 for v, ops in clusters.items() if v != 0):
        return None
    ends = {v: (min(ops, key=lambda j: kops.complete[j]), max(ops, key=lambda j: kops.invoke[j]))
            for v, ops in clusters.items() if v != 0}
    pair = _crossing_pair({v: (kops.complete[e1], kops.invoke[e2]) for v, (e1, e2) in ends.items()})
    if pair is None:
        return None
    a, b = pair
    (a1, a2), (b1, b2) = ends[a], ends[b]

    def what(j: int) -> str:
        shown = _show(kops.values[kops.value[j]])
        return f"write {shown}" if kops.is_write[j] else f"a read returning {shown}"

    va, vb = _show(kops.values[a]), _show(kops.values[b])
    return (f"values {va} and {vb} of key {kops.key!r} would each have to come before the other: "
            f"{what(a1)} completed at t={_t(kops.complete[a1])} ms, before {what(b2)} began at "
            f"t={_t(kops.invoke[b2])} ms, yet {what(b1)} completed at t={_t(kops.complete[b1])} ms, "
            f"before {what(a2)} began at t={_t(kops.invoke[a2])} ms")


def _crossing_pair(spans: dict[int, tuple[float, float]]) -> tuple[int, int] | None:
    """The first values a < b, in the order of ``spans`` (a first, then b), whose clusters must each come first.

    A cluster's span is (its earliest completion, its latest invocation);
    clusters a and b cross when each one's earliest completion comes before
    the other's latest invocation. Visiting the values from the largest
    down, a Fenwick tree over the ranks of earliest completions holds the
    latest invocation among the larger values, so each value learns in
    O(log n) whether a larger one crosses it; the first that has one then
    finds its partner in one pass.
    """
    by_done = sorted(spans, key=lambda v: spans[v][0])
    rank = {v: r for r, v in enumerate(by_done)}
    dones = [spans[v][0] for v in by_done]
    tree = [-_INF] * (len(by_done) + 1)  # prefix maxima of latest invocations, by rank of earliest completion
    crossed = set()
    for v in sorted(spans, reverse=True):
        done, invoked = spans[v]
        k = bisect.bisect_left(dones, invoked)  # the values whose earliest completion precedes v's latest invocation
        latest = -_INF
        while k > 0:
            latest = max(latest, tree[k])
            k &= k - 1  # on to the node covering the ranks before this one's
        if latest > done:
            crossed.add(v)
        k = rank[v] + 1
        while k < len(tree):
            tree[k] = max(tree[k], invoked)
            k += k & -k  # on to the next node whose ranks include this one
    for a in spans:
        if a in crossed:
            a_done, a_invoked = spans[a]
            return a, next(b for b, (done, invoked) in spans.items() if b > a and done < a_invoked and invoked > a_done)
    return None


def _observed(kops: _KeyOps) -> Any:
    """For an operation: the value id it needs the key to hold (a read's value, an applied cas's expected one),
    else -1."""
    def observed(j: int) -> int:
        k = kops.kind[j]
        return kops.value[j] if k == READ else kops.expected[j] if k == CAS else -1
    return observed


def _cas_story(kops: _KeyOps, subset: list[int]) -> str:
    """Why operations of a key with compare-and-sets cannot be linearized: the simplest story that fits.

    A cas applied from a value nobody wrote; two applied cas from one value that
    only one operation wrote (the second must have seen the first's new value:
    a lost update); or, failing those, no order fits.
    """
    ops = sorted(subset, key=lambda j: (kops.invoke[j], j))
    cas_ok = [j for j in ops if kops.kind[j] == CAS and kops.complete[j] != _INF]
    writers: dict[int, int] = {}
    for j in range(len(kops)):
        if kops.is_write[j]:
            writers[kops.value[j]] = writers.get(kops.value[j], 0) + 1
    for j in cas_ok:
        e = kops.expected[j]
        if e != 0 and e not in writers:
            shown = _show(kops.values[e])
            why = f"the only write of {shown} failed" if e in kops.failed_writes else f"no operation wrote {shown}"
            return f"{_cas(kops, j)} was applied, but {why}"
    by_expected: dict[int, int] = {}
    for j in cas_ok:
        e = kops.expected[j]
        if kops.value[j] == e:
            continue  # a cas that sets what it expects leaves the value for the next one
        if writers.get(e, 0) <= (0 if e == 0 else 1) and e in by_expected:
            first = by_expected[e]
            origin = "nothing writes it again" if e == 0 else "only one operation wrote it"
            return (f"{_cas(kops, first)} and {_cas(kops, j)} were both applied from {_show(kops.values[e])} "
                    f"and {origin}: one of the two must have found the other's new value (a lost update)")
        by_expected.setdefault(e, j)
    return (f"no order of these {len(subset)} operations on key {kops.key!r} respects both their real-time order and "
            f"compare-and-set semantics")


def _cas(kops: _KeyOps, j: int) -> str:
    """The cas ``j`` as the stories describe it."""
    done = "never answered" if kops.complete[j] == _INF else f"{_t(kops.complete[j])}]"
    return (f"cas of key {kops.key!r} from {_show(kops.values[kops.expected[j]])} to "
            f"{_show(kops.values[kops.value[j]])} at t=[{_t(kops.invoke[j])}, {done} ms")


def _show(value: Any) -> str:
    """A value as an explanation shows it."""
    return "None (the initial value)" if value is None else repr(value)


def _t(ms: float) -> str:
    """A time in ms with at most three decimals and no trailing zeros."""
    return f"{ms:.3f}".rstrip("0").rstrip(".")
