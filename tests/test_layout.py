"""The task package imports nothing from the apps above it, with one named exception."""

from __future__ import annotations

import ast

from immunefl.config import PROJECT_ROOT

UPPER = ("client_app", "server_app", "strategies", "attacks")
#: the one place left: the config check asks each rule and attack for its hyper-parameter
#: problems (issue 17 item 1 would move it with the host tools; the top level is fixed, so it
#: waits for that decision)
ALLOWED = {("immunefl/config.py", "attacks"), ("immunefl/config.py", "strategies")}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)


def test_the_task_package_imports_no_app_module() -> None:
    found = set()
    for path in sorted((PROJECT_ROOT / "immunefl").rglob("*.py")):
        rel = path.relative_to(PROJECT_ROOT).as_posix()
        found |= {(rel, top) for top in _imports(path) if top in UPPER}
    assert found - ALLOWED == set(), f"immunefl/ imports upward: {sorted(found - ALLOWED)}"
    assert found >= ALLOWED, "an allowed exception is gone: remove it from ALLOWED"
