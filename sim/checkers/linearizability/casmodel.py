"""The search for a key whose operations include compare-and-sets.

The register search (:mod:`.search`) and the zone test (:mod:`.zones`) lean on
facts that hold only for reads and writes (an ``info`` write needs placing only
just before a read of its value; a read can only return a written value). A
compare-and-set breaks them: it both reads and writes, and an ``info`` one may
have taken effect only if the key held its expected value at that moment. So a
key with compare-and-sets gets this general form of the same search, Wing &
Gong's in Lowe's just-in-time form, with the model written out:

=================  ================================  =================
operation          allowed when the register holds s  then it holds
=================  ================================  =================
read of v          s == v                             s
write of v         always                             v
cas(e, n)          s == e                             n
cas(e, n) missed   s != e                             s
=================  ================================  =================

A cas ``ok`` was applied; a cas that failed with ``"precondition failed"``
(*missed*) observed a value other than ``e``; an ``info`` write or cas may have
taken effect at any moment after its invocation, or never: it has a call entry
and no return entry, so the search may linearize it whenever it is callable,
and a linearization is complete once every operation with a return is in it.

A callable read or missed cas that the current value allows is linearized at
once without trying alternatives: it changes nothing, so any linearization
could have it here instead. Visited configurations (linearized operations as
a bitset, register value) are not explored twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from .keyops import CAS, CAS_MISSED, READ, _KeyOps

_INF = math.inf

# Forget the visited configurations beyond this many (bounding memory; only speed suffers), as .search does.
_MAX_SEEN = 2_000_000


def _cas_search(kops: _KeyOps, subset: Sequence[int], deadline: float) -> tuple[bool | None, float]:
    """Whether the operations ``subset`` of a key with compare-and-sets are linearizable (``None``: out of time).

    Also returns the latest time at which the search found a dead end (a return
    entry it could not pass), the hint :func:`.counterexample._shrink` starts from.
    """
    ops = list(subset)
    n = len(ops)
    has_return = [kops.complete[j] != _INF for j in ops]
    left = sum(has_return)
    if not left:
        return True, -_INF
    kind = [kops.kind[j] for j in ops]
    value = [kops.value[j] for j in ops]
    expected = [kops.expected[j] for j in ops]
    etime = [0.0] * (2 * n)
    present = []
    for i, j in enumerate(ops):
        etime[2 * i] = kops.invoke[j]
        present.append(2 * i)
        if has_return[i]:
            etime[2 * i + 1] = kops.complete[j]
            present.append(2 * i + 1)
    present.sort(key=lambda e: (etime[e], e & 1, e))  # calls first at equal times: touching ops overlap
    head, tail = 2 * n, 2 * n + 1
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    prev = head
    for e in present:
        nxt[prev], prv[e] = e, prev
        prev = e
    nxt[prev], prv[tail] = tail, prev

    def allowed(i: int, s: int) -> int:
        """The register value after op ``i`` from ``s``, or -1 if the model forbids it there."""
        k = kind[i]
        if k == READ:
            return s if value[i] == s else -1
        if k == CAS:
            return value[i] if expected[i] == s else -1
        if k == CAS_MISSED:
            return s if expected[i] != s else -1
        return value[i]  # a write

    def lift(i: int) -> None:
        for e in (2 * i, 2 * i + 1) if has_return[i] else (2 * i,):
            nxt[prv[e]] = nxt[e]
            prv[nxt[e]] = prv[e]

    def unlift(i: int) -> None:
        for e in (2 * i + 1, 2 * i) if has_return[i] else (2 * i,):
            nxt[prv[e]] = e
            prv[nxt[e]] = e

    seen: set[tuple[int, int]] = set()
    stack: list[tuple[int, int, int, bool]] = []  # (op, value before, bits before, forced)
    state = bits = steps = 0
    wall = -_INF
    e = -1  # -1: arrived at a new configuration; otherwise the entry being looked at
    while True:
        steps += 1
        if not steps & 0xFFF:
            if time.perf_counter() > deadline:
                return None, wall
            if len(seen) > _MAX_SEEN:
                seen.clear()
        if e == -1:
            if not left:
                return True, wall
            f = nxt[head]
            while not f & 1 and (kind[f >> 1] not in (READ, CAS_MISSED) or allowed(f >> 1, state) < 0):
                f = nxt[f]
            if f & 1:  # no observer to take at once: try every callable operation
                e = nxt[head]
            else:
                i = f >> 1
                nb = bits | (1 << i)
                if (nb, state) in seen:
                    e = tail  # explored from here before, without success
                else:
                    seen.add((nb, state))
                    stack.append((i, state, bits, True))
                    bits = nb
                    left -= has_return[i]
                    lift(i)
                    continue
        if e & 1:  # a return entry (or the tail): this path is a dead end; undo up to the last choice
            if e != tail and etime[e] > wall:
                wall = etime[e]
            while stack:
                i, state, bits, forced = stack.pop()
                unlift(i)
                left += has_return[i]
                if not forced:
                    e = nxt[2 * i]
                    break
            else:
                return False, wall
            continue
        i = e >> 1
        s = allowed(i, state)
        if s >= 0:
            nb = bits | (1 << i)
            if (nb, s) not in seen:
                seen.add((nb, s))
                stack.append((i, state, bits, False))
                state, bits = s, nb
                left -= has_return[i]
                lift(i)
                e = -1
                continue
        e = nxt[e]
