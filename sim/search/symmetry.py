"""Symmetry reduction: states that differ only by a renaming of interchangeable nodes are one state.

If nodes ``n2`` and ``n3`` run the same code from the same configuration and nothing
in the system tells them apart except their names, then swapping the two names
throughout a state (in every node's attributes, the messages in flight, the timers and
the predicates' fingerprints) gives a state whose futures are the renamed futures of
the original; a symmetric invariant holds in one if and only if it holds in the other.
The search then keeps one of them: each state's key is the least (by hash) of its keys
under every allowed renaming.

Whether nodes are interchangeable is a property of the protocol, not something the
search can see, so the reduction is opt-in (``search.symmetry = true``) and allowed
only where it is known to be safe (:func:`interchangeable`):

* a protocol config may declare its groups itself with a method
  ``search_symmetry(scenario, operations) -> tuple[tuple[str, ...], ...]`` (raising
  :class:`~sim.errors.ScenarioError` when the scenario breaks the symmetry);
* two-phase and three-phase commit: the participants, when nothing random decides what
  one of them does (``abort_probability = 0``, a constant ``force_time``) and the search
  issues at most one client operation (a second transfer's participants and payer are
  drawn from one shared stream in their configured order, so a renamed state would
  draw the same names, not renamed ones);
* every other protocol is refused with the reason: Raft nodes draw their election
  timeouts from streams of their own (``raft/NAME``), so two nodes in the same state
  time out at different moments; eventual replication picks anti-entropy peers from
  its own stream; the others do not declare interchangeable nodes.

The search then keeps only renamings that map the rest of the scenario to itself: the
fault budget (``crash n2`` alone makes n2 special), the client target and operations'
nodes, and per-node fsync policies.

In the canonical form a tuple made only of node names of a group is sorted after the
renaming: the protocols that declare symmetry use such tuples (participants, peers)
as sets, whose order decides only the order of sends, and the search delivers
messages sent together in every order anyway.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from ..dists import Constant
from ..errors import ScenarioError
from ..scenario import Scenario
from .config import FaultOption, SearchConfig

__all__ = ["interchangeable", "Symmetry", "symmetry_for"]

_FIELDS: dict[type, tuple[str, ...]] = {}

_REFUSED = {
    "raft": "each Raft node draws its election timeouts from a random stream of its own (raft/NAME), so two "
            "nodes in the same state time out at different moments",
    "eventual": "each node picks its anti-entropy peers from a random stream of its own, by their index in the "
                "peer list",
}


def interchangeable(scenario: Scenario, cfg: SearchConfig) -> tuple[tuple[str, ...], ...]:
    """Groups of nodes the protocol treats alike (see the module docstring); raises why not."""
    from ..transactions.common import TransactionConfig

    proto = scenario.protocol
    declared = getattr(proto, "search_symmetry", None)
    if callable(declared):
        return tuple(tuple(g) for g in declared(scenario, len(cfg.operations)))
    if isinstance(proto, TransactionConfig):
        if proto.abort_probability > 0:
            raise ScenarioError("search.symmetry", f"not safe with protocol.abort_probability = "
                                f"{proto.abort_probability}: each participant draws its vote from a random stream "
                                "of its own")
        if not isinstance(proto.force_time, Constant):
            raise ScenarioError("search.symmetry", "not safe with a random protocol.force_time: each node draws its "
                                "forced-write times from a random stream of its own")
        if len(cfg.operations) > 1:
            raise ScenarioError("search.symmetry", f"not safe with {len(cfg.operations)} client operations: each "
                                "transfer's participants and payer are drawn from one shared stream in the "
                                "configured order, so a renamed state would draw the same names")
        return (proto.participants_of(scenario.nodes),)
    from ..replication.raft.config import RaftConfig

    tag = "raft" if isinstance(proto, RaftConfig) else proto.tag
    reason = _REFUSED.get(tag, f"protocol {proto.tag!r} does not declare interchangeable nodes (a "
                               "search_symmetry method)")
    raise ScenarioError("search.symmetry", f"not safe for protocol {proto.tag!r}: {reason}")


def _fault_form(f: FaultOption, perm: dict[str, str]) -> Any:
    ren = lambda n: perm.get(n, n)  # noqa: E731
    return (f.kind, ren(f.node), frozenset(frozenset(ren(n) for n in g) for g in f.groups), f.one_way, f.ends)


def _fault_moves(forms: list[Any], renamed: list[Any]) -> tuple[int, ...] | None:
    """Where each fault goes under a renaming (fault i renamed is fault moves[i]); None if the budget changes."""
    free = list(range(len(forms)))
    moves = []
    for r in renamed:
        j = next((j for j in free if forms[j] == r), None)
        if j is None:
            return None
        free.remove(j)
        moves.append(j)
    return tuple(moves)


class Symmetry:
    """The renamings a search may apply, and the reduced key of a state."""

    def __init__(self, perms: Sequence[tuple[dict[str, str], tuple[int, ...]]], names: frozenset[str]) -> None:
        #: each renaming with where it sends each fault of the budget (fault i becomes fault moves[i])
        self.perms = [(p, moves) for p, moves in perms if any(k != v for k, v in p.items())]
        self.names = names
        self._cache: dict[tuple[int, Any], Any] = {}  # (renaming, part of a key) -> renamed

    def __len__(self) -> int:
        return len(self.perms) + 1  # with the identity

    def _ren(self, obj: Any, perm: dict[str, str]) -> Any:
        """``obj`` (a canonical form) with node names renamed by ``perm``, in a form that compares across renamings.

        Frozen dataclasses (messages, transaction specs) and named tuples (log entries) are
        kept as objects by the canonical form; here they become plain tuples so that the
        names inside them are renamed too.
        """
        t = type(obj)
        if t is str:
            return perm.get(obj, obj)
        if isinstance(obj, tuple):
            if not obj:
                return ()
            if t is tuple and len(obj) == 2 and obj[0] == "dict" and type(obj[1]) is tuple:
                items = [(self._ren(k, perm), self._ren(v, perm)) for k, v in obj[1]]
                try:
                    return ("dict", tuple(sorted(items)))
                except TypeError:
                    return ("dict", tuple(sorted(items, key=repr)))
            out = tuple([self._ren(x, perm) for x in obj])
            if t is not tuple:
                return (t.__qualname__, out)
            if len(out) > 1 and all(type(x) is str and x in self.names for x in out):
                return tuple(sorted(out))  # a set of node names kept as a tuple
            return out
        if t is frozenset:
            return frozenset([self._ren(x, perm) for x in obj])
        names = _FIELDS.get(t)
        if names is None:
            names = _FIELDS[t] = tuple(f.name for f in dataclasses.fields(obj)) \
                if dataclasses.is_dataclass(obj) else ()
        if names:
            return (t.__qualname__, tuple([self._ren(getattr(obj, n), perm) for n in names]))
        return obj

    def _node(self, state: Any, perm: dict[str, str], which: int) -> Any:
        """A part of a key (a node's state, a message in flight, a timer) renamed, remembered: many
        states share it."""
        cache = self._cache
        k = (which, state)
        out = cache.get(k)
        if out is None:
            if len(cache) > 500_000:
                cache.clear()
            out = cache[k] = self._ren(state, perm)
        return out

    def _renamed(self, key: Any, perm: dict[str, str], moves: tuple[int, ...], which: int = -1) -> Any:
        nodes, flight, timers, extra = key
        nodes = tuple(sorted(((perm.get(name, name), alive, self._node(state, perm, which))
                              for name, alive, state in nodes), key=lambda n: n[0]))
        faults, *rest = extra  # the budget's states, by fault: renamed faults trade places
        moved = [""] * len(faults)
        for i, state in enumerate(faults):
            moved[moves[i]] = state
        flight = frozenset([self._node(item, perm, which) for item in flight])
        timers = frozenset([self._node(item, perm, which) for item in timers]) if type(timers) is frozenset \
            else tuple([self._node(item, perm, which) for item in timers])
        return (nodes, flight, timers, (tuple(moved), *self._node(tuple(rest), perm, which)))

    def reduce(self, key: Any) -> Any:
        """The representative of ``key``'s class: the least by hash of its renamings (the identity included)."""
        best = self._renamed(key, {}, tuple(range(len(key[3][0]))))
        best_hash = hash(best)
        for which, (perm, moves) in enumerate(self.perms):
            k = self._renamed(key, perm, moves, which)
            h = hash(k)
            if h < best_hash:
                best, best_hash = k, h
        return best


def symmetry_for(scenario: Scenario, cfg: SearchConfig, faults: Sequence[FaultOption], target: str) -> Symmetry:
    """The renamings within the protocol's interchangeable groups that keep the rest of the search's setting.

    Raises :class:`ScenarioError` (``search.symmetry``) if the protocol is not known to be
    symmetric, or if nothing but the identity is left.
    """
    groups = [g for g in interchangeable(scenario, cfg) if len(g) > 1]
    fixed = {target} | {op.node for op in cfg.operations if op.node is not None}
    forms = [_fault_form(f, {}) for f in faults]
    perms: list[tuple[dict[str, str], tuple[int, ...]]] = []
    for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
        perm = {a: b for g, p in zip(groups, choice) for a, b in zip(g, p)}
        if any(perm.get(n, n) != n for n in fixed):
            continue
        moves = _fault_moves(forms, [_fault_form(f, perm) for f in faults])
        if moves is None:
            continue
        if any(scenario.cluster.fsync_of(a) != scenario.cluster.fsync_of(b) for a, b in perm.items()):
            continue
        perms.append((perm, moves))
    sym = Symmetry(perms, frozenset(n for g in groups for n in g))
    if not sym.perms:
        named = ", ".join("{" + ", ".join(g) + "}" for g in groups) or "none"
        raise ScenarioError("search.symmetry", f"no renaming of the interchangeable nodes ({named}) keeps the fault "
                            "budget, the client target and operations' nodes and the fsync policies as they are: "
                            "nothing to reduce")
    return sym
