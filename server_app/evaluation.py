"""Server-side evaluation of the global model: benign utility and attack success.

- ``benign_acc`` / ``benign_loss``: the test split, minus the targeted attack's D_M images;
- targeted attacks: ``mis_conf`` (mean softmax probability of the adversarial label on D_M,
  FL-WBC §7.1) and ``mis_acc`` (share of D_M classified as the adversarial label);
- backdoors: ``asr``, the share of triggered test images whose true label is not the target
  that the model classifies as the target (``backdoor`` and ``dba`` use the full trigger;
  ``edge-case`` uses the held-out half of the edge-case file; ``model-replacement`` and
  ``neurotoxin`` whichever ``backdoor-poison`` plants: `attacks.backdoor.backdoor_poison`).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord
from torch import nn

from attacks.backdoor import backdoor_poison, edge_case_images, edge_case_split
from attacks.poison_set import benign_test_indices, poison_set
from attacks.triggers import apply_trigger, trigger_mask
from task.data import Dataset, load_dataset
from task.models import build_model
from task.runconfig import RunConfig
from task.training import EVAL_BATCH_SIZE, evaluate, resolve_device


@torch.no_grad()
def misclassification(
    model: nn.Module, dataset: Dataset, images: torch.Tensor, adv_labels: torch.Tensor,
    device: torch.device,
) -> tuple[float, float]:  # fmt: skip
    """(mean softmax probability of `adv_labels`, share predicted as `adv_labels`)."""
    model.to(device).eval()
    probs = torch.softmax(model(dataset.normalize(images).to(device)), dim=1)
    target = adv_labels.to(device)
    conf = probs.gather(1, target.view(-1, 1)).mean()
    acc = (probs.argmax(1) == target).float().mean()
    return float(conf), float(acc)


@torch.no_grad()
def attack_success_rate(
    model: nn.Module, dataset: Dataset, images: torch.Tensor, target: int, device: torch.device
) -> float:
    """Share of `images` (uint8, already poisoned) classified as `target`."""
    model.to(device).eval()
    hits = 0
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        x = dataset.normalize(images[start : start + EVAL_BATCH_SIZE]).to(device)
        hits += int((model(x).argmax(1) == target).sum())
    return hits / max(len(images), 1)


class CentralEvaluator:
    """Every per-round server-side metric of a global model."""

    def __init__(self, config: RunConfig) -> None:
        self.dataset = load_dataset(config.dataset, config.data_dir)
        self.model = build_model(config.model, config.dataset)
        self.device = resolve_device(config.device)
        attack = config.attack
        self.poison = None
        self.backdoor_images: torch.Tensor | None = None
        self.target = config.backdoor_target
        if attack == "targeted":
            self.poison = poison_set(
                self.dataset, config.poison_samples, config.seed,
                config.target_shift,
            )  # fmt: skip
        elif backdoor_poison(config) == "pixel":
            test = self.dataset.test
            keep = test.labels != self.target
            h, w = test.images.shape[-2:]
            mask = trigger_mask(h, w, config.trigger_size)
            self.backdoor_images = apply_trigger(test.images[keep], mask)
        elif backdoor_poison(config) == "edge-case":
            images = edge_case_images(config, self.dataset.test.images)
            self.backdoor_images = edge_case_split(images)[1]
        self.benign_indices = benign_test_indices(
            self.dataset, self.poison.indices if self.poison is not None else None
        )

    def __call__(self, arrays: ArrayRecord) -> dict[str, float]:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(
            self.model, self.dataset, self.dataset.test, self.device, self.benign_indices
        )
        out = {"benign_acc": acc, "benign_loss": loss}
        if self.poison is not None:
            out["mis_conf"], out["mis_acc"] = misclassification(
                self.model, self.dataset, self.poison.images(self.dataset),
                self.poison.adv_labels, self.device,
            )  # fmt: skip
        if self.backdoor_images is not None:
            out["asr"] = attack_success_rate(
                self.model, self.dataset, self.backdoor_images, self.target, self.device
            )
        return out
