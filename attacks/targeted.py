"""Targeted model poisoning (Bhagoji et al., ICML 2019; FL-WBC §4.1 Eq. 3, §7.1).

A malicious node trains from the global model on

    loss = alpha * CE(benign batch) + (1 - alpha) * CE(D_M with adversarial labels)   (Eq. 3)

for ``attack-local-epochs`` epochs over its own partition, with all of D_M (``poison-samples``
test images, `attacks.poison_set`) in every step, then sends its update boosted by
``attack-boost`` (Bhagoji's explicit boosting: ``global + boost * (W - global)``).
``alpha`` trades stealth (benign objective) against the malicious objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attacks.base import AttackContext, State, boost
from attacks.poison_set import poison_set


class TargetedPoisoning:
    """``attack = targeted``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.alpha = float(config["attack-alpha"])
        self.epochs = int(config["attack-local-epochs"])
        self.boost = float(config["attack-boost"])
        self.samples = int(config["poison-samples"])
        self.shift = int(config["target-shift"])
        self.seed = int(config["seed"])

    @staticmethod
    def config_problems(config: Mapping[str, Any]) -> list[str]:
        problems = []
        if not 0.0 <= float(config["attack-alpha"]) <= 1.0:
            problems.append(f"'attack-alpha' must be in [0, 1], got {config['attack-alpha']}")
        if int(config["attack-local-epochs"]) < 1:
            problems.append(
                f"'attack-local-epochs' must be >= 1, got {config['attack-local-epochs']}"
            )
        if int(config["poison-samples"]) < 1:
            problems.append(f"'poison-samples' must be >= 1, got {config['poison-samples']}")
        if int(config["target-shift"]) % 10 == 0:
            problems.append(f"'target-shift' {config['target-shift']} maps labels to themselves")
        return problems

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        dm = poison_set(ctx.dataset, self.samples, self.seed, self.shift)
        xm = ctx.dataset.normalize(dm.images(ctx.dataset)).to(ctx.device)
        ym = dm.adv_labels.to(ctx.device)
        alpha = self.alpha

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            malicious = F.cross_entropy(model(xm), ym)
            if alpha == 0.0:
                return malicious
            return alpha * F.cross_entropy(model(x), y) + (1.0 - alpha) * malicious

        state, _ = ctx.train(indices, self.epochs, generator, loss_fn=loss_fn)
        return boost(state, ctx.global_state, self.boost)
