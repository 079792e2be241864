"""docs/protocols.md: its example protocol runs as written, from Python, from a file, and through capsim run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "protocols.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)


def test_guide_python_blocks_run_in_order():
    """Every ```python block of the guide executes, in order, sharing names (definition, run, harness)."""
    blocks = python_blocks()
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        # compiled as a script would be, not under this file's __future__ flags
        exec(compile(block, str(GUIDE), "exec", dont_inherit=True), namespace)
    result = namespace["result"]
    assert result.scenario.protocol.tag == "rowa_register"
    assert result.summary["protocol.writes_acknowledged_by_all"] > 0


def test_guide_protocol_from_a_file_runs_through_capsim_run(tmp_path):
    """The guide's protocol saved next to a scenario file runs with `capsim run` (protocol.module = "rowa.py")
    and prints its own report line; a saved result loads with the module's absolute path."""
    (tmp_path / "rowa.py").write_text(python_blocks()[0], encoding="utf-8")
    (tmp_path / "scenario.toml").write_text(
        '[cluster]\ncount = 3\n[workload]\nclients = 3\nrate = 20\n'
        '[protocol]\nname = "rowa_register"\nmodule = "rowa.py"\n[run]\nduration = "2s"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["capsim", "run", str(tmp_path / "scenario.toml"), "--out", str(tmp_path / "out")],
                          cwd=elsewhere, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "read-one/write-all" in proc.stdout and "writes acknowledged by all" in proc.stdout
    saved = (tmp_path / "out" / "scenario.toml").read_text(encoding="utf-8")
    assert f'module = "{(tmp_path / "rowa.py").resolve()}"' in saved
