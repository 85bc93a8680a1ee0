"""Backdoor triggers on uint8 images ``(N, C, H, W)``.

- ``pixel`` (BadNets, Gu et al. 2017): a white ``trigger-size`` x ``trigger-size`` square in the
  bottom-right corner, one pixel from the border.
- ``dba`` (Xie et al., ICLR 2020): the same square cut into 4 quadrants; attacker ``i`` embeds
  quadrant ``i mod 4`` only; the server tests with the full (union) trigger.
"""

from __future__ import annotations

from typing import Any

import torch

DBA_PARTS = 4


def trigger_mask(height: int, width: int, size: int, part: int | None = None) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the trigger (or of one DBA quadrant, ``part`` in 0..3): a
    ``size x size`` square one pixel in from the bottom-right corner.

    >>> trigger_mask(6, 6, 2).int()
    tensor([[0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    >>> int(trigger_mask(6, 6, 2, part=0).sum())  # DBA: each attacker holds one quarter
    1
    """
    if not 1 <= size <= min(height, width) - 1:
        raise ValueError(f"trigger-size must be in [1, {min(height, width) - 1}], got {size}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    top, left = height - 1 - size, width - 1 - size
    if part is None:
        mask[top : top + size, left : left + size] = True
        return mask
    half = size // 2 or 1
    rows = (top, top + half) if part in (0, 1) else (top + half, top + size)
    cols = (left, left + half) if part in (0, 2) else (left + half, left + size)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def normalized_white(dataset: Any) -> torch.Tensor:
    """The trigger's white (uint8 255) after the dataset's normalisation, per channel: ``(C, 1)``.

    Poisoned batches are already normalised, and the normalisation differs per channel
    (CIFAR-10), so the value written into a batch is each channel's own white; the server's
    ASR test applies the trigger in uint8 (`apply_trigger`) and normalises after, which gives
    the same pixels.
    """
    channels = int(dataset.train.images.shape[1])
    white = torch.full((1, channels, 1, 1), 255, dtype=torch.uint8)
    return dataset.normalize(white).reshape(channels, 1)


def apply_trigger(images: torch.Tensor, mask: torch.Tensor, value: int = 255) -> torch.Tensor:
    """A copy of uint8 `images` with the trigger pixels set to `value` on every channel."""
    out = images.clone()
    out[..., mask] = value
    return out
