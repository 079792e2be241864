"""Distributions of delays (latency, service, think time, fault durations).

Every distribution is a small frozen object with ``sample(rng, size=None)``
(a float, or an array of ``size`` floats) and a ``mean`` where it is known.
Values are milliseconds; parameters that are times accept duration strings.

In a scenario a distribution is written as a number or duration (a constant)
or as a table naming the family::

    latency = "2ms"                                    # constant
    latency = { dist = "exponential", mean = "5ms" }
    latency = { dist = "exponential", rate = 0.183 }          # events per ms: mean 1/0.183 ms
    latency = { dist = "exponential", rate = "200/s" }        # a rate with its unit: mean 5 ms
    latency = { dist = "uniform", low = 1, high = 3 }
    latency = { dist = "lognormal", mu = 1.0, sigma = 0.5 }   # ln(ms)
    latency = { dist = "pareto", shape = 2.5, scale = "1ms" } # min value = scale
    latency = { dist = "mixture", components = [
                  { weight = 0.99, dist = "exponential", mean = 1 },
                  { weight = 0.01, dist = "constant", value = 100 } ] }
    latency = { dist = "empirical", samples = [1.2, 1.4, 3.0] }
    latency = { dist = "empirical", csv = "spans.csv", column = "duration", unit = "us" }
    latency = { dist = "shifted", offset = "75ms",            # a fixed delay plus a variable one
                base = { dist = "exponential", mean = "5ms" } }

Exponential ``rate``: papers often give an exponential by its rate lambda
in events per millisecond (the PBS paper's fits do), so a plain number is a
rate per millisecond: mean ``1/lambda`` ms. A workload's arrival ``rate`` is
per second, though; to leave no doubt a rate may be written with its unit,
``"0.2/ms"``, ``"200/s"``, ``"12000/min"``. Give exactly one of ``mean`` and
``rate``.

Empirical ``csv``: the named ``column`` of a CSV file with a header row (the
column may be left out when the file has only one), one measured value per
row, in ``unit`` (default ``"ms"``; span durations of tracing exports are
usually ``"us"``). A relative path is taken from the folder of the scenario's
TOML file (from the current directory when the scenario is built in Python).
The values are read when the scenario is built and the resolved scenario
carries them as ``samples``, so a saved run reproduces without the file.
For example, one-way delays as half of each round trip measured by ``ping``::

    ping -c 1000 host | grep -o 'time=[0-9.]*' | cut -d= -f2 \\
        | awk 'BEGIN {print "one_way_ms"} {print $1 / 2}' > ping.csv

    latency = { dist = "empirical", csv = "ping.csv", column = "one_way_ms" }
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import ScenarioError
from .units import UNITS_MS, parse_duration

__all__ = [
    "Dist",
    "Constant",
    "Uniform",
    "Exponential",
    "LogNormal",
    "Pareto",
    "Mixture",
    "Empirical",
    "Shifted",
    "parse_dist",
    "resolve_dist_files",
    "buffered_sampler",
    "uniform_sampler",
    "DIST_FAMILIES",
]


class Dist:
    """Base class: a distribution of non-negative values in milliseconds."""

    family: ClassVar[str] = ""

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        raise NotImplementedError

    @property
    def mean(self) -> float:
        """The exact mean (``inf`` where it diverges)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_params(cls, params: dict[str, Any], path: str) -> Dist:
        raise NotImplementedError


def _number(params: dict[str, Any], key: str, path: str, *, duration: bool) -> float:
    if key not in params:
        raise ScenarioError(path, f"missing required parameter {key!r}")
    value = params.pop(key)
    fpath = f"{path}.{key}"
    if duration:
        return parse_duration(value, fpath)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(fpath, f"must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ScenarioError(fpath, f"must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Constant(Dist):
    value: float
    family: ClassVar[str] = "constant"

    def sample(self, rng, size=None):
        return self.value if size is None else np.full(size, self.value)

    @property
    def mean(self) -> float:
        return self.value

    def to_dict(self):
        return {"dist": "constant", "value": self.value}

    @classmethod
    def _from_params(cls, params, path):
        return cls(_number(params, "value", path, duration=True))


@dataclass(frozen=True, slots=True)
class Uniform(Dist):
    low: float
    high: float
    family: ClassVar[str] = "uniform"

    def sample(self, rng, size=None):
        x = rng.uniform(self.low, self.high, size)
        return float(x) if size is None else x

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    def to_dict(self):
        return {"dist": "uniform", "low": self.low, "high": self.high}

    @classmethod
    def _from_params(cls, params, path):
        low = _number(params, "low", path, duration=True)
        high = _number(params, "high", path, duration=True)
        if high < low:
            raise ScenarioError(f"{path}.high", f"must be >= low ({low}), got {high}")
        return cls(low, high)


@dataclass(frozen=True, slots=True)
class Exponential(Dist):
    """Exponential delays of mean ``mean_ms``; written with ``mean`` or with ``rate`` (per ms)."""

    mean_ms: float
    family: ClassVar[str] = "exponential"

    @classmethod
    def from_rate(cls, rate_per_ms: float) -> Exponential:
        """The exponential of rate ``rate_per_ms`` (lambda, events per ms): mean ``1 / rate_per_ms`` ms."""
        return cls(1.0 / rate_per_ms)

    def sample(self, rng, size=None):
        x = rng.exponential(self.mean_ms, size)
        return float(x) if size is None else x

    @property
    def mean(self) -> float:
        return self.mean_ms

    def to_dict(self):
        return {"dist": "exponential", "mean": self.mean_ms}

    @classmethod
    def _from_params(cls, params, path):
        if ("mean" in params) == ("rate" in params):
            where = f"{path}.rate" if "rate" in params else path
            raise ScenarioError(where, "give exactly one of 'mean' (e.g. '5ms') or 'rate' "
                                       "(events per ms, e.g. 0.2, or with a unit, e.g. '200/s')")
        if "rate" in params:
            rate = _rate_per_ms(params.pop("rate"), f"{path}.rate")
            mean = 1.0 / rate
            if not math.isfinite(mean):
                raise ScenarioError(f"{path}.rate", "is too small: the mean 1/rate is not a finite number of ms")
            return cls(mean)
        mean = _number(params, "mean", path, duration=True)
        if mean <= 0:
            raise ScenarioError(f"{path}.mean", f"must be > 0, got {mean}")
        return cls(mean)


def _rate_per_ms(value: object, path: str) -> float:
    """A rate in events per ms, from a number (per ms) or a string ``"<number>/<time unit>"``."""
    if isinstance(value, str) and "/" in value:
        count, _, unit = value.partition("/")
        unit = unit.strip()
        if unit not in UNITS_MS:
            raise ScenarioError(path, f"unknown time unit {unit!r} in {value!r}; accepted units: {', '.join(UNITS_MS)}")
        try:
            number = float(count)
        except ValueError:
            raise ScenarioError(path, f"must be a rate such as 0.2 (per ms) or '200/s', got {value!r}") from None
        rate = number / UNITS_MS[unit]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        raise ScenarioError(path, f"must be a rate such as 0.2 (per ms) or '200/s', got {type(value).__name__} "
                                  f"{value!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise ScenarioError(path, f"must be a finite rate > 0, got {value!r}")
    return rate


@dataclass(frozen=True, slots=True)
class LogNormal(Dist):
    """exp(N(mu, sigma^2)) milliseconds: ``mu`` and ``sigma`` are in ln(ms)."""

    mu: float
    sigma: float
    family: ClassVar[str] = "lognormal"

    def sample(self, rng, size=None):
        x = rng.lognormal(self.mu, self.sigma, size)
        return float(x) if size is None else x

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def to_dict(self):
        return {"dist": "lognormal", "mu": self.mu, "sigma": self.sigma}

    @classmethod
    def _from_params(cls, params, path):
        mu = _number(params, "mu", path, duration=False)
        sigma = _number(params, "sigma", path, duration=False)
        if sigma < 0:
            raise ScenarioError(f"{path}.sigma", f"must be >= 0, got {sigma}")
        return cls(mu, sigma)


@dataclass(frozen=True, slots=True)
class Pareto(Dist):
    """Pareto type I: P(X > x) = (scale / x)^shape for x >= scale."""

    shape: float
    scale: float
    family: ClassVar[str] = "pareto"

    def sample(self, rng, size=None):
        x = (rng.pareto(self.shape, size) + 1.0) * self.scale
        return float(x) if size is None else x

    @property
    def mean(self) -> float:
        return math.inf if self.shape <= 1 else self.shape * self.scale / (self.shape - 1)

    def to_dict(self):
        return {"dist": "pareto", "shape": self.shape, "scale": self.scale}

    @classmethod
    def _from_params(cls, params, path):
        shape = _number(params, "shape", path, duration=False)
        scale = _number(params, "scale", path, duration=True)
        if shape <= 0:
            raise ScenarioError(f"{path}.shape", f"must be > 0, got {shape}")
        if scale <= 0:
            raise ScenarioError(f"{path}.scale", f"must be > 0, got {scale}")
        return cls(shape, scale)


@dataclass(frozen=True, slots=True)
class Mixture(Dist):
    """A weighted mixture; weights are relative (they need not sum to 1)."""

    weights: tuple[float, ...]
    components: tuple[Dist, ...]
    family: ClassVar[str] = "mixture"

    @property
    def probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=float)
        return w / w.sum()

    def sample(self, rng, size=None):
        p = self.probabilities
        if size is None:
            k = int(rng.choice(len(p), p=p))
            return float(self.components[k].sample(rng))
        which = rng.choice(len(p), size=size, p=p)
        out = np.empty(size)
        for k, comp in enumerate(self.components):
            mask = which == k
            n = int(mask.sum())
            if n:
                out[mask] = comp.sample(rng, n)
        return out

    @property
    def mean(self) -> float:
        return float(sum(p * c.mean for p, c in zip(self.probabilities, self.components)))

    def to_dict(self):
        return {
            "dist": "mixture",
            "components": [{"weight": w, **c.to_dict()} for w, c in zip(self.weights, self.components)],
        }

    @classmethod
    def _from_params(cls, params, path):
        comps = params.pop("components", None)
        if not isinstance(comps, list) or not comps:
            raise ScenarioError(f"{path}.components", "must be a non-empty list of {weight = ..., dist = ...} tables")
        weights: list[float] = []
        dists: list[Dist] = []
        for i, comp in enumerate(comps):
            cpath = f"{path}.components[{i}]"
            if not isinstance(comp, Mapping):
                raise ScenarioError(cpath, f"must be a table with 'weight' and 'dist', got {comp!r}")
            comp = dict(comp)
            w = _number(comp, "weight", cpath, duration=False)
            if w <= 0:
                raise ScenarioError(f"{cpath}.weight", f"must be > 0, got {w}")
            weights.append(w)
            dists.append(parse_dist(comp, cpath))
        return cls(tuple(weights), tuple(dists))


@dataclass(frozen=True, slots=True)
class Empirical(Dist):
    """Resamples the given observations uniformly (a bootstrap of measured values)."""

    samples: tuple[float, ...]
    family: ClassVar[str] = "empirical"

    @classmethod
    def from_samples(cls, values: Iterable[object], path: str = "samples") -> Empirical:
        """From measured values in ms (numbers or duration strings such as ``"3ms"``)."""
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise ScenarioError(path, f"must be a non-empty list of durations, got {type(values).__name__}")
        samples = tuple(parse_duration(v, f"{path}[{i}]") for i, v in enumerate(values))
        if not samples:
            raise ScenarioError(path, "must be a non-empty list of durations")
        return cls(samples)

    @classmethod
    def from_csv(cls, file: str | Path, column: str | None = None, unit: str = "ms", path: str = "") -> Empirical:
        """From one column of a CSV file with a header row (see the module docstring).

        ``column`` may be left out when the file has a single column; values
        are in ``unit`` (a time unit such as ``"ms"``, ``"us"``, ``"s"``).
        Blank, non-numeric, negative or non-finite values are errors naming
        their row: a measurement file should not be silently filtered.
        """
        fpath, cpath, upath = (f"{path}.{key}" if path else key for key in ("csv", "column", "unit"))
        if not isinstance(unit, str) or unit not in UNITS_MS:
            raise ScenarioError(upath, f"must be a time unit, one of {', '.join(UNITS_MS)}; got {unit!r}")
        rows = _read_csv(file, fpath)
        if not rows or not rows[0]:
            raise ScenarioError(fpath, f"{str(file)!r} is empty; expected a header row and one value per row")
        header = [h.strip() for h in rows[0]]
        if column is None:
            if len(header) != 1:
                raise ScenarioError(cpath, f"missing: {str(file)!r} has columns {', '.join(map(repr, header))}; "
                                           "name the one that holds the values")
            index = 0
        elif not isinstance(column, str) or column not in header:
            raise ScenarioError(cpath, f"no column {column!r} in {str(file)!r}; its columns are "
                                       f"{', '.join(map(repr, header))}")
        else:
            index = header.index(column)
        scale = UNITS_MS[unit]
        values: list[float] = []
        for line, row in enumerate(rows[1:], start=2):
            if not row:  # a blank line, e.g. the file's last
                continue
            cell = row[index].strip() if index < len(row) else ""
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value >= 0):
                raise ScenarioError(fpath, f"{str(file)!r} line {line}, column {header[index]!r}: expected a finite "
                                          f"number >= 0, got {cell!r}")
            values.append(value * scale)
        if not values:
            raise ScenarioError(fpath, f"{str(file)!r} has a header but no values")
        return cls(tuple(values))

    def sample(self, rng, size=None):
        arr = np.asarray(self.samples)
        if size is None:
            return float(arr[rng.integers(len(arr))])
        return arr[rng.integers(len(arr), size=size)]

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    def to_dict(self):
        return {"dist": "empirical", "samples": list(self.samples)}

    @classmethod
    def _from_params(cls, params, path):
        if "csv" in params:
            if "samples" in params:
                raise ScenarioError(f"{path}.samples", "give either 'samples' or 'csv', not both")
            file = params.pop("csv")
            if not isinstance(file, str) or not file:
                raise ScenarioError(f"{path}.csv", f"must be the path of a CSV file, got {file!r}")
            return cls.from_csv(file, params.pop("column", None), params.pop("unit", "ms"), path)
        for key in ("column", "unit"):
            if key in params:
                raise ScenarioError(f"{path}.{key}", "applies to a 'csv' file only; 'samples' take durations "
                                                     "such as '3ms'")
        if "samples" not in params:
            raise ScenarioError(f"{path}.samples", "missing: give 'samples' (a list of durations) or 'csv' "
                                                   "(a CSV file) and 'column'")
        return cls.from_samples(params.pop("samples"), f"{path}.samples")


def _read_csv(file: str | Path, path: str) -> list[list[str]]:
    try:
        with open(Path(file).expanduser(), newline="", encoding="utf-8") as fh:
            return list(csv.reader(fh))
    except FileNotFoundError:
        raise ScenarioError(path, f"file not found: {str(file)!r}") from None
    except IsADirectoryError:
        raise ScenarioError(path, f"{str(file)!r} is a folder, not a CSV file") from None
    except UnicodeDecodeError:
        raise ScenarioError(path, f"{str(file)!r} is not UTF-8 text") from None
    except (OSError, csv.Error) as exc:
        raise ScenarioError(path, f"cannot read {str(file)!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Shifted(Dist):
    """``base`` plus a constant ``offset`` ms: a fixed delay (a WAN link's propagation) on top of a variable one."""

    base: Dist
    offset: float
    family: ClassVar[str] = "shifted"

    def sample(self, rng, size=None):
        x = self.base.sample(rng, size)
        return float(x) + self.offset if size is None else np.asarray(x, dtype=float) + self.offset

    @property
    def mean(self) -> float:
        return self.base.mean + self.offset

    def to_dict(self):
        return {"dist": "shifted", "base": self.base.to_dict(), "offset": self.offset}

    @classmethod
    def _from_params(cls, params, path):
        if "base" not in params:
            raise ScenarioError(f"{path}.base", "missing: the distribution to shift, e.g. "
                                                "{dist = 'exponential', mean = '5ms'}")
        base = parse_dist(params.pop("base"), f"{path}.base")
        offset = _number(params, "offset", path, duration=True)
        return cls(base, offset)


def resolve_dist_files(data: Any, base: str | Path) -> Any:
    """Make the relative ``csv`` paths of empirical distributions in raw scenario data absolute.

    ``data`` is plain data as read from a TOML file in folder ``base``; any
    table ``{dist = "empirical", csv = "<relative path>"}`` at any depth gets
    ``base / path``. Returns ``data`` (changed in place).
    """
    if isinstance(data, dict):
        file = data.get("csv")
        if data.get("dist") == "empirical" and isinstance(file, str) and file:
            if not Path(file).expanduser().is_absolute():
                data["csv"] = str((Path(base) / file).resolve())
        for value in data.values():
            resolve_dist_files(value, base)
    elif isinstance(data, list):
        for value in data:
            resolve_dist_files(value, base)
    return data


DIST_FAMILIES: dict[str, type[Dist]] = {
    c.family: c for c in (Constant, Uniform, Exponential, LogNormal, Pareto, Mixture, Empirical, Shifted)
}


def parse_dist(value: object, path: str = "") -> Dist:
    """Build a distribution from its scenario form (see the module docstring)."""
    if isinstance(value, Dist):
        return value
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return Constant(parse_duration(value, path))
    if not isinstance(value, Mapping):
        raise ScenarioError(
            path,
            f"must be a duration or a table like {{dist = 'exponential', mean = '5ms'}}, got {type(value).__name__}",
        )
    params = dict(value)
    family = params.pop("dist", None)
    if not isinstance(family, str) or family not in DIST_FAMILIES:
        raise ScenarioError(
            f"{path}.dist", f"must be one of {', '.join(DIST_FAMILIES)}, got {family!r}"
        )
    dist = DIST_FAMILIES[family]._from_params(params, path)
    if params:
        raise ScenarioError(
            f"{path}.{sorted(params)[0]}", f"unknown parameter for a {family} distribution"
        )
    return dist


def buffered_sampler(dist: Dist, rng: np.random.Generator, block: int = 512) -> Callable[[], float]:
    """A zero-argument function returning one sample at a time, drawn in vectorised blocks.

    Constants skip the generator entirely. Deterministic for a given ``rng`` state.
    """
    if isinstance(dist, Constant):
        value = dist.value
        return lambda: value
    buf: list[float] = []

    def draw() -> float:
        if not buf:
            buf.extend(reversed(dist.sample(rng, block).tolist()))
        return buf.pop()

    return draw



def uniform_sampler(rng: np.random.Generator, block: int = 512) -> Callable[[], float]:
    """Uniform [0, 1) numbers one at a time, drawn from ``rng`` in vectorised blocks."""
    buf: list[float] = []

    def draw() -> float:
        if not buf:
            buf.extend(reversed(rng.random(block).tolist()))
        return buf.pop()

    return draw
