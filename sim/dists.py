"""Distributions of delays (latency, service, think time, fault durations).

Every distribution is a small frozen object with ``sample(rng, size=None)``
(a float, or an array of ``size`` floats) and a ``mean`` where it is known.
Values are milliseconds; parameters that are times accept duration strings.

In a scenario a distribution is written as a number or duration (a constant)
or as a table naming the family::

    latency = "2ms"                                    # constant
    latency = { dist = "exponential", mean = "5ms" }
    latency = { dist = "uniform", low = 1, high = 3 }
    latency = { dist = "lognormal", mu = 1.0, sigma = 0.5 }   # ln(ms)
    latency = { dist = "pareto", shape = 2.5, scale = "1ms" } # min value = scale
    latency = { dist = "mixture", components = [
                  { weight = 0.99, dist = "exponential", mean = 1 },
                  { weight = 0.01, dist = "constant", value = 100 } ] }
    latency = { dist = "empirical", samples = [1.2, 1.4, 3.0] }
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .errors import ScenarioError
from .units import parse_duration

__all__ = [
    "Dist",
    "Constant",
    "Uniform",
    "Exponential",
    "LogNormal",
    "Pareto",
    "Mixture",
    "Empirical",
    "parse_dist",
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
    mean_ms: float
    family: ClassVar[str] = "exponential"

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
        mean = _number(params, "mean", path, duration=True)
        if mean <= 0:
            raise ScenarioError(f"{path}.mean", f"must be > 0, got {mean}")
        return cls(mean)


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
        raw = params.pop("samples", None)
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ScenarioError(f"{path}.samples", "must be a non-empty list of durations")
        return cls(tuple(parse_duration(v, f"{path}.samples[{i}]") for i, v in enumerate(raw)))


DIST_FAMILIES: dict[str, type[Dist]] = {
    c.family: c for c in (Constant, Uniform, Exponential, LogNormal, Pareto, Mixture, Empirical)
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
