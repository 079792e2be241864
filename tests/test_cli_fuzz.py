"""Whatever a user types ends in exit 0 or one line of error with exit 2: never a traceback, never a hang.

Random corruptions of a scenario file and of a sweep file (a line deleted or
repeated, a value replaced by junk, bytes that are not UTF-8, the file cut short)
and random command lines are fed to ``capsim``. The cost guard's limits are
lowered so that whatever valid run a corruption produces stays short: the guard,
not luck, is what keeps a corrupted file from running for hours.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.cost as cost
from sim.cli import main

SCENARIO = """\
name = "fuzz"
[cluster]
count = 3
[network]
latency = { dist = "exponential", mean = 1 }
loss = 0.01
[faults]
schedule = [{ kind = "partition", start = "300ms", end = "600ms", groups = [["n1"], ["n2", "n3"]] }]
[workload]
clients = 2
rate = 20
keys = 4
key_dist = "zipf"
timeout = "100ms"
[protocol]
name = "raft"
heartbeat = "20ms"
[run]
duration = "1s"
warmup = "100ms"
seed = 3
"""

SWEEP = """\
name = "fuzz-sweep"
replications = 2
seed = 1
metrics = ["availability", "latency.read.p99"]
[base]
cluster = { count = 3 }
workload = { clients = 2, rate = 20 }
protocol = { name = "single_copy" }
run = { duration = "500ms" }
[factors]
"network.loss" = [0.0, 0.1]
"workload.rate" = { start = 10, stop = 30, step = 10 }
[[plots]]
x = "network.loss"
y = "availability"
"""

PLAUSIBLE = ["0", "1", "2", "3", "5", "0.5", "0.05", "100", '"2s"', '"50ms"', '"300ms"', "true", "false"]
JUNK = ["-1", "1e309", "-1e309", "nan", "inf", "1e12", "1e-12", '"1ns"', '"1us"', '"abc"', '""', "[]", "{}",
        '"../../x"', '"/tmp/x"', "[[1]]", '{ dist = "nope" }', "99999999999999999999999", '"5 parsecs"', '"n9"',
        '"c0"', '"inf"', '["n1", "n1"]', "{ start = 0, stop = 1, num = 100000000 }"]

LITERAL = re.compile(r'"[^"]*"|-?\d+(?:\.\d+)?(?:e-?\d+)?|true|false')


@st.composite
def corrupted(draw, text: str) -> bytes:
    """``text`` with one to three corruptions."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 2))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["value"] * 6 + ["delete", "repeat", "garble", "extra-key"]))
        literals = list(LITERAL.finditer(lines[i]))
        if how == "value" and literals:  # one number, string or boolean of the line becomes another value
            m = literals[draw(st.integers(0, len(literals) - 1))]
            new = draw(st.sampled_from(PLAUSIBLE) | st.sampled_from(JUNK))
            lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
        elif how == "delete":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "garble":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(st.text(max_size=4)) + lines[i][j:]
        else:
            lines.insert(i + 1, f"zz_{draw(st.integers(0, 9))} = {draw(st.sampled_from(JUNK))}")
    data = ("\n".join(lines) + "\n").encode()
    ending = draw(st.sampled_from(["whole"] * 8 + ["cut", "bytes"]))
    if ending == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif ending == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


def _capsim(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse: --help, --version
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _check(args: list[str], code: int, out: str, err: str) -> None:
    assert "Traceback" not in err + out, (args, err)
    assert code in (0, 2), (args, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("capsim"), (args, err)
        assert ": error: " in lines[0], (args, err)


@pytest.fixture(scope="module")
def small_limits():
    """Limits low enough that any run a corruption produces takes a second or less."""
    saved = cost.MAX_EVENTS, cost.MAX_SWEEP_RUNS, cost.MAX_SWEEP_EVENTS
    cost.MAX_EVENTS, cost.MAX_SWEEP_RUNS, cost.MAX_SWEEP_EVENTS = 60_000, 12, 200_000
    yield
    cost.MAX_EVENTS, cost.MAX_SWEEP_RUNS, cost.MAX_SWEEP_EVENTS = saved


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=corrupted(SCENARIO), seed=st.sampled_from([[], ["--seed", "5"]]))
def test_corrupted_scenario_files(small_limits, folder, data, seed):
    """capsim run on a corrupted scenario file: it runs (exit 0) or says in one line what is wrong (exit 2)."""
    path = folder / "scenario.toml"
    path.write_bytes(data)
    args = ["run", str(path), *seed, "--out", str(folder / "out"), "--quiet"]
    _check(args, *_capsim(args))


@settings(FUZZ, max_examples=50)
@given(data=corrupted(SWEEP))
def test_corrupted_sweep_files(small_limits, folder, data):
    """capsim sweep on a corrupted sweep file: exit 0 or one line with exit 2, never a failed-run exit 1."""
    path = folder / "sweep.toml"
    path.write_bytes(data)
    args = ["sweep", str(path), "--executor", "serial", "--out", str(folder / "sweep-out"), "--quiet"]
    _check(args, *_capsim(args))


def _words(folder: Path) -> tuple[list[str], list[str]]:
    """Paths (good and bad) and option words with junk values, for random command lines."""
    scenario = folder / "ok.toml"
    if not scenario.exists():
        scenario.write_text(SCENARIO)
        (folder / "ok-sweep.toml").write_text(SWEEP)
        (folder / "a-file").write_text("x")
    paths = [str(scenario), str(scenario), str(folder / "ok-sweep.toml"), str(folder / "missing.toml"), str(folder),
             str(folder / "a-file"), str(folder / "a-file" / "sub"), "/dev/null", "/proc/capsim", "/", "", "raft",
             "nosuch"]
    words = ["--seed", "--out", "--trace", "--json", "--quiet", "--allow-large", "--workers", "--executor", "serial",
             "--csv", "-x", "--", "-1", "0", "7", "1e9", "99999999999999999999", "", "abc", "--help", "--version",
             str(folder / "cli-out"), str(folder / "a-file"), str(folder), "/proc/capsim", str(scenario)]
    return paths, words


@FUZZ
@given(command=st.sampled_from(["run", "run", "sweep", "protocols", "zap", None]), path=st.integers(0, 1000),
       rest=st.lists(st.integers(0, 1000), max_size=5))
def test_random_command_lines(small_limits, folder, command, path, rest):
    """Random command lines: a command (or none, or a wrong one), a path good or bad, capsim's own option words
    and junk values in any order."""
    paths, words = _words(folder)
    args = ([command] if command else []) + [paths[path % len(paths)]] + [words[i % len(words)] for i in rest]
    _check(args, *_capsim(args))
