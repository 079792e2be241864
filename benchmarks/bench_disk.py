"""What fsync policies cost: a Disk against a plain dict, and a periodic flush against none.

Under ``fsync = "always"`` (the default) a node's disk is a plain dict, so the default
path costs nothing. Under ``interval`` and ``never`` it is a ``Disk``:

1. Disk operations as protocols use them (``disk[k] = v``, ``disk.get``, ``disk[k]``,
   an append to a list stored in it), one million of each, on a ``Disk`` and on a
   plain ``dict``, best of 5. A dict subclass intercepts no write but misses the
   interpreter's fast paths for exact dicts. Target: <= 1.5x.
2. A Raft run (5 nodes, 10 clients, 20 s; the log grows to about 2,500 entries)
   with ``fsync = "always"`` and with a flush every 50 ms, which copies each node's
   disk 400 times (a list copy per log: its records are shared). Target: <= 2x.

    python benchmarks/bench_disk.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import sim
from sim.fsync import FsyncPolicy
from sim.kernel.disk import Disk


def ops(disk: dict[str, Any], n: int) -> float:
    start = time.perf_counter()
    log = disk.setdefault("log", [])
    for i in range(n):
        disk["term"] = i
        disk.get("voted_for")
        _ = disk["term"]
        log.append(i)
    return time.perf_counter() - start


def best(fn: Any, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke run)")
    args = parser.parse_args(argv)
    n = 100_000 if args.quick else 1_000_000
    repeat = 2 if args.quick else 5
    plain = best(lambda: ops({}, n), repeat)
    wrapped = best(lambda: ops(Disk(FsyncPolicy(policy="never")), n), repeat)
    print(f"disk ops x{n:,}: dict {plain:.3f} s, Disk {wrapped:.3f} s: ratio {wrapped / plain:.2f} "
          "(target <= 1.5)")

    duration = "4s" if args.quick else "20s"
    base = sim.Scenario.from_dict({"cluster": {"count": 5}, "workload": {"clients": 10, "rate": 25, "keys": 10},
                                   "protocol": {"name": "raft"}, "run": {"duration": duration}})
    flushed = base.variant({"cluster.fsync": {"policy": "interval", "interval": "50ms"}})
    t_always = best(lambda: sim.run(base).runtime, repeat)
    t_interval = best(lambda: sim.run(flushed).runtime, repeat)
    print(f"raft {duration}: always {t_always:.2f} s, interval 50ms {t_interval:.2f} s: ratio "
          f"{t_interval / t_always:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
