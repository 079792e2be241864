"""What importing capsim costs and changes: nothing heavy on ``import sim``, no backend switching, a public API
whose names are what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sim

HEAVY = ("scipy", "matplotlib", "dask", "distributed", "pika")


def loaded_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_import_sim_loads_no_heavy_dependency():
    """``import sim`` loads none of scipy, matplotlib, dask, distributed or pika."""
    assert loaded_after("import sim") & set(HEAVY) == set()


def test_a_run_loads_no_plotting_statistics_cluster_or_broker_library():
    """A whole sim.run of a replicated scenario needs none of them either."""
    code = ("import sim\nsim.run(sim.Scenario.from_dict({'protocol': {'name': 'raft'}, "
            "'workload': {'clients': 2}, 'run': {'duration': 500}}))")
    assert loaded_after(code) & set(HEAVY) == set()


def test_the_check_above_sees_a_heavy_import():
    """loaded_after notices a heavy module when one is imported (a check that can fail)."""
    assert "scipy" in loaded_after("import sim.sweeps")


def test_importing_the_plots_keeps_the_chosen_backend():
    """sim.plots never switches matplotlib's backend (in Jupyter that would blank every inline figure)."""
    code = "import matplotlib\nmatplotlib.use('pdf')\nimport sim.plots, sim.demo\nprint(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "pdf"
    sources = (Path(sim.__file__).parent).rglob("*.py")
    assert [p.name for p in sources if "matplotlib.use(" in p.read_text(encoding="utf-8")] == []


def test_public_names():
    """sim.run and sim.sweep are the functions; every name in sim.__all__ resolves."""
    import sim.runner
    import sim.sweeps

    assert sim.run is sim.runner.run and sim.sweep is sim.sweeps.sweep and callable(sim.sweep)
    for name in sim.__all__:
        assert getattr(sim, name) is not None, name
