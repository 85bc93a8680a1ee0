"""The threat scenario: which rounds are adversarial and which partitions train in each round.

Three seeded, independent streams (all keyed by round, so any round can be replayed alone):

- ``adv-schedule``: whether round t is adversarial (``adv-round-prob``), unless ``adv-rounds``
  lists the rounds explicitly;
- ``client-sampling``: the benign participants;
- ``malicious-sampling``: the malicious participants of an adversarial round.

None of them depends on the defense, the strategy or anything clients do, so two runs that
differ only in the defense see exactly the same rounds.

Modes (``attack-mode``):

- ``rounds`` (FL-WBC §7.1): a benign round trains ``clients-per-round`` benign partitions; an
  adversarial round trains ``malicious-per-round`` malicious ones plus benign ones up to
  ``clients-per-round`` (paper: 5 + 5).
- ``continuous`` (Invariant Aggregator §6.1): every round samples ``clients-per-round`` from all
  partitions, malicious ones included; any round with a malicious participant is adversarial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server_app.sampling import sample_partitions
from task.runconfig import RunConfig
from task.seeding import numpy_generator
from task.validation import parse_rounds


@dataclass(frozen=True)
class RoundPlan:
    """Who trains in one round."""

    server_round: int
    adversarial: bool
    benign: list[int]
    malicious: list[int]

    @property
    def partitions(self) -> list[int]:
        return sorted(self.benign + self.malicious)


class ThreatScenario:
    """Seeded plan of rounds for a run config and the federation's roles."""

    def __init__(self, config: RunConfig, benign: Sequence[int], malicious: Sequence[int]) -> None:
        self.seed = config.seed
        self.k = config.clients_per_round
        self.attack = config.attack
        self.mode = config.attack_mode
        self.benign = sorted(benign)
        self.malicious = sorted(malicious)
        self.per_round = config.malicious_per_round
        self.explicit = set(parse_rounds(config.adv_rounds))
        self.prob = config.adv_round_prob
        if self.attack != "none" and not self.malicious:
            raise ValueError(f"attack '{self.attack}' configured but no node is malicious")

    def is_adversarial(self, server_round: int) -> bool:
        """Scheduled adversarial round (``rounds`` mode)."""
        if self.attack == "none" or self.mode != "rounds":
            return False
        if self.explicit:
            return server_round in self.explicit
        if self.prob <= 0:
            return False
        return bool(numpy_generator(self.seed, "adv-schedule", server_round).random() < self.prob)

    def plan(self, server_round: int) -> RoundPlan:
        if self.mode == "continuous" and self.attack != "none":
            chosen = sample_partitions(
                self.seed, server_round, self.benign + self.malicious, self.k
            )
            mal = [p for p in chosen if p in set(self.malicious)]
            return RoundPlan(server_round, bool(mal), [p for p in chosen if p not in mal], mal)
        if self.is_adversarial(server_round):
            mal = sample_partitions(
                self.seed, server_round, self.malicious, self.per_round, "malicious-sampling"
            )
            ben = sample_partitions(self.seed, server_round, self.benign, self.k - self.per_round)
            return RoundPlan(server_round, True, ben, mal)
        return RoundPlan(
            server_round, False, sample_partitions(self.seed, server_round, self.benign, self.k), []
        )

    def adversarial_rounds(self, num_rounds: int) -> list[int]:
        """The scheduled adversarial rounds of a run (``rounds`` mode; [] when continuous)."""
        return [t for t in range(1, num_rounds + 1) if self.is_adversarial(t)]
