"""``capsim search SCENARIO.toml``: explore a scenario's nodes, print the verdict and the trace."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

EPILOG = """\
The scenario's [search] table sets the search (strategy, max_depth, predicates,
[[search.operations]] ...); options given here override it. Faults come from
[[faults.schedule]]: each partition or crash entry may start (and end) at any point.

examples:
  capsim search experiments/search/3pc-partition.toml
  capsim search experiments/search/2pc-blocking.toml --predicate blocked --out out/2pc-blocked
"""


def add_parser(sub: Any, parser_class: type) -> None:
    s = sub.add_parser("search", help="explore every order of messages, timers and faults (model checking)",
                       description="Explore the scenario's protocol nodes breadth-first (or depth-first, or by random "
                                   "walks) and check invariants and goals in every state.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("scenario", type=Path, help="scenario TOML file with a [search] table")
    s.add_argument("--strategy", choices=("bfs", "dfs", "random"), default=None, help="search strategy")
    s.add_argument("--max-depth", type=int, default=None, help="steps from the initial state")
    s.add_argument("--max-states", type=int, default=None, help="distinct states at most")
    s.add_argument("--max-seconds", type=float, default=None, help="wall-clock limit")
    s.add_argument("--predicate", action="append", default=None, help="an invariant or goal (repeatable; "
                                                                       "replaces search.predicates)")
    s.add_argument("--symmetry", action="store_true", default=None,
                   help="merge states that differ only by renaming interchangeable nodes (search.symmetry)")
    s.add_argument("--out", default=None, help="folder for search.json, trace.csv, diagram.png and replay.toml")
    s.add_argument("--no-replay", action="store_true", help="do not run the replay in the simulator")


def run(args: argparse.Namespace) -> int:
    from ..errors import ScenarioError
    from ..outdir import check_out, staged, wrote
    from .config import load_search, parse_search
    from .explore import search
    from .replay import format_search, reproduce, trace_table

    if args.out is not None:
        check_out(args.out, kind="search", inputs=[args.scenario])
    scenario, cfg = load_search(args.scenario)
    overrides = {k: v for k, v in (("strategy", args.strategy), ("max_depth", args.max_depth),
                                   ("max_states", args.max_states), ("max_seconds", args.max_seconds),
                                   ("predicates", args.predicate), ("symmetry", args.symmetry)) if v is not None}
    if overrides:
        plain = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        plain["operations"] = [dataclasses.asdict(op) for op in cfg.operations]
        cfg = parse_search({**plain, **overrides}, "search")
    if not cfg.predicates:
        raise ScenarioError("search.predicates", "name at least one invariant or goal (or --predicate NAME)")
    result = search(scenario, cfg)
    print("\n".join(format_search(result)))
    rep = None
    if result.found and result.trace and not args.no_replay:
        rep = reproduce(result)
        shown = {True: "reproduces the finding", False: "does NOT reproduce the finding (message order differs)",
                 None: "ran (no simulator check for this predicate)"}[rep.reproduced]
        print(f"replay in the simulator: {shown}")
        for note in rep.replay.notes:
            print(f"  note: {note}")
    if args.out is not None:
        with staged(args.out, "search") as stage:
            summary = {"verdict": result.verdict, "predicate": result.predicate, "message": result.message,
                       "states": result.states, "transitions": result.transitions, "depth": result.depth,
                       "seconds": result.seconds, "states_per_second": result.states_per_second,
                       "complete": result.complete, "limit": result.limit,
                       "replay_reproduced": None if rep is None else rep.reproduced}
            (stage.path / "search.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            if result.trace:
                table = trace_table(result)
                table.to_csv(stage.path / "trace.csv", index=False)
                stage.rows["trace.csv"] = len(table)
            if rep is not None:
                (stage.path / "replay.toml").write_text(rep.replay.scenario.to_toml(), encoding="utf-8")
            if result.trace:
                import matplotlib.pyplot as plt

                from .diagram import space_time

                ax = space_time(result)
                ax.figure.savefig(stage.path / "diagram.png", dpi=110, bbox_inches="tight")
                plt.close(ax.figure)
        print(f"\n{wrote(args.out, 'search')}")
    return 1 if result.verdict == "violation" else 0
