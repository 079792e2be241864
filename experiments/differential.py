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

Outputs (in --out, default ``out/differential``): ``differential.csv`` (one row
per scenario: number, profile, class, seconds), ``differential.txt`` (the rate,
the classes, an example of each) and ``differential.png`` (scenarios per class). Needs the broker of ``CAPSIM_AMQP_URL``
(default: guest on 127.0.0.1:5672).

    python experiments/differential.py [--quick] [--out DIR] [--scenarios N] [--first K] [--racy] [--shrink N]

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
from sim.rabbitmq.differential import Outcome, differential, shrink
from sim.rabbitmq.generate import sample
from sim.rabbitmq.settings import AmqpSettings


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
    ax.barh(range(len(counts)), counts.to_numpy(), color=["tab:green" if k == "agree" else "tab:red"
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
    args = parse_experiment_args(parser, argv)
    n = args.scenarios or (8 if args.quick else 300)
    out = args.out
    settings = AmqpSettings.resolve()
    profile = "racy" if args.racy else "default"
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


if __name__ == "__main__":
    raise SystemExit(main())
