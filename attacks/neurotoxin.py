"""Neurotoxin (Zhang, Panda, Song, Yang, Mahoney, Gonzalez, Ramchandran & Mittal, ICML 2022,
"Neurotoxin: Durable Backdoors in Federated Learning", Sec. 3, Algorithm 1).

Benign clients mostly change the coordinates with the largest gradient magnitude, and those
overwrite a backdoor quickly once the attacker stops. Neurotoxin therefore confines the
backdoor to the coordinates the benign clients rarely change: it estimates the benign gradient
by the previous round's global update (the difference of the last two global models, which
every client receives), finds its top-``ratio`` coordinates by magnitude, and projects its
backdoor training onto the OTHER coordinates.

Threat model. The attacker controls its own client(s) and data; it sees only the global models
it is sent (hence the previous global update); no benign client's update, no aggregation rule.

Authors' code (github.com/jhcknzzm/Federated-Learning-Backdoor, commit 21a9eaf):

* ``--gradmask_ratio`` is the fraction of coordinates KEPT (the README's "top-ratio weights will
  be retained" is misleading: helper.py lines 178-180 keep the ``int(d * ratio)`` SMALLEST
  ``|g|`` via ``topk(-|g|)``); default 1 = no mask (main_training.py lines 149-152), and the
  Neurotoxin runs mostly use 0.95 (run_backdoor_cv_task.sh lines 6-10 also 0.99 and 0.97;
  FL_Backdoor_NLP/run_NLP_tasks.sh mostly 0.95). Here ``ratio`` is the fraction EXCLUDED (the
  paper's top-k%), so the authors' 0.95 is ``ratio = 0.05``, the default.
* Their mask is computed from the global model's gradient on clean data sampled from benign
  participants (train_funcs.py lines 98-103, ``grad_mask_cv``), over all layers together when
  ``aggregate_all_layer = 1``; the paper's Algorithm 1 uses the previous global update, which
  is what this module takes as input (any estimate of the benign gradient works).
* The mask is applied to the gradient at EVERY local step before ``optimizer.step()``
  (train_funcs.py lines 412-413, ``apply_grad_mask`` at line 627): projected gradient descent.
  With plain SGD that equals projecting the final update once (`project` on the update); with
  momentum or weight decay it does not, and the attacker's training loop should call `project`
  on each step's gradient.
"""

from __future__ import annotations

import torch

DEFAULT_RATIO = 0.05  # fraction excluded; authors' runs: --gradmask_ratio 0.95 kept


def neurotoxin_mask(prev_global_update: torch.Tensor, ratio: float = DEFAULT_RATIO) -> torch.Tensor:
    """Boolean mask shaped like ``prev_global_update``: False on its ``round(ratio * d)``
    largest-magnitude coordinates (ties: any ``round(ratio * d)`` of them), True elsewhere (the
    coordinates the attacker may change). The authors' code keeps ``int(d * (1 - ratio))``
    coordinates instead (``helper.py``: ``topk(-|g|, int(d * 0.95))``), which can mask one
    more (d = 50, ratio 0.05: 3 there, 2 here, as 0.95 * 50 is 47.499... in floating point).

    >>> neurotoxin_mask(torch.tensor([0.1, -5.0, 0.2, 3.0]), 0.5)
    tensor([ True, False,  True, False])
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio must lie in [0, 1), got {ratio}")
    flat = prev_global_update.reshape(-1)
    k = round(ratio * flat.numel())
    keep = torch.ones(flat.shape, dtype=torch.bool, device=flat.device)
    if k > 0:
        keep[torch.topk(flat.abs(), k).indices] = False
    return keep.reshape(prev_global_update.shape)


def project(update: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``update`` with the coordinates outside ``mask`` set to 0 (a gradient or an update).

    >>> project(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, False, True]))
    tensor([1., 0., 3.])
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if mask.shape != update.shape:
        raise ValueError(
            f"mask must have the update's shape {tuple(update.shape)}, got {tuple(mask.shape)}"
        )
    return torch.where(mask, update, torch.zeros_like(update))
