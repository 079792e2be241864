"""Network delivery rate: capsim's kernel vs a bare-SimPy message loop of the same shape.

Both loops move the same number of messages between the same number of
endpoints with latencies from the same buffered exponential sampler: on each
delivery the receiver sends one message on to the next endpoint. The bare
loop is the minimal SimPy idiom (``env.timeout(delay)`` plus a callback that
calls the receiver's handler); capsim's goes through ``Node.send``, the
network's partition/loss/duplication checks and handler dispatch.
Target: capsim >= 0.8x the bare rate. Runs alternate, best of N.

    python benchmarks/bench_network.py [--quick] [--messages N]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import simpy

from sim.config import fld
from sim.dists import Exponential, buffered_sampler
from sim.kernel.node import Node
from sim.protocol import ProtocolConfig, register_protocol
from sim.runner import build_world
from sim.scenario import Scenario

N_NODES = 8
IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class Ping:
    hops: int


class Ring:
    """The benchmark's per-run state: the ring of nodes and the hop count."""

    def __init__(self, nodes: tuple[str, ...]) -> None:
        self.nodes = list(nodes)
        self.hops = 0
        self.limit = 0


class PingNode(Node):
    def __init__(self, world, name: str, ring: Ring) -> None:
        super().__init__(world, name)
        self.ring = ring

    def boot(self) -> None:
        nodes = self.ring.nodes
        self.next = nodes[(nodes.index(self.name) + 1) % len(nodes)]

    def handle_Ping(self, msg: Ping, src: str) -> None:
        ring = self.ring
        ring.hops += 1
        if ring.hops < ring.limit:
            self.send(self.next, msg)


@register_protocol
@dataclass(frozen=True, kw_only=True)
class PingConfig(ProtocolConfig[Ring]):
    tag: ClassVar[str] = "bench_ping"
    unused: int = fld(0)

    def new_state(self, world) -> Ring:
        return Ring(world.scenario.nodes)

    def build_nodes(self, world, state: Ring):
        return {n: PingNode(world, n, state) for n in world.scenario.nodes}


def capsim_rate(messages: int, seed: int = 1) -> float:
    scenario = Scenario.from_dict({
        "cluster": {"count": N_NODES},
        "network": {"latency": {"dist": "exponential", "mean": 1.0}},
        "workload": {"clients": 0},
        "protocol": {"name": "bench_ping"},
        "run": {"duration": 1e9, "seed": seed},
    })
    world = build_world(scenario)
    ring = world.state
    ring.limit = messages
    for node in world.nodes.values():
        node.start()
    for i in range(IN_FLIGHT):
        src = ring.nodes[i % N_NODES]
        world.nodes[src].send(world.nodes[src].next, Ping(0))
    t0 = time.perf_counter()
    world.env.run()
    elapsed = time.perf_counter() - t0
    return ring.hops / elapsed


def bare_rate(messages: int, seed: int = 1) -> float:
    env = simpy.Environment()
    latency = buffered_sampler(Exponential(1.0), np.random.default_rng(seed))
    names = [f"n{i + 1}" for i in range(N_NODES)]
    nxt = {n: names[(i + 1) % N_NODES] for i, n in enumerate(names)}
    state = {"hops": 0}

    def send(src: str, dst: str, msg: Ping) -> None:
        env.timeout(latency()).callbacks.append(lambda _e: handlers[dst](msg, src))

    def make_handler(name: str):
        def handle(msg: Ping, src: str) -> None:
            state["hops"] += 1
            if state["hops"] < messages:
                send(name, nxt[name], msg)
        return handle

    handlers = {n: make_handler(n) for n in names}
    for i in range(IN_FLIGHT):
        src = names[i % N_NODES]
        send(src, nxt[src], Ping(0))
    t0 = time.perf_counter()
    env.run()
    elapsed = time.perf_counter() - t0
    return state["hops"] / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    messages = args.messages or (50_000 if args.quick else 400_000)
    repeats = args.repeats or (2 if args.quick else 5)
    caps, bare = [], []
    for _ in range(repeats):  # alternate so both see the same machine conditions
        bare.append(bare_rate(messages))
        caps.append(capsim_rate(messages))
    b, c = max(bare), max(caps)
    print(f"messages per run     {messages}")
    print(f"bare SimPy           {b:,.0f} msg/s  (best of {repeats})")
    print(f"capsim network       {c:,.0f} msg/s  (best of {repeats})")
    print(f"ratio capsim/bare    {c / b:.2f}x   (target >= 0.80x)")


if __name__ == "__main__":
    main()
