"""The typed, frozen run config: one field per schema key, validated once, read by attribute."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from immunefl.experiments import resolve_config
from task.runconfig import RunConfig, field_to_key, key_to_field
from task.schema import PROJECT_ROOT, ConfigError, load_schema

TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


def test_fields_are_the_schema_keys_with_their_types_in_order() -> None:
    schema = load_schema()
    fields = dataclasses.fields(RunConfig)
    assert [field_to_key(f.name) for f in fields] == list(schema)
    for f in fields:
        default = schema[field_to_key(f.name)]
        assert f.type == TYPE_NAMES[type(default)], f.name


def test_values_are_typed_and_the_mapping_round_trips() -> None:
    cfg = RunConfig.from_mapping(resolve_config(None, {"lr": "0.05", "rlr-theta": "3"}))
    assert cfg.lr == 0.05 and isinstance(cfg.lr, float)
    assert cfg.rlr_theta == 3 and isinstance(cfg.rlr_theta, int)
    assert cfg.as_mapping() == resolve_config(None, {"lr": "0.05", "rlr-theta": "3"})
    assert RunConfig.from_mapping(cfg.as_mapping()) == cfg


def test_a_bool_given_as_text_is_read_as_its_meaning() -> None:
    # bool("false") is True: a raw read with its own bool() got this wrong
    cfg = RunConfig.from_mapping({**load_schema(), "save-model": "false", "track-aep": "true"})
    assert cfg.save_model is False and cfg.track_aep is True


def test_it_is_frozen() -> None:
    cfg = RunConfig.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert cfg.replace(seed=3).seed == 3 and cfg.seed == 0


def test_invalid_configs_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="'momentum' must be in"):
        RunConfig.from_mapping({**load_schema(), "momentum": 1.5})
    with pytest.raises(ConfigError, match="missing key 'seed'"):
        RunConfig.from_mapping({k: v for k, v in load_schema().items() if k != "seed"})
    # a rule's own keys are the rule's check: whoever builds the config names the checks
    from strategies import strategy_problems

    with pytest.raises(ConfigError, match="'trim-beta'"):
        RunConfig.defaults((strategy_problems,), strategy="trimmed-mean", **{"trim-beta": 0.6})
    assert RunConfig.defaults(strategy="trimmed-mean", **{"trim-beta": 0.6}).trim_beta == 0.6
    with pytest.raises(ConfigError, match="'seed' must be a int"):
        RunConfig.defaults(seed="zero")


def test_the_same_mapping_is_validated_once() -> None:
    mapping = {**load_schema(), "seed": 11}
    assert RunConfig.from_mapping(mapping) is RunConfig.from_mapping(dict(mapping))
    assert RunConfig.from_mapping({**mapping, "seed": 12}).seed == 12


def test_the_cache_never_answers_for_an_equal_value_of_another_type() -> None:
    # True == 1 and 1 == 1.0 in Python: keyed on the value alone, the second call would get the
    # first one's (valid) answer instead of its own
    schema = load_schema()
    assert RunConfig.from_mapping({**schema, "attack-collude": True}).attack_collude is True
    with pytest.raises(ConfigError, match="'attack-collude' must be a bool"):
        RunConfig.from_mapping({**schema, "attack-collude": 1})
    assert RunConfig.from_mapping({**schema, "run-name": 1}).run_name == "1"
    assert RunConfig.from_mapping({**schema, "run-name": 1.0}).run_name == "1.0"
    assert RunConfig.from_mapping({**schema, "run-name": 0.0}).run_name == "0.0"
    assert RunConfig.from_mapping({**schema, "run-name": -0.0}).run_name == "-0.0"
    np = pytest.importorskip("numpy")
    with pytest.raises(ConfigError, match="'attack-collude' must be a bool"):
        RunConfig.from_mapping({**schema, "attack-collude": np.True_})  # type name is "bool"
    with pytest.raises(ConfigError, match="'adv-rounds' must be a string"):
        RunConfig.from_mapping({**schema, "adv-rounds": ["1"]})  # unhashable: still named


def test_named_is_the_one_rule_for_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.defaults(strategy="median", seed=4, **{"results-dir": "out"}).named()
    assert Path(cfg.results_dir) == tmp_path / "out"
    assert re.fullmatch(r"median-fmnist-iid-s4-\d{8}-\d{6}", cfg.run_name)
    assert cfg.run_dir == tmp_path / "out" / cfg.run_name
    mine = RunConfig.defaults(**{"run-name": "mine"}).named()
    assert mine.run_name == "mine" and mine.run_dir == tmp_path / "results" / "mine"


def test_key_and_field_names_map_both_ways() -> None:
    for key in load_schema():
        assert field_to_key(key_to_field(key)) == key


RAW_READ = re.compile(r"""\b(?:config|cfg|run_config|c)\[["'][a-z][a-z0-9-]*["']\]""")


def test_components_read_typed_fields_not_raw_keys() -> None:
    """The apps, rules and attacks get a RunConfig; raw key reads remain only where files on
    disk are read back (reports and plots of saved runs, whose config.json may be older)."""
    allowed = {"immunefl/report.py", "immunefl/plots.py"}
    found = []
    for package in ("client_app", "server_app", "strategies", "attacks", "immunefl"):
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            if rel in allowed:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if RAW_READ.search(line):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "raw run-config reads:\n" + "\n".join(found)


def test_the_packaged_schema_is_pyprojects_table() -> None:
    # the wheel carries task/schema.toml (a wheel has no pyproject.toml); Flower reads pyproject
    from task.schema import SCHEMA_FILE, pyproject_table, schema_text

    assert SCHEMA_FILE.read_text() == schema_text(), "run: python -m task.schema --write"
    assert load_schema() == pyproject_table()


def test_collude_budget_and_pretrain_holdout_are_checked() -> None:
    ok = {"attack": "backdoor", "num-malicious": 5, "adv-rounds": "2", "attack-collude": True,
          "collude-budget": "one-client",
          "attack-local-epochs": 1}  # fmt: skip
    assert resolve_config(None, ok)["collude-budget"] == "one-client"
    with pytest.raises(ConfigError, match="'collude-budget' is 'two'.*union, one-client"):
        resolve_config(None, {**ok, "collude-budget": "two"})
    with pytest.raises(ConfigError, match="needs 'attack-collude' true"):
        resolve_config(None, {**ok, "attack-collude": False})
    with pytest.raises(ConfigError, match=r"set 'attack-local-epochs' \(10\) to 'local-epochs'"):
        resolve_config(None, {**ok, "attack-local-epochs": 10})
    with pytest.raises(ConfigError, match=r"'pretrain-holdout' must be in \[0, 59900\).*got -1"):
        resolve_config(None, {"pretrain-holdout": -1})
