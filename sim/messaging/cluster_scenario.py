"""The broker-cluster scenario: a RabbitMQ-like cluster, one queue, publishers and consumers, partitions.

A TOML file (or a dict) with these sections; every field is validated when the
scenario is built and a problem raises :class:`~sim.errors.ScenarioError` naming
the field::

    name = "classic-queue-on-the-minority"

    [run]
    duration = "12s"          # publishers publish until then; every partition heals then at the latest
    drain = "8s"              # consumers go on this long after duration
    seed = 1                  # only random faults ([faults.random], split pick = "random") draw from it

    [broker.cluster]
    nodes = 3                 # or names: ["n1", "n2", "n3"]
    partition_handling = "pause_minority"   # or "autoheal", "ignore"
    net_ticktime = "4s"       # a peer is declared down 1.125 x net_ticktime after the cut (or set detection)
    reconnect = "1s"          # after a heal, nodes see each other again this much later
    boot = "300ms"            # a paused or restarted node's broker starts again in this time

    [broker.queue]
    name = "q"
    type = "classic"          # or "mirrored" (classic, ha-mode all), "quorum"
    node = "n3"               # the classic queue's node, the mirrored queue's first leader, the quorum leader

    [[broker.publishers]]
    name = "p1"
    node = "n1"               # the node it connects to
    rate = 50                 # messages per second, periodic
    failover = ["n2"]         # tried after `node` when it reconnects (default: only `node`)

    [[broker.consumers]]
    name = "c1"
    node = "n2"

    [[faults.schedule]]       # the simulation's fault format: partition, isolate, split
    kind = "isolate"
    node = "n3"
    start = "3s"
    end = "7s"

What each field means for the model is in :mod:`sim.messaging.cluster_model`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..config import Duration, MaybeInfDuration, at_least, build, check_node_names, fld, nonneg, positive
from ..errors import ScenarioError
from ..faultspec import LEADER, FaultsConfig, Isolate, Partition, Split

__all__ = ["BrokerClusterConfig", "ClusterQueueSpec", "ClusterPublisherSpec", "ClusterConsumerSpec",
           "ClusterRunConfig", "ClusterScenario", "PARTITION_HANDLING", "CLUSTER_QUEUE_TYPES", "load_cluster_scenario"]

PARTITION_HANDLING = ("pause_minority", "autoheal", "ignore")
CLUSTER_QUEUE_TYPES = ("classic", "mirrored", "quorum")


def _names(value: Any, path: str) -> Any:
    """``nodes = 3`` is ``["n1", "n2", "n3"]``."""
    if isinstance(value, bool):
        raise ScenarioError(path, f"must be a node count (an integer in [1, 15]) or a list of names, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= 15:
            raise ScenarioError(path, f"must be a node count in [1, 15] or a list of names, got {value}")
        return tuple(f"n{i + 1}" for i in range(value))
    return value


@dataclass(frozen=True, kw_only=True)
class BrokerClusterConfig:
    """The cluster's nodes and how they handle a partition."""

    nodes: tuple[str, ...] = fld(("n1", "n2", "n3"), doc="node names, or a count (named n1..nN)")
    partition_handling: Literal["pause_minority", "autoheal", "ignore"] = fld("pause_minority")
    net_ticktime: Duration = fld(4000.0, check=positive, doc="Erlang's net_ticktime")
    detection: Duration | None = fld(None, check=positive,
                                     doc="cut-to-detection delay; default 1.125 x net_ticktime")
    reconnect: Duration = fld(1000.0, check=nonneg, doc="heal-to-reconnection delay between nodes")
    boot: Duration = fld(300.0, check=nonneg, doc="time a paused or restarted node's broker takes to start")
    election: Duration = fld(500.0, check=nonneg, doc="a quorum queue elects a new leader this long after "
                                                      "its members detect the leader's loss")
    manual_restart: MaybeInfDuration = fld(math.inf, check=nonneg,
                                           doc="ignore mode: an operator restarts the losing side this long "
                                               "after the nodes reconnect (inf: never)")
    latency: Duration = fld(1.0, check=nonneg, doc="one-way latency between nodes, and client to node")
    sync_interval: Duration = fld(25.0, check=nonneg, doc="a classic queue confirms a persistent message this long "
                                                          "after it arrived (written to disk); consumers may get it "
                                                          "before")

    @classmethod
    def _preprocess(cls, data: dict[str, Any], path: str) -> dict[str, Any]:
        if "nodes" in data:
            data["nodes"] = _names(data["nodes"], f"{path}.nodes")
        return data

    def _validate(self, path: str) -> None:
        check_node_names(self.nodes, f"{path}.nodes")

    @property
    def detection_delay(self) -> float:
        """Cut to detection: ``detection``, else 1.125 x ``net_ticktime`` (Erlang notices within 1-1.25 ticktimes)."""
        return self.detection if self.detection is not None else 1.125 * self.net_ticktime


@dataclass(frozen=True, kw_only=True)
class ClusterQueueSpec:
    """The one queue every client uses (durable; messages are persistent)."""

    name: str = fld("q")
    type: Literal["classic", "mirrored", "quorum"] = fld("quorum")
    node: str = fld("n1", doc="the node it is declared on: its home / first leader")


@dataclass(frozen=True, kw_only=True)
class ClusterPublisherSpec:
    """A publisher with confirms connected to ``node`` (then ``failover`` nodes, in order, when reconnecting)."""

    name: str = fld()
    node: str = fld()
    rate: float = fld(50.0, check=positive, doc="messages per second, periodic")
    start: Duration = fld(0.0)
    stop: Duration | None = fld(None, doc="default: run.duration")
    confirm_timeout: Duration = fld(2000.0, check=positive)
    reconnect_delay: Duration = fld(500.0, check=positive)
    failover: tuple[str, ...] = fld(())


@dataclass(frozen=True, kw_only=True)
class ClusterConsumerSpec:
    """A consumer with manual acks (it acks every delivery at once) connected to ``node``."""

    name: str = fld()
    node: str = fld()
    start: Duration = fld(0.0, doc="when it first connects (e.g. after the heal, as Jepsen drains)")
    reconnect_delay: Duration = fld(500.0, check=positive)
    failover: tuple[str, ...] = fld(())


@dataclass(frozen=True, kw_only=True)
class ClusterRunConfig:
    duration: Duration = fld(10000.0, check=positive)
    drain: Duration = fld(10000.0, check=nonneg)
    seed: int = fld(0, check=at_least(0))


@dataclass(frozen=True, kw_only=True)
class _BrokerSection:
    cluster: BrokerClusterConfig = fld(BrokerClusterConfig())
    queue: ClusterQueueSpec = fld(ClusterQueueSpec())
    publishers: tuple[ClusterPublisherSpec, ...] = fld(())
    consumers: tuple[ClusterConsumerSpec, ...] = fld(())


@dataclass(frozen=True, kw_only=True)
class ClusterScenario:
    """A whole broker-cluster scenario (see the module docstring)."""

    name: str = fld("broker-cluster")
    run: ClusterRunConfig = fld(ClusterRunConfig())
    broker: _BrokerSection = fld(_BrokerSection())
    faults: FaultsConfig = fld(FaultsConfig())
    _extra_keys: ClassVar[tuple[str, ...]] = ()

    def _validate(self, path: str) -> None:
        nodes = self.broker.cluster.nodes
        accepted = ", ".join(nodes)

        def node(where: str, name: str) -> None:
            if name not in nodes:
                raise ScenarioError(where, f"unknown node {name!r}; the cluster's nodes: {accepted}")

        node("broker.queue.node", self.broker.queue.node)
        if not self.broker.publishers:
            raise ScenarioError("broker.publishers", "must list at least one publisher")
        names: set[str] = set()
        clients_of: tuple[tuple[str, tuple[ClusterPublisherSpec | ClusterConsumerSpec, ...]], ...] = (
            ("publishers", self.broker.publishers), ("consumers", self.broker.consumers))
        for kind, clients in clients_of:
            for i, c in enumerate(clients):
                where = f"broker.{kind}[{i}]"
                if c.name in names:
                    raise ScenarioError(f"{where}.name", f"duplicate client name {c.name!r}")
                names.add(c.name)
                node(f"{where}.node", c.node)
                for j, other in enumerate(c.failover):
                    node(f"{where}.failover[{j}]", other)
        for i, p in enumerate(self.broker.publishers):
            stop = p.stop if p.stop is not None else self.run.duration
            if stop <= p.start:
                raise ScenarioError(f"broker.publishers[{i}].stop",
                                    f"must be after start ({p.start:g} ms), got {stop:g}")
        for where, name in self.faults.node_refs():
            node(f"faults.{where}", name)
        for i, fault in enumerate(self.faults.schedule):
            if not isinstance(fault, (Partition, Isolate, Split)):
                raise ScenarioError(f"faults.schedule[{i}].kind",
                                    f"{fault.tag!r} is not modelled for a broker cluster; accepted: partition, "
                                    "isolate, split")
            if isinstance(fault, Isolate) and fault.node == LEADER:
                raise ScenarioError(f"faults.schedule[{i}].node", f"{LEADER!r} is not accepted here: name the node")

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.broker.cluster.nodes


def load_cluster_scenario(source: str | Path | Mapping[str, Any]) -> ClusterScenario:
    """Build a :class:`ClusterScenario` from a TOML file path or a mapping."""
    if isinstance(source, Mapping):
        return build(ClusterScenario, source, "")
    path = Path(source)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(str(path), "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(str(path), "is a folder, not a scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), f"not valid TOML: {exc}") from None
    if "protocol" in data and "broker" not in data:
        raise ScenarioError(str(path), "a simulation scenario ([protocol]; for capsim run or capsim validate "
                            "rabbitmq), not a broker-cluster scenario ([broker.cluster], [broker.queue], ...: "
                            "see experiments/rabbitmq-cluster/)")
    return build(ClusterScenario, data, "")
