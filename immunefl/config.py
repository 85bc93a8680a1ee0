"""The one run-config schema (``[tool.flwr.app.config]`` in pyproject.toml) and its validation.

`load_schema` reads the declared keys and defaults; `resolve_config` layers a YAML file and
``key=value`` overrides on top; `validate_config` checks types, ranges and combinations and
raises one `ConfigError` listing every problem, each naming its key and what is allowed.
The ServerApp validates again (for users who call ``flwr run`` directly).
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from immunefl.catalog import (
    CLIENT_DEFENSES,
    DATASETS,
    MODEL_DATASETS,
    MODELS,
    PARTITIONINGS,
    WBC_NOISE_PARAMS,
    WBC_VARIANTS,
)
from immunefl.runconfig import RunConfig, key_to_field

Scalar = bool | int | float | str
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT_ROOT / "pyproject.toml"

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
}
POSITIVE_INTS = (
    "num-partitions",
    "num-server-rounds",
    "clients-per-round",
    "local-epochs",
    "batch-size",
)


class ConfigError(ValueError):
    """One or more invalid run-config entries; `problems` lists them, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid run config:\n" + "\n".join(f"  - {p}" for p in problems))


def load_schema(pyproject: Path = PYPROJECT) -> dict[str, Scalar]:
    """The declared run-config keys and their defaults, in declaration order."""
    with open(pyproject, "rb") as fh:
        data = tomllib.load(fh)
    try:
        return dict(data["tool"]["flwr"]["app"]["config"])
    except KeyError as exc:
        raise ConfigError([f"{pyproject} has no [tool.flwr.app.config] table"]) from exc


#: Keys that changed meaning under a new name: an old config must fail, not change silently.
RENAMED = {
    "cdp-sigma": "cdp-noise-multiplier (a multiplier z of the clip norm: noise std "
    "z * cdp-clip / K, no longer an absolute std)",
    "ldp-sigma": "ldp-noise-multiplier (a multiplier z of the clip norm: noise std "
    "z * ldp-clip, no longer an absolute std)",
}


def _unknown(key: str, schema: Mapping[str, Any]) -> str:
    if key in RENAMED:
        return f"'{key}' was renamed to {RENAMED[key]}"
    close = difflib.get_close_matches(key, list(schema), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown key '{key}'{hint}; declared keys: {', '.join(schema)}"


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(type(value), "value")


def coerce(key: str, value: Any, default: Scalar) -> Scalar:
    """Return `value` as the type of `default`, or raise ValueError naming `key`."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ValueError(
        f"'{key}' must be a {_type_name(default)} (like its default {default!r}), got {value!r}"
    )


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; raises ConfigError on an item without '='."""
    out: dict[str, str] = {}
    bad = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            bad.append(f"override '{item}' is not of the form key=value")
            continue
        out[key.strip()] = value.strip()
    if bad:
        raise ConfigError(bad)
    return out


def read_yaml_config(path: Path, preset: str | None = None) -> dict[str, Any]:
    """A flat mapping of run-config keys from a YAML file (no validation yet).

    Two top-level keys are not run-config keys: ``description`` (text for humans and reports)
    and ``presets``, a mapping ``name -> {key: value}``. With `preset`, that preset's values
    replace the file's (a list in the file may become a single value, e.g. fewer seeds).
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError([f"config file {path} does not exist"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path} is not valid YAML: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path} must be a mapping of key: value"])
    data.pop("description", None)
    presets = data.pop(PRESETS_KEY, None) or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError([f"{path}: 'presets' must map a preset name to a mapping of keys"])
    if preset is not None:
        if preset not in presets:
            available = ", ".join(presets) or "none"
            raise ConfigError([f"{path} has no preset '{preset}' (available: {available})"])
        data.update(presets[preset])
    return data


def config_presets(path: Path) -> list[str]:
    """Names of the presets a YAML file declares."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return list((data.get(PRESETS_KEY) or {}) if isinstance(data, dict) else [])


PRESETS_KEY = "presets"
VARIANTS_KEY = "variants"


def split_sweep(layer: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Separate a YAML layer into fixed values and sweep axes (keys whose value is a list)."""
    fixed = {k: v for k, v in layer.items() if not isinstance(v, list)}
    axes = {k: list(v) for k, v in layer.items() if isinstance(v, list)}
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise ConfigError([f"sweep axis '{k}' is an empty list" for k in empty])
    return fixed, axes


def expand_sweep(
    yaml_path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    schema: Mapping[str, Scalar] | None = None,
    preset: str | None = None,
) -> list[tuple[dict[str, Any], dict[str, Scalar]]]:
    """Every point of a sweep: ``(the point's varying values, its full validated config)``.

    A list value in the YAML file is a sweep axis; ``variants:`` is a list of mappings, each a
    set of keys that vary together (e.g. one defense = strategy + its parameter). The points are
    the cartesian product of the variants and the axes, in file order (a file without lists is
    a one-point sweep). All points are validated before any run, and every problem of every
    point is reported at once.

    An override (``--set``) of a sweep axis replaces the axis by its one value (``--set seed=1``
    on ``seed: [0, 1, 2]`` runs seed 1 only), so a point's name never disagrees with its config.
    An override of a key that ``variants`` vary is an error: it would make every variant the same.
    """
    import itertools

    schema = dict(schema if schema is not None else load_schema())
    layer = read_yaml_config(Path(yaml_path), preset) if yaml_path is not None else {}
    fixed, axes = split_sweep(layer)
    variants = axes.pop(VARIANTS_KEY, [{}])
    problems = [f"{yaml_path}: {_unknown(k, schema)}" for k in axes if k not in schema]
    for v in variants:
        if not isinstance(v, dict):
            problems.append(f"{yaml_path}: each of 'variants' must be a mapping, got {v!r}")
            continue
        problems += [f"{yaml_path}: variants: {_unknown(k, schema)}" for k in v if k not in schema]
    overrides = dict(overrides or {})
    for key in [k for k in axes if k in overrides]:
        del axes[key]  # the override is the axis's one value
    varied = sorted({k for v in variants if isinstance(v, dict) for k in v} & set(overrides))
    problems += [f"--set {k}: '{k}' is what the sweep's variants vary; edit {yaml_path} or "
                 f"choose a preset instead" for k in varied]  # fmt: skip
    if problems:
        raise ConfigError(problems)
    points = []
    for variant, values in itertools.product(variants, itertools.product(*axes.values())):
        point = {**variant, **dict(zip(axes, values, strict=True))}
        try:
            config = resolve_config(None, {**fixed, **point, **overrides}, schema)
            points.append((point, config))
        except ConfigError as exc:
            label = ", ".join(f"{k}={v}" for k, v in point.items()) or "the config"
            problems.extend(f"[{label}] {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    return points


def is_sweep(yaml_path: Path | None, preset: str | None = None) -> bool:
    """Whether the YAML file (with `preset`) has sweep axes (list values or ``variants``)."""
    if yaml_path is None:
        return False
    return bool(split_sweep(read_yaml_config(Path(yaml_path), preset))[1])


def resolve_config(
    yaml_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    schema: Mapping[str, Scalar] | None = None,
    preset: str | None = None,
) -> dict[str, Scalar]:
    """Defaults <- YAML file (<- its `preset`) <- overrides, type-coerced and validated."""
    schema = dict(schema if schema is not None else load_schema())
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if yaml_path is not None:
        layer = read_yaml_config(Path(yaml_path), preset)
        _, axes = split_sweep(layer)
        if axes:
            raise ConfigError(
                [f"{yaml_path} sweeps {', '.join(axes)} (list values); run it with "
                 "`immunefl sweep`, or give single values"]
            )  # fmt: skip
        layers.append((str(yaml_path), layer))
    if overrides:
        layers.append(("--set", overrides))
    config = dict(schema)
    problems: list[str] = []
    for origin, layer in layers:
        for key, value in layer.items():
            if key not in schema:
                problems.append(f"{origin}: {_unknown(key, schema)}")
                continue
            try:
                config[key] = coerce(key, value, schema[key])
            except ValueError as exc:
                problems.append(f"{origin}: {exc}")
    if problems:
        raise ConfigError(problems)
    return validate_config(config, schema)


def parse_rounds(spec: str) -> list[int]:
    """``"12, 40"`` -> ``[12, 40]`` (sorted, unique); ValueError on anything else."""
    items = [x.strip() for x in str(spec).split(",") if x.strip()]
    if not all(x.isdigit() for x in items):
        raise ValueError(f"'{spec}' is not a comma-separated list of round numbers")
    return sorted({int(x) for x in items})


def _threat_problems(c: RunConfig) -> list[str]:
    problems: list[str] = []
    if c.attack != "none":  # the attack modules import torch: only when there is an attack
        from attacks import attack_problems

        problems = attack_problems(c)
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


def validate_config(
    config: Mapping[str, Any], schema: Mapping[str, Scalar] | None = None
) -> dict[str, Scalar]:
    """Check every key of a full run config; return it unchanged or raise ConfigError."""
    schema = schema if schema is not None else load_schema()
    problems: list[str] = []
    for key in config:
        if key not in schema:
            problems.append(_unknown(key, schema))
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
        problems.append(f"'run-name' must be a plain directory name, got {c.run_name!r}")
    if not (math.isfinite(c.wbc_s) and c.wbc_s >= 0):
        problems.append(f"'wbc-s' must be a finite number >= 0, got {c.wbc_s}")
    if c.wbc_variant == "official" and c.wbc_noise_param != "scale":
        problems.append(
            "'wbc-variant' official draws Laplace noise of scale s, as the authors' code does: "
            "set 'wbc-noise-param' to scale (std is Algorithm 1's reading, wbc-variant paper)"
        )
    if not c.ldp_clip > 0:
        problems.append(f"'ldp-clip' must be > 0, got {c.ldp_clip}")
    z = c.ldp_noise_multiplier
    if not (math.isfinite(z) and z >= 0):
        problems.append(f"'ldp-noise-multiplier' must be a finite number >= 0, got {z}")
    from immunefl.faultspec import parse_faults

    try:
        bad = [p for p in parse_faults(c.inject_faults) if p >= c.num_partitions]
        if bad:
            problems.append(f"'inject-faults' names partitions {bad} >= num-partitions")
    except ValueError as exc:
        problems.append(f"'inject-faults': {exc}")
    problems.extend(_threat_problems(c))
    if not 0 < c.poll_interval <= 10:
        problems.append(f"'poll-interval' must be in (0, 10] seconds, got {c.poll_interval}")
    if not c.round_timeout > 0:
        problems.append(f"'round-timeout' must be > 0 seconds, got {c.round_timeout}")
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
    from strategies import strategy_problems  # local import: strategies import flwr

    problems.extend(strategy_problems(c))
    if problems:
        raise ConfigError(problems)
    return dict(config)
