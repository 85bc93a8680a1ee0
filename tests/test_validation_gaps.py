"""Values refused before anything starts, each naming its key (issue 26): what the seeding,
Flower's run config, a path, a clock or the machine cannot do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import immunefl.deploy_cli as deploy_cli
from immunefl.cli import main
from immunefl.experiments import resolve_config
from task.runconfig import RunConfig
from task.schema import PROJECT_ROOT, PYPROJECT, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"seed": "-1"}, "'seed' must be in [0, 2**32)"),
        ({"seed": str(2**32)}, "'seed' must be in [0, 2**32)"),  # would run as seed 0
        ({"run-name": "a\x00b"}, "'run-name' must not hold NUL or control characters"),
        ({"run-name": "a\nb"}, "'run-name' must not hold NUL or control characters"),
        ({"run-name": "caf\udce9"}, "'run-name' is not valid text"),  # undecodable argv bytes
        ({"num-partitions": "100001"}, "'num-partitions' must be at most 100000"),
        ({"round-timeout": "inf"}, "'round-timeout' must be a finite number > 0"),
        ({"round-timeout": "nan"}, "'round-timeout' must be a finite number > 0"),
        ({"poll-interval": "0.0001"}, "'poll-interval' must be in [0.001, 10]"),
        ({"ldp-clip": "inf"}, "'ldp-clip' must be a finite number > 0"),
        ({"strategy": "cdp", "cdp-clip": "inf"}, "'cdp-clip' must be a finite number, got inf"),
        ({"strategy": "dp-fixed", "dp-clip": "nan"}, "'dp-clip' must be a finite number, got nan"),
        ({"checkpoint-every": str(2**63)}, "'checkpoint-every' 9223372036854775808 does not fit"),
    ],
)
def test_values_no_run_can_use_are_refused_naming_the_key(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, overrides)
    assert needle in str(info.value)


def test_device_cuda_without_a_gpu_is_refused() -> None:
    import torch

    if torch.cuda.is_available():
        assert resolve_config(None, {"device": "cuda"})["device"] == "cuda"
        return
    with pytest.raises(ConfigError, match="'device' is cuda but torch.cuda.is_available"):
        resolve_config(None, {"device": "cuda"})


def test_a_relative_data_dir_is_the_callers_and_the_apps_refuse_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config(None, {"data-dir": "data/fmnist"})["data-dir"] == str(
        tmp_path / "data" / "fmnist"
    )
    config = resolve_config(None, {})
    with pytest.raises(ConfigError, match="'data-dir' must be an absolute path"):
        RunConfig.from_mapping({**config, "data-dir": "data/fmnist"})  # what an app is given


def test_the_cli_refuses_them_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text('run-name: "a\\0b"\nseed: 4294967296\n')  # YAML's escape: a NUL in the name
    out = subprocess.run([sys.executable, "-m", "immunefl.cli", "run", str(f)],
                         capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "'run-name' must not hold NUL" in out.stderr and "'seed' must be in" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_deploy_path_flag_is_resolved_against_the_callers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}

    class Recorder:
        def __init__(self, app_dir, flwr_home, state, address, security) -> None:
            seen.update(flwr_home=flwr_home, state=state, certs=security.certs)
            raise RuntimeError("recorded")

    monkeypatch.setattr(deploy_cli, "Deployment", Recorder)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "certs").mkdir()
    code = main(["deploy", "superlink", "--certs", "certs", "--state", "st", "--flwr-home", "h"])
    assert code == 1
    assert seen == {"flwr_home": tmp_path / "h", "state": tmp_path / "st",
                    "certs": tmp_path / "certs"}  # fmt: skip
    assert all(os.path.isabs(p) for p in seen.values())


def test_torch_floor_is_the_release_that_fixed_the_weights_only_bypass() -> None:
    with open(PYPROJECT, "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    assert "torch>=2.6" in deps and "torchvision>=0.21" in deps
