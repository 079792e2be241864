"""The sweep file: a base scenario, factors, replications and plots, in TOML.

::

    name = "loss-sweep"
    replications = 5
    seed = 1
    base = "scenarios/partitioned-store.toml"   # relative to this file; or an inline [base] table
    metrics = ["availability", "latency.read.p99"]

    [factors]
    "network.loss" = [0.0, 0.05, 0.1]
    "workload.rate" = { start = 10, stop = 50, num = 5 }       # evenly spaced, both ends included
    "faults.schedule[0].end" = { start = 4000, stop = 9000, step = 1000 }   # stop excluded

    [[plots]]
    x = "network.loss"
    y = "availability"
    hue = "workload.rate"          # optional: one line per value
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cost import check_sweep_size
from .errors import ScenarioError
from .scenario import Scenario, parse_path, read_text_file

__all__ = ["SweepSpec", "PlotSpec", "load_sweep", "parse_sweep"]

DEFAULT_METRICS = ("availability", "latency.read.p50", "latency.read.p99", "latency.write.p99", "throughput")


@dataclass(frozen=True)
class PlotSpec:
    x: str
    y: str
    hue: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: Scenario
    factors: dict[str, list[Any]]
    replications: int = 1
    seed: int | None = None
    metrics: tuple[str, ...] = DEFAULT_METRICS
    plots: tuple[PlotSpec, ...] = field(default_factory=tuple)
    #: the files the sweep was read from (the sweep file, a base scenario file)
    inputs: tuple[Path, ...] = ()
    #: False when ``metrics`` (and the default plots) are the defaults, not named in the file
    metrics_given: bool = True


def _values(name: str, spec: Any, allow_large: bool = False) -> list[Any]:
    path = f'factors."{name}"'
    if isinstance(spec, list):
        if not spec:
            raise ScenarioError(path, "must list at least one value")
        return spec
    if isinstance(spec, Mapping):
        keys = set(spec)
        nums = {}
        for k in keys & {"start", "stop", "step", "num"}:
            v = spec[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ScenarioError(f"{path}.{k}", f"must be a number, got {v!r}")
            nums[k] = v
        extra = keys - {"start", "stop", "step", "num"}
        if extra:
            raise ScenarioError(f"{path}.{sorted(extra)[0]}", "unknown key; accepted keys: start, stop, step, num")
        if {"start", "stop", "num"} <= keys and "step" not in keys:
            num = nums["num"]
            if not isinstance(num, int) or num < 1:
                raise ScenarioError(f"{path}.num", f"must be an integer >= 1, got {num!r}")
            check_sweep_size(num, f"{path}.num", f"{num} values", allow_large=allow_large)
            values = np.linspace(nums["start"], nums["stop"], num)
        elif {"start", "stop", "step"} <= keys and "num" not in keys:
            if nums["step"] <= 0:
                raise ScenarioError(f"{path}.step", f"must be > 0, got {nums['step']!r}")
            count = (nums["stop"] - nums["start"]) / nums["step"]
            if not math.isfinite(count):
                raise ScenarioError(path, "start, stop and step must be finite numbers")
            check_sweep_size(math.ceil(count), f"{path}.step",
                             f"from {nums['start']} to {nums['stop']} by {nums['step']}", allow_large=allow_large)
            values = np.arange(nums["start"], nums["stop"], nums["step"])
        else:
            raise ScenarioError(path, "must be a list, {start, stop, num} or {start, stop, step}")
        if len(values) == 0:
            raise ScenarioError(path, "gives no values")
        ints = all(isinstance(nums[k], int) for k in nums)
        return [int(v) if ints and float(v).is_integer() else float(v) for v in values]
    raise ScenarioError(path, f"must be a list of values or a range table, got {type(spec).__name__}")


def parse_sweep(data: Mapping[str, Any], *, relative_to: Path | None = None, allow_large: bool = False) -> SweepSpec:
    """Build a validated sweep spec from plain data (ranges beyond :mod:`sim.cost`'s limits need ``allow_large``)."""
    allowed = {"name", "description", "base", "factors", "replications", "seed", "metrics", "plots"}
    for key in data:
        if key not in allowed:
            raise ScenarioError(str(key), f"unknown key; accepted keys: {', '.join(sorted(allowed))}")
    base = _base(data.get("base"), relative_to)
    factors = _factors(data.get("factors"), base, allow_large)
    reps = data.get("replications", 1)
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ScenarioError("replications", f"must be an integer >= 1, got {reps!r}")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ScenarioError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
    metrics = data.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics) or not metrics:
        raise ScenarioError("metrics", f"must be a non-empty list of summary metric names, got {metrics!r}")
    plots = _plots(data.get("plots", []), factors, metrics)
    name = _name(data.get("name", "sweep"))
    inputs = (_base_path(data["base"], relative_to),) if isinstance(data.get("base"), str) else ()
    return SweepSpec(name=name, base=base, factors=factors, replications=reps, seed=seed,
                     metrics=tuple(metrics), plots=tuple(plots), inputs=inputs, metrics_given="metrics" in data)


def _name(name: Any) -> str:
    """The sweep's name, which becomes a folder name (out/<name>): one plain path component."""
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError("name", f"must be a non-empty string, got {name!r}")
    if any(c in name for c in "/\\\0") or name.startswith(".") or Path(name).is_absolute():
        raise ScenarioError("name", f"must be a plain name (no '/', '\\', leading '.' or absolute path), "
                                    f"got {name!r}; it names the output folder out/<name>")
    return name


def _base_path(spec: str, relative_to: Path | None) -> Path:
    path = Path(spec)
    return relative_to / path if not path.is_absolute() and relative_to is not None else path


def _base(spec: Any, relative_to: Path | None) -> Scenario:
    """The base scenario: a scenario file (relative to the sweep file) or an inline table.

    Errors in an inline table name their path below ``base``.
    """
    if isinstance(spec, str):
        return Scenario.from_toml(_base_path(spec, relative_to))
    if isinstance(spec, Mapping):
        try:
            return Scenario.from_dict(spec)
        except ScenarioError as exc:
            raise ScenarioError(f"base.{exc.path}" if exc.path else "base", exc.reason) from None
    raise ScenarioError("base", "must be a scenario file path or an inline [base] table")


def _factors(raw: Any, base: Scenario, allow_large: bool) -> dict[str, list[Any]]:
    """Field path -> values, each path checked against ``base`` with its first value."""
    if not isinstance(raw, Mapping) or not raw:
        raise ScenarioError("factors", 'must be a table of field path = values, e.g. "network.loss" = [0, 0.1]')
    factors: dict[str, list[Any]] = {}
    for name, spec in raw.items():
        try:
            parse_path(name)
        except ScenarioError:
            raise ScenarioError(f'factors."{name}"', "is not a field path like 'network.loss'") from None
        factors[name] = _values(name, spec, allow_large)
        try:
            base.variant({name: factors[name][0]})
        except ScenarioError as exc:
            raise ScenarioError(f'factors."{name}"', f"first value is invalid: {exc}") from None
    return factors


def _plots(raw: Any, factors: dict[str, list[Any]], metrics: list[str]) -> list[PlotSpec]:
    """The plots asked for; by default one per metric against the first factor, hued by the second."""
    plots = []
    for i, p in enumerate(raw):
        if not isinstance(p, Mapping):
            raise ScenarioError(f"plots[{i}]", "must be a table with x, y and optionally hue")
        unknown = set(p) - {"x", "y", "hue"}
        if unknown:
            raise ScenarioError(f"plots[{i}].{sorted(unknown)[0]}", "unknown key; accepted keys: x, y, hue")
        for k in ("x", "y"):
            if not isinstance(p.get(k), str):
                raise ScenarioError(f"plots[{i}].{k}", "is required (a factor for x, a metric for y)")
        if p["x"] not in factors:
            raise ScenarioError(f"plots[{i}].x", f"must be one of the factors ({', '.join(factors)}), got {p['x']!r}")
        if p.get("hue") is not None and p["hue"] not in factors:
            raise ScenarioError(f"plots[{i}].hue", f"must be one of the factors, got {p['hue']!r}")
        plots.append(PlotSpec(p["x"], p["y"], p.get("hue")))
    if not plots:
        first = next(iter(factors))
        hue = list(factors)[1] if len(factors) > 1 else None
        plots = [PlotSpec(first, m, hue) for m in metrics]
    return plots


def load_sweep(path: str | Path, *, allow_large: bool = False) -> SweepSpec:
    """Read and validate a sweep file (see the module docstring)."""
    p = Path(path)
    try:
        data = tomllib.loads(read_text_file(p))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(p), f"invalid TOML: {exc}") from None
    spec = parse_sweep(data, relative_to=p.parent, allow_large=allow_large)
    return dataclasses.replace(spec, inputs=(p, *spec.inputs))
