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
``ops/<client>``), so nothing else in the run shifts its arrival times.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dists import Exponential, buffered_sampler, uniform_sampler
from ..kernel.messages import ClientReply, ClientRequest
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
        self._pending: dict[int, tuple[int, Any]] = {}
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
        timer = None
        if math.isfinite(self.cfg.timeout):
            timer = self.set_timer(self.cfg.timeout, self._timeout, op_id)
        self._pending[op_id] = (row, timer)
        self.send(target, ClientRequest(op_id, op, key, value))

    def handle_ClientReply(self, msg: ClientReply, src: str) -> None:
        entry = self._pending.pop(msg.op_id, None)
        if entry is None:  # a late or duplicated reply
            return
        row, timer = entry
        if timer is not None:
            timer.cancel()
        self._finish(row, "ok" if msg.ok else "fail", msg.value, msg.error)

    def _timeout(self, op_id: int) -> None:
        entry = self._pending.pop(op_id, None)
        if entry is not None:
            self._finish(entry[0], "info", None, "timeout")

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
