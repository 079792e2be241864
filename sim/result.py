"""The result of one run: the resolved scenario, the seed, tables and a summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .checkers.verdict import load_verdict, save_verdict
from .scenario import Scenario

__all__ = ["Result"]

_TABLES = ("history", "timeline", "faults", "messages", "node_events", "trace", "divergence")


@dataclass
class Result:
    """What :func:`sim.run` returns; :meth:`save` / :meth:`load` round-trip it through a folder.

    ``scenario`` is the fully resolved scenario (every default filled in, the
    seed actually used), so a result explains itself. ``history`` has one row per
    client operation (empty for protocols whose nodes start their own work, such as
    messaging or sagas); ``tables`` holds the protocol's own tables (message events,
    sagas, transactions ...) and ``verdicts`` its checkers' results, e.g.
    ``result.verdicts["delivery"].ok``. ``world`` is the finished world when the run
    was asked to keep it (``sim.run(..., keep_world=True)``); it is never saved.
    """

    scenario: Scenario
    seed: int
    runtime: float
    history: pd.DataFrame
    timeline: pd.DataFrame
    faults: pd.DataFrame
    messages: pd.DataFrame
    node_events: pd.DataFrame
    summary: dict[str, Any]
    trace: pd.DataFrame | None = None
    divergence: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    verdicts: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    world: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        s = self.summary
        return (f"<Result {self.scenario.name!r} seed={self.seed} ops={s.get('ops')} "
                f"availability={s.get('availability', math.nan):.3f} runtime={self.runtime:.2f}s>")

    def save(self, folder: str | Path) -> Path:
        """Write scenario.toml, summary.json, meta.json and one CSV per table (protocol tables in tables/)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.toml").write_text(self.scenario.to_toml(), encoding="utf-8")
        (out / "summary.json").write_text(json.dumps(_jsonable(self.summary), indent=2) + "\n", encoding="utf-8")
        meta = {"seed": self.seed, "runtime": self.runtime, **self.meta}
        (out / "meta.json").write_text(json.dumps(_jsonable(meta), indent=2) + "\n", encoding="utf-8")
        for name in _TABLES:
            table = getattr(self, name)
            if table is None:
                continue
            if name == "history":
                table = table.assign(value=table["value"].map(json.dumps))
            if name == "divergence":
                table = table.assign(keys=table["keys"].map(lambda ks: json.dumps([_jsonable(k) for k in ks])))
            table.to_csv(out / f"{name}.csv", index=False)
        if self.tables:
            (out / "tables").mkdir(exist_ok=True)
            for name, table in self.tables.items():
                table.to_csv(out / "tables" / f"{name}.csv", index=False)
        if self.verdicts:
            (out / "verdicts").mkdir(exist_ok=True)
            shared = {id(t): f"tables/{n}.csv" for n, t in self.tables.items()}
            for name, verdict in self.verdicts.items():
                save_verdict(verdict, out / "verdicts", name, shared)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> Result:
        src = Path(folder)
        scenario = Scenario.from_toml(src / "scenario.toml")
        summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
        summary = {k: (math.nan if v is None else v) for k, v in summary.items()}
        meta = json.loads((src / "meta.json").read_text(encoding="utf-8"))
        tables: dict[str, Any] = {}
        for name in _TABLES:
            path = src / f"{name}.csv"
            if not path.exists():
                tables[name] = None
                continue
            if name == "history":
                df = pd.read_csv(path, dtype={"value": str, "error": object, "side": str, "client": str,
                                              "op": str, "node": str, "outcome": str},
                                 keep_default_na=False, na_values={"complete": ["", "NaN", "nan"]})
                df["value"] = pd.Series([json.loads(v) for v in df["value"]], dtype=object, index=df.index)
                df["error"] = pd.Series([None if e == "" else e for e in df["error"]], dtype=object, index=df.index)
                df["complete"] = df["complete"].astype(float)
                df["key"] = df["key"].astype(object)
                tables[name] = df
            elif name == "divergence":
                df = pd.read_csv(path)
                df["keys"] = pd.Series([json.loads(v) for v in df["keys"]], dtype=object, index=df.index)
                tables[name] = df
            else:
                tables[name] = pd.read_csv(path)
        tables["tables"] = {p.stem: _read_csv(p) for p in sorted((src / "tables").glob("*.csv"))}
        verdicts = {p.stem: load_verdict(src / "verdicts", p.stem) for p in sorted((src / "verdicts").glob("*.json"))}
        seed = int(meta.pop("seed"))
        runtime = float(meta.pop("runtime"))
        return cls(scenario=scenario, seed=seed, runtime=runtime, summary=summary, meta=meta, verdicts=verdicts,
                   **tables)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # a table with no columns at all
        return pd.DataFrame()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj
