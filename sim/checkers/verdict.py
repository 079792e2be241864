"""What every checker returns, and how results keep its verdict on disk.

A verdict is a dataclass with an ``ok`` property (did the run keep the guarantee?)
and its evidence: counts, an explanation, DataFrames. :func:`sim.run` stores the
protocol's verdicts in ``Result.verdicts``; :meth:`sim.Result.save` writes each as
``verdicts/<name>.json`` (the class and its scalar fields) plus one CSV per
DataFrame field under ``verdicts/<name>/``, and :meth:`sim.Result.load` rebuilds the
same class from them.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

__all__ = ["Verdict", "save_verdict", "load_verdict"]


@runtime_checkable
class Verdict(Protocol):
    """A checker's result: ``ok`` is the verdict; the other fields are its evidence."""

    @property
    def ok(self) -> bool: ...


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def save_verdict(verdict: Any, folder: Path, name: str, shared: dict[int, str] | None = None) -> list[Path]:
    """Write ``verdict`` (a dataclass) as ``<name>.json`` and ``<name>/<field>.csv``; returns the files.

    ``shared`` maps ``id(df)`` of DataFrames already saved elsewhere (a result's
    tables) to their path relative to ``folder``'s parent: such fields are stored as
    a reference instead of a second copy.
    """
    if not dataclasses.is_dataclass(verdict) or isinstance(verdict, type):
        raise TypeError(f"verdict {name!r} must be a dataclass instance, got {type(verdict).__name__}")
    cls = type(verdict)
    scalars: dict[str, Any] = {}
    tables: list[str] = []
    refs: dict[str, str] = {}
    written: list[Path] = []
    for f in dataclasses.fields(verdict):
        value = getattr(verdict, f.name)
        if isinstance(value, pd.DataFrame) and shared and id(value) in shared:
            refs[f.name] = shared[id(value)]
        elif isinstance(value, pd.DataFrame):
            (folder / name).mkdir(parents=True, exist_ok=True)
            path = folder / name / f"{f.name}.csv"
            value.to_csv(path, index=False)
            written.append(path)
            tables.append(f.name)
        else:
            scalars[f.name] = _plain(value)
    ok = getattr(verdict, "ok", None)
    if ok is None:
        raise TypeError(f"verdict {name!r} ({cls.__name__}) has no 'ok'")
    record = {"class": f"{cls.__module__}:{cls.__qualname__}", "ok": bool(ok), "fields": scalars,
              "tables": tables, "shared_tables": refs}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    written.append(path)
    return written


def load_verdict(folder: Path, name: str) -> Any:
    """Rebuild the verdict saved by :func:`save_verdict` (DataFrames come back from CSV)."""
    record = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    module, _, qualname = record["class"].partition(":")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    kwargs = dict(record["fields"])
    paths = {field: folder / name / f"{field}.csv" for field in record["tables"]}
    paths.update({field: folder.parent / rel for field, rel in record.get("shared_tables", {}).items()})
    for field, path in paths.items():
        try:
            kwargs[field] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            kwargs[field] = pd.DataFrame()
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kwargs.items() if k in names})
