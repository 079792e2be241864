"""The protocol contract: what a protocol gives capsim, and where protocols come from.

A protocol is three things:

* a **config**: a frozen dataclass subclassing :class:`ProtocolConfig`, registered
  under its ``tag`` (the scenario's ``protocol.name``). Its fields are the protocol's
  parameters; they are validated like every other part of a scenario;
* **node classes** (:class:`sim.kernel.Node` subclasses) whose deterministic handlers
  react to messages (``handle_<MessageClass>(msg, src)``) and timers;
* a **per-run state object** of the protocol's own type (``new_state``): the
  observer's record of one run (event channels, counters, the final report), shared
  by the protocol's nodes and its result hooks and never by two runs.

Optionally it lists its message classes (:meth:`ProtocolConfig.message_types`), each
of which may declare a ``kind``, so that a scenario can set latency by message.

:func:`sim.run` drives every protocol the same way::

    state = config.new_state(world)                # per-run state (or None)
    world.add_nodes(config.build_nodes(world, state))
    world.run()                                    # clients, faults, drain (sim.drain), settle
    config.finish(world, state)                    # settle in-flight work, close records
    summary  = config.summary(world, state)        # flat numbers for Result.summary
    tables   = config.tables(world, state)         # DataFrames for Result.tables
    verdicts = config.verdicts(world, state)       # checker results for Result.verdicts

and ``config.report(result)`` gives the lines ``capsim run`` prints for it.

Where protocols come from, in the order they are looked up:

1. the built-in table below (imported on first use);
2. any module that has already registered one (``@register_protocol``), e.g. a
   notebook cell or a test file;
3. ``protocol.module`` in the scenario: a module name (``"mylab.register"``) or a
   path to a ``.py`` file, imported before the name is looked up;
4. installed distributions' entry points in the group ``capsim.protocols``
   (``my_register = "mylab.register"``).

``docs/protocols.md`` walks through a complete example.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .config import fld
from .errors import ScenarioError
from .tagged import Tagged

if TYPE_CHECKING:
    import pandas as pd

    from .kernel.node import Host, Node
    from .kernel.world import World
    from .result import Result
    from .scenario import Scenario

__all__ = [
    "ProtocolConfig",
    "register_protocol",
    "protocol_names",
    "load_module",
    "BUILTIN_PROTOCOLS",
    "LAB_PROTOCOLS",
    "ENTRY_POINT_GROUP",
]

S = TypeVar("S")

ENTRY_POINT_GROUP = "capsim.protocols"

#: protocol name -> the module that registers it
BUILTIN_PROTOCOLS: dict[str, str] = {
    "single_copy": "sim.protocols.single_copy",
    "fifo_queue": "sim.protocols.fifo_queue",
    "primary_backup": "sim.replication.primary_backup",
    "quorum": "sim.replication.quorum",
    "eventual": "sim.replication.eventual",
    "raft": "sim.replication.raft",
    "messaging": "sim.messaging.protocol",
    "saga": "sim.messaging.saga",
    "notification": "sim.messaging.notification",
    "transactional_messages": "sim.messaging.txmsg",
    "two_phase_commit": "sim.transactions.two_phase",
    "three_phase_commit": "sim.transactions.three_phase",
}

#: the labs' protocols (they run a student's solution, named by ``protocol.solution``) -> module
LAB_PROTOCOLS: dict[str, str] = {
    "lab_register": "sim.labs.register",
    "lab_leader": "sim.labs.leader",
    "lab_consumer": "sim.labs.consumer",
    "lab_saga": "sim.labs.saga",
    "lab_commit": "sim.labs.commit",
    "lab_gossip": "sim.labs.gossip",
}


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig(Tagged, Generic[S]):
    """Base of every protocol's frozen config; ``S`` is the type of its per-run state.

    Subclasses are frozen, keyword-only dataclasses with a class variable ``tag``,
    registered with :func:`register_protocol`. Only :meth:`build_nodes` is required.
    ``module`` names where the protocol is defined when it is not built in (see the
    module docstring); it is carried in the resolved scenario so that a saved run,
    or a sweep's worker process, can load the protocol again.
    """

    tag_key: ClassVar[str] = "name"
    #: whether its servers answer a repeated ``ClientRequest.idempotency_key`` from a duplicate
    #: table instead of applying the write again (``workload.retry.idempotency_keys`` needs it)
    honours_idempotency_keys: ClassVar[bool] = False
    module: str | None = fld(None, doc="module or .py file that defines this protocol (not built in)")

    # -- the scenario ----------------------------------------------------------------------
    def node_refs(self) -> list[tuple[str, str]]:
        """(field, node name) pairs this config names, checked against the cluster."""
        return []

    def check_scenario(self, scenario: Scenario, path: str) -> None:
        """Raise :class:`~sim.errors.ScenarioError` if this protocol cannot run ``scenario``."""

    def cas_refusal(self) -> str | None:
        """Why this protocol's nodes cannot run compare-and-set client operations (``None``: they can).

        A protocol that serves ``ClientRequest(op="cas")`` overrides this to return
        ``None`` (or a reason for the configurations it cannot serve); the scenario
        then accepts ``workload.cas_fraction > 0`` and ``workload.pattern = "counter"``.
        """
        return "its nodes serve only read and write"

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        """The message classes this protocol's nodes send (client messages included).

        ``network.message_latency`` tables accept their class names and the
        ``kind`` each declares (a class variable, e.g. ``kind: ClassVar[str] =
        "write"``), so latency can differ by message (see :mod:`sim.netconfig`).
        Default: none declared.
        """
        return ()

    # -- running -----------------------------------------------------------------------------
    def new_state(self, world: Host) -> S:
        """The per-run state shared by this run's nodes and result hooks (default: none)."""
        return None  # type: ignore[return-value]

    def build_nodes(self, world: Host, state: S) -> Mapping[str, Node]:
        """One node per name in ``world.scenario.nodes``."""
        raise NotImplementedError(f"protocol {self.tag!r} must implement build_nodes(world, state)")

    def finish(self, world: World, state: S) -> None:
        """Called once after the run, before the result hooks (e.g. let work in flight settle)."""

    def idle(self, world: World, state: S) -> bool:
        """Whether nothing of the protocol's own is in flight now (``run.drain = { until = "idle" }`` waits for it).

        Client operations in flight are the kernel's business, not this hook's.
        Default: the protocol has nothing of its own in flight (``True``).
        """
        return True

    def replicas_for(self, key: Any, nodes: tuple[str, ...]) -> tuple[str, ...]:
        """The nodes that hold a replica of ``key`` (for convergence checks)."""
        return nodes

    def leader(self, world: World) -> str | None:
        """The node that currently leads (``None``: none now). Protocols with a leader override this."""
        raise NotImplementedError(f"protocol {self.tag!r} has no leader")

    @classmethod
    def has_leader(cls) -> bool:
        return cls.leader is not ProtocolConfig.leader

    # -- results -------------------------------------------------------------------------------
    def summary(self, world: World, state: S) -> dict[str, Any]:
        """Protocol numbers for the run summary (flat ``name: number``)."""
        return {}

    def tables(self, world: World, state: S) -> dict[str, pd.DataFrame]:
        """Protocol tables for ``Result.tables``: by default every channel of the run's event log."""
        return world.events.frames()

    def verdicts(self, world: World, state: S) -> dict[str, Any]:
        """Checker results for ``Result.verdicts`` (each a :class:`sim.checkers.Verdict`)."""
        return {}

    def report(self, result: Result) -> list[str]:
        """Lines ``capsim run`` prints for this protocol, after the common ones."""
        return []

    # -- the registry ----------------------------------------------------------------------------
    @classmethod
    def members(cls) -> dict[str, type]:
        """Every protocol registered so far, with the built-in ones and the entry points loaded."""
        for name in (*BUILTIN_PROTOCOLS, *LAB_PROTOCOLS):
            _load_builtin(name)
        _load_entry_points()
        return dict(cls._members)

    @classmethod
    def lookup(cls, name: str) -> type | None:
        """The config class registered as ``name``, loading only what is needed to find it."""
        if name not in cls._members:
            if name in BUILTIN_PROTOCOLS or name in LAB_PROTOCOLS:
                _load_builtin(name)
            else:
                _load_entry_points()
        return cls._members.get(name)

    @classmethod
    def from_plain(cls, value: Any, path: str) -> Any:
        if isinstance(value, Mapping) and value.get("module") is not None:
            module = value["module"]
            if not isinstance(module, str) or not module:
                raise ScenarioError(f"{path}.module", f"must be a module name or a .py path, got {module!r}")
            load_module(module, f"{path}.module")
        return super().from_plain(value, path)

    @classmethod
    def _unknown_hint(cls) -> str:
        if not _IMPORT_ERRORS:
            return ""
        failed = "; ".join(f"{m} ({e})" for m, e in _IMPORT_ERRORS.items())
        return f" (modules that failed to import: {failed})"


#: module -> why importing it failed (shown when a protocol name is not found)
_IMPORT_ERRORS: dict[str, str] = {}
_ENTRY_POINTS_LOADED: list[bool] = [False]


def register_protocol(config: type[ProtocolConfig[Any]]) -> type[ProtocolConfig[Any]]:
    """Class decorator: make ``config`` available as ``protocol.name = config.tag``."""
    if not (isinstance(config, type) and issubclass(config, ProtocolConfig)):
        raise TypeError(f"register_protocol needs a ProtocolConfig subclass, got {config!r}")
    if "__dataclass_fields__" not in config.__dict__:  # its own fields, not only the inherited ones
        raise TypeError(f"{config.__name__} must be a frozen dataclass (@dataclass(frozen=True, kw_only=True))")
    return ProtocolConfig.register(config)


def protocol_names() -> list[str]:
    """Every protocol name that can be used now."""
    return sorted(ProtocolConfig.members())


def _import(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # reported when a protocol name is not found
        _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {exc}"


def _load_builtin(name: str) -> None:
    _import(BUILTIN_PROTOCOLS[name] if name in BUILTIN_PROTOCOLS else LAB_PROTOCOLS[name])


def _load_entry_points() -> None:
    if _ENTRY_POINTS_LOADED[0]:
        return
    _ENTRY_POINTS_LOADED[0] = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            _IMPORT_ERRORS[f"entry point {ep.name} = {ep.value}"] = f"{type(exc).__name__}: {exc}"


def load_module(spec: str, path: str = "protocol.module") -> str:
    """Import a protocol module given as a dotted name or as a path to a ``.py`` file.

    A file is imported under a name derived from its absolute path (so importing it
    twice returns the same module, and worker processes find it by the same name);
    relative paths are taken from the current directory. Returns the module's name.
    """
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        file = Path(spec).expanduser().resolve()
        if not file.is_file():
            raise ScenarioError(path, f"no such file: {spec!r}")
        digest = hashlib.blake2b(str(file).encode(), digest_size=6).hexdigest()
        name = f"capsim_user_{file.stem}_{digest}"
        if name not in sys.modules:
            loader_spec = importlib.util.spec_from_file_location(name, file)
            if loader_spec is None or loader_spec.loader is None:
                raise ScenarioError(path, f"cannot import {spec!r} as a Python module")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise ScenarioError(path, f"importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc
        return name
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and spec.startswith(exc.name):
            raise ScenarioError(path, f"no module named {spec!r} (is it on the Python path?)") from None
        raise ScenarioError(path, f"importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise ScenarioError(path, f"importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    return spec
