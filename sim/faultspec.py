"""Fault schedules as data (the "nemesis"): timed faults and a random generator.

Each fault is a frozen config with a ``kind``, a ``start`` and an ``end``
(``"inf"``: never healed). The kernel applies them (``sim.kernel.faults``);
workload code never does. In TOML::

    [[faults.schedule]]
    kind = "partition"
    start = "2s"
    end = "5s"
    groups = [["n1", "n2"], ["n3", "n4", "n5"]]

    [faults.random]            # faults drawn from rates with the "faults" stream
    partition_mtbf = "10s"
    partition_duration = { dist = "exponential", mean = "2s" }
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from .config import Duration, MaybeInfDuration, SignedDuration, fld, positive, prob
from .dists import Dist, Exponential
from .errors import ScenarioError
from .tagged import Tagged

__all__ = [
    "Fault",
    "Partition",
    "Split",
    "Isolate",
    "Crash",
    "LossWindow",
    "DuplicateWindow",
    "LatencySpike",
    "ClockSkew",
    "ClockStep",
    "RandomFaults",
    "FaultsConfig",
]

INF = math.inf
LEADER = "@leader"
"""As a fault's ``node``: whichever node the protocol says leads when the fault starts."""


class Fault(Tagged):
    """A fault active over ``[start, end)``."""

    tag_key: ClassVar[str] = "kind"
    start: float
    end: float

    def _validate(self, path: str) -> None:
        if self.end <= self.start:
            raise ScenarioError(f"{path}.end", f"must be after start ({self.start} ms), got {self.end} ms")

    def node_refs(self) -> list[tuple[str, str]]:
        """(field, node name) pairs this fault refers to, for reference checks."""
        return []


def _link_refs(src: str | None, dst: str | None) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (("src", src), ("dst", dst)) if v is not None]


@Fault.register
@dataclass(frozen=True, kw_only=True)
class Partition(Fault):
    """Nodes in different groups cannot talk; nodes named in no group form one more group.

    With ``one_way = true`` only messages *from* ``groups[0]`` to the other groups are
    dropped; the reverse direction still works.
    """

    tag: ClassVar[str] = "partition"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    groups: tuple[tuple[str, ...], ...] = fld(())
    one_way: bool = fld(False)

    def _validate(self, path: str) -> None:
        super()._validate(path)
        if not self.groups:
            raise ScenarioError(f"{path}.groups", "must list at least one group of node names")
        seen: set[str] = set()
        for i, group in enumerate(self.groups):
            if not group:
                raise ScenarioError(f"{path}.groups[{i}]", "must not be empty")
            for j, node in enumerate(group):
                if node in seen:
                    raise ScenarioError(f"{path}.groups[{i}][{j}]", f"node {node!r} is in two groups")
                seen.add(node)

    def node_refs(self):
        return [(f"groups[{i}][{j}]", n) for i, g in enumerate(self.groups) for j, n in enumerate(g)]


@Fault.register
@dataclass(frozen=True, kw_only=True)
class Split(Fault):
    """Split the cluster into a minority of ``minority`` nodes and the majority.

    ``pick`` chooses the minority: ``"random"`` (faults stream), ``"first"`` or ``"last"``
    nodes of the cluster. ``minority`` defaults to ``(n - 1) // 2``; ``n // 2`` nodes
    with an even ``n`` gives random halves.
    """

    tag: ClassVar[str] = "split"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    minority: int | None = fld(None, check=positive)
    pick: Literal["random", "first", "last"] = fld("random")


@Fault.register
@dataclass(frozen=True, kw_only=True)
class Isolate(Fault):
    """Cut one node off from the other nodes (clients homed at it stay with it).

    ``node = "@leader"`` isolates whichever node leads when the fault starts
    (for protocols with a leader, e.g. Raft or primary-backup).
    """

    tag: ClassVar[str] = "isolate"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    node: str = fld()

    def node_refs(self):
        return [("node", self.node)]


@Fault.register
@dataclass(frozen=True, kw_only=True)
class Crash(Fault):
    """Crash ``node`` at ``start`` (volatile state lost) and recover it at ``end``.

    ``node = "@leader"`` crashes whichever node leads when the fault starts.
    ``clean = true`` makes it a clean restart (an orderly stop, e.g. RabbitMQ's
    ``stop_app`` / ``start_app``) instead of a hard kill. Only the messaging
    broker tells the two apart (a classic queue then marks redelivered only the
    messages it had delivered before, :meth:`sim.messaging.broker.Broker.crash`);
    every other node loses its volatile state either way, so for it a clean
    restart is the same as a crash. A clean restart must end.
    """

    tag: ClassVar[str] = "crash"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    node: str = fld()
    clean: bool = fld(False)

    def _validate(self, path: str) -> None:
        super()._validate(path)
        if self.clean and not math.isfinite(self.end):
            raise ScenarioError(f"{path}.end", "a clean restart must end (the node is restarted): give an end, "
                                "or leave clean = false for a node that stays down")

    def node_refs(self):
        return [("node", self.node)]


@Fault.register
@dataclass(frozen=True, kw_only=True)
class LossWindow(Fault):
    """Extra message loss on the matching links (``src``/``dst`` omitted: any)."""

    tag: ClassVar[str] = "loss"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    probability: float = fld(check=prob)
    src: str | None = fld(None)
    dst: str | None = fld(None)

    def node_refs(self):
        return _link_refs(self.src, self.dst)


@Fault.register
@dataclass(frozen=True, kw_only=True)
class DuplicateWindow(Fault):
    """Extra message duplication on the matching links."""

    tag: ClassVar[str] = "duplicate"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    probability: float = fld(check=prob)
    src: str | None = fld(None)
    dst: str | None = fld(None)

    def node_refs(self):
        return _link_refs(self.src, self.dst)


@Fault.register
@dataclass(frozen=True, kw_only=True)
class LatencySpike(Fault):
    """Add a delay drawn from ``extra`` to every message on the matching links."""

    tag: ClassVar[str] = "latency_spike"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    extra: Dist = fld()
    src: str | None = fld(None)
    dst: str | None = fld(None)

    def node_refs(self):
        return _link_refs(self.src, self.dst)


@Fault.register
@dataclass(frozen=True, kw_only=True)
class ClockSkew(Fault):
    """While the fault lasts the node's wall clock reads ``t + offset + drift * (t - start)``.

    At ``start`` the wall clock (``Node.clock()``, the timestamps of LWW) jumps by
    ``offset``, and the node's oscillator runs ``1 + drift`` times as fast as real
    time: the wall clock, the monotonic clock (``Node.monotonic()``, which measures
    leases) *and every timer* of the node, which then fires after ``d / (1 + drift)``
    real ms for a duration of ``d`` local ms. The offset moves readings only: a jump
    changes no timer and no monotonic duration. At ``end`` the oscillator keeps time
    again and the wall clock is set right (a jump back to real time); the monotonic
    clock keeps what it gained or lost, without a jump.
    """

    tag: ClassVar[str] = "clock_skew"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    node: str = fld()
    offset: SignedDuration = fld(0.0)
    drift: float = fld(0.0)

    def _validate(self, path: str) -> None:
        super()._validate(path)
        if self.drift <= -1:
            raise ScenarioError(f"{path}.drift", f"must be > -1 (a clock cannot stop or run backwards), "
                                f"got {self.drift}")

    def node_refs(self):
        return [("node", self.node)]


@Fault.register
@dataclass(frozen=True, kw_only=True)
class ClockStep(Fault):
    """At ``start`` the node's wall clock jumps by ``by`` (backwards if negative) and stays so.

    An NTP step, or an operator setting the time: only ``Node.clock()`` readings move.
    Timers and the monotonic clock are unaffected, so durations measured on it
    (Raft's leases and election timeouts) do not notice. A step is an instant: it has
    no ``end`` (a later ``clock_skew`` fault that ends sets the wall clock right).
    """

    tag: ClassVar[str] = "clock_step"
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)
    node: str = fld()
    by: SignedDuration = fld()

    def _validate(self, path: str) -> None:
        if math.isfinite(self.end):
            raise ScenarioError(f"{path}.end", f"a clock step is an instant and has no end, got {self.end} ms "
                                "(use clock_skew for an offset that is undone)")

    def node_refs(self):
        return [("node", self.node)]


@dataclass(frozen=True, kw_only=True)
class RandomFaults:
    """Faults drawn at random from rates, with the run's ``faults`` stream.

    Partitions follow each other with exponential gaps of mean ``partition_mtbf``
    (measured from the previous heal). Each node in ``crash_nodes`` (default: all)
    independently stays up for an exponential time of mean ``crash_mtbf``, then
    is down for a ``crash_duration``.
    """

    partition_mtbf: MaybeInfDuration = fld(INF, check=positive, every="run")
    partition_duration: Dist = fld(Exponential(1000.0))
    partition: Literal["split", "random_halves", "isolate"] = fld("split")
    crash_mtbf: MaybeInfDuration = fld(INF, check=positive, every="node")
    crash_duration: Dist = fld(Exponential(1000.0))
    crash_nodes: tuple[str, ...] = fld(())
    start: Duration = fld(0.0)
    end: MaybeInfDuration = fld(INF)

    def node_refs(self) -> list[tuple[str, str]]:
        return [(f"crash_nodes[{i}]", n) for i, n in enumerate(self.crash_nodes)]

    def generate(self, nodes: tuple[str, ...], until: float, rng: np.random.Generator) -> list[Fault]:
        """Concrete faults in ``[start, min(end, until))``, deterministic for ``rng``."""
        stop = min(self.end, until)
        out: list[Fault] = []
        if math.isfinite(self.partition_mtbf):
            t = self.start
            while True:
                t += float(rng.exponential(self.partition_mtbf))
                if t >= stop:
                    break
                length = max(float(self.partition_duration.sample(rng)), 1e-3)
                end = t + length
                if self.partition == "isolate":
                    node = nodes[int(rng.integers(len(nodes)))]
                    out.append(Isolate(start=t, end=end, node=node))
                else:
                    k = len(nodes) // 2 if self.partition == "random_halves" else (len(nodes) - 1) // 2
                    minority = tuple(sorted(rng.choice(len(nodes), size=max(k, 1), replace=False).tolist()))
                    groups = (tuple(nodes[i] for i in minority),)
                    out.append(Partition(start=t, end=end, groups=groups))
                t = end
        if math.isfinite(self.crash_mtbf):
            for node in self.crash_nodes or nodes:
                t = self.start
                while True:
                    t += float(rng.exponential(self.crash_mtbf))
                    if t >= stop:
                        break
                    end = t + max(float(self.crash_duration.sample(rng)), 1e-3)
                    out.append(Crash(start=t, end=end, node=node))
                    t = end
        out.sort(key=lambda f: (f.start, f.tag))
        return out


@dataclass(frozen=True, kw_only=True)
class FaultsConfig:
    schedule: tuple[Fault, ...] = fld(())
    random: RandomFaults | None = fld(None)

    def node_refs(self) -> list[tuple[str, str]]:
        refs = [(f"schedule[{i}].{k}", n) for i, f in enumerate(self.schedule) for k, n in f.node_refs()]
        if self.random is not None:
            refs += [(f"random.{k}", n) for k, n in self.random.node_refs()]
        return refs


def describe(fault: Fault) -> dict[str, Any]:
    """A flat description of a fault for the faults table."""
    from .config import to_plain

    d = to_plain(fault)
    kind = d.pop("kind")
    d.pop("start", None)
    d.pop("end", None)
    return {"kind": kind, "start": fault.start, "end": fault.end, "detail": ", ".join(f"{k}={v}" for k, v in d.items())}


