"""Typed, frozen config objects built from plain dicts, with field-path errors.

A config class is a frozen dataclass whose field annotations say what a value
may be; :func:`build` walks a dict against those annotations, converts
durations and distributions, rejects unknown keys and wrong types, runs the
range checks attached to fields, and reports any problem as a
:class:`~sim.errors.ScenarioError` naming the dotted field path.
:func:`to_plain` is the inverse (a dict of TOML-friendly values).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union

import numpy as np

from .dists import Dist, parse_dist
from .errors import ScenarioError
from .units import parse_duration

__all__ = [
    "check_node_names",
    "Duration",
    "MaybeInfDuration",
    "SignedDuration",
    "build",
    "to_plain",
    "python_value",
    "fld",
    "prob",
    "positive",
    "nonneg",
    "at_least",
]


class _Dur:
    def __init__(self, *, allow_inf: bool = False, signed: bool = False) -> None:
        self.allow_inf = allow_inf
        self.signed = signed


Duration = Annotated[float, _Dur()]
"""Milliseconds; accepts numbers or strings with units."""
MaybeInfDuration = Annotated[float, _Dur(allow_inf=True)]
"""Like :data:`Duration`, and also ``"inf"`` (never)."""
SignedDuration = Annotated[float, _Dur(signed=True)]
"""A duration that may be negative (a clock offset)."""

Check = Callable[[Any], str | None]


class _Bound:
    """A range check that can also say what it accepts (for ``capsim protocols NAME``)."""

    def __init__(self, accepts: str, ok: Callable[[float], bool]) -> None:
        self.accepts = accepts
        self._ok = ok

    def __call__(self, x: float) -> str | None:
        return None if self._ok(x) else f"must be {self.accepts}, got {x!r}"


prob = _Bound("in [0, 1]", lambda x: 0.0 <= x <= 1.0)
positive = _Bound("> 0", lambda x: x > 0)
nonneg = _Bound(">= 0", lambda x: x >= 0)


def at_least(lo: float) -> Check:
    return _Bound(f">= {lo}", lambda x: x >= lo)


def fld(default: Any = dataclasses.MISSING, *, check: Check | None = None, doc: str = "",
        missing: str = "", every: Literal["node", "run"] | None = None) -> Any:
    """A dataclass field with an optional range check and a one-line description.

    ``missing`` is what the error says when a required field is left out (default:
    "missing required key"). ``every`` marks a duration as an interval at which
    each node (``"node"``) or the run (``"run"``) does some work, so that
    :mod:`sim.cost` counts it when it estimates a run.
    """
    meta = {"check": check, "doc": doc, "missing": missing}
    if every is not None:
        meta["every"] = every
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for defaults of frozen configs")
    return dataclasses.field(default=default, metadata=meta)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        _HINTS[cls] = hints
    return hints


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return "duration"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return "list"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "table"
    if isinstance(tp, type) and issubclass(tp, Dist):
        return "distribution"
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert one raw value to the annotated type ``tp`` or raise ScenarioError."""
    value = python_value(value)
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _convert_annotated(tp, value, path)
    if origin is Literal:
        return _convert_literal(tp, value, path)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, path)
    if origin is tuple:
        return _convert_tuple(tp, value, path)
    if tp is Any:
        return value
    if tp is bool:
        return _convert_bool(value, path)
    if tp is int:
        return _convert_int(value, path)
    if tp is float:
        return _convert_float(value, path)
    if tp is str:
        return _convert_str(value, path)
    if isinstance(tp, type) and issubclass(tp, Dist):
        return parse_dist(value, path)
    if isinstance(tp, type) and hasattr(tp, "from_plain"):
        return tp.from_plain(value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    raise TypeError(f"config field type {tp!r} is not supported")  # a programming error


def _convert_annotated(tp: Any, value: Any, path: str) -> Any:
    """A duration (ms, from a number or a string with units; a signed one may be negative), else the base type."""
    base, *extras = typing.get_args(tp)
    spec = next((e for e in extras if isinstance(e, _Dur)), None)
    if spec is None:
        return convert(base, value, path)
    if spec.signed and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return -parse_duration(-value, path)
    if spec.signed and isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:], path)
    return parse_duration(value, path, allow_inf=spec.allow_inf)


def _convert_literal(tp: Any, value: Any, path: str) -> Any:
    """One of the literal's values, of the same type (``True`` is not ``1``)."""
    allowed = typing.get_args(tp)
    if isinstance(value, bool) or value not in allowed or type(value) is not type(allowed[0]):
        raise ScenarioError(path, f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _convert_union(tp: Any, value: Any, path: str) -> Any:
    """``None`` if the union allows it, else the first option that converts (an option's own error if only one)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:
        return convert(options[0], value, path)
    for option in options:
        try:
            return convert(option, value, path)
        except ScenarioError:
            continue
    raise ScenarioError(path, f"must be {_type_name(tp)}, got {value!r}")


def _convert_tuple(tp: Any, value: Any, path: str) -> tuple[Any, ...]:
    """A TOML list as a tuple: ``tuple[X, ...]`` of any length, or one item per listed type."""
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ScenarioError(path, f"must be a list, got {type(value).__name__} {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ScenarioError(path, f"must be a list of {len(args)} items, got {len(value)}")
    return tuple(convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _convert_bool(value: Any, path: str) -> bool:
    """``true`` or ``false`` only: 0 and 1 are not booleans."""
    if not isinstance(value, bool):
        raise ScenarioError(path, f"must be true or false, got {value!r}")
    return value


def _convert_int(value: Any, path: str) -> int:
    """An integer; a float with an exact integer value (below 2**53) is accepted, a bool is not."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise ScenarioError(path, f"must be an integer, got {type(value).__name__} {value!r}")
    return value


def _convert_float(value: Any, path: str) -> float:
    """A finite number (an int is accepted, a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(path, f"must be a number, got {type(value).__name__} {value!r}")
    try:
        x = float(value)
    except OverflowError:
        raise ScenarioError(path, f"number out of range: {value!r}") from None
    if not math.isfinite(x):
        raise ScenarioError(path, f"must be a finite number, got {value!r}")
    return x


def _convert_str(value: Any, path: str) -> str:
    """A string, as given."""
    if not isinstance(value, str):
        raise ScenarioError(path, f"must be a string, got {type(value).__name__} {value!r}")
    return value


def build(cls: type, data: Any, path: str = "") -> Any:
    """Build the frozen config ``cls`` from a mapping, validating every field."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ScenarioError(path or "<scenario>", f"must be a table, got {type(data).__name__} {data!r}")
    data = dict(data)
    if hasattr(cls, "_preprocess"):
        data = cls._preprocess(data, path)
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    for key in data:
        if key not in names:
            accepted = ", ".join([f.name for f in fields] + list(getattr(cls, "_extra_keys", ())))
            raise ScenarioError(_join(path, str(key)), f"unknown key; accepted keys: {accepted}")
    kwargs: dict[str, Any] = {}
    for f in fields:
        fpath = _join(path, f.name)
        if f.name in data:
            value = convert(hints[f.name], data[f.name], fpath)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ScenarioError(fpath, f.metadata.get("missing") or "missing required key")
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ScenarioError(fpath, problem)
        kwargs[f.name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "_validate"):
        obj._validate(path)
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def python_value(value: Any) -> Any:
    """A numpy scalar or array as the Python value or list it holds (``np.int64(3)`` -> ``3``); else ``value``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def to_plain(obj: Any) -> Any:
    """The dict/list/scalar form of a config object (``None`` fields are left out)."""
    if hasattr(obj, "to_plain"):
        return obj.to_plain()
    if isinstance(obj, Dist):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            if value is None:
                continue
            out[f.name] = to_plain(value)
        return out
    obj = python_value(obj)
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isinf(obj):
        return "inf"
    return obj


def check_node_names(nodes: Sequence[str], path: str) -> None:
    """At least one node; each a non-empty name of letters, digits, '-' or '_'; no name twice (errors name ``path``)."""
    if not nodes:
        raise ScenarioError(path, "must name at least one node")
    seen: set[str] = set()
    for i, name in enumerate(nodes):
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ScenarioError(f"{path}[{i}]",
                                f"must be a non-empty name of letters, digits, '-' or '_', got {name!r}")
        if name in seen:
            raise ScenarioError(f"{path}[{i}]", f"duplicate node name {name!r}")
        seen.add(name)
