"""docs/teaching.md and the exercise catalogue: the guide names what exists, every chapter has its exercises."""

from __future__ import annotations

import re
from pathlib import Path

from sim.exercises import CHAPTERS, names
from sim.labs import get_lab, lab_ids

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")


def test_every_chapter_has_at_least_two_checked_exercises_and_the_guide_names_them():
    for chapter in CHAPTERS:
        mine = names(chapter)
        assert len(mine) >= 2, f"chapter {chapter} has {mine}"
        for name in mine:
            assert f"`{name}`" in GUIDE, f"docs/teaching.md does not mention exercise {name}"


def test_the_guide_names_no_exercise_that_does_not_exist():
    known = set(names())
    prefixes = {name.split(".")[0] for name in known}
    cited = {c for c in re.findall(r"`([a-z]+\.[a-z_]+)`", GUIDE) if c.split(".")[0] in prefixes}
    assert cited, "the guide cites no exercise"
    assert cited - known == set()


def test_the_guide_describes_every_lab_and_its_tests():
    for lab_id in lab_ids():
        lab = get_lab(lab_id)
        assert f"### Lab {lab.number}:" in GUIDE
        section = GUIDE.split(f"### Lab {lab.number}:")[1].split("### ")[0]
        for test in lab.tests:
            assert f"`{test.name}`" in section, f"lab {lab.number}'s section does not name its test {test.name}"


def test_every_notebook_calls_each_of_its_chapters_exercises():
    for chapter in CHAPTERS:
        notebook = next((ROOT / "notebooks").glob(f"{chapter:02d}-*.ipynb")).read_text(encoding="utf-8")
        for name in names(chapter):
            assert f'check(\\"{name}\\"' in notebook, f"notebook {chapter} never checks {name}"
