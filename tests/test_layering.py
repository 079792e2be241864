"""The package's import graph: no cycles between modules or between packages, and a kernel that knows no protocol.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import``
of a ``sim`` module counts, at module level or inside a function (an import inside a
function that closes a cycle is still a cycle). Imports under ``if TYPE_CHECKING:``
are left out: they exist only for the type checker and never run. The protocol
registry and ``sim/__init__.py`` load modules by name at run time; those are plugin
lookups, not imports of one module by another.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "sim"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SIM.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in SIM.rglob("*.py")}


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            stack.extend(node.orelse)  # only the else branch runs
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The sim modules an import statement loads (a ``from pkg import sub`` loads ``pkg.sub`` too)."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "sim" or alias.name.startswith("sim."):
                targets.add(alias.name)
        return targets & MODULES.keys()
    if node.level:
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base != "sim" and not base.startswith("sim."):
        return set()
    targets.add(base)
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            targets.add(f"{base}.{alias.name}")
    return targets & MODULES.keys()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            graph[name] |= _resolve(name, node) - {name}
    return graph


GRAPH = _graph()


def _unit(module: str) -> str:
    """A module's package (``sim.kernel.world`` -> ``sim.kernel``); top-level modules are their own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    """The reader finds the imports it should (a check on the checker itself)."""
    assert "sim.kernel.world" in GRAPH["sim.runner"]
    assert "sim.kernel.events" in GRAPH["sim.kernel.world"]
    assert "sim.protocol" in GRAPH["sim.scenario"]


def test_no_module_import_cycles():
    """No two sim modules import each other, directly or through others."""
    assert _cycles(GRAPH) == []


def test_no_package_import_cycles():
    """No two packages (kernel, workload, messaging, checkers ...; each top-level module counts as one) import
    each other."""
    units: dict[str, set[str]] = defaultdict(set)
    for src, dsts in GRAPH.items():
        if src == "sim":
            continue
        for dst in dsts:
            if _unit(dst) != _unit(src) and dst != "sim":
                units[_unit(src)].add(_unit(dst))
    assert _cycles(units) == []


@pytest.mark.parametrize("forbidden", ["sim.protocols", "sim.replication", "sim.messaging", "sim.transactions",
                                       "sim.checkers", "sim.workload", "sim.plots", "sim.analysis", "sim.rabbitmq"])
def test_the_kernel_imports_no_protocol_checker_or_plot(forbidden):
    """sim.kernel depends on the scenario, the protocol contract and the base modules only."""
    offenders = {src: dst for src, dsts in GRAPH.items() if src.startswith("sim.kernel")
                 for dst in dsts if dst == forbidden or dst.startswith(forbidden + ".")}
    assert offenders == {}


def test_the_cycle_finder_finds_a_cycle():
    """A graph with a cycle is reported (a check that has never failed proves nothing)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_are_left_out():
    """An import under ``if TYPE_CHECKING:`` is not an edge; one in its ``else`` branch is."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sim.kernel\n"
                     "else:\n    import sim.scenario\n")
    names = {alias.name for node in _imports(tree) for alias in node.names}
    assert names == {"TYPE_CHECKING", "sim.scenario"}
