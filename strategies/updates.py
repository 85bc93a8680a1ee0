"""Client replies -> one stacked pseudo-gradient matrix, with every field a client controls checked.

The server trusts nothing in a reply. A train reply is **rejected** (logged with the node id and
the reason, counted, never aggregated, never fatal) unless all of this holds:

- its records are exactly one ``arrays`` ArrayRecord and one ``metrics`` MetricRecord (a second
  record of any kind is refused, not ignored);
- every metric name is a short lower-case identifier, at most `MAX_METRICS` of them, and every
  value is a finite number (`client_metrics`); ``num-examples`` is a positive finite number;
- every array **decodes** (NumPy bytes, no pickle) to exactly the broadcast model's shape and
  dtype: the declared shape and dtype of an `Array` are client-written text and are checked
  against the decoded bytes too (`Layout.decode`);
- its update is finite and, with ``max_update_norm > 0``, not longer than that;
- nothing in checking it raised: any exception while screening one reply rejects that reply.

Weights: the claimed ``num-examples`` weighs an update in FedAvg-style rules, so a claim is
**capped** by `cap_weights` (the reply is kept, the cap logged and counted): at most the size the
node reported at discovery, at most ``cap_ratio`` x the round's (lower) median claim, and never
half of the round's total or more when another reply is there (see `cap_weights`). With
``weighting`` ``equal`` or ``assigned`` no claim weighs anything.

Pseudo-gradients are ``U_i = W_i - W_global`` over the floating-point tensors of the model,
flattened in the model's key order into row ``i`` of ``U (n, d)``, on the aggregation device.
Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are not averaged: the new global takes
their elementwise median over the accepted replies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from task import messages

ARRAYS_KEY = messages.ARRAYS
METRICS_KEY = messages.METRICS
WEIGHT_KEY = messages.WEIGHT
#: Client metrics reach rounds.jsonl and Prometheus under this prefix only, so a client can
#: never write a key of the server's bookkeeping (``round``, ``rejected_replies``, ...).
CLIENT_PREFIX = "client."
#: ... and client-side evaluation metrics under this one (``client_eval.acc``).
EVAL_PREFIX = "client_eval."
MAX_METRICS = 32
MAX_METRIC_ABS = 1e12  # larger client-reported numbers would let one client own an average
MAX_HEADER_BYTES = 65_546  # the largest .npy header (format 2.0/3.0: 4-byte length + magic)
METRIC_NAME = re.compile(r"[a-z][a-z0-9_-]{0,47}")
NUMPY_STYPE = "numpy.ndarray"


class ReplyRejected(ValueError):
    """A reply fails screening; the message says why."""


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

    def decode(self, arrays: ArrayRecord) -> dict[str, np.ndarray]:
        """Every array decoded and checked against this layout; `ReplyRejected` says what is
        wrong (missing/extra keys, serialisation, declared or decoded shape/dtype)."""
        keys = set(arrays.keys())
        if keys != set(self.keys):
            missing, extra = set(self.keys) - keys, keys - set(self.keys)
            raise ReplyRejected(
                f"array keys differ (missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})"
            )
        out: dict[str, np.ndarray] = {}
        for k in self.keys:
            arr = arrays[k]
            if not isinstance(arr, Array) or arr.stype != NUMPY_STYPE:
                raise ReplyRejected(f"'{k}' is not a NumPy array (stype {arr.stype!r})")
            declared = (tuple(arr.shape), str(arr.dtype))
            if declared != (self.shapes[k], self.dtypes[k]):
                raise ReplyRejected(
                    f"'{k}' declares {declared[1]} {declared[0]}, "
                    f"expected {self.dtypes[k]} {self.shapes[k]}"
                )
            try:
                value = arr.numpy()
            except Exception as exc:  # noqa: BLE001 - any undecodable bytes
                raise ReplyRejected(f"'{k}' does not decode: {exc}") from exc
            if value.shape != self.shapes[k] or str(value.dtype) != self.dtypes[k]:
                raise ReplyRejected(
                    f"'{k}' bytes decode to {value.dtype} {value.shape} but declare "
                    f"{self.dtypes[k]} {self.shapes[k]}"
                )
            if len(arr.data) > value.nbytes + MAX_HEADER_BYTES:
                raise ReplyRejected(f"'{k}' carries {len(arr.data) - value.nbytes} extra bytes")
            out[k] = value
        return out

    def flatten(self, arrays: Mapping[str, np.ndarray], out: torch.Tensor) -> None:
        """Write the floating-point arrays (decoded) into the 1-d tensor `out`."""
        for k in self.float_keys:
            a, b = self.offsets[k]
            out[a:b].copy_(torch.from_numpy(np.ascontiguousarray(arrays[k])).reshape(-1))

    def aggregate_problem(self, arrays: ArrayRecord) -> str | None:
        """Why an aggregate is unusable as the next global model (wrong structure or
        non-finite values), or None."""
        try:
            decoded = self.decode(arrays)
        except ReplyRejected as exc:
            return str(exc)
        for k in self.float_keys:
            if not np.isfinite(decoded[k]).all():
                return f"'{k}' contains NaN or inf"
        return None


def client_metrics(record: MetricRecord) -> tuple[float, dict[str, float]]:
    """(claimed weight, the other metrics) of a reply's MetricRecord, every value checked."""
    if len(record) > MAX_METRICS:
        raise ReplyRejected(f"{len(record)} metrics (at most {MAX_METRICS})")
    values: dict[str, float] = {}
    for key, value in record.items():
        if not (isinstance(key, str) and (key == WEIGHT_KEY or METRIC_NAME.fullmatch(key))):
            raise ReplyRejected(f"metric name {str(key)[:60]!r} is not allowed")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReplyRejected(f"metric '{key}' is not a number ({type(value).__name__})")
        if not math.isfinite(value):
            raise ReplyRejected(f"metric '{key}' is not finite ({value})")
        if key != WEIGHT_KEY and abs(value) > MAX_METRIC_ABS:
            raise ReplyRejected(f"metric '{key}' = {value:.3g} is out of range (|x| <= 1e12)")
        values[key] = float(value)
    weight = values.pop(WEIGHT_KEY, None)
    if weight is None:
        raise ReplyRejected(f"'{WEIGHT_KEY}' missing")
    if not weight > 0:
        raise ReplyRejected(f"'{WEIGHT_KEY}' must be a positive finite number, got {weight}")
    return weight, values


def only_records(content: RecordDict, expected: Mapping[str, type]) -> None:
    """Refuse a reply whose records are not exactly `expected` (name -> record type)."""
    names = set(content.keys())
    if names != set(expected):
        extra, missing = sorted(names - set(expected)), sorted(set(expected) - names)
        raise ReplyRejected(f"records differ (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, kind in expected.items():
        if not isinstance(content[name], kind):
            raise ReplyRejected(f"record '{name}' is a {type(content[name]).__name__}")


def cap_weights(
    claims: Sequence[float], reported: Sequence[float | None], cap_ratio: float = 2.0
) -> tuple[list[float], list[str | None]]:
    """The weights a round uses for claimed example counts, and why each was capped (or None).

    1. A claim is at most the size the node reported at discovery (``reported``, when known):
       a node cannot grow between discovery and training.
    2. At most ``cap_ratio`` x the round's lower median claim ``m = sorted(w)[(n - 1) // 2]``:
       while fewer than half of the replies lie, ``m`` is an honest claim, so each liar weighs
       at most ``cap_ratio`` honest medians.
    3. No single reply holds half of the round's total or more while others are there: if the
       largest weight is >= the sum of all others, it is lowered to the largest other weight
       (with n >= 3 its share is then < 1/2; with n = 2 the two weigh the same).

    Honest claims are never changed in IID rounds (all equal); in non-IID rounds a claim above
    ``cap_ratio`` x the median is capped too (raise ``weight-cap-ratio`` to cap less).

    What it withstands: a fraction ``q`` of a round's n replies colluding, each claiming the
    cap ``r m`` against honest claims of ``m``, holds the share ``q r / (q r + 1 - q)`` of the
    weight while the median is honest (``k <= n // 2`` liars): a majority once
    ``q > 1 / (1 + r)`` (r = 2: more than a third; 2 of 5 take 4/7 = 57 %).

    >>> cap_weights([600, 600, 600, 1e39], [600, 600, 600, None])[0]
    [600.0, 600.0, 600.0, 1200.0]
    >>> cap_weights([1.0, 1e12], [None, None])[0]
    [1.0, 1.0]
    """
    if not cap_ratio >= 1:
        raise ValueError(f"cap_ratio must be >= 1, got {cap_ratio}")
    w = [float(c) for c in claims]
    why: list[str | None] = [None] * len(w)
    for i, r in enumerate(reported):
        if r is not None and w[i] > r:
            w[i], why[i] = float(r), f"claimed {claims[i]:.4g} > {r:.4g} reported at discovery"
    if not w:
        return w, why
    median = sorted(w)[(len(w) - 1) // 2]
    for i in range(len(w)):
        if w[i] > cap_ratio * median:
            w[i] = cap_ratio * median
            why[i] = f"claimed {claims[i]:.4g} > {cap_ratio:g} x round median {median:.4g}"
    if len(w) >= 2:
        top = max(range(len(w)), key=lambda i: w[i])
        others = w[:top] + w[top + 1 :]
        if w[top] >= sum(others):
            w[top] = max(others)
            why[top] = f"claimed {claims[top]:.4g}: would hold half of the round's weight"
    return w, why


@dataclass
class Screened:
    """The outcome of screening one round's replies (accepted ones in aggregation order)."""

    nodes: list[int] = field(default_factory=list)  # accepted node ids
    arrays: list[dict[str, np.ndarray]] = field(default_factory=list)  # decoded, checked
    metrics: list[dict[str, float]] = field(default_factory=list)  # client metrics, checked
    updates: torch.Tensor | None = None  # (len(nodes), d) pseudo-gradients
    weights: torch.Tensor | None = None  # (len(nodes),) capped example counts, float64
    norms: list[float] = field(default_factory=list)  # L2 norms of the accepted updates
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (node id, reason)
    failed: list[tuple[int, str]] = field(default_factory=list)  # replies carrying an error
    capped: list[tuple[int, str]] = field(default_factory=list)  # (node id, why) weight capped

    def __len__(self) -> int:
        return len(self.nodes)

    def sanitized(self, message_type: str) -> list[Message]:
        """The accepted replies rebuilt from what screening decoded (arrays + capped weight
        only), for rules that take Messages (Flower's)."""
        assert self.weights is not None
        return [
            Message(
                RecordDict(
                    {
                        ARRAYS_KEY: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                        METRICS_KEY: MetricRecord({WEIGHT_KEY: float(w)}),
                    }
                ),
                dst_node_id=node,
                message_type=message_type,
            )  # fmt: skip
            for node, arrays, w in zip(self.nodes, self.arrays, self.weights.tolist(), strict=True)
        ]


def sender_problem(node: int, seen: set[int], expected: set[int] | None) -> str | None:
    """Why a reply from `node` is refused before its content is read (None: it is not), and
    `node` noted in `seen`. With `expected` (the node ids asked this round): a second reply
    from a node, or one from a node that was not asked. Flower's link state refuses these too;
    this is defence in depth. Without `expected` (replies that are our own sanitized copies),
    nothing is refused here.

    >>> seen = set()
    >>> [sender_problem(n, seen, {1, 2}) for n in (1, 1, 3)]  # doctest: +NORMALIZE_WHITESPACE
    [None, 'a second reply from the same node this round',
     'a reply from a node that was not asked this round']
    """
    if expected is None:
        return None
    if node in seen:
        return "a second reply from the same node this round"
    seen.add(node)
    if node not in expected:
        return "a reply from a node that was not asked this round"
    return None


def screen_replies(
    replies: list[Message],
    global_arrays: ArrayRecord,
    layout: Layout,
    device: torch.device,
    max_update_norm: float = 0.0,
    reported: Mapping[int, float] | None = None,
    cap_ratio: float = 2.0,
    expected: set[int] | None = None,
    weighting: str = "claimed",
    assigned: Mapping[int, float] | None = None,
) -> Screened:
    """Check every reply and stack the accepted ones' pseudo-gradients (see module doc).
    With `expected` (the node ids asked this round), replies from other nodes are rejected.
    `weighting`: ``claimed`` (capped claims), ``equal`` (1 each) or ``assigned`` (the sizes
    the server assigned, `assigned`: node id -> size): the last two ignore every claim."""
    out = Screened()
    candidates: list[tuple[int, dict[str, np.ndarray], float, dict[str, float]]] = []
    seen: set[int] = set()
    for msg in replies:
        node = msg.metadata.src_node_id
        if problem := sender_problem(node, seen, expected):
            out.rejected.append((node, problem))
            continue
        if msg.has_error():
            out.failed.append((node, str(msg.error.reason)))
            continue
        try:
            only_records(msg.content, {ARRAYS_KEY: ArrayRecord, METRICS_KEY: MetricRecord})
            weight, metrics = client_metrics(msg.content.metric_records[METRICS_KEY])
            arrays = layout.decode(msg.content.array_records[ARRAYS_KEY])
        except ReplyRejected as exc:
            out.rejected.append((node, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a reply must never crash the server
            out.rejected.append((node, f"screening failed: {type(exc).__name__}: {exc}"))
            continue
        candidates.append((node, arrays, weight, metrics))
    if not candidates:
        return out
    U = torch.empty((len(candidates), layout.size), dtype=torch.float32)
    for i, (_, arrays, _, _) in enumerate(candidates):
        layout.flatten(arrays, U[i])
    g = torch.empty(layout.size, dtype=torch.float32)
    layout.flatten(layout.decode(global_arrays), g)
    U = U.to(device)
    U -= g.to(device)
    finite = torch.isfinite(U).all(dim=1)
    norms = torch.linalg.vector_norm(torch.nan_to_num(U, 0.0, 0.0, 0.0), dim=1)
    keep = finite.clone()
    for i, (node, _, _, _) in enumerate(candidates):
        if not bool(finite[i]):
            out.rejected.append((node, "update contains NaN or inf"))
        elif max_update_norm > 0 and float(norms[i]) > max_update_norm:
            keep[i] = False
            out.rejected.append(
                (node, f"update norm {float(norms[i]):.4g} > max-update-norm {max_update_norm}")
            )
    idx = torch.nonzero(keep).flatten().tolist()
    kept = [candidates[i] for i in idx]
    reported = reported or {}
    weights, why = cap_weights([c[2] for c in kept], [reported.get(c[0]) for c in kept], cap_ratio)
    if weighting != "claimed":  # nothing a client says weighs its update
        sizes = (assigned or {}) if weighting == "assigned" else {}
        weights = [float(sizes.get(c[0], 1.0 if weighting == "equal" else w))
                   for c, w in zip(kept, weights, strict=True)]  # fmt: skip
        why = [None] * len(kept)
    out.nodes = [c[0] for c in kept]
    out.arrays = [c[1] for c in kept]
    out.metrics = [c[3] for c in kept]
    out.capped = [(node, w) for node, w in zip(out.nodes, why, strict=True) if w is not None]
    out.updates = U if len(idx) == len(candidates) else U[keep]
    out.weights = torch.tensor(weights, dtype=torch.float64)
    out.norms = [float(v) for v in norms[idx].tolist()] if idx else []
    return out


def mean_client_metrics(
    metrics: Sequence[Mapping[str, float]], weights: Sequence[float], prefix: str = CLIENT_PREFIX
) -> dict[str, float]:
    """Per key, the weighted mean over the replies that report the key, as ``<prefix><key>``.

    Replies need not share keys (malicious nodes report fewer, FL-WBC nodes report
    ``wbc_perturbed_fraction``): a key is averaged over the nodes that sent it, never diluted
    by those that did not.
    """
    sums: dict[str, float] = {}
    totals: dict[str, float] = {}
    for values, w in zip(metrics, weights, strict=True):
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + w * value
            totals[key] = totals.get(key, 0.0) + w
    return {prefix + k: sums[k] / totals[k] for k in sorted(sums) if totals[k] > 0}


def apply_update(
    global_arrays: ArrayRecord,
    layout: Layout,
    update: torch.Tensor,
    accepted: Sequence[Mapping[str, np.ndarray]],
) -> ArrayRecord:
    """New global arrays: floats ``W + update``; integer buffers: median of the replies."""
    decoded = layout.decode(global_arrays)
    flat = torch.empty(layout.size, dtype=torch.float32)
    layout.flatten(decoded, flat)
    flat += update.detach().to("cpu", torch.float32).reshape(-1)
    state: dict[str, Any] = {}
    for k in layout.keys:
        if k in layout.offsets:
            a, b = layout.offsets[k]
            dtype = getattr(torch, layout.dtypes[k])
            state[k] = flat[a:b].reshape(layout.shapes[k]).to(dtype).clone()
        else:
            stacked = torch.stack([torch.from_numpy(np.array(arrays[k])) for arrays in accepted])
            state[k] = stacked.median(dim=0).values
    return ArrayRecord(state)
