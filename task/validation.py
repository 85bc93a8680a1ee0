"""Range and combination checks of a whole run config (the task's own keys).

`validate_config` checks every key, type, range and combination the task package knows about
(data, partitions, model, training, threat scenario, client defenses, faults, transport,
results, metrics) and then runs the given `checks`: the rules' and the attacks' own
hyper-parameter checks (`strategies.strategy_problems`, `attacks.attack_problems`), which live
above this package. Whoever builds a config names the checks that apply to it: the ServerApp
and the host tools all of them, the ClientApp the attacks'. One `ConfigError` lists every
problem, each naming its key and what is allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from task.catalog import (
    CLIENT_DEFENSES,
    COLLUDE_BUDGETS,
    DATASETS,
    MODEL_DATASETS,
    MODELS,
    PARTITIONINGS,
    TRAIN_SIZES,
    WBC_NOISE_PARAMS,
    WBC_VARIANTS,
)
from task.preview import preview
from task.runconfig import RunConfig, key_to_field
from task.schema import ConfigError, Scalar, coerce, load_schema, unknown_key

#: A check of a typed config: every problem it finds, as messages naming key and value.
Check = Callable[[RunConfig], list[str]]

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "partitioning": PARTITIONINGS,
    "model": MODELS,
    "device": ("auto", "cpu", "cuda"),
    "client-defense": CLIENT_DEFENSES,
    "wbc-noise-param": WBC_NOISE_PARAMS,
    "wbc-variant": WBC_VARIANTS,
    "malicious-placement": ("last", "first"),
    "attack-mode": ("rounds", "continuous"),
    "fail-mode": ("crash", "hang"),
    "weighting": ("claimed", "equal", "assigned"),
    "collude-budget": COLLUDE_BUDGETS,
}
#: above this, partitioning alone costs minutes and the roster waits for as many nodes
MAX_PARTITIONS = 100_000
#: a shorter poll only spins the server (Flower's own is 3 s; ours 0.02 s)
MIN_POLL_INTERVAL = 1e-3
INT64 = (-(2**63), 2**63)  # Flower's run config carries 64-bit signed ints
POSITIVE_INTS = (
    "num-partitions",
    "num-server-rounds",
    "clients-per-round",
    "local-epochs",
    "batch-size",
)


def parse_rounds(spec: str) -> list[int]:
    """``"12, 40"`` -> ``[12, 40]`` (sorted, unique); ValueError on anything else."""
    items = [x.strip() for x in str(spec).split(",") if x.strip()]
    if not all(x.isdigit() for x in items):
        raise ValueError(f"'{spec}' is not a comma-separated list of round numbers")
    return sorted({int(x) for x in items})


def _threat_problems(c: RunConfig) -> list[str]:
    problems: list[str] = []
    m, n = c.num_malicious, c.num_partitions
    if not 0 <= m <= n:
        problems.append(f"'num-malicious' must be in [0, num-partitions={n}], got {m}")
    try:
        rounds = parse_rounds(c.adv_rounds)
        late = [r for r in rounds if not 1 <= r <= c.num_server_rounds]
        if late:
            problems.append(f"'adv-rounds' {late} outside [1, num-server-rounds]")
    except ValueError as exc:
        problems.append(f"'adv-rounds': {exc}")
        rounds = []
    p = c.adv_round_prob
    if not 0.0 <= p <= 1.0:
        problems.append(f"'adv-round-prob' must be in [0, 1], got {p}")
    if rounds and p > 0:
        problems.append("give either 'adv-rounds' or 'adv-round-prob', not both")
    if c.attack != "none":
        if m < 1:
            problems.append(f"attack '{c.attack}' needs 'num-malicious' >= 1")
        if c.attack_mode == "rounds":
            k = c.malicious_per_round
            if not rounds and p == 0:
                problems.append(
                    "attack-mode 'rounds' needs adversarial rounds: set 'adv-rounds' or "
                    "'adv-round-prob' (or use attack-mode 'continuous')"
                )
            if not 1 <= k <= min(m, c.clients_per_round) and m >= 1:
                problems.append(
                    f"'malicious-per-round' must be in [1, min(num-malicious, clients-per-round)]"
                    f" = [1, {min(m, c.clients_per_round)}], got {k}"
                )
            if n - m < c.clients_per_round:
                problems.append(
                    f"only {n - m} benign partitions for clients-per-round "
                    f"{c.clients_per_round} in benign rounds"
                )
    if not 0.0 < c.mitigation_threshold <= 1.0:
        problems.append(f"'mitigation-threshold' must be in (0, 1], got {c.mitigation_threshold}")
    return problems


def _environment_problems(config: Mapping[str, Any], c: RunConfig) -> list[str]:
    """What Flower cannot carry, the seeding cannot tell apart, a path or a machine cannot do."""
    problems = []
    for key, value in config.items():
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not INT64[0] <= value < INT64[1]
        ):
            problems.append(f"'{key}' {preview(value)} does not fit in 64 bits (Flower's int)")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(
                    f"'{key}' is not valid text (Flower carries UTF-8): {preview(value)}"
                )
            if "\0" in value:
                problems.append(f"'{key}' must not hold a NUL character: {preview(value)}")
    if not 0 <= c.seed < 2**32:
        problems.append(f"'seed' must be in [0, 2**32) (streams use its low 32 bits), got {c.seed}")
    if c.num_partitions > MAX_PARTITIONS:
        problems.append(
            f"'num-partitions' must be at most {MAX_PARTITIONS}, got {c.num_partitions}"
        )
    if c.data_dir and not os.path.isabs(os.path.expanduser(c.data_dir)):
        problems.append(
            f"'data-dir' must be an absolute path (the apps run in another directory than "
            f"yours; `immunefl` makes it absolute for you), got {preview(c.data_dir)}"
        )
    if c.device == "cuda":
        import torch  # only here: the host tools import no torch otherwise

        if not torch.cuda.is_available():
            problems.append(
                "'device' is cuda but torch.cuda.is_available() is false in this process (no "
                "GPU, or none given: --gpus-per-client); use auto or cpu"
            )
    return problems


def validate_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Scalar] | None = None,
    checks: Iterable[Check] = (),
) -> dict[str, Scalar]:
    """Check every key of a full run config, then run `checks` on it; return it unchanged or
    raise ConfigError listing every problem."""
    schema = schema if schema is not None else load_schema()
    problems: list[str] = []
    for key in config:
        if key not in schema:
            problems.append(unknown_key(key, schema))
    for key, default in schema.items():
        if key not in config:
            problems.append(f"missing key '{key}'")
            continue
        try:
            coerce(key, config[key], default)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    c = RunConfig.typed(config, schema)
    for key, valid in CHOICES.items():
        if getattr(c, key_to_field(key)) not in valid:
            problems.append(
                f"'{key}' is '{getattr(c, key_to_field(key))}'; valid: {', '.join(valid)}"
            )
    for key in POSITIVE_INTS:
        if getattr(c, key_to_field(key)) < 1:
            problems.append(
                f"'{key}' must be a positive integer, got {getattr(c, key_to_field(key))}"
            )
    problems.extend(_environment_problems(config, c))
    if not (math.isfinite(c.lr) and c.lr > 0):
        problems.append(f"'lr' must be a finite number > 0, got {c.lr}")
    if not 0.0 <= c.momentum < 1.0:
        problems.append(f"'momentum' must be in [0, 1), got {c.momentum}")
    if not (math.isfinite(c.dirichlet_alpha) and c.dirichlet_alpha > 0):
        problems.append(f"'dirichlet-alpha' must be > 0, got {c.dirichlet_alpha}")
    if c.clients_per_round > c.num_partitions:
        problems.append(
            f"'clients-per-round' ({c.clients_per_round}) must be <= "
            f"'num-partitions' ({c.num_partitions})"
        )
    if c.model in MODEL_DATASETS and c.dataset not in MODEL_DATASETS[c.model]:
        problems.append(
            f"'model' {c.model} does not fit 'dataset' {c.dataset}; "
            f"models for {c.dataset}: "
            + ", ".join(m for m, ds in MODEL_DATASETS.items() if c.dataset in ds)
        )
    if any(ch in c.run_name for ch in "/\\") or c.run_name in (".", ".."):
        problems.append(f"'run-name' must be a plain directory name, got {preview(c.run_name)}")
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in c.run_name):
        problems.append(
            f"'run-name' must not hold NUL or control characters, got {preview(c.run_name)}"
        )
    if c.collude_budget == "one-client":
        if not c.attack_collude:
            problems.append(
                "'collude-budget' one-client shapes the colluders' shared update: it needs "
                "'attack-collude' true"
            )
        elif c.attack_local_epochs != c.local_epochs:
            problems.append(
                "'collude-budget' one-client matches one benign client's SGD steps: set "
                f"'attack-local-epochs' ({c.attack_local_epochs}) to 'local-epochs' "
                f"({c.local_epochs})"
            )
    limit = TRAIN_SIZES.get(c.dataset, 0) - c.num_partitions
    if not 0 <= c.pretrain_holdout < max(limit, 1):
        problems.append(
            f"'pretrain-holdout' must be in [0, {limit}) (the {c.dataset} training set less one "
            f"example per partition), got {c.pretrain_holdout}"
        )
    if not (math.isfinite(c.wbc_s) and c.wbc_s >= 0):
        problems.append(f"'wbc-s' must be a finite number >= 0, got {c.wbc_s}")
    if c.wbc_variant in ("official", "dense") and c.wbc_noise_param != "scale":
        problems.append(
            f"'wbc-variant' {c.wbc_variant} draws Laplace noise of scale s, as the authors' "
            "code does: set 'wbc-noise-param' to scale (std is Algorithm 1's reading, "
            "wbc-variant paper)"
        )
    if not (math.isfinite(c.ldp_clip) and c.ldp_clip > 0):
        problems.append(f"'ldp-clip' must be a finite number > 0, got {c.ldp_clip}")
    z = c.ldp_noise_multiplier
    if not (math.isfinite(z) and z >= 0):
        problems.append(f"'ldp-noise-multiplier' must be a finite number >= 0, got {z}")
    from task.faultspec import parse_faults

    try:
        bad = [p for p in parse_faults(c.inject_faults) if p >= c.num_partitions]
        if bad:
            problems.append(f"'inject-faults' names partitions {bad} >= num-partitions")
    except ValueError as exc:
        problems.append(f"'inject-faults': {exc}")
    problems.extend(_threat_problems(c))
    if not MIN_POLL_INTERVAL <= c.poll_interval <= 10:
        problems.append(
            f"'poll-interval' must be in [{MIN_POLL_INTERVAL}, 10] seconds (shorter polls only "
            f"spin the server), got {c.poll_interval}"
        )
    if not (math.isfinite(c.round_timeout) and c.round_timeout > 0):
        problems.append(f"'round-timeout' must be a finite number > 0 seconds, got "
                        f"{c.round_timeout}")  # fmt: skip
    if c.checkpoint_every < 0:
        problems.append(f"'checkpoint-every' must be >= 0 (0 = off), got {c.checkpoint_every}")
    if not 0.0 <= c.fail_prob <= 1.0:
        problems.append(f"'fail-prob' must be in [0, 1], got {c.fail_prob}")
    if c.resume and not c.run_name:
        problems.append("'resume' needs the 'run-name' of the run to continue")
    if c.min_replies < 1:
        problems.append(f"'min-replies' must be >= 1, got {c.min_replies}")
    elif c.min_replies > c.clients_per_round:
        problems.append(
            f"'min-replies' ({c.min_replies}) must be <= 'clients-per-round' "
            f"({c.clients_per_round})"
        )
    if not c.max_update_norm >= 0:
        problems.append(f"'max-update-norm' must be >= 0 (0 = off), got {c.max_update_norm}")
    if not (math.isfinite(c.weight_cap_ratio) and c.weight_cap_ratio >= 1):
        problems.append(
            f"'weight-cap-ratio' must be a finite number >= 1, got {c.weight_cap_ratio}"
        )
    if not (math.isfinite(c.server_lr) and c.server_lr > 0):
        problems.append(f"'server-lr' must be a finite number > 0, got {c.server_lr}")
    if not 0 <= c.metrics_port <= 65535:
        problems.append(f"'metrics-port' must be in [0, 65535] (0 = off), got {c.metrics_port}")
    url = c.metrics_push_url
    if url and not url.startswith(("http://", "https://")):
        problems.append(f"'metrics-push-url' must be an http(s):// URL, got {url!r}")
    if not (math.isfinite(c.metrics_linger) and c.metrics_linger >= 0):
        problems.append(f"'metrics-linger' must be >= 0 seconds, got {c.metrics_linger}")
    for key, value in (("initial-model", c.initial_model), ("sweep-file", c.sweep_file)):
        if value and not Path(value).is_absolute():
            problems.append(f"'{key}' must be an absolute path, got {value!r}")
    for check in checks:
        problems.extend(check(c))
    if problems:
        raise ConfigError(problems)
    return dict(config)
