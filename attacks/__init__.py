"""Malicious client behaviours, one attack per module, behind one small interface.

`ATTACKS` maps the run-config value of ``attack`` to an `AttackSpec`: an `Attack` subclass
(hooks ``config_problems(config)``, ``__init__(config)``, ``craft(ctx, indices, generator) ->
state``; see `attacks.base.Attack`) and its fixed arguments. An unknown name is an error that
lists the valid ones. `craft_malicious` is what the ClientApp calls for a malicious node; it
applies the modifiers:

- ``attack-collude``: every attacker trains on the union of the malicious partitions with one
  shared seed, so all of them send one identical update (Panda et al., 2022); with
  ``collude-budget = one-client`` on a shared draw from that union of one malicious partition's
  (mean) size, so the shared update costs one benign client's SGD steps (`collusion_indices`);
- ``attack-adaptive``: the update is reshaped against the AND-mask (`attacks.adaptive`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from attacks.adaptive import predicted_mask, rescale_to_mask
from attacks.alie import ALIE
from attacks.backdoor import Backdoor
from attacks.base import (
    Attack,
    AttackContext,
    State,
    flatten_update,
    state_from_update,
)
from attacks.fang import FangKrum, FangTrimmedMean
from attacks.gaussian import GaussianNoise
from attacks.ipm import IPM
from attacks.label_flip import LabelFlip
from attacks.mimic import Mimic
from attacks.min_max import MinMax
from attacks.model_replacement import ModelReplacement
from attacks.neurotoxin import Neurotoxin
from attacks.sign_flip import SignFlip
from attacks.targeted import TargetedPoisoning
from task.params import config_params, plugin_class
from task.runconfig import RunConfig
from task.schema import ConfigError

ROLES = ("benign", "malicious")


@dataclass(frozen=True)
class AttackSpec:
    """A registry entry: the `Attack` class behind an ``attack`` name, and fixed arguments."""

    cls: type[Attack]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, config: RunConfig) -> Attack:
        return self.cls(config, **self.kwargs)

    def problems(self, config: RunConfig) -> list[str]:
        """Its ``PARAMS``' problems (typed, checked), then the class's own checks."""
        try:
            config_params(self.cls, config)
        except ConfigError as exc:
            return list(exc.problems)
        return self.cls.config_problems(config)


#: run-config value of ``attack`` -> its implementation (``none`` is no attack)
ATTACKS: dict[str, AttackSpec] = {
    "targeted": AttackSpec(TargetedPoisoning),
    "backdoor": AttackSpec(Backdoor, {"kind": "backdoor"}),
    "dba": AttackSpec(Backdoor, {"kind": "dba"}),
    "edge-case": AttackSpec(Backdoor, {"kind": "edge-case"}),
    "sign-flip": AttackSpec(SignFlip),
    "gaussian": AttackSpec(GaussianNoise),
    "alie": AttackSpec(ALIE),
    "ipm": AttackSpec(IPM),
    "min-max": AttackSpec(MinMax, {"objective": "min-max"}),
    "min-sum": AttackSpec(MinMax, {"objective": "min-sum"}),
    "fang-trmean": AttackSpec(FangTrimmedMean),
    "fang-krum": AttackSpec(FangKrum),
    "mimic": AttackSpec(Mimic),
    "label-flip": AttackSpec(LabelFlip),
    "model-replacement": AttackSpec(ModelReplacement),
    "neurotoxin": AttackSpec(Neurotoxin),
}

__all__ = [
    "ATTACKS",
    "ROLES",
    "Attack",
    "AttackContext",
    "AttackSpec",
    "attack_problems",
    "claimed_examples",
    "craft_malicious",
    "needs_previous_global",
]


def attack_spec(name: str) -> AttackSpec:
    """The attack an ``attack`` value names: a built-in, or a plugin ``package.module:Class``
    (a subclass of `Attack`); ValueError listing the valid names otherwise."""
    if name in ATTACKS:
        return ATTACKS[name]
    return AttackSpec(plugin_class(name, "attack", Attack, ["none", *ATTACKS], "an attack"))


def attack_problems(config: RunConfig) -> list[str]:
    """Problems with the configured attack (name and hyper-parameters)."""
    name = config.attack
    if name == "none":
        return []
    try:
        spec = attack_spec(name)
    except (ValueError, TypeError) as exc:
        return [str(exc)]
    problems = spec.problems(config)
    if config.attack_boost_mode not in BOOST_MODES:
        problems.append(
            f"'attack-boost-mode' is '{config.attack_boost_mode}'; valid: " + ", ".join(BOOST_MODES)
        )
    return problems


BOOST_MODES = ("scale", "weight")


def needs_previous_global(config: RunConfig) -> bool:
    """Whether a malicious node keeps the last global model it received in its state
    (`Attack.NEEDS_PREVIOUS_GLOBAL`, e.g. Neurotoxin's previous global update)."""
    if config.attack == "none":
        return False
    try:
        return bool(attack_spec(config.attack).cls.NEEDS_PREVIOUS_GLOBAL)
    except (ValueError, TypeError):
        return False


def claimed_examples(config: RunConfig, num_examples: int) -> float:
    """The ``num-examples`` a malicious node claims: its own count, times ``attack-boost`` with
    ``attack-boost-mode = weight`` (the FL-WBC authors' ``mal_boost``: the attacker weighs
    ``boost`` honest clients in the average; the server's weight cap, `weight-cap-ratio`,
    limits what such a claim can win). The node reports the same boosted count at discovery
    (`client_app.app.whoami`), so the server's discovery cap does not undo it.

    One difference from the authors' code (``src/fedavg.py``): when the attacker is sampled,
    it also gives ``mal_boost - 1`` benign clients weight 0, so the attacker holds half of the
    average (5 of 10); here every benign reply stays in, so it holds 5 of 14."""
    if config.attack_boost_mode == "weight":
        return float(num_examples) * config.attack_boost
    return float(num_examples)


def collusion_indices(
    partitions: tuple[torch.Tensor, ...], malicious: tuple[int, ...], budget: str,
    generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """The examples the colluders' one shared update trains on (sorted).

    ``union``: every malicious partition together (m x a client's data, so m x its SGD steps
    per epoch). ``one-client``: a draw without replacement from that union, of the malicious
    partitions' mean size rounded, by the colluders' shared `generator`, so every colluder draws
    the same examples and, with ``attack-local-epochs = local-epochs``, takes the SGD steps of
    one benign client holding that many examples.

    >>> parts = (torch.arange(0, 4), torch.arange(4, 10), torch.arange(10, 12))
    >>> collusion_indices(parts, (0, 1), "union", torch.Generator()).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    >>> len(collusion_indices(parts, (0, 1), "one-client", torch.Generator().manual_seed(0)))
    5
    """
    if not malicious:
        raise ValueError("collusion needs malicious partitions ('num-malicious' >= 1)")
    union = torch.cat([partitions[p] for p in malicious]).sort().values
    if budget == "union":
        return union
    if budget != "one-client":
        raise ValueError(f"collude-budget '{budget}'; valid: union, one-client")
    size = (2 * len(union) + len(malicious)) // (2 * len(malicious))  # the mean, halves up
    pick = torch.randperm(len(union), generator=generator, device=generator.device)[:size]
    return union[pick.cpu()].sort().values


def craft_malicious(ctx: AttackContext) -> State:
    """The state a malicious node sends this round (its update scaled by ``attack-boost`` only
    with ``attack-boost-mode = scale``; with ``weight`` the boost is in its claimed weight)."""
    config = ctx.config
    if config.attack_boost_mode == "weight":
        config = dataclasses.replace(config, attack_boost=1.0)
    attack = attack_spec(config.attack).build(config)
    if config.attack_collude:
        generator = ctx.generator("attack-collude")
        indices = collusion_indices(
            ctx.partitions, tuple(ctx.malicious), config.collude_budget, generator
        )
    else:
        indices, generator = ctx.indices, ctx.generator("attack", ctx.partition_id)
    state = attack.craft(ctx, indices, generator)
    if config.attack_adaptive:
        update = flatten_update(state, ctx.global_state)
        refs = torch.stack([ctx.benign_update(p).to(update.device) for p in ctx.malicious])
        keep = predicted_mask(
            update, refs, config.clients_per_round, config.malicious_per_round,
            config.invariant_tau,
        )  # fmt: skip
        state = state_from_update(rescale_to_mask(update, keep), ctx.global_state)
    return state
