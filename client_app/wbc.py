"""FL-WBC: perturb the near-null-space coordinates during benign local training.

Sun et al., "FL-WBC: Enhancing Robustness against Model Poisoning Attacks in Federated Learning
from a Client Perspective", NeurIPS 2021, §5.1 (Eq. 8-10) and Appendix A (Algorithm 1).

After every SGD step ``i`` (Eq. 8, Alg. 1 lines 5-6) with learning rate ``eta``::

    W*  = (W - W_-1) - (W_-1 - W_-2)              (Alg. 1 line 8)
    S   = { k : |W*_k| <= eta * |Y_k| }           (line 9; Eq. 10: |W*|/eta <= |Y|)
    W_k = W_k + eta * Y_k   for k in S            (lines 10-12; Eq. 9)
    W_-2 = W_-1                                   (line 14)

``W_-1`` is the parameter *before* the step and ``W_-1 - W_-2`` the **whole** change of the
previous iteration, its perturbation included (line 5 sets ``W_-1 <- W`` after the previous
perturbation). ``W*`` approximates ``eta`` times the diagonal of the Hessian (the change of the
gradient between steps, §5.1): a small ``|W*|`` marks a coordinate in (near) the Hessian's null
space, where the attack effect on parameters (AEP) persists; noise there erodes it. The first
step of a round has no previous change and is never perturbed.

``Y`` is Laplace noise with **standard deviation** ``s`` (scale ``s / sqrt 2``), as the paper
states. The original code draws ``numpy.random.laplace(scale=s)`` (standard deviation
``sqrt(2) * s``); ``wbc-noise-param=scale`` reproduces that. The noise has its own seeded
generator, so the defense never shifts another random stream (client sampling, data order,
attack schedule), and ``s = 0`` is exactly plain SGD.

All parameters (weights and biases) are perturbed: Algorithm 1 applies to the whole parameter
``W``; the original code's restriction to tensors named ``weight`` is an implementation detail
we do not copy. Buffers (e.g. BatchNorm statistics) are not trained by SGD and are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from task.catalog import WBC_NOISE_PARAMS
from task.noise import laplace_like


def wbc_perturbation(
    w_star: torch.Tensor, noise: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9-10 for one tensor: the mask ``|W*| <= lr |Y|`` and the change ``lr * Y`` on it."""
    step = noise * lr
    mask = w_star.abs() <= step.abs()
    return torch.where(mask, step, torch.zeros_like(step)), mask


def noise_std(s: float, noise_param: str) -> float:
    """Standard deviation of Y for ``wbc-s = s`` under the ``std`` or ``scale`` convention."""
    if noise_param not in WBC_NOISE_PARAMS:
        raise ValueError(f"wbc-noise-param '{noise_param}'; valid: {', '.join(WBC_NOISE_PARAMS)}")
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"wbc-s must be finite and >= 0, got {s}")
    return s if noise_param == "std" else s * math.sqrt(2.0)


class FLWBC:
    """Algorithm 1 as a step hook of the local training loop (`task.training.train_sgd`).

    Call `before_step` right before ``optimizer.step()`` and `after_step` right after.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        s: float,
        generator: torch.Generator,
        noise_param: str = "std",
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)
        self.std = noise_std(float(s), noise_param)
        self.generator = generator
        self._before = [torch.empty_like(p) for p in self.params]  # W_-1
        self._prev = [torch.empty_like(p) for p in self.params]  # W_-1 - W_-2
        self._has_prev = False
        self._numel = sum(p.numel() for p in self.params)
        self.perturbed_fractions: list[float] = []

    def start_epoch(self) -> None:
        """Algorithm 1 runs across epochs: a new epoch changes nothing."""

    @torch.no_grad()
    def before_step(self) -> None:
        for buf, p in zip(self._before, self.params, strict=True):
            buf.copy_(p)

    @torch.no_grad()
    def after_step(self) -> None:
        if self._has_prev and self.std > 0:
            perturbed = torch.zeros((), dtype=torch.int64, device=self.params[0].device)
            for p, before, prev in zip(self.params, self._before, self._prev, strict=True):
                # in-place form of `wbc_perturbation` (same arithmetic, fewer temporaries)
                w_star_abs = torch.sub(p, before).sub_(prev).abs_()  # |W*|
                step = laplace_like(p, self.std, self.generator).mul_(self.lr)  # eta * Y
                mask = w_star_abs <= step.abs()
                p.add_(step.mul_(mask))
                perturbed += mask.sum()
            self.perturbed_fractions.append(float(perturbed) / self._numel)
        for p, before, prev in zip(self.params, self._before, self._prev, strict=True):
            torch.sub(p, before, out=prev)  # the whole change, perturbation included
        self._has_prev = True

    @property
    def perturbed_fraction(self) -> float:
        """Share of coordinates perturbed, averaged over the perturbed steps (0 if none)."""
        if not self.perturbed_fractions:
            return 0.0
        return sum(self.perturbed_fractions) / len(self.perturbed_fractions)
