"""Linearizability of key-value register histories.

Every key is an independent read/write register whose initial value is
``None``. A history is linearizable when each key's sub-history is
(P-compositionality), so keys are checked one at a time.

A key's sub-history is checked with the Wing & Gong search in Lowe's
just-in-time form (the algorithm of Porcupine): the operations' call and
return entries sit in one time-ordered doubly linked list. Walking it from the
head, the search linearizes a call whose effect the register allows, lifts that
operation out of the list and restarts from the head; reaching a return entry
means that operation can no longer be linearized on the current path, so the
search undoes its last choice. A set of visited (linearized operations as a
bitset, register value) pairs stops it from exploring the same configuration
twice. The search keeps an explicit stack, so long histories never hit
Python's recursion limit. Two register facts prune it: a callable read of the
current value can always be linearized at once, and a configuration in which
some remaining read returns a value that is neither current nor still to be
written is a dead end.

The search is exponential in the worst case, and proving a history wrong
means exhausting it, which gets slow when many operations overlap. So when a
key's writes all write distinct values (the usual case), Gibbons & Korach's
zone test, an exact O(n log n) criterion, looks for a violation first. A
"linearizable" verdict still comes from the search, which finds an actual
linearization; the zone test decides alone only if the search runs out of time.

Outcomes: ``fail`` operations did not happen and are dropped; ``info`` reads
constrain nothing and are dropped; an ``info`` write has no deadline and may
or may not have happened. Any linearization can be rearranged so that each
``info`` write that happened comes immediately before a read returning its
value (moving it later is always allowed, and one followed by a write or by
nothing can be removed), so the search only ever linearizes an ``info`` write
together with such a read. Two operations whose times touch (one completes at
the instant the other is invoked) count as concurrent.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["check_linearizable", "LinearizabilityResult", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("op", "key", "value", "invoke", "complete", "outcome")

# Bounded effort spent shrinking a counterexample: seconds and number of re-checks.
SHRINK_SECONDS = 2.0
SHRINK_CHECKS = 2000
# The search forgets its visited configurations beyond this many (bounding memory; only speed suffers).
_MAX_SEEN = 2_000_000

_INF = math.inf


@dataclass(frozen=True, eq=False)
class LinearizabilityResult:
    """The verdict of :func:`check_linearizable` and its evidence.

    ``linearizable`` is ``None`` only when the time limit was reached first.
    ``keys_checked`` and ``ops_checked`` count the keys whose search finished
    and the operations that entered those searches (``ok`` operations and
    ``info`` writes). When the history is not linearizable, ``failed_key`` is
    the first key found to be wrong and ``counterexample`` holds a few rows of
    the input that on their own are not linearizable.
    """

    linearizable: bool | None
    keys_checked: int
    ops_checked: int
    failed_key: Any = None
    counterexample: pd.DataFrame | None = None
    explanation: str = ""
    elapsed: float = 0.0


@dataclass(eq=False)
class _KeyOps:
    """The operations of one key that the search needs (``ok`` ones and ``info`` writes), in input order."""

    key: Any
    rows: list[int] = field(default_factory=list)  # positions in the input frame
    is_write: list[bool] = field(default_factory=list)
    value: list[int] = field(default_factory=list)  # value ids; id 0 is None, the initial value
    invoke: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)  # +inf for info writes
    values: list[Any] = field(default_factory=lambda: [None])  # value id -> value
    value_ids: dict[Any, int] = field(default_factory=dict)
    failed_writes: set[int] = field(default_factory=set)  # value ids of writes that failed

    def __len__(self) -> int:
        return len(self.rows)

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


def check_linearizable(history: pd.DataFrame, *, time_limit: float | None = None) -> LinearizabilityResult:
    """Check that a key-value register history is linearizable.

    ``history`` has (at least) the columns of :mod:`sim.history`:
    ``op`` (``read``/``write``), ``key``, ``value``, ``invoke``, ``complete``
    and ``outcome`` (``ok``/``fail``/``info``). ``time_limit`` bounds the
    check in seconds; when it is reached the verdict is ``None``. Shrinking a
    counterexample takes at most ``SHRINK_SECONDS`` more (and never goes past
    the time limit).
    """
    start = time.perf_counter()
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    deadline = _INF if time_limit is None else start + time_limit
    per_key = _prepare(history)
    keys_checked = ops_checked = 0
    for kops in per_key:
        verdict, hint = _check(kops, range(len(kops)), deadline)
        if verdict is None:
            return LinearizabilityResult(
                None, keys_checked, ops_checked,
                explanation=(f"time limit of {time_limit:g} s reached while checking key {kops.key!r} "
                             f"({_count(len(kops), 'operation')}) after {_count(keys_checked, 'linearizable key')}"),
                elapsed=time.perf_counter() - start,
            )
        keys_checked += 1
        ops_checked += len(kops)
        if not verdict:
            subset = _shrink(kops, hint, deadline)
            rows = sorted(kops.rows[j] for j in subset)
            return LinearizabilityResult(
                False, keys_checked, ops_checked, failed_key=kops.key,
                counterexample=history.iloc[rows],
                explanation=_explain(kops, subset),
                elapsed=time.perf_counter() - start,
            )
    return LinearizabilityResult(
        True, keys_checked, ops_checked,
        explanation=f"all {_count(ops_checked, 'operation')} on {_count(keys_checked, 'key')} can be linearized",
        elapsed=time.perf_counter() - start,
    )


# -- input -----------------------------------------------------------------------------------


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

    is_read, is_write = op == "read", op == "write"
    is_ok, is_fail, is_info = outcome == "ok", outcome == "fail", outcome == "info"
    _reject(history, ~(is_read | is_write), "op must be 'read' or 'write'", "op")
    _reject(history, ~(is_ok | is_fail | is_info), "outcome must be 'ok', 'fail' or 'info'", "outcome")
    _reject(history, ~np.isfinite(invoke), "invoke must be a finite time", "invoke")
    _reject(history, is_ok & ~(complete >= invoke), "an ok operation needs complete >= invoke", "complete")

    groups: dict[Any, _KeyOps] = {}
    wanted = is_ok | (is_info & is_write) | (is_fail & is_write)
    for pos in np.flatnonzero(wanted).tolist():
        key = keys[pos]
        kops = groups.get(key)
        if kops is None:
            kops = groups[key] = _KeyOps(key)
        vid = kops.value_id(values[pos])
        if is_fail[pos]:
            kops.failed_writes.add(vid)
            continue
        kops.rows.append(pos)
        kops.is_write.append(bool(is_write[pos]))
        kops.value.append(vid)
        kops.invoke.append(float(invoke[pos]))
        kops.complete.append(float(complete[pos]) if is_ok[pos] else _INF)
    return list(groups.values())


def _reject(history: pd.DataFrame, bad: np.ndarray, what: str, column: str) -> None:
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        label = history.index[pos]
        ident = f"op_id {history['op_id'].iloc[pos]!r}" if "op_id" in history.columns else f"index {label!r}"
        raise ValueError(f"history row {ident}: {what}, got {column}={history[column].iloc[pos]!r} "
                         f"({int(bad.sum())} bad row(s))")


# -- verdict for one key -----------------------------------------------------------------------


def _check(kops: _KeyOps, subset: Sequence[int], deadline: float) -> tuple[bool | None, float | list[int]]:
    """Whether the operations ``subset`` of one key are linearizable (``None``: out of time).

    The second item hints where the failure is: the operations of a zone
    conflict, or the time up to which the search got.
    """
    witness = _zone_conflict(kops, subset)
    if witness:
        return False, witness
    verdict, wall = _search(kops, subset, deadline)
    if verdict is None and witness is not None:
        verdict = True  # the zone test is exact when written values are distinct
    return verdict, wall


def _zone_conflict(kops: _KeyOps, subset: Sequence[int]) -> list[int] | None:
    """Gibbons & Korach's zone test, for sub-histories whose writes all write distinct values.

    Returns ``None`` when values repeat (the test does not apply), ``[]`` when
    the sub-history is linearizable, else a few operations that are not.
    With distinct values, a write and the reads of its value (a cluster) sit
    together in any linearization, so the history is linearizable iff no read
    precedes its own write and no two clusters must each come before the other:
    cluster A must precede B when some operation of A completes before some
    operation of B is invoked, i.e. when A's earliest completion comes before
    B's latest invocation. Clusters are summarised by those two times, so the
    test is a sort and a sweep. The initial ``None`` is a write at -inf; an
    ``info`` write nobody read may not have happened and is left out.
    """
    writer: dict[int, int] = {}
    reads: list[int] = []
    for j in subset:
        if kops.is_write[j]:
            v = kops.value[j]
            if v == 0 or v in writer:
                return None
            writer[v] = j
        else:
            reads.append(j)
    inv, done, val = kops.invoke, kops.complete, kops.value
    read_values = {val[j] for j in reads}
    # cluster value -> [earliest completion, its op, latest invocation, its op]; op -1 is the initial write
    zones: dict[int, list[Any]] = {0: [-_INF, -1, -_INF, -1]}
    for v, j in writer.items():
        if done[j] != _INF or v in read_values:
            zones[v] = [done[j], j, inv[j], j]
    for j in reads:
        v = val[j]
        if v != 0 and v not in writer:
            return [j]
        if v != 0 and done[j] < inv[writer[v]]:
            return [writer[v], j]
        z = zones[v]
        if done[j] < z[0]:
            z[0], z[1] = done[j], j
        if inv[j] > z[2]:
            z[2], z[3] = inv[j], j

    def ops_of(*vs: int) -> list[int]:
        found = {zones[v][1] for v in vs} | {zones[v][3] for v in vs} | {writer.get(v, -1) for v in vs}
        return sorted(found - {-1})

    # Two clusters conflict iff each one's earliest completion precedes the other's latest invocation.
    forward = sorted((z[0], z[2], v) for v, z in zones.items() if z[0] < z[2])
    reach, reach_v = -_INF, -1
    for lo, hi, v in forward:
        if lo < reach:
            return ops_of(reach_v, v)
        if hi > reach:
            reach, reach_v = hi, v
    starts = [lo for lo, _, _ in forward]
    for v, z in zones.items():
        if z[0] >= z[2]:  # a backward zone [latest invocation, earliest completion]
            k = bisect.bisect_left(starts, z[2]) - 1
            if k >= 0 and z[0] < forward[k][1]:
                return ops_of(forward[k][2], v)
    return []


# -- search ----------------------------------------------------------------------------------


def _search(kops: _KeyOps, subset: Sequence[int], deadline: float) -> tuple[bool | None, float]:
    """Whether the operations ``subset`` of one key are linearizable (``None``: out of time).

    Also returns the latest time at which the search found a dead end (a
    return entry it could not pass, or a read made unsatisfiable): the failure
    is usually already present among the operations invoked by then.
    """
    ok = [j for j in subset if kops.complete[j] != _INF]
    info = [j for j in subset if kops.complete[j] == _INF]
    n = len(ok)
    if n == 0:
        return True, -_INF
    op_write = [kops.is_write[j] for j in ok]
    op_value = [kops.value[j] for j in ok]
    etime = [0.0] * (2 * n)  # entry 2*i is op i's call, 2*i + 1 its return
    for i, j in enumerate(ok):
        etime[2 * i] = kops.invoke[j]
        etime[2 * i + 1] = kops.complete[j]
    # At equal times calls come first, so touching operations are concurrent.
    order = sorted(range(2 * n), key=lambda e: (etime[e], e & 1, e))
    head, tail = 2 * n, 2 * n + 1
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    prev = head
    for e in order:
        nxt[prev] = e
        prv[e] = prev
        prev = e
    nxt[prev] = tail
    prv[tail] = prev
    # info writes by value: (invoke, bit, position), earliest first; their bits follow the ok ops'
    info_by_value: dict[int, list[tuple[float, int, int]]] = {}
    for b, j in enumerate(info):
        info_by_value.setdefault(kops.value[j], []).append((kops.invoke[j], 1 << (n + b), b))
    for cands in info_by_value.values():
        cands.sort(key=lambda c: c[0])

    # A value is dead when reads of it remain but no write of it does: once the
    # register holds anything else, those reads can never be linearized.
    pend = [0] * len(kops.values)  # unlinearized reads per value
    rem = [0] * len(kops.values)  # unlinearized ok writes and unused info writes per value
    reads_of: dict[int, list[int]] = {}
    for i in range(n):
        if op_write[i]:
            rem[op_value[i]] += 1
        else:
            pend[op_value[i]] += 1
            reads_of.setdefault(op_value[i], []).append(i)
    for j in info:
        rem[kops.value[j]] += 1
    dead = sum(1 for v in range(len(pend)) if pend[v] and not rem[v])
    state = bits = 0

    def bump(v: int, d_rem: int, d_pend: int) -> None:
        nonlocal dead
        before = pend[v] > 0 and rem[v] == 0
        rem[v] += d_rem
        pend[v] += d_pend
        dead += (pend[v] > 0 and rem[v] == 0) - before

    def first_read(v: int) -> float:
        """When the earliest unlinearized read of ``v`` was invoked."""
        return min(etime[2 * i] for i in reads_of[v] if not bits >> i & 1)

    if dead > (pend[0] > 0 and rem[0] == 0):
        return False, min(first_read(v) for v in range(1, len(pend)) if pend[v] and not rem[v])

    wall = -_INF
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[int, int, int, int, int]] = []  # (op, state before, bits before, next alternative, info write)
    e = -1  # the call entry being tried; -1 on arriving at a new configuration
    alt = steps = 0
    while True:
        steps += 1
        if not steps & 0xFFF:
            if time.perf_counter() > deadline:
                return None, wall
            if len(seen) > _MAX_SEEN:
                seen.clear()
        if e < 0:
            if nxt[head] == tail:
                return True, wall
            # Linearizing a callable read of the current value right away loses
            # nothing (it could be moved here from any later position), so it
            # is taken without considering alternatives.
            f = nxt[head]
            while not f & 1 and (op_write[f >> 1] or op_value[f >> 1] != state):
                f = nxt[f]
            if f & 1:
                e, alt = nxt[head], 0
            else:
                i = f >> 1
                nb = bits | (1 << i)
                if (nb, state) not in seen:
                    seen.add((nb, state))
                    bump(state, 0, -1)
                    stack.append((i, state, bits, _FORCED, -1))
                    bits = nb
                    _lift(nxt, prv, f)
                    continue
        if e >= 0 and not e & 1:
            i = e >> 1
            v = op_value[i]
            moved = False
            if op_write[i]:
                if alt == 0 and (bits | (1 << i), v) not in seen:
                    nb = bits | (1 << i)
                    seen.add((nb, v))
                    bump(v, -1, 0)
                    if dead > (pend[v] > 0 and rem[v] == 0):
                        wall = max(wall, first_read(state))
                        bump(v, 1, 0)
                    else:
                        stack.append((i, state, bits, 1, -1))
                        moved = True
            else:  # a read of another value, possible only right after an info write of that value
                cands = info_by_value.get(v)
                if cands is not None and alt < len(cands):
                    f = nxt[e]  # the first return entry bounds which info writes were invoked in time
                    while not f & 1:
                        f = nxt[f]
                    horizon = etime[f]
                    for k in range(alt, len(cands)):
                        w_invoke, w_bit, w = cands[k]
                        if w_invoke > horizon:
                            break
                        nb = bits | (1 << i) | w_bit
                        if bits & w_bit or (nb, v) in seen:
                            continue
                        seen.add((nb, v))
                        bump(v, -1, -1)
                        if dead > (pend[v] > 0 and rem[v] == 0):
                            wall = max(wall, first_read(state))
                            bump(v, 1, 1)
                            continue
                        stack.append((i, state, bits, k + 1, w))
                        nb |= w_bit
                        moved = True
                        break
            if moved:
                state, bits = v, nb
                _lift(nxt, prv, e)
                e = -1
                continue
            e, alt = nxt[e], 0
            continue
        # A dead end: a return entry whose operation was not linearized in time,
        # or a forced read leading to a configuration already explored.
        if e >= 0 and etime[e] > wall:
            wall = etime[e]
        while True:
            if not stack:
                return False, wall
            i, state, bits, alt, w = stack.pop()
            _unlift(nxt, prv, 2 * i)
            if op_write[i]:
                bump(op_value[i], 1, 0)
            else:
                bump(op_value[i], 1 if w >= 0 else 0, 1)
            if alt != _FORCED:
                break
        e = 2 * i


_FORCED = -1  # marks a stack entry with no alternatives left to try


def _lift(nxt: list[int], prv: list[int], call: int) -> None:
    """Unlink an operation's call entry, then its return entry."""
    ret = call + 1
    nxt[prv[call]] = nxt[call]
    prv[nxt[call]] = prv[call]
    nxt[prv[ret]] = nxt[ret]
    prv[nxt[ret]] = prv[ret]


def _unlift(nxt: list[int], prv: list[int], call: int) -> None:
    """Relink an operation's return entry, then its call entry (the reverse of :func:`_lift`)."""
    ret = call + 1
    nxt[prv[ret]] = ret
    prv[nxt[ret]] = ret
    nxt[prv[call]] = call
    prv[nxt[call]] = call


# -- counterexample --------------------------------------------------------------------------


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
            return f"{read(j)}, but the write of that value was invoked only at t={_t(min(kops.invoke[w] for w in ws))} ms"
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
    return "None (the initial value)" if value is None else repr(value)


def _t(ms: float) -> str:
    return f"{ms:.3f}".rstrip("0").rstrip(".")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
