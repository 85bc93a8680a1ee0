"""What every attack shares: the context a malicious node acts in and update arithmetic.

An attack is a small class: ``__init__(config)`` reads and validates its run-config keys,
``craft(ctx) -> state_dict`` returns the model state the malicious node sends. The ClientApp
builds the `AttackContext`; modifiers (``attack-collude``, ``attack-adaptive``) wrap `craft`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from immunefl.data import Dataset
from immunefl.seeding import torch_generator
from immunefl.training import BatchTransform, LossFn, TrainResult, train_sgd

State = dict[str, torch.Tensor]


@dataclass
class AttackContext:
    """Everything a malicious node knows in one round."""

    config: Mapping[str, Any]
    dataset: Dataset
    partition_id: int
    indices: torch.Tensor  # this node's training indices
    partitions: tuple[torch.Tensor, ...]  # every partition (attackers may collude on theirs)
    malicious: tuple[int, ...]  # partition ids of all malicious nodes
    server_round: int
    global_state: State
    build_model: Callable[[], nn.Module]
    device: torch.device
    cache: dict[str, Any] = field(default_factory=dict)

    def generator(self, stream: str, *keys: int) -> torch.Generator:
        return torch_generator(int(self.config["seed"]), stream, self.server_round, *keys)

    def fresh_model(self) -> nn.Module:
        model = self.build_model()
        model.load_state_dict(self.global_state)
        return model.to(self.device)

    def train(
        self,
        indices: torch.Tensor,
        epochs: int,
        generator: torch.Generator,
        loss_fn: LossFn | None = None,
        batch_transform: BatchTransform | None = None,
    ) -> tuple[State, TrainResult]:
        """Local SGD from the global model with the run's optimiser settings."""
        model = self.fresh_model()
        result = train_sgd(
            model, self.dataset, self.dataset.train, indices,
            epochs=epochs, batch_size=int(self.config["batch-size"]),
            lr=float(self.config["lr"]), momentum=float(self.config["momentum"]),
            generator=generator, device=self.device, loss_fn=loss_fn,
            batch_transform=batch_transform,
        )  # fmt: skip
        return {k: v.detach() for k, v in model.state_dict().items()}, result

    def benign_update(self, partition: int) -> torch.Tensor:
        """The flat update partition `partition` would send this round if it were benign.

        Every attacker computes the same value (the seed is keyed by round and partition), so
        colluding attackers share these estimates without communicating.
        """
        key = f"benign-{partition}"
        if key not in self.cache:
            state, _ = self.train(
                self.partitions[partition], int(self.config["local-epochs"]),
                self.generator("attack-benign-estimate", partition),
            )  # fmt: skip
            self.cache[key] = flatten_update(state, self.global_state)
        return self.cache[key]


def float_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point()]


def flatten_update(state: Mapping[str, torch.Tensor], global_state: Mapping[str, torch.Tensor]):
    """``state - global`` over the floating-point tensors, flattened in key order."""
    return torch.cat(
        [(state[k].float() - global_state[k].to(state[k].device).float()).reshape(-1)
         for k in float_keys(global_state)]
    )  # fmt: skip


def state_from_update(update: torch.Tensor, global_state: Mapping[str, torch.Tensor]) -> State:
    """``global + update`` (flat, floating-point tensors); other tensors copied from global."""
    out: State = {}
    offset = 0
    for k, v in global_state.items():
        if v.is_floating_point():
            n = v.numel()
            out[k] = (v.float() + update[offset : offset + n].to(v.device).view_as(v)).to(v.dtype)
            offset += n
        else:
            out[k] = v.clone()
    if offset != update.numel():
        raise ValueError(f"update has {update.numel()} values, model has {offset}")
    return out


def boost(state: State, global_state: Mapping[str, torch.Tensor], factor: float) -> State:
    """Explicit boosting (Bhagoji et al., 2019): send ``global + factor * (state - global)``."""
    if factor == 1.0:
        return state
    return state_from_update(flatten_update(state, global_state) * factor, global_state)
