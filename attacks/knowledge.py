"""What an attacker knows of the round's benign updates (``attack-knowledge``), shared by the
attacks that compute on them (Min-Max, Min-Sum, Fang, Mimic).

- ``full`` (Fang et al.'s "full knowledge", Shejwalkar & Houmansadr's "known benign
  gradients", Karimireddy et al.'s omniscient mimic): the benign updates of THIS round, one per
  benign participant. The ServerApp's train message of an adversarial round names the round's
  participants (``round-benign``/``round-malicious``, `task.messages`), and every attacker
  replays each benign participant's training with that node's own seed
  (`attacks.base.AttackContext.observed_update`): exactly the updates the server receives when
  benign nodes run no client defense. This is how the simulation hands an omniscient attacker
  the updates it is assumed to observe; nothing is leaked by the server.
- ``partial`` (Fang et al.'s "partial knowledge", the NDSS'21 "unknown gradients"): only the
  benign updates the attackers compute on their own partitions (every malicious partition,
  as ALIE's estimate: `attacks.base.AttackContext.benign_update`).

Every attacker computes the same matrix (seeds keyed by round and partition), so colluding
attackers agree without communicating.
"""

from __future__ import annotations

import torch

from attacks.base import AttackContext
from task.params import Param
from task.runconfig import RunConfig

KNOWLEDGE = ("full", "partial")


def max_attackers(config: RunConfig) -> int:
    """The most malicious nodes one round can train: ``malicious-per-round`` in ``rounds``
    mode; in ``continuous`` mode as many as are sampled, at most
    ``min(num-malicious, clients-per-round)``."""
    if config.attack_mode == "continuous":
        return min(config.num_malicious, config.clients_per_round)
    return config.malicious_per_round


def known_count(config: RunConfig, knowledge: str, attackers: int | None = None) -> int:
    """How many benign updates an attacker knows in a round with ``attackers`` malicious
    participants (default: the most there can be): ``full`` the round's benign participants,
    ``partial`` the malicious partitions."""
    if knowledge == "partial":
        return config.num_malicious
    c = max_attackers(config) if attackers is None else attackers
    return config.clients_per_round - c


def knowledge_problems(config: RunConfig, attack: str, needed: int, why: str) -> list[str]:
    """A problem naming the keys when the attacker would know fewer than ``needed`` benign
    updates in some round (`known_count` with the most attackers there can be)."""
    knowledge = config.attack_knowledge
    if knowledge not in KNOWLEDGE:
        return []  # the key's own check reports it
    have = known_count(config, knowledge)
    if have >= needed:
        return []
    if knowledge == "partial":
        keys = f"num-malicious={config.num_malicious}"
    else:
        keys = (
            f"clients-per-round={config.clients_per_round} minus the attackers of a round "
            f"({max_attackers(config)}: malicious-per-round={config.malicious_per_round}, "
            f"attack-mode={config.attack_mode})"
        )
    return [
        f"attack '{attack}' with attack-knowledge={knowledge} knows {have} benign update(s) per "
        f"round ({keys}); it needs >= {needed}: {why}"
    ]


def known_benign(ctx: AttackContext, knowledge: str) -> torch.Tensor:
    """The ``(k, d)`` benign updates the attacker knows this round (see the module doc)."""
    if knowledge == "partial":
        return torch.stack([ctx.benign_update(p) for p in ctx.malicious])
    if knowledge != "full":
        raise ValueError(f"attack-knowledge '{knowledge}'; valid: {', '.join(KNOWLEDGE)}")
    if not ctx.round_benign:
        raise ValueError(
            "attack-knowledge=full needs the round's benign participants, which the ServerApp "
            "sends in an adversarial round's train message ('round-benign'); none came"
        )
    return torch.stack([ctx.observed_update(p) for p in ctx.round_benign])


#: the ``attack-knowledge`` key, declared by every attack that reads it
KNOWLEDGE_PARAM = Param(
    "attack-knowledge", "knowledge", "full",
    "full: the round's benign updates | partial: the attackers' own partitions' benign updates",
    choices=KNOWLEDGE,
)  # fmt: skip
