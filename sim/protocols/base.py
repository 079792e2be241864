"""The protocol family: ``protocol.name`` in a scenario selects one of these configs."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, ClassVar

from ..tagged import Tagged

if TYPE_CHECKING:
    from ..kernel.node import Node
    from ..kernel.world import World
    from ..scenario import Scenario

__all__ = ["ProtocolConfig", "protocol_names"]


class ProtocolConfig(Tagged):
    """Base of every protocol's frozen config.

    A protocol config knows how to build the protocol's nodes in a world
    (``build_nodes``), which node names it refers to (``node_refs``), and may
    check itself against the whole scenario (``check_scenario``, e.g. R <= N).
    """

    tag_key: ClassVar[str] = "name"
    #: packages whose modules register protocols when imported
    builtin_packages: ClassVar[tuple[str, ...]] = (
        "sim.protocols",
        "sim.replication",
        "sim.messaging",
        "sim.transactions",
    )
    _loaded: ClassVar[bool] = False
    _import_errors: ClassVar[dict[str, str]] = {}

    @classmethod
    def members(cls) -> dict[str, type]:
        """Registered protocols; a module that fails to import only loses its own protocols."""
        if not ProtocolConfig._loaded:
            ProtocolConfig._loaded = True
            for package in cls.builtin_packages:
                try:
                    pkg = importlib.import_module(package)
                except ModuleNotFoundError as exc:
                    if exc.name == package:
                        continue
                    raise
                for info in pkgutil.iter_modules(pkg.__path__):
                    if info.name.startswith("_"):
                        continue
                    module = f"{package}.{info.name}"
                    try:
                        importlib.import_module(module)
                    except Exception as exc:  # reported when a protocol name is not found
                        ProtocolConfig._import_errors[module] = f"{type(exc).__name__}: {exc}"
        return dict(cls._members)

    @classmethod
    def _unknown_hint(cls) -> str:
        if not cls._import_errors:
            return ""
        failed = "; ".join(f"{m} ({e})" for m, e in cls._import_errors.items())
        return f" (modules that failed to import: {failed})"

    def node_refs(self) -> list[tuple[str, str]]:
        return []

    def check_scenario(self, scenario: Scenario, path: str) -> None:
        """Raise ScenarioError if this protocol cannot run on ``scenario``."""

    def build_nodes(self, world: World) -> dict[str, Node]:
        raise NotImplementedError

    def replicas_for(self, key: Any, nodes: tuple[str, ...]) -> tuple[str, ...]:
        """The nodes that hold a replica of ``key`` (for convergence checks)."""
        return nodes

    def leader(self, world: World) -> str | None:
        """The node that currently leads (``None``: none now). Protocols with a leader override this."""
        raise NotImplementedError(f"protocol {self.tag!r} has no leader")

    @classmethod
    def has_leader(cls) -> bool:
        return cls.leader is not ProtocolConfig.leader

    def summary(self, world: World) -> dict[str, Any]:
        """Protocol counters to add to the run summary (flat ``name: number``)."""
        return {}

    def tables(self, world: World) -> dict[str, Any]:
        """Protocol tables (pandas DataFrames by name) for ``Result.tables``, e.g. per-message events."""
        return {}


def protocol_names() -> list[str]:
    return sorted(ProtocolConfig.members())
