"""What a search explores: its limits, its timing model, the client operations and the fault budget.

The faults come from the scenario: every entry of ``faults.schedule`` of kind
``partition`` or ``crash`` is one fault the search may start at any point of an
execution, and end (heal, recover) at any later point if the entry has an end. The
schedule says *which* faults, the search decides *when*. ``network.loss > 0`` lets
the search drop messages (at most ``max_drops``), ``network.duplicate > 0`` lets it
deliver a message twice (at most ``max_duplicates``). Messages take between the
bounds of ``network.latency`` (a constant or a uniform distribution), or ``latency``.

In TOML the search's own settings sit in a ``[search]`` table next to the scenario's::

    [search]
    strategy = "bfs"
    max_depth = 30
    predicates = ["atomicity"]
    [[search.operations]]
    op = "write"
    key = 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import at_least, build, fld, positive
from ..dists import Constant, Uniform
from ..errors import ScenarioError
from ..faultspec import Crash, Partition
from ..scenario import Scenario

__all__ = ["SearchConfig", "OperationSpec", "FaultOption", "fault_budget", "latency_bounds", "parse_search",
           "load_search"]


@dataclass(frozen=True, kw_only=True)
class OperationSpec:
    """One client operation the search may issue (in list order, each from its own client)."""

    op: Literal["read", "write"] = fld("write")
    key: int = fld(0)
    value: int | None = fld(None, doc="what a write writes (default: the operation's number, so writes differ)")
    node: str | None = fld(None, doc="the node it goes to (default: search.target)")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """How to explore (see the module docstring)."""

    strategy: Literal["bfs", "dfs", "random"] = fld("bfs", doc="breadth-first (shortest counter-example), "
                                                       "depth-first to max_depth, or random walks")
    max_depth: int = fld(30, check=at_least(1), doc="steps from the initial state")
    max_states: int = fld(1_000_000, check=at_least(1), doc="distinct states to store at most")
    max_seconds: float = fld(300.0, check=positive, doc="wall-clock limit in seconds")
    walks: int = fld(1000, check=at_least(1), doc="random walks (strategy = random)")
    seed: int = fld(1, check=at_least(0), doc="seed of the random walks")
    timing: Literal["bounded", "ordering"] = fld("bounded", doc="bounded: messages arrive within the latency "
                                                 "bounds and timers fire in time order; ordering: time is "
                                                 "ordering only, a node's timers fire in any order its own "
                                                 "shorter timers allow")
    latency: tuple[float, ...] = fld((), doc="[low, high] ms of every message (default: network.latency)")
    max_drops: int = fld(1, check=at_least(0), doc="messages lost at most (only if network.loss > 0)")
    max_duplicates: int = fld(1, check=at_least(0), doc="messages duplicated at most (only if "
                                                        "network.duplicate > 0)")
    predicates: tuple[str, ...] = fld((), doc="invariants and goals by name (see sim.search.predicates)")
    operations: tuple[OperationSpec, ...] = fld((), doc="client operations, issued in order")
    target: str | None = fld(None, doc="node the clients send to (default: workload.target_node or the "
                                       "first node)")
    symmetry: bool = fld(False, doc="merge states that differ only by a renaming of interchangeable nodes "
                                    "(refused, with the reason, where the protocol's nodes are not "
                                    "interchangeable; see sim.search.symmetry)")

    def _validate(self, path: str) -> None:
        if self.latency and (len(self.latency) != 2 or not 0 <= self.latency[0] <= self.latency[1]):
            raise ScenarioError(f"{path}.latency", f"must be [low, high] with 0 <= low <= high, got "
                                f"{list(self.latency)}")
        from .predicates import PREDICATES

        for i, name in enumerate(self.predicates):
            if name not in PREDICATES:
                raise ScenarioError(f"{path}.predicates[{i}]", f"unknown predicate {name!r}; accepted: "
                                    f"{', '.join(sorted(PREDICATES))}")


@dataclass(frozen=True)
class FaultOption:
    """One fault of the budget: ``kind`` (partition, crash), what it does, and whether it may end."""

    index: int
    kind: str
    node: str = ""
    groups: tuple[tuple[str, ...], ...] = ()
    one_way: bool = False
    ends: bool = True

    def describe(self) -> str:
        if self.kind == "crash":
            return f"crash {self.node}"
        sides = " | ".join(",".join(g) for g in self.groups)
        return f"partition {sides}" + (" (one way)" if self.one_way else "")


def fault_budget(scenario: Scenario) -> tuple[FaultOption, ...]:
    """The faults the search may inject, from the scenario's fault schedule."""
    faults = scenario.faults
    if faults.random is not None:
        raise ScenarioError("faults.random", "the search takes its faults from faults.schedule (partition and "
                            "crash entries); remove faults.random")
    out = []
    for i, f in enumerate(faults.schedule):
        path = f"faults.schedule[{i}]"
        if isinstance(f, Partition):
            out.append(FaultOption(i, "partition", groups=f.groups, one_way=f.one_way, ends=math.isfinite(f.end)))
        elif isinstance(f, Crash):
            if f.node.startswith("@"):
                raise ScenarioError(f"{path}.node", f"the search needs a node name, got {f.node!r}")
            out.append(FaultOption(i, "crash", node=f.node, ends=math.isfinite(f.end)))
        else:
            raise ScenarioError(f"{path}.kind", f"the search injects partition and crash faults, got {f.tag!r}")
    return tuple(out)


def latency_bounds(scenario: Scenario, cfg: SearchConfig) -> tuple[float, float]:
    """The range of every message's delay: ``search.latency`` or the bounds of ``network.latency``."""
    if cfg.latency:
        return float(cfg.latency[0]), float(cfg.latency[1])
    net = scenario.network
    for name in ("links", "message_latency", "zone_links", "self_latency", "client_latency"):
        if getattr(net, name):
            raise ScenarioError(f"network.{name}", "the search gives every message the same delay bounds; "
                                "remove it or set search.latency = [low, high]")
    dist = net.latency
    if isinstance(dist, Constant):
        return dist.value, dist.value
    if isinstance(dist, Uniform):
        return dist.low, dist.high
    raise ScenarioError("network.latency", f"the search needs bounded delays (a constant or uniform "
                        f"distribution), got {type(dist).__name__}; or set search.latency = [low, high]")


def parse_search(data: Any, path: str = "search") -> SearchConfig:
    """A validated :class:`SearchConfig` from plain data (a TOML ``[search]`` table)."""
    return build(SearchConfig, data if data is not None else {}, path)


def load_search(path: str | Path) -> tuple[Scenario, SearchConfig]:
    """A scenario TOML file and its ``[search]`` table (absent: the defaults)."""
    import tomllib

    import tomli_w

    from ..scenario import read_text_file

    p = Path(path)
    text = read_text_file(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(p), f"invalid TOML: {exc}") from None
    cfg = parse_search(data.pop("search", None))
    scenario = Scenario.from_toml_string(tomli_w.dumps(data), source=str(p), base=p.parent)
    return scenario, cfg
