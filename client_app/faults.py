"""Fault injection for testing a deployment's robustness (``inject-faults`` run-config key).

``inject-faults = "3:nan,5:shape,7:weight,9:crash"`` makes the listed partitions misbehave on
every train message (and, for ``metrics``, every evaluate message too). The server must reject,
cap or count each of them and go on; tests and operators use this to check it.

| kind | what the node sends |
| --- | --- |
| ``nan`` | NaN weights |
| ``shape`` | a tensor of the wrong shape |
| ``huge`` | an update of norm ~1e6 |
| ``crash`` | nothing: it raises (the reply carries an error) |
| ``weight`` | a claim of 1e39 examples (finite in float64, infinite in float32) |
| ``metrics`` | forged metrics named like the server's keys (``round``, ``adversarial``, ...) |
| ``records`` | a second MetricRecord claiming ``num-examples = -9.99`` |
| ``bytes`` | array bytes that disagree with the shape the Array declares |
| ``bug`` | nothing: it raises an exception that carries no fault marker, as a bug would |

Exceptions raised on purpose carry `INJECTED` in their message: in simulation, any other
exception in a ClientApp is a bug and stops the run (`server_app.outcomes`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from task import messages as M
from task.faultspec import INJECTED

if TYPE_CHECKING:  # imported by the ClientApp only; the kinds and parser: task.faultspec
    import torch
    from flwr.app import MetricRecord, RecordDict

#: Keys of the server's own round bookkeeping that the ``metrics`` fault forges.
FORGED_METRICS = {"round": 1.0, "adversarial": 0.0, "rejected_replies": -100.0,
                  "failed_replies": -5.0, "model_updated": 0.0}  # fmt: skip


def random_failure(seed: int, server_round: int, partition: int, prob: float) -> bool:
    """Whether a node fails this round (``fail-prob``; its own stream, keyed by round and node)."""
    if prob <= 0:
        return False
    from task.seeding import numpy_generator

    return bool(numpy_generator(seed, "node-failure", server_round, partition).random() < prob)


class InjectedCrash(RuntimeError):
    """Raised by a node told to fail (``fail-prob`` or ``inject-faults``)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{INJECTED} {what}")


class ClientAppError(RuntimeError):
    """An unexpected exception in a ClientApp, with the node's traceback in its message."""


def _mismatched_bytes(tensor: torch.Tensor):
    """An `Array` declaring `tensor`'s shape and dtype whose bytes hold its values in another
    shape (flat, or one row for a 1-d tensor)."""
    import numpy as np
    from flwr.app import Array

    values = tensor.detach().cpu().numpy()
    other = values.reshape(-1) if values.ndim != 1 else values.reshape(1, -1)
    buf = io.BytesIO()
    np.save(buf, other, allow_pickle=False)
    return Array(
        dtype=str(values.dtype),
        shape=tuple(values.shape),
        stype="numpy.ndarray",
        data=buf.getvalue(),
    )


def faulty_reply(kind: str, state: dict[str, torch.Tensor], metrics: MetricRecord) -> RecordDict:
    """The train reply content a faulty node sends (or raise for ``crash``)."""
    import torch
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    if kind == "crash":
        raise InjectedCrash("crash")
    if kind == "bug":
        raise ZeroDivisionError("inject-faults 'bug': an unmarked exception, as a bug raises")
    key = next(k for k, v in state.items() if v.is_floating_point())
    out = dict(state)
    if kind == "nan":
        out[key] = torch.full_like(state[key], float("nan"))
    elif kind == "shape":
        out[key] = torch.zeros(state[key].numel() + 1)
    elif kind == "huge":
        out[key] = state[key] + 1e6 / max(state[key].numel(), 1) ** 0.5
    arrays = ArrayRecord(out)
    if kind == "bytes":
        arrays[key] = _mismatched_bytes(state[key])
    content = {M.ARRAYS: arrays, M.METRICS: metrics}
    if kind == "weight":
        metrics[M.WEIGHT] = 1e39
    elif kind == "metrics":
        for name, value in FORGED_METRICS.items():
            metrics[name] = value
    elif kind == "records":
        content["extra"] = MetricRecord({M.WEIGHT: -9.99, "train_loss": 1e6})
    return RecordDict(content)


def faulty_eval_metrics(kind: str, metrics: MetricRecord) -> MetricRecord:
    """The evaluate metrics a faulty node sends (``metrics``: forged extra keys)."""
    if kind == "metrics":
        for name, value in FORGED_METRICS.items():
            metrics[name] = value
    return metrics
