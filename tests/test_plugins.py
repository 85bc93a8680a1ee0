"""The plugin contract (task.params, strategies.contract) and the drop-in constructors."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from attacks import ATTACKS, attack_problems
from immunefl.experiments import expand_sweep, resolve_config
from server_app.checks import plugin_params_problems
from strategies import STRATEGIES, ImmuneFedAvg, InvariantStrategy, TrimmedMeanStrategy
from strategies import strategy_problems as rule_problems
from task.params import declared
from task.runconfig import RunConfig
from task.schema import ConfigError, load_schema

PLUGIN = '''
from strategies import ImmuneFedAvg
from attacks import Attack
from task.params import Param

class Halve(ImmuneFedAvg):
    """Half the mean."""
    PARAMS = (Param("halve-factor", "factor", 0.5, "the scale", low=0.0, high=1.0),)

    def __init__(self, select_nodes=None, *, factor=0.5, **kwargs):
        super().__init__(select_nodes, **kwargs)
        self.set_params(factor=factor)

    def aggregate_updates(self, U, weights, server_round):
        return U.mean(0) * self.factor, {}

class Zero(Attack):
    PARAMS = (Param("zero-flag", "flag", False, "a flag"),)

    def craft(self, ctx, indices, generator):
        return dict(ctx.global_state)

class NotARule:
    pass
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "myplug.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myplug"
    sys.modules.pop("myplug", None)


def test_every_builtin_param_is_a_schema_key_with_the_same_default() -> None:
    schema = load_schema()
    classes = [*STRATEGIES.values(), *(spec.cls for spec in ATTACKS.values())]
    for cls in classes:
        for p in declared(cls):
            assert p.key in schema, (cls, p.key)
            assert schema[p.key] == p.default and type(schema[p.key]) is type(p.default), p


def test_a_plugin_rule_and_attack_run_from_their_keys_alone(plugin: str) -> None:
    config = resolve_config(None, {"strategy": f"{plugin}:Halve", "halve-factor": "0.25",
                                   "attack": f"{plugin}:Zero", "zero-flag": "true",
                                   "num-malicious": 1, "attack-mode": "continuous"})  # fmt: skip
    assert json.loads(config["plugin-params"]) == {"halve-factor": 0.25, "zero-flag": True}
    cfg = RunConfig.from_mapping(config)
    rule = STRATEGIES.get(cfg.strategy) or __import__("strategies").strategy_class(cfg.strategy)
    built = rule.from_config(cfg, lambda r: [1, 2])
    assert built.factor == 0.25


def test_plugin_hyperparameters_are_checked_before_anything_starts(plugin: str) -> None:
    with pytest.raises(ConfigError, match=r"'halve-factor' must be in \[0, 1\], got 2.0"):
        resolve_config(None, {"strategy": f"{plugin}:Halve", "halve-factor": 2})
    with pytest.raises(ConfigError, match="'halve-factor' must be a float"):
        resolve_config(None, {"strategy": f"{plugin}:Halve", "halve-factor": "much"})
    # a key of a plugin that is not in use is an unknown key, not a silently unused value
    with pytest.raises(ConfigError, match="unknown key 'halve-factor'"):
        resolve_config(None, {"halve-factor": 0.3})


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("nopkg_xyz.mod:Rule", "cannot import nopkg_xyz.mod"),
        ("myplug:Missing", "myplug has no class Missing"),
        ("myplug:NotARule", "is not a subclass of strategies.fedavg.ImmuneFedAvg"),
        ("trimmed_mean", "valid: fedavg, median"),
    ],
)
def test_bad_plugin_names_say_what_is_wrong(plugin: str, value: str, needle: str) -> None:
    (problem,) = rule_problems(RunConfig.defaults(strategy=value))
    assert needle in problem


def test_plugin_params_nobody_declares_are_refused(plugin: str) -> None:
    cfg = RunConfig.defaults(strategy=f"{plugin}:Halve",
                             **{"plugin-params": '{"halve-factr": 0.3}'})  # fmt: skip
    (problem,) = plugin_params_problems(cfg)
    assert "halve-factr" in problem and "declare: halve-factor" in problem
    cfg = RunConfig.defaults(**{"plugin-params": '{"trim-beta": 0.3}'})
    assert "a key of its own" in plugin_params_problems(cfg)[0]
    assert "not JSON" in plugin_params_problems(RunConfig.defaults(**{"plugin-params": "{"}))[0]


def test_a_sweep_may_vary_a_plugins_keys(plugin: str, tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(f"strategy: {plugin}:Halve\nhalve-factor: [0.1, 0.2]\n")
    points = expand_sweep(f)
    assert [p for p, _ in points] == [{"halve-factor": 0.1}, {"halve-factor": 0.2}]
    assert [json.loads(c["plugin-params"]) for _, c in points] == [
        {"halve-factor": 0.1}, {"halve-factor": 0.2}]  # fmt: skip


def test_a_plugin_attack_is_checked_like_ours(plugin: str) -> None:
    cfg = RunConfig.defaults(attack=f"{plugin}:Zero", **{"plugin-params": '{"zero-flag": 3}',
                             "num-malicious": 1, "attack-mode": "continuous"})  # fmt: skip
    assert "'zero-flag' must be a bool" in attack_problems(cfg)[0]


def test_every_rule_builds_like_a_flower_strategy_with_its_defaults() -> None:
    from strategies import DPFixedClipping

    for name, cls in STRATEGIES.items():
        rule = cls(ImmuneFedAvg()) if cls is DPFixedClipping else cls()
        assert rule is not None, name
        if isinstance(rule, ImmuneFedAvg):
            assert rule.select_nodes is None and rule.federated_eval  # Flower's defaults
            assert rule.min_available_nodes == 2


def test_drop_in_hyperparameters_are_checked_in_the_constructor() -> None:
    with pytest.raises(ValueError, match=r"beta=0.6.*'trim-beta' must be in \[0, 0.5\)"):
        TrimmedMeanStrategy(beta=0.6)
    with pytest.raises(ValueError, match="tau"):
        InvariantStrategy(tau=1.5)
    with pytest.raises(TypeError):
        TrimmedMeanStrategy(betta=0.2)  # a misspelt keyword is never swallowed
    rule = TrimmedMeanStrategy(beta=0.2, fraction_train=0.5, min_available_nodes=10)
    assert (rule.beta, rule.fraction_train, rule.min_available_nodes) == (0.2, 0.5, 10)


def test_flower_arguments_are_honoured_or_refused_never_ignored() -> None:
    with pytest.raises(ValueError, match="only without select_nodes"):
        ImmuneFedAvg(lambda r: [1], fraction_train=0.5)
    with pytest.raises(ValueError, match="weighted_by_key='n'"):
        ImmuneFedAvg(weighted_by_key="n")
    assert not ImmuneFedAvg(fraction_evaluate=0.0).federated_eval
    assert not ImmuneFedAvg(lambda r: [1]).federated_eval  # our ServerApp says when


def test_without_select_nodes_flowers_sampling_picks_and_waits(task_identity) -> None:
    from flwr.app import ArrayRecord, ConfigRecord

    class Grid:
        def __init__(self):
            self.calls = 0

        def get_node_ids(self):
            self.calls += 1
            return [11, 12, 13, 14] if self.calls > 2 else [11]  # nodes arrive late

    import numpy as np

    rule = TrimmedMeanStrategy(beta=0.2, fraction_train=0.5, min_available_nodes=4)
    grid = Grid()
    arrays = ArrayRecord([np.zeros(2, dtype=np.float32)])
    msgs = list(rule.configure_train(1, arrays, ConfigRecord(), grid))
    assert grid.calls >= 3 and len(msgs) == 2  # waited for 4 nodes, sampled half
    assert sorted(rule._last_train_nodes) == sorted(m.metadata.dst_node_id for m in msgs)
