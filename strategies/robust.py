"""Thin Flower strategies around the pure robust rules (each overrides `aggregate_updates`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from strategies.cdp import central_dp_aggregate
from strategies.fedavg import Diagnostics, ImmuneFedAvg, NodeSelector
from strategies.invariant import invariant_aggregate_with_mask
from strategies.mean import weighted_mean
from strategies.median import coordinate_median
from strategies.rlr import robust_lr_sign
from strategies.signsgd import majority_vote
from strategies.trimmed_mean import trim_count, trimmed_mean
from task.runconfig import RunConfig
from task.seeding import torch_generator


def _n(config: RunConfig) -> int:
    return config.clients_per_round


class MedianStrategy(ImmuneFedAvg):
    """Coordinate-wise median of the pseudo-gradients (`strategies.median`)."""

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        return coordinate_median(U), {"n": U.shape[0]}


class TrimmedMeanStrategy(ImmuneFedAvg):
    """Coordinate-wise trimmed mean, ``trim-beta`` per side (`strategies.trimmed_mean`)."""

    def __init__(self, select_nodes: NodeSelector, beta: float, **kwargs: Any) -> None:
        super().__init__(select_nodes, **kwargs)
        self.beta = beta

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> ImmuneFedAvg:
        return cls(select_nodes, config.trim_beta, **cls.base_kwargs(config))

    @classmethod
    def config_problems(cls, config: RunConfig) -> list[str]:
        try:
            trim_count(_n(config), config.trim_beta)
        except ValueError as exc:
            return [f"'trim-beta' {config.trim_beta} with clients-per-round {_n(config)}: {exc}"]
        return []

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        k = trim_count(U.shape[0], self.beta)
        return trimmed_mean(U, self.beta), {"n": U.shape[0], "trimmed_count": 2 * k}


class InvariantStrategy(ImmuneFedAvg):
    """Invariant Aggregator: AND-mask (``invariant-tau``) x trimmed mean (``invariant-alpha``).

    Reports ``mask_density`` (fraction of coordinates the mask keeps) and
    ``masked_out_fraction`` (= 1 - mask_density, the coordinates set to zero).
    """

    def __init__(self, select_nodes: NodeSelector, tau: float, alpha: float, **kwargs: Any) -> None:
        super().__init__(select_nodes, **kwargs)
        self.tau, self.alpha = tau, alpha

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> ImmuneFedAvg:
        return cls(
            select_nodes,
            config.invariant_tau,
            config.invariant_alpha,
            **cls.base_kwargs(config),
        )

    @classmethod
    def config_problems(cls, config: RunConfig) -> list[str]:
        problems = []
        tau = config.invariant_tau
        if not 0.0 <= tau < 1.0:
            problems.append(f"'invariant-tau' must be in [0, 1), got {tau}")
        try:
            trim_count(_n(config), config.invariant_alpha)
        except ValueError as exc:
            problems.append(
                f"'invariant-alpha' {config.invariant_alpha} with clients-per-round "
                f"{_n(config)}: {exc}"
            )
        return problems

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        update, mask = invariant_aggregate_with_mask(U, self.tau, self.alpha)
        density = float(mask.mean())
        k = trim_count(U.shape[0], self.alpha)
        return update, {
            "mask_density": density,
            "masked_out_fraction": 1.0 - density,
            "n": U.shape[0],
            "trimmed_count": 2 * k,
        }


class RLRStrategy(ImmuneFedAvg):
    """Robust learning rate: flip the step where |sum sign| < ``rlr-theta`` (`strategies.rlr`)."""

    def __init__(self, select_nodes: NodeSelector, theta: float, **kwargs: Any) -> None:
        super().__init__(select_nodes, **kwargs)
        self.theta = theta

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> ImmuneFedAvg:
        return cls(select_nodes, float(config.rlr_theta), **cls.base_kwargs(config))

    @classmethod
    def config_problems(cls, config: RunConfig) -> list[str]:
        theta = float(config.rlr_theta)
        if not 0 <= theta <= _n(config):
            return [f"'rlr-theta' must be in [0, clients-per-round={_n(config)}], got {theta}"]
        return []

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        sign = robust_lr_sign(U, min(self.theta, U.shape[0]))
        flipped = float((sign < 0).float().mean())
        return sign.mul_(weighted_mean(U, weights)), {"flipped_fraction": flipped}


class SignSGDStrategy(ImmuneFedAvg):
    """sign-SGD with majority vote; the step is ``signsgd-lr * sign(sum sign(U_i))``."""

    def __init__(self, select_nodes: NodeSelector, lr: float, **kwargs: Any) -> None:
        super().__init__(select_nodes, **kwargs)
        self.lr = lr

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> ImmuneFedAvg:
        return cls(select_nodes, config.signsgd_lr, **cls.base_kwargs(config))

    @classmethod
    def config_problems(cls, config: RunConfig) -> list[str]:
        lr = config.signsgd_lr
        return [] if lr > 0 else [f"'signsgd-lr' must be > 0, got {lr}"]

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        return majority_vote(U).mul_(self.lr), {}


class CDPStrategy(ImmuneFedAvg):
    """Central DP: clip updates to ``cdp-clip`` = C, average the K of them, add Laplace noise of
    std ``cdp-noise-multiplier`` x C / K (`strategies.cdp`).

    The noise has its own stream (``cdp-noise``, keyed by round) derived from the run seed.
    """

    def __init__(
        self, select_nodes: NodeSelector, clip: float, sigma: float, seed: int, **kwargs: Any
    ) -> None:
        super().__init__(select_nodes, **kwargs)
        self.clip, self.sigma, self.seed = clip, sigma, seed

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> ImmuneFedAvg:
        return cls(
            select_nodes,
            config.cdp_clip,
            config.cdp_noise_multiplier,
            config.seed,
            **cls.base_kwargs(config),
        )

    @classmethod
    def config_problems(cls, config: RunConfig) -> list[str]:
        problems = []
        if not (math.isfinite(config.cdp_clip) and config.cdp_clip > 0):
            problems.append(f"'cdp-clip' must be a finite number > 0, got {config.cdp_clip}")
        z = config.cdp_noise_multiplier
        if not (math.isfinite(z) and z >= 0):
            problems.append(f"'cdp-noise-multiplier' must be a finite number >= 0, got {z}")
        return problems

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        gen = torch_generator(self.seed, "cdp-noise", server_round, device=U.device.type)
        return central_dp_aggregate(U, self.clip, self.sigma, gen), {}
