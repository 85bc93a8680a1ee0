"""Model replacement (Bagdasaryan, Veit, Hua, Estrin & Shmatikov, AISTATS 2020, "How To
Backdoor Federated Learning", Sec. 3, model-replacement equation, and "constrain-and-scale").

With n clients per round, server learning rate eta and global model G, FedAvg computes
``G' = G + eta/n * sum_i (X_i - G)``. An attacker that submits

    X~ = gamma * (X - G) + G,        gamma = n / eta

replaces the global model by its backdoored model X once the benign updates (nearly) cancel
out, as they do close to convergence. In update space (G is the origin, u = X - G) the
submitted update is ``gamma * u``.

Constrain-and-scale. If the server bounds the norm of submitted updates by S (norm clipping or
rejection), the attacker scales only as far as the bound allows: the paper's choice is
``gamma = S / ||X - G||`` whenever n / eta would exceed it, i.e. the submitted update has norm
exactly S (while its training loss keeps X close to G, so the scaled update still carries the
backdoor). `scale_update(u, gamma, norm_bound=S)` therefore returns ``gamma * u`` shrunk to norm
S when it is longer than S.

Threat model. The attacker controls its own client(s) and data; it knows (or guesses) n and eta
(public protocol parameters) and, for constrain-and-scale, the server's norm bound S; it needs no
knowledge of the other clients' updates.
"""

from __future__ import annotations

import torch

from attacks.backdoor import POISON_PARAM, planted_backdoor, planted_problems
from attacks.base import Attack, AttackContext, State, flatten_update, state_from_update
from task.params import Param
from task.runconfig import RunConfig


def replacement_scale(n: int, eta: float) -> float:
    """``gamma = n / eta``: n clients aggregated per round, eta the server learning rate.

    >>> replacement_scale(10, 1.0), replacement_scale(100, 0.5)
    (10.0, 200.0)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    return n / eta


def scale_update(u: torch.Tensor, gamma: float, norm_bound: float | None = None) -> torch.Tensor:
    """``gamma * u``; with ``norm_bound`` S, shrunk to L2 norm S if longer (constrain-and-scale:
    the effective factor is ``min(gamma, S / ||u||)``).

    >>> u = torch.tensor([3.0, 4.0])
    >>> scale_update(u, 10.0)
    tensor([30., 40.])
    >>> scale_update(u, 10.0, norm_bound=10.0)  # 50 > 10: scaled to norm 10
    tensor([6., 8.])
    >>> scale_update(u, 1.0, norm_bound=10.0)  # 5 <= 10: unchanged
    tensor([3., 4.])
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if norm_bound is not None and not norm_bound > 0:
        raise ValueError(f"norm_bound must be > 0, got {norm_bound}")
    scaled = gamma * u
    if norm_bound is not None:
        norm = float(torch.linalg.vector_norm(scaled))
        if norm > norm_bound:
            scaled = scaled * (norm_bound / norm)
    return scaled


class ModelReplacement(Attack):
    """``attack = model-replacement``: train the backdoor of ``backdoor-poison`` (the pixel
    trigger or the edge cases, `attacks.backdoor`'s poisoned batches, ``attack-local-epochs``)
    and send ``gamma * (X - G)`` (`scale_update`).

    The paper's n and eta, mapped: FedAvg here computes ``G + server-lr * sum_i w_i u_i / sum_i
    w_i`` (w_i: the example counts), which is the paper's ``G + eta/n * sum_i u_i`` with
    ``eta = server-lr`` and ``n = clients-per-round`` when the sampled clients hold equal
    partitions (IID). So ``gamma = clients-per-round / server-lr``, divided by c, the round's
    attackers: c of them each sending ``gamma/c * u`` add up to one replacement (the paper has
    a single attacker per round). ``replacement-scale`` > 0 sets gamma itself;
    ``replacement-norm-bound`` S > 0 is constrain-and-scale's bound (the update is shrunk to L2
    norm S when longer, e.g. S = the server's ``max-update-norm`` or clipping norm). The paper's
    anomaly-detection term in the training loss is not used. Threat model: the module docstring
    (n, eta and S are public protocol parameters; no other client's update is needed).
    """

    PARAMS = (
        POISON_PARAM,
        Param("replacement-scale", "scale", 0.0,
              "model-replacement: gamma (0 = clients-per-round / (server-lr x attackers))",
              low=0.0),
        Param("replacement-norm-bound", "norm_bound", 0.0,
              "model-replacement: L2 bound S of the sent update (0 = off)", low=0.0),
    )  # fmt: skip

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        return planted_problems(config)

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        backdoored = planted_backdoor(self.config).craft(ctx, indices, generator)
        gamma = self.params["scale"] or replacement_scale(
            self.config.clients_per_round, self.config.server_lr
        ) / len(ctx.attackers())
        bound = self.params["norm_bound"] or None
        update = scale_update(flatten_update(backdoored, ctx.global_state), gamma, bound)
        return state_from_update(update, ctx.global_state)
