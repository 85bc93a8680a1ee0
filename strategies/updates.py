"""Client replies -> one stacked pseudo-gradient matrix, with every reply checked first.

A reply is *rejected* (never aggregated, never fatal) when its ``arrays`` record does not match
the broadcast model (keys, shapes, dtypes), when ``num-examples`` is not a positive finite
number, when any value is NaN/inf, or when its update norm exceeds ``max_update_norm`` (> 0).

Pseudo-gradients are ``U_i = W_i - W_global`` over the floating-point tensors of the model,
flattened in the model's key order into row ``i`` of ``U (n, d)``, on the aggregation device.
Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are not averaged: the new global takes
their elementwise median over the accepted replies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"
WEIGHT_KEY = "num-examples"


@dataclass(frozen=True)
class Layout:
    """Where each floating-point tensor of the model lives in a flat update vector."""

    keys: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    float_keys: tuple[str, ...]
    offsets: dict[str, tuple[int, int]]
    size: int

    @classmethod
    def of(cls, arrays: ArrayRecord) -> Layout:
        keys = tuple(arrays.keys())
        shapes = {k: tuple(arrays[k].shape) for k in keys}
        dtypes = {k: str(arrays[k].dtype) for k in keys}
        float_keys = tuple(k for k in keys if np.dtype(dtypes[k]).kind == "f")
        offsets, pos = {}, 0
        for k in float_keys:
            n = math.prod(shapes[k])
            offsets[k] = (pos, pos + n)
            pos += n
        return cls(keys, shapes, dtypes, float_keys, offsets, pos)

    def structure_problem(self, arrays: ArrayRecord) -> str | None:
        """Why `arrays` does not match this layout, or None."""
        keys = tuple(arrays.keys())
        if set(keys) != set(self.keys):
            missing, extra = set(self.keys) - set(keys), set(keys) - set(self.keys)
            return f"array keys differ (missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})"
        for k in self.keys:
            if tuple(arrays[k].shape) != self.shapes[k]:
                return f"'{k}' has shape {tuple(arrays[k].shape)}, expected {self.shapes[k]}"
            if str(arrays[k].dtype) != self.dtypes[k]:
                return f"'{k}' has dtype {arrays[k].dtype}, expected {self.dtypes[k]}"
        return None

    def flatten(self, arrays: ArrayRecord, out: torch.Tensor) -> None:
        """Write the floating-point tensors of `arrays` into the 1-d tensor `out`."""
        for k in self.float_keys:
            a, b = self.offsets[k]
            out[a:b].copy_(torch.from_numpy(np.ascontiguousarray(arrays[k].numpy())).reshape(-1))


@dataclass
class Screened:
    """The outcome of screening one round's replies."""

    accepted: list[Message] = field(default_factory=list)
    updates: torch.Tensor | None = None  # (len(accepted), d) pseudo-gradients
    weights: torch.Tensor | None = None  # (len(accepted),) num-examples
    norms: list[float] = field(default_factory=list)  # L2 norms of the accepted updates
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (node id, reason)
    failed: list[tuple[int, str]] = field(default_factory=list)  # replies carrying an error


def _weight_problem(msg: Message) -> tuple[float | None, str | None]:
    content = msg.content
    if METRICS_KEY not in content.metric_records:
        return None, f"no '{METRICS_KEY}' MetricRecord"
    value = content.metric_records[METRICS_KEY].get(WEIGHT_KEY)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"'{WEIGHT_KEY}' missing or not a number ({value!r})"
    if not (math.isfinite(value) and value > 0):
        return None, f"'{WEIGHT_KEY}' must be a positive finite number, got {value}"
    return float(value), None


def screen_replies(
    replies: list[Message],
    global_arrays: ArrayRecord,
    layout: Layout,
    device: torch.device,
    max_update_norm: float = 0.0,
) -> Screened:
    """Check every reply and stack the accepted ones' pseudo-gradients (see module doc)."""
    out = Screened()
    candidates: list[tuple[Message, float]] = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            out.failed.append((node, str(msg.error.reason)))
            continue
        content = msg.content
        if ARRAYS_KEY not in content.array_records:
            out.rejected.append((node, f"no '{ARRAYS_KEY}' ArrayRecord"))
            continue
        problem = layout.structure_problem(content.array_records[ARRAYS_KEY])
        weight, weight_problem = _weight_problem(msg)
        if problem or weight_problem:
            out.rejected.append((node, problem or weight_problem or ""))
            continue
        candidates.append((msg, weight))
    if not candidates:
        return out
    U = torch.empty((len(candidates), layout.size), dtype=torch.float32)
    for i, (msg, _) in enumerate(candidates):
        try:
            layout.flatten(msg.content.array_records[ARRAYS_KEY], U[i])
        except (ValueError, TypeError, RuntimeError) as exc:  # undecodable bytes
            U[i] = float("nan")
            out.rejected.append((msg.metadata.src_node_id, f"arrays not decodable: {exc}"))
    g = torch.empty(layout.size, dtype=torch.float32)
    layout.flatten(global_arrays, g)
    U = U.to(device)
    U -= g.to(device)
    finite = torch.isfinite(U).all(dim=1)
    norms = torch.linalg.vector_norm(torch.nan_to_num(U, 0.0, 0.0, 0.0), dim=1)
    keep = finite.clone()
    already = {node for node, _ in out.rejected}
    for i, (msg, _) in enumerate(candidates):
        node = msg.metadata.src_node_id
        if node in already:
            keep[i] = False
        elif not bool(finite[i]):
            out.rejected.append((node, "update contains NaN or inf"))
        elif max_update_norm > 0 and float(norms[i]) > max_update_norm:
            keep[i] = False
            out.rejected.append(
                (node, f"update norm {float(norms[i]):.4g} > max-update-norm {max_update_norm}")
            )
    idx = torch.nonzero(keep).flatten().tolist()
    out.accepted = [candidates[i][0] for i in idx]
    out.updates = U if len(idx) == len(candidates) else U[keep]
    out.weights = torch.tensor([candidates[i][1] for i in idx], dtype=torch.float32)
    out.norms = [float(v) for v in norms[idx].tolist()] if idx else []
    return out


def apply_update(
    global_arrays: ArrayRecord,
    layout: Layout,
    update: torch.Tensor,
    accepted: list[Message],
) -> ArrayRecord:
    """New global arrays: floats ``W + update``; integer buffers: median of the replies."""
    flat = torch.empty(layout.size, dtype=torch.float32)
    layout.flatten(global_arrays, flat)
    flat += update.detach().to("cpu", torch.float32).reshape(-1)
    state: dict[str, torch.Tensor] = {}
    for k in layout.keys:
        if k in layout.offsets:
            a, b = layout.offsets[k]
            dtype = getattr(torch, layout.dtypes[k])
            state[k] = flat[a:b].reshape(layout.shapes[k]).to(dtype).clone()
        else:
            stacked = torch.stack(
                [torch.from_numpy(m.content.array_records[ARRAYS_KEY][k].numpy()) for m in accepted]
            )
            state[k] = stacked.median(dim=0).values
    return ArrayRecord(state)
