"""Workload clients.

Each client is a network endpoint next to its home node. Open-loop clients
issue operations at Poisson times (rate per second, whatever the replies);
closed-loop clients issue the next operation a think time after the previous
one completed. Every operation ends ``ok``, ``fail`` or, on timeout, ``info``.
A client that issues compare-and-set operations remembers, per key, the last
value it read or wrote (``ok`` operations only; a cas that failed or timed out
makes it forget the key): that is the value its next cas on the key expects
(see :class:`~sim.scenario.WorkloadConfig` for the ``register`` and
``counter`` patterns).
Each client draws from its own streams (``arrivals/<client>``,
``ops/<client>``, and ``retries/<client>`` for retry jitter), so nothing else
in the run shifts its arrival times. A client may retry an operation
(``workload.retry``, :mod:`sim.client_retry`); by default it does not.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..client_retry import RetryBudget
from ..dists import Exponential, buffered_sampler, uniform_sampler
from ..kernel.messages import CAS_MISMATCH, ClientReply, ClientRequest
from ..kernel.node import Endpoint

if TYPE_CHECKING:
    from ..kernel.network import Network
    from ..kernel.world import World
    from ..scenario import WorkloadConfig

__all__ = ["Client", "make_clients", "KeyChooser"]


class KeyChooser:
    """Keys 0..n-1, uniform or zipf(s) (key 0 most popular)."""

    def __init__(self, n: int, dist: str, s: float) -> None:
        self.n = n
        self.cdf: list[float] | None = None
        if dist == "zipf":
            w = 1.0 / np.arange(1, n + 1) ** s
            cdf = np.cumsum(w / w.sum())
            cdf[-1] = 1.0
            self.cdf = cdf.tolist()

    def choose(self, u: float) -> int:
        """The key for a uniform [0, 1) number ``u`` (inverse-CDF sampling)."""
        if self.cdf is None:
            return min(int(u * self.n), self.n - 1)
        return min(bisect.bisect_right(self.cdf, u), self.n - 1)


class _Attempt:
    """A request in flight: the operation's history row, the request, and its retry state."""

    __slots__ = ("row", "request", "node", "number", "sent", "timer", "delay", "saw_info")

    def __init__(self, row: int, request: ClientRequest, node: str, sent: float) -> None:
        self.row = row
        self.request = request
        self.node = node
        self.number = 1
        self.sent = sent
        self.timer: Any = None
        self.delay = 0.0  # the wait drawn before this attempt
        self.saw_info = False  # an earlier attempt ended info: the operation may have taken effect


class Client(Endpoint):
    """A client next to its home node; it runs only in a :class:`~sim.kernel.world.World` (ids, history)."""

    world: World
    net: Network

    def __init__(self, world: World, name: str, index: int, home: str, cfg: WorkloadConfig,
                 keys: KeyChooser) -> None:
        super().__init__(world, name, home)
        self.index = index
        self.cfg = cfg
        self.keys = keys
        self._arrivals = world.streams[f"arrivals/{name}"]
        self._gap = buffered_sampler(Exponential(1000.0 / cfg.rate), self._arrivals)
        self._u = uniform_sampler(world.streams[f"ops/{name}"])
        self._pending: dict[int, _Attempt] = {}
        self._retry = cfg.retry
        self._retrying = cfg.retry.retries
        self._keys = cfg.retry.idempotency_keys
        self._budget = RetryBudget(cfg.retry.budget_ratio, cfg.retry.budget_burst)
        self._jitter = uniform_sampler(world.streams[f"retries/{name}"]) if cfg.retry.needs_draw() else None
        self._rr = index
        self._stop = world.scenario.run.duration
        nodes = world.scenario.cluster.nodes
        self._nodes = nodes
        self._cas = cfg.uses_cas()
        self._counter = cfg.pattern == "counter"
        self._known: dict[Any, Any] = {}  # key -> the last value this client read or wrote (cas workloads)

    def start(self) -> None:
        if self.cfg.mode == "open":
            self._schedule_arrival(self.cfg.start)
        else:
            self._schedule_next(self.cfg.start)

    # -- arrivals -------------------------------------------------------------
    def _schedule_arrival(self, after: float) -> None:
        t = after + self._gap()
        if t < self._stop:
            self.set_timer(t - self.now, self._open_arrival)

    def _open_arrival(self) -> None:
        self.invoke()
        self._schedule_arrival(self.now)

    def _schedule_next(self, at: float) -> None:
        think = float(self.cfg.think_time.sample(self._arrivals))
        t = at + think
        if t < self._stop:
            self.set_timer(t - self.now, self.invoke)

    # -- operations -------------------------------------------------------------
    def _target(self) -> str:
        cfg = self.cfg
        if cfg.target == "home":
            return self.home
        if cfg.target == "fixed":
            return cfg.target_node  # type: ignore[return-value]
        if cfg.target == "random":
            return self._nodes[min(int(self._u() * len(self._nodes)), len(self._nodes) - 1)]
        self._rr = (self._rr + 1) % len(self._nodes)
        return self._nodes[self._rr]

    def invoke(self) -> None:
        world = self.world
        if self._counter:
            op, key, value = self._increment()
        else:
            u = self._u()
            op = "read" if u < self.cfg.read_fraction else "write"
            if op == "write" and self._cas and u < self.cfg.read_fraction + self.cfg.cas_fraction:
                op = "cas"
            key = self.keys.choose(self._u())
            value = None
            if op == "write":
                value = world.next_value()
            elif op == "cas":
                value = (self._known.get(key), world.next_value())
        target = self._target()
        op_id = world.next_op_id()
        node_up = world.nodes[target].alive
        row = world.history.invoke(op_id, self.name, op, key, value, self.now, target,
                                   self.net.side[self.name], node_up)
        if self._retrying:
            self._budget.first_attempt()
        idem = op_id if self._keys else None
        self._send(_Attempt(row, ClientRequest(op_id, op, key, value, idem), target, self.now))

    def _send(self, attempt: _Attempt) -> None:
        if math.isfinite(self.cfg.timeout):
            attempt.timer = self.set_timer(self.cfg.timeout, self._timeout, attempt.request.op_id)
        self._pending[attempt.request.op_id] = attempt
        self.send(attempt.node, attempt.request)

    def handle_ClientReply(self, msg: ClientReply, src: str) -> None:
        attempt = self._pending.pop(msg.op_id, None)
        if attempt is None:  # a late or duplicated reply
            return
        if attempt.timer is not None:
            attempt.timer.cancel()
        self._ended(attempt, "ok" if msg.ok else "fail", msg.value, msg.error)

    def _timeout(self, op_id: int) -> None:
        attempt = self._pending.pop(op_id, None)
        if attempt is not None:
            self._ended(attempt, "info", None, "timeout")

    # -- retries --------------------------------------------------------------------
    def _ended(self, attempt: _Attempt, outcome: str, value: Any, error: str | None) -> None:
        """One attempt ended: retry the operation, or finish it."""
        if not self._retrying:
            self._finish(attempt.row, outcome, value, error)
            return
        retry = self._retry
        history = self.world.history
        request = attempt.request
        history.attempt(attempt.row, attempt.number, request.op_id, attempt.node, attempt.sent, self.now,
                        outcome, error)
        attempt.saw_info = attempt.saw_info or outcome == "info"
        decided = error == CAS_MISMATCH  # the server decided the operation: another attempt cannot change it
        if (outcome != "ok" and not decided and outcome in retry.retry_on
                and attempt.number < retry.attempts_allowed and self._budget.take()):
            u = self._jitter() if self._jitter is not None else 0.0
            attempt.delay = retry.delay_after(attempt.number, attempt.delay, u)
            if attempt.delay > 0:
                self.set_timer(attempt.delay, self._resend, attempt)
            else:
                self._resend(attempt)
            return
        if outcome == "fail" and attempt.saw_info and not (decided and self._keys):
            # a timed-out attempt may have taken effect: not definitely failed. With idempotency
            # keys a precondition failure is the operation's own answer: the server decided the
            # key once, and any attempt of it, earlier or later, gets that same decision
            outcome = "info"
        self._finish(attempt.row, outcome, value, error)

    def _resend(self, attempt: _Attempt) -> None:
        world = self.world
        attempt.number = world.history.retried(attempt.row)
        attempt.request = dataclasses.replace(attempt.request, op_id=world.next_op_id())  # same op, new request
        attempt.node = self._target()
        attempt.sent = self.now
        self._send(attempt)

    @property
    def retries_denied(self) -> int:
        """Retries the retry budget refused."""
        return self._budget.denied

    def unfinished_attempts(self) -> list[tuple[int, int, str, float]]:
        """(history row, request id, node, send time) of requests still awaiting an answer."""
        return [(a.row, op_id, a.node, a.sent) for op_id, a in self._pending.items()]

    def _increment(self) -> tuple[str, Any, Any]:
        """The counter pattern's next operation: cas(v, v + 1) on a key whose value v it knows, else a read."""
        key = self.keys.choose(self._u())
        if key not in self._known:
            return "read", key, None
        v = self._known[key]
        return "cas", key, (v, (0 if v is None else v) + 1)

    def _remember(self, row: int, outcome: str, value: Any) -> None:
        """Keep the value the next cas on this key expects: the last one read or written."""
        op, key, sent = self.world.history.operation(row)
        if outcome == "ok":
            self._known[key] = value if op == "read" else sent[1] if op == "cas" else sent
        elif op == "cas":
            self._known.pop(key, None)

    def _finish(self, row: int, outcome: str, value: Any, error: str | None) -> None:
        self.world.history.complete(row, self.now, outcome, value, error)
        if self._cas:
            self._remember(row, outcome, value)
        self.world.op_finished()
        if self.cfg.mode == "closed":
            self._schedule_next(self.now)


def make_clients(world: World) -> list[Client]:
    cfg = world.scenario.workload
    homes = cfg.homes or world.scenario.cluster.nodes
    keys = KeyChooser(cfg.keys, cfg.key_dist, cfg.zipf_s)
    return [Client(world, f"c{i}", i, homes[i % len(homes)], cfg, keys) for i in range(cfg.clients)]
