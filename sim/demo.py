"""``capsim demo``: a single-copy store cut off from part of its clients.

Five nodes; node n1 owns every key. From 3 s to 7 s a partition separates
{n1, n2} from {n3, n4, n5}: clients next to n1 and n2 keep working, the
majority side cannot reach the only copy and gets nothing (its operations time
out). The demo prints the summary and writes the tables and an availability
timeline figure.
"""

from __future__ import annotations

from pathlib import Path

from .scenario import Scenario

__all__ = ["DEMO_SCENARIO", "run_demo"]

DEMO_SCENARIO = {
    "name": "partitioned-single-copy-store",
    "description": "n1 owns all data; {n1,n2} | {n3,n4,n5} from 3 s to 7 s",
    "cluster": {"count": 5},
    "network": {"latency": {"dist": "lognormal", "mu": 0.0, "sigma": 0.5}},
    "faults": {"schedule": [{"kind": "partition", "start": "3s", "end": "7s", "groups": [["n1", "n2"]]}]},
    "workload": {"clients": 10, "rate": 50, "keys": 20, "read_fraction": 0.5, "timeout": "500ms"},
    "protocol": {"name": "single_copy", "owner": "n1"},
    "run": {"duration": "10s", "warmup": "500ms", "seed": 42, "timeline_window": "250ms"},
}


def run_demo(out: Path = Path("out/demo"), seed: int | None = None) -> int:
    import matplotlib.pyplot as plt

    from .experiment import run
    from .plots import availability_timeline
    from .report import format_summary

    result = run(Scenario.from_dict(DEMO_SCENARIO), seed=seed)
    print(format_summary(result))
    folder = result.save(out)
    ax = availability_timeline(result)
    ax.figure.savefig(folder / "availability.png", dpi=120)
    plt.close(ax.figure)
    print(f"\nwrote {folder}/ (summary.json, history.csv, timeline.csv, availability.png)")
    return 0
