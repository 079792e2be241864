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

With ``--real`` (root; about 1.5 min per scenario) it also runs the example scenarios of
``experiments/rabbitmq-cluster/`` on a real three-node cluster, one cluster per scenario
(``capsim validate rabbitmq-cluster``), and writes ``real_comparison.csv``: per scenario,
the model's and the real cluster's numbers and both verdicts. ``--quick --real`` runs one
scenario per queue type.

    python experiments/rabbitmq_cluster_matrix.py [--quick] [--real] [--out DIR] [--workers N] [--executor E]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from sim.executors import map_tasks
from sim.experiment_cli import experiment_parser, parse_experiment_args
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


def _row(task: tuple[float, str, str, str, str]) -> dict:
    length, workload, qtype, mode, home = task
    run = run_cluster_model(matrix_scenario(qtype, mode, home, length, workload))
    row = {"partition_s": length / 1000.0, "workload": workload, "queue": qtype, "mode": mode,
           "queue_node": "majority" if home == "n1" else "minority"}
    row.update(model_report(run, NODES).row())
    return row


def matrix(lengths: list[float], executor: str = "serial", workers: int | None = None) -> pd.DataFrame:
    tasks = [(length, workload, qtype, mode, home) for length in lengths for workload in ("live", "drain")
             for qtype in CLUSTER_QUEUE_TYPES for mode in PARTITION_HANDLING for home in ("n1", "n3")]
    return pd.DataFrame(map_tasks(_row, tasks, executor, workers))


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """queue x mode: confirmed messages lost and messages duplicated (max over placements and workloads), per
    partition length."""
    return df.pivot_table(index=["queue", "mode"], columns="partition_s", values=["lost", "duplicates"],
                          aggfunc="max")


EXAMPLES = Path(__file__).resolve().parent / "rabbitmq-cluster"
QUICK_REAL = ("classic-queue-on-paused-node", "quorum-queue-minority-cut-off", "mirrored-queue-autoheal")


def real_comparison(quick: bool) -> pd.DataFrame:
    """Every example scenario (quick: one per queue type) in the model and on a real cluster."""
    from sim.messaging.cluster_scenario import load_cluster_scenario
    from sim.rabbitmq.cluster_validate import validate_cluster

    paths = [EXAMPLES / f"{n}.toml" for n in QUICK_REAL] if quick else sorted(EXAMPLES.glob("*.toml"))
    rows = []
    for path in paths:
        result = validate_cluster(load_cluster_scenario(path))
        print(result.report(), end="\n\n", flush=True)
        t = result.timing.set_index("measure")
        row: dict[str, object] = {"scenario": path.stem, "verdict": result.verdict,
                                  "semantics_agree": bool(result.semantics["agree"].all())}
        for measure in t.index:
            row[f"{measure}_model"], row[f"{measure}_real"] = t.loc[measure, "model"], t.loc[measure, "real"]
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, out="out/rabbitmq_cluster_matrix",
                               quick="one partition length (6 s) instead of 2, 6 and 15 s")
    parser.add_argument("--real", action="store_true",
                        help="also run the example scenarios on a real cluster (root, ~1.5 min each)")
    args = parse_experiment_args(parser, argv)
    lengths = [6000.0] if args.quick else [2000.0, 6000.0, 15000.0]
    out = args.out
    t0 = time.perf_counter()
    df = matrix(lengths, args.executor, args.workers)
    df.to_csv(out / "cluster_matrix.csv", index=False)
    cols = ["partition_s", "workload", "queue", "mode", "queue_node", "confirmed", "lost", "duplicates",
            "unconfirmed_delivered", "availability_majority", "availability_minority", "recovery_ms"]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(df[cols].round(2).to_string(index=False))
        print("\nconfirmed messages lost, messages duplicated (worst placement and workload), by partition length (s):")
        print(headline(df).to_string())
    print(f"\n{len(df)} runs in {time.perf_counter() - t0:.1f} s; wrote {out / 'cluster_matrix.csv'}")
    if args.real:
        real = real_comparison(args.quick)
        real.to_csv(out / "real_comparison.csv", index=False)
        with pd.option_context("display.width", 200):
            print(real[["scenario", "verdict", "lost_model", "lost_real", "duplicates_model",
                        "duplicates_real"]].to_string(index=False))
        print(f"wrote {out / 'real_comparison.csv'}")
        return 0 if real["semantics_agree"].all() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
