"""Checked exercises for the notebooks: ``check(name, answer)`` judges what the student did.

Each exercise is a judge function registered with :func:`exercise` in the module of
its chapter (``sim.exercises.ch1`` ... ``ch6``). A judge receives the student's
answer — a number, a word, a configuration, a fault schedule — and returns
:class:`Feedback`; it computes what it needs (closed forms, or by running the
student's configuration in the simulator) when it is called. No expected answer
is stored: there is nothing to look up, only :func:`question` texts.

``check`` prints the feedback and returns True or False. An unanswered exercise
(``answer = None``, the notebooks' starting value) says so instead of passing.
numpy scalars count as the Python numbers they hold.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import python_value

__all__ = ["check", "question", "names", "exercise", "Feedback", "CHAPTERS"]

#: chapter number -> the module that registers its exercises
CHAPTERS: dict[int, str] = {n: f"sim.exercises.ch{n}" for n in range(1, 7)}


Judge = Callable[[Any], "Feedback"]


@dataclass(frozen=True)
class Feedback:
    """A judge's verdict: ``ok`` and what to tell the student (why, or what to look at)."""

    ok: bool
    message: str


@dataclass(frozen=True)
class _Exercise:
    name: str
    chapter: int
    question: str
    judge: Judge


_registry: dict[str, _Exercise] = {}


def exercise(name: str, *, chapter: int, question: str) -> Callable[[Judge], Judge]:
    """Register ``judge(answer) -> Feedback`` as the exercise ``name`` of ``chapter``."""

    def register(judge: Judge) -> Judge:
        if name in _registry and _registry[name].judge.__qualname__ != judge.__qualname__:
            raise ValueError(f"exercise {name!r} is registered twice")
        _registry[name] = _Exercise(name, chapter, question, judge)
        return judge

    return register


def _load(chapter: int | None = None) -> None:
    for number, module in CHAPTERS.items():
        if chapter is None or number == chapter:
            importlib.import_module(module)


def _get(name: str) -> _Exercise:
    _load()
    if name not in _registry:
        raise KeyError(f"unknown exercise {name!r}; known: {', '.join(sorted(_registry))}")
    return _registry[name]


def names(chapter: int | None = None) -> list[str]:
    """The exercises (of one chapter), in the order they were registered."""
    _load(chapter)
    return [e.name for e in _registry.values() if chapter is None or e.chapter == chapter]


def question(name: str) -> str:
    return _get(name).question


def check(name: str, answer: Any = None) -> bool:
    """Judge ``answer`` to exercise ``name``; prints the feedback and returns whether it is right."""
    ex = _get(name)
    if answer is None or answer is Ellipsis:
        print(f"Not answered yet. {ex.question}\nSet `answer` in the cell and run it again.")
        return False
    feedback = ex.judge(python_value(answer))
    print(("Right. " if feedback.ok else "Not yet. ") + feedback.message)
    return feedback.ok
