"""Lab 1: a replicated register that stays linearizable under partitions and crashes.

The student writes ``RegisterNode`` (a :class:`RegisterBase`): five of them hold
copies of a small key-value register. Clients send ``ClientRequest`` (read or
write) to the node next to them and wait 400 ms for a ``ClientReply``. Graded:

* ``linearizable``: every history is linearizable (Knossos-style checker),
  under partitions, crashes (a minority down at a time), 5% message loss and
  duplication windows, or under a gray failure (one node's messages ~200 ms
  slower for the whole run);
* ``majority-available``: while a minority is cut off, at least 95% of the
  operations of the clients on the majority side succeed.

A majority (ABD-style) register passes both: writes and reads each wait for a
majority, reads write back what they return, and versions are ordered
``(counter, node)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from ..config import fld
from ..kernel.messages import ClientReply, ClientRequest
from ..kernel.node import Host, Node
from ..protocol import ProtocolConfig, register_protocol
from .core import Check, Lab, LabNode, LabTest, lab_rng, random_faults, solution_classes

__all__ = ["RegisterBase", "RegisterLabConfig", "LAB", "ClientRequest", "ClientReply"]

NODES = ("n1", "n2", "n3", "n4", "n5")
DURATION = 3000.0
TIMEOUT = 400.0
MIN_AVAILABILITY = 0.95


class RegisterBase(LabNode):
    """What a lab-1 node starts with.

    ``self.nodes``: every replica's name, this one included, in a fixed order;
    ``self.peers``: the others; ``self.majority``: how many replicas make a
    majority. ``self.reply(client, op_id, ok, value)`` answers a client.
    Keep what must survive a crash in ``self.disk`` (a dict); set up everything
    else in ``boot()``, which runs at start and after each recovery. A crash loses
    every other attribute the solution set, also those set in ``__init__``.
    """

    def __init__(self, world: Host, name: str, config: RegisterLabConfig) -> None:
        super().__init__(world, name)
        self.config = config
        self.nodes: tuple[str, ...] = tuple(world.scenario.nodes)
        self.peers: tuple[str, ...] = tuple(n for n in self.nodes if n != name)
        self.majority: int = len(self.nodes) // 2 + 1
        self.seal()

    def reply(self, client: str, op_id: int, ok: bool = True, value: Any = None) -> None:
        """Answer the client's operation ``op_id`` (``value``: what a read returns)."""
        self.send(client, ClientReply(op_id, ok, value))

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        raise NotImplementedError("RegisterNode must define handle_ClientRequest(msg, src)")


@register_protocol
@dataclass(frozen=True, kw_only=True)
class RegisterLabConfig(ProtocolConfig[None]):
    """Lab 1's protocol: the solution's ``RegisterNode`` on every cluster node."""

    tag: ClassVar[str] = "lab_register"
    solution: str = fld(doc="the solution's .py file (sim.labs.grade passes in-process classes by key)",
                        missing="name the solution's .py file")

    def build_nodes(self, world: Host, state: None) -> dict[str, Node]:
        cls = solution_classes(LAB, self.solution)["RegisterNode"]
        return {name: cls(world, name, self) for name in world.scenario.nodes}


def _scenario(seed: int, solution: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": {"dist": "exponential", "mean": 3.0}},
        "workload": {"clients": 5, "rate": 20, "keys": 1, "read_fraction": 0.7, "timeout": TIMEOUT},
        "faults": {"schedule": faults},
        "protocol": {"name": "lab_register", "solution": solution},
        "run": {"duration": DURATION, "seed": seed},
    }


def _nemesis_scenario(seed: int, solution: str) -> dict[str, Any]:
    """Odd seeds: partitions, crashes, loss and duplication. Even seeds: a gray failure, one node
    whose every message takes ~200 ms longer for the whole run (its writes reach some replicas
    long before the others), with duplication."""
    rng = lab_rng("register", "linearizable", seed)
    if seed % 2:
        faults = random_faults(rng, NODES, start=200.0, end=DURATION - 200.0, partitions=2, crashes=3,
                               loss=0.05, duplicate=0.1, length=(300.0, 1500.0))
    else:
        faults = [{"kind": "latency_spike", "start": 0.0, "end": DURATION, "src": NODES[int(rng.integers(len(NODES)))],
                   "extra": {"dist": "exponential", "mean": 200.0}}]
        faults += random_faults(rng, NODES, start=200.0, end=DURATION - 200.0, duplicate=0.1)
    return _scenario(seed, solution, faults)


def _partition_scenario(seed: int, solution: str) -> dict[str, Any]:
    rng = lab_rng("register", "majority-available", seed)
    minority = sorted(rng.choice(len(NODES), size=2, replace=False).tolist())
    t0 = float(rng.uniform(500.0, 900.0))
    fault = {"kind": "partition", "start": round(t0, 1), "end": round(t0 + 1500.0, 1),
             "groups": [[NODES[i] for i in minority]]}
    return _scenario(seed, solution, [fault])


def check_linearizable_history(result: Any) -> Check:
    from ..checkers import check_linearizable

    verdict = check_linearizable(result.history, time_limit=20.0)
    if verdict.linearizable:
        return Check(True, f"{verdict.ops_checked} operations linearizable")
    if verdict.linearizable is None:
        return Check(False, "the linearizability checker ran out of time: " + verdict.explanation)
    ce = verdict.counterexample
    window: tuple[float, float] | None = None
    ops: tuple[int, ...] = ()
    if ce is not None and len(ce):
        done = ce[ce["outcome"] == "ok"]   # an unfinished write spans the run: draw the finished operations
        done = done if len(done) else ce
        window = (max(0.0, float(done["invoke"].min()) - 10.0), float(done["complete"].max()) + 10.0)
        ops = tuple(int(op) for op in ce["op_id"])
    cols = [c for c in ("op_id", "client", "node", "op", "key", "value", "invoke", "complete", "outcome")
            if ce is not None and c in ce.columns]
    evidence = (ce[cols].reset_index(drop=True) if ce is not None else None)
    text = verdict.explanation.strip().splitlines()[0] if verdict.explanation else "not linearizable"
    return Check(False, f"not linearizable on key {verdict.failed_key}: {text}",
                 evidence=_with_note(evidence, verdict.explanation), window=window, ops=ops)


def _with_note(frame: pd.DataFrame | None, note: str) -> Any:
    if frame is None:
        return note
    return f"{frame.to_string()}\n{note}"


def check_majority_available(result: Any) -> Check:
    h = result.history
    if len(result.faults) == 0:
        return Check(True, "no partition in this schedule")
    fault = result.faults.iloc[0]
    start, end = float(fault["start"]), float(fault["end"])
    during = h[(h["invoke"] >= start) & (h["invoke"] < end - TIMEOUT) & (h["side"] == "majority")]
    if len(during) == 0:
        return Check(True, "no operation on the majority side during the partition")
    ok = float((during["outcome"] == "ok").mean())
    if ok >= MIN_AVAILABILITY:
        return Check(True, f"{ok:.0%} of majority-side operations succeeded during the partition")
    failed = during[during["outcome"] != "ok"]
    first = float(failed["invoke"].min())
    cols = ["op_id", "client", "node", "op", "key", "invoke", "complete", "outcome", "error"]
    return Check(False, f"only {ok:.0%} of the {len(during)} operations on the majority side succeeded during "
                        f"the partition {start:g}-{end:g} ms (needs at least {MIN_AVAILABILITY:.0%})",
                 evidence=failed[cols].head(10).reset_index(drop=True), window=(first - 10.0, first + 150.0),
                 ops=tuple(int(op) for op in failed["op_id"].head(3)))


LAB = Lab(
    id="register",
    number=1,
    title="A linearizable replicated register (majority / ABD)",
    protocol="lab_register",
    classes={"RegisterNode": RegisterBase},
    skeleton="lab1_register.py",
    tests=(
        LabTest("linearizable",
                "every history is linearizable under partitions, crashes, loss and duplication",
                _nemesis_scenario, check_linearizable_history),
        LabTest("majority-available",
                f"at least {MIN_AVAILABILITY:.0%} of majority-side operations succeed while a minority is cut off",
                _partition_scenario, check_majority_available),
    ),
)
