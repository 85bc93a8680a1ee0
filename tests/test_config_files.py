"""Experiment files are read at a bounded cost, and every problem is a ConfigError (issue 26)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from immunefl.experiments import expand_sweep, resolve_config
from immunefl.yamlfile import MAX_FILE_BYTES, preview
from task.schema import PROJECT_ROOT, ConfigError

PREV = "abcdefgh"
LOL = ",".join(["'lol'"] * 9)
BILLION_LAUGHS = "\n".join(
    [f"a: &a [{LOL}]"]
    + [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip(PREV, "bcdefghi", strict=True)]
    + ["seed: *i"]
)


def cli(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "immunefl.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)  # fmt: skip


def test_nested_aliases_are_refused_quickly_without_expanding(tmp_path: Path) -> None:
    f = tmp_path / "laughs.yaml"
    f.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1000  # 9**9 = 387 million strings once expanded
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"(?s)alias \*a is not allowed.*laughs.yaml\", line 2"):
        expand_sweep(f)
    assert time.monotonic() - start < 1.0
    f.write_text("lr: &x 0.1\nserver-lr: *x\n")  # a single alias too: write the value out
    with pytest.raises(ConfigError, match=r"alias \*x"):
        resolve_config(f)


def test_a_key_given_twice_names_the_key_and_its_lines(tmp_path: Path) -> None:
    f = tmp_path / "twice.yaml"
    f.write_text("seed: 1\nlr: 0.1\nseed: 2\n")  # YAML would silently keep seed 2
    with pytest.raises(ConfigError, match=r"key 'seed' is given twice \(lines 1 and 3\)"):
        resolve_config(f)
    f.write_text("presets:\n  cpu:\n    seed: 1\n    seed: 2\n")
    with pytest.raises(ConfigError, match="'seed' is given twice"):
        resolve_config(f, preset="cpu")


def test_oversized_binary_and_deep_files_are_config_errors(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("description: '" + "x" * MAX_FILE_BYTES + "'\n")
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        resolve_config(big)
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"seed: 1\n\x80\x02\x93\xff")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        resolve_config(binary)
    deep = tmp_path / "deep.yaml"
    deep.write_text("seed: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested deeper than 16"):
        resolve_config(deep)
    huge_int = tmp_path / "int.yaml"
    huge_int.write_text("seed: " + "9" * 5000)  # beyond Python's int-from-text limit
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_config(huge_int)


def test_error_messages_quote_a_bounded_preview_of_a_value(tmp_path: Path) -> None:
    f = tmp_path / "long.yaml"
    f.write_text(f"lr: {'z' * 100_000}\n{'k' * 1000}: 1\n")  # YAML keys: <= 1024 characters
    with pytest.raises(ConfigError) as info:
        resolve_config(f)
    text = str(info.value)
    assert "'lr' must be a float" in text and "(100000 characters)" in text
    assert "unknown key 'kkkk" in text and "(1000 characters)" in text
    assert len(text) < 1000
    assert preview("a" * 500) == repr("a" * 80) + "... (500 characters)"


def test_a_sweep_is_counted_before_it_is_expanded(tmp_path: Path) -> None:
    f = tmp_path / "sweep.yaml"
    values = list(range(100))
    f.write_text(f"seed: {values}\nlocal-epochs: {[v + 1 for v in values]}\nlr: [0.1, 0.2]\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="sweeps 20000 points.*more than 10000.*--max-points"):
        expand_sweep(f)
    assert time.monotonic() - start < 1.0  # 20,000 validated configs would take minutes
    f.write_text("seed: [0, 1, 2]\nlr: [0.1, 0.2]\n")
    assert len(expand_sweep(f, max_points=6)) == 6
    with pytest.raises(ConfigError, match="sweeps 6 points"):
        expand_sweep(f, max_points=5)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (BILLION_LAUGHS.encode(), "alias *a is not allowed"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text"),
        (b"seed: [1, 2\n", "is not valid YAML"),
        (b"seed: 1\nseed: 2\n", "given twice"),
        (b"seed: [0, 1, 2]\nlr: [0.1, 0.2]\n", "sweeps 6 points (seed 3 x lr 2), more than 5"),
    ],
)
def test_the_cli_exits_2_without_a_traceback(tmp_path: Path, content: bytes, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_bytes(content)
    out = cli("sweep", str(f), "--max-points", "5")
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr
