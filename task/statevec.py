"""Model state <-> flat update vector, the one conversion every attack and defense uses.

An *update* is ``state - global`` over the floating-point tensors of the model, flattened in
the model's key order into one vector (the ``x_k`` of both papers: FL-WBC's Eq. 1-2 perturb it,
the Invariant Aggregator's Eq. 4-6 vote on its signs). Integer buffers (BatchNorm's
``num_batches_tracked``) are not part of an update.

>>> import torch
>>> g = {"w": torch.zeros(2, 2), "b": torch.ones(2), "n": torch.tensor(3)}
>>> s = {"w": torch.ones(2, 2), "b": torch.full((2,), 3.0), "n": torch.tensor(5)}
>>> flatten_update(s, g)
tensor([1., 1., 1., 1., 2., 2.])
>>> back = state_from_update(flatten_update(s, g), g)
>>> all(torch.equal(back[k], s[k]) for k in ("w", "b")), int(back["n"])
(True, 3)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

State = dict[str, torch.Tensor]


def float_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The keys of the floating-point tensors, in the state's order: the update's layout."""
    return [k for k, v in state.items() if v.is_floating_point()]


def flatten_update(
    state: Mapping[str, torch.Tensor], global_state: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``state - global`` over the floating-point tensors of ``global_state``, flattened in key
    order, in float32 on ``state``'s device."""
    return torch.cat(
        [(state[k].float() - global_state[k].to(state[k].device).float()).reshape(-1)
         for k in float_keys(global_state)]
    )  # fmt: skip


def state_from_update(
    update: torch.Tensor,
    global_state: Mapping[str, torch.Tensor],
    rest: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> State:
    """``global + update`` for the floating-point tensors (each back in its dtype); every other
    tensor copied from ``rest`` (default: ``global_state``). Tensors go to ``device`` (default:
    where each global tensor is). The inverse of `flatten_update`."""
    rest = global_state if rest is None else rest
    out: State = {}
    offset = 0
    for k, v in global_state.items():
        if v.is_floating_point():
            n = v.numel()
            base = v if device is None else v.to(device)
            step = update[offset : offset + n].to(base.device).view_as(v)
            out[k] = (base.float() + step).to(v.dtype)
            offset += n
        else:
            out[k] = rest[k].clone()
    if offset != update.numel():
        raise ValueError(f"update has {update.numel()} values, model has {offset}")
    return out
