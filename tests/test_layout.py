"""The house: six top-level packages in layers, each importing only the layers below it.

    immunefl (host tools)  ->  server_app, client_app (the Flower apps)  ->  attacks (threat
    models; an attacker may know the rule)  ->  strategies (aggregation rules)  ->  task (data,
    models, training, the config schema)

A package may import its own modules and any package of a lower layer; an import of the same
or a higher layer (which is what makes circles) fails here, as does a source module over 400
lines. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from task.schema import PROJECT_ROOT

LAYERS = {"task": 0, "strategies": 1, "attacks": 2, "client_app": 3, "server_app": 3,
          "immunefl": 4}  # fmt: skip
MAX_LINES = 400
SOURCE_DIRS = (*LAYERS, "scripts", "benchmarks", "examples")


def imported_tops(source: str) -> Iterator[str]:
    """Top-level names a module imports: statements anywhere (inside functions too) and
    ``importlib.import_module("...")`` with a literal name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value.split(".")[0]


def import_graph(root: Path = PROJECT_ROOT) -> dict[tuple[str, str], set[str]]:
    """(package, module path) -> the project packages it imports."""
    graph: dict[tuple[str, str], set[str]] = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tops = set(imported_tops(path.read_text())) & set(LAYERS)
            graph[(package, rel)] = tops - {package}
    return graph


def layer_violations(graph: Mapping[tuple[str, str], set[str]]) -> list[str]:
    """Every import of the same or a higher layer, as 'module -> package'."""
    return sorted(
        f"{rel} -> {top}"
        for (package, rel), tops in graph.items()
        for top in tops
        if LAYERS[top] >= LAYERS[package]
    )


def package_cycles(graph: Mapping[tuple[str, str], set[str]]) -> list[list[str]]:
    """Circles among the top-level packages (depth-first search on the package graph)."""
    edges: dict[str, set[str]] = {}
    for (package, _), tops in graph.items():
        edges.setdefault(package, set()).update(tops)
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_every_package_imports_only_lower_layers() -> None:
    graph = import_graph()
    assert layer_violations(graph) == []
    assert package_cycles(graph) == []
    # the layers are real: each app layer does use the one below it
    used = {top for (package, _), tops in graph.items() if package == "server_app" for top in tops}
    assert {"task", "strategies", "attacks"} <= used


def test_the_checks_find_an_upward_import_and_a_circle() -> None:
    graph = {("task", "task/x.py"): {"strategies"}, ("strategies", "strategies/y.py"): {"task"},
             ("server_app", "server_app/z.py"): {"client_app"}}  # fmt: skip
    assert layer_violations(graph) == ["server_app/z.py -> client_app", "task/x.py -> strategies"]
    assert package_cycles(graph) == [["strategies", "task", "strategies"]]
    hidden = "def f():\n    import importlib\n    return importlib.import_module('immunefl.cli')\n"
    assert "immunefl" in set(imported_tops(hidden))


@pytest.mark.parametrize("folder", SOURCE_DIRS)
def test_no_source_module_is_over_400_lines(folder: str) -> None:
    long = {
        path.relative_to(PROJECT_ROOT).as_posix(): n
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by what they do: {long}"


def test_a_module_of_yours_named_like_our_packages_is_named_not_imported(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "strategies.py").write_text("raise SystemExit('the user module ran')\n")
    out = subprocess.run([sys.executable, "-c", "import server_app.app"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert f"'strategies' resolves to {tmp_path / 'strategies.py'}" in out.stderr
    assert "shadows immunefl's package" in out.stderr and "the user module ran" not in out.stderr
