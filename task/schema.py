"""The run-config schema (``[tool.flwr.app.config]`` in pyproject.toml) and its coercion.

`load_schema` reads the declared keys and defaults; `coerce` turns one value into its key's
type or raises an error naming the key; `ConfigError` lists every problem of a config at once.
Range and combination checks are `task.validation`; experiment files and ``--set`` overrides
are the host tools' (`immunefl.experiments`).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Scalar = bool | int | float | str
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT_ROOT / "pyproject.toml"


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


def unknown_key(key: str, schema: Mapping[str, Any]) -> str:
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
