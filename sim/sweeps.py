"""Parameter sweeps: many (scenario, seed) runs into one tidy table, resumable.

A sweep is data: a base scenario (or several, by label), factors (field path ->
values) and replications. Every point of the factors' cartesian product is run once
per replication. Replication ``i`` uses the same seed at every point (common random
numbers): derived from the sweep's root seed, or given explicitly with ``seeds``, so
differences between points are not drowned by seed noise.

Executors (:mod:`sim.executors`): ``"serial"``; ``"processes"`` (default: a local
process pool, one worker per core); ``"dask"`` (a ``distributed`` cluster at
``dask_address``, or a LocalCluster when none is given). All give identical rows.

With a cache folder, each finished run is written there atomically as one JSON
file named by a hash of the resolved scenario with its seed and of the code
(capsim's version, a hash of its source, an external protocol module's source); a
sweep that is interrupted (Ctrl-C, kill -9) and started again only runs what is
missing. Failed runs are recorded in the ``error`` column, never stop the sweep,
and are not cached (a rerun retries them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .config import to_plain
from .cost import check_cost, check_sweep_events, check_sweep_size
from .errors import ScenarioError
from .executors import check_executor, each_result, progress_bar
from .rng import derive_seed
from .runner import run
from .scenario import Scenario, parse_path
from .version import capsim_version, code_fingerprint, file_fingerprint

__all__ = ["sweep", "summarize", "metric_names", "expand_factors", "replication_seed", "SCENARIO_COLUMN"]

#: the column naming the base scenario when a sweep is given several, by label
SCENARIO_COLUMN = "scenario"


def expand_factors(factors: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the factors, in the order given (last factor fastest)."""
    names = list(factors)
    for name in names:
        parse_path(name)
        values = factors[name]
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ScenarioError(f"factors.{name}", f"must be a list of values, got {values!r}")
        if len(list(values)) == 0:
            raise ScenarioError(f"factors.{name}", "must list at least one value")
    return [dict(zip(names, combo)) for combo in itertools.product(*(list(factors[n]) for n in names))]


def replication_seed(root: int, replication: int) -> int:
    """The seed of replication ``replication``: the same at every point of a sweep."""
    return derive_seed(root, "replication", replication)


def _cache_key(scenario_dict: dict[str, Any]) -> str:
    """Names the cached row of one run: the resolved scenario with its seed, and the code that ran it.

    The code is capsim's version and a hash of its source (a checkout changes
    without a new version), and the source of a protocol loaded from outside
    the package (``protocol.module``).
    """
    code = {"capsim": capsim_version(), "source": code_fingerprint()}
    module = scenario_dict.get("protocol", {}).get("module")
    if isinstance(module, str):
        code["module"] = _module_fingerprint(module)
    blob = json.dumps({"scenario": scenario_dict, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _module_fingerprint(module: str) -> str:
    if module.endswith(".py"):
        return file_fingerprint(module)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    return file_fingerprint(spec.origin) if spec is not None and spec.origin else "missing"


def _numbers(summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if isinstance(v, (bool, np.bool_)):
            out[k] = bool(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def _strip(task: dict[str, Any]) -> dict[str, Any]:
    """What a worker needs of a task (not its cache key)."""
    return {k: task[k] for k in ("point", "replication", "seed", "factors", "scenario", "allow_large")}


def _task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one (point, replication); never raises, errors go in the row."""
    row: dict[str, Any] = {**task["factors"], "point": task["point"], "replication": task["replication"],
                           "seed": task["seed"]}
    try:
        scenario = Scenario.from_dict(task["scenario"])
        result = run(scenario, seed=task["seed"], allow_large=task["allow_large"])
        row.update(_numbers(result.summary))
        row["runtime"] = result.runtime
        row["error"] = None
    except Exception as exc:  # a failed run is recorded, not fatal
        row["runtime"] = math.nan
        row["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ScenarioError):
            row["traceback"] = traceback.format_exc(limit=5)
    return row


def _write_atomic(path: Path, row: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(row, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def sweep(
    base: Scenario | Mapping[str, Scenario],
    factors: Mapping[str, Sequence[Any]] | None = None,
    replications: int = 1,
    *,
    seeds: Sequence[int] | None = None,
    seed: int | None = None,
    executor: str = "processes",
    workers: int | None = None,
    dask_address: str | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    allow_large: bool = False,
) -> pd.DataFrame:
    """Run every point of ``factors`` ``replications`` times; one row per run.

    ``base`` is one scenario, or several by label (a ``scenario`` column then says
    which; each is varied by the same factors). Replication ``i`` runs with
    ``seeds[i]`` when ``seeds`` is given, else with a seed derived from ``seed``
    (default: the base's ``run.seed``). Rows carry the label, every factor,
    ``point``, ``replication``, ``seed``, the run's numeric summary metrics,
    ``runtime`` and ``error`` (None when it ran). A sweep beyond :mod:`sim.cost`'s
    limits (too many runs, a run too large, too many events in all) is refused
    before anything runs, unless ``allow_large``.
    """
    bases = _bases(base)
    factors = dict(factors or {})
    run_seeds = _seeds(bases, replications, seeds, seed)
    check_executor(executor, workers)
    _check_size(bases, factors, len(run_seeds), allow_large)
    tasks = _plan(bases, factors, run_seeds, allow_large)
    cache_dir = Path(cache) if cache is not None else None
    rows, todo = _from_cache(tasks, cache_dir)
    bar = progress_bar(len(tasks), len(tasks) - len(todo), progress)
    keys = {(t["point"], t["replication"]): t["key"] for t in todo}

    def done(task: dict[str, Any], row: dict[str, Any]) -> None:
        at = (task["point"], task["replication"])
        rows[at] = row
        if cache_dir is not None and row.get("error") is None:
            _write_atomic(cache_dir / f"{keys[at]}.json", row)
        bar.update(1)

    try:
        each_result(_task, [_strip(t) for t in todo], done, executor, workers, dask_address)
    finally:
        bar.close()
    front = ([SCENARIO_COLUMN] if not isinstance(base, Scenario) else []) + list(factors)
    return _frame([rows[k] for k in sorted(rows)], front)


def _bases(base: Scenario | Mapping[str, Scenario]) -> dict[str | None, Scenario]:
    if isinstance(base, Scenario):
        return {None: base}
    if not isinstance(base, Mapping) or not base:
        raise TypeError(f"sweep() needs a Scenario or a non-empty mapping of label -> Scenario, "
                        f"got {type(base).__name__}")
    for label, scenario in base.items():
        if not isinstance(label, str) or not isinstance(scenario, Scenario):
            raise TypeError(f"sweep() base {label!r}: needs a str label and a Scenario, got {type(scenario).__name__}")
    return {str(label): scenario for label, scenario in base.items()}


def _seeds(bases: Mapping[str | None, Scenario], replications: int, seeds: Sequence[int] | None,
           seed: int | None) -> list[int]:
    if seeds is not None:
        seeds = list(seeds)
        if not seeds:
            raise ScenarioError("seeds", "must list at least one seed")
        for i, s in enumerate(seeds):
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**63:
                raise ScenarioError(f"seeds[{i}]", f"must be an integer in [0, 2**63), got {s!r}")
        if replications != 1 and replications != len(seeds):
            raise ScenarioError("replications", f"is {replications} but {len(seeds)} seeds were given")
        return [int(s) for s in seeds]
    if isinstance(replications, bool) or not isinstance(replications, int) or replications < 1:
        raise ScenarioError("replications", f"must be an integer >= 1, got {replications!r}")
    root = next(iter(bases.values())).run.seed if seed is None else seed
    return [replication_seed(root, rep) for rep in range(replications)]


def _check_size(bases: Mapping[str | None, Scenario], factors: Mapping[str, Sequence[Any]], replications: int,
                allow_large: bool) -> None:
    """Refuse a sweep of too many runs before its points are expanded (that alone can exhaust memory)."""
    counts = {}
    for name, values in factors.items():
        try:
            counts[name] = len(values)
        except TypeError:  # an iterator: expand_factors says what is wrong or takes it as it is
            counts[name] = 1
    runs = len(bases) * math.prod(counts.values()) * replications
    how = " x ".join([*(f"{n} values of {name}" for name, n in counts.items()), f"{replications} replications"])
    if len(bases) > 1:
        how = f"{len(bases)} bases x {how}"
    check_sweep_size(runs, "factors", how, allow_large=allow_large)


def _plan(bases: Mapping[str | None, Scenario], factors: Mapping[str, Sequence[Any]],
          seeds: Sequence[int], allow_large: bool = False) -> list[dict[str, Any]]:
    """One task per (base, point, replication); every point is validated, and its cost checked, before any runs."""
    points = expand_factors(factors)
    tasks: list[dict[str, Any]] = []
    p = 0
    events = 0.0
    points = [{name: to_plain(v) for name, v in values.items()} for values in points]  # numpy scalars -> Python
    for label, base in bases.items():
        for values in points:
            scenario = base.variant(values)
            events += check_cost(scenario, allow_large=allow_large).events * len(seeds)
            shown = values if label is None else {SCENARIO_COLUMN: label, **values}
            for rep, s in enumerate(seeds):
                resolved = scenario.variant({"run.seed": s}).to_dict()
                tasks.append({"point": p, "replication": rep, "seed": s, "factors": shown,
                              "scenario": resolved, "key": _cache_key(resolved), "allow_large": allow_large})
            p += 1
    check_sweep_events(events, len(tasks), allow_large=allow_large)
    return tasks


def _from_cache(tasks: list[dict[str, Any]], cache_dir: Path | None
                ) -> tuple[dict[tuple[int, int], dict[str, Any]], list[dict[str, Any]]]:
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    todo: list[dict[str, Any]] = []
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    for t in tasks:
        hit = _read_cached(cache_dir / f"{t['key']}.json") if cache_dir is not None else None
        if hit is not None:
            rows[(t["point"], t["replication"])] = {**hit, **t["factors"]}
        else:
            todo.append(t)
    return rows, todo


def _frame(rows: list[dict[str, Any]], factor_columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    front = factor_columns + ["point", "replication", "seed"]
    df = df[front + [c for c in df.columns if c not in front]]
    if "error" not in df:
        df["error"] = None
    return df


def summarize(df: pd.DataFrame, metrics: str | Sequence[str] | None = None, *,
              confidence: float = 0.95) -> pd.DataFrame:
    """Mean and confidence interval (Student t) of each metric at each point.

    ``metrics`` is one metric name or a list of them (default: every numeric
    column the runs report). One row per (point, metric): the factor values,
    ``metric``, ``n`` (runs without error and with a finite value), ``mean``,
    ``std``, ``ci_low``, ``ci_high``, and ``errors`` (failed runs at that point).
    A metric no run reports raises :class:`~sim.errors.ScenarioError` listing
    the ones they do; so does a table in which every run failed.
    """
    if "point" not in df or "error" not in df:
        raise TypeError("summarize() needs the table sim.sweep returns (with 'point' and 'error' columns)")
    valid = metric_names(df)
    if metrics is None:
        metrics = valid
    elif isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if len(df) and df["error"].notna().all():
        raise ScenarioError("metrics", f"every run failed, so there is nothing to summarize; the first error: "
                                       f"{df['error'].dropna().iloc[0]}")
    for i, m in enumerate(metrics):
        if not isinstance(m, str) or m not in valid:
            raise ScenarioError(f"metrics[{i}]", f"unknown metric {m!r}; the runs report: {', '.join(valid)}")
    factor_cols = list(df.columns[: list(df.columns).index("point")])
    rows = []
    for point, group in df.groupby("point", sort=True):
        ok = group[group["error"].isna()]
        base = {c: group[c].iloc[0] for c in factor_cols}
        for m in metrics:
            x = pd.to_numeric(ok[m], errors="coerce").to_numpy(dtype=float) if m in ok else np.array([])
            x = x[np.isfinite(x)]
            n = len(x)
            mean = float(x.mean()) if n else math.nan
            std = float(x.std(ddof=1)) if n > 1 else math.nan
            if n > 1 and std > 0:
                half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
            elif n >= 1:
                half = 0.0 if n > 1 else math.nan
            else:
                half = math.nan
            rows.append({**base, "point": point, "metric": m, "n": n, "mean": mean, "std": std,
                         "ci_low": mean - half, "ci_high": mean + half, "errors": int(group["error"].notna().sum())})
    return pd.DataFrame(rows)


def metric_names(df: pd.DataFrame) -> list[str]:
    """The metric columns of a sweep table: numeric, not booleans, not factors or bookkeeping."""
    fixed = {"point", "replication", "seed", "runtime", "error", "traceback"}
    factor_cols = set(df.columns[: list(df.columns).index("point")]) if "point" in df else set()
    return [c for c in df.columns if c not in fixed and c not in factor_cols
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
