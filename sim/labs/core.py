"""The lab grader: run a student's protocol over seeded fault schedules and check it.

A :class:`Lab` names the classes a student writes (each a subclass of a base the
lab provides), the protocol that runs them, and its :class:`LabTest` s. A test
turns a seed into a complete scenario (the lab's nemesis draws an explicit fault
schedule from the seed, so the scenario alone reproduces the run) and checks the
finished :class:`~sim.result.Result` with the lab's checkers.

:func:`grade` runs every test over ``seeds`` schedules. The first failing seed of
a test is kept: its fault schedule is shrunk (faults are removed one at a time
while the same test still fails with the same seed), the shrunk run is replayed
with the network trace on and its failing window drawn as a space-time diagram
(PNG and SVG), and the scenario is written as a TOML file that ``capsim run``
replays. A student's exception, or a handler that does not return (an infinite
loop, or messages that never let simulated time advance) within
``run_seconds`` of wall-clock time, is a failed test with the traceback of the
student's own code; the grader itself carries on.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from ..errors import CapsimError, ScenarioError
from ..kernel.node import Node

__all__ = [
    "Lab",
    "LabNode",
    "LabTest",
    "Check",
    "TestOutcome",
    "GradeReport",
    "HandlerTimeout",
    "SolutionError",
    "grade",
    "register_solution",
    "solution_classes",
    "solution_key",
    "lab_rng",
    "random_faults",
    "describe_fault",
    "student_traceback",
    "wall_clock_limit",
]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


class SolutionError(CapsimError):
    """A solution that cannot be graded at all: missing file, import error, missing class."""


class HandlerTimeout(BaseException):
    """Raised inside a run that took longer than its wall-clock limit.

    A ``BaseException`` so that a student's ``except Exception`` does not swallow it.
    """


@dataclass(frozen=True)
class Check:
    """One checker's verdict on one run: ``ok``, a one-line ``message``, the evidence.

    ``evidence`` is the counter-example (a DataFrame or text); ``window`` the
    (start, end) in ms worth drawing; ``ops`` the client operations whose
    requests and replies the diagram draws in bold.
    """

    ok: bool
    message: str
    evidence: Any = None
    window: tuple[float, float] | None = None
    ops: tuple[int, ...] = ()
    mark: tuple[str, float, str] | None = None
    """(node, time, label): a point the diagram marks, e.g. where a handler raised."""
    highlight: tuple[str, ...] = ()
    """Text that the messages to draw in bold contain (in their repr), e.g. ``"saga-17"``."""


@dataclass(frozen=True)
class LabTest:
    """A property the solution must have under the lab's nemesis.

    ``scenario(seed, solution)`` returns a scenario dict with an explicit fault
    schedule; ``check(result)`` judges the run.
    """

    name: str
    goal: str
    scenario: Callable[[int, str], dict[str, Any]]
    check: Callable[[Any], Check]


@dataclass(frozen=True)
class Lab:
    """A lab: what the student writes (``classes``: name -> base class) and how it is graded."""

    id: str
    number: int
    title: str
    protocol: str
    classes: Mapping[str, type]
    tests: tuple[LabTest, ...]
    skeleton: str
    run_seconds: float = 10.0

    @property
    def aliases(self) -> tuple[str, str]:
        return (self.id, f"lab{self.number}")


class LabNode(Node):
    """Base of the classes students write: a crash loses everything but ``self.disk``.

    As a real process loses its memory: every attribute the solution set (in
    ``__init__``, ``boot`` or a handler) is gone after a crash, and ``boot()`` runs
    again at recovery. A lab's base class calls :meth:`seal` at the end of its
    ``__init__``: the attributes set until then are the framework's and survive.
    """

    _kept: frozenset[str] = frozenset()

    def seal(self) -> None:
        """Mark the attributes set so far as the framework's own (kept across crashes)."""
        self._kept = frozenset(vars(self)) | {"_kept"}

    def crash(self, clean: bool = False, *, power_loss: bool = True) -> None:
        if not self.alive:
            return
        super().crash(clean, power_loss=power_loss)
        for attr in [a for a in vars(self) if a not in self._kept]:
            delattr(self, attr)


# -- where a solution's classes come from ---------------------------------------------------
_SOLUTIONS: dict[str, dict[str, type]] = {}
_counter = itertools.count(1)


def register_solution(lab: Lab, classes: Mapping[str, type]) -> str:
    """Keep in-process classes (e.g. defined in a notebook) under a key the lab's config can name."""
    key = f"session:{lab.id}:{next(_counter)}"
    _SOLUTIONS[key] = dict(classes)
    return key


def _load_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"capsim_lab_solution_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SolutionError(f"{str(path)!r} is not a Python file capsim can import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # a student's file may raise anything while it is imported
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise SolutionError(f"importing {path.name} failed:\n{student_traceback(exc)}") from None
    return module


def _classes_from_module(lab: Lab, module: Any, where: str) -> dict[str, type]:
    out: dict[str, type] = {}
    for name, base in lab.classes.items():
        cls = getattr(module, name, None)
        if cls is None:
            raise SolutionError(f"{where} defines no class {name} (a subclass of "
                                f"{base.__module__}.{base.__qualname__}); {lab.id} needs "
                                f"{', '.join(lab.classes)}")
        out[name] = cls
    return _checked(lab, out)


def _checked(lab: Lab, classes: Mapping[str, type]) -> dict[str, type]:
    out = {}
    for name, base in lab.classes.items():
        cls = classes.get(name)
        if cls is None:
            raise SolutionError(f"{lab.id} needs classes {', '.join(lab.classes)}; {name} is missing")
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise SolutionError(f"{name} must be a class deriving from {base.__module__}.{base.__qualname__}, "
                                f"got {cls!r}")
        out[name] = cls
    return out


def solution_key(lab: Lab, solution: Any) -> str:
    """The key under which ``solution`` (a path, module, class or dict of classes) is found by the lab's config."""
    if isinstance(solution, (str, os.PathLike)):
        path = Path(solution).expanduser()
        if not path.exists():
            raise SolutionError(f"solution {str(solution)!r} does not exist")
        if path.is_dir():
            raise SolutionError(f"solution {str(solution)!r} is a folder; give the .py file")
        key = str(path.resolve())
        _SOLUTIONS[key] = _classes_from_module(lab, _load_file(path.resolve()), path.name)
        return key
    if isinstance(solution, ModuleType):
        return register_solution(lab, _classes_from_module(lab, solution, f"module {solution.__name__}"))
    if isinstance(solution, type):
        if len(lab.classes) != 1:
            raise SolutionError(f"{lab.id} needs {len(lab.classes)} classes ({', '.join(lab.classes)}): "
                                f"pass a dict of them or the module that defines them")
        return register_solution(lab, _checked(lab, {next(iter(lab.classes)): solution}))
    if isinstance(solution, Mapping):
        return register_solution(lab, _checked(lab, solution))
    raise SolutionError(f"a solution is a .py path, a module, a class or a dict of classes, got {solution!r}")


def solution_classes(lab: Lab, key: str, path: str = "protocol.solution") -> dict[str, type]:
    """The classes registered under ``key``; a path not seen yet is imported (replayed scenarios)."""
    classes = _SOLUTIONS.get(key)
    if classes is not None:
        return classes
    if key.startswith("session:"):
        raise ScenarioError(path, f"{key!r} names classes defined in another Python session; grade the "
                                  f"solution again here, or save it to a .py file and name that file")
    file = Path(key)
    if not file.is_file():
        raise ScenarioError(path, f"must be the path of the solution's .py file, got {key!r} (no such file)")
    try:
        return _SOLUTIONS.setdefault(key, _classes_from_module(lab, _load_file(file.resolve()), file.name))
    except SolutionError as exc:
        raise ScenarioError(path, str(exc)) from None


# -- running students' code safely ----------------------------------------------------------
@contextlib.contextmanager
def wall_clock_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`HandlerTimeout` in this thread after ``seconds`` (main thread, POSIX only), and again
    every 0.1 s until the block is left.

    The repeats matter: a signal handler's exception raised while Python runs a finalizer
    (``__del__``, a weakref callback, during a garbage collection that a long loop triggers)
    is printed and dropped, and a one-shot alarm lost that way would let a looping handler
    hang the grader.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise HandlerTimeout(f"the run did not finish within {seconds:g} s of wall-clock time: a handler "
                             f"loops forever, or messages/timers keep simulated time from advancing")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _is_framework(filename: str) -> bool:
    return filename.startswith((_PACKAGE_DIR, "<frozen")) or "site-packages" in filename or "/lib/python" in filename


def student_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` cut down to the frames of the student's code (all frames if none are)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not _is_framework(f.filename)]
    lines = traceback.format_list(own or frames[-6:])
    return "Traceback (the solution's frames):\n" + "".join(lines) + "".join(
        traceback.format_exception_only(type(exc), exc))


# -- nemesis helpers (labs build their schedules with these) ---------------------------------
def lab_rng(lab_id: str, test: str, seed: int) -> np.random.Generator:
    """The random generator a test's nemesis draws seed ``seed``'s fault schedule from."""
    words = [int.from_bytes(hashlib.sha256(f"{lab_id}/{test}".encode()).digest()[:4], "big"), seed]
    return np.random.default_rng(words)


def random_faults(rng: np.random.Generator, nodes: Sequence[str], *, start: float, end: float,
                  partitions: int = 0, crashes: int = 0, loss: float = 0.0, duplicate: float = 0.0,
                  slow_nodes: int = 0, slow_ms: float = 60.0, max_down: int | None = None,
                  length: tuple[float, float] = (200.0, 1000.0),
                  majority_partitions: bool = True) -> list[dict[str, Any]]:
    """An explicit fault schedule drawn from ``rng``: windows inside [start, end) ms.

    ``partitions`` partitions (a random minority cut off, or random halves when
    ``majority_partitions`` is false), ``crashes`` crash/recover pairs (at most
    ``max_down`` nodes down at once; default a minority), a loss window and a
    duplication window with the given probabilities over a random part of the run,
    and ``slow_nodes`` windows in which everything a random node sends takes an
    extra exponential delay of mean ``slow_ms`` (its updates then reach some
    replicas well before others: the windows in which partial updates are visible).
    """
    n = len(nodes)
    max_down = (n - 1) // 2 if max_down is None else max_down
    out: list[dict[str, Any]] = []

    def window() -> tuple[float, float]:
        span = float(rng.uniform(*length))
        t0 = float(rng.uniform(start, max(start, end - span)))
        return round(t0, 1), round(min(t0 + span, end), 1)

    for _ in range(partitions):
        t0, t1 = window()
        k = max(1, (n - 1) // 2) if majority_partitions else max(1, n // 2)
        group = sorted(rng.choice(n, size=k, replace=False).tolist())
        out.append({"kind": "partition", "start": t0, "end": t1, "groups": [[nodes[i] for i in group]]})
    downs: list[tuple[float, float]] = []
    for _ in range(crashes):
        t0, t1 = window()
        overlapping = sum(1 for a, b in downs if a < t1 and t0 < b)
        if overlapping >= max_down:
            continue
        downs.append((t0, t1))
        out.append({"kind": "crash", "start": t0, "end": t1, "node": nodes[int(rng.integers(n))]})
    for _ in range(slow_nodes):
        t0, t1 = window()
        out.append({"kind": "latency_spike", "start": t0, "end": t1, "src": nodes[int(rng.integers(n))],
                    "extra": {"dist": "exponential", "mean": slow_ms}})
    if loss:
        t0, t1 = window()
        out.append({"kind": "loss", "start": t0, "end": t1, "probability": loss})
    if duplicate:
        t0, t1 = window()
        out.append({"kind": "duplicate", "start": t0, "end": t1, "probability": duplicate})
    out.sort(key=lambda f: (f["start"], f["kind"]))
    return out


def describe_fault(f: Mapping[str, Any]) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("kind", "start", "end"))
    return f"{f['kind']} {f['start']:g}-{f['end']:g} ms" + (f" ({rest})" if rest else "")


# -- grading ----------------------------------------------------------------------------------
@dataclass
class TestOutcome:
    """How one test went: passed, or the first failing seed with everything needed to see why."""

    test: str
    goal: str
    runs: int
    passed: bool
    seed: int | None = None
    message: str = ""
    error: str | None = None
    evidence: Any = None
    scenario: dict[str, Any] | None = None
    faults_before: int | None = None
    shrunk: bool | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def faults(self) -> list[dict[str, Any]]:
        return list((self.scenario or {}).get("faults", {}).get("schedule", []))


@dataclass
class GradeReport:
    lab: str
    title: str
    solution: str
    seeds: list[int]
    tests: list[TestOutcome]
    elapsed: float = 0.0

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tests)

    @property
    def score(self) -> str:
        return f"{sum(t.passed for t in self.tests)}/{len(self.tests)}"

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        seeds = (f"seeds {self.seeds[0]}-{self.seeds[-1]}" if len(self.seeds) > 1 else f"seed {self.seeds[0]}")
        out = [f"{self.lab}: {self.title}", f"solution: {self.solution}  ({len(self.seeds)} fault schedules, {seeds})"]
        for t in self.tests:
            if t.passed:
                out.append(f"  PASS  {t.test:<24} {t.runs} of {t.runs} schedules")
                continue
            out.append(f"  FAIL  {t.test:<24} seed {t.seed}: {t.message}")
            out.append(f"        goal: {t.goal}")
            if t.error:
                out += ["        " + line for line in t.error.rstrip().splitlines()]
            if t.faults_before is not None:
                kept = t.faults
                how = "shrunk" if t.shrunk else "partly shrunk"
                out.append(f"        fault schedule ({how}: {len(kept)} of {t.faults_before} faults still fail):")
                none = ["          (none: it fails with no fault at all)"]
                out += [f"          {describe_fault(f)}" for f in kept] or none
            if t.evidence is not None and not t.error:
                text = t.evidence.to_string(max_rows=12) if hasattr(t.evidence, "to_string") else str(t.evidence)
                out.append("        counter-example:")
                out += ["          " + line for line in text.splitlines()[:16]]
            for kind, path in t.files.items():
                out.append(f"        {kind}: {path}")
        out.append(f"score {self.score} ({self.elapsed:.1f} s)")
        return out

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _with_faults(scenario: dict[str, Any], faults: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(scenario)
    out["faults"] = {**scenario.get("faults", {}), "schedule": faults}
    return out


class _Runner:
    def __init__(self, lab: Lab, test: LabTest, run_seconds: float) -> None:
        self.lab, self.test, self.run_seconds = lab, test, run_seconds

    def run(self, scenario: dict[str, Any], *, trace: bool = False) -> tuple[Check | None, str | None, Any]:
        """(check, error, result): ``error`` is the student's traceback when the run itself failed.

        When the run failed and ``trace`` is on, ``result`` is what happened up to the
        failure (its message trace and node events) and the check's window ends there.
        """
        import pandas as pd

        from ..cost import check_cost
        from ..runner import _collect, build_world
        from ..scenario import Scenario

        if trace:
            scenario = {**scenario, "run": {**scenario.get("run", {}), "trace": True}}
        sc = Scenario.from_dict(scenario)
        check_cost(sc)
        world = None
        try:
            with wall_clock_limit(self.run_seconds):
                world = build_world(sc)
                world.run()
                sc.protocol.finish(world, world.state)
                result = _collect(world, 0.0, False)
        except (KeyboardInterrupt, SystemExit, ScenarioError):
            raise
        except BaseException as exc:  # the student's handler raised or looped
            partial = None
            if trace and world is not None:
                rows = world.network.trace_rows()
                partial = SimpleNamespace(
                    scenario=sc, node_events=pd.DataFrame(world.node_events, columns=["time", "node", "event"]),
                    trace=pd.DataFrame(rows, columns=["id", "src", "dst", "type", "send", "deliver", "dropped",
                                                      "message"]))
                label = f"{type(exc).__name__} here"
                failure = Check(False, "", window=(max(0.0, world.now - 60.0), world.now + 1.0),
                                mark=(_raising_node(exc, world.nodes), world.now, label))
                return failure, student_traceback(exc), partial
            return None, student_traceback(exc), None
        try:
            return self.test.check(result), None, result
        except Exception as exc:  # e.g. a reply value the checker cannot compare: the run is not judgeable
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return Check(False, f"the checker could not judge this run ({detail}): look at what the "
                                f"solution replied or recorded", evidence=traceback.format_exc(limit=-3)), None, result

    def fails(self, scenario: dict[str, Any], error_kind: bool) -> bool:
        check, error, _ = self.run(scenario)
        return (error is not None) if error_kind else (error is None and check is not None and not check.ok)


def _raising_node(exc: BaseException, nodes: Mapping[str, Any]) -> str:
    """The node whose handler was running when ``exc`` was raised ('' if none was)."""
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        for name, node in nodes.items():
            if owner is node:
                found = name
        tb = tb.tb_next
    return found


def _shrink(runner: _Runner, scenario: dict[str, Any], error_kind: bool, budget: float) -> tuple[dict[str, Any], bool]:
    """Remove faults one at a time while the test still fails; (scenario, finished)."""
    deadline = time.perf_counter() + budget
    faults = list(scenario.get("faults", {}).get("schedule", []))
    i = 0
    while i < len(faults):
        if time.perf_counter() > deadline:
            return _with_faults(scenario, faults), False
        trial = faults[:i] + faults[i + 1:]
        if runner.fails(_with_faults(scenario, trial), error_kind):
            faults = trial
        else:
            i += 1
    return _with_faults(scenario, faults), True


def _window(check: Check | None, scenario: dict[str, Any]) -> tuple[float, float]:
    if check is not None and check.window is not None:
        return check.window
    faults = scenario.get("faults", {}).get("schedule", [])
    if faults:
        t0 = min(f["start"] for f in faults)
        return max(0.0, t0 - 100.0), t0 + 400.0
    return 0.0, min(500.0, float(scenario.get("run", {}).get("duration", 500.0)))


def _draw(result: Any, check: Check | None, scenario: dict[str, Any], stem: Path, title: str,
          show: bool) -> dict[str, str]:
    import matplotlib.pyplot as plt

    from ..plots import lamport_diagram

    start, end = _window(check, scenario)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(result.scenario.nodes) + 3), 7))
    lamport_diagram(result, start, end, ax=ax, title=title, max_messages=250,
                    highlight_ops=() if check is None else check.ops,
                    highlight=() if check is None else check.highlight)
    if check is not None and check.mark is not None:
        node, at, label = check.mark
        names = [tick.get_text() for tick in ax.get_xticklabels()]
        if node in names:
            ax.plot([names.index(node)], [at], marker="*", color="red", ms=16, zorder=5)
            ax.annotate(label, (names.index(node), at), xytext=(8, 0), textcoords="offset points", color="red",
                        fontsize=9, fontweight="bold", va="center")
        ax.axhline(at, color="red", lw=0.8, ls="--", zorder=0)
    files = {}
    for ext in ("png", "svg"):
        path = stem.with_suffix("." + ext)
        fig.savefig(path, dpi=110 if ext == "png" else None, bbox_inches="tight")
        files[f"diagram ({ext})"] = str(path)
    if show:
        from IPython.display import display

        display(fig)
    plt.close(fig)
    return files


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def grade(lab: Lab, solution: Any, *, seeds: int | Sequence[int] = 50, out: str | Path | None = None,
          tests: Sequence[str] | None = None, show: bool | None = None, shrink_seconds: float = 20.0,
          run_seconds: float | None = None, quiet: bool = True) -> GradeReport:
    """Grade ``solution`` for ``lab`` (see the module docstring); returns a :class:`GradeReport`.

    ``solution``: the path of a ``.py`` file, a module, the class itself (labs with
    one class) or a dict of classes. ``seeds``: how many schedules (seeds 1..n) or
    which seeds. ``out``: folder for the diagrams and replay scenarios of failing
    tests (default ``lab-reports/<lab>``). ``show``: display failing diagrams
    inline (default: when running in Jupyter).
    """
    seed_list = list(range(1, int(seeds) + 1)) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must name at least one seed")
    bad = [s for s in seed_list if not 0 <= s < 2**63]
    if bad:
        raise ValueError(f"seeds must be in [0, 2**63), got {bad[0]}")
    chosen = lab.tests if tests is None else tuple(_pick(lab, tests))
    key = solution_key(lab, solution)
    label = key if not key.startswith("session:") else _describe(solution)
    out_dir = Path(out) if out is not None else Path("lab-reports") / lab.id
    show = _in_notebook() if show is None else show
    started = time.perf_counter()
    outcomes = []
    for test in chosen:
        runner = _Runner(lab, test, lab.run_seconds if run_seconds is None else run_seconds)
        outcome = TestOutcome(test.name, test.goal, runs=0, passed=True)
        for seed in seed_list:
            scenario = test.scenario(seed, key)
            check, error, _ = runner.run(scenario)
            outcome.runs += 1
            if error is None and check is not None and check.ok:
                continue
            outcome = _failure(runner, lab, test, seed, scenario, check, error, out_dir, shrink_seconds,
                               outcome.runs, show)
            break
        outcomes.append(outcome)
        if not quiet:
            print(("PASS " if outcome.passed else "FAIL ") + test.name, flush=True)
    return GradeReport(lab.id, lab.title, label, seed_list, outcomes, time.perf_counter() - started)


def _describe(solution: Any) -> str:
    if isinstance(solution, type):
        return f"class {solution.__qualname__}"
    if isinstance(solution, ModuleType):
        return f"module {solution.__name__}"
    if isinstance(solution, Mapping):
        return ", ".join(f"{k}={getattr(v, '__qualname__', v)}" for k, v in solution.items())
    return repr(solution)


def _pick(lab: Lab, names: Sequence[str]) -> Iterator[LabTest]:
    by_name = {t.name: t for t in lab.tests}
    for name in names:
        if name not in by_name:
            raise ValueError(f"{lab.id} has no test {name!r}; its tests: {', '.join(by_name)}")
        yield by_name[name]


def _failure(runner: _Runner, lab: Lab, test: LabTest, seed: int, scenario: dict[str, Any], check: Check | None,
             error: str | None, out_dir: Path, shrink_seconds: float, runs: int, show: bool) -> TestOutcome:
    error_kind = error is not None
    before = len(scenario.get("faults", {}).get("schedule", []))
    small, finished = _shrink(runner, scenario, error_kind, shrink_seconds)
    check2, error2, result = runner.run(small, trace=True)
    if error_kind:
        message = "the solution raised an exception or did not return" if error2 is None else \
            error2.strip().splitlines()[-1]
        check_shown, error_shown = check2 if error2 is not None else None, error2 or error
    else:
        check_shown = check2 if (check2 is not None and not check2.ok) else check
        assert check_shown is not None
        message, error_shown = check_shown.message, None
    outcome = TestOutcome(test.name, test.goal, runs=runs, passed=False, seed=seed, message=message,
                          error=error_shown,
                          evidence=None if check_shown is None or error_kind else check_shown.evidence,
                          scenario=small, faults_before=before, shrunk=finished)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{test.name}-seed{seed}"
    outcome.files["replay"] = _write_replay(small, stem.with_suffix(".toml"))
    if result is not None and result.trace is not None:
        title = f"{lab.id} · {test.name} · seed {seed}"
        outcome.files.update(_draw(result, check_shown, small, stem, title, show))
    return outcome


def _write_replay(scenario: dict[str, Any], path: Path) -> str:
    from ..scenario import Scenario

    text = Scenario.from_dict(scenario).to_toml()
    head = ("# Replays a failing lab run: capsim run " + path.name + "\n"
            "# (protocol.solution names the solution file; a notebook's classes cannot be named here)\n")
    path.write_text(head + text, encoding="utf-8")
    return str(path)
