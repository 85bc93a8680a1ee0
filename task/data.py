"""Datasets: Fashion-MNIST (IDX files) and CIFAR-10 (python-pickle batches, torchvision format).

Where the files are looked for: `task.datafiles`.

Images are kept as ``uint8`` tensors ``(N, C, H, W)``; `Dataset.normalize` turns a batch into
normalised floats, so a process holds one compact copy of the data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from task.cache import cache_dir, write_npz
from task.datafiles import (  # noqa: F401 - DataNotFoundError, locate_dataset re-exported
    CIFAR_TEST,
    CIFAR_TRAIN,
    FMNIST_FILES,
    DataFormatError,
    DataNotFoundError,
    dataset_files,
    find_idx,
    locate_dataset,
)

_STATS = {  # per-channel mean/std of the training split
    "fmnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


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


def _load_fmnist(directory: Path) -> tuple[ImageSplit, ImageSplit]:
    arrays = {key: read_idx(find_idx(directory, stem)) for key, stem in FMNIST_FILES.items()}
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
_ARRAY_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
     ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}  # fmt: skip


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for data files: dicts, lists, strings, numbers and NumPy arrays only. Any
    other global (``os.system``, ``builtins.eval``, a class's constructor) is refused, so a
    crafted file cannot run code."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused '{module}.{name}': a data batch may hold arrays, lists, strings and "
            "numbers only"
        )


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: images uint8 (N, 3, 32, 32), labels int64 (N,).
    Unpickled as data only (`_ArraysOnly`): a crafted batch is refused and runs nothing."""
    with open(path, "rb") as fh:
        try:
            batch = _ArraysOnly(fh, encoding="latin1").load()
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
    parts = [read_cifar_batch(directory / name) for name in CIFAR_TRAIN]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_cifar_batch(directory / CIFAR_TEST)
    return (
        ImageSplit(torch.from_numpy(train_x), torch.from_numpy(train_y)),
        ImageSplit(torch.from_numpy(test_x), torch.from_numpy(test_y)),
    )


_LOADERS = {"fmnist": _load_fmnist, "cifar10": _load_cifar10}
DECODED_FORMAT = 1  # bump when a loader changes what it returns
_SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def decoded_cache_path(name: str, directory: Path) -> Path:
    """Where the decoded arrays of `name` read from `directory` are cached: keyed by the source
    files' paths, sizes and modification times, so a changed file is decoded again."""
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
             for p in dataset_files(name, directory)]  # fmt: skip
    digest = hashlib.sha256(repr((DECODED_FORMAT, name, stamp)).encode()).hexdigest()[:24]
    return cache_dir() / "datasets" / f"{name}-{digest}.npz"


def _read_decoded(path: Path) -> tuple[ImageSplit, ImageSplit] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in _SPLIT_KEYS}
    except (OSError, ValueError, KeyError):
        return None
    splits = []
    for split in ("train", "test"):
        x, y = a[f"{split}_images"], a[f"{split}_labels"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            return None
        labels = torch.from_numpy(y.astype(np.int64, copy=False))
        splits.append(ImageSplit(torch.from_numpy(x), labels))
    return splits[0], splits[1]


def read_splits(name: str, directory: Path) -> tuple[ImageSplit, ImageSplit]:
    """The decoded train/test splits of `name` from `directory`.

    Decoding (gunzip of the IDX files, unpickling CIFAR batches) costs ~0.5 s per process and
    every process of a federation (the ServerApp, each Ray actor) needs the data, so the
    decoded arrays are cached on disk (`task.cache`); a damaged entry is decoded again.
    """
    path = decoded_cache_path(name, directory)
    if path.exists():
        cached = _read_decoded(path)
        if cached is not None:
            return cached
        warnings.warn(f"decoded dataset cache {path} is damaged; decoding again", stacklevel=2)
    train, test = _LOADERS[name](directory)
    write_npz(path, train_images=train.images.numpy(), train_labels=train.labels.numpy(),
              test_images=test.images.numpy(), test_labels=test.labels.numpy())  # fmt: skip
    return train, test


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "", allow_download: bool = True) -> Dataset:
    """Load `name` (``fmnist`` | ``cifar10``) from the first location that has it.

    Cached per process: the ClientApp's actors and the ServerApp each read the files once.
    Raises `DataNotFoundError` naming every place searched and how to get the data.
    """
    found = locate_dataset(name, data_dir, allow_download)
    train, test = read_splits(name, found)
    return Dataset(name, train, test, found)
