"""The on-disk cache shared by a federation's processes (partitions, decoded datasets).

Entries are written atomically (temporary file + rename), so concurrent writers race
harmlessly; an unwritable cache directory only costs speed, never correctness.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """``$IMMUNEFL_CACHE`` or ``~/.cache/immunefl``."""
    env = os.environ.get("IMMUNEFL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "immunefl"


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Store `arrays` (uncompressed) at `path` atomically; warn instead of failing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home is not an error, only slower
        warnings.warn(f"cannot write cache file {path}: {exc}", stacklevel=3)
