"""Invariants and goals the search checks in every state.

A :class:`Predicate` is a plain function of a state (and the explorer, for predicates
that look ahead). An *invariant* returns a sentence saying how the state violates it,
or None; a *goal* returns a sentence describing the state once it is reached, or None.
``fingerprint`` is the part of the history the predicate depends on that node states
do not show (which participants ever committed or aborted): it goes into the state's
hash, so two states merge only if the predicate cannot tell their futures apart.

Transactions (2PC, 3PC; the protocol's recorder is ``world.state``):

* ``atomicity``: no transaction committed at one participant and aborted at another,
  or both at one (the cheap form of :func:`sim.checkers.check_atomicity`'s ``split``
  and ``flip``, which :func:`confirm_atomicity` runs on a counter-example);
* ``blocked`` (goal): a participant is uncertain about a transaction, its coordinator
  is down, and no sequence of deliveries and timers without the coordinator
  (``BLOCK_DEPTH`` steps, no faults) decides it there;
Any key-value protocol:

* ``linearizable``: the history of the search's client operations so far passes
  :func:`sim.checkers.check_linearizable` (times are step numbers, so real-time order
  is the execution's; a reply counts when it is sent).

* ``acknowledged_writes_kept`` (no lost acknowledged write): in every state where every
  node is up and no message is in flight, each write acknowledged ok is held by at least
  one node's ``replica_state()`` (its value, or one of its siblings), unless another
  write or cas of the same key that did not complete before it began could have
  superseded it. Only such quiescent states are judged, since a write may still be on
  its way or a node may rebuild its state after a recovery; nodes whose
  ``replica_state()`` is None are left out. Not meant for Raft, whose ``replica_state``
  is the applied prefix and refills only as commits advance again.

Raft (``sim.replication.raft``):

* ``election_safety``: at most one node was ever leader of any term (from the nodes'
  role histories, which crashes keep);
* ``log_matching``: if two logs hold an entry with the same index and term, they are
  identical up to that index.
* ``state_machine_safety``: no two nodes ever apply different entries at the same log
  index (the Raft paper's State Machine Safety; a committed entry is never replaced by
  another that some node then applies). Every entry a live node has applied is
  remembered in ``world.memory`` (a crash wipes the node's own record), and the set is
  the fingerprint.

Commit protocols, continued:

* ``blocked_only_if_all_uncertain``: in every blocked state every live participant of
  the transaction is uncertain, or still writing its prepared record (and so about to
  be): none knows the outcome and none could still refuse. What cooperative
  termination promises.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from ..checkers.atomicity import AtomicityResult, check_atomicity
from ..transactions.states import UNCERTAIN_STATES
from .state import SearchWorld

if TYPE_CHECKING:
    from .explore import Explorer

__all__ = ["Predicate", "PREDICATES", "resolve", "confirm_atomicity", "BLOCK_DEPTH"]

#: steps the look-ahead of ``blocked`` takes without the coordinator before it calls a participant blocked
BLOCK_DEPTH = 12


@dataclass(frozen=True)
class Predicate:
    """An invariant (returns how a state violates it) or a goal (returns a description once reached)."""

    name: str
    kind: Literal["invariant", "goal"]
    test: Callable[[SearchWorld, Explorer], str | None]
    fingerprint: Callable[[SearchWorld], Any] = lambda w: ()
    doc: str = ""


# -- transactions ------------------------------------------------------------------------------
def _outcomes(w: SearchWorld) -> frozenset[tuple[str, str, str]]:
    rec = w.state
    return frozenset((gtid, node, state) for _, gtid, node, state, _ in rec.events.rows
                     if state in ("committed", "aborted"))


def _atomicity(w: SearchWorld, _ex: Explorer) -> str | None:
    done = _outcomes(w)
    by_txn: dict[str, dict[str, set[str]]] = {}
    for gtid, node, state in done:
        by_txn.setdefault(gtid, {}).setdefault(state, set()).add(node)
    for gtid in sorted(by_txn):
        outcome = by_txn[gtid]
        committed, aborted = outcome.get("committed", set()), outcome.get("aborted", set())
        both = committed & aborted
        if both:
            return f"{gtid}: {', '.join(sorted(both))} both committed and aborted"
        if committed and aborted:
            return (f"{gtid} split: committed at {', '.join(sorted(committed))}, aborted at "
                    f"{', '.join(sorted(aborted))}")
    return None


def confirm_atomicity(w: SearchWorld) -> AtomicityResult:
    """:func:`sim.checkers.check_atomicity` on the participants' state changes of a search state."""
    rec = w.state
    events = pd.DataFrame(rec.events.rows, columns=list(rec.events.columns))
    participants = {gtid: spec.participants for gtid, spec in rec.specs.items()}
    return check_atomicity(events, participants)


def _uncertain(w: SearchWorld) -> list[tuple[str, str]]:
    """(participant, gtid) of every live participant uncertain about a transaction whose coordinator is down."""
    out = []
    for name, node in w.nodes.items():
        txns = getattr(node, "txns", None)
        if not node.alive or not txns or not hasattr(node, "decided"):
            continue
        for gtid, t in txns.items():
            if t.state in UNCERTAIN_STATES and not w.nodes[t.coordinator].alive:
                out.append((name, gtid))
    return out


def _decided_at(w: SearchWorld, node: str, gtid: str) -> bool:
    n = w.nodes[node]
    t = n.txns.get(gtid)  # type: ignore[attr-defined]
    return not n.alive or t is None or t.state not in UNCERTAIN_STATES


def _can_decide(ex: Explorer, w: SearchWorld, node: str, gtid: str) -> bool:
    """Whether some run of deliveries and timers (no faults) of at most BLOCK_DEPTH steps decides it at ``node``.

    Answers are remembered per state (in ``ex.memo``): a state met again, in the search
    or in another look-ahead, is not explored twice. They are keyed by the state's own
    names (:meth:`Explorer.raw_key`): under symmetry reduction a renamed state shares a
    key with it but asks about another node.
    """
    memo = ex.memo
    root = (ex.raw_key(w), node, gtid)
    if root in memo:
        return bool(memo[root])
    seen = {root[0]}
    frontier = deque([(w, 0)])
    found = False
    while frontier and not found:
        s, depth = frontier.popleft()
        if depth >= BLOCK_DEPTH:
            continue
        for child, _ in ex.successors(s, faults=False):
            if _decided_at(child, node, gtid):
                found = True
                break
            k = ex.raw_key(child)
            known = memo.get((k, node, gtid))
            if known:
                found = True
                break
            if k not in seen and known is None:
                seen.add(k)
                frontier.append((child, depth + 1))
    memo[root] = found
    return found


def _blocked(w: SearchWorld, ex: Explorer) -> list[tuple[str, str]]:
    return [(node, gtid) for node, gtid in _uncertain(w) if not _can_decide(ex, w, node, gtid)]


def _blocked_goal(w: SearchWorld, ex: Explorer) -> str | None:
    blocked = _blocked(w, ex)
    if not blocked:
        return None
    node, gtid = blocked[0]
    return f"{node} is blocked on {gtid}: uncertain, its coordinator down, and nobody else can tell it the outcome"


def _participant_states(w: SearchWorld, gtid: str) -> dict[str, str]:
    spec = w.state.specs[gtid]
    out = {}
    for p in spec.participants:
        n = w.nodes[p]
        t = n.txns.get(gtid)  # type: ignore[attr-defined]
        decided = n.decided.get(gtid)  # type: ignore[attr-defined]
        out[p] = (str(t.state) if t is not None else f"decided {decided}" if decided is not None else "no record") \
            if n.alive else "down"
    return out


def _blocked_only_if_all_uncertain(w: SearchWorld, ex: Explorer) -> str | None:
    for node, gtid in _uncertain(w):
        states = _participant_states(w, gtid)
        if all(s in ("working", "prepared", "precommitted", "down") for s in states.values()):
            continue  # nothing to show: the look-ahead is run only where it can find a violation
        if not _can_decide(ex, w, node, gtid):
            shown = ", ".join(f"{p}: {s}" for p, s in states.items())
            return f"{node} is blocked on {gtid} although not every participant is uncertain ({shown})"
    return None


# -- Raft ----------------------------------------------------------------------------------------
def _leaders(w: SearchWorld) -> frozenset[tuple[int, str]]:
    """(term, node) of every leadership so far, from the nodes' role histories (kept across crashes)."""
    out = set()
    for name, node in w.nodes.items():
        for change in getattr(node, "roles", ()):
            if str(change.role) == "leader":
                out.add((change.term, name))
    return frozenset(out)


def _election_safety(w: SearchWorld, _ex: Explorer) -> str | None:
    by_term: dict[int, list[str]] = {}
    for term, node in sorted(_leaders(w)):
        by_term.setdefault(term, []).append(node)
    for term, nodes in by_term.items():
        if len(nodes) > 1:
            return f"two leaders in term {term}: {', '.join(nodes)}"
    return None


def _log_matching(w: SearchWorld, _ex: Explorer) -> str | None:
    logs = [(name, node.log) for name, node in w.nodes.items() if hasattr(node, "log") and hasattr(node, "term")]
    for i, (a, la) in enumerate(logs):
        for b, lb in logs[i + 1:]:
            for idx in range(min(len(la), len(lb)) - 1, 0, -1):
                if la[idx].term == lb[idx].term:
                    if list(la[:idx + 1]) != list(lb[:idx + 1]):
                        return (f"logs of {a} and {b} agree on the term of entry {idx} ({la[idx].term}) but differ "
                                "before it")
                    break
    return None


def _entry_text(entry: Any) -> str:
    term, op_id, op, key, value = entry
    return f"a no-op of term {term}" if op == "noop" else f"{op} {op_id} ({key}={value!r}) of term {term}"


def _applied_now(w: SearchWorld) -> set[tuple[int, tuple[Any, ...], str]]:
    """(index, entry, node) of every entry a live node has applied (its log up to ``last_applied``)."""
    out = set()
    for name, node in w.nodes.items():
        last = getattr(node, "last_applied", None)
        if last is None or not node.alive:
            continue
        start, log = node.log_start, node.log  # type: ignore[attr-defined]
        for idx in range(start + 1, last + 1):
            out.add((idx, tuple(log[idx - start][:5]), name))
    return out


def _applied(w: SearchWorld) -> frozenset[tuple[int, tuple[Any, ...], str]]:
    """Every entry applied so far by any node, at its index (remembered across crashes)."""
    return frozenset(w.memory.get("applied", frozenset())) | _applied_now(w)


def _state_machine_safety(w: SearchWorld, _ex: Explorer) -> str | None:
    applied = _applied(w)
    w.memory["applied"] = applied
    by_index: dict[int, dict[tuple[Any, ...], list[str]]] = {}
    for idx, entry, node in applied:
        by_index.setdefault(idx, {}).setdefault(entry, []).append(node)
    for idx in sorted(by_index):
        entries = by_index[idx]
        if len(entries) > 1:
            (a, na), (b, nb) = sorted(entries.items())[:2]
            return (f"entry {idx} applied as {_entry_text(a)} at {', '.join(sorted(na))} and as {_entry_text(b)} "
                    f"at {', '.join(sorted(nb))}")
    return None


# -- client histories ----------------------------------------------------------------------------
def _history(w: SearchWorld) -> pd.DataFrame:
    """The search's client operations as a history table; times are step numbers (their real-time order)."""
    rows = [{"op_id": op.op_id, "client": op.client, "op": op.op, "key": op.key,
             "value": op.result if op.op == "read" else op.value, "invoke": float(op.invoke_step),
             "complete": float(op.complete_step) if op.complete_step is not None else float("inf"),
             "outcome": op.outcome} for op in w.ops]
    return pd.DataFrame(rows, columns=["op_id", "client", "op", "key", "value", "invoke", "complete", "outcome"])


def _precedence(w: SearchWorld) -> Any:
    """What linearizability depends on: each operation's outcome and result, and which completed before it began."""
    return tuple((op.op_id, op.outcome, op.result,
                  frozenset(o.op_id for o in w.ops if o.complete_step is not None and o.complete_step < op.invoke_step))
                 for op in w.ops)


_MISSING = object()


def _holds(held: Any, value: Any) -> bool:
    """Whether a replica's value for a key (a value, or a frozenset of siblings) contains ``value``."""
    return held == value or (isinstance(held, frozenset) and value in held)


def _superseded(w: SearchWorld, op: Any) -> bool:
    """Whether another write or cas of the same key could be ordered after ``op`` (it did not complete
    before ``op`` began), so that a replica may rightly hold its value instead."""
    return any(o is not op and o.op in ("write", "cas") and o.key == op.key
               and not (o.complete_step is not None and o.complete_step < op.invoke_step) for o in w.ops)


def _acknowledged_writes_kept(w: SearchWorld, _ex: Explorer) -> str | None:
    if w.network.flight or not all(node.alive for node in w.nodes.values()):
        return None  # judged only when every node is up and nothing is on its way
    states = [s for s in (node.replica_state() for node in w.nodes.values()) if s is not None]
    if not states:
        return None
    for op in w.ops:
        if op.op != "write" or op.outcome != "ok" or _superseded(w, op):
            continue
        if not any(_holds(s.get(op.key, _MISSING), op.value) for s in states):
            return (f"write {op.op_id} ({op.key}={op.value!r}) was acknowledged, nothing superseded it, and no "
                    "replica holds it")
    return None


def _linearizable(w: SearchWorld, _ex: Explorer) -> str | None:
    if not any(op.op == "read" and op.outcome == "ok" for op in w.ops):
        return None  # writes alone are always linearizable
    from ..checkers.linearizability import check_linearizable

    verdict = check_linearizable(_history(w))
    return None if verdict.linearizable is not False else f"not linearizable: {verdict.explanation}"


PREDICATES: dict[str, Predicate] = {
    "linearizable": Predicate("linearizable", "invariant", _linearizable, _precedence,
                              "the client history so far is linearizable (sim.checkers.check_linearizable)"),
    "acknowledged_writes_kept": Predicate(
        "acknowledged_writes_kept", "invariant", _acknowledged_writes_kept, _precedence,
        "no lost acknowledged write: in a state with every node up and no message in flight, every write "
        "acknowledged ok and not superseded is held by some replica (replica_state)"),
    "election_safety": Predicate("election_safety", "invariant", _election_safety, _leaders,
                                 "at most one leader per term, over the whole execution"),
    "log_matching": Predicate("log_matching", "invariant", _log_matching,
                              doc="two logs with an entry of the same index and term are identical up to it"),
    "state_machine_safety": Predicate("state_machine_safety", "invariant", _state_machine_safety, _applied,
                                      "no two nodes ever apply different entries at the same log index"),
    "atomicity": Predicate("atomicity", "invariant", _atomicity, _outcomes,
                           "no transaction both committed and aborted (split or flip)"),
    "blocked": Predicate("blocked", "goal", _blocked_goal, doc="a participant blocked: uncertain, coordinator "
                                                                "down, nobody else can decide it"),
    "blocked_only_if_all_uncertain": Predicate("blocked_only_if_all_uncertain", "invariant",
                                               _blocked_only_if_all_uncertain,
                                               doc="a participant blocks only when every participant is uncertain"),
}


def resolve(items: Sequence[str | Predicate]) -> list[Predicate]:
    """Predicates by name (see :data:`PREDICATES`) or as given."""
    out = []
    for item in items:
        if isinstance(item, Predicate):
            out.append(item)
        elif item in PREDICATES:
            out.append(PREDICATES[item])
        else:
            raise ValueError(f"unknown predicate {item!r}; known: {', '.join(sorted(PREDICATES))}")
    return out
