"""Experiment files read at a bounded cost: size, encoding, aliases, nesting, duplicate keys.

`load_yaml` reads at most `MAX_FILE_BYTES` bytes, decodes them as UTF-8 and parses them with
`BoundedLoader`, a `yaml.SafeLoader` that refuses what no experiment file needs and what makes
parsing cost more than the file's size: aliases (``*name``; nested aliases expand to billions of
nodes from a few hundred bytes, "billion laughs"), nesting deeper than `MAX_DEPTH`, and a key
given twice in one mapping (YAML keeps the last one silently). Every failure is a
`ConfigError` naming the file (and the line), never a traceback. `preview` is how an error
quotes a value: at most `PREVIEW_CHARS` characters of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from task.preview import PREVIEW_CHARS, preview
from task.schema import ConfigError

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "PREVIEW_CHARS", "BoundedLoader", "load_yaml", "preview"]

MAX_FILE_BYTES = 1 << 20  # an experiment file is a few kB; 1 MiB is far beyond any real one
MAX_DEPTH = 16  # collections inside collections (a file uses 3: presets -> name -> list)


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader without aliases, without deep nesting, without duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed in an experiment file "
                "(write the value out)", event.start_mark)  # fmt: skip
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
                if first != line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {preview(key)} is given twice (lines {first} and "
                        f"{line})", key_node.start_mark)  # fmt: skip
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The parsed contents of the YAML file `path` (ConfigError on any problem, naming it)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise ConfigError([f"config file {path} does not exist"]) from exc
    except IsADirectoryError as exc:
        raise ConfigError([f"config file {path} is a directory"]) from exc
    except OSError as exc:
        raise ConfigError([f"config file {path} cannot be read: {exc.strerror or exc}"]) from exc
    if len(raw) > max_bytes:
        raise ConfigError(
            [f"config file {path} is larger than {max_bytes} bytes (an experiment file is a "
             "few kB); is it the right file?"]
        )  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"config file {path} is not UTF-8 text (byte {exc.start}: "
             f"{raw[exc.start:exc.start + 4]!r}); is it the right file?"]
        ) from exc  # fmt: skip
    loader = BoundedLoader(text)
    loader.name = str(path)  # marks (line numbers in errors) name the file
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path} is not valid YAML: {exc}"]) from exc
    except (ValueError, RecursionError) as exc:  # e.g. an int of more than 4300 digits
        raise ConfigError([f"config file {path} has a value YAML cannot read: {exc}"]) from exc
    finally:
        loader.dispose()
