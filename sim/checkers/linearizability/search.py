"""The verdict for one key: the zone test when it applies, then the just-in-time search.

The search is Wing & Gong's in Lowe's just-in-time form (the algorithm of
Porcupine), as the package docstring describes: the operations' call and
return entries sit in one time-ordered doubly linked list; the search walks it
from the head, linearizes a call whose effect the register allows, lifts that
operation out of the list and restarts from the head, and undoes its last
choice on reaching a return entry. It keeps an explicit stack (no recursion
limit) and a set of visited configurations (linearized operations as a bitset,
register value).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from .casmodel import _cas_search
from .keyops import _KeyOps
from .zones import _zone_conflict

_INF = math.inf

# The search forgets its visited configurations beyond this many (bounding memory; only speed suffers).
_MAX_SEEN = 2_000_000

_FORCED = -1  # marks a stack entry with no alternatives left to try

# An info write that a read of its value may follow: (its invoke time, its bit, its position among the info writes).
_InfoWrite = tuple[float, int, int]
# An undo record: (op, register value before, bits before, next alternative or _FORCED, info write paired or -1).
_Undo = tuple[int, int, int, int, int]


def _check(kops: _KeyOps, subset: Sequence[int], deadline: float) -> tuple[bool | None, float | list[int]]:
    """Whether the operations ``subset`` of one key are linearizable (``None``: out of time).

    The second item hints where the failure is: the operations of a zone
    conflict, or the time up to which the search got. A key with
    compare-and-sets goes to the general search of :mod:`.casmodel`.
    """
    if kops.has_cas:
        return _cas_search(kops, subset, deadline)
    witness = _zone_conflict(kops, subset)
    if witness:
        return False, witness
    verdict, wall = _search(kops, subset, deadline)
    if verdict is None and witness is not None:
        verdict = True  # the zone test is exact when written values are distinct
    return verdict, wall


def _search(kops: _KeyOps, subset: Sequence[int], deadline: float) -> tuple[bool | None, float]:
    """Whether the operations ``subset`` of one key are linearizable (``None``: out of time).

    Also returns the latest time at which the search found a dead end (a
    return entry it could not pass, or a read made unsatisfiable): the failure
    is usually already present among the operations invoked by then.
    """
    ok = [j for j in subset if kops.complete[j] != _INF]
    info = [j for j in subset if kops.complete[j] == _INF]
    if not ok:
        return True, -_INF
    search = _Search(kops, ok, info)
    unwritten = search.unwritten_read()
    if unwritten is not None:
        return False, unwritten
    return search.run(deadline)


class _Search:
    """One key's search: the entry list, the visited set, the undo stack and the per-value counts.

    The ``ok`` operations are numbered 0..n-1 (their bits in a configuration);
    entry 2*i is op i's call and 2*i + 1 its return, and entries 2n and 2n + 1
    are the list's head and tail. ``info`` writes take the bits after the ok
    operations' and are never in the list: one is linearized only together
    with a read of its value (see the package docstring).

    A value is dead when reads of it remain but no write of it does: once
    the register holds anything else, those reads can never be linearized, so
    a step that leaves a value other than the register's dead is a dead end.
    """

    __slots__ = ("op_write", "op_value", "etime", "nxt", "prv", "head", "tail", "info_by_value",
                 "pend", "rem", "reads_of", "dead", "seen", "stack", "wall")

    def __init__(self, kops: _KeyOps, ok: list[int], info: list[int]) -> None:
        n = len(ok)
        self.op_write = [kops.is_write[j] for j in ok]
        self.op_value = [kops.value[j] for j in ok]
        self.etime = _entry_times(kops, ok)
        self.nxt, self.prv = _linked_entries(self.etime)
        self.head, self.tail = 2 * n, 2 * n + 1
        self.info_by_value = _info_writes_by_value(kops, info, n)
        self.pend, self.rem, self.reads_of = _value_counts(kops, self.op_write, self.op_value, info)
        self.dead = sum(1 for p, r in zip(self.pend, self.rem) if p and not r)
        self.seen: set[tuple[int, int]] = set()
        self.stack: list[_Undo] = []
        self.wall = -_INF  # the latest dead end so far

    def unwritten_read(self) -> float | None:
        """When the earliest read of a value that nobody writes was invoked; ``None`` if there is none.

        The initial value needs no write: the register holds it at the start.
        """
        pend, rem = self.pend, self.rem
        if self.dead > (pend[0] > 0 and rem[0] == 0):
            return min(self.first_read(v, 0) for v in range(1, len(pend)) if pend[v] and not rem[v])
        return None

    def run(self, deadline: float) -> tuple[bool | None, float]:
        """Search from the empty configuration: the verdict (``None``: past ``deadline``) and the wall."""
        # Walking the entry list is the hot path, so the walk stays in this one loop over local
        # names, and so does trying a write (a method call per attempt costs 1-2% of the search).
        # Rarer steps (an info write with its read, a refused step, a dead end) are methods.
        op_write, op_value, info_by_value = self.op_write, self.op_value, self.info_by_value
        nxt, prv, head, tail = self.nxt, self.prv, self.head, self.tail
        seen, stack, bump, pend, rem = self.seen, self.stack, self.bump, self.pend, self.rem
        state = bits = alt = steps = 0
        e = -1  # the call entry being tried; -1 on arriving at a new configuration
        while True:
            steps += 1
            if not steps & 0xFFF and self.past(deadline):
                return None, self.wall
            if e < 0:
                if nxt[head] == tail:
                    return True, self.wall
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
                if op_write[i]:
                    nb = bits | (1 << i)
                    if alt or (nb, v) in seen:
                        nb = -1
                    else:
                        seen.add((nb, v))
                        bump(v, -1, 0)
                        if self.dead > (pend[v] > 0 and rem[v] == 0):
                            self.refuse(v, 1, 0, state, bits)
                            nb = -1
                        else:
                            stack.append((i, state, bits, 1, -1))
                else:  # a read of another value, possible only right after an info write of that value
                    cands = info_by_value.get(v)
                    nb = self.take_read_after_info(e, cands, alt, state, bits) if cands and alt < len(cands) else -1
                if nb >= 0:
                    state, bits = v, nb
                    _lift(nxt, prv, e)
                    e = -1
                else:
                    e, alt = nxt[e], 0
                continue
            # A return entry reached, or a forced read into a configuration already explored.
            undone = self.dead_end(e)
            if undone is None:
                return False, self.wall
            i, state, bits, alt = undone
            e = 2 * i

    def take_read_after_info(self, e: int, cands: list[_InfoWrite], alt: int, state: int, bits: int) -> int:
        """Linearize the read at call entry ``e`` right after an unused info write of its value.

        Tries the candidates from ``alt`` on, earliest invoked first, up to the
        first return entry still in the list (a write invoked after it could not
        precede the read). Returns the bits reached, or -1 if no candidate fits.
        """
        nxt, seen = self.nxt, self.seen
        i = e >> 1
        v = self.op_value[i]
        f = nxt[e]
        while not f & 1:
            f = nxt[f]
        horizon = self.etime[f]
        for k in range(alt, len(cands)):
            w_invoke, w_bit, w = cands[k]
            if w_invoke > horizon:
                break
            nb = bits | (1 << i) | w_bit
            if bits & w_bit or (nb, v) in seen:
                continue
            seen.add((nb, v))
            self.bump(v, -1, -1)
            if self.dead > (self.pend[v] > 0 and self.rem[v] == 0):
                self.refuse(v, 1, 1, state, bits)
                continue
            self.stack.append((i, state, bits, k + 1, w))
            return nb
        return -1

    def refuse(self, v: int, d_rem: int, d_pend: int, state: int, bits: int) -> None:
        """Take back a step to value ``v`` that left a dead value (the register's ``state``).

        Gives ``v`` back its counts and moves the wall to the earliest read of
        ``state`` still pending in ``bits``: the failure is at or after it.
        """
        self.wall = max(self.wall, self.first_read(state, bits))
        self.bump(v, d_rem, d_pend)

    def past(self, deadline: float) -> bool:
        """Whether ``deadline`` has passed; also forgets the visited configurations beyond ``_MAX_SEEN``.

        Called every few thousand steps: reading the clock costs more than a step.
        """
        if time.perf_counter() > deadline:
            return True
        if len(self.seen) > _MAX_SEEN:
            self.seen.clear()
        return False

    def dead_end(self, e: int) -> tuple[int, int, int, int] | None:
        """Back out of a dead end and undo linearizations up to the latest one with an alternative left.

        The dead end is the return entry ``e``, whose operation was not
        linearized in time (it moves the wall to its time), or (``e`` = -1) a
        forced read leading to a configuration already explored. Returns the
        operation undone last, the register value and bits before it and its
        next alternative, or ``None`` when nothing is left to try.
        """
        if e >= 0 and self.etime[e] > self.wall:
            self.wall = self.etime[e]
        stack, op_write, op_value = self.stack, self.op_write, self.op_value
        while stack:
            i, state, bits, alt, w = stack.pop()
            _unlift(self.nxt, self.prv, 2 * i)
            if op_write[i]:
                self.bump(op_value[i], 1, 0)
            else:
                self.bump(op_value[i], 1 if w >= 0 else 0, 1)
            if alt != _FORCED:
                return i, state, bits, alt
        return None

    def bump(self, v: int, d_rem: int, d_pend: int) -> None:
        """Change value ``v``'s counts of remaining writes and pending reads, keeping ``dead`` current."""
        pend, rem = self.pend, self.rem
        before = pend[v] > 0 and rem[v] == 0
        rem[v] += d_rem
        pend[v] += d_pend
        self.dead += (pend[v] > 0 and rem[v] == 0) - before

    def first_read(self, v: int, bits: int) -> float:
        """When the earliest read of ``v`` not linearized in ``bits`` was invoked."""
        etime = self.etime
        return min(etime[2 * i] for i in self.reads_of[v] if not bits >> i & 1)


def _entry_times(kops: _KeyOps, ok: list[int]) -> list[float]:
    """The time of every entry: op i's invocation at 2*i, its completion at 2*i + 1."""
    etime = [0.0] * (2 * len(ok))
    for i, j in enumerate(ok):
        etime[2 * i] = kops.invoke[j]
        etime[2 * i + 1] = kops.complete[j]
    return etime


def _linked_entries(etime: list[float]) -> tuple[list[int], list[int]]:
    """The entries as a doubly linked list (next and previous) in time order, between a head and a tail.

    At equal times calls come first, so touching operations are concurrent.
    """
    n2 = len(etime)
    order = sorted(range(n2), key=lambda e: (etime[e], e & 1, e))
    head, tail = n2, n2 + 1
    nxt = [0] * (n2 + 2)
    prv = [0] * (n2 + 2)
    prev = head
    for e in order:
        nxt[prev] = e
        prv[e] = prev
        prev = e
    nxt[prev] = tail
    prv[tail] = prev
    return nxt, prv


def _info_writes_by_value(kops: _KeyOps, info: list[int], n: int) -> dict[int, list[_InfoWrite]]:
    """The info writes of each value, earliest invoked first; their bits follow the ``n`` ok operations'."""
    by_value: dict[int, list[_InfoWrite]] = {}
    for b, j in enumerate(info):
        by_value.setdefault(kops.value[j], []).append((kops.invoke[j], 1 << (n + b), b))
    for cands in by_value.values():
        cands.sort(key=lambda c: c[0])
    return by_value


def _value_counts(kops: _KeyOps, op_write: list[bool], op_value: list[int],
                  info: list[int]) -> tuple[list[int], list[int], dict[int, list[int]]]:
    """Per value id: the reads not yet linearized, the writes still available (ok writes
    and info writes) and which ops read it, before anything is linearized."""
    pend = [0] * len(kops.values)
    rem = [0] * len(kops.values)
    reads_of: dict[int, list[int]] = {}
    for i, v in enumerate(op_value):
        if op_write[i]:
            rem[v] += 1
        else:
            pend[v] += 1
            reads_of.setdefault(v, []).append(i)
    for j in info:
        rem[kops.value[j]] += 1
    return pend, rem, reads_of


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
