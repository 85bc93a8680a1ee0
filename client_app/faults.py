"""Fault injection for testing a deployment's robustness (``inject-faults`` run-config key).

``inject-faults = "3:nan,5:shape,7:huge,9:crash"`` makes the listed partitions misbehave on
every train message: ``nan`` sends NaN weights, ``shape`` sends a tensor of the wrong shape,
``huge`` sends an update of norm ~1e6, ``crash`` raises (the reply carries an error). The
server must reject or count each of them and go on; tests and operators use this to check it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the launcher validates `inject-faults` with parse_faults, without torch
    import torch

FAULT_KINDS = ("nan", "shape", "huge", "crash")


def random_failure(seed: int, server_round: int, partition: int, prob: float) -> bool:
    """Whether a node fails this round (``fail-prob``; its own stream, keyed by round and node)."""
    if prob <= 0:
        return False
    from immunefl.seeding import numpy_generator

    return bool(numpy_generator(seed, "node-failure", server_round, partition).random() < prob)


class InjectedCrash(RuntimeError):
    """Raised by a node told to crash."""


def parse_faults(spec: str) -> dict[int, str]:
    """``"3:nan,5:crash"`` -> ``{3: "nan", 5: "crash"}``; ValueError naming a bad entry."""
    faults: dict[int, str] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        pid, sep, kind = item.partition(":")
        if not sep or not pid.strip().isdigit() or kind.strip() not in FAULT_KINDS:
            raise ValueError(
                f"inject-faults entry '{item}' must be <partition>:<kind>, "
                f"kind one of {', '.join(FAULT_KINDS)}"
            )
        faults[int(pid)] = kind.strip()
    return faults


def apply_fault(kind: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The corrupted state a faulty node sends (or raise for ``crash``)."""
    import torch

    if kind == "crash":
        raise InjectedCrash("injected fault: crash")
    key = next(k for k, v in state.items() if v.is_floating_point())
    out = dict(state)
    if kind == "nan":
        out[key] = torch.full_like(state[key], float("nan"))
    elif kind == "shape":
        out[key] = torch.zeros(state[key].numel() + 1)
    elif kind == "huge":
        out[key] = state[key] + 1e6 / max(state[key].numel(), 1) ** 0.5
    return out
