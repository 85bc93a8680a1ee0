"""Min-Max and Min-Sum (Shejwalkar & Houmansadr, NDSS 2021, "Manipulating the Byzantine:
Optimizing Model Poisoning Attacks and Defenses for Federated Learning"): the AGR-agnostic
attacks of Sec. IV (objectives Min-Max and Min-Sum), with the gamma search of Algorithm 1.

Threat model. The attackers do not know the aggregation rule (AGR-agnostic). They know a set of
benign updates ``B`` of shape ``(m, d)``: with full knowledge ("known benign gradients") all the
benign updates of the round, gathered by colluding with / observing the benign clients; with
partial knowledge ("unknown benign gradients") only the benign updates the attackers compute on
their own data. All attackers send the same update

    malicious = mu + gamma * p,        mu = mean of B,

where the perturbation ``p`` is one of the paper's perturbation vectors

    "unit-vec":  p = -mu / ||mu||
    "sign":      p = -sign(mu)
    "std":       p = -std(B)          (per coordinate; unbiased, as the authors' ``torch.std``)

and gamma is the largest value (found by Algorithm 1) for which

    Min-Max:  max_i ||malicious - b_i||      <= max_{i,j} ||b_i - b_j||
    Min-Sum:  sum_i ||malicious - b_i||^2    <= max_i sum_j ||b_i - b_j||^2

i.e. the malicious update is no further from the benign ones than the benign ones are from each
other (Min-Max), or its sum of squared distances is no larger than the worst benign one (Min-Sum).

Algorithm 1 and the authors' code (github.com/vrt1shjwlkr/NDSS21-Model-Poisoning, commit
f2879cd, cifar10/release-fedsgd-alexnet-trmean.ipynb, cells "MIN-MAX attack" and "MIN-SUM
attack", raw-JSON lines 1207-1233 and 1572-1599): gamma starts at gamma_init = 10, the step
starts at gamma_init, gamma_succ at 0; each iteration tests gamma, on success sets
gamma_succ = gamma and adds step/2, on failure subtracts step/2, then halves the step; the loop
stops once |gamma_succ - gamma| <= tau with tau = 1e-5. `gamma_search` does exactly this; the
reachable range is [0, 2 gamma_init). (A variant starting the step at gamma_init / 2 and moving by
step / 2 can never go below gamma_init / 2 and misses every boundary under 5 with gamma_init = 10;
the tests pin the trace 10, 5, 2.5, 3.75, ... of the authors' rule.)

Differences from the authors' code, deliberate and documented:

* Min-Sum bound. The paper's objective bounds the sum by the *largest* benign sum
  (``max_i sum_j``); the authors' notebooks compare with ``torch.min(scores)``, the *smallest*
  benign sum (a stricter, stealthier bound). ``min_sum_update(..., bound="max")`` (default)
  follows the paper, ``bound="min"`` the code.
* The code's distances are squared in Min-Max too; comparing squared or plain norms gives the
  same feasible set, so this is not a difference.
* If ``p`` is zero (``mu = 0`` for "unit-vec"/"sign", or identical updates for "std"), any
  gamma is feasible and nothing moves: the functions return ``(mu, 0.0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from attacks.base import Attack, AttackContext, State, state_from_update
from attacks.knowledge import KNOWLEDGE_PARAM, knowledge_problems, known_benign
from task.params import Param
from task.runconfig import RunConfig

Perturbation = Literal["unit-vec", "sign", "std"]
PERTURBATIONS: tuple[str, ...] = ("unit-vec", "sign", "std")

GAMMA_INIT = 10.0  # authors' code: lamda = torch.Tensor([10.0])
TAU = 1e-5  # authors' code: threshold_diff = 1e-5
MAX_ITER = 200  # the step is then gamma_init * 2**-200: any tau has been met or cannot be


def _check_benign(benign: torch.Tensor, minimum: int = 2) -> None:
    if benign.dim() != 2 or benign.shape[0] < minimum or benign.shape[1] < 1:
        raise ValueError(
            f"benign must be a (m, d) matrix with m >= {minimum}, got shape {tuple(benign.shape)}"
        )
    if not bool(torch.isfinite(benign).all()):
        raise ValueError("benign must contain only finite values")


def perturbation_vector(benign: torch.Tensor, kind: Perturbation = "unit-vec") -> torch.Tensor:
    """The paper's perturbation vector ``p`` for the ``(m, d)`` benign updates.

    ``"unit-vec"``: ``-mu/||mu||``; ``"sign"``: ``-sign(mu)``; ``"std"``: ``-std`` per coordinate
    (unbiased). A zero ``mu`` gives a zero ``p`` for "unit-vec".

    >>> b = torch.tensor([[1.0, -2.0], [3.0, -2.0]])
    >>> perturbation_vector(b, "sign")
    tensor([-1.,  1.])
    >>> perturbation_vector(b, "unit-vec")  # mu = (2, -2)
    tensor([-0.7071,  0.7071])
    >>> perturbation_vector(b, "std")  # unbiased std of (1, 3) is sqrt(2)
    tensor([-1.4142, -0.0000])
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {kind!r}")
    _check_benign(benign)
    mu = benign.mean(0)
    if kind == "unit-vec":
        norm = torch.linalg.vector_norm(mu)
        return torch.zeros_like(mu) if float(norm) == 0.0 else -mu / norm
    if kind == "sign":
        return -torch.sign(mu)
    return -benign.std(0, correction=1)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """The ``(m, m)`` matrix of Euclidean distances between the rows of ``x`` (exact
    differences, not the Gram-matrix shortcut, so identical rows are exactly 0 apart).

    >>> pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[0., 5.],
            [5., 0.]])
    """
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


def gamma_search(
    feasible: Callable[[float], bool], gamma_init: float = GAMMA_INIT, tau: float = TAU
) -> float:
    """Algorithm 1's search for the largest feasible gamma (assumes feasibility is monotone:
    feasible up to a boundary, infeasible beyond it). Returns ``gamma_succ``, the last gamma
    that passed, or 0.0 if none did; the reachable range is ``[0, 2 * gamma_init)``. The loop
    stops once ``|gamma_succ - gamma| <= tau`` (at most ``MAX_ITER`` iterations).

    >>> round(gamma_search(lambda g: g <= 3.0), 4)
    3.0
    >>> gamma_search(lambda g: False)
    0.0
    """
    if not gamma_init > 0:
        raise ValueError(f"gamma_init must be > 0, got {gamma_init}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    gamma, step, gamma_succ = float(gamma_init), float(gamma_init), 0.0
    for _ in range(MAX_ITER):  # ends long before; the cap only guards a tau below float precision
        if abs(gamma_succ - gamma) <= tau:
            break
        if feasible(gamma):
            gamma_succ = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return gamma_succ


def _attack(
    benign: torch.Tensor,
    perturbation: Perturbation,
    gamma_init: float,
    tau: float,
    feasible_for: Callable[[torch.Tensor], bool],
) -> tuple[torch.Tensor, float]:
    mu = benign.mean(0)
    p = perturbation_vector(benign, perturbation)
    if not bool(p.any()):
        return mu, 0.0
    gamma = gamma_search(lambda g: feasible_for(mu + g * p), gamma_init, tau)
    return mu + gamma * p, gamma


def min_max_update(
    benign: torch.Tensor,
    perturbation: Perturbation = "unit-vec",
    gamma_init: float = GAMMA_INIT,
    tau: float = TAU,
) -> tuple[torch.Tensor, float]:
    """Min-Max: ``mu + gamma * p`` with the largest gamma (Algorithm 1) such that
    ``max_i ||m - b_i|| <= max_{i,j} ||b_i - b_j||``. Returns ``(update, gamma)``.

    Benign updates 0, 0 and 3 on a line: mu = 1, p = -1 and the malicious update 1 - gamma is
    at most 3 (the benign diameter) from 3 while gamma <= 1:

    >>> u, g = min_max_update(torch.tensor([[0.0], [0.0], [3.0]]))
    >>> round(g, 4), round(float(u[0]), 4)
    (1.0, 0.0)
    """
    _check_benign(benign)
    diameter = float(pairwise_distances(benign).max())

    def feasible(m: torch.Tensor) -> bool:
        return float(torch.linalg.vector_norm(benign - m, dim=1).max()) <= diameter

    return _attack(benign, perturbation, gamma_init, tau, feasible)


def min_sum_update(
    benign: torch.Tensor,
    perturbation: Perturbation = "unit-vec",
    gamma_init: float = GAMMA_INIT,
    tau: float = TAU,
    bound: Literal["max", "min"] = "max",
) -> tuple[torch.Tensor, float]:
    """Min-Sum: ``mu + gamma * p`` with the largest gamma (Algorithm 1) such that
    ``sum_i ||m - b_i||^2 <= max_i sum_j ||b_i - b_j||^2`` (``bound="max"``, the paper) or
    ``<= min_i sum_j ||b_i - b_j||^2`` (``bound="min"``, the authors' notebooks). Returns
    ``(update, gamma)``.

    Benign 0, 0, 3: the malicious 1 - gamma has squared-distance sum 6 + 3 gamma^2; the benign
    sums are 9, 9 and 18, so gamma = 2 under the paper's bound and 1 under the code's:

    >>> b = torch.tensor([[0.0], [0.0], [3.0]])
    >>> round(min_sum_update(b)[1], 4), round(min_sum_update(b, bound="min")[1], 4)
    (2.0, 1.0)
    """
    if bound not in ("max", "min"):
        raise ValueError(f"bound must be 'max' (paper) or 'min' (authors' code), got {bound!r}")
    _check_benign(benign)
    sums = (pairwise_distances(benign) ** 2).sum(1)
    limit = float(sums.max() if bound == "max" else sums.min())

    def feasible(m: torch.Tensor) -> bool:
        return float((torch.linalg.vector_norm(benign - m, dim=1) ** 2).sum()) <= limit

    return _attack(benign, perturbation, gamma_init, tau, feasible)


class MinMax(Attack):
    """``attack = min-max | min-sum`` (``objective``): every attacker sends ``mu + gamma * p``
    computed on the benign updates it knows (``attack-knowledge``: `attacks.knowledge`; the
    paper's AGR-agnostic attacks assume full knowledge, the default), with the perturbation
    ``minmax-perturbation`` and Algorithm 1's search from ``minmax-gamma-init``. Min-Sum uses
    the paper's bound (``bound="max"``). Threat model: see the module docstring; the rule is
    never consulted."""

    PARAMS = (
        KNOWLEDGE_PARAM,
        Param("minmax-perturbation", "perturbation", "unit-vec",
              "min-max/min-sum: perturbation p", choices=PERTURBATIONS),
        Param("minmax-gamma-init", "gamma_init", GAMMA_INIT,
              "min-max/min-sum: gamma_init of Algorithm 1's search", low=0.0, low_open=True),
    )  # fmt: skip

    def __init__(self, config: RunConfig, objective: str = "min-max") -> None:
        super().__init__(config)
        self.objective = objective

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        return knowledge_problems(
            config, config.attack, 2, "mu, p and the benign distances need two updates"
        )

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        benign = known_benign(ctx, self.params["knowledge"])
        fn = min_max_update if self.objective == "min-max" else min_sum_update
        update, _ = fn(benign, self.params["perturbation"], self.params["gamma_init"])
        return state_from_update(update, ctx.global_state)
