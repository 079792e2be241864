"""The command line every experiment script shares: ``--quick``, ``--out``, ``--workers``, ``--executor``.

An experiment under ``experiments/`` builds its parser with :func:`experiment_parser`
and reads it with :func:`parse_experiment_args`. A mistake (a worker count of -3, a
seed count of 0, an ``--out`` that is a file) is one line naming the option and what
it accepts, with exit status 2, before any work is done; never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .executors import EXECUTORS, MAX_WORKERS

__all__ = ["MAX_SEEDS", "experiment_parser", "parse_experiment_args"]

#: more replications than this per point is a typo, not an experiment
MAX_SEEDS = 10_000


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {value}")
        return value
    return parse


def experiment_parser(description: str | None, *, out: str, quick: str, seeds: str | None = None,
                      workers: str = "worker processes (default: one per core)") -> argparse.ArgumentParser:
    """A parser with the options every experiment has; ``seeds`` (its help text) adds ``--seeds``.

    ``description`` is the experiment's docstring, shown whole by ``--help``.
    """
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--out", type=Path, default=Path(out), help="output folder (default: %(default)s)")
    if seeds is not None:
        ap.add_argument("--seeds", type=_bounded_int(1, MAX_SEEDS), default=None, help=seeds)
    ap.add_argument("--workers", type=_bounded_int(1, MAX_WORKERS), default=None, help=workers)
    ap.add_argument("--executor", default="processes", choices=EXECUTORS, help="how runs are spread (%(choices)s)")
    return ap


def parse_experiment_args(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and create the ``--out`` folder; a folder that cannot be made is a usage error."""
    args = ap.parse_args(argv)
    out: Path = args.out
    if str(out).strip() == "":
        ap.error("argument --out: must name a folder, got an empty path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        ap.error(f"argument --out: {out} is a file, not a folder")
    except NotADirectoryError:
        ap.error(f"argument --out: {out} lies under a file")
    except OSError as exc:
        ap.error(f"argument --out: cannot create {out}: {exc.strerror}")
    return args
