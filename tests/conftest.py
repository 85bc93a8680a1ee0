"""Shared fixtures: the real Fashion-MNIST (when installed) and synthetic files in real formats."""

from __future__ import annotations

import gzip
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from task.datafiles import DataNotFoundError, locate_dataset
from task.runconfig import RunConfig
from task.schema import load_schema

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Flower stamps every Message with the running task's identity; give tests one."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture(autouse=True)
def _no_shared_attack_estimates() -> Iterator[None]:
    """Each test starts with no reference trainings shared by an earlier test's attackers
    (`attacks.shared_estimates`, process-wide), so counts of trainings do not depend on order."""
    yield
    module = sys.modules.get("attacks.shared_estimates")
    if module is not None:
        module.clear()


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    """Directory of the real Fashion-MNIST IDX files; skip (with the reason) if not installed."""
    try:
        return locate_dataset("fmnist", "", allow_download=False)
    except DataNotFoundError:
        pytest.skip("real Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


def slice_fmnist(src: Path, dst: Path, n_train: int, n_test: int) -> Path:
    """The first `n_train` training and `n_test` test images (and labels) of the real
    Fashion-MNIST IDX files in `src`, written to `dst`, readable by every user (containers)."""
    from task.data import read_idx
    from task.datafiles import FMNIST_FILES, find_idx

    dst.mkdir(parents=True, exist_ok=True)
    for key, stem in FMNIST_FILES.items():
        path = find_idx(src, stem)
        assert path is not None, f"{stem} missing in {src}"
        n = n_train if key.startswith("train") else n_test
        write_idx(dst / stem, read_idx(path)[:n]).chmod(0o644)
    dst.chmod(0o755)
    return dst


@pytest.fixture(scope="session")
def fmnist_subset_dir(fmnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 6000 training and 2000 test images of the real Fashion-MNIST (about 600 of
    each class), for end-to-end tests that check wiring, equality or delivery rather than
    accuracy: a round trains and evaluates ~10x faster than on the whole set."""
    return slice_fmnist(fmnist_dir, tmp_path_factory.mktemp("fmnist-subset"), 6000, 2000)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write a uint8 array in IDX format (what the Fashion-MNIST files are)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if compress else path
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_fake_fmnist(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def fake_fmnist_dataset(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0):
    """`make_fake_fmnist` loaded as a `task.data.Dataset`."""
    from task.data import Dataset, read_splits

    make_fake_fmnist(root, n_train, n_test, seed)
    return Dataset("fmnist", *read_splits("fmnist", root), root)


def make_fake_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 python batches in torchvision's layout (cifar-10-batches-py/)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [int(x) for x in rng.integers(0, 10, per_batch)],
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        with open(d / name, "wb") as fh:
            pickle.dump(batch, fh)
    return d


def processes_of_flwr_home(home: Path) -> dict[int, str]:
    """pid -> command line of the live processes (other than this one) whose FLWR_HOME is
    `home` or lies below it: a launcher's processes, and its SuperLinks, which get homes of
    their own in ``<home>/superlink/``."""
    home = home.resolve()
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            entries = (d / "environ").read_bytes().split(b"\0")
            value = next((e[10:] for e in entries if e.startswith(b"FLWR_HOME=")), None)
            if value is not None and Path(value.decode()).is_relative_to(home):
                found[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
    return found


def typed_config(**overrides) -> RunConfig:
    """The schema's defaults with `overrides` (hyphenated keys) as a `RunConfig`: typed, but not
    range-checked, since component tests build edge cases on purpose."""
    schema = load_schema()
    return RunConfig.typed({**schema, **overrides}, schema)


def load_script(name: str):
    """A module from ``scripts/<name>.py`` (scripts are not a package), loaded for its tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ one real matrix, shared
MATRIX_E2E = """
base: {num-server-rounds: 2, num-partitions: 10, clients-per-round: 3}
attacks:
  - {name: none, attack: none}
  - {name: sign-flip, attack: sign-flip, num-malicious: 2, attack-mode: continuous}
defenses:
  - {name: fedavg, strategy: fedavg}
  - {name: median, strategy: median}%s
seeds: [0]
"""
MATRIX_BUGGY = '\n  - {name: buggy, strategy: fedavg, inject-faults: "1:bug"}'
#: the points of MATRIX_E2E that finish (the `buggy` defense fails on purpose)
MATRIX_POINTS = [f"{d}__{a}__s0" for d in ("fedavg", "median") for a in ("none", "sign-flip")]
TIMING_OF_ROWS = {"wall_seconds", "round_seconds", "aggregate_seconds", "eval_seconds", "seconds"}


def matrix_rows(point_dir: Path) -> list[dict]:
    """A point's rounds.jsonl without its wall times (what must be equal between runs)."""
    import json

    rows = [json.loads(x) for x in (point_dir / "rounds.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_OF_ROWS and "seconds" not in k}
            for r in rows]  # fmt: skip


@pytest.fixture(scope="session")
def matrix_one_node(tmp_path_factory: pytest.TempPathFactory, fmnist_subset_dir: Path) -> Path:
    """`immunefl matrix` of MATRIX_E2E with the failing defense, run once on this machine (the
    launcher's own one-node Ray cluster): tests/test_matrix.py checks its report, failure and
    resume, tests/test_ray_cluster_e2e.py compares a two-node cluster's run with it. Returns
    the directory with ``m.yaml``, ``args.json``, ``stdout.txt`` and the results under ``r/mx``."""
    import json
    import subprocess
    import sys

    from task.schema import PROJECT_ROOT

    base = tmp_path_factory.mktemp("matrix-one-node")
    f = base / "m.yaml"
    f.write_text(MATRIX_E2E % MATRIX_BUGGY)
    args = [sys.executable, "-m", "immunefl.cli", "matrix", str(f), "--quiet",
            "--set", f"data-dir={fmnist_subset_dir}", "--set", f"results-dir={base / 'r'}",
            "--set", "run-name=mx"]  # fmt: skip
    (base / "args.json").write_text(json.dumps(args))
    out = subprocess.run([*args, "--flwr-home", str(base / "h")], capture_output=True,
                         text=True, timeout=1200, cwd=PROJECT_ROOT)  # fmt: skip
    (base / "stdout.txt").write_text(out.stdout)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # the buggy points
    return base
