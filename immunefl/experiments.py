"""Experiment files and ``--set`` overrides -> validated run configs (the host tools' side).

`resolve_config` layers a YAML file (and one of its presets) and ``key=value`` overrides on the
schema's defaults and validates the result with every check there is (`CHECKS`: the task's
own, the rules' and the attacks'); `expand_sweep` does the same for every point of a file
with list values.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from immunefl.yamlfile import load_yaml, preview
from task.params import declared, dump_plugin_params, is_ref, parse_plugin_params
from task.runconfig import RunConfig
from task.schema import ConfigError, Scalar, coerce, load_schema, unknown_key
from task.validation import Check, validate_config


def rule_problems(config: RunConfig) -> list[str]:
    """The configured aggregation rule's problems (imported late: strategies import flwr)."""
    from strategies import strategy_problems

    return strategy_problems(config)


def attack_problems(config: RunConfig) -> list[str]:
    """The configured attack's problems (imported late: the attacks import torch)."""
    if config.attack == "none":
        return []
    from attacks import attack_problems as problems

    return problems(config)


def plugin_problems(config: RunConfig) -> list[str]:
    """Problems with ``plugin-params`` (`server_app.checks.plugin_params_problems`)."""
    if not config.plugin_params:
        return []
    from server_app.checks import plugin_params_problems

    return plugin_params_problems(config)


def model_problems(config: RunConfig) -> list[str]:
    """Problems with ``initial-model`` (`task.models.initial_model_problems`; imports torch)."""
    if not config.initial_model:
        return []
    from task.models import initial_model_problems

    return initial_model_problems(config)


#: every check beyond the task's own, as the ServerApp runs them (`server_app.checks.CHECKS`),
#: imported late: a run config the host tools accept can run
CHECKS = (rule_problems, attack_problems, plugin_problems, model_problems)


def plugin_class(kind: str, ref: str) -> type | None:
    """The plugin class a ``strategy``/``attack`` value names, or None when it is a built-in
    or cannot be loaded (the checks then say why)."""
    if not (isinstance(ref, str) and is_ref(ref)):
        return None
    try:
        if kind == "strategy":
            from strategies import strategy_class

            return strategy_class(ref)
        from attacks import attack_spec

        return attack_spec(ref).cls
    except (ValueError, TypeError):
        return None


def plugin_keys(
    named: Iterable[tuple[str, Any]], schema: Mapping[str, Scalar]
) -> dict[str, Scalar]:
    """``key -> default`` of the hyper-parameters that the plugins among `named` (pairs of
    ``strategy``/``attack`` and a value) declare beyond the schema's keys."""
    keys: dict[str, Scalar] = {}
    for kind, value in named:
        cls = plugin_class(kind, value)
        for p in declared(cls) if cls is not None else ():
            if p.key not in schema:
                keys[p.key] = p.default
    return keys


#: path keys made absolute against the caller's working directory (the apps run elsewhere and
#: refuse a relative one)
PATH_KEYS = ("data-dir", "initial-model")


def absolute_paths(mapping: dict[str, Scalar]) -> None:
    """Make the `PATH_KEYS` of a config mapping being built absolute (empty stays empty)."""
    for key in PATH_KEYS:
        value = mapping.get(key)
        if isinstance(value, str) and value and "\0" not in value:
            mapping[key] = os.path.abspath(os.path.expanduser(value))


def fold_plugin_params(mapping: dict[str, Scalar], values: Mapping[str, Scalar]) -> None:
    """Put a plugin's hyper-parameter values into ``plugin-params`` (what Flower carries) of a
    config mapping still being built."""
    if values:
        merged = {**parse_plugin_params(str(mapping.get("plugin-params", ""))), **values}
        mapping["plugin-params"] = dump_plugin_params(merged)


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
    data = load_yaml(Path(path))
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
            raise ConfigError([f"{path} has no preset {preview(preset)} (available: {available})"])
        data.update(presets[preset])
    return data


def config_presets(path: Path) -> list[str]:
    """Names of the presets a YAML file declares."""
    data = load_yaml(Path(path)) or {}
    return list((data.get(PRESETS_KEY) or {}) if isinstance(data, dict) else [])


PRESETS_KEY = "presets"
VARIANTS_KEY = "variants"
#: a sweep of more points is refused before any is expanded (`immunefl sweep --max-points N`)
MAX_POINTS = 10_000
#: a run-config key is a short name; a longer one is not looked up (difflib costs len^2)
MAX_KEY_CHARS = 64


def key_problem(key: Any, schema: Mapping[str, Any]) -> str:
    """Why `key` (not in `schema`) is refused, quoting at most a preview of it."""
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
        return f"unknown key {preview(key)}"
    return unknown_key(key, schema)


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
    max_points: int = MAX_POINTS,
    checks: Iterable[Check] = CHECKS,
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
    The number of points is counted before any is built: more than `max_points` is an error.
    """
    schema = dict(schema if schema is not None else load_schema())
    layer = read_yaml_config(Path(yaml_path), preset) if yaml_path is not None else {}
    fixed, axes = split_sweep(layer)
    variants = axes.pop(VARIANTS_KEY, [{}])
    sources = (fixed, overrides or {}, *[x for x in variants if isinstance(x, dict)])
    named = [(k, v) for source in sources for k, v in source.items() if k in ("strategy", "attack")]
    named += [(k, v) for k in ("strategy", "attack") for v in axes.get(k, [])]
    known = {**schema, **plugin_keys(named, schema)}
    problems = [f"{yaml_path}: {key_problem(k, schema)}" for k in axes if k not in known]
    for v in variants:
        if not isinstance(v, dict):
            problems.append(f"{yaml_path}: each of 'variants' must be a mapping, got {preview(v)}")
            continue
        problems += [
            f"{yaml_path}: variants: {key_problem(k, schema)}" for k in v if k not in known
        ]
    overrides = dict(overrides or {})
    for key in [k for k in axes if k in overrides]:
        del axes[key]  # the override is the axis's one value
    varied = sorted({k for v in variants if isinstance(v, dict) for k in v} & set(overrides))
    problems += [f"--set {k}: '{k}' is what the sweep's variants vary; edit {yaml_path} or "
                 f"choose a preset instead" for k in varied]  # fmt: skip
    if problems:
        raise ConfigError(problems)
    count = len(variants) * math.prod(len(axis) for axis in axes.values())
    if count > max_points:
        given = [(VARIANTS_KEY, variants)] if VARIANTS_KEY in layer else []
        sizes = " x ".join(f"{k} {len(v)}" for k, v in [*given, *axes.items()])
        raise ConfigError(
            [f"{yaml_path} sweeps {count} points ({sizes}), more than {max_points}; "
             "give fewer values, or raise the limit with --max-points N"]
        )  # fmt: skip
    points = []
    for variant, values in itertools.product(variants, itertools.product(*axes.values())):
        point = {**variant, **dict(zip(axes, values, strict=True))}
        try:
            config = resolve_config(None, {**fixed, **point, **overrides}, schema, checks=checks)
            points.append((point, config))
        except ConfigError as exc:
            label = ", ".join(f"{k}={preview(v)}" for k, v in point.items()) or "the config"
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
    checks: Iterable[Check] = CHECKS,
) -> dict[str, Scalar]:
    """Defaults <- YAML file (<- its `preset`) <- overrides, type-coerced and validated (the
    task's own checks, then `checks`; the CLI passes none and runs `CHECKS` in a child process:
    `immunefl.checker`)."""
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
    # a plugin rule's or attack's own keys (of the plugin in use) travel in plugin-params
    final = {k: v for _, layer in layers for k, v in layer.items() if k in ("strategy", "attack")}
    extra = plugin_keys(final.items(), schema)
    plugin_values: dict[str, Scalar] = {}
    problems: list[str] = []
    for origin, layer in layers:
        for key, value in layer.items():
            target = config if key in schema else plugin_values if key in extra else None
            if target is None:
                problems.append(f"{origin}: {key_problem(key, schema)}")
                continue
            try:
                target[key] = coerce(key, value, schema.get(key, extra.get(key)))
            except ValueError as exc:  # coerce quotes the whole value: quote a preview
                text = repr(value)
                problems.append(f"{origin}: {str(exc).replace(text, preview(value))}")
    if problems:
        raise ConfigError(problems)
    fold_plugin_params(config, plugin_values)
    absolute_paths(config)
    return validate_config(config, schema, checks)
