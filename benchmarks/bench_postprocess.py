"""Post-processing vs simulation: a million-operation eventual and Raft run, side by side.

Each run happens in a fresh process (peak RSS is a per-process high-water mark):
the world is built and simulated (``simulation``), then the history, metrics,
staleness, convergence and the protocol's summary are gathered into a Result
(``post-processing``, ``sim.runner._collect``). Five nodes, 50 clients at 200
operations per second each, 100 keys, a partition cutting n4 and n5 off for the
middle fifth of the run.
Targets: post-processing <= 25% of simulation time; peak RSS < 700 MiB for
1M operations.

    python benchmarks/bench_postprocess.py [--quick] [--ops N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CLIENTS = 50
RATE = 200  # per client per second
PROTOCOLS = {"eventual (LWW)": {"name": "eventual"}, "raft": {"name": "raft"}}
POST_TARGET = 0.25
RSS_TARGET_MIB = 700
FULL_OPS = 1_000_000


def scenario(protocol: dict, ops: int):
    import sim

    duration = ops / (CLIENTS * RATE) * 1000.0
    return sim.Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": {"dist": "exponential", "mean": 1.0}, "client_latency": "0.2ms"},
        "faults": {"schedule": [{"kind": "partition", "start": 0.4 * duration, "end": 0.6 * duration,
                                 "groups": [["n4", "n5"]]}]},
        "workload": {"clients": CLIENTS, "rate": RATE, "keys": 100, "read_fraction": 0.5, "timeout": "300ms"},
        "protocol": protocol,
        "run": {"duration": duration, "seed": 1},
    })


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(label: str, ops: int) -> None:
    """Run one scenario and print its figures as JSON."""
    from sim.runner import _collect, build_world

    sc = scenario(PROTOCOLS[label], ops)
    t0 = time.perf_counter()
    world = build_world(sc)
    world.run(None)
    sc.protocol.finish(world, world.state)
    t1 = time.perf_counter()
    rss_sim = peak_rss_mib()
    result = _collect(world, t1 - t0, keep_world=False)
    t2 = time.perf_counter()
    print(json.dumps({"sim": t1 - t0, "post": t2 - t1, "rss_sim": rss_sim, "rss": peak_rss_mib(),
                      "ops": int(len(result.history)), "stale": result.summary.get("staleness.stale_reads")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 operations instead of a million")
    ap.add_argument("--ops", type=int, help="operations per run (default 1,000,000; 100,000 with --quick)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ops = args.ops or (100_000 if args.quick else FULL_OPS)
    if args.child:
        child(args.child, ops)
        return
    print(f"{ops:,} operations per run (each run in its own process)\n")
    print(f"{'protocol':<16}{'ops':>10}{'simulation s':>14}{'post s':>9}{'post/sim':>10}"
          f"{'RSS after sim MiB':>19}{'peak RSS MiB':>14}")
    failed = []
    for label in PROTOCOLS:
        out = subprocess.run([sys.executable, __file__, "--child", label, "--ops", str(ops)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ratio = r["post"] / r["sim"]
        print(f"{label:<16}{r['ops']:>10,}{r['sim']:>14.1f}{r['post']:>9.2f}{ratio:>10.2f}"
              f"{r['rss_sim']:>19.0f}{r['rss']:>14.0f}")
        if ratio > POST_TARGET:
            failed.append(f"{label}: post-processing {ratio:.2f}x simulation (target <= {POST_TARGET})")
        rss_limit = RSS_TARGET_MIB * ops / FULL_OPS
        if ops >= FULL_OPS and r["rss"] >= rss_limit:
            failed.append(f"{label}: peak RSS {r['rss']:.0f} MiB (target < {rss_limit:.0f} MiB)")
    print(f"\ntargets: post/sim <= {POST_TARGET}; peak RSS < {RSS_TARGET_MIB} MiB at {FULL_OPS:,} operations")
    print("all targets met" if not failed else "MISSED: " + "; ".join(failed))


if __name__ == "__main__":
    main()
