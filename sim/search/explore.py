"""The explorer: successors of a state, and breadth-first, depth-first and random search.

A step is one of: a client issues the next operation of the workload; a message in
flight is delivered (to a node that crashed since it was sent: lost), dropped (if the
network loses messages) or duplicated (delivered and kept in flight); a timer fires; a
fault of the budget starts or ends (crash, recover, partition, heal). Identical
messages in flight (same sender, receiver and content) are one choice, not several.

Two models of time:

* ``bounded`` (the default): every message arrives between ``low`` and ``high`` ms
  after it was sent (the latency bounds) unless lost, and timers fire at their due
  time. An event (a delivery or a timer) may come next if its earliest time is not
  later than every pending event's latest time; it happens at its earliest time or
  now, whichever is later. Faults and client operations happen now. With constant
  latency this is the simulator's own timing, every tie and every fault time
  included; protocols that rely on timeouts (3PC) are judged under the assumptions
  they were designed for.
* ``ordering`` (DSLabs' model): time is ordering only. Messages arrive in any order
  at any time; a node's timer may fire once every timer the node set earlier with a
  shorter or equal delay has fired. A timeout then says nothing about a crash. The
  clock moves only when a timer fires, to its due time if that is later, so a node that
  compares the clock with its own deadline finds it due.

The search checks its predicates (:mod:`.predicates`) in every new state and stops at
the first one that fires: an invariant violated, or a goal reached.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ScenarioError
from ..kernel.messages import ClientRequest
from ..scenario import Scenario
from .config import FaultOption, SearchConfig, fault_budget, latency_bounds
from .state import InFlight, Op, Scheduled, SearchWorld, canonical, clone, freeze, share, thaw
from .symmetry import Symmetry, symmetry_for

__all__ = ["Explorer", "Step", "SearchResult", "search"]

Action = tuple[str, int]


@dataclass(frozen=True)
class Step:
    """One step of an execution, as the trace table shows it."""

    kind: str  # client, deliver, drop, duplicate, lost, timer, crash, recover, partition, heal
    time: float
    node: str = ""
    src: str = ""
    dst: str = ""
    message: str = ""
    detail: str = ""
    fault: int | None = None  # index into faults.schedule
    sent_step: int | None = None  # for a delivered, dropped or lost message: the step that sent it (0: none)


@dataclass
class SearchResult:
    """What a search found: its verdict, its effort and, when a predicate fired, the trace."""

    verdict: str  # violation, goal_reached, no_violation (exhaustive to max_depth), goal_unreachable, limit
    predicate: str | None
    message: str
    states: int
    transitions: int
    depth: int
    seconds: float
    complete: bool  # every state within max_depth was explored
    limit: str | None = None
    trace: list[Step] = field(default_factory=list)
    final: SearchWorld | None = None
    scenario: Scenario | None = None
    config: SearchConfig | None = None
    exhausted: bool = False  # complete, and no state was cut by max_depth: the whole reachable space

    @property
    def found(self) -> bool:
        return self.verdict in ("violation", "goal_reached")

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float("inf")


class Explorer:
    """The successor function and the search strategies over one scenario (see the module docstring)."""

    def __init__(self, scenario: Scenario, cfg: SearchConfig | None = None, predicates: Sequence[Any] = ()) -> None:
        from .predicates import resolve

        self.scenario = scenario
        self.cfg = cfg = cfg or SearchConfig()
        share(scenario)
        share(scenario.protocol)
        self.faults: tuple[FaultOption, ...] = fault_budget(scenario)
        self.low, self.high = latency_bounds(scenario, cfg)
        self.bounded = cfg.timing == "bounded"
        self.loss = scenario.network.loss > 0
        self.duplicate = scenario.network.duplicate > 0
        self.target = cfg.target or scenario.workload.target_node or scenario.nodes[0]
        if self.target not in scenario.nodes:
            raise ScenarioError("search.target", f"no node {self.target!r}; nodes: {', '.join(scenario.nodes)}")
        for i, op in enumerate(cfg.operations):
            if op.node is not None and op.node not in scenario.nodes:
                raise ScenarioError(f"search.operations[{i}].node", f"no node {op.node!r}; nodes: "
                                    f"{', '.join(scenario.nodes)}")
        self.predicates = resolve(list(cfg.predicates) + list(predicates))
        self.symmetry: Symmetry | None = None
        if cfg.symmetry:
            self.symmetry = symmetry_for(scenario, cfg, self.faults, self.target)
        self.memo: dict[Any, Any] = {}  # predicates' look-ahead answers, by state

    # -- states ------------------------------------------------------------------------------
    def initial(self) -> SearchWorld:
        w = SearchWorld(self.scenario)
        w.fault_state = ["ready"] * len(self.faults)
        return w

    def raw_key(self, w: SearchWorld) -> Any:
        """The canonical form of ``w`` with its node names as they are (no symmetry reduction)."""
        extra = (tuple(w.fault_state), w.drops, w.duplicates, len(w.ops),
                 tuple(p.fingerprint(w) for p in self.predicates))
        return canonical(w, self.bounded, extra)

    def key(self, w: SearchWorld) -> Any:
        """The key of ``w`` in the visited set: :meth:`raw_key`, reduced under symmetry if enabled."""
        key = self.raw_key(w)
        return key if self.symmetry is None else self.symmetry.reduce(key)

    # -- successors ------------------------------------------------------------------------------
    def _horizon(self, w: SearchWorld, timers: list[Scheduled]) -> float:
        latest = [m.sent + self.high for m in w.network.flight] + [t.at for t in timers]
        return min(latest) if latest else float("inf")

    def actions(self, w: SearchWorld, *, faults: bool = True) -> list[Action]:
        """Every step enabled in ``w`` (``faults=False``: deliveries and timers only)."""
        out: list[Action] = []
        if w.failure is not None:
            return out
        if faults and len(w.ops) < len(self.cfg.operations):
            out.append(("client", len(w.ops)))
        timers = w.env.live()
        horizon = self._horizon(w, timers) if self.bounded else 0.0
        seen: set[Any] = set()
        for i, m in enumerate(w.network.flight):
            ident = (m.src, m.dst, m.msg, m.sent, m.epoch)
            if ident in seen:
                continue
            seen.add(ident)
            if not self.bounded or m.sent + self.low <= horizon:
                out.append(("deliver", i))
                if faults and self.duplicate and w.duplicates < self.cfg.max_duplicates:
                    out.append(("duplicate", i))
            if faults and self.loss and w.drops < self.cfg.max_drops:
                out.append(("drop", i))
        for i, t in enumerate(timers):
            if self._timer_enabled(t, timers, horizon):
                out.append(("timer", i))
        if faults:
            for i, f in enumerate(self.faults):
                state = w.fault_state[i]
                if state == "ready":
                    out.append(("start", i))
                elif state == "active" and f.ends:
                    out.append(("end", i))
        return out

    def _timer_enabled(self, t: Scheduled, timers: list[Scheduled], horizon: float) -> bool:
        if self.bounded:
            return t.at <= horizon
        owner = t.owner
        return not any(o.owner == owner and o.order < t.order and o.delay <= t.delay for o in timers)

    def apply(self, w: SearchWorld, action: Action) -> Step:
        """Take ``action`` in ``w`` (mutating it); returns the step for the trace.

        A handler that raises ends the execution: the state records the error
        (``w.failure``) and :meth:`check` reports it as a violation.
        """
        try:
            return self._apply(w, action)
        except Exception as exc:  # a protocol's handler failed: that is a finding, not a crash of the search
            w.failure = f"{type(exc).__name__}: {exc}"
            return Step("error", w.now, detail=w.failure)

    def _apply(self, w: SearchWorld, action: Action) -> Step:
        kind, i = action
        w.steps += 1
        if kind == "client":
            return self._client(w, i)
        if kind in ("deliver", "drop", "duplicate"):
            return self._message(w, kind, i)
        if kind == "timer":
            t = w.env.live()[i]
            w.env.now = max(w.env.now, t.at)  # never back: a node comparing now with its deadline sees it due
            w.env.fire(t)
            return Step("timer", w.now, node=t.owner, detail=t.name)
        return self._fault(w, kind, i)

    def _client(self, w: SearchWorld, i: int) -> Step:
        spec = self.cfg.operations[i]
        value = spec.value if spec.value is not None else (i + 1 if spec.op == "write" else None)
        client = f"c{i}"
        target = spec.node or self.target
        op = Op(client, i + 1, spec.op, spec.key, value, target, w.now, w.steps)
        w.ops.append(op)
        msg = ClientRequest(op.op_id, spec.op, spec.key, value)
        w.network.flight.append(InFlight(client, target, msg, w.now, w.nodes[target].epoch, w.steps))
        return Step("client", w.now, node=client, dst=target, message=repr(msg))

    def _message(self, w: SearchWorld, kind: str, i: int) -> Step:
        m = w.network.flight[i]
        if kind == "drop":
            w.network.flight.pop(i)
            w.drops += 1
            return Step("drop", w.now, src=m.src, dst=m.dst, message=repr(m.msg), sent_step=m.step)
        if kind == "duplicate":
            w.duplicates += 1
        else:
            w.network.flight.pop(i)
        if self.bounded:
            w.env.now = max(w.env.now, m.sent + self.low)
        node = w.nodes[m.dst]
        if not node.alive or node.epoch != m.epoch:
            return Step("lost", w.now, src=m.src, dst=m.dst, message=repr(m.msg), detail="receiver crashed",
                        sent_step=m.step)
        node.receive(m.src, m.msg)
        return Step(kind, w.now, src=m.src, dst=m.dst, message=repr(m.msg), sent_step=m.step)

    def _fault(self, w: SearchWorld, kind: str, i: int) -> Step:
        f = self.faults[i]
        w.fault_state[i] = "active" if kind == "start" else "done"
        if f.kind == "crash":
            node = w.nodes[f.node]
            if kind == "start":
                node.crash()
                return Step("crash", w.now, node=f.node, fault=f.index)
            node.recover()
            return Step("recover", w.now, node=f.node, fault=f.index)
        if kind == "start":
            w.network.add_partition(i, f.groups, f.one_way, self.scenario.nodes)
            return Step("partition", w.now, detail=f.describe(), fault=f.index)
        w.network.remove_partition(i)
        return Step("heal", w.now, detail=f.describe(), fault=f.index)

    def successors(self, w: SearchWorld, *, faults: bool = True) -> Iterator[tuple[SearchWorld, Step]]:
        for action in self.actions(w, faults=faults):
            child = clone(w)
            yield child, self.apply(child, action)

    # -- predicates ----------------------------------------------------------------------------
    def check(self, w: SearchWorld) -> tuple[str, str, str] | None:
        """(predicate, verdict, message) of the first predicate that fires in ``w``, else None."""
        if w.failure is not None:
            return "exception", "violation", f"a handler raised {w.failure}"
        for p in self.predicates:
            message = p.test(w, self)
            if message is not None:
                return p.name, ("violation" if p.kind == "invariant" else "goal_reached"), message
        return None

    # -- strategies ------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        strategy = self.cfg.strategy
        if strategy == "bfs":
            return self.bfs()
        if strategy == "dfs":
            return self.dfs()
        return self.random_walks()

    def _result(self, verdict: str, hit: tuple[str, str, str] | None, states: int, transitions: int, depth: int,
                start: float, complete: bool, limit: str | None, trace: list[Step],
                final: SearchWorld | None) -> SearchResult:
        if hit is not None:
            name, verdict, message = hit
        else:
            name = None
            goals = [p.name for p in self.predicates if p.kind == "goal"]
            if verdict == "exhausted":
                verdict = "goal_unreachable" if goals and complete else "no_violation" if complete else "limit"
            message = {"goal_unreachable": f"no state within depth {self.cfg.max_depth} reaches "
                                           f"{', '.join(goals)}",
                       "no_violation": f"no invariant violated in any state within depth {self.cfg.max_depth}",
                       "limit": f"stopped at the {limit} limit without a verdict"}.get(verdict, verdict)
        return SearchResult(verdict, name, message, states, transitions, depth, time.perf_counter() - start,
                            complete, limit, trace, final, self.scenario, self.cfg)

    def _limit(self, states: int, start: float) -> str | None:
        if states >= self.cfg.max_states:
            return "max_states"
        if time.perf_counter() - start >= self.cfg.max_seconds:
            return "max_seconds"
        return None

    def bfs(self) -> SearchResult:
        """Breadth-first: the first violation found has the shortest trace.

        States wait in the frontier as bytes (:func:`.state.freeze`); each successor is a
        fresh copy thawed from its parent's bytes, so a stored state costs its pickled size.
        """
        start = time.perf_counter()
        root = self.initial()
        parents: list[tuple[int, Step | None]] = [(-1, None)]
        hit = self.check(root)
        if hit is not None:
            return self._result("", hit, 1, 0, 0, start, False, None, [], root)
        visited = {self.key(root)}
        frontier: deque[tuple[bytes, int, int]] = deque([(freeze(root), 0, 0)])
        transitions = depth_seen = 0
        cut = False
        while frontier:
            blob, depth, idx = frontier.popleft()
            actions = self.actions(thaw(blob))
            if depth >= self.cfg.max_depth:
                cut = cut or bool(actions)
                continue
            for action in actions:
                child = thaw(blob)
                step = self.apply(child, action)
                transitions += 1
                k = self.key(child)
                if k in visited:
                    continue
                visited.add(k)
                parents.append((idx, step))
                depth_seen = max(depth_seen, depth + 1)
                hit = self.check(child)
                if hit is not None:
                    trace = _trace(parents, len(parents) - 1)
                    return self._result("", hit, len(visited), transitions, depth + 1, start, False, None, trace,
                                        child)
                limit = self._limit(len(visited), start)
                if limit is not None:
                    return self._result("limit", None, len(visited), transitions, depth_seen, start, False, limit,
                                        [], None)
                frontier.append((freeze(child), depth + 1, len(parents) - 1))
        result = self._result("exhausted", None, len(visited), transitions, depth_seen, start, True, None, [], None)
        result.exhausted = not cut
        return result

    def dfs(self) -> SearchResult:
        """Depth-first to ``max_depth`` (a state seen before at the same or a smaller depth is skipped)."""
        start = time.perf_counter()
        root = self.initial()
        hit = self.check(root)
        if hit is not None:
            return self._result("", hit, 1, 0, 0, start, False, None, [], root)
        best: dict[Any, int] = {self.key(root): 0}
        stack: list[tuple[SearchWorld, int, list[Step]]] = [(root, 0, [])]
        transitions = depth_seen = 0
        while stack:
            w, depth, path = stack.pop()
            if depth >= self.cfg.max_depth:
                continue
            for child, step in self.successors(w):
                transitions += 1
                k = self.key(child)
                if best.get(k, self.cfg.max_depth + 1) <= depth + 1:
                    continue
                best[k] = depth + 1
                depth_seen = max(depth_seen, depth + 1)
                hit = self.check(child)
                if hit is not None:
                    return self._result("", hit, len(best), transitions, depth + 1, start, False, None,
                                        [*path, step], child)
                limit = self._limit(len(best), start)
                if limit is not None:
                    return self._result("limit", None, len(best), transitions, depth_seen, start, False, limit,
                                        [], None)
                stack.append((child, depth + 1, [*path, step]))
        return self._result("exhausted", None, len(best), transitions, depth_seen, start, True, None, [], None)

    def random_walks(self) -> SearchResult:
        """``walks`` random executions of up to ``max_depth`` steps (for configurations too large to exhaust)."""
        start = time.perf_counter()
        rng = np.random.default_rng(self.cfg.seed)
        seen: set[Any] = set()
        transitions = depth_seen = 0
        root = self.initial()
        hit = self.check(root)
        if hit is not None:
            return self._result("", hit, 1, 0, 0, start, False, None, [], root)
        for _ in range(self.cfg.walks):
            w, path = clone(root), []
            for depth in range(self.cfg.max_depth):
                actions = self.actions(w)
                if not actions:
                    break
                step = self.apply(w, actions[int(rng.integers(len(actions)))])
                path.append(step)
                transitions += 1
                depth_seen = max(depth_seen, depth + 1)
                seen.add(self.key(w))
                hit = self.check(w)
                if hit is not None:
                    return self._result("", hit, len(seen), transitions, depth + 1, start, False, None, path, w)
            limit = self._limit(len(seen), start)
            if limit is not None:
                return self._result("limit", None, len(seen), transitions, depth_seen, start, False, limit, [],
                                    None)
        return self._result("exhausted", None, len(seen), transitions, depth_seen, start, False, "walks", [], None)


def _trace(parents: list[tuple[int, Step | None]], idx: int) -> list[Step]:
    out: list[Step] = []
    while idx > 0:
        idx, step = parents[idx]
        assert step is not None
        out.append(step)
    return out[::-1]


def search(scenario: Scenario, cfg: SearchConfig | None = None, predicates: Sequence[Any] = ()) -> SearchResult:
    """Explore ``scenario``'s nodes under ``cfg`` and check ``predicates`` (names or Predicate objects)."""
    return Explorer(scenario, cfg, predicates).run()
