"""Long Raft runs stay bounded: peak memory at 60 simulated minutes vs at 10, with and without compaction.

Setting: five Raft nodes, ten clients issuing 100 operations/s in all (half
writes) on 100 keys, and a crash every two minutes, each node in turn, for 30 s
(so the others commit about 1,500 entries meanwhile and the node comes back
behind every log start: InstallSnapshot). "compaction" sets
``snapshot_threshold = 500`` and ``dedup_window = 5000``; the baseline keeps
every entry and every operation id, as Raft did before compaction existed.

Each (setting, length) runs in its own process, which builds the world and runs
it (no result tables are built afterwards: they are not protocol state). It
reports the process's peak RSS (``ru_maxrss``), and, to separate what the
protocol keeps from what any run records, the bytes reachable from the nodes'
state (logs, snapshots, state machines, operation tables; shared objects counted
once), from the client history (one row per operation, about 80 bytes:
it grows with the run by design, and is most of what grows with compaction on),
and from the run's record of applied entries for the state machine safety verdict
(the first apply of each index no node's snapshot covers yet).
Target: with compaction, peak RSS at 60 minutes within 1.2x of that at 10
minutes; the baseline's ratios are shown next to it (its protocol state keeps
every entry and operation id, so it grows with the run). Measured in a process
of its own so that one setting's garbage does not count against another.

    python benchmarks/bench_long_run.py [--quick] [--minutes SHORT LONG]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import deque
from typing import Any

SEED = 7
CRASH_EVERY_S = 120
CRASH_FOR_S = 30
NODES = ("n1", "n2", "n3", "n4", "n5")
COMPACTION = {"snapshot_threshold": 500, "dedup_window": 5000}


def scenario(minutes: float, compaction: bool) -> Any:
    from sim.scenario import Scenario

    seconds = minutes * 60.0
    crashes = [{"kind": "crash", "node": NODES[k % len(NODES)], "start": f"{t}s", "end": f"{t + CRASH_FOR_S}s"}
               for k, t in enumerate(range(CRASH_EVERY_S, int(seconds), CRASH_EVERY_S))]
    return Scenario.from_dict({
        "name": "long-raft",
        "cluster": {"nodes": list(NODES)},
        "network": {"latency": {"dist": "lognormal", "mu": 0.0, "sigma": 0.5}, "client_latency": "0.2ms"},
        "faults": {"schedule": crashes},
        "workload": {"clients": 10, "rate": 10, "keys": 100, "timeout": "500ms"},
        "protocol": {"name": "raft", **(COMPACTION if compaction else {})},
        "run": {"duration": f"{seconds}s", "seed": SEED},
    })


def deep_size(roots: list[Any], seen: set[int]) -> int:
    """Bytes of the containers and values reachable from ``roots`` (each object once, across calls)."""
    from sim.kernel.node import Node

    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, Node) or callable(obj) or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, Node):
            stack.extend(vars(obj).values())
    return total


PROTOCOL_STATE = ("disk", "log", "data", "results", "waiters", "forwards", "touched", "refused_ops", "_applied_terms",
                  "_key_versions", "op_index", "pending_reads", "round_clock", "next_index", "match_index",
                  "snapshot_sent", "roles")


def child(minutes: float, compaction: bool) -> dict[str, Any]:
    """Run one setting in this process; what it measured."""
    from sim.runner import build_world

    s = scenario(minutes, compaction)
    t0 = time.perf_counter()
    world = build_world(s)
    world.start()
    world.env.run(until=s.run.duration)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seen: set[int] = set()
    nodes = [world.nodes[n] for n in NODES]
    state = deep_size([getattr(n, a) for n in nodes for a in PROTOCOL_STATE if hasattr(n, a)], seen)
    history = deep_size([vars(world.history)], seen)
    applied = deep_size([world.state], seen)  # the state machine safety check's record of applied entries
    return {
        "minutes": minutes, "compaction": compaction, "peak_rss_mb": peak_kb / 1024.0, "wall_s": wall,
        "protocol_mb": state / 2**20, "history_mb": history / 2**20,
        "applied_mb": applied / 2**20, "ops": len(world.history),
        "committed": max(n.max_commit for n in nodes), "max_log": max(len(n.log) - 1 for n in nodes),
        "snapshots_installed": sum(n.snapshots_installed for n in nodes),
    }


def measure(minutes: float, compaction: bool) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(minutes), str(int(compaction))],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 and 12 simulated minutes (the same 6x ratio)")
    parser.add_argument("--minutes", type=float, nargs=2, default=(10.0, 60.0), metavar=("SHORT", "LONG"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(float(args.child[0]), bool(int(args.child[1])))))
        return
    short, long = (2.0, 12.0) if args.quick else args.minutes
    print(f"Raft, 5 nodes, 100 ops/s, a 30 s crash every 2 min; peak RSS at {short:g} vs {long:g} simulated min")
    print(f"{'setting':>12} {'min':>5} {'wall s':>7} {'ops':>8} {'committed':>9} {'max log':>8} "
          f"{'installs':>8} {'protocol MiB':>12} {'history MiB':>11} {'applied MiB':>11} {'peak RSS MiB':>12}")
    ratios = {}
    for compaction in (True, False):
        rows = [measure(m, compaction) for m in (short, long)]
        name = "compaction" if compaction else "baseline"
        for r in rows:
            print(f"{name:>12} {r['minutes']:5g} {r['wall_s']:7.1f} {r['ops']:8d} {r['committed']:9d} "
                  f"{r['max_log']:8d} {r['snapshots_installed']:8d} {r['protocol_mb']:12.1f} "
                  f"{r['history_mb']:11.1f} {r.get('applied_mb', 0.0):11.2f} {r['peak_rss_mb']:12.1f}")
        ratios[name] = (rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"],
                        rows[1]["protocol_mb"] / rows[0]["protocol_mb"])
    for name, (rss, state) in ratios.items():
        print(f"{name:>12}: peak RSS {long:g}/{short:g} min = {rss:.2f}x, protocol state {state:.2f}x")
    verdict = "ok" if ratios["compaction"][0] <= 1.2 else "MISSED"
    print(f"target: compaction's peak RSS ratio <= 1.2 -> {verdict}")


if __name__ == "__main__":
    main()
