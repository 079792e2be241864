"""Gibbons & Korach's zone test: an exact O(n log n) verdict when written values are distinct.

With distinct values, a write and the reads of its value (a cluster) sit
together in any linearization, so a key's history is linearizable iff no read
precedes its own write and no two clusters must each come before the other:
cluster A must precede B when some operation of A completes before some
operation of B is invoked, i.e. when A's earliest completion comes before B's
latest invocation. Clusters are summarised by those two times (their zone), so
the test is a sort and a sweep. The initial ``None`` is a write at -inf; an
``info`` write nobody read may not have happened and is left out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from .keyops import _KeyOps

_INF = math.inf

# A cluster's zone: [earliest completion, its op, latest invocation, its op]; op -1 is the initial write.
_Zone = list[Any]


def _zone_conflict(kops: _KeyOps, subset: Sequence[int]) -> list[int] | None:
    """The zone test on the operations ``subset`` of one key.

    Returns ``None`` when written values repeat (the test does not apply),
    ``[]`` when the sub-history is linearizable, else a few operations that
    are not.
    """
    split = _writers_and_reads(kops, subset)
    if split is None:
        return None
    writer, reads = split
    early = _read_before_its_write(kops, writer, reads)
    if early:
        return early
    zones = _zones(kops, writer, reads)
    crossing = _crossing_clusters(zones)
    if crossing is None:
        return []
    found = {zones[v][1] for v in crossing} | {zones[v][3] for v in crossing} | {writer.get(v, -1) for v in crossing}
    return sorted(found - {-1})


def _writers_and_reads(kops: _KeyOps, subset: Sequence[int]) -> tuple[dict[int, int], list[int]] | None:
    """The write of each value (value id -> op) and the reads, or ``None`` if a value is written twice.

    Writing ``None`` (the initial value) again counts as a repeat.
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
    return writer, reads


def _read_before_its_write(kops: _KeyOps, writer: dict[int, int], reads: list[int]) -> list[int]:
    """The first read of a value nobody wrote (``[read]``) or that completed before its write began
    (``[write, read]``); ``[]`` if there is none."""
    inv, done, val = kops.invoke, kops.complete, kops.value
    for j in reads:
        v = val[j]
        if v != 0 and v not in writer:
            return [j]
        if v != 0 and done[j] < inv[writer[v]]:
            return [writer[v], j]
    return []


def _zones(kops: _KeyOps, writer: dict[int, int], reads: list[int]) -> dict[int, _Zone]:
    """Each cluster's zone by value; an ``info`` write nobody read has none (it may not have happened)."""
    inv, done, val = kops.invoke, kops.complete, kops.value
    read_values = {val[j] for j in reads}
    zones: dict[int, _Zone] = {0: [-_INF, -1, -_INF, -1]}
    for v, j in writer.items():
        if done[j] != _INF or v in read_values:
            zones[v] = [done[j], j, inv[j], j]
    for j in reads:
        z = zones[val[j]]
        if done[j] < z[0]:
            z[0], z[1] = done[j], j
        if inv[j] > z[2]:
            z[2], z[3] = inv[j], j
    return zones


def _crossing_clusters(zones: dict[int, _Zone]) -> tuple[int, int] | None:
    """Two values whose clusters would each have to come before the other, or ``None``.

    Two clusters conflict iff each one's earliest completion precedes the
    other's latest invocation. Forward zones (earliest completion first) are
    swept in order, keeping the one reaching furthest; a backward zone
    conflicts with the forward zone starting just before its own start if
    that one reaches past its end.
    """
    forward = sorted((z[0], z[2], v) for v, z in zones.items() if z[0] < z[2])
    reach, reach_v = -_INF, -1
    for lo, hi, v in forward:
        if lo < reach:
            return reach_v, v
        if hi > reach:
            reach, reach_v = hi, v
    starts = [lo for lo, _, _ in forward]
    for v, z in zones.items():
        if z[0] >= z[2]:  # a backward zone [latest invocation, earliest completion]
            k = bisect.bisect_left(starts, z[2]) - 1
            if k >= 0 and z[0] < forward[k][1]:
                return forward[k][2], v
    return None
