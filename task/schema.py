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


#: The schema as the installed package carries it (a wheel has no pyproject.toml): a copy of
#: pyproject's ``[tool.flwr.app.config]``, which Flower reads; `tests/test_runconfig.py` fails
#: when the two differ, and ``python -m task.schema --write`` regenerates the copy.
SCHEMA_FILE = Path(__file__).with_name("schema.toml")


def pyproject_table(pyproject: Path = PYPROJECT) -> dict[str, Scalar]:
    """``[tool.flwr.app.config]`` of a pyproject.toml (the schema's source, for Flower)."""
    with open(pyproject, "rb") as fh:
        data = tomllib.load(fh)
    try:
        return dict(data["tool"]["flwr"]["app"]["config"])
    except KeyError as exc:
        raise ConfigError([f"{pyproject} has no [tool.flwr.app.config] table"]) from exc


def load_schema(path: Path = SCHEMA_FILE) -> dict[str, Scalar]:
    """The declared run-config keys and their defaults, in declaration order."""
    with open(path, "rb") as fh:
        return dict(tomllib.load(fh)["config"])


def schema_text(pyproject: Path = PYPROJECT) -> str:
    """The content of `SCHEMA_FILE` for the table in `pyproject`."""
    import tomli_w

    head = ("# Generated from pyproject.toml's [tool.flwr.app.config] by "
            "`python -m task.schema --write`: edit pyproject.toml, not this file.\n")  # fmt: skip
    return head + tomli_w.dumps({"config": pyproject_table(pyproject)})


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    if sys.argv[1:] == ["--write"]:
        SCHEMA_FILE.write_text(schema_text())
    elif SCHEMA_FILE.read_text() != schema_text():
        sys.exit(f"{SCHEMA_FILE} differs from pyproject.toml: run python -m task.schema --write")


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
