"""The ``capsim`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import CapsimError, ScenarioError
from .outdir import check_out, claim, staged_into, wrote
from .version import capsim_version

__all__ = ["main"]

EPILOG = """\
examples:
  capsim run experiments/scenarios/partitioned-store.toml
  capsim run experiments/scenarios/mm1-queue.toml --seed 7 --out out/mm1
  capsim run experiments/scenarios/lossy-network.toml --trace --out out/lossy
  capsim sweep experiments/sweeps/loss.toml --workers 2 --out out/loss
  capsim demo --out out/demo
  capsim lab grade lab1 my_register.py
  capsim search experiments/search/3pc-partition.toml

A scenario is a TOML file with the sections [cluster], [network], [faults],
[workload], [protocol] and [run]; see the README and experiments/scenarios/.
"""


#: seconds a run goes before capsim run shows its progress bar
PROGRESS_DELAY = 2.0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other capsim error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="capsim",
        description="Discrete-event simulation of replicated systems under partitions and crashes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"capsim {capsim_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("run", help="run one scenario and print its summary",
                       description="Run one scenario file and print its summary.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("scenario", type=Path, help="scenario TOML file")
    r.add_argument("--seed", type=int, default=None, help="root seed (default: the scenario's run.seed)")
    r.add_argument("--out", default=None, help="folder for summary.json, history.csv and other tables")
    r.add_argument("--trace", action="store_true", help="record every message (trace.csv in --out)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--allow-large", action="store_true",
                   help="run even when the estimated work is beyond the limits (hours of events, GBs of memory)")
    w = sub.add_parser("sweep", help="run a parameter sweep described in a TOML file",
                       description="Run every point of a sweep file's factors, replications times; "
                                   "resumes from the cache in --out when interrupted.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("sweep", type=Path, help="sweep TOML file (base scenario, factors, replications)")
    w.add_argument("--workers", type=int, default=None, help="parallel workers (default: one per core)")
    w.add_argument("--dask", metavar="ADDRESS", default=None, help="run on a Dask scheduler, e.g. tcp://host:8786")
    w.add_argument("--executor", choices=["serial", "processes", "dask"], default=None,
                   help="serial, processes (default) or dask (a LocalCluster unless --dask is given)")
    w.add_argument("--out", default=None, help="output folder (default: out/<sweep name>)")
    w.add_argument("--csv", action="store_true", help="also write results.csv")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.add_argument("--allow-large", action="store_true",
                   help="run even when the sweep is beyond the limits (too many runs, a run too large, days of events)")
    v = sub.add_parser("validate", help="run a messaging scenario simulated and on a real broker; compare",
                       description="Run a messaging scenario in the simulation and against a real RabbitMQ "
                                   "broker with the same seed (the broker side --repeats times), and print the "
                                   "counts, attempts, latency percentiles and requeue orders side by side with "
                                   "two verdicts. Semantics (counts, attempts, every message's status, deliveries "
                                   "and dead-letter reason, requeue orders) must be equal in every broker run. "
                                   "Timing (latency and retry-delay p50 and p95) must be within the noise "
                                   "measured over the broker runs plus the model's stated accuracy, both in the "
                                   "report. Both sides run the scenario's [run] drain policy; when one drained "
                                   "(ended idle) and the other did not, neither is judged and the verdict is "
                                   "'spans differ'. Exit status: 0 agree, 1 semantics "
                                   "differ or spans differ, 4 semantics agree but timing differs, 2 bad scenario or "
                                   "URL, 3 broker unreachable or adapter failure.",
                       epilog="example:\n  capsim validate rabbitmq experiments/scenarios/rabbitmq-retry-dlx.toml "
                              "--out out/validate\n\nThe broker URL comes from --url, else $CAPSIM_AMQP_URL, else "
                              "amqp://guest:guest@127.0.0.1:5672/%2F; the password is never printed.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("target", choices=["rabbitmq", "rabbitmq-cluster"],
                   help="the real system to validate against: one broker (a messaging scenario), or a three-node "
                        "cluster under partitions (a broker-cluster scenario, sim.messaging.cluster_scenario; needs "
                        "root; semantics and timing verdicts as for rabbitmq)")
    v.add_argument("scenario", type=Path, help="messaging (or broker-cluster) scenario TOML file")
    v.add_argument("--url", default=None, help="amqp://user:pass@host:port/vhost (default: $CAPSIM_AMQP_URL or local)")
    v.add_argument("--seed", type=int, default=None, help="root seed (default: the scenario's run.seed)")
    v.add_argument("--out", default=None, help="folder for the CSV tables, the CDF figure and the report")
    v.add_argument("--repeats", type=int, default=3,
                   help="broker runs (each after a calibration ping run; rabbitmq-cluster: real workload runs on "
                        "one started cluster) whose spread sets the timing allowance (default 3)")
    v.add_argument("--allow-large", action="store_true",
                   help="run even when the estimated work is beyond the limits (hours of events, GBs of memory)")
    v.add_argument("--no-costs", action="store_true",
                   help="simulate the broker without the costs measured on it (requeue, settle, confirm, "
                        "dead-letter; see sim.messaging.costs); a scenario's own [protocol.broker_costs] always apply")
    v.add_argument("--model-only", action="store_true",
                   help="rabbitmq-cluster: print the model's prediction only (no real cluster)")
    v.add_argument("--local-node", action="store_true",
                   help="start a RabbitMQ node of its own (free ports, temporary data; needs root or the rabbitmq "
                        "user) instead of --url; required for scenarios that restart the broker")
    d = sub.add_parser("demo", help="the CAP demonstration: four protocols under one partition",
                       description="Run the demonstration scenario and write its tables and figures.")
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    d.add_argument("--seed", type=int, default=None, help="root seed")
    pr = sub.add_parser("protocols", help="list the protocols, or the fields of one",
                        description="Without NAME: every protocol capsim can run, with a line on each. With NAME: "
                                    "the fields of its [protocol] table (type, default, accepted values), read from "
                                    "its config class.")
    pr.add_argument("name", nargs="?", default=None, help="a protocol name, e.g. raft")
    from .labs.cli import add_parser as add_lab_parser
    from .search.cli import add_parser as add_search_parser

    add_lab_parser(sub, _Parser)
    add_search_parser(sub, _Parser)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print("capsim: error: name a command: run, sweep, validate, demo, protocols, lab or search (see capsim --help)",
              file=sys.stderr)
        return 2
    try:
        seed = getattr(args, "seed", None)
        if seed is not None and not 0 <= seed < 2**63:
            raise ScenarioError("--seed", f"must be an integer in [0, 2**63), got {seed}")
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(out=args.out, seed=args.seed)
        if args.command == "protocols":
            return _cmd_protocols(args)
        if args.command == "lab":
            from .labs.cli import run as run_lab

            return run_lab(args)
        if args.command == "search":
            from .search.cli import run as run_search

            return run_search(args)
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


def _cmd_protocols(args: argparse.Namespace) -> int:
    """``capsim protocols [NAME]``: what can run, and what a protocol's table accepts."""
    from .fielddocs import field_docs, format_field_docs
    from .netconfig import message_kind
    from .protocol import ProtocolConfig, protocol_names

    if args.name is None:
        members = ProtocolConfig.members()
        width = max(len(n) for n in members)
        for name in protocol_names():
            print(f"{name:<{width}}  {_summary_line(members[name])}")
        print("\ncapsim protocols NAME lists a protocol's fields.")
        return 0
    config = ProtocolConfig.lookup(args.name)
    if config is None:
        raise ScenarioError("NAME", f"no protocol {args.name!r}; protocols are {', '.join(protocol_names())}")
    print(f"{args.name}: {_summary_line(config)} ({config.__module__})\n")
    print(format_field_docs([d for d in field_docs(config) if d.path != "module"]))
    print(f"\nmodule (text, unset): where {args.name} is defined when it is not built in "
          "(a module name or a .py file)")
    types = config.message_types() if issubclass(config, ProtocolConfig) else ()
    if types:
        listed = ", ".join(t.__name__ + (f" ({k})" if (k := message_kind(t)) else "") for t in types)
        print(f"\nmessages (network.message_latency sets latency by class name or (kind)): {listed}")
    return 0


def _summary_line(config: type) -> str:
    """The first line of the protocol module's docstring (what the protocol is)."""
    from .protocol import BUILTIN_PROTOCOLS

    module = sys.modules.get(BUILTIN_PROTOCOLS.get(getattr(config, "tag", ""), config.__module__))
    for doc in (getattr(module, "__doc__", None), config.__doc__):
        lines = (doc or "").strip().splitlines()
        if lines and not lines[0].startswith(config.__name__ + "("):
            return lines[0]
    return ""


def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from .report import format_summary
    from .runner import run
    from .scenario import Scenario

    if args.out is not None:  # before the run, so a bad folder costs nothing
        check_out(args.out, kind="result", inputs=[args.scenario])
    scenario = Scenario.from_toml(args.scenario)
    if args.trace:
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, trace=True))
    try:
        with _progress(scenario, enabled=not args.quiet) as progress:
            result = run(scenario, seed=args.seed, allow_large=args.allow_large, progress=progress)
    except (CapsimError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not _user_protocol(scenario):
            raise  # capsim's own protocols: a bug in capsim, whose whole traceback is wanted
        from .labs.core import student_traceback

        print(f"capsim run: protocol {scenario.protocol.tag!r} raised during the run (its code, not capsim, "
              f"failed):\n{student_traceback(exc)}", file=sys.stderr, end="")
        return 1
    if args.json:
        from .result import _jsonable

        print(json.dumps(_jsonable(result.summary), indent=2))
    else:
        print(format_summary(result))
    if args.out is not None:
        print(f"\n{wrote(result.save(args.out), 'result')}")
    return 0


def _user_protocol(scenario: Any) -> bool:
    """Whether the scenario runs code from outside capsim: a lab's solution or a protocol module."""
    from .protocol import BUILTIN_PROTOCOLS, LAB_PROTOCOLS

    protocol = scenario.protocol
    return protocol.tag in LAB_PROTOCOLS or protocol.tag not in BUILTIN_PROTOCOLS or protocol.module is not None


@contextlib.contextmanager
def _progress(scenario: Any, *, enabled: bool) -> Iterator[Callable[[float], None] | None]:
    """A tqdm bar on simulated time, shown once a run has taken PROGRESS_DELAY, when stdout and stderr are terminals."""
    if not (enabled and sys.stdout.isatty() and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    total = scenario.end_time / 1000
    with tqdm(total=round(total, 3), unit="s", desc=f"{scenario.name} (simulated s)", delay=PROGRESS_DELAY,
              dynamic_ncols=True, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} [{elapsed}<{remaining}]") as bar:
        def update(now: float) -> None:
            bar.update(round(now / 1000, 3) - bar.n)

        yield update


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .executors import MAX_WORKERS
    from .sweepfile import load_sweep
    from .sweeps import sweep

    spec = load_sweep(args.sweep, allow_large=args.allow_large)
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise ScenarioError("--workers", f"must be an integer in [1, {MAX_WORKERS}], got {args.workers}")
    executor = args.executor or ("dask" if args.dask else "processes")
    out = check_out(args.out if args.out is not None else Path("out") / spec.name, kind="sweep", inputs=spec.inputs)
    claim(out, "sweep")  # a sweep killed now leaves a folder the next run resumes from
    try:
        df = sweep(spec.base, spec.factors, spec.replications, seed=spec.seed, executor=executor,
                   workers=args.workers, dask_address=args.dask, cache=out / "cache", progress=not args.quiet,
                   allow_large=args.allow_large)
    except ScenarioError as exc:
        if exc.path == "dask_address":
            raise ScenarioError("--dask", exc.reason) from None
        raise
    failed = df[df["error"].notna()]
    if len(failed) == len(df):
        _print_errors(failed, f"all {len(df)} runs failed")
        return 1
    metrics, plots = _sweep_outputs(spec, df)
    with staged_into(out, "sweep", keep=["cache"]) as stage:
        summary = _write_sweep(stage, spec, df, metrics, plots, csv=args.csv)
    shown = summary.pivot_table(index=list(spec.factors), columns="metric", values="mean", sort=False)
    print(shown.to_string(float_format=lambda v: f"{v:.4g}"))
    if len(failed):
        _print_errors(failed, f"{len(failed)} of {len(df)} runs failed")
    print(f"\n{len(df)} runs ({len(failed)} failed); {wrote(out, 'sweep')}")
    return 0 if len(failed) == 0 else 1


def _sweep_outputs(spec: Any, df: Any) -> tuple[list[str], list[Any]]:
    """The metrics and plots to write: named ones must exist (the runs are cached, so a fix reruns nothing)."""
    from .sweeps import metric_names

    valid = metric_names(df)
    hint = "; the runs are cached, so running again after fixing the name reruns nothing"
    if not spec.metrics_given:  # the defaults: keep those this protocol reports
        metrics = [m for m in spec.metrics if m in valid] or valid
        return metrics, [p for p in spec.plots if p.y in metrics]
    for i, m in enumerate(spec.metrics):
        if m not in valid:
            raise ScenarioError(f"metrics[{i}]", f"unknown metric {m!r}; the runs report: {', '.join(valid)}{hint}")
    for i, p in enumerate(spec.plots):
        if p.y not in valid:
            raise ScenarioError(f"plots[{i}].y", f"unknown metric {p.y!r}; the runs report: {', '.join(valid)}{hint}")
    return list(spec.metrics), list(spec.plots)


def _write_sweep(stage: Any, spec: Any, df: Any, metrics: list[str], plots: list[Any], *, csv: bool) -> Any:
    """results.parquet (and .csv), summary.csv and one figure (PNG and SVG) per plot; returns the summary."""
    import matplotlib.pyplot as plt

    from .plots import metric_vs_factor
    from .sweeps import summarize

    table = df.copy()
    for col in spec.factors:  # parquet needs one type per column
        if table[col].map(lambda v: isinstance(v, (dict, list))).any():
            table[col] = table[col].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    table.to_parquet(stage.path / "results.parquet", index=False)
    stage.rows["results.parquet"] = len(table)
    if csv:
        stage.table("results.csv", table)
    summary = summarize(table, metrics)
    stage.table("summary.csv", summary)
    for i, plot in enumerate(plots):
        summary_y = summary if plot.y in metrics else summarize(table, [plot.y])
        ax = metric_vs_factor(summary_y, plot.x, plot.y, hue=plot.hue)
        ax.set_title(f"{spec.name}: {plot.y}")
        name = f"{i:02d}-{plot.y.replace('.', '_')}"
        ax.figure.savefig(stage.path / f"{name}.png", dpi=120)
        ax.figure.savefig(stage.path / f"{name}.svg")
        plt.close(ax.figure)
    return summary


def _print_errors(failed: Any, headline: str, shown: int = 3) -> None:
    """The first few distinct errors of a sweep's failed runs, on stderr."""
    print(f"capsim: {headline}; the first errors:", file=sys.stderr)
    for error, group in list(failed.groupby("error", sort=False))[:shown]:
        first = group.iloc[0]
        print(f"  point {first['point']}, replication {first['replication']} (and {len(group) - 1} more): {error}",
              file=sys.stderr)


def _show_validation(result: Any, out: str | None) -> int:
    """Print a validation's report, save it to ``out`` if given; the exit status: 0 agree (or model only),
    4 only timing differs, 1 otherwise."""
    print(result.report())
    if out is not None:
        print(f"\n{wrote(result.save(out), 'validation')}")
    return {"agree": 0, "model only": 0, "timing differs": 4}.get(result.verdict, 1)


def _cmd_validate(args: argparse.Namespace) -> int:
    """``capsim validate rabbitmq``: 0 agree, 1 semantics differ, 4 only timing differs, 2 user mistake (via main),
    3 broker or adapter failure."""
    from .rabbitmq.errors import AdapterError
    from .rabbitmq.settings import AmqpSettings
    from .rabbitmq.validate import MAX_REPEATS, validate
    from .scenario import Scenario

    if args.target == "rabbitmq-cluster":
        return _cmd_validate_cluster(args)
    if args.model_only:
        raise ScenarioError("--model-only", "applies to rabbitmq-cluster only")
    if args.out is not None:  # before the broker runs, so a bad folder costs nothing
        check_out(args.out, kind="validation", inputs=[args.scenario])
    scenario = Scenario.from_toml(args.scenario)
    if args.local_node and args.url is not None:
        raise ScenarioError("--local-node", "cannot be combined with --url")
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise ScenarioError("--repeats", f"must be an integer in [1, {MAX_REPEATS}], got {args.repeats}")
    settings = AmqpSettings.resolve(args.url)
    try:
        if args.local_node:
            from .rabbitmq.node import LocalBrokerNode

            with LocalBrokerNode() as node:
                result = validate(scenario, seed=args.seed, broker=node, repeats=args.repeats,
                                  allow_large=args.allow_large, costs=not args.no_costs)
        else:
            result = validate(scenario, seed=args.seed, settings=settings, repeats=args.repeats,
                              allow_large=args.allow_large, costs=not args.no_costs)
    except AdapterError as exc:
        print(f"capsim: error: {settings.redact(str(exc))}", file=sys.stderr)
        return 3
    return _show_validation(result, args.out)


def _cmd_validate_cluster(args: argparse.Namespace) -> int:
    """``capsim validate rabbitmq-cluster``: same exit statuses as ``validate rabbitmq`` (0 also for --model-only)."""
    from .messaging.cluster_scenario import load_cluster_scenario
    from .rabbitmq.cluster_validate import check_repeats, validate_cluster
    from .rabbitmq.errors import AdapterError

    for flag, given in (("--url", args.url is not None), ("--local-node", args.local_node),
                        ("--seed", args.seed is not None), ("--no-costs", args.no_costs)):
        if given:
            raise ScenarioError(flag, "does not apply to rabbitmq-cluster (the cluster is started by the command; "
                                      "the scenario's run.seed is used)")
    check_repeats(args.repeats, "--repeats")
    if args.out is not None:
        check_out(args.out, kind="validation", inputs=[args.scenario])
    scenario = load_cluster_scenario(args.scenario)
    try:
        result = validate_cluster(scenario, model_only=args.model_only, repeats=args.repeats)
    except AdapterError as exc:
        print(f"capsim: error: {exc}", file=sys.stderr)
        return 3
    return _show_validation(result, args.out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
