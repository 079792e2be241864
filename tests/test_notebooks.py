"""Every teaching notebook runs top to bottom in a Jupyter kernel and shows its figures inline.

A cell that draws (creates a figure, plots, or calls one of capsim's plotting
functions) must leave an ``image/png`` output: a figure that only went to a file,
or a backend switched away from inline, shows the student nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
DRAWS = re.compile(r"plt\.subplots\(|plt\.show\(|\.plot(\.\w+)?\(|\.figure\(\)|\b(availability_timeline|latency_cdf|"
                   r"lamport_diagram|t_visibility_curves|divergence_timeline|metric_vs_factor|plot_timeline|"
                   r"plot_blocking|shade_faults)\(")


def draws(source: str) -> bool:
    """Whether a cell's code (imports, definitions' headers and comments aside) draws a figure."""
    code = [ln for ln in source.splitlines()
            if not re.match(r"\s*(import |from \S+ import |def |#)", ln)]
    return any(DRAWS.search(ln) for ln in code)


def test_the_figure_detector_tells_drawing_cells_apart():
    """The rule above recognises drawing code and ignores imports (a check on the check)."""
    assert draws("fig, ax = plt.subplots()\nax.plot([1], [2])")
    assert draws("table.plot.bar(figsize=(8, 3))")
    assert draws("plot_timeline(run, title='x')\nplt.show()")
    assert not draws("import matplotlib.pyplot as plt\nfrom sim.plots import latency_cdf")
    assert not draws("r = sim.run(s)\nr.summary['availability']")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_every_figure(path):
    """The notebook executes without error and each drawing cell shows at least one PNG."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    drawing = [c for c in nb.cells if c.cell_type == "code" and draws(c.source)]
    assert drawing, "a chapter without a single figure"
    blank = [c.source.splitlines()[0] for c in drawing
             if not any("image/png" in out.get("data", {}) for out in c.outputs)]
    assert blank == [], f"cells that drew nothing visible: {blank}"
