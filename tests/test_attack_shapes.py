"""Every attack on every data shape and every model that fits it: one malicious local training
call returns a finite update that differs from the same node's benign update.

A crash here used to be invisible in a run (a failed reply, the round aggregated the benign
updates only, the defense looked good): 3-channel data broke the backdoor trigger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attacks import ATTACKS, AttackContext, craft_malicious
from attacks.base import flatten_update
from attacks.triggers import apply_trigger, normalized_white, trigger_mask
from task.catalog import MODEL_DATASETS
from task.data import Dataset, read_splits
from task.models import build_model, init_model
from tests.conftest import make_fake_cifar10, make_fake_fmnist, typed_config

CPU = torch.device("cpu")
CASES = [(d, m) for d in ("fmnist", "cifar10") for m, ds in MODEL_DATASETS.items() if d in ds]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    root = tmp_path_factory.mktemp("data")
    fm = make_fake_fmnist(root / "fmnist", n_train=60, n_test=20)
    cf = make_fake_cifar10(root / "cifar", per_batch=12)  # 60 train images, 12 test
    return {name: Dataset(name, *read_splits(name, path), path)
            for name, path in (("fmnist", fm), ("cifar10", cf))}  # fmt: skip


def _context(dataset: Dataset, model: str, attack: str, tmp_path: Path) -> AttackContext:
    parts = tuple(torch.arange(i * 10, (i + 1) * 10) for i in range(6))  # 6 nodes, 10 images
    # a round of all 6: benign 0-3 (what full-knowledge attacks replay), attackers 4 and 5
    cfg = {"dataset": dataset.name, "model": model, "attack": attack,
           "num-partitions": 6, "num-malicious": 2, "clients-per-round": 6,
           "malicious-per-round": 2, "attack-local-epochs": 1, "batch-size": 5,
           "trigger-size": 3}  # fmt: skip
    if attack == "edge-case":
        c, h, w = dataset.train.images.shape[1:]
        images = np.random.default_rng(0).integers(0, 256, (8, c, h, w), dtype=np.uint8)
        np.save(tmp_path / "edge.npy", images)
        cfg["edge-case-file"] = str(tmp_path / "edge.npy")
    return AttackContext(
        config=typed_config(**cfg), dataset=dataset, partition_id=5, indices=parts[5],
        partitions=parts, malicious=(4, 5), server_round=1,
        global_state=init_model(model, dataset.name, 0).state_dict(),
        build_model=lambda: build_model(model, dataset.name), device=CPU,
        round_benign=(0, 1, 2, 3), round_malicious=(4, 5),
    )  # fmt: skip


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize(("data", "model"), CASES)
def test_every_attack_runs_on_every_data_shape(datasets, data, model, attack, tmp_path):
    ctx = _context(datasets[data], model, attack, tmp_path)
    malicious = flatten_update(craft_malicious(ctx), ctx.global_state)
    benign = ctx.benign_update(ctx.partition_id)
    assert malicious.shape == benign.shape and torch.isfinite(malicious).all()
    assert float(torch.linalg.vector_norm(malicious - benign)) > 1e-3 * float(
        torch.linalg.vector_norm(benign)
    )


def test_the_trigger_is_each_channels_white_in_normalised_space(datasets) -> None:
    """The attacker writes normalised white into its batches; the server triggers uint8 images
    and normalises them: the two must give the same pixels on every channel."""
    cifar = datasets["cifar10"]
    white = normalized_white(cifar)
    assert white.shape == (3, 1) and len(set(white.flatten().tolist())) == 3  # per channel
    images = cifar.train.images[:2]
    mask = trigger_mask(32, 32, 4)
    server = cifar.normalize(apply_trigger(images, mask))
    client = cifar.normalize(images).clone()
    client[:, :, mask] = white
    torch.testing.assert_close(client, server)


@pytest.mark.parametrize(("c", "h", "w"), [(1, 28, 28), (3, 32, 32)])
def test_digits_edge_cases_fit_the_data_and_are_deterministic(c: int, h: int, w: int) -> None:
    from attacks.backdoor import digits_edge_cases, edge_case_images, edge_case_split

    x = digits_edge_cases(c, h, w)
    assert x.shape == (1797, c, h, w) and x.dtype == torch.uint8
    assert torch.equal(x, digits_edge_cases(c, h, w))  # every node and the server agree
    train, test = edge_case_split(x)
    assert len(train) == 898 and len(test) == 899
    flat = {bytes(t.numpy().tobytes()) for t in train}
    assert not any(bytes(t.numpy().tobytes()) in flat for t in test)  # disjoint halves
    assert (x[:, 0] == x[:, -1]).all()  # grey replicated over channels
    like = torch.zeros(2, c, h, w, dtype=torch.uint8)
    cfg = typed_config(**{"edge-case-source": "digits", "edge-case-file": ""})
    assert torch.equal(edge_case_images(cfg, like), x)
    with pytest.raises(ValueError, match="valid: file, digits"):
        edge_case_images(typed_config(**{"edge-case-source": "mnist"}), like)


def test_edge_case_source_is_validated_before_anything_starts(tmp_path: Path) -> None:
    from immunefl.experiments import resolve_config
    from task.schema import ConfigError

    base = {"attack": "edge-case", "num-malicious": "5", "adv-rounds": "2"}
    resolve_config(None, {**base, "edge-case-source": "digits"})  # ships offline: fine
    with pytest.raises(ConfigError, match="'edge-case-source' is 'svhn'; valid: file, digits"):
        resolve_config(None, {**base, "edge-case-source": "svhn"})
    with pytest.raises(ConfigError, match="needs 'edge-case-file'"):
        resolve_config(None, base)
    from immunefl.cli import checked

    config = resolve_config(None, {**base, "edge-case-file": str(tmp_path / "nope.npy")})
    with pytest.raises(ConfigError, match="nope.npy does not exist"):
        checked([({}, config)])  # before anything starts (found by the checker process)
