"""The scenario: one frozen, validated description of a run.

Build it from Python, a dict or a TOML file; every field is checked when the
scenario is built and a problem raises :class:`ScenarioError` naming the field
path. Variants are new objects (``dataclasses.replace`` or
:meth:`Scenario.variant`); a scenario is never mutated.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w

from .client_retry import ClientRetry
from .config import (
    Duration,
    MaybeInfDuration,
    at_least,
    build,
    check_node_names,
    fld,
    nonneg,
    positive,
    prob,
    to_plain,
)
from .dists import Constant, Dist, resolve_dist_files
from .drain import DrainPolicy
from .errors import ScenarioError
from .faultspec import LEADER, FaultsConfig
from .fsync import FsyncPolicy, NodeFsync
from .netconfig import (
    LinkConfig,
    MessageLatency,
    NetworkConfig,
    TransportConfig,
    ZoneLinkConfig,
    Zones,
    check_network,
)
from .protocol import ProtocolConfig, protocol_names

__all__ = [
    "Scenario",
    "ClusterConfig",
    "NetworkConfig",
    "TransportConfig",
    "LinkConfig",
    "ZoneLinkConfig",
    "MessageLatency",
    "Zones",
    "FsyncPolicy",
    "NodeFsync",
    "WorkloadConfig",
    "RunConfig",
    "DrainPolicy",
    "ScenarioError",
    "read_text_file",
]


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """The server nodes. Give ``nodes = [...]`` names or ``count = N`` (named n1..nN).

    ``zones`` puts every node in one zone (a datacenter), e.g.
    ``zones = { dc1 = ["n1", "n2"], dc2 = ["n3"] }``; a client is in its home
    node's zone. ``network.zone_links`` sets the latency between zones.

    ``fsync`` is every node's fsync policy (:mod:`sim.fsync`): ``"always"`` (the
    default), ``"never"`` or ``{ policy = "interval", interval = "50ms" }``;
    ``node_fsync`` overrides it per node, e.g. ``node_fsync = { n1 = "never" }``.
    """

    nodes: tuple[str, ...] = fld(("n1", "n2", "n3"))
    zones: Zones | None = fld(None, doc="zone name -> its nodes; every node in one zone")
    fsync: FsyncPolicy = fld(FsyncPolicy(), doc="when writes to a node's disk become durable: "
                                               "always, never or { policy = 'interval', interval = ... }")
    node_fsync: NodeFsync | None = fld(None, doc="node name -> its fsync policy, overriding fsync")
    #: accepted besides the fields (turned into ``nodes`` by ``_preprocess``)
    _extra_keys: ClassVar[tuple[str, ...]] = ("count",)

    @classmethod
    def _preprocess(cls, data: dict[str, Any], path: str) -> dict[str, Any]:
        if "count" in data:
            count = data.pop("count")
            cpath = f"{path}.count"
            if isinstance(count, bool) or not isinstance(count, int) or count < 1 or count > 10_000:
                raise ScenarioError(cpath, f"must be an integer in [1, 10000], got {count!r}")
            names = tuple(f"n{i + 1}" for i in range(count))
            if "nodes" in data and list(data["nodes"]) != list(names) and len(data["nodes"]) != count:
                raise ScenarioError(cpath, f"disagrees with nodes ({len(data['nodes'])} names)")
            data.setdefault("nodes", names)
        return data

    def _validate(self, path: str) -> None:
        check_node_names(self.nodes, f"{path}.nodes")
        if self.zones is not None:
            self.zones.check(self.nodes, f"{path}.zones")
        self.fsync.check(f"{path}.fsync")
        if self.node_fsync is not None:
            self.node_fsync.check(self.nodes, f"{path}.node_fsync")

    def fsync_of(self, node: str) -> FsyncPolicy:
        """The fsync policy of ``node``: its ``node_fsync`` entry, else ``fsync``."""
        if self.node_fsync is not None:
            policy = self.node_fsync.get(node)
            if policy is not None:
                return policy
        return self.fsync


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    """Clients and the operations they issue.

    Clients are named c0, c1, ...; client i lives next to node ``homes[i % len(homes)]``
    (default: the cluster's nodes in turn), which decides its partition side.
    ``target`` picks the node each operation goes to: ``home``, ``random`` (per
    operation), ``round_robin`` or ``fixed`` (``target_node``). ``retry`` says
    whether and how a client retries an operation (default: never; see
    :mod:`sim.client_retry`); each attempt waits at most ``timeout``.

    Operations (``pattern = "register"``, the default): a read with probability
    ``read_fraction``, a compare-and-set with probability ``cas_fraction``, else
    a write of a new unique value. A compare-and-set ``cas(key, expected, new)``
    writes a new unique value and expects the last value this client read or
    wrote for that key (``None``, a key never written, when it knows none), so
    it succeeds when nobody else wrote the key in between.

    ``pattern = "counter"``: every client increments counters. For a key it
    knows a value of (``None`` counts as 0) it issues ``cas(key, v, v + 1)``;
    otherwise, or after a cas that failed or timed out, it reads the key first.
    ``read_fraction`` does not apply. The run's ``counter`` verdict compares the
    successful increments with the final value of each key.
    """

    clients: int = fld(4, check=at_least(0))
    homes: tuple[str, ...] = fld(())
    mode: Literal["open", "closed"] = fld("open")
    rate: float = fld(10.0, check=positive)
    think_time: Dist = fld(Constant(0.0))
    keys: int = fld(10, check=at_least(1))
    key_dist: Literal["uniform", "zipf"] = fld("uniform")
    zipf_s: float = fld(1.0, check=positive)
    read_fraction: float = fld(0.5, check=prob)
    cas_fraction: float = fld(0.0, check=prob, doc="share of compare-and-set operations (register pattern)")
    pattern: Literal["register", "counter"] = fld("register")
    timeout: MaybeInfDuration = fld(1000.0, check=positive)
    target: Literal["home", "random", "round_robin", "fixed"] = fld("home")
    target_node: str | None = fld(None)
    start: Duration = fld(0.0)
    retry: ClientRetry = fld(ClientRetry())

    def _validate(self, path: str) -> None:
        if self.target == "fixed" and self.target_node is None:
            raise ScenarioError(f"{path}.target_node", "is required when target = 'fixed'")
        if self.target != "fixed" and self.target_node is not None:
            raise ScenarioError(f"{path}.target_node", f"only applies to target = 'fixed', not {self.target!r}")
        if self.clients > 100_000:
            raise ScenarioError(f"{path}.clients", f"must be <= 100000, got {self.clients}")
        if self.pattern == "counter" and self.cas_fraction > 0:
            raise ScenarioError(f"{path}.cas_fraction", "only applies to pattern = 'register'; a counter client "
                                f"chooses between read and cas itself, got {self.cas_fraction}")
        if self.read_fraction + self.cas_fraction > 1 + 1e-12:
            raise ScenarioError(f"{path}.cas_fraction", f"read_fraction + cas_fraction must be at most 1, got "
                                f"{self.read_fraction} + {self.cas_fraction}")

    def uses_cas(self) -> bool:
        """Whether the clients issue compare-and-set operations."""
        return self.pattern == "counter" or self.cas_fraction > 0

    def node_refs(self) -> list[tuple[str, str]]:
        refs = [(f"homes[{i}]", n) for i, n in enumerate(self.homes)]
        if self.target_node is not None:
            refs.append(("target_node", self.target_node))
        return refs


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """How long to run, what to measure, and the root seed.

    Clients issue operations in ``[workload.start, duration)``; metrics count
    those invoked at or after ``warmup``. After ``duration`` the run drains
    (:mod:`sim.drain`): ``drain = "2s"`` goes on for at most that long (default:
    the client timeout, or ``duration`` when the timeout is infinite) so that
    operations in flight can finish; ``drain = { until = "idle", limit = "5s" }``
    goes on until nothing at all is in flight (for ``messaging``: every message
    confirmed and settled), at most ``limit``. Then the run goes on for
    ``settle`` more with no client load (to watch replicas converge).
    Replicated protocols' divergence is sampled every ``sample_interval``
    (default ``duration / 200``).
    """

    duration: Duration = fld(10_000.0, check=positive)
    warmup: Duration = fld(0.0)
    seed: int = fld(1, check=nonneg)
    drain: DrainPolicy | None = fld(None, doc="after duration: a duration (operations in flight finish) or "
                                              "{ until = 'idle', limit = ... } (see sim.drain)")
    settle: Duration = fld(0.0)
    trace: bool = fld(False)
    timeline_window: Duration | None = fld(None, check=positive, every="run")
    sample_interval: Duration | None = fld(None, check=positive, every="run")

    def _validate(self, path: str) -> None:
        if self.warmup >= self.duration:
            raise ScenarioError(f"{path}.warmup",
                                f"must be shorter than duration ({self.duration} ms), got {self.warmup} ms")
        if self.seed > 2**63 - 1:
            raise ScenarioError(f"{path}.seed", f"must be < 2**63, got {self.seed}")
        if self.duration > 1e12:
            raise ScenarioError(f"{path}.duration", f"must be at most 1e12 ms, got {self.duration}")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Everything that defines a run; see the README for the TOML form."""

    name: str = fld("scenario")
    description: str = fld("")
    cluster: ClusterConfig = fld(ClusterConfig())
    network: NetworkConfig = fld(NetworkConfig())
    faults: FaultsConfig = fld(FaultsConfig())
    workload: WorkloadConfig = fld(WorkloadConfig())
    protocol: ProtocolConfig = fld(missing="missing: every scenario names its protocol, e.g. [protocol] name = "
                                           "\"raft\" (capsim protocols lists them)")
    run: RunConfig = fld(RunConfig())

    def _validate(self, path: str) -> None:
        nodes = set(self.cluster.nodes)
        parts: list[tuple[str, Any]] = [
            ("network", self.network),
            ("faults", self.faults),
            ("workload", self.workload),
            ("protocol", self.protocol),
        ]
        for section, part in parts:
            for field, name in part.node_refs():
                if name == LEADER and section == "faults":
                    if not self.protocol.has_leader():
                        raise ScenarioError(
                            f"{section}.{field}",
                            f"'@leader' needs a protocol with a leader; {self.protocol.tag!r} has none",
                        )
                    continue
                if name not in nodes:
                    raise ScenarioError(
                        f"{section}.{field}",
                        f"unknown node {name!r}; cluster nodes are {', '.join(self.cluster.nodes)}",
                    )
        if self.workload.retry.idempotency_keys and not self.protocol.honours_idempotency_keys:
            honour = [name for name in protocol_names() if _honours_keys(name)]
            raise ScenarioError("workload.retry.idempotency_keys",
                                f"protocol {self.protocol.tag!r} keeps no duplicate table, so keys would change "
                                f"nothing; protocols that honour them: {', '.join(honour)}")
        self.protocol.check_scenario(self, "protocol")  # first: a protocol that takes no clients says so
        if self.workload.uses_cas() and self.workload.clients > 0:
            why = self.protocol.cas_refusal()
            if why is not None:
                field = "pattern" if self.workload.pattern == "counter" else "cas_fraction"
                raise ScenarioError(f"workload.{field}",
                                    f"protocol {self.protocol.tag!r} cannot run compare-and-set operations: {why}")
        check_network(self)
        clients = {f"c{i}" for i in range(self.workload.clients)}
        for i, name in enumerate(self.cluster.nodes):
            if name in clients:
                last = f"c{self.workload.clients - 1}"
                raise ScenarioError(f"cluster.nodes[{i}]", f"{name!r} is a client's name (clients are c0..{last}); "
                                    "give the node another name")

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build and validate a scenario from plain data (as read from TOML)."""
        return build(cls, data, "")

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read a scenario from a TOML file."""
        p = Path(path)
        return cls.from_toml_string(read_text_file(p), source=str(p), base=p.parent)

    @classmethod
    def from_toml_string(cls, text: str, source: str = "<string>", base: str | Path | None = None) -> Scenario:
        """Parse TOML text; relative ``protocol.module`` and empirical ``csv`` paths start at ``base`` (or cwd)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(source, f"invalid TOML: {exc}") from None
        if "broker" in data and "protocol" not in data:
            raise ScenarioError(source, "a broker-cluster scenario ([broker]; for capsim validate rabbitmq-cluster), "
                                "not a simulation scenario (which has a [protocol] section)")
        protocol = data.get("protocol")
        if base is not None and isinstance(protocol, dict) and isinstance(protocol.get("module"), str):
            module = protocol["module"]
            if module.endswith(".py") and not Path(module).expanduser().is_absolute():
                protocol["module"] = str((Path(base) / module).resolve())
        if base is not None:
            resolve_dist_files(data, base)  # relative csv files of empirical distributions
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` turns back into an equal scenario."""
        return to_plain(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def variant(self, updates: Mapping[str, Any] | None = None, **kw: Any) -> Scenario:
        """A validated copy with dotted-path updates, e.g. ``{"network.loss": 0.1}``.

        Keyword arguments use ``__`` for dots: ``variant(run__seed=3)``.
        """
        data = self.to_dict()
        items = dict(updates or {})
        items.update({k.replace("__", "."): v for k, v in kw.items()})
        for dotted, value in items.items():
            set_path(data, dotted, to_plain(value))
        return Scenario.from_dict(data)

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.cluster.nodes

    @property
    def drain_policy(self) -> DrainPolicy:
        """``run.drain`` as a policy (the default one when it is not given)."""
        return self.run.drain if self.run.drain is not None else DrainPolicy()

    @property
    def drain_limit(self) -> float:
        """The longest the drain after ``run.duration`` lasts (ms)."""
        limit = self.drain_policy.limit
        if limit is None:
            limit = self.workload.timeout if math.isfinite(self.workload.timeout) else self.run.duration
        return limit

    @property
    def end_time(self) -> float:
        """When the run stops at the latest: duration plus the drain limit plus ``run.settle``."""
        return self.run.duration + self.drain_limit + self.run.settle


def _honours_keys(name: str) -> bool:
    cls = ProtocolConfig.lookup(name)
    return bool(getattr(cls, "honours_idempotency_keys", False))


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(dotted: str) -> list[str | int]:
    """``"faults.schedule[0].end"`` -> ``["faults", "schedule", 0, "end"]``."""
    tokens: list[str | int] = []
    pos = 0
    for m in _PATH_TOKEN.finditer(dotted):
        if m.start() != pos and dotted[pos:m.start()] != ".":
            raise ScenarioError(dotted, "is not a field path like 'network.loss' or 'faults.schedule[0].end'")
        tokens.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not tokens or pos != len(dotted):
        raise ScenarioError(dotted, "is not a field path like 'network.loss' or 'faults.schedule[0].end'")
    return tokens


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"][0] = value`` for ``dotted == "a.b[0]"``, creating tables as needed."""
    tokens = parse_path(dotted)
    node: Any = data
    where = ""
    for i, key in enumerate(tokens):
        where += f"[{key}]" if isinstance(key, int) else (f".{key}" if where else key)
        last = i == len(tokens) - 1
        if isinstance(key, int):
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                raise ScenarioError(where, "no such list item")
        elif not isinstance(node, dict):
            raise ScenarioError(where, "is not inside a table, cannot set it")
        if last:
            node[key] = value
        elif isinstance(key, str) and node.get(key) is None:
            node[key] = [] if isinstance(tokens[i + 1], int) else {}
        if not last:
            node = node[key]


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of an input file; :class:`ScenarioError` naming the path says why it cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(p), "file not found") from None
    except IsADirectoryError:
        raise ScenarioError(str(p), "is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(p), f"is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})"
                            ) from None
    except OSError as exc:
        raise ScenarioError(str(p), f"cannot read: {exc.strerror or exc}") from None
