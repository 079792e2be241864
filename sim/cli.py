"""The ``capsim`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import CapsimError, ScenarioError

__all__ = ["main"]

EPILOG = """\
examples:
  capsim run experiments/scenarios/partitioned-store.toml
  capsim run experiments/scenarios/mm1-queue.toml --seed 7 --out out/mm1
  capsim run experiments/scenarios/lossy-network.toml --trace --out out/lossy
  capsim sweep experiments/sweeps/loss.toml --workers 2 --out out/loss
  capsim demo --out out/demo

A scenario is a TOML file with the sections [cluster], [network], [faults],
[workload], [protocol] and [run]; see the README and experiments/scenarios/.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capsim",
        description="Discrete-event simulation of replicated systems under partitions and crashes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("run", help="run one scenario and print its summary",
                       description="Run one scenario file and print its summary.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("scenario", type=Path, help="scenario TOML file")
    r.add_argument("--seed", type=int, default=None, help="root seed (default: the scenario's run.seed)")
    r.add_argument("--out", type=Path, default=None, help="folder for summary.json, history.csv and other tables")
    r.add_argument("--trace", action="store_true", help="record every message (trace.csv in --out)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    w = sub.add_parser("sweep", help="run a parameter sweep described in a TOML file",
                       description="Run every point of a sweep file's factors, replications times; "
                                   "resumes from the cache in --out when interrupted.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("sweep", type=Path, help="sweep TOML file (base scenario, factors, replications)")
    w.add_argument("--workers", type=int, default=None, help="parallel workers (default: one per core)")
    w.add_argument("--dask", metavar="ADDRESS", default=None, help="run on a Dask scheduler, e.g. tcp://host:8786")
    w.add_argument("--executor", choices=["serial", "processes", "dask"], default=None,
                   help="serial, processes (default) or dask (a LocalCluster unless --dask is given)")
    w.add_argument("--out", type=Path, default=None, help="output folder (default: out/<sweep name>)")
    w.add_argument("--csv", action="store_true", help="also write results.csv")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    v = sub.add_parser("validate", help="run a messaging scenario simulated and on a real broker; compare",
                       description="Run a messaging scenario in the simulation and against a real RabbitMQ "
                                   "broker with the same seed (the broker side --repeats times), and print the "
                                   "counts, attempts, latency percentiles and requeue orders side by side with "
                                   "two verdicts. Semantics (counts, attempts, every message's status, deliveries "
                                   "and dead-letter reason, requeue orders) must be equal in every broker run; a "
                                   "known, documented model difference is reported as 'known difference' with "
                                   "its reason and does not fail. Timing (latency and retry-delay p50 and p95) "
                                   "must be within the noise measured over the broker runs plus the model's "
                                   "stated accuracy, both in the report. Exit status: 0 agree, 1 semantics "
                                   "differ, 4 semantics agree but timing differs, 2 bad scenario or URL, 3 broker "
                                   "unreachable or adapter failure.",
                       epilog="example:\n  capsim validate rabbitmq experiments/scenarios/rabbitmq-retry-dlx.toml "
                              "--out out/validate\n\nThe broker URL comes from --url, else $CAPSIM_AMQP_URL, else "
                              "amqp://guest:guest@127.0.0.1:5672/%2F; the password is never printed.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("target", choices=["rabbitmq"], help="the real system to validate against")
    v.add_argument("scenario", type=Path, help="messaging scenario TOML file")
    v.add_argument("--url", default=None, help="amqp://user:pass@host:port/vhost (default: $CAPSIM_AMQP_URL or local)")
    v.add_argument("--seed", type=int, default=None, help="root seed (default: the scenario's run.seed)")
    v.add_argument("--out", type=Path, default=None, help="folder for the CSV tables, the CDF figure and the report")
    v.add_argument("--repeats", type=int, default=3,
                   help="broker runs (each after a calibration ping run) whose spread sets the timing allowance "
                        "(default 3)")
    v.add_argument("--local-node", action="store_true",
                   help="start a RabbitMQ node of its own (free ports, temporary data; needs root or the rabbitmq "
                        "user) instead of --url; required for scenarios that restart the broker")
    d = sub.add_parser("demo", help="the CAP demonstration: four protocols under one partition",
                       description="Run the demonstration scenario and write its tables and figures.")
    d.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    d.add_argument("--seed", type=int, default=None, help="root seed")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(out=args.out, seed=args.seed)
    except ScenarioError as exc:
        print(f"capsim: error: {exc}", file=sys.stderr)
        return 2
    except CapsimError as exc:
        print(f"capsim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("capsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from .report import format_summary
    from .runner import run
    from .scenario import Scenario

    scenario = Scenario.from_toml(args.scenario)
    if args.trace:
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, trace=True))
    if args.seed is not None and args.seed < 0:
        raise ScenarioError("--seed", f"must be a non-negative integer, got {args.seed}")
    result = run(scenario, seed=args.seed)
    if args.json:
        from .result import _jsonable

        print(json.dumps(_jsonable(result.summary), indent=2))
    else:
        print(format_summary(result))
    if args.out is not None:
        folder = result.save(args.out)
        print(f"\nwrote {folder}/ (summary.json, history.csv, timeline.csv, faults.csv"
              f"{', trace.csv' if result.trace is not None else ''})")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from .plots import metric_vs_factor
    from .sweepfile import load_sweep
    from .sweeps import summarize, sweep

    spec = load_sweep(args.sweep)
    if args.workers is not None and args.workers < 1:
        raise ScenarioError("--workers", f"must be >= 1, got {args.workers}")
    executor = args.executor or ("dask" if args.dask else "processes")
    out = args.out or Path("out") / spec.name
    out.mkdir(parents=True, exist_ok=True)
    df = sweep(spec.base, spec.factors, spec.replications, seed=spec.seed, executor=executor,
               workers=args.workers, dask_address=args.dask, cache=out / "cache", progress=not args.quiet)
    table = df.copy()
    for col in spec.factors:  # parquet needs one type per column
        if table[col].map(lambda v: isinstance(v, (dict, list))).any():
            table[col] = table[col].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    table.to_parquet(out / "results.parquet", index=False)
    if args.csv:
        table.to_csv(out / "results.csv", index=False)
    summary = summarize(table, list(spec.metrics))
    summary.to_csv(out / "summary.csv", index=False)
    for i, plot in enumerate(spec.plots):
        if plot.y not in set(summary["metric"]):
            summary_y = summarize(table, [plot.y])
        else:
            summary_y = summary
        ax = metric_vs_factor(summary_y, plot.x, plot.y, hue=plot.hue)
        ax.set_title(f"{spec.name}: {plot.y}")
        name = f"{i:02d}-{plot.y.replace('.', '_')}"
        ax.figure.savefig(out / f"{name}.png", dpi=120)
        ax.figure.savefig(out / f"{name}.svg")
        plt.close(ax.figure)
    failed = int(df["error"].notna().sum())
    shown = summary.pivot_table(index=list(spec.factors), columns="metric", values="mean", sort=False)
    print(shown.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"\n{len(df)} runs ({failed} failed) -> {out}/results.parquet, summary.csv, figures")
    return 0 if failed == 0 else 1


def _cmd_validate(args: argparse.Namespace) -> int:
    """``capsim validate rabbitmq``: 0 agree, 1 semantics differ, 4 only timing differs, 2 user mistake (via main),
    3 broker or adapter failure."""
    from .rabbitmq.errors import AdapterError
    from .rabbitmq.settings import AmqpSettings
    from .rabbitmq.validate import validate
    from .scenario import Scenario

    scenario = Scenario.from_toml(args.scenario)
    if args.seed is not None and args.seed < 0:
        raise ScenarioError("--seed", f"must be a non-negative integer, got {args.seed}")
    if args.local_node and args.url is not None:
        raise ScenarioError("--local-node", "cannot be combined with --url")
    settings = AmqpSettings.resolve(args.url)
    try:
        if args.local_node:
            from .rabbitmq.node import LocalBrokerNode

            with LocalBrokerNode() as node:
                result = validate(scenario, seed=args.seed, broker=node, repeats=args.repeats)
        else:
            result = validate(scenario, seed=args.seed, settings=settings, repeats=args.repeats)
    except AdapterError as exc:
        print(f"capsim: error: {settings.redact(str(exc))}", file=sys.stderr)
        return 3
    print(result.report())
    if args.out is not None:
        folder = result.save(args.out)
        print(f"\nwrote {folder}/ (counts.csv, attempts.csv, latency.csv, retry_delays.csv, requeue_order.csv, "
              "messages.csv, *_events.csv, latency_cdf.png, report.txt)")
    return {"agree": 0, "timing differs": 4}.get(result.verdict, 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
