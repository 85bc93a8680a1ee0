"""Adaptive attack against the AND-mask (Invariant Aggregator, Appendix C.1).

The attacker predicts which coordinates the server's AND-mask will keep and moves its update's
whole norm onto them: with u the malicious update, b_j the attackers' estimates of benign
updates (`AttackContext.benign_update` of the malicious partitions), n = clients-per-round and
m = malicious-per-round,

    c_k   = | m * sign(u_k) + (n - m) * mean_j sign(b_jk) | / n       (predicted consistency)
    keep  = c_k >= tau    (as the server's AND-mask: ties kept)        (tau = invariant-tau)
    u'    = (u * keep) * ||u|| / ||u * keep||                          (same L2 norm as u)
"""

from __future__ import annotations

import torch


def predicted_mask(
    update: torch.Tensor, benign_refs: torch.Tensor, n: int, m: int, tau: float
) -> torch.Tensor:
    """The AND-mask the attacker expects (boolean, shaped like `update`): the server's rule
    (`strategies.invariant.and_mask`, ties kept) on the expected vote count."""
    from strategies.invariant import VOTE_TOLERANCE  # here: the strategies package imports flwr

    benign_sign = torch.sign(benign_refs).mean(0) if len(benign_refs) else torch.zeros_like(update)
    votes = (m * torch.sign(update) + (n - m) * benign_sign).abs()
    return votes >= tau * n - VOTE_TOLERANCE


def rescale_to_mask(update: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``update`` restricted to `keep`, scaled back to ``update``'s L2 norm.

    >>> rescale_to_mask(torch.tensor([3.0, 4.0, 0.0]), torch.tensor([True, False, True]))
    tensor([5., 0., 0.])
    """
    kept = update * keep
    norm_kept = torch.linalg.vector_norm(kept)
    if float(norm_kept) == 0.0:
        return update  # nothing would survive the mask: leave the update as it is
    return kept * (torch.linalg.vector_norm(update) / norm_kept)
