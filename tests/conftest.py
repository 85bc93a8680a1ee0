"""Shared fixtures: the real Fashion-MNIST (when installed) and synthetic files in real formats."""

from __future__ import annotations

import gzip
import pickle
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


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    """Directory of the real Fashion-MNIST IDX files; skip (with the reason) if not installed."""
    try:
        return locate_dataset("fmnist", "", allow_download=False)
    except DataNotFoundError:
        pytest.skip("real Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


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
