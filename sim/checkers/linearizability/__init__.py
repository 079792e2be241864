"""Linearizability of key-value register histories.

Every key is an independent read/write (and compare-and-set) register whose initial value is
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

Compare-and-set (``op == "cas"``, ``value`` the pair ``(expected, new)``): an
``ok`` cas was applied, so the key held ``expected`` and then holds ``new``; a
``fail`` cas whose ``error`` is ``"precondition failed"`` observed a value other
than ``expected``; any other ``fail`` cas is dropped; an ``info`` cas may have
applied at any moment after its invocation, or never. The register facts above
do not hold for it, so a key with compare-and-sets is checked by the general
search of :mod:`.casmodel`, which follows the same scheme with the model
written out (the zone test does not apply).

The package is laid out as the check runs: :mod:`.keyops` validates the
history and splits it by key, :mod:`.zones` is the zone test, :mod:`.search`
the search (and the verdict for one key, which uses both), and
:mod:`.counterexample` shrinks a failure and explains it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

# Also importable from here, as before the checker became a package (the tests reach into these).
from .counterexample import SHRINK_CHECKS, SHRINK_SECONDS, _explain, _shrink  # noqa: F401
from .keyops import (
    REQUIRED_COLUMNS,
    _KeyOps,  # noqa: F401
    _prepare,
)
from .search import _MAX_SEEN, _check, _search  # noqa: F401
from .zones import _zone_conflict  # noqa: F401

__all__ = ["check_linearizable", "LinearizabilityResult", "REQUIRED_COLUMNS"]

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

    ``shrunk`` tells whether shrinking the counterexample finished (no single
    operation could be dropped any more); ``None`` when there is none. When it
    is ``False`` the shrink's own budget or the time limit ran out first, and
    the counterexample is the smallest found by then, possibly the whole key;
    if the time limit was the reason, the explanation says so.
    """

    linearizable: bool | None
    keys_checked: int
    ops_checked: int
    failed_key: Any = None
    counterexample: pd.DataFrame | None = None
    explanation: str = ""
    elapsed: float = 0.0
    shrunk: bool | None = None


def check_linearizable(history: pd.DataFrame, *, time_limit: float | None = None) -> LinearizabilityResult:
    """Check that a key-value register history is linearizable.

    ``history`` has (at least) the columns of :mod:`sim.history`:
    ``op`` (``read``/``write``/``cas``), ``key``, ``value``, ``invoke``, ``complete``
    and ``outcome`` (``ok``/``fail``/``info``), and for compare-and-sets ``error``
    (see the module docstring). ``time_limit`` bounds the
    whole call in seconds: the search, shrinking a counterexample and
    explaining it share one deadline. When it is reached during the search the
    verdict is ``None``; when it is reached while shrinking, the smallest
    counterexample found so far is returned with ``shrunk=False`` and an
    explanation that says so. Shrinking also stops after ``SHRINK_SECONDS``
    or ``SHRINK_CHECKS`` re-checks, with or without a limit. The explanation
    is not interrupted: it is O(n log n) in the counterexample's size, a few
    milliseconds for thousands of operations.
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
            shrunk = _shrink(kops, hint, deadline)
            explanation = _explain(kops, shrunk.ops)
            if shrunk.out_of_time:
                explanation += (f" (counterexample not fully shrunk: the time limit of {time_limit:g} s was reached "
                                f"while shrinking it)")
            return LinearizabilityResult(
                False, keys_checked, ops_checked, failed_key=kops.key,
                counterexample=history.iloc[sorted(kops.rows[j] for j in shrunk.ops)],
                explanation=explanation,
                elapsed=time.perf_counter() - start,
                shrunk=shrunk.finished,
            )
    return LinearizabilityResult(
        True, keys_checked, ops_checked,
        explanation=f"all {_count(ops_checked, 'operation')} on {_count(keys_checked, 'key')} can be linearized",
        elapsed=time.perf_counter() - start,
    )


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
