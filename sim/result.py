"""The result of one run: the resolved scenario, the seed, tables and a summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .checkers.verdict import load_verdict, save_verdict
from .outdir import MANIFEST, FolderError, Staging, check_out, read_manifest, staged
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
        """Write the result as a folder, whole or not at all; returns the folder.

        The folder holds scenario.toml, summary.json, meta.json, one CSV per table
        (the protocol's own tables in tables/, the checkers' verdicts in verdicts/)
        and manifest.json listing every file with its size, checksum and row count.
        It is written into a temporary sibling and renamed into place, so an earlier
        result there is replaced only by a complete new one (no stale files are
        left). A folder holding files capsim did not write is refused.
        """
        target = check_out(folder, kind="result", field="folder")
        with staged(target, "result") as stage:
            self._write(stage)
        return target

    def _write(self, stage: Staging) -> None:
        out = stage.path
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
            stage.table(f"{name}.csv", table)
        for name, table in self.tables.items():
            stage.table(f"tables/{name}.csv", table)
        if self.verdicts:
            (out / "verdicts").mkdir(exist_ok=True)
            shared = {id(t): f"tables/{n}.csv" for n, t in self.tables.items()}
            for name, verdict in self.verdicts.items():
                save_verdict(verdict, out / "verdicts", name, shared)

    @classmethod
    def load(cls, folder: str | Path) -> Result:
        """Read a folder written by :meth:`save`.

        Only the files its manifest.json lists are read, after checking their sizes
        and checksums; a folder without a manifest, or with a file missing,
        truncated or changed, raises :class:`~sim.outdir.FolderError` saying which.
        """
        src = Path(folder)
        listed = set(read_manifest(src, "result")["files"])
        for required in ("scenario.toml", "summary.json", "meta.json", "history.csv"):
            if required not in listed:
                raise FolderError(f"{str(src)!r} is damaged: {MANIFEST} does not list {required}")
        try:
            return cls._read(src, listed)
        except (ValueError, KeyError, TypeError) as exc:  # the manifest matched but the content does not parse
            raise FolderError(f"{str(src)!r} could not be read: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _read(cls, src: Path, listed: set[str]) -> Result:
        scenario = Scenario.from_toml(src / "scenario.toml")
        summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
        summary = {k: (math.nan if v is None else v) for k, v in summary.items()}
        meta = json.loads((src / "meta.json").read_text(encoding="utf-8"))
        tables: dict[str, Any] = {}
        for name in _TABLES:
            path = src / f"{name}.csv"
            if f"{name}.csv" not in listed:
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
                tables[name] = _read_csv(path)
        tables["tables"] = {rel[len("tables/"):-len(".csv")]: _read_csv(src / rel) for rel in sorted(listed)
                            if rel.startswith("tables/") and rel.endswith(".csv") and rel.count("/") == 1}
        verdict_names = sorted(rel[len("verdicts/"):-len(".json")] for rel in listed
                               if rel.startswith("verdicts/") and rel.endswith(".json") and rel.count("/") == 1)
        verdicts = {name: load_verdict(src / "verdicts", name) for name in verdict_names}
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
