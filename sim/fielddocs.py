"""What a config accepts, read from the config classes themselves (so it cannot drift).

:func:`field_docs` walks a frozen config dataclass (a protocol's config, a section of
the scenario) and returns one :class:`FieldDoc` per field, nested tables and lists of
tables included with dotted paths (``publishers[].rate``): its type in the words a
TOML file uses, its default, what values it accepts and its one-line description.
``capsim protocols NAME`` prints them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from .config import to_plain
from .dists import Dist

__all__ = ["FieldDoc", "field_docs", "format_field_docs"]


@dataclass(frozen=True)
class FieldDoc:
    path: str
    type: str
    default: str
    accepts: str
    doc: str


def _is_table(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and not issubclass(tp, Dist) \
        and not hasattr(tp, "tag_key")


def _type_words(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        spec = typing.get_args(tp)[1]
        if getattr(spec, "allow_inf", False):
            return "duration (ms) or \"inf\""
        return "duration (ms), may be negative" if getattr(spec, "signed", False) else "duration (ms)"
    if origin is Literal:
        return "text"
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_words(a) for a in options)
    if origin is tuple:
        return f"list of {_type_words(typing.get_args(tp)[0])}s"
    if isinstance(tp, type) and issubclass(tp, Dist):
        return "distribution"
    if _is_table(tp) or hasattr(tp, "tag_key"):
        return "table"
    return {int: "integer", float: "number", bool: "true/false", str: "text"}.get(tp, getattr(tp, "__name__", str(tp)))


def _literals(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return list(typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return [v for a in typing.get_args(tp) for v in _literals(a)]
    return []


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def _default(f: dataclasses.Field[Any], tp: Any) -> str:
    """The default as it would be written in TOML (durations in ms)."""
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "required"
    factory = f.default_factory
    value = f.default if f.default is not dataclasses.MISSING else (factory() if callable(factory) else None)
    if value is None:
        return "unset"
    if isinstance(value, float) and math.isinf(value):
        return '"inf"'
    if _is_table(type(value)):
        return "(table)"
    text = _toml(to_plain(value))
    return f"{text} ms" if typing.get_origin(tp) is Annotated and isinstance(value, (int, float)) else text


def _table_of(tp: Any) -> tuple[Any, str] | None:
    """The config class inside ``tp`` and the path suffix: ``.`` for a table, ``[].`` for a list of them."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for a in typing.get_args(tp):
            found = _table_of(a)
            if found is not None:
                return found
        return None
    if origin is tuple:
        inner = _table_of(typing.get_args(tp)[0])
        return None if inner is None else (inner[0], "[].")
    return (tp, ".") if _is_table(tp) else None


def field_docs(cls: type, prefix: str = "") -> list[FieldDoc]:
    """One entry per field of the config class ``cls`` (and of the tables inside it)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        accepts = getattr(f.metadata.get("check"), "accepts", "")
        literals = _literals(tp)
        if literals:
            accepts = " | ".join(_toml(v) for v in literals)
        path = f"{prefix}{f.name}"
        out.append(FieldDoc(path, _type_words(tp), _default(f, tp), accepts, f.metadata.get("doc", "")))
        nested = _table_of(tp)
        if nested is not None and nested[0] is not cls:
            out += field_docs(nested[0], path + nested[1])
    return out


def format_field_docs(docs: list[FieldDoc]) -> str:
    """An aligned text table: field, type, default, accepted values and description."""
    rows = [("field", "type", "default", "accepts", "description")]
    rows += [(d.path, d.type, d.default, d.accepts, d.doc) for d in docs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]).rstrip() for r in rows)
