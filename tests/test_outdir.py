"""Output folders: a bad --out is refused before any work, folders are written whole, loading trusts the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import main
from sim.outdir import MANIFEST, FolderError, check_out, read_manifest, staged
from sim.result import Result

ROOT = Path(__file__).resolve().parents[1]
SAGA = ROOT / "experiments" / "scenarios" / "saga-orders.toml"
SMALL = sim.Scenario.from_dict({"cluster": {"count": 3}, "workload": {"clients": 2, "rate": 20},
                                "protocol": {"name": "single_copy"}, "run": {"duration": "1s", "seed": 1}})


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the run: no summary was printed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsim: error: --out: "), captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_bad_out_is_refused_before_the_run(tmp_path, capsys):
    """A file, a path under a file, an empty path, an unwritable place, a folder of someone else's files and the
    folder holding the input scenario are each refused with one line and exit 2, before anything runs."""
    afile = tmp_path / "notes.txt"
    afile.write_text("mine\n")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    scenario = inputs / "scenario.toml"
    scenario.write_text("# my comments\n" + SAGA.read_text())
    cases = [(afile, "is a file"), (afile / "sub", "lies under the file"), ("", "empty path"),
             ("/proc/capsim-out", "cannot write"), (foreign, "capsim did not write"), (inputs, "holds the input")]
    for out, needle in cases:
        assert main(["run", str(scenario), "--out", str(out)]) == 2
        _one_line_error(capsys, needle)
    assert scenario.read_text().startswith("# my comments")  # the input is untouched
    assert afile.read_text() == "mine\n" and [p.name for p in foreign.iterdir()] == ["cat.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "notes.txt", "photos"]  # nothing was written


def test_out_of_another_kind_is_refused(tmp_path, capsys):
    """A result folder is not replaced by a demo, nor a demo's folder by a result."""
    folder = SMALL.variant(run__duration="500ms")
    sim.run(folder).save(tmp_path / "r")
    assert main(["demo", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "holds a capsim result, not a demo")
    with staged(tmp_path / "d", "demo") as stage:
        (stage.path / "comparison.csv").write_text("a\n1\n")
    assert main(["run", str(SAGA), "--out", str(tmp_path / "d")]) == 2
    _one_line_error(capsys, "holds a capsim demo, not a result")


def test_reused_folder_keeps_no_stale_files(tmp_path, capsys):
    """Saving a run without a trace over one with a trace leaves no trace.csv; the 'wrote' line lists every file
    the manifest lists, and the manifest lists every file in the folder with its size, checksum and rows."""
    out = tmp_path / "run"
    traced = tmp_path / "traced.toml"
    traced.write_text(SMALL.variant(run__trace=True).to_toml())
    plain = tmp_path / "plain.toml"
    plain.write_text(SMALL.to_toml())
    assert main(["run", str(traced), "--out", str(out)]) == 0
    assert (out / "trace.csv").exists()
    capsys.readouterr()
    assert main(["run", str(plain), "--out", str(out)]) == 0
    wrote = capsys.readouterr().out.strip().splitlines()[-1]
    assert not (out / "trace.csv").exists()
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "result" and sorted([*manifest["files"], MANIFEST]) == on_disk
    assert wrote.startswith(f"wrote {out}/: ") and sorted(wrote.split(": ", 1)[1].split(", ")) == on_disk
    history = pd.read_csv(out / "history.csv")
    assert manifest["files"]["history.csv"]["rows"] == len(history) > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_load_trusts_only_the_manifest(tmp_path):
    """A file the manifest does not list is not read; a truncated, changed or missing listed file, and a folder
    without a manifest, are refused with a message naming what is wrong."""
    out = sim.run(SMALL).save(tmp_path / "r")
    assert not (out / "trace.csv").exists()
    pd.DataFrame({"x": [1]}).to_csv(out / "trace.csv", index=False)  # stale, not listed
    (out / "tables").mkdir(exist_ok=True)
    pd.DataFrame({"x": [1]}).to_csv(out / "tables" / "old.csv", index=False)
    back = Result.load(out)
    assert back.trace is None and "old" not in back.tables
    history = out / "history.csv"
    text = history.read_bytes()
    history.write_bytes(text[: len(text) // 2])  # as a kill during a plain write would leave it
    with pytest.raises(FolderError, match=r"history\.csv has \d+ bytes, manifest\.json says \d+"):
        Result.load(out)
    history.write_bytes(text.replace(b"ok", b"ko", 1))
    with pytest.raises(FolderError, match=r"history\.csv was changed"):
        Result.load(out)
    history.unlink()
    with pytest.raises(FolderError, match=r"history\.csv is listed in manifest\.json but missing"):
        Result.load(out)
    (out / MANIFEST).unlink()
    with pytest.raises(FolderError, match="has no manifest.json"):
        Result.load(out)
    with pytest.raises(FolderError, match="no folder"):
        Result.load(tmp_path / "nothing")


def test_a_save_that_fails_leaves_the_earlier_folder(tmp_path, monkeypatch):
    """An error part-way through a save (as a full disk would raise) leaves the earlier result whole and no
    temporary folder behind."""
    first = sim.run(SMALL)
    out = first.save(tmp_path / "r")
    before = read_manifest(out, "result")
    second = sim.run(SMALL, seed=2)
    real = pd.DataFrame.to_csv
    calls = []

    def failing(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing)
    with pytest.raises(OSError, match="No space left"):
        second.save(out)
    monkeypatch.undo()
    assert read_manifest(out, "result") == before and Result.load(out).seed == first.seed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_killed_save_leaves_a_loadable_folder(tmp_path):
    """kill -9 during a save leaves either the earlier result or the new one, complete; the next save clears the
    temporary sibling the killed one left."""
    out = tmp_path / "r"
    sim.run(SMALL).save(out)
    code = (f"import sim, os, pandas as pd\n"
            f"r = sim.run(sim.Scenario.from_toml({str(tmp_path / 's.toml')!r}))\n"
            f"real = pd.DataFrame.to_csv\n"
            f"def stop(self, *a, **k):\n    real(self, *a, **k)\n    os.kill(os.getpid(), 9)\n"
            f"pd.DataFrame.to_csv = stop\n"
            f"r.save({str(out)!r})\n")
    (tmp_path / "s.toml").write_text(SMALL.variant(run__seed=7).to_toml())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert Result.load(out).seed == 1  # the earlier result, whole
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1
    sim.run(SMALL, seed=3).save(out)
    assert Result.load(out).seed == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_check_out_accepts_new_empty_and_own_folders(tmp_path):
    """A folder that does not exist yet (even several levels down), an empty one, and one capsim wrote for the
    same kind are accepted; checking writes nothing."""
    assert check_out(tmp_path / "a" / "b" / "c", kind="result") == tmp_path / "a" / "b" / "c"
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", kind="demo")
    own = sim.run(SMALL).save(tmp_path / "own")
    check_out(own, kind="result")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "own"]


def test_demo_writes_a_manifest_listing_its_runs(tmp_path, capsys):
    """capsim demo writes its figures, table and one result folder per protocol, all in one manifest."""
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    wrote = capsys.readouterr().out.strip().splitlines()[-1]
    files = read_manifest(tmp_path / "d", "demo")["files"]
    assert "comparison.csv" in files and "availability.png" in files
    runs = sorted({f.split("/")[1] for f in files if f.startswith("runs/")})
    assert len(runs) == 4
    for name in runs:
        assert f"runs/{name}/ (" in wrote
        Result.load(tmp_path / "d" / "runs" / name)
