"""Splitting a training set across clients, with flwr-datasets partitioners.

Schemes (all deterministic in `seed`):

- ``iid``: a seeded permutation cut into equal contiguous parts (`IidPartitioner`).
- ``shard``: the FL-WBC / FedAvg pathological non-IID split: sort by label, cut into
  ``2 * num_partitions`` shards, give every client 2 shards (`ShardPartitioner`; paper §7.1,
  Appendix C.1: 200 shards for 100 clients).
- ``dirichlet``: per-class Dirichlet(alpha) proportions (`DirichletPartitioner`).

The partitioners run over an in-memory table of (index, label), so the result is a list of
index arrays into the training split, not copies of the images.

A server that trains on clean data of its own (FLTrust's root set) holds examples out first:
`root_indices` draws them (seeded), and the clients' partitions are cut from the rest only, so
no root example is in any client's partition (`cached_partitions` with ``holdout``). A clean
model trained centrally before the federation (``pretrain-holdout``, ``scripts/pretrain.py``)
is trained on `pretrain_indices`, which are likewise in no partition.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from task.cache import cache_dir, write_npz
from task.catalog import PARTITIONINGS
from task.seeding import derive_seed

SHARDS_PER_CLIENT = 2


def partition_indices(
    labels: np.ndarray | torch.Tensor,
    scheme: str,
    num_partitions: int,
    seed: int,
    alpha: float = 0.5,
) -> list[np.ndarray]:
    """Return `num_partitions` disjoint index arrays into `labels` under `scheme`."""
    from datasets import Dataset as HFDataset  # heavy import, only when partitioning
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        ShardPartitioner,
    )

    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if scheme not in PARTITIONINGS:
        raise ValueError(f"unknown partitioning '{scheme}'; valid: {', '.join(PARTITIONINGS)}")
    if num_partitions < 1 or num_partitions > n:
        raise ValueError(f"num-partitions must be in [1, {n}], got {num_partitions}")
    part_seed = derive_seed(seed, "partition") % (2**32)
    index = np.arange(n, dtype=np.int64)
    if scheme == "iid":
        # IidPartitioner cuts contiguous blocks; shuffle first so blocks are random.
        index = np.random.default_rng(part_seed).permutation(n)
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif scheme == "shard":
        num_shards = SHARDS_PER_CLIENT * num_partitions
        partitioner = ShardPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_shards_per_partition=SHARDS_PER_CLIENT,
            shard_size=n // num_shards,
            shuffle=True,
            seed=part_seed,
        )
    else:
        if not alpha > 0:
            raise ValueError(f"dirichlet-alpha must be > 0, got {alpha}")
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=0,
            self_balancing=False,
            shuffle=True,
            seed=part_seed,
        )
    partitioner.dataset = HFDataset.from_dict({"idx": index, "label": labels[index]})
    return [
        np.asarray(partitioner.load_partition(pid)["idx"], dtype=np.int64)
        for pid in range(num_partitions)
    ]


CACHE_FORMAT = 1  # bump when partition_indices changes what it returns


def partition_cache_key(
    labels: np.ndarray, scheme: str, num_partitions: int, seed: int, alpha: float
) -> str:
    """A digest of everything the partition depends on: the labels themselves, the scheme and
    its parameters, and the flwr-datasets version whose partitioners produced it."""
    from importlib.metadata import version

    h = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    params = (CACHE_FORMAT, version("flwr-datasets"), scheme, num_partitions, seed,
              float(alpha) if scheme == "dirichlet" else None)  # fmt: skip
    h.update(repr(params).encode())
    return h.hexdigest()[:32]


def load_or_partition(
    labels: np.ndarray, scheme: str, num_partitions: int, seed: int, alpha: float,
    directory: Path | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """`partition_indices`, cached on disk: a whole federation's processes (and later runs)
    compute a partition once instead of once per process (flwr-datasets and its `datasets`
    import cost seconds per Ray actor). A damaged cache file is recomputed and replaced."""
    labels = np.asarray(labels, dtype=np.int64)
    path = (directory or cache_dir() / "partitions") / (
        partition_cache_key(labels, scheme, num_partitions, seed, alpha) + ".npz"
    )
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                flat, offsets = z["indices"], z["offsets"]
            if offsets.shape == (num_partitions + 1,) and offsets[-1] == flat.shape[0]:
                return [flat[offsets[i] : offsets[i + 1]] for i in range(num_partitions)]
        except (OSError, ValueError, KeyError):
            pass
        warnings.warn(f"partition cache {path} is damaged; recomputing it", stacklevel=2)
    parts = partition_indices(labels, scheme, num_partitions, seed, alpha)
    offsets = np.cumsum([0, *(len(x) for x in parts)]).astype(np.int64)
    write_npz(path, indices=np.concatenate(parts), offsets=offsets)
    return parts


def server_holdout(config) -> int:
    """Training examples the server keeps for itself, in no client's partition: FLTrust's root
    set (``fltrust-root-size`` when ``strategy = fltrust``), else none. `config`: a RunConfig."""
    return int(config.fltrust_root_size) if config.strategy == "fltrust" else 0


def _seeded_draw(num_examples: int, size: int, seed: int, stream: str) -> np.ndarray:
    """`size` distinct indices of `num_examples` (sorted), drawn on `stream` of `seed`."""
    rng = np.random.default_rng(derive_seed(seed, stream) % (2**32))
    return np.sort(rng.choice(num_examples, size=size, replace=False)).astype(np.int64)


def root_indices(num_examples: int, size: int, seed: int) -> np.ndarray:
    """The server's ``size`` root examples: a seeded uniform draw (stream ``root-set``) of
    indices into the training split, sorted.

    >>> root_indices(10, 3, 0).tolist() == root_indices(10, 3, 0).tolist()
    True
    """
    if not 0 < size < num_examples:
        raise ValueError(f"a root set of {size} examples needs 0 < size < {num_examples}")
    return _seeded_draw(num_examples, size, seed, "root-set")


#: the pretraining slice is one draw for every run seed, so one clean model serves all seeds
PRETRAIN_SLICE_SEED = 0


def pretrain_indices(num_examples: int, size: int) -> np.ndarray:
    """The ``pretrain-holdout`` slice: ``size`` training indices (sorted) drawn on the stream
    ``pretrain-set`` of seed `PRETRAIN_SLICE_SEED`, whatever the run's seed, so the clean model
    of ``scripts/pretrain.py`` is trained once and no run seed's partitions hold its examples.

    >>> pretrain_indices(10, 3).tolist() == pretrain_indices(10, 3).tolist()
    True
    """
    if not 0 < size < num_examples:
        raise ValueError(f"'pretrain-holdout' {size} needs 0 < size < {num_examples} examples")
    return _seeded_draw(num_examples, size, PRETRAIN_SLICE_SEED, "pretrain-set")


@functools.lru_cache(maxsize=8)
def cached_partitions(
    dataset_name: str, data_dir: str, scheme: str, num_partitions: int, seed: int, alpha: float,
    holdout: int = 0, pretrain: int = 0,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """`partition_indices` of a dataset's training split: once per process, and on disk.
    With ``holdout`` > 0 the `root_indices`, with ``pretrain`` > 0 the `pretrain_indices`, are
    taken out first (in no partition)."""
    from task.data import load_dataset

    ds = load_dataset(dataset_name, data_dir)
    labels = ds.train.labels.numpy()
    n = labels.shape[0]
    excluded = [root_indices(n, holdout, seed)] if holdout > 0 else []
    if pretrain > 0:
        excluded.append(pretrain_indices(n, pretrain))
    if not excluded:
        parts = load_or_partition(labels, scheme, num_partitions, seed, alpha)
    else:
        rest = np.setdiff1d(np.arange(n), np.concatenate(excluded))
        parts = [rest[p] for p in load_or_partition(labels[rest], scheme, num_partitions, seed,
                                                    alpha)]  # fmt: skip
    return tuple(torch.from_numpy(np.ascontiguousarray(p)) for p in parts)


def config_partitions(config, num_partitions: int | None = None) -> tuple[torch.Tensor, ...]:
    """Every partition of a run (`config`: a RunConfig), with the server's root set and the
    pretraining slice in none of them."""
    c = config
    return cached_partitions(
        c.dataset, c.data_dir, c.partitioning,
        c.num_partitions if num_partitions is None else num_partitions, c.seed,
        c.dirichlet_alpha, server_holdout(c), c.pretrain_holdout,
    )  # fmt: skip
