"""Thin Flower strategies around the robust rules of issue 29's math (each overrides
`aggregate_updates`; FLTrust, which needs a root data set, is in `strategies.fltrust_rule`).

- ``geomed``: geometric median (RFA, smoothed Weiszfeld; `strategies.geomed`), weighted by the
  capped example counts; reports ``geomed_iterations`` and ``geomed_converged``.
- ``centered-clipping``: centred clipping (`strategies.centered_clipping`) around the previous
  round's aggregate update (zero in round 1); the centre is server state (checkpointed).
- ``foolsgold``: FoolsGold (`strategies.foolsgold`) on per-client histories, keyed by the
  client's partition id (`ImmuneFedAvg.client_keys`) and accumulated over every round the
  client was aggregated in; the histories are server state (checkpointed). Memory: one
  model-sized float32 vector per client seen.
- ``flame``: FLAME (`strategies.flame`): HDBSCAN filtering, median-norm clipping, Gaussian
  noise ``flame-lambda`` x S from the stream ``flame-noise`` keyed by (seed, round).
- ``dnc``: Divide-and-Conquer (`strategies.dnc`), coordinates sampled from the stream ``dnc``
  keyed by (seed, round).
- ``norm-bound``: norm bounding with optional Gaussian noise (`strategies.norm_bound`), weighted
  by the capped example counts; noise from the stream ``norm-bound-noise``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from strategies.centered_clipping import centered_clipping
from strategies.contract import NodeSelector
from strategies.dnc import dnc_result
from strategies.fedavg import Diagnostics, ImmuneFedAvg
from strategies.foolsgold import foolsgold_aggregate
from strategies.geomed import geometric_median_result
from strategies.norm_bound import norm_bound
from strategies.preaggregate import rows_per_round
from task.params import Param
from task.runconfig import RunConfig
from task.seeding import torch_generator


class SeededRule(ImmuneFedAvg):
    """A rule with random draws of its own: streams keyed by the run seed and the round."""

    def __init__(self, select_nodes: NodeSelector | None = None, *, seed: int = 0,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.seed = int(seed)

    @classmethod
    def rule_kwargs(cls, config: RunConfig) -> dict[str, Any]:
        return {**super().rule_kwargs(config), "seed": config.seed}

    def generator(self, stream: str, server_round: int, U: torch.Tensor) -> torch.Generator:
        return torch_generator(self.seed, stream, server_round, device=U.device.type)


class GeoMedStrategy(ImmuneFedAvg):
    """Geometric median (RFA, Pillutla et al., 2022) of the updates, example-weighted."""

    PARAMS = (
        Param("geomed-nu", "nu", 1e-6, "Weiszfeld smoothing nu", low=0.0, low_open=True),
        Param("geomed-tol", "tol", 1e-7, "relative change of the objective to stop at", low=0.0),
        Param("geomed-max-iter", "max_iter", 1000, "most Weiszfeld iterations", low=1),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, nu: float = 1e-6,
                 tol: float = 1e-7, max_iter: int = 1000, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(nu=nu, tol=tol, max_iter=max_iter)

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        r = geometric_median_result(U, weights, nu=self.nu, tol=self.tol, max_iter=self.max_iter)
        return r.median, {
            "n": U.shape[0],
            "geomed_iterations": r.iterations,
            "geomed_converged": int(r.converged),
            "geomed_objective": r.objective,
        }


class CenteredClippingStrategy(ImmuneFedAvg):
    """Centred clipping (Karimireddy et al., ICML 2021) around the previous aggregate."""

    PARAMS = (
        Param("cc-tau", "tau", 1.0, "clipping radius around the centre", low=0.0, low_open=True),
        Param("cc-iters", "iters", 1, "clipping iterations", low=1),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, tau: float = 1.0,
                 iters: int = 1, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(tau=tau, iters=iters)
        #: the previous round's aggregate update (None before the first aggregated round)
        self.center: torch.Tensor | None = None

    def server_state(self) -> dict[str, Any]:
        return {"center": None if self.center is None else self.center.detach().cpu().clone()}

    def load_server_state(self, state: dict[str, Any]) -> None:
        center = state.get("center")
        self.center = None if center is None else center.clone()

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        center = None if self.center is None else self.center.to(U.device, U.dtype)
        agg = centered_clipping(U, center, self.tau, self.iters)
        shift = float(torch.linalg.vector_norm(agg - center)) if center is not None else float(
            torch.linalg.vector_norm(agg))  # fmt: skip
        self.center = agg.detach().to("cpu", torch.float32).clone()
        return agg, {"n": U.shape[0], "cc_shift": shift, "cc_first_round": int(center is None)}


class FoolsGoldStrategy(ImmuneFedAvg):
    """FoolsGold (Fung et al., RAID 2020) on per-client histories kept across rounds."""

    #: row i of U is client i: bucketing (random mixtures of clients) cannot precede it
    ROWS_ARE_CLIENTS = True
    PARAMS = (
        Param("foolsgold-kappa", "kappa", 1.0, "confidence of the logit", low=0.0, low_open=True),
        Param("foolsgold-normalize", "normalize", "weights",
              "weights: sum a_i U_i / sum a_i | clients: / n | none: the plain sum",
              choices=("weights", "clients", "none")),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, kappa: float = 1.0,
                 normalize: str = "weights", **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(kappa=kappa, normalize=normalize)
        #: client key (partition id) -> sum of its aggregated updates (float32, CPU)
        self.histories: dict[int, torch.Tensor] = {}

    def server_state(self) -> dict[str, Any]:
        return {"histories": {int(k): v.clone() for k, v in self.histories.items()}}

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.histories = {int(k): v.clone() for k, v in state.get("histories", {}).items()}

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        keys = [self.client_keys.get(node, node) for node in self.round_nodes]
        if len(keys) != U.shape[0]:
            raise ValueError(
                f"foolsgold needs one row per client: {U.shape[0]} rows for {len(keys)} clients"
            )
        H = U.clone()
        for i, key in enumerate(keys):
            if key in self.histories:
                H[i] += self.histories[key].to(U.device, U.dtype)
        r = foolsgold_aggregate(U, H, kappa=self.kappa, normalize=self.normalize)  # type: ignore[arg-type]
        for i, key in enumerate(keys):  # only once the rule has run: a failed round keeps none
            self.histories[key] = H[i].detach().to("cpu", torch.float32).clone()
        w = r.weights.tolist()
        return r.aggregate, {"n": U.shape[0], "foolsgold_weights": w,
                             "foolsgold_zero_weights": sum(1 for x in w if x == 0.0),
                             "foolsgold_all_zero": int(r.all_zero)}  # fmt: skip


class FlameStrategy(SeededRule):
    """FLAME (Nguyen et al., USENIX Security 2022): cluster, clip to the median norm, noise."""

    PARAMS = (Param("flame-lambda", "noise_lambda", 0.001, "noise std = lambda x median norm",
                    low=0.0),)  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, noise_lambda: float = 0.001,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(noise_lambda=noise_lambda)

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        from strategies.flame import flame  # scikit-learn's HDBSCAN: only where it is used

        gen = self.generator("flame-noise", server_round, U)
        r = flame(U, noise_lambda=self.noise_lambda, generator=gen)
        return r.aggregate, {"n": U.shape[0], "flame_admitted": int(r.admitted.sum()),
                             "flame_clip_bound": r.clip_bound,
                             "flame_clustered": int(r.clustered)}  # fmt: skip


class DnCStrategy(SeededRule):
    """Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021)."""

    PARAMS = (
        Param("dnc-f", "f", 1, "assumed number of malicious clients", low=0),
        Param("dnc-b", "b", 10000, "coordinates sampled per iteration", low=1),
        Param("dnc-niters", "niters", 5, "iterations", low=1),
        Param("dnc-c", "c", 1.0, "filtering fraction: floor(c*f) removed per iteration", low=0.0),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, f: int = 1, b: int = 10000,
                 niters: int = 5, c: float = 1.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(f=f, b=b, niters=niters, c=c)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        n, f, c = rows_per_round(config), values["f"], values["c"]
        if f >= n:
            return [f"'dnc-f' must be in [0, updates per round={n}), got {f}"]
        if math.floor(c * f + 1e-9) >= n:
            return [f"'dnc-c' {c} x 'dnc-f' {f} removes all {n} updates of a round"]
        return []

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        gen = self.generator("dnc", server_round, U)
        r = dnc_result(U, self.f, b=self.b, niters=self.niters, c=self.c, generator=gen)
        return r.aggregate, {"n": U.shape[0], "dnc_kept": int(r.good.sum())}


class NormBoundStrategy(SeededRule):
    """Norm bounding + weak DP (Sun et al., 2019): clip to ``norm-bound-m``, mean, noise."""

    PARAMS = (
        Param("norm-bound-m", "bound", 1.0, "L2 bound M of each update", low=0.0, low_open=True),
        Param("norm-bound-noise", "noise_std", 0.0, "Gaussian noise std on the aggregate",
              low=0.0),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, bound: float = 1.0,
                 noise_std: float = 0.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(bound=bound, noise_std=noise_std)

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        gen = self.generator("norm-bound-noise", server_round, U)
        clipped = int((torch.linalg.vector_norm(U, dim=1) > self.bound).sum())
        out = norm_bound(U, self.bound, weights=weights, noise_std=self.noise_std, generator=gen)
        return out, {"n": U.shape[0], "norm_bound_clipped": clipped}
