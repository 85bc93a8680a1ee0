"""Neurotoxin (Zhang, Panda, Song, Yang, Mahoney, Gonzalez, Ramchandran & Mittal, ICML 2022,
"Neurotoxin: Durable Backdoors in Federated Learning", Sec. 3, Algorithm 1).

Benign clients mostly change the coordinates with the largest gradient magnitude, and those
overwrite a backdoor quickly once the attacker stops. Neurotoxin therefore confines the
backdoor to the coordinates the benign clients rarely change: it estimates the benign gradient
by the previous round's global update (the difference of the last two global models, which
every client receives), finds its top-``ratio`` coordinates by magnitude, and projects its
backdoor training onto the OTHER coordinates.

Threat model. The attacker controls its own client(s) and data; it sees only the global models
it is sent (hence the previous global update); no benign client's update, no aggregation rule.

Authors' code (github.com/jhcknzzm/Federated-Learning-Backdoor, commit 21a9eaf):

* ``--gradmask_ratio`` is the fraction of coordinates KEPT (the README's "top-ratio weights will
  be retained" is misleading: helper.py lines 178-180 keep the ``int(d * ratio)`` SMALLEST
  ``|g|`` via ``topk(-|g|)``); default 1 = no mask (main_training.py lines 149-152), and the
  Neurotoxin runs mostly use 0.95 (run_backdoor_cv_task.sh lines 6-10 also 0.99 and 0.97;
  FL_Backdoor_NLP/run_NLP_tasks.sh mostly 0.95). Here ``ratio`` is the fraction EXCLUDED (the
  paper's top-k%), so the authors' 0.95 is ``ratio = 0.05``, the default.
* Their mask is computed from the global model's gradient on clean data sampled from benign
  participants (train_funcs.py lines 98-103, ``grad_mask_cv``), over all layers together when
  ``aggregate_all_layer = 1``; the paper's Algorithm 1 uses the previous global update, which
  is what this module takes as input (any estimate of the benign gradient works).
* The mask is applied to the gradient at EVERY local step before ``optimizer.step()``
  (train_funcs.py lines 412-413, ``apply_grad_mask`` at line 627): projected gradient descent.
  With plain SGD that equals projecting the final update once (`project` on the update); with
  momentum or weight decay it does not, and the attacker's training loop should call `project`
  on each step's gradient.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from attacks.backdoor import POISON_PARAM, planted_backdoor, planted_problems
from attacks.base import Attack, AttackContext, State, flatten_update, float_keys, state_from_update
from task.models import init_model
from task.params import Param
from task.runconfig import RunConfig

DEFAULT_RATIO = 0.05  # fraction excluded; authors' runs: --gradmask_ratio 0.95 kept


def neurotoxin_mask(prev_global_update: torch.Tensor, ratio: float = DEFAULT_RATIO) -> torch.Tensor:
    """Boolean mask shaped like ``prev_global_update``: False on its ``round(ratio * d)``
    largest-magnitude coordinates (ties: any ``round(ratio * d)`` of them), True elsewhere (the
    coordinates the attacker may change). The authors' code keeps ``int(d * (1 - ratio))``
    coordinates instead (``helper.py``: ``topk(-|g|, int(d * 0.95))``), which can mask one
    more (d = 50, ratio 0.05: 3 there, 2 here, as 0.95 * 50 is 47.499... in floating point).

    >>> neurotoxin_mask(torch.tensor([0.1, -5.0, 0.2, 3.0]), 0.5)
    tensor([ True, False,  True, False])
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio must lie in [0, 1), got {ratio}")
    flat = prev_global_update.reshape(-1)
    k = round(ratio * flat.numel())
    keep = torch.ones(flat.shape, dtype=torch.bool, device=flat.device)
    if k > 0:
        keep[torch.topk(flat.abs(), k).indices] = False
    return keep.reshape(prev_global_update.shape)


def project(update: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``update`` with the coordinates outside ``mask`` set to 0 (a gradient or an update).

    >>> project(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, False, True]))
    tensor([1., 0., 3.])
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if mask.shape != update.shape:
        raise ValueError(
            f"mask must have the update's shape {tuple(update.shape)}, got {tuple(mask.shape)}"
        )
    return torch.where(mask, update, torch.zeros_like(update))


class GradientProjection:
    """Step hook: before every optimiser step, zero the gradient outside the mask (PGD onto the
    allowed coordinates, as the authors' ``apply_grad_mask``); `masks` by parameter name."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        self.pairs = [(p, masks[name].to(p.device, p.dtype))
                      for name, p in model.named_parameters() if name in masks]  # fmt: skip

    def start_epoch(self) -> None:
        pass

    @torch.no_grad()
    def before_step(self) -> None:
        for p, mask in self.pairs:
            if p.grad is not None:
                p.grad.mul_(mask)

    def after_step(self) -> None:
        pass


def split_mask(
    mask: torch.Tensor, global_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A flat mask over the update's coordinates (`attacks.base.flatten_update`'s layout) as
    one mask per floating-point tensor of the state.

    >>> split_mask(torch.tensor([True, False, True]), {"w": torch.zeros(2), "b": torch.zeros(1)})
    {'w': tensor([ True, False]), 'b': tensor([True])}
    """
    out, offset = {}, 0
    for k in float_keys(global_state):
        n = global_state[k].numel()
        out[k] = mask[offset : offset + n].view_as(global_state[k])
        offset += n
    return out


class Neurotoxin(Attack):
    """``attack = neurotoxin``: the backdoor of ``backdoor-poison`` (`attacks.backdoor`'s poisoned
    batches, ``attack-local-epochs``) trained with every step's gradient projected off the
    ``neurotoxin-ratio`` largest-magnitude coordinates of the previous global update (PGD), the
    final update projected too (BatchNorm statistics are not gradients) and boosted by
    ``attack-boost`` (a linear scale keeps it on the mask).

    The previous global update: ``G_t - G_prev``, with ``G_prev`` the global model this node
    received the last time it attacked, which the ClientApp keeps in the node's state across
    rounds (`Attack.NEEDS_PREVIOUS_GLOBAL`): the previous round's update, as in the paper, when
    the node attacked in round t-1 (``attack-mode = continuous`` with every attacker sampled,
    or consecutive ``adv-rounds``); the sum of the global updates since then otherwise. A node
    attacking for the first time uses the initial model, which every node rebuilds from the
    seed (`task.models.init_model`); in round 1 that update is zero and nothing is masked.
    Threat model: the module docstring (it sees only the global models sent to it).
    """

    NEEDS_PREVIOUS_GLOBAL = True
    PARAMS = (
        POISON_PARAM,
        Param("neurotoxin-ratio", "ratio", DEFAULT_RATIO,
              "neurotoxin: fraction of coordinates excluded (top-k of the last global update)",
              low=0.0, high=1.0, high_open=True),
    )  # fmt: skip

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        return planted_problems(config)

    def mask(self, ctx: AttackContext) -> torch.Tensor:
        """The coordinates it may change this round (flat, the update's layout)."""
        prev = ctx.previous_global
        if prev is None:
            cfg = self.config
            prev = init_model(cfg.model, cfg.dataset, cfg.seed).state_dict()
        delta = flatten_update(ctx.global_state, prev)
        if not bool(delta.any()):
            return torch.ones_like(delta, dtype=torch.bool)
        return neurotoxin_mask(delta, self.params["ratio"])

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        mask = self.mask(ctx)
        masks = split_mask(mask, ctx.global_state)
        backdoor = planted_backdoor(self.config)
        state, _ = ctx.train(
            indices, backdoor.epochs, generator,
            batch_transform=backdoor.poisoned_batches(ctx, generator),
            hooks_for=lambda model: [GradientProjection(model, masks)],
        )  # fmt: skip
        update = project(flatten_update(state, ctx.global_state), mask.to(state_device(state)))
        return state_from_update(update * self.config.attack_boost, ctx.global_state)


def state_device(state: Mapping[str, torch.Tensor]) -> torch.device:
    return next(iter(state.values())).device
