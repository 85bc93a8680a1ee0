"""What `flwr run` ships (the FAB): the apps' code and schema, never the results that collect in
the project directory. Flower refuses a FAB over 10 MB, and its default takes every .json and
.jsonl below the project that .gitignore does not name: committed results (docs/data) once broke
every run in CI this way."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import FAB_MAX_SIZE

from task.schema import PROJECT_ROOT

APP_PACKAGES = ("client_app", "server_app", "strategies", "attacks", "task")
FAB_OVERHEAD = {"pyproject.toml", ".info/CONTENT"}


def _names(fab: bytes) -> set[str]:
    return set(zipfile.ZipFile(io.BytesIO(fab)).namelist())


def _sources(root: Path, package: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / package).rglob("*.py")
            if "__pycache__" not in p.parts and not p.name.startswith("test_")}  # fmt: skip


def test_the_fab_carries_every_module_of_the_apps_and_the_schema_and_no_data() -> None:
    names = _names(build_fab_from_disk(PROJECT_ROOT))
    for package in APP_PACKAGES:
        missing = _sources(PROJECT_ROOT, package) - names
        assert not missing, f"modules of {package} not in the FAB: {sorted(missing)}"
    assert "task/schema.toml" in names  # the ClientApp and ServerApp read it at import
    assert "examples/plugins/my_plugins.py" in names  # a plugin module in the project travels
    other = {n for n in names if not n.endswith(".py")} - FAB_OVERHEAD
    assert other == {"task/schema.toml"}, sorted(other)


def _project_copy(dst: Path, with_fab_include: bool) -> Path:
    for package in APP_PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, dst / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    if not with_fab_include:
        text, n = re.subn(r"(?m)^fab-include = .*\n", "", text)
        assert n == 1, "pyproject.toml no longer declares fab-include on one line"
    (dst / "pyproject.toml").write_text(text)
    return dst


def _fill_with_results(project: Path, mib: int) -> None:
    """Run outputs that no .gitignore names: committed docs/data, a results-dir of one's own."""
    chunk = base64.b64encode(os.urandom(1024 * 1024)).decode()  # ~1.3 MiB, barely compressible
    for i in range(mib):
        run = project / ("runs" if i % 2 else "docs/data") / f"run-{i}"
        run.mkdir(parents=True)
        (run / "rounds.jsonl").write_text(f'{{"blob": "{chunk}"}}\n')
        (run / "summary.json").write_text('{"asr": 0.5}')


def test_results_in_the_project_stay_out_of_the_fab(tmp_path: Path) -> None:
    project = _project_copy(tmp_path / "project", with_fab_include=True)
    _fill_with_results(project, mib=12)
    fab = build_fab_from_disk(project)
    assert len(fab) < FAB_MAX_SIZE // 4
    names = _names(fab)
    assert not {n for n in names if n.startswith(("runs/", "docs/"))}
    assert "task/schema.toml" in names and "server_app/app.py" in names


def test_without_fab_include_the_same_project_cannot_be_run(tmp_path: Path) -> None:
    """The failure the declaration prevents, so that the test above can fail."""
    project = _project_copy(tmp_path / "project", with_fab_include=False)
    _fill_with_results(project, mib=12)
    with pytest.raises(ValueError, match="FAB size exceeds"):
        build_fab_from_disk(project)
