"""Protocols from outside the package: defined in this test file, loaded from a module path, or found
through the ``capsim.protocols`` entry-point group; run from Python and from ``capsim run``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

import sim
from sim.config import fld, positive
from sim.errors import ScenarioError
from sim.kernel.messages import ClientReply, ClientRequest
from sim.kernel.node import Host, Node
from sim.protocol import ProtocolConfig, register_protocol
from sim.report import line, pairs

THIS_FILE = Path(__file__).resolve()


class TallyState:
    """Per-run state: how many requests each node served."""

    def __init__(self) -> None:
        self.served: dict[str, int] = {}


class TallyNode(Node):
    """Answers every request from a local store after ``delay`` ms, counting them in the run's state."""

    def __init__(self, world: Host, name: str, cfg: TallyConfig, state: TallyState) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.state = state

    def boot(self) -> None:
        self.data: dict[int, Any] = {}

    def handle_ClientRequest(self, msg: ClientRequest, src: str) -> None:
        self.set_timer(self.cfg.delay, self._answer, msg, src)

    def _answer(self, msg: ClientRequest, src: str) -> None:
        self.state.served[self.name] = self.state.served.get(self.name, 0) + 1
        if msg.op == "write":
            self.data[msg.key] = msg.value
            self.send(src, ClientReply(msg.op_id, True))
        else:
            self.send(src, ClientReply(msg.op_id, True, self.data.get(msg.key)))


@register_protocol
@dataclass(frozen=True, kw_only=True)
class TallyConfig(ProtocolConfig[TallyState]):
    """A local store per node that counts what it served (a protocol defined in a test file)."""

    tag: ClassVar[str] = "test_tally"
    delay: float = fld(2.0, check=positive)

    def new_state(self, world: Host) -> TallyState:
        return TallyState()

    def build_nodes(self, world: Host, state: TallyState) -> dict[str, Node]:
        return {name: TallyNode(world, name, self, state) for name in world.scenario.nodes}

    def summary(self, world: Any, state: TallyState) -> dict[str, Any]:
        return {"protocol.served": sum(state.served.values())}

    def report(self, result: Any) -> list[str]:
        return [line("tally", pairs([("served", result.summary["protocol.served"])]))]


def tally(**protocol: Any) -> dict[str, Any]:
    return {"cluster": {"count": 3}, "workload": {"clients": 3, "rate": 50},
            "protocol": {"name": "test_tally", **protocol}, "run": {"duration": "1s", "seed": 4}}


def capsim(*args: str, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(["capsim", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_a_protocol_defined_in_a_test_file_runs_from_python():
    """sim.run runs the protocol registered above: its state, summary hook and latency are what it says."""
    result = sim.run(sim.Scenario.from_dict(tally(delay=3.0)))
    s = result.summary
    assert s["protocol.served"] == s["ok"] > 0 and s["availability"] == 1.0
    assert s["latency.read.p50"] == pytest.approx(3.0 + 2 * 1.0)  # the delay plus two 1 ms hops


def test_the_same_protocol_runs_through_capsim_run_from_its_file(tmp_path):
    """capsim run imports this test file (protocol.module) and prints the protocol's own report line."""
    scenario = tmp_path / "tally.toml"
    scenario.write_text(textwrap.dedent(f"""\
        [cluster]
        count = 3
        [workload]
        clients = 3
        rate = 50
        [protocol]
        name = "test_tally"
        module = "{THIS_FILE}"
        [run]
        duration = "1s"
        seed = 4
        """), encoding="utf-8")
    proc = capsim("run", str(scenario), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    served = sim.run(sim.Scenario.from_dict(tally())).summary["protocol.served"]
    assert line("tally", pairs([("served", served)])) in proc.stdout


def test_an_installed_distribution_provides_a_protocol_through_its_entry_point(tmp_path):
    """A package with a capsim.protocols entry point is found by name alone, from capsim run."""
    site = tmp_path / "site"
    (site / "extpkg").mkdir(parents=True)
    (site / "extpkg" / "__init__.py").write_text(THIS_FILE.read_text(encoding="utf-8").replace(
        '"test_tally"', '"ext_tally"'), encoding="utf-8")
    dist = site / "extpkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extpkg\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[capsim.protocols]\next_tally = extpkg\n", encoding="utf-8")
    scenario = tmp_path / "ext.toml"
    scenario.write_text('[cluster]\ncount = 2\n[workload]\nclients = 2\n[protocol]\nname = "ext_tally"\n'
                        '[run]\nduration = "1s"\n', encoding="utf-8")
    proc = capsim("run", str(scenario), cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0, proc.stderr
    assert "tally" in proc.stdout and "served" in proc.stdout
    # a broken entry point is named in the error for an unknown protocol, in one line, exit 2
    (dist / "entry_points.txt").write_text("[capsim.protocols]\nbroken = extpkg_missing\n", encoding="utf-8")
    proc = capsim("run", str(scenario), cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "protocol.name" in proc.stderr and "entry point broken = extpkg_missing" in proc.stderr


@pytest.mark.parametrize("module, message", [
    ("no_such_module_anywhere", "no module named 'no_such_module_anywhere'"),
    ("./missing/file.py", "no such file"),
    (42, "must be a module name or a .py path"),
])
def test_bad_protocol_modules_name_the_field(module, message):
    """A module that cannot be found is a ScenarioError naming protocol.module and saying why."""
    with pytest.raises(ScenarioError) as err:
        sim.Scenario.from_dict({"protocol": {"name": "anything", "module": module}})
    assert err.value.path == "protocol.module" and message in str(err.value)


def test_a_module_that_fails_to_import_is_reported_with_its_exception(tmp_path):
    """A protocol file that raises on import gives one error naming the file and the exception."""
    bad = tmp_path / "bad_protocol.py"
    bad.write_text("raise RuntimeError('half-written protocol')\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as err:
        sim.Scenario.from_dict({"protocol": {"name": "whatever", "module": str(bad)}})
    assert err.value.path == "protocol.module" and "RuntimeError: half-written protocol" in str(err.value)


def test_register_protocol_refuses_what_is_not_a_protocol_config():
    """Registering a plain class, or a config that is not a dataclass, is a TypeError at definition time."""
    with pytest.raises(TypeError, match="ProtocolConfig subclass"):
        register_protocol(dict)  # type: ignore[arg-type]

    class NotADataclass(ProtocolConfig[None]):
        tag: ClassVar[str] = "test_not_a_dataclass"

    with pytest.raises(TypeError, match="frozen dataclass"):
        register_protocol(NotADataclass)
