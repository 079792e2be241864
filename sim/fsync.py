"""When a node's writes become durable: the fsync policy (``cluster.fsync`` and ``cluster.node_fsync``).

A node's ``self.disk`` is what its protocol writes to stable storage. Whether a
write survives a *hard* crash (a power loss, a kernel panic: the page cache is gone)
depends on when the node last flushed it, as with a database's fsync setting:

``always``
    every write is durable the moment it is made (fsync on every write). The
    default, and what every protocol here assumes.
``{ policy = "interval", interval = "50ms" }``
    the disk is flushed every ``interval`` ms (Redis ``appendfsync everysec``, a
    journal commit interval); a hard crash loses what was written since the last
    flush. The flush runs on the node: it stops at a crash and restarts with the node.
``never``
    nothing is flushed while the node runs (fsync disabled, or a disk cache that
    lies); only a clean stop flushes. A hard crash loses every write since.

A clean stop (a ``crash`` fault with ``clean = true``) flushes everything under any
policy. A process crash that leaves the machine up (a seeded consumer or producer
crash, :meth:`sim.kernel.Node.restart_after`) loses nothing that was written: the
operating system still holds it. ``docs/durability.md`` lists which protocols
assume ``always`` and what breaks without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .config import Duration, build, fld, positive
from .errors import ScenarioError

__all__ = ["FsyncPolicy", "NodeFsync", "ALWAYS", "POLICIES"]

POLICIES = ("always", "interval", "never")

_ACCEPTS = ("'always', 'never', or a table { policy = \"interval\", interval = \"50ms\" } "
            "(or { policy = \"always\" } / { policy = \"never\" })")


@dataclass(frozen=True, kw_only=True)
class FsyncPolicy:
    """A node's fsync policy: ``"always"``, ``"never"`` or ``{ policy = "interval", interval = "50ms" }``."""

    policy: Literal["always", "interval", "never"] = fld("always", doc="when writes become durable")
    interval: Duration | None = fld(None, check=positive, every="node",
                                    doc="flush period; only with policy = 'interval'")

    def _validate(self, path: str) -> None:
        self.check(path)

    def check(self, path: str) -> None:
        """Raise :class:`ScenarioError` under ``path`` if this policy is not a valid one."""
        if self.policy not in POLICIES:
            raise ScenarioError(f"{path}.policy", f"must be one of {', '.join(map(repr, POLICIES))}, "
                                                  f"got {self.policy!r}")
        if self.policy == "interval":
            if self.interval is None:
                raise ScenarioError(f"{path}.interval", "is required when policy = 'interval', e.g. "
                                                        "{ policy = \"interval\", interval = \"50ms\" }")
            if isinstance(self.interval, bool) or not isinstance(self.interval, (int, float)) \
                    or not math.isfinite(self.interval) or self.interval <= 0:
                raise ScenarioError(f"{path}.interval", f"must be a duration > 0, got {self.interval!r}")
        elif self.interval is not None:
            raise ScenarioError(f"{path}.interval", f"only applies to policy = 'interval', not {self.policy!r}")

    @property
    def always(self) -> bool:
        return self.policy == "always"

    @classmethod
    def from_plain(cls, value: Any, path: str) -> FsyncPolicy:
        if isinstance(value, FsyncPolicy):
            value.check(path)
            return value
        if isinstance(value, str):
            if value == "interval":
                raise ScenarioError(path, "'interval' needs its period: write "
                                          "{ policy = \"interval\", interval = \"50ms\" }")
            if value not in POLICIES:
                raise ScenarioError(path, f"must be {_ACCEPTS}, got {value!r}")
            return cls(policy=value)  # type: ignore[arg-type]
        if isinstance(value, Mapping):
            policy: FsyncPolicy = build(cls, value, path)
            return policy
        raise ScenarioError(path, f"must be {_ACCEPTS}, got {type(value).__name__} {value!r}")

    def to_plain(self) -> Any:
        if self.interval is None:
            return self.policy
        return {"policy": self.policy, "interval": self.interval}

    def __str__(self) -> str:
        return self.policy if self.interval is None else f"interval {self.interval:g} ms"


ALWAYS = FsyncPolicy()
"""Every write durable at once (the default)."""


class NodeFsync:
    """Per-node fsync policies overriding ``cluster.fsync``, e.g. ``{ n1 = "never" }``."""

    __slots__ = ("items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self.items: tuple[tuple[str, FsyncPolicy], ...] = tuple(
            (node, FsyncPolicy.from_plain(policy, f"node_fsync.{node}")) for node, policy in pairs)

    def get(self, node: str) -> FsyncPolicy | None:
        for name, policy in self.items:
            if name == node:
                return policy
        return None

    def __iter__(self) -> Iterator[tuple[str, FsyncPolicy]]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeFsync) and dict(self.items) == dict(other.items)

    def __hash__(self) -> int:
        return hash(frozenset(self.items))

    def __repr__(self) -> str:
        return f"NodeFsync({ {n: p.to_plain() for n, p in self.items}!r})"

    @classmethod
    def from_plain(cls, value: Any, path: str) -> NodeFsync:
        if isinstance(value, NodeFsync):
            return value
        if not isinstance(value, Mapping):
            raise ScenarioError(path, f"must be a table of node name -> fsync policy ({_ACCEPTS}), "
                                      f"got {type(value).__name__} {value!r}")
        items = []
        for node, policy in value.items():
            if not isinstance(node, str) or not node:
                raise ScenarioError(path, f"keys must be node names, got {node!r}")
            items.append((node, FsyncPolicy.from_plain(policy, f"{path}.{node}")))
        return cls(items)

    def to_plain(self) -> dict[str, Any]:
        return {node: policy.to_plain() for node, policy in self.items}

    def check(self, nodes: tuple[str, ...], path: str) -> None:
        """Every overridden node is a cluster node, and every policy is valid."""
        known = set(nodes)
        for node, policy in self.items:
            if node not in known:
                raise ScenarioError(f"{path}.{node}", f"unknown node {node!r}; cluster nodes are {', '.join(nodes)}")
            policy.check(f"{path}.{node}")
