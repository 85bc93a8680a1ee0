from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from task import data
from task.data import (
    DataFormatError,
    DataNotFoundError,
    decoded_cache_path,
    load_dataset,
    locate_dataset,
    read_cifar_batch,
    read_idx,
    read_splits,
)
from tests.conftest import make_fake_cifar10, make_fake_fmnist, write_idx


def test_real_fmnist_shapes_and_labels(fmnist_dir: Path) -> None:
    ds = load_dataset("fmnist", str(fmnist_dir))
    assert ds.train.images.shape == (60000, 1, 28, 28)
    assert ds.test.images.shape == (10000, 1, 28, 28)
    assert ds.train.images.dtype == torch.uint8
    assert ds.train.labels.dtype == torch.int64
    assert set(ds.train.labels.unique().tolist()) == set(range(10))
    # Fashion-MNIST is balanced: 6000 train / 1000 test images per class
    assert torch.bincount(ds.train.labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    x = ds.normalize(ds.test.images[:1000])
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


def test_idx_roundtrip_plain_and_gzip(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = write_idx(tmp_path / f"a{compress}", arr, compress=compress)
        np.testing.assert_array_equal(read_idx(path), arr)


def test_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"ab"))
    with pytest.raises(DataFormatError, match="5 bytes"):
        read_idx(short)


def test_data_dir_wins_over_system_copy(tmp_path: Path) -> None:
    fake = make_fake_fmnist(tmp_path / "fm", n_train=30, n_test=10)
    load_dataset.cache_clear()
    ds = load_dataset("fmnist", str(tmp_path / "fm"))
    assert ds.source == fake and len(ds.train) == 30 and len(ds.test) == 10


def test_env_var_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_cifar10(tmp_path)
    monkeypatch.setenv("IMMUNEFL_DATA", str(tmp_path))
    assert locate_dataset("cifar10", "", allow_download=False) == tmp_path / "cifar-10-batches-py"


def test_cifar10_loader_on_generated_batches(tmp_path: Path) -> None:
    d = make_fake_cifar10(tmp_path, per_batch=12)
    load_dataset.cache_clear()
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train.images.shape == (60, 3, 32, 32) and ds.test.images.shape == (12, 3, 32, 32)
    with open(d / "data_batch_2", "rb") as fh:
        raw = pickle.load(fh, encoding="latin1")
    # row-major 3072 = 3 x 32 x 32 (channel planes), as torchvision reads it
    np.testing.assert_array_equal(ds.train.images[12].numpy(), raw["data"][0].reshape(3, 32, 32))
    assert ds.train.labels[12:24].tolist() == raw["labels"]


def test_cifar_batch_format_errors(tmp_path: Path) -> None:
    p = tmp_path / "b"
    p.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError):
        read_cifar_batch(p)
    with open(p, "wb") as fh:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, fh)
    with pytest.raises(DataFormatError, match="malformed"):
        read_cifar_batch(p)


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    """CIFAR-10's python batches are pickles; a crafted one must not run code (issue 14)."""
    import os

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "data_batch_1"
    with open(p, "wb") as fh:
        pickle.dump({"data": Evil(), "labels": [0]}, fh)
    with pytest.raises(DataFormatError, match="refused 'posix.system'|refused 'os.system'"):
        read_cifar_batch(p)
    assert not marker.exists()
    with open(p, "wb") as fh:  # a real batch, pickled with protocol 2 like the original files
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, fh, protocol=2)
    images, labels = read_cifar_batch(p)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]


def test_missing_dataset_message_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("task.datafiles.SYSTEM_DATA_ROOT", tmp_path / "nowhere")
    monkeypatch.setenv("IMMUNEFL_DATA", str(tmp_path / "empty"))
    (tmp_path / "also-empty").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        locate_dataset("cifar10", str(tmp_path / "also-empty"), allow_download=False)
    msg = str(info.value)
    assert "also-empty" in msg and "cifar-10-python.tar.gz" in msg and "data-dir" in msg
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        locate_dataset("fmnist", "", allow_download=False)


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    """A typo in data-dir must not train on the system copy (which exists here)."""
    with pytest.raises(DataNotFoundError, match="data-dir .*typo does not exist"):
        locate_dataset("fmnist", str(tmp_path / "typo"), allow_download=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no 'fmnist' files"):
        locate_dataset("fmnist", str(tmp_path / "empty"), allow_download=False)


def test_decoded_arrays_are_cached_and_follow_the_source_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMMUNEFL_CACHE", str(tmp_path / "cache"))
    d = make_fake_cifar10(tmp_path / "c", per_batch=12)
    decoded: list[Path] = []
    real = data._LOADERS["cifar10"]
    monkeypatch.setitem(data._LOADERS, "cifar10", lambda x: decoded.append(x) or real(x))

    train, test = read_splits("cifar10", d)
    assert len(decoded) == 1 and decoded_cache_path("cifar10", d).exists()
    train2, test2 = read_splits("cifar10", d)
    assert len(decoded) == 1  # served from the cache, identical
    assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
    assert train2.labels.dtype == torch.int64 and train2.images.dtype == torch.uint8

    # a changed source file is a different cache entry: decoded again, new content
    old_path = decoded_cache_path("cifar10", d)
    make_fake_cifar10(tmp_path / "c", per_batch=12, seed=1)
    assert decoded_cache_path("cifar10", d) != old_path
    train3, _ = read_splits("cifar10", d)
    assert len(decoded) == 2 and not torch.equal(train3.images, train.images)

    # a damaged entry is reported and replaced
    decoded_cache_path("cifar10", d).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged"):
        train4, _ = read_splits("cifar10", d)
    assert len(decoded) == 3 and torch.equal(train4.images, train3.images)
    read_splits("cifar10", d)
    assert len(decoded) == 3


def test_fmnist_from_the_decoded_cache_equals_the_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMMUNEFL_CACHE", str(tmp_path / "cache"))
    d = make_fake_fmnist(tmp_path / "fm", n_train=30, n_test=10)
    direct = data._load_fmnist(d)
    read_splits("fmnist", d)  # decodes and stores
    cached = read_splits("fmnist", d)
    for a, b in zip(direct, cached, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
