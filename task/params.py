"""The plugin contract: a rule's or an attack's own hyper-parameters, declared by its class.

A rule (`strategies`) or an attack (`attacks`) declares ``PARAMS``, a tuple of `Param`: the
run-config key, the constructor argument it feeds, the default (whose type is the parameter's
type), a one-line help text and an optional check. Everything else follows from that:

- the run config carries the values: a built-in parameter is a key of the schema
  (``[tool.flwr.app.config]``; a test checks that the defaults agree); a plugin's parameters
  travel in the one schema key ``plugin-params`` (JSON text), because Flower accepts only
  declared keys in a run config. The host tools fold a plugin's keys given in an experiment file
  or with ``--set`` into it, so a user writes ``--set my-threshold=0.3`` either way;
- `param_values` reads, types and checks them: every problem names the key (`ConfigError`,
  before anything starts), and `check_kwargs` does the same for a constructor's keywords when a
  rule is built by hand in someone's own Flower app;
- `load_ref` imports ``"package.module:Class"``, the run-config value that names a plugin.

>>> P = (Param("trim-beta", "beta", 0.1, "fraction trimmed per side", low=0.0, high=0.5,
...            high_open=True),)
>>> param_values(P, {"trim-beta": "0.2"})
{'beta': 0.2}
>>> param_values(P, {"trim-beta": 0.5})
Traceback (most recent call last):
...
task.schema.ConfigError: invalid run config:
  - 'trim-beta' must be in [0, 0.5), got 0.5
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from task.schema import ConfigError, Scalar, coerce

#: how a run-config value names a plugin: ``package.module:Class``
REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
KEY = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: run-config ``key`` -> constructor argument ``arg``.

    ``default`` fixes the type (bool, int, float or str). ``low``/``high`` bound a number
    (closed unless ``low_open``/``high_open``; floats must also be finite), ``choices`` a
    string; ``check(value)`` returns a problem text or None for anything else.
    """

    key: str
    arg: str
    default: Scalar
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` (already of the right type) is not allowed, or None."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"'{self.key}' must be a finite number, got {value}"
        lo = "(" if self.low_open or self.low is None else "["
        hi = ")" if self.high_open or self.high is None else "]"
        span = f"{lo}{'-inf' if self.low is None else f'{self.low:g}'}, "
        span += f"{'inf' if self.high is None else f'{self.high:g}'}{hi}"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"'{self.key}' must be in {span}, got {value}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"'{self.key}' must be in {span}, got {value}"
        if self.choices and value not in self.choices:
            return f"'{self.key}' is {value!r}; valid: {', '.join(self.choices)}"
        return self.check(value) if self.check is not None else None

    def describe(self) -> str:
        """One line for listings: key, type, default, help."""
        kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(self.default)]
        return f"{self.key} ({kind}, default {self.default!r}): {self.help}"


def declared(cls: type) -> tuple[Param, ...]:
    """A class's ``PARAMS`` (none declared: no hyper-parameters), checked for sanity."""
    params = tuple(getattr(cls, "PARAMS", ()))
    keys = [p.key for p in params]
    bad = [p for p in params if not isinstance(p, Param)]
    if bad or len(set(keys)) != len(keys) or not all(KEY.fullmatch(k) for k in keys):
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__}.PARAMS must be Param entries with distinct "
            f"kebab-case keys, got {bad or keys!r}"
        )
    return params


def param_values(params: Iterable[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """``{arg: typed value}`` from run-config ``values`` (a missing key takes its default);
    raises `ConfigError` listing every problem, each naming its key."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for p in params:
        try:
            value = coerce(p.key, values.get(p.key, p.default), p.default)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if (why := p.problem(value)) is not None:
            problems.append(why)
        out[p.arg] = value
    if problems:
        raise ConfigError(problems)
    return out


def check_kwargs(cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's hyper-parameter keywords checked against ``cls.PARAMS`` and typed
    (ValueError naming the argument and its run-config key; an undeclared one is an error)."""
    params = {p.arg: p for p in declared(cls)}
    out = {}
    for arg, value in kwargs.items():
        if arg not in params:
            raise TypeError(f"{cls.__name__} declares no parameter {arg!r} in PARAMS")
        p = params[arg]
        try:
            typed = coerce(p.key, value, p.default)
        except ValueError as exc:
            raise ValueError(f"{cls.__name__}({arg}=...): {exc}") from None
        if (why := p.problem(typed)) is not None:
            raise ValueError(f"{cls.__name__}({arg}={value!r}): {why}")
        out[arg] = typed
    return out


def load_ref(ref: str, kind: str) -> type:
    """The class a ``package.module:Class`` value names; ValueError saying what went wrong."""
    if not REF.fullmatch(ref):
        raise ValueError(f"'{kind}' {ref!r} is neither a built-in name nor package.module:Class")
    module_name, _, name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        raise ValueError(
            f"'{kind}' {ref!r}: cannot import {module_name} ({type(exc).__name__}: {exc}); "
            "is its package installed or on PYTHONPATH?"
        ) from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"'{kind}' {ref!r}: {module_name} has no class {name}")
    return cls


def config_params(cls: type, config: Any) -> dict[str, Any]:
    """``{argument: value}`` of ``cls.PARAMS`` in a `task.runconfig.RunConfig`: a schema key
    from its field, a plugin's key from ``plugin-params`` (its default when absent);
    `ConfigError` naming every bad key."""
    mapping = config.as_mapping()
    extra = parse_plugin_params(config.plugin_params)
    values = {p.key: mapping[p.key] if p.key in mapping else extra.get(p.key, p.default)
              for p in declared(cls)}  # fmt: skip
    return param_values(declared(cls), values)


def plugin_class(value: str, kind: str, base: type, valid: Iterable[str], noun: str) -> type:
    """The plugin class a ``strategy``/``attack`` value that is no built-in name names: it must
    be ``package.module:Class`` of a subclass of `base` with well-formed ``PARAMS``; ValueError
    listing the `valid` names otherwise."""
    if not is_ref(value):
        raise ValueError(f"'{kind}' is '{value}'; valid: {', '.join(valid)}, or "
                         f"package.module:Class for {noun} of your own")  # fmt: skip
    cls = load_ref(value, kind)
    if not issubclass(cls, base):
        raise ValueError(f"'{kind}' {value!r} is not a subclass of {base.__module__}."
                         f"{base.__qualname__}")  # fmt: skip
    declared(cls)  # a malformed PARAMS is the plugin author's error, named now
    return cls


def is_ref(value: str) -> bool:
    """Whether a ``strategy``/``attack`` value names a plugin class rather than a built-in."""
    return ":" in value


def parse_plugin_params(text: str) -> dict[str, Scalar]:
    """The ``plugin-params`` value (JSON object of scalars; empty = none) as a dict.

    >>> parse_plugin_params('{"my-threshold": 0.3}')
    {'my-threshold': 0.3}
    >>> parse_plugin_params("")
    {}
    """
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"'plugin-params' is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, (bool, int, float, str)) for k, v in data.items()
    ):
        raise ValueError("'plugin-params' must be a JSON object of key: scalar value")
    return data


def dump_plugin_params(values: Mapping[str, Scalar]) -> str:
    """Inverse of `parse_plugin_params` (keys sorted: one text per set of values)."""
    return json.dumps(dict(values), sort_keys=True) if values else ""
