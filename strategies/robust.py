"""Thin Flower strategies around the pure robust rules (each overrides `aggregate_updates`)."""

from __future__ import annotations

from typing import Any

import torch

from strategies.cdp import central_dp_aggregate
from strategies.contract import NodeSelector
from strategies.fedavg import Diagnostics, ImmuneFedAvg
from strategies.invariant import invariant_aggregate_with_mask
from strategies.mean import weighted_mean
from strategies.median import coordinate_median
from strategies.preaggregate import rows_per_round
from strategies.rlr import robust_lr_sign
from strategies.signsgd import majority_vote
from strategies.trimmed_mean import trim_count, trimmed_mean
from task.params import Param
from task.runconfig import RunConfig
from task.seeding import torch_generator


def _n(config: RunConfig) -> int:
    return rows_per_round(config)  # clients-per-round, fewer after bucketing


def _trim_problem(key: str, value: float, config: RunConfig) -> list[str]:
    try:
        trim_count(_n(config), value)
    except ValueError as exc:
        return [f"'{key}' {value} with {_n(config)} updates per round: {exc}"]
    return []


class MedianStrategy(ImmuneFedAvg):
    """Coordinate-wise median of the pseudo-gradients (`strategies.median`)."""

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        return coordinate_median(U), {"n": U.shape[0]}


class TrimmedMeanStrategy(ImmuneFedAvg):
    """Coordinate-wise trimmed mean, ``trim-beta`` per side (`strategies.trimmed_mean`)."""

    PARAMS = (
        Param("trim-beta", "beta", 0.1, "fraction trimmed per side (Def. 9: ceil(beta*n))",
              low=0.0, high=0.5, high_open=True),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, beta: float = 0.1,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(beta=beta)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        return _trim_problem("trim-beta", values["beta"], config)

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

    PARAMS = (
        Param("invariant-tau", "tau", 0.2, "AND-mask threshold on |mean sign|",
              low=0.0, high=1.0, high_open=True),
        Param("invariant-alpha", "alpha", 0.25, "trimmed-mean fraction per side",
              low=0.0, high=0.5, high_open=True),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, tau: float = 0.2,
                 alpha: float = 0.25, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(tau=tau, alpha=alpha)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        return _trim_problem("invariant-alpha", values["alpha"], config)

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

    PARAMS = (
        Param("rlr-theta", "theta", 4, "min |sum of signs| (a client count) to keep the sign",
              low=0),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, theta: int = 4,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(theta=theta)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        if values["theta"] > _n(config):
            return [f"'rlr-theta' must be in [0, updates per round={_n(config)}], "
                    f"got {values['theta']}"]  # fmt: skip
        return []

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        sign = robust_lr_sign(U, min(float(self.theta), U.shape[0]))
        flipped = float((sign < 0).float().mean())
        return sign.mul_(weighted_mean(U, weights)), {"flipped_fraction": flipped}


class SignSGDStrategy(ImmuneFedAvg):
    """sign-SGD with majority vote; the step is ``signsgd-lr * sign(sum sign(U_i))``."""

    PARAMS = (Param("signsgd-lr", "lr", 0.001, "server step per coordinate", low=0.0,
                    low_open=True),)  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, lr: float = 0.001,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(lr=lr)

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        return majority_vote(U).mul_(self.lr), {}


class CDPStrategy(ImmuneFedAvg):
    """Central DP: clip updates to ``cdp-clip`` = C, average the K of them, add Laplace noise of
    std ``cdp-noise-multiplier`` x C / K (`strategies.cdp`).

    The noise has its own stream (``cdp-noise``, keyed by round) derived from the run seed.
    """

    PARAMS = (
        Param("cdp-clip", "clip", 5.0, "L2 clip of each client update", low=0.0, low_open=True),
        Param("cdp-noise-multiplier", "sigma", 0.02,
              "z: Laplace noise of std z * cdp-clip / K on the mean of K clipped updates",
              low=0.0),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, clip: float = 5.0,
                 sigma: float = 0.02, seed: int = 0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(clip=clip, sigma=sigma)
        self.seed = int(seed)

    @classmethod
    def rule_kwargs(cls, config: RunConfig) -> dict[str, Any]:
        return {**super().rule_kwargs(config), "seed": config.seed}

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        gen = torch_generator(self.seed, "cdp-noise", server_round, device=U.device.type)
        return central_dp_aggregate(U, self.clip, self.sigma, gen), {}
