"""Fang, Cao, Jia & Gong (USENIX Security 2020), "Local Model Poisoning Attacks to
Byzantine-Robust Federated Learning": the attacks on trimmed mean / median (Sec. 4, "Attacking
Trimmed mean", also used against median) and on Krum (Sec. 4, "Attacking Krum").

Everything is in update space: an update is a client model minus the global model, the global
model (the paper's ``w_Re``, "before-attack global model") is the origin, and ``s_j`` is the
sign of the benign change of coordinate j, i.e. of the mean benign update (``s_j = +1``: the
benign clients move parameter j up). Both attacks push every coordinate AGAINST ``s``.

Threat model. The attackers control ``c`` clients and send crafted updates in place of theirs.
Full knowledge: they know all the benign updates of the round (and the aggregation rule).
Partial knowledge: they know only the benign updates they compute on their own clients' data
("before-attack local models") and use those as a sample of the benign ones; they know the
aggregation rule. The direction ``s`` is estimated from whichever updates they know.

Trimmed mean / median, full knowledge (``fang_trim_full``), with ``w_max,j`` / ``w_min,j`` the
largest / smallest benign value of coordinate j and ``b = 2`` (the paper's choice):

    s_j = -1:  sample in [w_max,j, b * w_max,j]   if w_max,j > 0,  else [w_max,j, w_max,j / b]
    s_j = +1:  sample in [w_min,j / b, w_min,j]   if w_min,j > 0,  else [b * w_min,j, w_min,j]

(every crafted value lies beyond the benign extreme on the side opposite to ``s_j``).
Partial knowledge (``fang_trim_partial``): mu_j, sigma_j are the mean and standard deviation of
the attackers' own benign updates, ``s_j = sign(mu_j)`` and the crafted values are sampled
in ``[mu_j + 3 sigma_j, mu_j + 4 sigma_j]`` if ``s_j = -1`` and in
``[mu_j - 4 sigma_j, mu_j - 3 sigma_j]`` if ``s_j = +1``. Coordinates with ``s_j = 0`` (benign
mean exactly 0, no direction to reverse) get the value 0 (full) or mu_j (partial).

NB: the Fang-attack re-implementation in Shejwalkar & Houmansadr's NDSS'21 code
(vrt1shjwlkr/NDSS21-Model-Poisoning, cifar10/release-fedsgd-alexnet-trmean.ipynb, raw-JSON lines
303-304) multiplies BOTH the max-side and the min-side samples by ``(deviation > 0)``: a
coordinate with positive mean gradient gets the sum of the two samples and one with negative
mean gradient gets 0. That is a sign/indicator bug; this module follows the paper.

Krum (``fang_krum_attack``): the first crafted update is ``w'_1 = w_Re - lambda * s = -lambda s``;
lambda starts at the paper's upper bound (``fang_krum_lambda_bound``)

    lambda <= 1 / ((m - 2c - 1) sqrt(d)) * min_{i benign} sum_{l in N_i} ||w_l - w_i||
              + 1 / sqrt(d) * max_{i benign} ||w_i - w_Re||

(N_i: the m - c - 2 benign updates nearest to w_i, m = all clients of the round, c = attackers)
and is halved until Krum, run on the c crafted plus the known benign updates with c assumed
Byzantine, selects a crafted update, or until lambda <= 1e-5 (the paper's threshold), when the
attack gives up (lambda = 0, the crafted updates are 0). The other c - 1 crafted updates are
"close to w'_1" in the paper; here they equal w'_1 (``epsilon = 0``, the default) or are w'_1
plus a uniform per-coordinate offset in ``[-epsilon/sqrt(d), epsilon/sqrt(d)]`` (so within L2
distance epsilon), drawn once from the given generator; Krum is checked on exactly the updates
returned. With partial knowledge the known updates are the attackers' own (k of them); the
simulated round then has ``m = k + c`` updates, which needs ``k >= c + 2``. The NDSS'21
re-implementation instead simulates fewer attackers (``max(1, c*c // n)``), which
``num_simulated`` allows. That re-implementation (cifar10/release-fedsgd-alexnet-mkrum.ipynb,
``compute_lambda_fang``) also
sums over ``m - 2c - 2`` neighbours and measures the second term from the benign mean; here the
paper's ``m - c - 2`` neighbours and ``w_Re`` = the global model (0) are used.
"""

from __future__ import annotations

import math

import torch

from attacks.base import Attack, AttackContext, State, state_from_update
from attacks.knowledge import KNOWLEDGE_PARAM, knowledge_problems, known_benign, max_attackers
from task.runconfig import RunConfig

B_RANGE = 2.0  # the paper's b for the full-knowledge trimmed-mean attack
LAMBDA_THRESHOLD = 1e-5  # the paper's stopping threshold for the Krum attack's lambda


def _check_matrix(name: str, x: torch.Tensor, minimum: int = 1) -> None:
    if x.dim() != 2 or x.shape[0] < minimum or x.shape[1] < 1:
        raise ValueError(
            f"{name} must be a (k, d) matrix with k >= {minimum}, got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must contain only finite values")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def benign_direction(benign: torch.Tensor) -> torch.Tensor:
    """``s = sign(mean of the benign updates)``: +1 where the benign clients move a coordinate
    up, -1 where down, 0 where the mean is exactly 0.

    >>> benign_direction(torch.tensor([[1.0, -3.0, 1.0], [2.0, 1.0, -1.0]]))
    tensor([ 1., -1.,  0.])
    """
    _check_matrix("benign", benign)
    return torch.sign(benign.mean(0))


def fang_trim_full(
    benign: torch.Tensor,
    num_malicious: int,
    generator: torch.Generator,
    b: float = B_RANGE,
) -> torch.Tensor:
    """Full-knowledge trimmed-mean / median attack: ``num_malicious`` crafted updates, each
    coordinate sampled uniformly beyond the benign extreme opposite to the benign direction
    (see the module docstring). Returns a ``(num_malicious, d)`` tensor.

    Coordinate 0 moves up (s = +1, w_min = 1): values in [0.5, 1]; coordinate 1 moves down
    (s = -1, w_max = -1): values in [-1, -0.5].

    >>> g = torch.Generator().manual_seed(0)
    >>> w = fang_trim_full(torch.tensor([[1.0, -1.0], [3.0, -3.0]]), 4, g)
    >>> w.min(0).values >= torch.tensor([0.5, -1.0]), w.max(0).values <= torch.tensor([1.0, -0.5])
    (tensor([True, True]), tensor([True, True]))
    """
    _check_matrix("benign", benign)
    _check_count("num_malicious", num_malicious)
    if not b > 1:
        raise ValueError(f"b must be > 1, got {b}")
    s = torch.sign(benign.mean(0))
    w_max, w_min = benign.max(0).values, benign.min(0).values
    # s = -1: push up, past the largest benign value
    up_lo, up_hi = w_max, torch.where(w_max > 0, w_max * b, w_max / b)
    # s = +1: push down, past the smallest benign value
    down_lo, down_hi = torch.where(w_min > 0, w_min / b, w_min * b), w_min
    u = torch.rand(
        (num_malicious, benign.shape[1]),
        generator=generator,
        dtype=benign.dtype,
        device=benign.device,
    )
    push_up = up_lo + u * (up_hi - up_lo)
    push_down = down_lo + u * (down_hi - down_lo)
    zero = torch.zeros_like(push_up)
    return torch.where(s < 0, push_up, torch.where(s > 0, push_down, zero))


def fang_trim_partial(
    own: torch.Tensor, num_malicious: int, generator: torch.Generator
) -> torch.Tensor:
    """Partial-knowledge trimmed-mean / median attack from the attackers' own benign updates
    ``own`` (k, d): mu, sigma (population std, divisor k) per coordinate, ``s = sign(mu)``, and
    values in ``[mu + 3 sigma, mu + 4 sigma]`` where s = -1, ``[mu - 4 sigma, mu - 3 sigma]``
    where s = +1 (mu where s = 0). Returns a ``(num_malicious, d)`` tensor.

    mu = (2, -2), sigma = (1, 1): coordinate 0 in [-2, -1], coordinate 1 in [1, 2].

    >>> g = torch.Generator().manual_seed(0)
    >>> w = fang_trim_partial(torch.tensor([[1.0, -1.0], [3.0, -3.0]]), 4, g)
    >>> w.min(0).values >= torch.tensor([-2.0, 1.0]), w.max(0).values <= torch.tensor([-1.0, 2.0])
    (tensor([True, True]), tensor([True, True]))
    """
    _check_matrix("own", own)
    _check_count("num_malicious", num_malicious)
    mu = own.mean(0)
    sigma = own.std(0, correction=0)
    s = torch.sign(mu)
    u = torch.rand(
        (num_malicious, own.shape[1]), generator=generator, dtype=own.dtype, device=own.device
    )
    return mu - s * sigma * (3.0 + u)


def krum_scores(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of every row (Blanchard et al., 2017): the sum of squared distances to its
    ``n - f - 2`` nearest other rows (n rows, f assumed Byzantine; needs ``n - f - 2 >= 1``).

    Rows 0, 1, 3, 7 with f = 0 (2 neighbours): 1+9, 1+4, 4+9, 16+36.

    >>> krum_scores(torch.tensor([[0.0], [1.0], [3.0], [7.0]]), 0)
    tensor([10.,  5., 13., 52.])
    """
    _check_matrix("updates", updates)
    n = updates.shape[0]
    if isinstance(f, bool) or not isinstance(f, int) or f < 0 or n - f - 2 < 1:
        raise ValueError(f"f must be an integer with 0 <= f and n - f - 2 >= 1 (n = {n}), got {f}")
    d2 = torch.cdist(updates, updates, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d2.fill_diagonal_(float("inf"))  # a row is not its own neighbour (duplicates still count)
    return torch.topk(d2, n - f - 2, dim=1, largest=False).values.sum(1)


def krum_select(updates: torch.Tensor, f: int) -> int:
    """Index of the row Krum selects (smallest score; the first on ties).

    >>> krum_select(torch.tensor([[0.0], [1.0], [3.0], [7.0]]), 0)
    1
    """
    return int(torch.argmin(krum_scores(updates, f)))


def fang_krum_lambda_bound(reference: torch.Tensor, num_malicious: int) -> float:
    """The paper's upper bound on lambda, computed on the ``k`` known benign updates
    ``reference`` with ``c = num_malicious`` attackers and ``m = k + c`` clients:
    ``min_i sum_{l in N_i} ||w_l - w_i|| / ((m - 2c - 1) sqrt(d)) + max_i ||w_i|| / sqrt(d)``,
    ``N_i`` the ``m - c - 2 = k - 2`` benign updates nearest to w_i. Needs ``k >= c + 2`` and
    ``k >= 3``.

    Benign 1..5 on a line, c = 1 (m = 6): the 3 nearest sum to 4 at best (2, 3 or 4), the
    largest norm is 5, so lambda = 4/3 + 5:

    >>> round(fang_krum_lambda_bound(torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]]), 1), 4)
    6.3333
    """
    _check_matrix("reference", reference)
    _check_count("num_malicious", num_malicious)
    k, d = reference.shape
    c = num_malicious
    if k < 3 or k < c + 2:
        raise ValueError(
            f"num_malicious = {c} needs at least max(3, num_malicious + 2) reference updates "
            f"(m - 2c - 1 > 0 and m - c - 2 >= 1 with m = k + c), got k = {k}"
        )
    m = k + c
    dist = torch.cdist(reference, reference, compute_mode="donot_use_mm_for_euclid_dist")
    dist.fill_diagonal_(float("inf"))
    nearest = torch.topk(dist, m - c - 2, dim=1, largest=False).values.sum(1)
    first = float(nearest.min()) / ((m - 2 * c - 1) * math.sqrt(d))
    second = float(torch.linalg.vector_norm(reference, dim=1).max()) / math.sqrt(d)
    return first + second


def fang_krum_attack(
    reference: torch.Tensor,
    num_malicious: int,
    *,
    num_simulated: int | None = None,
    threshold: float = LAMBDA_THRESHOLD,
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Fang et al.'s attack on Krum. ``reference`` (k, d): the benign updates the attackers know
    (full knowledge: all benign updates of the round; partial: their own). Returns
    ``(crafted, lambda)``: ``num_malicious`` crafted updates ``-lambda * s + offset`` (offset 0
    for the first, within L2 ``epsilon`` for the others) and the lambda found, or
    ``(zeros, 0.0)`` if lambda fell to ``threshold`` without Krum selecting a crafted update.

    ``num_simulated`` (default ``num_malicious``): how many crafted updates join the simulated
    round and Krum's assumed f; the bound uses it as c. A tie between a crafted and a benign
    Krum score counts as failure.

    Benign -2, -1, 1, 2, 3 (s = +1) and c = 2: the bound is 5/2 + 3 = 5.5; Krum still picks a
    benign update at 5.5 and 2.75 but the crafted pair at 1.375 (score 0.375^2 + 0.625^2):

    >>> w, lam = fang_krum_attack(torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [3.0]]), 2)
    >>> lam, w.flatten().tolist()
    (1.375, [-1.375, -1.375])
    """
    _check_matrix("reference", reference)
    _check_count("num_malicious", num_malicious)
    cs = num_malicious if num_simulated is None else num_simulated
    _check_count("num_simulated", cs)
    if cs > num_malicious:
        raise ValueError(f"num_simulated must be <= num_malicious, got {cs} > {num_malicious}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if epsilon > 0 and generator is None:
        raise ValueError("generator is required when epsilon > 0")
    lam = fang_krum_lambda_bound(reference, cs)  # validates k against cs
    d = reference.shape[1]
    s = torch.sign(reference.mean(0))
    offsets = torch.zeros((num_malicious, d), dtype=reference.dtype, device=reference.device)
    if epsilon > 0 and num_malicious > 1:
        u = torch.rand(
            (num_malicious - 1, d),
            generator=generator,
            dtype=reference.dtype,
            device=reference.device,
        )
        offsets[1:] = (2 * u - 1) * (epsilon / math.sqrt(d))
    if bool(s.any()):
        while lam > threshold:
            crafted = offsets - lam * s
            scores = krum_scores(torch.cat([crafted[:cs], reference]), cs)
            if float(scores[:cs].min()) < float(scores[cs:].min()):
                return crafted, lam
            lam /= 2
    return torch.zeros_like(offsets), 0.0


def simulated_attackers(c: int, n: int) -> int:
    """Attackers a partial-knowledge Krum attack simulates: ``max(1, c*c // n)``, as in the
    NDSS'21 re-implementation (with only the attackers' own c updates known, the paper's bound
    cannot hold for all c: it needs c known updates >= simulated + 2).

    >>> simulated_attackers(2, 10), simulated_attackers(5, 10)
    (1, 2)
    """
    return max(1, c * c // n)


class FangTrimmedMean(Attack):
    """``attack = fang-trmean``: each attacker sends one crafted update of
    `fang_trim_full` (``attack-knowledge = full``: the round's benign updates) or
    `fang_trim_partial` (``partial``: the attackers' own benign updates), sampled with its own
    seed. Threat model: see the module docstring (knowledge: `attacks.knowledge`)."""

    PARAMS = (KNOWLEDGE_PARAM,)

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        return knowledge_problems(config, "fang-trmean", 1, "the direction s needs an update")

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        knowledge = self.params["knowledge"]
        benign = known_benign(ctx, knowledge)
        draw = torch.Generator().manual_seed(int(generator.initial_seed()) ^ 0xFA9)
        craft = fang_trim_full if knowledge == "full" else fang_trim_partial
        return state_from_update(craft(benign, 1, draw)[0], ctx.global_state)


class FangKrum(Attack):
    """``attack = fang-krum``: every attacker sends ``w'_1 = -lambda * s`` of `fang_krum_attack`
    (epsilon 0: all identical), with c = the round's attackers. Full knowledge: the round's
    benign updates (the paper's bound needs ``clients-per-round >= 2c + 2``, c + 2 benign ones);
    partial: the attackers' own benign updates, simulating ``max(1, c*c // n)`` attackers
    (`simulated_attackers`; needs ``num-malicious >= max(3, that + 2)``). A round in which Krum
    never picks a crafted update even at lambda = 1e-5 sends a zero update (the paper's give-up).
    Threat model: see the module docstring; the attackers know the rule is Krum."""

    PARAMS = (KNOWLEDGE_PARAM,)

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        knowledge = config.attack_knowledge
        c = max_attackers(config)
        if knowledge == "partial":
            cs = simulated_attackers(c, config.clients_per_round)
            return knowledge_problems(
                config, "fang-krum", max(3, cs + 2),
                f"Fang et al.'s bound on lambda with {cs} simulated attacker(s) "
                "(max(1, c*c // clients-per-round)) needs that many of the attackers' own",
            )  # fmt: skip
        return knowledge_problems(
            config, "fang-krum", max(3, c + 2),
            f"Fang et al.'s bound on lambda needs m - 2c - 1 > 0 with c = {c} attackers of m = "
            "clients-per-round, i.e. clients-per-round >= 2c + 2",
        )  # fmt: skip

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        knowledge = self.params["knowledge"]
        benign = known_benign(ctx, knowledge)
        c = len(ctx.attackers())
        simulated = (
            c if knowledge == "full" else simulated_attackers(c, self.config.clients_per_round)
        )
        crafted, _ = fang_krum_attack(benign, c, num_simulated=simulated)
        return state_from_update(crafted[0], ctx.global_state)
