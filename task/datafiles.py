"""Where a dataset's files are: the search order, the download fallback, the error that says how
to get them. No decoding here (see `task.data`), so the launcher can check that the data
exists without importing torch.

A run config's `data-dir` (when not empty) is the only place looked at: if it does not exist
or lacks the files, that is an error (a typo must never train on another copy). Otherwise the
search order, first hit wins:

1. the environment variable ``$IMMUNEFL_DATA``,
2. ``/usr/share/datasets/<name>`` (Debian: ``apt-get install dataset-fashion-mnist``),
3. a torchvision download into ``$IMMUNEFL_DATA`` or ``~/.cache/immunefl`` (needs internet).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from task.catalog import DATASETS

SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


class DataNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found (the message says how to get one)."""


class DataFormatError(ValueError):
    """A dataset file exists but is not in the expected format."""


def find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _fmnist_dir(root: Path) -> Path | None:
    for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "fmnist"):
        if all(find_idx(d, stem) for stem in FMNIST_FILES.values()):
            return d
    return None


def _cifar_dir(root: Path) -> Path | None:
    for d in (root, root / "cifar-10-batches-py", root / "cifar10"):
        if all((d / name).is_file() for name in (*CIFAR_TRAIN, CIFAR_TEST)):
            return d
    return None


_FINDERS = {"fmnist": _fmnist_dir, "cifar10": _cifar_dir}
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
    if data_dir:  # an explicit data-dir is used or refused, never replaced by another copy
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"data-dir {root} does not exist (or is not a directory)")
        found = _FINDERS[name](root)
        if found is None:
            raise DataNotFoundError(
                f"data-dir {root} holds no '{name}' files.\n{_how_to_get(name, [root])}"
            )
        return found
    roots = candidate_roots(name, None)
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


def dataset_files(name: str, directory: Path) -> list[Path]:
    """The files `name` is read from in `directory` (as `locate_dataset` returned it)."""
    if name == "fmnist":
        return [p for stem in FMNIST_FILES.values() if (p := find_idx(directory, stem))]
    return [directory / n for n in (*CIFAR_TRAIN, CIFAR_TEST)]
