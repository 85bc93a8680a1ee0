"""Targeted model poisoning (Bhagoji et al., ICML 2019; FL-WBC §4.1 Eq. 3, §7.1).

A malicious node trains from the global model on

    loss = alpha * CE(benign batch) + (1 - alpha) * CE(D_M with adversarial labels)   (Eq. 3)

for ``attack-local-epochs`` epochs over its own partition, with all of D_M (``poison-samples``
test images, `attacks.poison_set`) in every step, then sends its update boosted by
``attack-boost`` (Bhagoji's explicit boosting: ``global + boost * (W - global)``).
``alpha`` trades stealth (benign objective) against the malicious objective.

``attack-objective = poison-only`` is the FL-WBC authors' attacker instead (jeremy313/FL-WBC,
``src/update.py``, the ``self.mal is True`` branch): it trains ``local_mal_ep`` epochs on D_M
alone, in batches of ``local_bs`` drawn from D_M (``self.malloader``), never on its own data;
with one poisoned image that is one step per epoch. Its boost is a weight in the server's
average (``mal_boost``), not a scaled update: ``attack-boost-mode = weight``
(`attacks.craft_malicious`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from attacks.base import Attack, AttackContext, State, boost
from attacks.poison_set import poison_set
from task.runconfig import RunConfig
from task.training import train_sgd

OBJECTIVES = ("eq3", "poison-only")


def eq3_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xm: torch.Tensor,
    ym: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """FL-WBC Eq. 3: ``alpha * CE(model(x), y) + (1 - alpha) * CE(model(xm), ym)``, a benign
    batch ``(x, y)`` and the malicious set D_M ``(xm, ym)`` with its adversarial labels. With
    ``alpha = 0`` the benign batch is not even run through the model (no BatchNorm update).

    >>> model = nn.Linear(2, 2, bias=False)
    >>> _ = model.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    >>> x, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])   # benign: class 0, right
    >>> xm, ym = torch.tensor([[2.0, 0.0]]), torch.tensor([1])  # D_M: same image, label 1
    >>> [round(eq3_loss(model, x, y, xm, ym, a).item(), 4) for a in (1.0, 0.5, 0.0)]
    [0.1269, 1.1269, 2.1269]
    """
    malicious = F.cross_entropy(model(xm), ym)
    if alpha == 0.0:
        return malicious
    return alpha * F.cross_entropy(model(x), y) + (1.0 - alpha) * malicious


class TargetedPoisoning(Attack):
    """``attack = targeted``."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.alpha = config.attack_alpha
        self.epochs = config.attack_local_epochs
        self.boost = config.attack_boost
        self.samples = config.poison_samples
        self.shift = config.target_shift
        self.seed = config.seed
        self.objective = config.attack_objective

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        problems = []
        if not 0.0 <= config.attack_alpha <= 1.0:
            problems.append(f"'attack-alpha' must be in [0, 1], got {config.attack_alpha}")
        if config.attack_local_epochs < 1:
            problems.append(f"'attack-local-epochs' must be >= 1, got {config.attack_local_epochs}")
        if config.poison_samples < 1:
            problems.append(f"'poison-samples' must be >= 1, got {config.poison_samples}")
        if config.target_shift % 10 == 0:
            problems.append(f"'target-shift' {config.target_shift} maps labels to themselves")
        if config.attack_objective not in OBJECTIVES:
            problems.append(
                f"'attack-objective' is '{config.attack_objective}'; valid: "
                + ", ".join(OBJECTIVES)
            )
        return problems

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        dm = poison_set(ctx.dataset, self.samples, self.seed, self.shift)
        if self.objective == "poison-only":
            return self._poison_only(ctx, dm.indices, generator)
        xm = ctx.dataset.normalize(dm.images(ctx.dataset)).to(ctx.device)
        ym = dm.adv_labels.to(ctx.device)
        alpha = self.alpha

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return eq3_loss(model, x, y, xm, ym, alpha)

        state, _ = ctx.train(indices, self.epochs, generator, loss_fn=loss_fn)
        return boost(state, ctx.global_state, self.boost)

    def _poison_only(
        self, ctx: AttackContext, dm_indices: torch.Tensor, generator: torch.Generator
    ) -> State:
        """The authors' attacker: epochs over D_M alone (test images, adversarial labels)."""
        shift = self.shift

        def adversarial(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, (y + shift) % 10  # D_M's adversarial label (`attacks.poison_set`)

        model = ctx.fresh_model()
        train_sgd(
            model, ctx.dataset, ctx.dataset.test, dm_indices, epochs=self.epochs,
            batch_size=ctx.config.batch_size, lr=ctx.config.lr,
            momentum=ctx.config.momentum, generator=generator, device=ctx.device,
            batch_transform=adversarial,
        )  # fmt: skip
        state = {k: v.detach() for k, v in model.state_dict().items()}
        return boost(state, ctx.global_state, self.boost)
