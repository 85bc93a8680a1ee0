"""`immunefl.checker`: the rules' and attacks' checks run in a child process, so the CLI that
launches and watches a run never imports torch (docs/performance.md, memory)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from immunefl.checker import check_in_child
from immunefl.experiments import resolve_config
from task.schema import PROJECT_ROOT, ConfigError


def test_the_child_finds_what_the_in_process_checks_find() -> None:
    good = resolve_config(None, {"strategy": "krum", "krum-f": "1"})
    bad = resolve_config(None, {"strategy": "krum", "krum-f": "9"}, checks=())  # 2f+2 > 10
    from immunefl.checker import problems_of

    answer = check_in_child([good, bad])
    assert answer[0] == [] and answer[1] and answer[1] == problems_of(bad)
    assert any("krum" in p for p in answer[1])


def test_checked_points_leave_the_cli_without_torch(tmp_path) -> None:
    code = (
        "import sys, json\n"
        "from immunefl.cli import checked\n"
        "from immunefl.experiments import resolve_config\n"
        "from task.schema import ConfigError\n"
        "ok = checked([({}, resolve_config(None, {'strategy': 'median'}, checks=()))])\n"
        "bad = resolve_config(None, {'strategy': 'krum', 'krum-f': '9'}, checks=())\n"
        "try:\n"
        "    checked([({}, bad)])\n"
        "    bad = []\n"
        "except ConfigError as exc:\n"
        "    bad = exc.problems\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'flwr': 'flwr' in sys.modules,\n"
        "                  'n': len(ok), 'bad': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, check=True)  # fmt: skip
    res = json.loads(out.stdout.splitlines()[-1])
    assert res["n"] == 1 and res["bad"] and not res["torch"] and not res["flwr"], res


def test_a_checker_that_cannot_answer_is_an_error_not_a_pass(monkeypatch) -> None:
    def broken(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="Traceback: boom")

    monkeypatch.setattr(subprocess, "run", broken)
    with pytest.raises(RuntimeError, match=r"checking the run configs failed \(exit 1\)"):
        check_in_child([{"strategy": "fedavg"}])


def test_every_point_of_a_sweep_is_named_with_its_problems() -> None:
    from immunefl.checker import raise_problems

    good = resolve_config(None, {"strategy": "median"}, checks=())
    bad = resolve_config(None, {"strategy": "krum", "krum-f": "9"}, checks=())
    with pytest.raises(ConfigError) as info:
        raise_problems([good, bad, bad], [{"s": 0}, {"s": 1}, {"s": 2}])
    assert [p[:7] for p in info.value.problems] == ["[s=1] '", "[s=2] '"]


def test_a_relative_file_is_checked_from_the_callers_directory(tmp_path, monkeypatch) -> None:
    from immunefl.cli import checked

    (tmp_path / "e.npy").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    base = {"attack": "edge-case", "num-malicious": "5", "adv-rounds": "2",
            "edge-case-source": "file"}  # fmt: skip
    checked([({}, resolve_config(None, {**base, "edge-case-file": "e.npy"}, checks=()))])
    with pytest.raises(ConfigError, match="nope.npy does not exist"):
        checked([({}, resolve_config(None, {**base, "edge-case-file": "nope.npy"}, checks=()))])
