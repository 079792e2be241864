"""Output folders: checked before the work, written whole or not at all, described by a manifest.

Every folder capsim writes (a run's result, the demo, a sweep, a validation)
holds a ``manifest.json``::

    {"capsim": "0.4.0", "kind": "result",
     "files": {"history.csv": {"bytes": 51234, "sha256": "9f...", "rows": 812}, ...}}

:func:`check_out` runs before any work, so a bad ``--out`` costs nothing: it
refuses an empty path, a path that is a file or lies under one, a folder that
cannot be written, a folder holding the input files, and a non-empty folder that
capsim did not write (it would be replaced). :func:`staged` writes into a
temporary sibling and renames it into place, so a folder is either the earlier
one or the new one, never a mixture with stale files; a run killed while saving
leaves the earlier folder (and a hidden ``.<name>.*.partial`` sibling that the
next save removes). :func:`read_manifest` checks a folder against its manifest
and says what is wrong with a damaged one; readers open only the files listed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CapsimError, ScenarioError
from .version import capsim_version

__all__ = ["MANIFEST", "FolderError", "Staging", "check_out", "staged", "read_manifest", "write_manifest",
           "describe_files", "wrote", "claim", "staged_into"]

MANIFEST = "manifest.json"
KINDS = ("result", "demo", "sweep", "validation", "search")


class FolderError(CapsimError):
    """A folder that should hold capsim output is missing, foreign or damaged."""


def check_out(path: str | Path, *, kind: str, inputs: Iterable[str | Path] = (), field: str = "--out") -> Path:
    """Check that ``path`` can take a ``kind`` output folder, before any work is done.

    Raises :class:`~sim.errors.ScenarioError` naming ``field``. A folder that does
    not exist yet, an empty one, and one capsim wrote for the same kind are
    accepted (the last is replaced when the new output is complete).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if str(path).strip() == "":
        raise ScenarioError(field, "must name a folder, got an empty path")
    target = Path(path).expanduser()
    absolute = Path(os.path.abspath(target))
    if absolute == Path(absolute.anchor):
        raise ScenarioError(field, f"cannot be the file system root {str(absolute)!r}")
    if target.exists() and not target.is_dir():
        raise ScenarioError(field, f"{str(target)!r} is a file, not a folder")
    existing = absolute
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ScenarioError(field, f"{str(target)!r} lies under the file {str(existing)!r}")
    for given in inputs:
        source = Path(os.path.abspath(Path(given).expanduser()))
        if source == absolute or absolute in source.parents:
            raise ScenarioError(field, f"{str(target)!r} holds the input {str(given)!r}, which writing the "
                                       "output there would replace; choose another folder")
    if absolute.exists():
        entries = sorted(p.name for p in absolute.iterdir() if not _is_partial(p.name))
        if entries:
            manifest = absolute / MANIFEST
            if not manifest.is_file():
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                raise ScenarioError(field, f"{str(target)!r} already holds files capsim did not write ({shown}); "
                                           "choose a new or empty folder")
            found = _manifest_kind(manifest)
            if found != kind:
                raise ScenarioError(field, f"{str(target)!r} holds a capsim {found or 'folder of unknown kind'}, "
                                           f"not a {kind}; choose another folder")
    _check_writable(existing, field, target)
    return target


def _check_writable(folder: Path, field: str, target: Path) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".capsim-probe-", dir=folder)
    except OSError as exc:
        raise ScenarioError(field, f"cannot write {str(target)!r}: {exc.strerror or exc} "
                                   f"(in {str(folder)!r})") from None
    os.rmdir(probe)


def _manifest_kind(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def _is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(".partial")


@dataclass
class Staging:
    """A folder being written: ``path`` is the temporary folder; ``rows`` records table lengths."""

    path: Path
    kind: str
    rows: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self, relpath: str, frame: Any) -> Path:
        """Write a DataFrame as CSV at ``relpath`` and record its row count."""
        out = self.path / relpath
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
        self.rows[relpath] = len(frame)
        return out


@contextmanager
def staged(target: str | Path, kind: str) -> Iterator[Staging]:
    """Write a whole ``kind`` folder at ``target``: into a temporary sibling, then renamed into place.

    On an exception nothing at ``target`` changes and the temporary folder is
    removed. The earlier folder at ``target`` (if any) is replaced only once the
    new one is complete and has its manifest.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        stage = Staging(tmp, kind)
        yield stage
        write_manifest(tmp, kind, rows=stage.rows, extra=stage.extra)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in target.parent.glob(f".{target.name}.*.partial"):  # from a save that was killed
            shutil.rmtree(leftover, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def describe_files(folder: Path, rows: dict[str, int] | None = None, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Every file under ``folder`` (but the manifest and ``skip`` folders): bytes, sha256 and rows when known."""
    rows = rows or {}
    skipped = tuple(f"{s.rstrip('/')}/" for s in skip)
    files: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or rel.startswith(skipped) or any(_is_partial(part) for part in rel.split("/")):
            continue
        entry: dict[str, Any] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        if rel in rows:
            entry["rows"] = rows[rel]
        files[rel] = entry
    return files


def write_manifest(folder: Path, kind: str, *, rows: dict[str, int] | None = None,
                   extra: dict[str, Any] | None = None, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Describe every file in ``folder`` in its ``manifest.json`` (written last, atomically)."""
    manifest = {"capsim": capsim_version(), "kind": kind, **(extra or {}),
                "files": describe_files(folder, rows, skip)}
    _write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: str | Path, kind: str, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of a ``kind`` folder, after checking every listed file's size and checksum.

    Raises :class:`FolderError` saying what is wrong: no such folder, no
    manifest (not written by capsim, or its save was interrupted), another kind
    of folder, or a file missing, truncated or changed since it was written.
    """
    src = Path(folder)
    if not src.is_dir():
        raise FolderError(f"{str(src)!r} is not a folder" if src.exists() else f"no folder {str(src)!r}")
    path = src / MANIFEST
    if not path.is_file():
        raise FolderError(f"{str(src)!r} has no {MANIFEST}: it was not written by capsim, or writing it "
                          "was interrupted")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FolderError(f"{str(path)!r} is damaged: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise FolderError(f"{str(path)!r} is damaged: it lists no files")
    if manifest.get("kind") != kind:
        raise FolderError(f"{str(src)!r} holds a capsim {manifest.get('kind')!r} folder, not a {kind}")
    if verify:
        for rel, entry in manifest["files"].items():
            _verify(src, rel, entry)
    return manifest


def _verify(src: Path, rel: str, entry: Any) -> None:
    path = src / rel
    if not path.is_file():
        raise FolderError(f"{str(src)!r} is damaged: {rel} is listed in {MANIFEST} but missing")
    size = path.stat().st_size
    if isinstance(entry, dict) and size != entry.get("bytes"):
        raise FolderError(f"{str(src)!r} is damaged: {rel} has {size} bytes, {MANIFEST} says {entry.get('bytes')} "
                          "(truncated or changed after it was written)")
    if isinstance(entry, dict) and _sha256(path) != entry.get("sha256"):
        raise FolderError(f"{str(src)!r} is damaged: {rel} was changed after it was written (checksum differs)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wrote(folder: str | Path, kind: str) -> str:
    """``wrote FOLDER/: every file its manifest lists`` (the line the CLI prints after saving).

    A subfolder with a manifest of its own (the demo's runs/eventual/) is shown as
    one entry with its number of files.
    """
    files = list(read_manifest(folder, kind, verify=False)["files"])
    nested = sorted({f.rsplit("/", 1)[0] for f in files if f.endswith("/" + MANIFEST)})
    shown: list[str] = []
    for name in files:
        owner = next((n for n in nested if name.startswith(n + "/")), None)
        if owner is None:
            shown.append(name)
        elif name == f"{owner}/{MANIFEST}":
            count = sum(f.startswith(owner + "/") for f in files)
            shown.append(f"{owner}/ ({count} files)")
    return f"wrote {Path(folder)}/: {', '.join([*shown, MANIFEST])}"


def claim(folder: str | Path, kind: str) -> Path:
    """Create ``folder`` for work that outlives one process (a sweep's cache) and mark it as capsim's.

    The folder gets a manifest listing no files yet (unless it has one), so a run
    that is killed leaves a folder that the next run accepts and resumes.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    if not (target / MANIFEST).is_file():
        _write_json(target / MANIFEST, {"capsim": capsim_version(), "kind": kind, "files": {}})
    return target


@contextmanager
def staged_into(folder: str | Path, kind: str, *, keep: Iterable[str] = ()) -> Iterator[Staging]:
    """Replace the output files of a folder that also holds ``keep`` subfolders (a sweep's cache/).

    New files are written into a temporary subfolder, then each is renamed into
    place; files the previous manifest listed that are not written again are
    removed; the manifest is written last. While files move, the manifest lists
    none, so a kill at that moment leaves a folder that reads as incomplete.
    """
    target = claim(folder, kind)
    tmp = Path(tempfile.mkdtemp(prefix=".outputs.", suffix=".partial", dir=target))
    try:
        stage = Staging(tmp, kind)
        yield stage
        previous = read_manifest(target, kind, verify=False)["files"]
        _write_json(target / MANIFEST, {"capsim": capsim_version(), "kind": kind, "files": {}})
        new = describe_files(tmp, stage.rows)
        for rel in new:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, target / rel)
        for rel in set(previous) - set(new):
            (target / rel).unlink(missing_ok=True)
        write_manifest(target, kind, rows=stage.rows, extra=stage.extra, skip=keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
