"""Mimic (Karimireddy, He & Jaggi, ICLR 2022, "Byzantine-Robust Learning on Heterogeneous
Datasets via Bucketing", Sec. 4 / App. on the mimic attack).

Every attacker sends a copy of ONE benign worker's update, so the aggregate over-represents that
worker: under heterogeneous (non-IID) data this biases robust aggregators without any update
looking like an outlier. The worker is chosen to maximise heterogeneity: with mu the mean benign
update and z the direction of maximum variance of the benign updates (top eigenvector of their
covariance),

    i* = argmax_i <z, b_i - mu>

Threat model. Omniscient: the attackers see all benign updates of the round (the authors'
``omniscient_callback`` reads every good worker's gradient); they need not know the aggregation
rule or the data.

How z is found. The paper estimates z online during a warm-up phase and then fixes the target
worker. The authors' code (github.com/epfml/byzantine-robust-noniid-optimizer, commit 0e27349,
codes/attacks/mimic.py) does, for round t:

* t = 0 (lines 47-57): mu = mean of the round's benign updates; z0 ~ N(0, I) (their generator is
  seeded with 0); one power-iteration step z = sum_i <b_i - mu, z0> (b_i - mu), normalised
  (`mimic_init` / `power_step`).
* 0 < t < warmup (lines 59-68): mu <- t/(1+t) mu + mean_t/(1+t); z <- t/(1+t) z +
  step/(1+t) with ``step`` the normalised power step on the round's updates, then normalised
  (`mimic_warmup_step`).
* t < warmup (lines 70-92, 117-119): the target is argmax_i <z, b_i> (the same argmax as with
  b_i - mu, since <z, mu> is common to all i); after the warm-up (lines 131-134) the same worker
  is copied every round. The default warm-up is 1 round (utils.py line 79,
  ``--mimic-warmup`` default 1), i.e. a single power step from a random start.

`top_variance_direction` computes the exact top eigenvector instead (through the (m, m) Gram
matrix of the centred updates, so cheap for large d). An eigenvector's sign is arbitrary (the
authors' comes from their random start); here it is fixed so that the update with the largest
|<z, b_i - mu>| has a positive projection, i.e. the chosen worker is the most extreme one along
the axis of maximum variance. `mimic_select` accepts any z (exact or the online estimate).
"""

from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, State, state_from_update
from attacks.knowledge import knowledge_problems, known_benign
from task.runconfig import RunConfig


def _check_benign(benign: torch.Tensor) -> None:
    if benign.dim() != 2 or benign.shape[0] < 1 or benign.shape[1] < 1:
        raise ValueError(f"benign must be a (m, d) matrix with m >= 1, got {tuple(benign.shape)}")
    if not bool(torch.isfinite(benign).all()):
        raise ValueError("benign must contain only finite values")


def _check_direction(z: torch.Tensor, d: int) -> None:
    if z.dim() != 1 or z.shape[0] != d:
        raise ValueError(f"z must be a vector of length d = {d}, got shape {tuple(z.shape)}")


def _normalise(v: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(v)
    return v if float(norm) == 0.0 else v / norm


def top_variance_direction(benign: torch.Tensor) -> torch.Tensor:
    """Unit top eigenvector of the covariance of the rows of ``benign`` (m, d), signed so that
    the row furthest from the mean along it projects positively; zero if all rows are equal.

    >>> top_variance_direction(torch.tensor([[1.0, 0.0], [-3.0, 0.0], [2.0, 0.0]])).tolist()
    [-1.0, -0.0]
    """
    _check_benign(benign)
    x = benign - benign.mean(0)
    gram = x @ x.T  # (m, m): same nonzero spectrum as the (d, d) covariance x^T x
    eigvals, eigvecs = torch.linalg.eigh(gram)
    if float(eigvals[-1]) <= 0.0:
        return torch.zeros(benign.shape[1], dtype=benign.dtype, device=benign.device)
    z = _normalise(x.T @ eigvecs[:, -1])
    proj = x @ z
    if float(proj[torch.argmax(proj.abs())]) < 0:
        z = -z
    return z


def power_step(benign: torch.Tensor, mu: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One power-iteration step towards the top covariance direction, as in the authors' code:
    ``sum_i <b_i - mu, z> (b_i - mu)``, normalised (returned as is if zero).

    >>> b = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    >>> power_step(b, torch.zeros(2), torch.tensor([1.0, 1.0]))  # (2, 8) / ||(2, 8)||
    tensor([0.2425, 0.9701])
    """
    _check_benign(benign)
    _check_direction(z, benign.shape[1])
    x = benign - mu
    return _normalise(x.T @ (x @ z))


def mimic_init(
    benign: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round 0 of the online estimate: ``mu`` = the round's mean, ``z`` = one power step from
    ``z0 ~ N(0, I)`` drawn from ``generator``. Returns ``(z, mu)``.

    >>> g = torch.Generator().manual_seed(0)
    >>> z, mu = mimic_init(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), g)
    >>> z.abs().tolist(), mu.tolist()
    ([1.0, 0.0], [0.0, 0.0])
    """
    _check_benign(benign)
    mu = benign.mean(0)
    z0 = torch.randn(benign.shape[1], generator=generator, dtype=benign.dtype)
    return power_step(benign, mu, z0.to(benign.device)), mu


def mimic_warmup_step(
    z: torch.Tensor, mu: torch.Tensor, t: int, benign: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warm-up round ``t >= 1``: running mean ``mu <- t/(1+t) mu + mean/(1+t)`` and
    ``z <- normalise(t/(1+t) z + power_step(benign, mu, z)/(1+t))``. Returns ``(z, mu)``.

    >>> b = torch.tensor([[0.0, 3.0], [0.0, -1.0]])  # round mean (0, 1)
    >>> z, mu = mimic_warmup_step(torch.tensor([0.6, 0.8]), torch.tensor([2.0, 1.0]), 1, b)
    >>> mu.tolist()  # (2, 1)/2 + (0, 1)/2
    [1.0, 1.0]
    >>> z  # step: (1.2, 6.4)/||.|| = (0.1843, 0.9829); mean with (0.6, 0.8), normalised
    tensor([0.4027, 0.9153])
    """
    _check_benign(benign)
    _check_direction(z, benign.shape[1])
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be an integer >= 1 (t = 0 is mimic_init), got {t!r}")
    mu = t / (1 + t) * mu + benign.mean(0) / (1 + t)
    z = t / (1 + t) * z + power_step(benign, mu, z) / (1 + t)
    return _normalise(z), mu


def mimic_select(benign: torch.Tensor, z: torch.Tensor) -> int:
    """``argmax_i <z, b_i - mu>`` (first index on ties).

    >>> mimic_select(torch.tensor([[1.0, 5.0], [3.0, 0.0]]), torch.tensor([1.0, 0.0]))
    1
    """
    _check_benign(benign)
    _check_direction(z, benign.shape[1])
    return int(torch.argmax((benign - benign.mean(0)) @ z))


def mimic_update(benign: torch.Tensor, z: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """The mimic attackers' update: a copy of benign update ``i*``, with ``z`` the exact top
    variance direction unless given (e.g. the online estimate). Returns ``(update, i*)``.

    >>> u, i = mimic_update(torch.tensor([[1.0, 0.0], [-3.0, 0.1], [2.0, -0.1]]))
    >>> i, u.tolist()
    (1, [-3.0, 0.10000000149011612])
    """
    _check_benign(benign)
    if z is None:
        z = top_variance_direction(benign)
    i = mimic_select(benign, z)
    return benign[i].clone(), i


class Mimic(Attack):
    """``attack = mimic``: every attacker sends a copy of benign update ``i*`` of this round,
    ``i* = argmax_i <z, b_i - mu>`` with z the exact top variance direction of the round's benign
    updates (`mimic_update`): the limit of the authors' power iteration, recomputed every round
    instead of fixed after a warm-up. Omniscient (``attack-knowledge = full`` only: copying one
    of the attackers' own benign updates is no attack); the benign updates are the replayed ones
    of `attacks.knowledge`."""

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        if config.attack_knowledge != "full":
            return [
                f"attack 'mimic' is omniscient (it copies one of the round's benign updates): "
                f"it needs attack-knowledge=full, got '{config.attack_knowledge}'"
            ]
        return knowledge_problems(config, "mimic", 1, "it copies one of them")

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        update, _ = mimic_update(known_benign(ctx, "full"))
        return state_from_update(update, ctx.global_state)
