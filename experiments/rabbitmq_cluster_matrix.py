"""Which RabbitMQ cluster configuration loses confirmed messages under a partition: the model's headline table.

Three nodes n1, n2, n3; one durable queue whose node (classic), first leader
(mirrored, ``ha-mode: all``) or first Raft leader (quorum) is n1, on the majority
side, or n3, the node the partition isolates; publishers with confirms on n1 and on
n3 at 20 messages/s; n3 is isolated from 1 s for L seconds (the real cluster's
test case is L = 6). Every queue type x partition-handling mode x placement runs
the broker-cluster model (:mod:`sim.messaging.cluster_model`) with two consumer
workloads:

* ``live``: consumers on n1 and n3 from the start (what the real cluster's tests do);
* ``drain``: one consumer, on n2 (failing over to n1, n3), that reads only after
  the publishers stop, as Jepsen's 2014 RabbitMQ test did.

What the documentation and Jepsen predict, and the model must show:

* quorum queues never lose a confirmed message, in any mode or placement; with a
  consumer on the isolated node that keeps running (``autoheal``, ``ignore``) some
  messages are delivered twice (observed on the real cluster: see the model's docstring);
* a classic queue loses what the other side publishes while its node is out of
  reach (confirmed and dropped), in every mode, unless ``pause_minority`` keeps its
  node on the majority side (then the minority publishes are refused instead);
* a mirrored queue under ``autoheal`` loses the losing side's confirmed messages
  that were still in its copy when it restarted (``drain``: all of them); under
  ``ignore`` the two leaders stay apart after the heal (no operator restart), so what
  one side's consumers cannot reach is lost for this workload; under
  ``pause_minority`` one isolation loses nothing (the majority promotes a
  synchronised mirror; rotating partitions do lose: tests/test_broker_cluster_model.py).

Writes ``cluster_matrix.csv`` and prints the table.

    python experiments/rabbitmq_cluster_matrix.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from sim.messaging.cluster_model import model_report, run_cluster_model
from sim.messaging.cluster_scenario import CLUSTER_QUEUE_TYPES, PARTITION_HANDLING

NODES = ("n1", "n2", "n3")
RATE = 20.0
CUT = 1000.0


def matrix_scenario(qtype: str, mode: str, home: str, length: float, workload: str) -> dict:
    duration = CUT + length + 3000.0
    if workload == "live":
        consumers = [{"name": "c1", "node": "n1"}, {"name": "c3", "node": "n3"}]
    else:
        consumers = [{"name": "c2", "node": "n2", "start": duration, "failover": ["n1", "n3"]}]
    return {"name": f"{qtype}-{mode}-{home}-{workload}",
            "run": {"duration": duration, "drain": 10000.0},
            "broker": {"cluster": {"nodes": 3, "partition_handling": mode},
                       "queue": {"type": qtype, "node": home},
                       "publishers": [{"name": "p1", "node": "n1", "rate": RATE},
                                      {"name": "p3", "node": "n3", "rate": RATE}],
                       "consumers": consumers},
            "faults": {"schedule": [{"kind": "isolate", "node": "n3", "start": CUT, "end": CUT + length}]}}


def matrix(lengths: list[float]) -> pd.DataFrame:
    rows = []
    for length in lengths:
        for workload in ("live", "drain"):
            for qtype in CLUSTER_QUEUE_TYPES:
                for mode in PARTITION_HANDLING:
                    for home in ("n1", "n3"):
                        run = run_cluster_model(matrix_scenario(qtype, mode, home, length, workload))
                        row = {"partition_s": length / 1000.0, "workload": workload, "queue": qtype, "mode": mode,
                               "queue_node": "majority" if home == "n1" else "minority"}
                        row.update(model_report(run, NODES).row())
                        rows.append(row)
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """queue x mode: confirmed messages lost and messages duplicated (max over placements and workloads), per
    partition length."""
    return df.pivot_table(index=["queue", "mode"], columns="partition_s", values=["lost", "duplicates"],
                          aggfunc="max")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one partition length (6 s) instead of 2, 6 and 15 s")
    parser.add_argument("--out", default="out/rabbitmq_cluster_matrix", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    lengths = [6000.0] if args.quick else [2000.0, 6000.0, 15000.0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    df = matrix(lengths)
    df.to_csv(out / "cluster_matrix.csv", index=False)
    cols = ["partition_s", "workload", "queue", "mode", "queue_node", "confirmed", "lost", "duplicates",
            "unconfirmed_delivered", "availability_majority", "availability_minority", "recovery_ms"]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(df[cols].round(2).to_string(index=False))
        print("\nconfirmed messages lost, messages duplicated (worst placement and workload), by partition length (s):")
        print(headline(df).to_string())
    print(f"\n{len(df)} runs in {time.perf_counter() - t0:.1f} s; wrote {out / 'cluster_matrix.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
