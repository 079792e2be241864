"""Parameter sweeps: many (scenario, seed) runs into one tidy table, resumable.

A sweep is data: a base scenario, factors (field path -> values) and a number of
replications. Every point of the factors' cartesian product is run once per
replication. Replication ``i`` uses the same seed at every point (common random
numbers), derived from the sweep's root seed, so differences between points are
not drowned by seed noise.

Executors: ``"serial"``; ``"processes"`` (default: a local process pool, one
worker per core); ``"dask"`` (a ``distributed`` cluster at ``dask_address``, or a
LocalCluster when none is given). All give identical rows.

With a cache folder, each finished run is written there atomically as one JSON
file named by a hash of (resolved scenario with its seed, capsim version); a
sweep that is interrupted (Ctrl-C, kill -9) and started again only runs what is
missing. Failed runs are recorded in the ``error`` column, never stop the sweep,
and are not cached (a rerun retries them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ScenarioError
from .experiment import capsim_version, run
from .rng import derive_seed
from .scenario import Scenario, parse_path

__all__ = ["sweep", "summarize", "map_tasks", "expand_factors", "replication_seed", "EXECUTORS"]

EXECUTORS = ("serial", "processes", "dask")


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
    blob = json.dumps({"scenario": scenario_dict, "capsim": capsim_version()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _numbers(summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if isinstance(v, (bool, np.bool_)):
            out[k] = bool(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def _task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one (point, replication); never raises, errors go in the row."""
    row: dict[str, Any] = {**task["factors"], "point": task["point"], "replication": task["replication"],
                           "seed": task["seed"]}
    try:
        scenario = Scenario.from_dict(task["scenario"])
        result = run(scenario, seed=task["seed"])
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
    base: Scenario,
    factors: Mapping[str, Sequence[Any]],
    replications: int = 1,
    *,
    seed: int | None = None,
    executor: str = "processes",
    workers: int | None = None,
    dask_address: str | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every point of ``factors`` ``replications`` times; one row per run.

    Rows carry every factor, ``point``, ``replication``, ``seed``, the run's
    numeric summary metrics, ``runtime`` and ``error`` (None when it ran).
    """
    if not isinstance(base, Scenario):
        raise TypeError(f"sweep() needs a Scenario as base, got {type(base).__name__}")
    if isinstance(replications, bool) or not isinstance(replications, int) or replications < 1:
        raise ScenarioError("replications", f"must be an integer >= 1, got {replications!r}")
    if executor not in EXECUTORS:
        raise ScenarioError("executor", f"must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ScenarioError("workers", f"must be an integer >= 1, got {workers!r}")
    root = base.run.seed if seed is None else seed
    points = expand_factors(factors)
    tasks: list[dict[str, Any]] = []
    for p, values in enumerate(points):
        scenario = base.variant(values)  # validates every point before anything runs
        for rep in range(replications):
            s = replication_seed(root, rep)
            resolved = scenario.variant({"run.seed": s}).to_dict()
            tasks.append({"point": p, "replication": rep, "seed": s, "factors": values,
                          "scenario": resolved, "key": _cache_key(resolved)})
    cache_dir = Path(cache) if cache is not None else None
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

    bar = _progress(len(tasks), len(tasks) - len(todo), progress)

    def done(task: dict[str, Any], row: dict[str, Any]) -> None:
        rows[(task["point"], task["replication"])] = row
        if cache_dir is not None and row.get("error") is None:
            _write_atomic(cache_dir / f"{task['key']}.json", row)
        bar.update(1)

    try:
        if executor == "serial" or not todo:
            for t in todo:
                done(t, _task(_strip(t)))
        elif executor == "processes":
            _run_processes(todo, workers, done)
        else:
            _run_dask(todo, workers, dask_address, done)
    finally:
        bar.close()
    ordered = [rows[k] for k in sorted(rows)]
    df = pd.DataFrame(ordered)
    front = list(factors) + ["point", "replication", "seed"]
    rest = [c for c in df.columns if c not in front]
    df = df[front + rest]
    if "error" not in df:
        df["error"] = None
    return df


def map_tasks(fn, tasks: list[Any], executor: str = "processes", workers: int | None = None) -> list[Any]:
    """``[fn(t) for t in tasks]`` in the chosen executor, results in task order.

    For experiments that need more than the summary numbers :func:`sweep` keeps.
    ``fn`` may live in a script: forked processes inherit it, and Dask workers get
    its module by value.
    """
    if executor not in EXECUTORS:
        raise ScenarioError("executor", f"must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "serial":
        return [fn(t) for t in tasks]
    if executor == "processes":
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=ctx) as pool:
            return list(pool.map(fn, tasks))
    import cloudpickle
    from distributed import Client, LocalCluster

    # Workers cannot import a script, so its functions must travel by value. Distributed uses
    # cloudpickle (which honours the by-value registry) only for what plain pickle cannot
    # handle, hence the local wrapper.
    module = getattr(fn, "__module__", "__main__")
    if module != "__main__" and not module.startswith("sim.") and module in sys.modules:
        cloudpickle.register_pickle_by_value(sys.modules[module])

    def call(task: Any) -> Any:
        return fn(task)

    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        return client.gather(client.map(call, tasks, pure=False))


def _strip(task: dict[str, Any]) -> dict[str, Any]:
    return {k: task[k] for k in ("point", "replication", "seed", "factors", "scenario")}


def _run_processes(todo: list[dict[str, Any]], workers: int | None, done) -> None:
    # fork: works from scripts without a __main__ guard and from notebooks; the
    # worker function lives in this module, so nothing of the caller is needed
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    n = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = {pool.submit(_task, _strip(t)): t for t in todo}
        try:
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _run_dask(todo: list[dict[str, Any]], workers: int | None, address: str | None, done) -> None:
    from distributed import Client, LocalCluster, as_completed as dask_completed

    import dask

    cluster = None
    if address is None:
        # forked workers start in well under a second (spawned ones re-import numpy,
        # pandas, scipy and capsim first); the task function lives in this module
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with dask.config.set({"distributed.worker.multiprocessing-method": method}):
            cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        futures = client.map(_task, [_strip(t) for t in todo], pure=False)
        index = {f.key: t for f, t in zip(futures, todo)}
        for fut in dask_completed(futures):
            done(index[fut.key], fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc="sweep", dynamic_ncols=True)


def summarize(df: pd.DataFrame, metrics: Sequence[str] | None = None, *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and confidence interval (Student t) of each metric at each point.

    One row per (point, metric): the factor values, ``metric``, ``n`` (runs
    without error and with a finite value), ``mean``, ``std``, ``ci_low``,
    ``ci_high``, and ``errors`` (failed runs at that point).
    """
    fixed = {"point", "replication", "seed", "runtime", "error", "traceback"}
    factor_cols = [c for c in df.columns[: list(df.columns).index("point")]] if "point" in df else []
    if metrics is None:
        metrics = [c for c in df.columns if c not in fixed and c not in factor_cols
                   and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
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
