"""One typed, frozen run config: the ``[tool.flwr.app.config]`` schema as a dataclass.

`RunConfig.from_mapping` builds it once per process, at the edge (the ServerApp and the
ClientApp from Flower's ``context.run_config``, the CLI from YAML + overrides), after
`task.validation.validate_config` has checked every key, type, range and combination, and the
caller's `checks` (the rules' and attacks' own, which live above this package) have run. It is
then passed down, and components read typed fields (``cfg.trim_beta`` is a float) instead of
raw reads by key, each with its own ``float()``.

Field names are the schema's keys with ``-`` -> ``_``; ``pyproject.toml`` documents each key,
and ``tests/test_runconfig.py`` checks that the fields and their types are the schema's, so the
two cannot drift apart.

>>> cfg = RunConfig.defaults(strategy="trimmed-mean", **{"trim-beta": "0.2"})
>>> cfg.strategy, cfg.trim_beta, cfg.num_partitions
('trimmed-mean', 0.2, 100)
>>> cfg.as_mapping()["trim-beta"]
0.2
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Scalar = bool | int | float | str
#: A check of a typed config (a rule's or an attack's): its problems, naming key and value.
Check = Callable[["RunConfig"], list[str]]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A validated run config (see the module docstring); immutable."""

    seed: int
    dataset: str
    data_dir: str
    partitioning: str
    dirichlet_alpha: float
    num_partitions: int
    model: str
    num_server_rounds: int
    clients_per_round: int
    local_epochs: int
    batch_size: int
    lr: float
    momentum: float
    strategy: str
    server_lr: float
    min_replies: int
    max_update_norm: float
    weight_cap_ratio: float
    trim_beta: float
    invariant_tau: float
    invariant_alpha: float
    rlr_theta: int
    signsgd_lr: float
    cdp_clip: float
    cdp_noise_multiplier: float
    krum_f: int
    multikrum_m: int
    dp_noise_multiplier: float
    dp_clip: float
    pre_aggregator: str
    preagg_bucket_size: int
    preagg_f: int
    preagg_clip: float
    geomed_nu: float
    geomed_tol: float
    geomed_max_iter: int
    cc_tau: float
    cc_iters: int
    fltrust_root_size: int
    foolsgold_kappa: float
    foolsgold_normalize: str
    flame_lambda: float
    dnc_f: int
    dnc_b: int
    dnc_niters: int
    dnc_c: float
    norm_bound_m: float
    norm_bound_noise: float
    num_malicious: int
    malicious_placement: str
    attack: str
    attack_mode: str
    adv_rounds: str
    adv_round_prob: float
    malicious_per_round: int
    poison_samples: int
    target_shift: int
    attack_alpha: float
    attack_local_epochs: int
    attack_boost: float
    attack_boost_mode: str
    attack_objective: str
    backdoor_target: int
    poison_fraction: float
    trigger_size: int
    edge_case_source: str
    edge_case_file: str
    attack_collude: bool
    collude_budget: str
    attack_adaptive: bool
    gaussian_std: float
    alie_z: float
    ipm_epsilon: float
    attack_knowledge: str
    minmax_perturbation: str
    minmax_gamma_init: float
    label_flip_source: int
    label_flip_target: int
    backdoor_poison: str
    replacement_scale: float
    replacement_norm_bound: float
    neurotoxin_ratio: float
    mitigation_threshold: float
    track_aep: bool
    client_defense: str
    wbc_s: float
    wbc_noise_param: str
    wbc_variant: str
    ldp_clip: float
    ldp_noise_multiplier: float
    poll_interval: float
    round_timeout: float
    checkpoint_every: int
    resume: bool
    fail_prob: float
    fail_mode: str
    inject_faults: str
    federated_eval: bool
    device: str
    results_dir: str
    run_name: str
    save_model: bool
    metrics_port: int
    metrics_addr: str
    metrics_push_url: str
    metrics_linger: float
    sweep_file: str
    pretrain_holdout: int
    initial_model: str
    plugin_params: str
    weighting: str

    @classmethod
    def from_mapping(
        cls,
        config: Mapping[str, Any],
        schema: Mapping[str, Scalar] | None = None,
        checks: Iterable[Check] = (),
    ) -> RunConfig:
        """Validate a full mapping of hyphenated keys, run `checks` on it, return it typed.

        Raises `task.schema.ConfigError` listing every problem. The same mapping (e.g. one
        run's ``context.run_config``, seen by every message of a ClientApp) is validated once.
        """
        checks = tuple(checks)
        if schema is None:
            try:  # type and repr in the key: True == 1 == 1.0 and -0.0 == 0.0 must not share
                items = tuple(sorted((k, type(v), repr(v), v) for k, v in config.items()))
                return _cached(items, checks)
            except TypeError:  # an unhashable value: validation names it
                schema = load_schema()
        from task.validation import validate_config

        return cls.typed(validate_config(config, schema, checks), schema)

    @classmethod
    def typed(cls, config: Mapping[str, Any], schema: Mapping[str, Scalar]) -> RunConfig:
        """Coerce each key of `config` to its schema type; no range checks (`from_mapping`)."""
        from task.schema import coerce

        return cls(**{key_to_field(k): coerce(k, config[k], d) for k, d in schema.items()})

    @classmethod
    def defaults(cls, checks: Iterable[Check] = (), **overrides: Any) -> RunConfig:
        """The schema's defaults with `overrides` (hyphenated or underscored keys), validated
        (and checked by `checks`)."""
        schema = load_schema()
        config = {**schema, **{field_to_key(k): v for k, v in overrides.items()}}
        return cls.from_mapping(config, schema, checks)

    def as_mapping(self) -> dict[str, Scalar]:
        """The config as hyphenated key -> value (what Flower's run config and results hold)."""
        return {field_to_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    def named(self) -> RunConfig:
        """With an absolute ``results-dir`` and a ``run-name``: the one rule for where a run
        writes (`run_dir`). An empty name becomes
        ``<strategy>-<dataset>-<partitioning>-s<seed>-<YYYYmmdd-HHMMSS>``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        parts = (self.strategy, self.dataset, self.partitioning, f"s{self.seed}", stamp)
        return dataclasses.replace(
            self,
            results_dir=str(Path(self.results_dir).expanduser().resolve()),
            run_name=self.run_name or "-".join(parts),
        )

    @property
    def run_dir(self) -> Path:
        """``results-dir / run-name`` (relative results dirs resolve against the working dir)."""
        return Path(self.results_dir).expanduser().resolve() / self.run_name

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes` (underscored field names), validated again (task checks)."""
        return self.defaults(**{**self.as_mapping(), **changes})


def key_to_field(key: str) -> str:
    """``"trim-beta"`` -> ``"trim_beta"``."""
    return key.replace("-", "_")


def field_to_key(name: str) -> str:
    """``"trim_beta"`` -> ``"trim-beta"``."""
    return name.replace("_", "-")


@functools.lru_cache(maxsize=8)
def _cached(items: tuple[tuple[str, type, str, Any], ...], checks: tuple[Check, ...]) -> RunConfig:
    from task.validation import validate_config

    schema = load_schema()
    config = validate_config({k: v for k, _, _, v in items}, schema, checks)
    return RunConfig.typed(config, schema)


def load_schema() -> dict[str, Scalar]:
    from task.schema import load_schema as schema

    return schema()
