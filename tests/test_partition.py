from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from task.data import load_dataset
from task.partition import partition_indices


@pytest.fixture(scope="module")
def labels(fmnist_dir: Path) -> np.ndarray:
    return load_dataset("fmnist", str(fmnist_dir)).train.labels.numpy()


def _check_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert allidx.size == n, "partitions must cover the training set"
    assert np.unique(allidx).size == n, "partitions must be disjoint"


def test_iid_equal_sizes_disjoint_cover(labels: np.ndarray) -> None:
    parts = partition_indices(labels, "iid", 100, seed=0)
    _check_disjoint_cover(parts, labels.size)
    assert {p.size for p in parts} == {600}
    # IID: each client sees (nearly) every class
    assert np.mean([np.unique(labels[p]).size for p in parts]) > 9.5


def test_shard_at_most_two_labels(labels: np.ndarray) -> None:
    parts = partition_indices(labels, "shard", 100, seed=0)
    _check_disjoint_cover(parts, labels.size)
    assert {p.size for p in parts} == {600}  # 2 shards of 300
    counts = [np.unique(labels[p]).size for p in parts]
    assert max(counts) <= 2
    assert np.mean(counts) > 1.5  # most clients really get two different labels


def test_dirichlet_seeded_deterministic(labels: np.ndarray) -> None:
    a = partition_indices(labels, "dirichlet", 20, seed=3, alpha=0.3)
    b = partition_indices(labels, "dirichlet", 20, seed=3, alpha=0.3)
    c = partition_indices(labels, "dirichlet", 20, seed=4, alpha=0.3)
    _check_disjoint_cover(a, labels.size)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # small alpha: skewed label mixes
    dominant = [np.bincount(labels[p], minlength=10).max() / max(p.size, 1) for p in a if p.size]
    assert np.mean(dominant) > 0.3


@pytest.mark.parametrize("scheme", ["iid", "shard"])
def test_seed_changes_assignment_but_is_reproducible(labels: np.ndarray, scheme: str) -> None:
    a = partition_indices(labels, scheme, 100, seed=1)
    again = partition_indices(labels, scheme, 100, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, again, strict=True))
    assert not np.array_equal(a[0], partition_indices(labels, scheme, 100, seed=2)[0])


def test_bad_arguments_are_named() -> None:
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="unknown partitioning 'foo'"):
        partition_indices(y, "foo", 2, 0)
    with pytest.raises(ValueError, match="num-partitions"):
        partition_indices(y, "iid", 11, 0)
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        partition_indices(y, "dirichlet", 2, 0, alpha=0.0)


def test_partition_disk_cache_returns_the_same_partition_and_survives_damage(tmp_path) -> None:
    import warnings

    from task.partition import load_or_partition, partition_indices

    labels = np.repeat(np.arange(10), 60)
    direct = partition_indices(labels, "dirichlet", 12, seed=3, alpha=0.3)
    first = load_or_partition(labels, "dirichlet", 12, 3, 0.3, directory=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = load_or_partition(labels, "dirichlet", 12, 3, 0.3, directory=tmp_path)
    for a, b, c in zip(direct, first, again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    # anything the partition depends on gives another entry
    load_or_partition(labels, "dirichlet", 12, 4, 0.3, directory=tmp_path)
    load_or_partition(labels[::-1].copy(), "dirichlet", 12, 3, 0.3, directory=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    files[0].write_bytes(b"not an npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        healed = load_or_partition(labels, "dirichlet", 12, 3, 0.3, directory=tmp_path)
    assert any("damaged" in str(w.message) for w in caught)
    assert all(np.array_equal(a, b) for a, b in zip(direct, healed, strict=True))
    assert load_or_partition(labels, "dirichlet", 12, 3, 0.3, directory=tmp_path)[0].size
