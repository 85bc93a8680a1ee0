"""What every attack shares: the `Attack` interface, the context a malicious node acts in,
and update arithmetic (the state <-> update vector conversion itself is `task.statevec`,
re-exported here).

An attack is a subclass of `Attack` that declares its hyper-parameters in ``PARAMS``
(`task.params.Param`; their checked values are ``self.params``, by argument name) and has up to
three hooks: ``config_problems(config)`` (problems that need more than one key, before anything
starts), ``__init__(config)`` and ``craft(ctx, indices, generator) -> state`` (the model state the
malicious node sends). A plugin attack (``attack = "package.module:Class"``) is the same. The
ClientApp builds the `AttackContext`; modifiers (``attack-collude``, ``attack-adaptive``) choose
``indices`` and ``generator`` and post-process what `craft` returns (`attacks.craft_malicious`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from attacks import shared_estimates
from task.data import Dataset
from task.params import Param, config_params
from task.runconfig import RunConfig
from task.seeding import torch_generator
from task.statevec import State, flatten_update, float_keys, state_from_update
from task.training import BatchTransform, LossFn, StepHook, TrainResult, train_sgd

__all__ = ["Attack", "AttackContext", "State", "boost", "flatten_update", "float_keys",
           "state_from_update"]  # fmt: skip


@dataclass
class AttackContext:
    """Everything a malicious node knows in one round.

    ``round_benign`` / ``round_malicious``: the partitions training this round, as the ServerApp's
    train message of an adversarial round says (empty when it did not say: a unit test, an old
    server); a full-knowledge attack replays the benign ones (`observed_update`).
    ``previous_global``: the global model this node received the last time it attacked (kept in
    the node's state across rounds by the ClientApp for attacks that declare
    ``NEEDS_PREVIOUS_GLOBAL``; None the first time).
    """

    config: RunConfig
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
    round_benign: tuple[int, ...] = ()
    round_malicious: tuple[int, ...] = ()
    previous_global: State | None = None

    def generator(self, stream: str, *keys: int) -> torch.Generator:
        return torch_generator(self.config.seed, stream, self.server_round, *keys)

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
        hooks_for: Callable[[nn.Module], Sequence[StepHook]] | None = None,
    ) -> tuple[State, TrainResult]:
        """Local SGD from the global model with the run's optimiser settings; ``hooks_for(model)``
        gives step hooks on the model being trained (e.g. Neurotoxin's gradient projection)."""
        model = self.fresh_model()
        result = train_sgd(
            model, self.dataset, self.dataset.train, indices,
            epochs=epochs, batch_size=self.config.batch_size,
            lr=self.config.lr, momentum=self.config.momentum,
            generator=generator, device=self.device, loss_fn=loss_fn,
            batch_transform=batch_transform,
            hooks=hooks_for(model) if hooks_for is not None else (),
        )  # fmt: skip
        return {k: v.detach() for k, v in model.state_dict().items()}, result

    def benign_update(self, partition: int) -> torch.Tensor:
        """The flat update partition `partition` would send this round if it were benign.

        Every attacker computes the same value (the seed is keyed by round and partition), so
        colluding attackers share these estimates without communicating.
        """
        return self._shared(partition, "attack-benign-estimate")

    def attackers(self) -> tuple[int, ...]:
        """The malicious partitions training this round (all of them if the server did not say)."""
        return self.round_malicious or self.malicious

    def observed_update(self, partition: int) -> torch.Tensor:
        """The flat update benign partition `partition` sends this round, as an omniscient
        attacker observes it: its training replayed with the node's own seed (stream
        ``client-data``), so it is exactly the update the node sends unless benign nodes run a
        client defense (FL-WBC or local DP noise, which the replay does not add). A simulation
        device for the full-knowledge threat model: the updates never leave the server.
        """
        return self._shared(partition, "client-data")

    def _shared(self, partition: int, stream: str) -> torch.Tensor:
        """Partition ``partition``'s update from the global model, trained with seed stream
        ``stream``: computed once per round and process, shared by every attacker there
        (`attacks.shared_estimates`); every call returns a fresh copy on ``self.device``."""
        if "round-key" not in self.cache:
            self.cache["round-key"] = shared_estimates.round_key(
                self.config, self.server_round, self.device, self.global_state
            )
        indices = self.partitions[partition]
        name = f"{stream}/{partition}/{shared_estimates.indices_digest(indices)}"

        def compute() -> torch.Tensor:
            state, _ = self.train(
                indices, self.config.local_epochs, self.generator(stream, partition)
            )
            return flatten_update(state, self.global_state)

        value = shared_estimates.shared(self.cache["round-key"], self.dataset, name, compute)
        return value.to(self.device, copy=True)  # the caller's own copy


def boost(state: State, global_state: Mapping[str, torch.Tensor], factor: float) -> State:
    """Explicit boosting (Bhagoji et al., 2019): send ``global + factor * (state - global)``."""
    if factor == 1.0:
        return state
    return state_from_update(flatten_update(state, global_state) * factor, global_state)


class Attack(ABC):
    """A malicious node's behaviour (in the style of Blades' attack interface).

    Hooks, in the order they run:

    - ``config_problems(config)`` (static): every problem with the attack's run-config keys, as
      messages naming the key and the value; called by config validation before anything
      starts, so ``__init__`` may assume valid values;
    - ``__init__(config)``: read the keys it needs;
    - ``craft(ctx, indices, generator)``: train / compute on the examples ``indices`` (the
      node's own partition, or under ``attack-collude`` the union of the malicious partitions
      or, with ``collude-budget = one-client``, a shared draw of one partition's size from it)
      with ``generator`` (seeded per round and node, or shared under
      collusion) and return the full model state to send.

    >>> import torch
    >>> class Zero(Attack):
    ...     def craft(self, ctx, indices, generator):
    ...         return {k: torch.zeros_like(v) for k, v in ctx.global_state.items()}
    >>> Zero.config_problems({}), Zero({}).config
    ([], {})
    """

    #: the attack's own hyper-parameters (`task.params.Param`); values in ``self.params``
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: the ClientApp keeps the last global model in the node's state (``ctx.previous_global``)
    NEEDS_PREVIOUS_GLOBAL: ClassVar[bool] = False

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.params = config_params(type(self), config) if isinstance(config, RunConfig) else {}

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        """Problems with the attack's run-config keys (none by default)."""
        return []

    @abstractmethod
    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        """The model state this malicious node sends this round."""
