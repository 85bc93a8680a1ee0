"""Datasets: Fashion-MNIST (IDX files) and CIFAR-10 (python-pickle batches, torchvision format).

Search order for the files, first hit wins:

1. the run config's `data-dir` (when not empty),
2. the environment variable ``$IMMUNEFL_DATA``,
3. ``/usr/share/datasets/<name>`` (Debian: ``apt-get install dataset-fashion-mnist``),
4. a torchvision download into ``$IMMUNEFL_DATA`` or ``~/.cache/immunefl`` (needs internet).

Images are kept as ``uint8`` tensors ``(N, C, H, W)``; `Dataset.normalize` turns a batch into
normalised floats, so a process holds one compact copy of the data.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("fmnist", "cifar10")
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_STATS = {  # per-channel mean/std of the training split
    "fmnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DataNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found (the message says how to get one)."""


class DataFormatError(ValueError):
    """A dataset file exists but is not in the expected format."""


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A train/test pair plus the normalisation used by every consumer."""

    name: str
    train: ImageSplit
    test: ImageSplit
    source: Path
    num_classes: int = 10

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32, scaled to [0, 1] then standardised per channel."""
        mean, std = _STATS[self.name]
        x = images.to(torch.float32).div_(255.0)
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x.sub_(m).div_(s)


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataFormatError(f"{path}: IDX type 0x{raw[2]:02x} unsupported, expected 0x08 (ubyte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 1
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: header says {dims} ({expected} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _fmnist_dir(root: Path) -> Path | None:
    for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "fmnist"):
        if all(_find_idx(d, stem) for stem in _FMNIST_FILES.values()):
            return d
    return None


def _load_fmnist(directory: Path) -> tuple[ImageSplit, ImageSplit]:
    arrays = {key: read_idx(_find_idx(directory, stem)) for key, stem in _FMNIST_FILES.items()}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataFormatError(
                f"{directory}: {split} images {images.shape} do not match labels {labels.shape}"
            )
        splits.append(
            ImageSplit(
                torch.from_numpy(images.copy()).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
            )
        )
    return splits[0], splits[1]


# --------------------------------------------------------------------- CIFAR-10 (pickle batches)
def _cifar_dir(root: Path) -> Path | None:
    for d in (root, root / "cifar-10-batches-py", root / "cifar10"):
        if all((d / name).is_file() for name in (*_CIFAR_TRAIN, _CIFAR_TEST)):
            return d
    return None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    with open(path, "rb") as fh:
        try:
            batch = pickle.load(fh, encoding="latin1")
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a format error
            raise DataFormatError(f"{path}: not a CIFAR-10 pickle batch ({exc})") from exc
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataFormatError(f"{path}: expected a dict with 'data' and 'labels'")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataFormatError(f"{path}: data {data.shape} / labels {labels.shape} malformed")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(directory: Path) -> tuple[ImageSplit, ImageSplit]:
    parts = [read_cifar_batch(directory / name) for name in _CIFAR_TRAIN]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_cifar_batch(directory / _CIFAR_TEST)
    return (
        ImageSplit(torch.from_numpy(train_x), torch.from_numpy(train_y)),
        ImageSplit(torch.from_numpy(test_x), torch.from_numpy(test_y)),
    )


# ----------------------------------------------------------------------------------- discovery
_FINDERS = {"fmnist": _fmnist_dir, "cifar10": _cifar_dir}
_LOADERS = {"fmnist": _load_fmnist, "cifar10": _load_cifar10}
_SYSTEM_NAMES = {"fmnist": "fashion-mnist", "cifar10": "cifar-10"}


def candidate_roots(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """The directories searched for `name`, in order (see module docstring)."""
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("IMMUNEFL_DATA"):
        roots.append(Path(os.environ["IMMUNEFL_DATA"]).expanduser())
    roots.append(SYSTEM_DATA_ROOT / _SYSTEM_NAMES[name])
    roots.append(SYSTEM_DATA_ROOT)
    roots.append(_download_root())
    return roots


def _download_root() -> Path:
    env = os.environ.get("IMMUNEFL_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "immunefl"


def _download(name: str, root: Path) -> None:
    """Fetch `name` with torchvision into `root` (its usual layout). Needs internet."""
    import torchvision  # local import: only this rarely used path needs it

    root.mkdir(parents=True, exist_ok=True)
    if name == "fmnist":
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    else:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)


def _how_to_get(name: str, roots: Sequence[Path]) -> str:
    searched = "\n".join(f"  - {r}" for r in roots)
    hint = {
        "fmnist": "On Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` (installs the "
        "IDX "
        "files in /usr/share/datasets/fashion-mnist). Or put train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a "
        "directory and pass `data-dir=<dir>` or set IMMUNEFL_DATA=<dir>.",
        "cifar10": "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpack it "
        "(it creates cifar-10-batches-py/ with data_batch_1..5 and test_batch) and pass "
        "`data-dir=<dir>` or set IMMUNEFL_DATA=<dir>.",
    }[name]
    return f"dataset '{name}' not found. Searched:\n{searched}\n{hint}"


def locate_dataset(name: str, data_dir: str = "", allow_download: bool = True) -> Path:
    """The directory holding `name`'s files (downloading as a last resort); no loading."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    roots = candidate_roots(name, data_dir or None)
    for root in roots:
        found = _FINDERS[name](root)
        if found is not None:
            return found
    download_error = "downloads disabled"
    if allow_download:
        try:
            _download(name, _download_root())
            found = _FINDERS[name](_download_root())
            if found is not None:
                return found
            download_error = "download finished but the files were not where expected"
        except Exception as exc:  # noqa: BLE001 - report why the last resort failed
            download_error = f"download failed: {type(exc).__name__}: {exc}"
    raise DataNotFoundError(f"{_how_to_get(name, roots)}\n(torchvision {download_error})")


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "", allow_download: bool = True) -> Dataset:
    """Load `name` (``fmnist`` | ``cifar10``) from the first location that has it.

    Cached per process: the ClientApp's actors and the ServerApp each read the files once.
    Raises `DataNotFoundError` naming every place searched and how to get the data.
    """
    found = locate_dataset(name, data_dir, allow_download)
    train, test = _LOADERS[name](found)
    return Dataset(name, train, test, found)
