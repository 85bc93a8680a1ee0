"""Which client-side defense a benign node applies (``client-defense``), built from the config.

- ``none``: plain local SGD;
- ``wbc``: FL-WBC during training, keys ``wbc-s``, ``wbc-variant`` (``paper``: Algorithm 1,
  `client_app.wbc`, with ``wbc-noise-param``; ``official``: the authors' code,
  `client_app.wbc_official`; ``dense``: its noise without the null-space test);
- ``ldp``: clip and noise the update before sending (`client_app.ldp`), ``ldp-clip``,
  ``ldp-noise-multiplier``.

Malicious nodes never apply the benign defense. Each defense's noise has its own stream keyed
by (seed, round, partition), so switching defenses never changes any other random draw.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from client_app.ldp import ldp_release
from client_app.wbc import FLWBC
from client_app.wbc_official import OfficialWBC
from task.runconfig import RunConfig
from task.seeding import torch_generator


def _generator(cfg: RunConfig, stream: str, server_round: int, pid: int, model: nn.Module):
    device = next(model.parameters()).device
    return torch_generator(cfg.seed, stream, server_round, pid, device=device.type)


def training_hooks(
    cfg: RunConfig, model: nn.Module, server_round: int, partition_id: int
) -> list[FLWBC | OfficialWBC]:
    """Step hooks for benign local training (FL-WBC when configured: Algorithm 1, the
    authors' code with ``wbc-variant = official``, or its noise alone with ``dense``)."""
    if cfg.client_defense != "wbc":
        return []
    gen = _generator(cfg, "wbc-noise", server_round, partition_id, model)
    if cfg.wbc_variant in ("official", "dense"):
        dense = cfg.wbc_variant == "dense"
        return [OfficialWBC(model.named_parameters(), cfg.lr, cfg.wbc_s, gen, dense=dense)]
    return [
        FLWBC(model.parameters(), cfg.lr, cfg.wbc_s, gen,
              cfg.wbc_noise_param)
    ]  # fmt: skip


def release_state(
    cfg: RunConfig,
    model: nn.Module,
    global_state: Mapping[str, torch.Tensor],
    server_round: int,
    partition_id: int,
) -> dict[str, torch.Tensor]:
    """The state a benign node sends (LDP-noised when configured)."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if cfg.client_defense == "ldp":
        gen = _generator(cfg, "ldp-noise", server_round, partition_id, model)
        state = ldp_release(state, global_state, cfg.ldp_clip, cfg.ldp_noise_multiplier, gen)
    return {k: v.cpu() for k, v in state.items()}
