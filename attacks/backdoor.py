"""Backdoor attacks: BadNets pixel trigger, DBA and edge-case (poisoned batches).

In every local step a malicious node replaces ``poison-fraction`` of its batch with poisoned
samples labelled ``backdoor-target``:

- ``backdoor``: the batch images with the full pixel trigger (`attacks.triggers`);
- ``dba``: the batch images with this attacker's quarter of the trigger (Xie et al., 2020);
- ``edge-case``: out-of-distribution images (Wang et al., 2020: inputs of low density under the
  benign distribution, labelled with the target class), from ``edge-case-source``:
  ``file`` reads ``edge-case-file``, a ``.pt``/``.npy`` uint8 tensor ``(N, C, H, W)`` or
  ``(N, H, W)``; ``digits`` builds them offline from scikit-learn's handwritten digits
  (`digits_edge_cases`). The first half trains the attack, the second half measures its
  success.

The update is boosted by ``attack-boost`` (1 = plain data poisoning).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from attacks.base import Attack, AttackContext, State, boost
from attacks.triggers import DBA_PARTS, normalized_white, trigger_mask
from task.params import Param
from task.runconfig import RunConfig
from task.training import BatchTransform

BACKDOOR_KINDS = ("backdoor", "dba", "edge-case")
EDGE_CASE_SOURCES = ("file", "digits")
DIGITS_SEED = 20200711  # fixed: every node and the server shuffle the digits alike
#: what ``backdoor-poison`` may plant: the full pixel trigger, or the edge-case images
POISONS = ("pixel", "edge-case")
#: attacks that plant this module's backdoor by other means (``backdoor-poison`` says which)
PLANTING = ("model-replacement", "neurotoxin")


def backdoor_poison(config: RunConfig) -> str | None:
    """What the configured attack plants, for the server's ASR: ``pixel`` (the full trigger),
    ``edge-case`` (the held-out edge cases), or None (no backdoor)."""
    if config.attack in ("backdoor", "dba"):
        return "pixel"
    if config.attack == "edge-case":
        return "edge-case"
    if config.attack in PLANTING:
        return config.backdoor_poison
    return None


def planted_backdoor(config: RunConfig) -> Backdoor:
    """The `Backdoor` (unboosted) whose poisoned batches an attack in `PLANTING` trains on."""
    kind = "edge-case" if config.backdoor_poison == "edge-case" else "backdoor"
    return Backdoor(dataclasses.replace(config, attack_boost=1.0), kind)


def digits_edge_cases(channels: int, height: int, width: int) -> torch.Tensor:
    """Edge cases for Fashion-MNIST (and any image set) that ship offline: scikit-learn's 1,797
    handwritten digits (UCI, 8x8, values 0..16) as uint8 ``(1797, C, H, W)``.

    Why they are edge cases: white handwritten strokes on black, a few pixels wide, share
    neither the shapes nor the filled silhouettes of garments, so they lie where the benign
    distribution has almost no mass: Wang et al. (2020)'s definition of an edge-case input
    (low probability under the benign data), which makes a backdoor on them hard to remove
    because benign updates rarely touch the features they use. Scaled to 0..255, resized
    bilinearly to ``H x W``, repeated over the channels, shuffled with a fixed seed.

    >>> x = digits_edge_cases(1, 28, 28)
    >>> tuple(x.shape), x.dtype, int(x.max())
    ((1797, 1, 28, 28), torch.uint8, 255)
    """
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images).float().mul_(255.0 / 16.0).unsqueeze(1)
    big = F.interpolate(digits, size=(height, width), mode="bilinear", align_corners=False)
    images = big.round_().clamp_(0, 255).to(torch.uint8).expand(-1, channels, -1, -1)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(DIGITS_SEED))
    return images[order].contiguous()


def edge_case_images(config: RunConfig, like: torch.Tensor) -> torch.Tensor:
    """The configured edge-case set (``edge-case-source``), shaped like the images `like`."""
    source = config.edge_case_source
    if source == "digits":
        return digits_edge_cases(*(int(d) for d in like.shape[1:]))
    if source == "file":
        return load_edge_case(config.edge_case_file, like)
    raise ValueError(f"edge-case-source '{source}'; valid: {', '.join(EDGE_CASE_SOURCES)}")


def load_edge_case(path: str, like: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` edge-case images from `path`, checked against the dataset's shape."""
    if not path:
        raise ValueError("attack 'edge-case' needs 'edge-case-file' (a .pt or .npy of images)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"edge-case-file {p} does not exist")
    try:  # tensors and arrays only: a crafted file cannot run code
        if p.suffix == ".pt":
            data = torch.load(p, weights_only=True)
        else:
            data = torch.from_numpy(np.load(p, allow_pickle=False))
    except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong
        raise ValueError(f"edge-case-file {p} cannot be read safely: {exc}") from exc
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"edge-case-file {p} holds a {type(data).__name__}, not a tensor")
    if data.dim() == 3:
        data = data.unsqueeze(1)
    if data.dtype != torch.uint8 or tuple(data.shape[1:]) != tuple(like.shape[1:]) or len(data) < 2:
        raise ValueError(
            f"edge-case-file {p}: expected uint8 images of shape (N>=2, {tuple(like.shape[1:])}), "
            f"got {data.dtype} {tuple(data.shape)}"
        )
    return data


def edge_case_split(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train half, test half) of the edge-case images."""
    half = len(images) // 2
    return images[:half], images[half:]


class Backdoor(Attack):
    """``attack = backdoor | dba | edge-case``."""

    def __init__(self, config: RunConfig, kind: str) -> None:
        super().__init__(config)
        self.kind = kind
        self.target = config.backdoor_target
        self.fraction = config.poison_fraction
        self.size = config.trigger_size
        self.boost = config.attack_boost
        self.epochs = config.attack_local_epochs

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        problems = []
        if not 0.0 < config.poison_fraction <= 1.0:
            problems.append(f"'poison-fraction' must be in (0, 1], got {config.poison_fraction}")
        if not 0 <= config.backdoor_target < 10:
            problems.append(
                f"'backdoor-target' must be a class in [0, 10), got {config.backdoor_target}"
            )
        if config.trigger_size < 1:
            problems.append(f"'trigger-size' must be >= 1, got {config.trigger_size}")
        source = config.edge_case_source
        if source not in EDGE_CASE_SOURCES:
            problems.append(
                f"'edge-case-source' is '{source}'; valid: {', '.join(EDGE_CASE_SOURCES)}"
            )
        elif backdoor_poison(config) == "edge-case" and source == "file":
            path = config.edge_case_file
            if not path:  # (whether it exists is checked before a run starts: cli, ServerApp)
                problems.append(
                    f"attack '{config.attack}' with edge-case-source 'file' needs "
                    "'edge-case-file' (or edge-case-source 'digits', which ships offline)"
                )
        return problems

    def _poison_pool(self, ctx: AttackContext) -> torch.Tensor | None:
        if self.kind != "edge-case":
            return None
        images = edge_case_images(self.config, ctx.dataset.train.images)
        return ctx.dataset.normalize(edge_case_split(images)[0]).to(ctx.device)

    def poisoned_batches(self, ctx: AttackContext, generator: torch.Generator) -> BatchTransform:
        """The batch transform that poisons ``poison-fraction`` of every batch (reused by the
        attacks that plant this backdoor: model replacement, Neurotoxin)."""
        h, w = ctx.dataset.train.images.shape[-2:]
        part = ctx.malicious.index(ctx.partition_id) % DBA_PARTS if self.kind == "dba" else None
        mask = trigger_mask(h, w, self.size, part).to(ctx.device)
        white = normalized_white(ctx.dataset).to(ctx.device)
        pool = self._poison_pool(ctx)
        pick = torch.Generator(device="cpu").manual_seed(int(generator.initial_seed()) ^ 0x5EED)

        def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            k = max(1, round(self.fraction * len(y)))
            x, y = x.clone(), y.clone()
            if pool is None:
                x[:k, :, mask] = white  # (C, 1): each channel's own white
            else:
                x[:k] = pool[torch.randint(len(pool), (k,), generator=pick).to(pool.device)]
            y[:k] = self.target
            return x, y

        return transform

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        transform = self.poisoned_batches(ctx, generator)
        state, _ = ctx.train(indices, self.epochs, generator, batch_transform=transform)
        return boost(state, ctx.global_state, self.boost)


#: the ``backdoor-poison`` key, declared by the attacks in `PLANTING`
POISON_PARAM = Param(
    "backdoor-poison", "poison", "pixel",
    "model-replacement/neurotoxin: the backdoor planted (pixel trigger | edge-case images)",
    choices=POISONS,
)  # fmt: skip


def planted_problems(config: RunConfig) -> list[str]:
    """The planted backdoor's keys (``poison-fraction``, ``backdoor-target``, ``trigger-size``,
    ``edge-case-*``), as `Backdoor` checks them."""
    return Backdoor.config_problems(config)
