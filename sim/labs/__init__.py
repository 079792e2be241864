"""Labs: the student writes a protocol's nodes and capsim grades them under faults.

Each lab is a skeleton in the repository's ``labs/`` folder (handlers marked
TODO), a section of ``labs/README.md`` and a grader here::

    import sim.labs
    report = sim.labs.grade("lab1", RegisterNode)        # or a .py path, or a module
    print(report)

or ``capsim lab grade lab1 labs/lab1_register.py``. See :mod:`sim.labs.core` for
how a grade is run, shrunk and drawn.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from . import core
from .core import Check, GradeReport, Lab, LabTest, SolutionError, TestOutcome

__all__ = ["grade", "get_lab", "lab_ids", "skeleton_path", "Lab", "LabTest", "Check", "GradeReport",
           "TestOutcome", "SolutionError", "LAB_MODULES", "labs_folder"]

#: lab id -> the module that defines it (and registers its protocol)
LAB_MODULES: dict[str, str] = {
    "register": "sim.labs.register",
    "leader": "sim.labs.leader",
    "consumer": "sim.labs.consumer",
    "saga": "sim.labs.saga",
    "commit": "sim.labs.commit",
    "gossip": "sim.labs.gossip",
}


def lab_ids() -> list[str]:
    return list(LAB_MODULES)


def get_lab(name: str) -> Lab:
    """The lab called ``name``: its id (``register``) or its number (``lab1``, ``1``)."""
    key = str(name).strip().lower()
    for module in LAB_MODULES.values():
        lab: Lab = importlib.import_module(module).LAB
        if key in (lab.id, f"lab{lab.number}", str(lab.number)):
            return lab
    known = ", ".join(f"lab{importlib.import_module(m).LAB.number} ({i})" for i, m in LAB_MODULES.items())
    raise SolutionError(f"unknown lab {name!r}; the labs are {known}")


def labs_folder() -> Path:
    """The ``labs/`` folder with the skeletons (next to the ``sim`` package in a source checkout)."""
    return Path(__file__).resolve().parent.parent.parent / "labs"


def skeleton_path(name: str) -> Path:
    return labs_folder() / get_lab(name).skeleton


def grade(lab: Lab | str, solution: Any, **options: Any) -> GradeReport:
    """Grade ``solution`` for ``lab`` (``"lab1"``, ``"register"`` or a :class:`Lab`).

    ``solution`` is the path of a ``.py`` file, a module, the class itself (labs with
    one class) or a dict of classes. Options (see :func:`sim.labs.core.grade`):
    ``seeds`` (50: seeds 1..50, or a list), ``out`` (folder for the diagrams and
    replay files of failing tests, default ``lab-reports/<lab>``), ``tests`` (names),
    ``show`` (draw failing diagrams inline; default: in Jupyter).
    """
    return core.grade(get_lab(lab) if isinstance(lab, str) else lab, solution, **options)
