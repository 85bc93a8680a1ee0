"""The attackers of one round in one process share their reference trainings
(`attacks.shared_estimates`): the second attacker trains none of them again, sends exactly what
it sent without sharing, and nothing is reused across a changed config, global model, dataset
or partition."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attacks import AttackContext, craft_malicious, shared_estimates
from attacks.base import flatten_update
from task.data import Dataset
from task.models import build_model, init_model
from tests.conftest import fake_fmnist_dataset, typed_config

CPU = torch.device("cpu")
PARTS = tuple(torch.arange(i * 8, (i + 1) * 8) for i in range(6))  # 6 nodes of 8 images


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return fake_fmnist_dataset(tmp_path_factory.mktemp("d") / "fm", n_train=48, n_test=20)


@pytest.fixture(autouse=True)
def empty_cache():
    shared_estimates.clear()
    yield
    shared_estimates.clear()


def attacker(data: Dataset, pid: int, attack: str = "alie", seed: int = 0, **overrides):
    """A malicious node's context that counts its trainings in ``ctx.cache['trained']``."""
    cfg = typed_config(**{"attack": attack, "num-partitions": 6, "num-malicious": 3,
                          "clients-per-round": 6, "malicious-per-round": 3, "batch-size": 4,
                          "attack-local-epochs": 1, **overrides})  # fmt: skip
    ctx = AttackContext(
        config=cfg, dataset=data, partition_id=pid, indices=PARTS[pid], partitions=PARTS,
        malicious=(3, 4, 5), server_round=2,
        global_state=init_model("cnn-fmnist", "fmnist", seed).state_dict(),
        build_model=lambda: build_model("cnn-fmnist", "fmnist"), device=CPU,
        round_benign=(0, 1, 2), round_malicious=(3, 4, 5),
    )  # fmt: skip
    train = ctx.train
    ctx.cache["trained"] = 0

    def counting(*args, **kwargs):
        ctx.cache["trained"] += 1
        return train(*args, **kwargs)

    ctx.train = counting
    return ctx


def sent(ctx: AttackContext) -> torch.Tensor:
    return flatten_update(craft_malicious(ctx), ctx.global_state)


@pytest.mark.parametrize(
    ("attack", "overrides", "refs"),
    [
        ("alie", {}, 3),  # ALIE: the 3 malicious partitions' benign estimates
        ("min-max", {"attack-knowledge": "full"}, 3),  # the 3 benign nodes' replays
        ("label-flip", {"attack-adaptive": True}, 3),  # own poisoned training is not shared
    ],
)
def test_second_attacker_trains_no_reference_again_and_sends_the_same(
    data, attack, overrides, refs
) -> None:
    alone = sent(attacker(data, 5, attack, **overrides))  # with nothing shared
    shared_estimates.clear()
    first = attacker(data, 4, attack, **overrides)
    sent(first)
    second = attacker(data, 5, attack, **overrides)
    with_sharing = sent(second)
    own = 1 if overrides.get("attack-adaptive") else 0
    assert first.cache["trained"] == refs + own
    assert second.cache["trained"] == own
    assert shared_estimates.stats["hits"] == refs
    assert torch.equal(with_sharing, alone)


@pytest.mark.parametrize("change", ["config", "global model", "round", "dataset", "partition"])
def test_each_thing_the_training_depends_on_is_part_of_the_key(data, tmp_path, change) -> None:
    base = attacker(data, 5)
    reference = base.benign_update(3)  # now cached: everything below differs in `change` only
    if change == "config":
        other = attacker(data, 5, lr=0.05)
    elif change == "global model":
        other = attacker(data, 5, seed=1)  # same config, round and data; another global model
    elif change == "round":
        other = attacker(data, 5)
        other.server_round = 3
    elif change == "dataset":
        other = attacker(fake_fmnist_dataset(tmp_path / "o", n_train=48, n_test=20, seed=1), 5)
    else:
        other = attacker(data, 5)
        other.partitions = (*PARTS[:3], PARTS[3][:4], *PARTS[4:])  # same id, other indices
    value = other.benign_update(3)
    assert other.cache["trained"] == 1
    assert shared_estimates.stats["hits"] == 0
    assert not torch.equal(value, reference)


def test_a_caller_modifying_its_value_changes_nobody_elses(data) -> None:
    first = attacker(data, 4)
    mine = first.benign_update(3)
    reference = mine.clone()
    mine.mul_(0)
    second = attacker(data, 5)
    assert torch.equal(second.benign_update(3), reference)
    assert second.cache["trained"] == 0


def test_a_mask_and_an_index_tensor_are_different_partitions() -> None:
    mask = torch.tensor([0, 1, 1], dtype=torch.bool)
    assert shared_estimates.indices_digest(mask) != shared_estimates.indices_digest(
        mask.to(torch.int64)
    )


def test_the_cache_holds_one_round_only(data) -> None:
    first = attacker(data, 5)
    for p in first.malicious:
        first.benign_update(p)
    assert len(shared_estimates._values) == 3
    later = attacker(data, 5)
    later.server_round = 3
    later.benign_update(3)
    assert len(shared_estimates._values) == 1
    assert later.cache["trained"] == 1


def test_the_key_names_the_whole_config() -> None:
    cfg = typed_config()
    state = init_model("cnn-fmnist", "fmnist", 0).state_dict()
    key = shared_estimates.round_key(cfg, 2, CPU, state)
    assert key == shared_estimates.round_key(cfg, 2, CPU, dict(state))
    changed = dataclasses.replace(cfg, momentum=0.5)
    assert key != shared_estimates.round_key(changed, 2, CPU, state)
    nudged = {k: v.clone() for k, v in state.items()}
    name = next(iter(nudged))
    nudged[name].view(-1)[0] += 1e-6
    assert key != shared_estimates.round_key(cfg, 2, CPU, nudged)
