"""Pre-aggregation of the accepted updates before a rule combines them (``pre-aggregator``).

``pre-aggregator`` names the maps of `strategies.preaggregators` to apply, in order, to the
stacked updates ``U (n, d)`` before the rule's ``aggregate_updates`` sees them
(`ImmuneFedAvg.aggregate_accepted`): ``none``, or a comma list of

- ``bucketing``: means of random buckets of ``preagg-bucket-size`` updates (Karimireddy et al.,
  ICLR 2022); ``ceil(n / s)`` rows, each weighing the same (the members' claimed example counts
  do not carry over: a bucket is a mean of its members). The permutation is drawn from the
  stream ``preagg-bucketing`` keyed by the run seed and the round;
- ``nnm``: nearest-neighbour mixing with ``preagg-f`` assumed attackers (Allouah et al.,
  AISTATS 2023); n rows, the weights kept;
- ``clipping``: each update clipped to L2 norm ``preagg-clip`` (static), or with
  ``preagg-clip = 0`` adaptive robust clipping, ARC, with ``preagg-f`` (Allouah et al., 2024).

``clipping,nnm`` clips, then mixes. It composes with every rule that aggregates the stacked
updates (every `ImmuneFedAvg` subclass that keeps ``aggregate_accepted``), with two refusals
before anything starts (`preaggregation_problems`):

- Flower's ``krum``, ``multikrum``, ``bulyan`` aggregate the replies' Messages in Flower's own
  code (`strategies.flower_rules`), not the stacked updates, so there is nothing to pre-process;
- ``dp-fixed``: its noise ``z C / K`` is calibrated to each client's share 1/K of the mean;
  bucketing and NNM change that share (NNM: up to 1/(K - f)), so the guarantee would not hold;
- ``foolsgold`` with ``bucketing``: FoolsGold keeps one history per client; bucket rows are
  random mixtures of clients, a different mixture every round (NNM and clipping keep row i =
  client i).

A rule's own round checks (a trim level, Krum's ``n > 2f + 2``) see the rows it will get:
`rows_per_round`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from strategies.preaggregators import adaptive_clipping, bucketing, nnm, static_clipping
from task.runconfig import RunConfig
from task.seeding import torch_generator

PRE_AGGREGATORS = ("bucketing", "nnm", "clipping")


def parse_pre_aggregator(spec: str) -> tuple[str, ...]:
    """``"clipping, nnm"`` -> ``("clipping", "nnm")``; ``"none"``/``""`` -> ``()``.

    >>> parse_pre_aggregator("clipping,nnm"), parse_pre_aggregator("none")
    (('clipping', 'nnm'), ())
    """
    names = tuple(x.strip() for x in str(spec).split(",") if x.strip())
    if names in ((), ("none",)):
        return ()
    bad = [x for x in names if x not in PRE_AGGREGATORS]
    if bad:
        raise ValueError(
            f"'pre-aggregator' {spec!r}: unknown {', '.join(map(repr, bad))}; valid: none, or "
            f"a comma list of {', '.join(PRE_AGGREGATORS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"'pre-aggregator' {spec!r} names one pre-aggregator twice")
    return names


@dataclass(frozen=True)
class PreAggregation:
    """The configured pre-aggregators and their keys (`apply` runs them in order)."""

    names: tuple[str, ...]
    bucket_size: int = 2
    f: int = 1
    clip: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        parse_pre_aggregator(",".join(self.names) or "none")
        if self.bucket_size < 1:
            raise ValueError(f"'preagg-bucket-size' must be >= 1, got {self.bucket_size}")
        if self.f < 0:
            raise ValueError(f"'preagg-f' must be >= 0, got {self.f}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(f"'preagg-clip' must be finite and >= 0, got {self.clip}")

    @classmethod
    def from_config(cls, config: RunConfig) -> PreAggregation | None:
        """The run's pre-aggregation, or None for ``pre-aggregator = none``."""
        names = parse_pre_aggregator(config.pre_aggregator)
        if not names:
            return None
        return cls(names, config.preagg_bucket_size, config.preagg_f, config.preagg_clip,
                   config.seed)  # fmt: skip

    def rows(self, n: int) -> int:
        """How many rows the rule gets from ``n`` accepted updates."""
        return math.ceil(n / self.bucket_size) if "bucketing" in self.names else n

    def apply(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, weights)`` after every pre-aggregator in order."""
        for name in self.names:
            n = U.shape[0]
            if name == "bucketing":
                gen = torch_generator(self.seed, "preagg-bucketing", server_round)
                U = bucketing(U, self.bucket_size, gen)
                weights = torch.ones(U.shape[0], dtype=torch.float64)
            elif name == "nnm":
                if self.f >= n:
                    raise ValueError(f"nnm: 'preagg-f' {self.f} needs more than {n} updates")
                U = nnm(U, self.f)
            elif self.clip > 0:
                U = static_clipping(U, self.clip)
            else:
                if self.f >= n:
                    raise ValueError(f"ARC: 'preagg-f' {self.f} needs more than {n} updates")
                U = adaptive_clipping(U, self.f)
        return U, weights


def rows_per_round(config: RunConfig) -> int:
    """Rows a rule aggregates in a full round: ``clients-per-round``, fewer after bucketing."""
    try:
        pre = PreAggregation.from_config(config)
    except ValueError:
        pre = None  # `preaggregation_problems` names it
    return pre.rows(config.clients_per_round) if pre else config.clients_per_round


def preaggregation_problems(config: RunConfig, rule: type) -> list[str]:
    """Problems with the pre-aggregation keys, alone and with the configured rule ``rule``."""
    try:
        names = parse_pre_aggregator(config.pre_aggregator)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if config.preagg_bucket_size < 1:
        problems.append(f"'preagg-bucket-size' must be >= 1, got {config.preagg_bucket_size}")
    if not (config.preagg_clip >= 0 and math.isfinite(config.preagg_clip)):
        problems.append(f"'preagg-clip' must be finite and >= 0, got {config.preagg_clip}")
    n, f = config.clients_per_round, config.preagg_f
    uses_f = "nnm" in names or ("clipping" in names and config.preagg_clip == 0)
    if not f >= 0 or (uses_f and f >= n):
        problems.append(f"'preagg-f' must be in [0, clients-per-round={n}), got {f}")
    if names and not getattr(rule, "PRE_AGGREGATION", True):
        problems.append(
            f"'pre-aggregator' {config.pre_aggregator!r} cannot apply to strategy "
            f"'{config.strategy}': {rule.PRE_AGGREGATION_REFUSAL}"  # type: ignore[attr-defined]
        )
    if "bucketing" in names and getattr(rule, "ROWS_ARE_CLIENTS", False):
        problems.append(
            f"'pre-aggregator' bucketing cannot apply to strategy '{config.strategy}': it keeps "
            "one history per client, and a bucket mixes random clients every round"
        )
    return problems
