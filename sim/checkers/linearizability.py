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
Python's recursion limit.

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
    elapsed: float = field(default=0.0)


@dataclass(frozen=True, eq=False)
class _KeyOps:
    """The operations of one key that the search needs, in input order."""

    key: Any
    rows: list[int]  # positions in the input frame
    is_write: list[bool]
    value: list[int]  # value ids; id 0 is None, the initial value
    invoke: list[float]
    complete: list[float]  # +inf for info writes
    values: list[Any]  # value id -> value
    failed_writes: frozenset[int]  # value ids of writes that failed

    def __len__(self) -> int:
        return len(self.rows)


def check_linearizable(history: pd.DataFrame, *, time_limit: float | None = None) -> LinearizabilityResult:
    """Check that a key-value register history is linearizable.

    ``history`` has (at least) the columns of :mod:`sim.history`:
    ``op`` (``read``/``write``), ``key``, ``value``, ``invoke``, ``complete``
    and ``outcome`` (``ok``/``fail``/``info``). ``time_limit`` bounds the
    search in seconds; when it is reached the verdict is ``None``.
    """
    start = time.perf_counter()
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    deadline = _INF if time_limit is None else start + time_limit
    per_key = _prepare(history)
    keys_checked = ops_checked = 0
    for kops in per_key:
        verdict, wall = _search(kops, range(len(kops)), deadline)
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
            subset = _shrink(kops, wall, deadline)
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
    vids: dict[Any, dict[Any, int]] = {}
    failed: dict[Any, set[int]] = {}
    wanted = is_ok | (is_info & is_write) | (is_fail & is_write)
    for pos in np.flatnonzero(wanted).tolist():
        key = keys[pos]
        kops = groups.get(key)
        if kops is None:
            kops = groups[key] = _KeyOps(key, [], [], [], [], [], [None], frozenset())
            vids[key] = {}
            failed[key] = set()
        vid = _value_id(kops, vids[key], values[pos])
        if is_fail[pos]:
            failed[key].add(vid)
            continue
        kops.rows.append(pos)
        kops.is_write.append(bool(is_write[pos]))
        kops.value.append(vid)
        kops.invoke.append(float(invoke[pos]))
        kops.complete.append(float(complete[pos]) if is_ok[pos] else _INF)
    return [_KeyOps(k.key, k.rows, k.is_write, k.value, k.invoke, k.complete, k.values,
                    frozenset(failed[k.key])) for k in groups.values()]


def _reject(history: pd.DataFrame, bad: np.ndarray, what: str, column: str) -> None:
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        label = history.index[pos]
        ident = f"op_id {history['op_id'].iloc[pos]!r}" if "op_id" in history.columns else f"index {label!r}"
        raise ValueError(f"history row {ident}: {what}, got {column}={history[column].iloc[pos]!r} "
                         f"({int(bad.sum())} bad row(s))")


def _value_id(kops: _KeyOps, ids: dict[Any, int], value: Any) -> int:
    """A small integer for ``value``; ``None`` and NaN (a missing value) are id 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    if not isinstance(value, Hashable):
        value = repr(value)
    vid = ids.get(value)
    if vid is None:
        vid = ids[value] = len(kops.values)
        kops.values.append(value)
    return vid


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
        if not steps & 0xFFF and time.perf_counter() > deadline:
            return None, wall
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
            bump(op_value[i], op_write[i] or w >= 0, 0 if op_write[i] else 1)
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


def _shrink(kops: _KeyOps, wall: float, deadline: float) -> list[int]:
    """A small non-linearizable subset of one key's operations.

    Starts from the operations invoked before the search's last wall, then
    greedily drops chunks of halving size while what is left stays
    non-linearizable. A read keeps a write of its value whenever the key has
    one, so the counterexample tells the real story (a stale read rather than
    "a value that was never written").
    """
    until = min(deadline, time.perf_counter() + SHRINK_SECONDS)
    checks = [0]

    def failing(subset: list[int]) -> bool:
        checks[0] += 1
        return _search(kops, subset, until)[0] is False

    def spent() -> bool:
        return checks[0] >= SHRINK_CHECKS or time.perf_counter() > until

    cur = list(range(len(kops)))
    written = {kops.value[j] for j in cur if kops.is_write[j]}
    early = {j for j in cur if kops.invoke[j] <= wall}
    read_values = {kops.value[j] for j in early if not kops.is_write[j]}
    prefix = [j for j in cur if j in early or (kops.is_write[j] and kops.value[j] in read_values)]
    if len(prefix) < len(cur) and failing(prefix):
        cur = prefix

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
    for j in reads:  # a new-old inversion
        v = kops.value[j]
        done = last_done(v)
        for j1 in reads:
            y = kops.value[j1]
            ws = writes_of(y)
            if (y != v and ws and kops.complete[j1] < kops.invoke[j]
                    and done < min(kops.invoke[w] for w in ws)):
                return (f"{read(j)}, but an earlier read completed at t={_t(kops.complete[j1])} ms had already "
                        f"returned the newer value {_show(vals[y])}, whose writes all began after every write of "
                        f"{_show(vals[v])} had completed (a new-old inversion)")
    last = reads[-1] if reads else subset[-1]
    return (f"no order of these {len(subset)} operations on key {key!r} respects both their real-time order and "
            f"register semantics; the {read(last) if reads else 'last operation'} cannot be placed")


def _ok_writes_except(kops: _KeyOps, subset: list[int], v: int) -> list[int]:
    """The ``ok`` writes in ``subset`` of values other than ``v``."""
    return [x for x in subset if kops.is_write[x] and kops.value[x] != v and kops.complete[x] != _INF]


def _show(value: Any) -> str:
    return "None (the initial value)" if value is None else repr(value)


def _t(ms: float) -> str:
    return f"{ms:.3f}".rstrip("0").rstrip(".")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
