"""Differential testing of the broker model against a live RabbitMQ over generated scenarios.

Each scenario comes from :func:`sim.rabbitmq.generate.sample` (numbered, so every
machine generates the same ones): exchanges of each type, classic and quorum
queues with their arguments (dead-letter exchanges, delivery limits, priorities,
a max-length queue with each overflow mode, TTL expiry), publishers with and
without confirms, mandatory and republish, consumers with prefetch, failures,
poison messages, crashes and every retry mode; each drains (``[run] drain = {
until = "idle" }``), so both sides run the same span. The scenario runs in the
simulation and on the broker, and :mod:`sim.rabbitmq.differential` compares the
semantic verdict (counts, attempts, every message's status, deliveries and
dead-letter reason; timing is not judged). A disagreement is run on the broker
once more: when the broker's two runs differ too, the outcome depends on timing
there (class ``broker not reproducible``), not on the model.

What is expected. In the default profile (``racy = False``) the generator keeps
to scenarios whose outcome does not depend on timing (see
:mod:`sim.rabbitmq.generate`), so the model should agree on every one of them:
the agreement rate is reported with a 95% Wilson interval, and every class of
disagreement with its first example as TOML (and, with ``--shrink N``, the
smallest scenario of that class hypothesis finds in N runs). ``--racy`` also
generates timing-dependent scenarios; most of their disagreements should then be
``broker not reproducible``.

``--timing`` judges timing too (:func:`sim.rabbitmq.differential.timed`): each
scenario goes through ``capsim validate rabbitmq``'s check (calibration ping
runs, the broker's costs measured, ``--repeats`` broker runs, 3 by default; no
requeue-order probes), so a scenario takes 5-20 s. It reports the semantic
agreement rate over every broker run, the timing agreement rate (the share of
scenarios whose latency and retry-delay p50 and p95 are all within the
allowance of :mod:`sim.rabbitmq.timing`: the broker's run-to-run noise plus the
model's stated accuracy), each class of timing disagreement (which quantity,
which side is faster, by how many allowances) with its first example, and how
tight the allowances were: the median allowance relative to the broker's value
and the share of judged rows whose measured noise alone was as large as the
value (a verdict that could not tell a quantity from twice it). The allowance
is measured, so on a loaded machine the timing rate is high because the
allowances are wide; read it together with those two numbers.

Outputs (in --out, default ``out/differential``): ``differential.csv`` (one row
per scenario: number, profile, class, seconds), ``differential.txt`` (the rate,
the classes, an example of each) and ``differential.png`` (scenarios per class); with ``--timing``,
``differential_timing.csv`` (one row per scenario: both classes, seconds),
``timing_rows.csv`` (every judged timing row), ``differential_timing.txt`` and
``differential_timing.png``. Needs the broker of ``CAPSIM_AMQP_URL``
(default: guest on 127.0.0.1:5672).

    python experiments/differential.py [--quick] [--out DIR] [--scenarios N] [--first K] [--racy] [--shrink N]
    python experiments/differential.py --timing [--repeats R] [--quick] [--out DIR] [--scenarios N] [--first K]

(``--workers`` and ``--executor``, which every experiment accepts, change nothing here:
the broker runs go one at a time.)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.rabbitmq.differential import Outcome, Timed, differential, shrink, timed
from sim.rabbitmq.generate import sample
from sim.rabbitmq.settings import AmqpSettings
from sim.rabbitmq.timing import TIMING_COLUMNS
from sim.rabbitmq.validate import MAX_REPEATS


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value}")
    return value


def _positive(text: str) -> int:
    value = _natural(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1, got 0")
    return value


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def plot(counts: pd.Series, path: Path, title: str) -> None:
    """Scenarios per class, as horizontal bars."""
    labels = [k if len(k) <= 60 else k[:57] + "..." for k in counts.index]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.4 * len(counts)), constrained_layout=True)
    ax.barh(range(len(counts)), counts.to_numpy(), color=["tab:green" if k.startswith("agree") else "tab:red"
                                                          for k in counts.index])
    ax.set_yticks(range(len(counts)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("scenarios")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, out="out/differential", quick="8 scenarios",
                               workers="ignored: the broker runs go one at a time (they share the broker)")
    parser.add_argument("--scenarios", type=_positive, default=None, help="how many (default 8 quick, 300 full)")
    parser.add_argument("--first", type=_natural, default=0, help="number of the first scenario")
    parser.add_argument("--racy", action="store_true", help="also generate timing-dependent scenarios")
    parser.add_argument("--shrink", type=_natural, default=0, metavar="N",
                        help="shrink each class of disagreement with hypothesis, at most N broker runs per class")
    parser.add_argument("--timing", action="store_true",
                        help="judge timing too: each scenario through the validation's repeated broker runs")
    parser.add_argument("--repeats", type=_positive, default=3, help="broker runs per scenario with --timing "
                        f"(default 3; at most {MAX_REPEATS})")
    args = parse_experiment_args(parser, argv)
    if args.repeats > MAX_REPEATS:
        parser.error(f"argument --repeats: must be at most {MAX_REPEATS}, got {args.repeats}")
    if args.timing and args.shrink:
        parser.error("argument --shrink: shrinks semantic disagreements; it does not go with --timing")
    out = args.out
    settings = AmqpSettings.resolve()
    profile = "racy" if args.racy else "default"
    if args.timing:
        return main_timing(args, settings, profile)
    n = args.scenarios or (8 if args.quick else 300)
    rows, examples = [], {}
    for number in range(args.first, args.first + n):
        t0 = time.perf_counter()
        outcome = differential(sample(number, racy=args.racy), settings)
        seconds = time.perf_counter() - t0
        rows.append({"scenario": number, "profile": profile, "kind": outcome.kind, "seconds": round(seconds, 2)})
        examples.setdefault(outcome.kind, outcome)
        print(f"scenario {number}: {outcome.kind} ({seconds:.1f} s)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "differential.csv", index=False)
    agree = int((table["kind"] == "agree").sum())
    lo, hi = wilson(agree, n)
    lines = [f"profile {profile}: {agree} of {n} scenarios agree: {agree / n:.1%} (95% Wilson interval "
             f"{lo:.1%} to {hi:.1%}); {table['seconds'].sum():.0f} s in all", ""]
    counts = table["kind"].value_counts()
    lines += [f"{count:4d}  {kind}" for kind, count in counts.items()]
    for kind in counts.index:
        if kind == "agree":
            continue
        example: Outcome = examples[kind]
        lines += ["", f"== {kind}: first example, scenario {example.scenario.name}", example.report()]
        if args.shrink:
            small = shrink(settings, lambda k, kind=kind: k == kind, racy=args.racy, budget=args.shrink,
                           log=print)
            lines += ([f"== {kind}: the smallest found by hypothesis", small.report()] if small is not None
                      else [f"== {kind}: hypothesis found none in {args.shrink} runs"])
    plot(counts, out / "differential.png", lines[0])
    text = "\n".join(lines) + "\n"
    (out / "differential.txt").write_text(text)
    print(text)
    return 0


def timing_summary(table: pd.DataFrame, rows: pd.DataFrame, examples: dict[str, Timed], profile: str,
                   repeats: int) -> list[str]:
    """The report of a ``--timing`` run: both rates, the allowances' tightness, the timing classes with an example."""
    n = len(table)
    agree = int((table["kind"] == "agree").sum())
    lo, hi = wilson(agree, n)
    lines = [f"profile {profile}, {repeats} broker runs per scenario: semantics agree on {agree} of {n} scenarios: "
             f"{agree / n:.1%} (95% Wilson interval {lo:.1%} to {hi:.1%}); {table['seconds'].sum():.0f} s in all"]
    judged = table[table["timing"] != "not judged"]
    t_agree = int((judged["timing"] == "agree").sum())
    lo, hi = wilson(t_agree, len(judged))
    rate = t_agree / len(judged) if len(judged) else float("nan")
    lines.append(f"timing agrees on {t_agree} of {len(judged)} scenarios judged: {rate:.1%} (95% Wilson interval "
                 f"{lo:.1%} to {hi:.1%})")
    if len(rows):
        rel = (rows["allowance"] / rows["broker"].abs()).replace([float("inf")], float("nan")).dropna()
        lines.append(f"allowances: {len(rows)} judged rows (latency and retry-delay p50 and p95); allowance / broker "
                     f"value: median {rel.median():.2f}, quartiles {rel.quantile(0.25):.2f} to "
                     f"{rel.quantile(0.75):.2f}; noise as large as the value itself (loose) in "
                     f"{int(rows['loose'].sum())} ({rows['loose'].mean():.0%})")
        for table_name, quantity in sorted({(a, b) for a, b in zip(rows["table"], rows["quantity"], strict=True)}):
            sub = rows[(rows["table"] == table_name) & (rows["quantity"] == quantity)]
            both = sub.dropna(subset=["simulation", "broker"])
            slower = int((both["simulation"] > both["broker"]).sum())
            factor = (both["simulation"] / both["broker"]).median()
            lines.append(f"  {table_name} {quantity}: {len(sub)} rows, {int(sub['agree'].sum())} agree; median "
                         f"simulation {sub['simulation'].median():.2f} ms, broker {sub['broker'].median():.2f} ms, "
                         f"allowance {sub['allowance'].median():.2f} ms; simulation slower in {slower} of {len(both)} "
                         f"(median simulation / broker {factor:.2f}); |difference| / allowance median "
                         f"{sub['ratio'].median():.2f}, max {sub['ratio'].max():.2f}")
    lines.append("")
    lines += [f"{count:4d}  semantics {kind}" for kind, count in table["kind"].value_counts().items()]
    lines += [f"{count:4d}  timing {kind}" for kind, count in table["timing"].value_counts().items()]
    wrong = rows[~rows["agree"]] if len(rows) else rows
    for kind, example in examples.items():
        lines += ["", f"== {kind}: first example, scenario {example.scenario.name}"]
        if kind.startswith("timing differ"):
            names = {f"{r['table']} {r['quantity']}" for r in example.rows() if not r["agree"]}
            these = wrong[[f"{a} {b}" in names for a, b in zip(wrong["table"], wrong["quantity"], strict=True)]]
            lines.append(f"# over the sample, those rows outside their allowance: |difference| / allowance median "
                         f"{these['ratio'].median():.2f}, max {these['ratio'].max():.2f}")
        lines.append(example.report())
    return lines


def main_timing(args: argparse.Namespace, settings: AmqpSettings, profile: str) -> int:
    """``--timing``: every scenario through the validation, both verdicts, the report."""
    n = args.scenarios or (3 if args.quick else 50)
    out = args.out
    table_rows, judged, examples = [], [], {}
    for number in range(args.first, args.first + n):
        t0 = time.perf_counter()
        outcome = timed(sample(number, racy=args.racy), settings, repeats=args.repeats)
        seconds = time.perf_counter() - t0
        table_rows.append({"scenario": number, "profile": profile, "kind": outcome.kind,
                           "timing": outcome.timing_kind, "seconds": round(seconds, 2)})
        judged += [{"scenario": number, **r} for r in outcome.rows()]
        if outcome.kind != "agree":
            examples.setdefault(f"semantics {outcome.kind}", outcome)
        if outcome.timing_kind not in ("agree", "not judged"):
            examples.setdefault(f"timing {outcome.timing_kind}", outcome)
        print(f"scenario {number}: semantics {outcome.kind}; timing {outcome.timing_kind} ({seconds:.1f} s)",
              flush=True)
    table = pd.DataFrame(table_rows)
    table.to_csv(out / "differential_timing.csv", index=False)
    rows = pd.DataFrame(judged, columns=["scenario", "table", *TIMING_COLUMNS, "ratio", "loose"])
    rows.to_csv(out / "timing_rows.csv", index=False)
    lines = timing_summary(table, rows, examples, profile, args.repeats)
    counts = pd.concat([("semantics " + table["kind"]).value_counts(), ("timing " + table["timing"]).value_counts()])
    counts.index = [k.replace("semantics agree", "agree").replace("timing agree", "agree (timing)")
                    for k in counts.index]
    plot(counts, out / "differential_timing.png", lines[0] + "\n" + lines[1])
    text = "\n".join(lines) + "\n"
    (out / "differential_timing.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
