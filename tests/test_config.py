from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from immunefl.experiments import (
    config_presets,
    expand_sweep,
    is_sweep,
    parse_overrides,
    resolve_config,
)
from task.schema import PROJECT_ROOT, ConfigError, coerce, load_schema

REQUIRED_KEYS = {
    "seed",
    "dataset",
    "data-dir",
    "partitioning",
    "dirichlet-alpha",
    "num-partitions",
    "model",
    "num-server-rounds",
    "clients-per-round",
    "local-epochs",
    "batch-size",
    "lr",
    "momentum",
    "strategy",
    "results-dir",
    "run-name",
}


def test_schema_declares_every_key_with_paper_defaults() -> None:
    schema = load_schema()
    assert set(schema) >= REQUIRED_KEYS
    assert schema["num-partitions"] == 100 and schema["clients-per-round"] == 10
    assert schema["batch-size"] == 32 and schema["lr"] == 0.01 and schema["local-epochs"] == 1
    assert resolve_config() == schema  # defaults validate as they are


def test_yaml_and_overrides_layer_in_order(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.05\nseed: 3\npartitioning: shard\n")
    cfg = resolve_config(f, {"seed": "9"})
    assert cfg["lr"] == 0.05 and cfg["seed"] == 9 and cfg["partitioning"] == "shard"


def test_unknown_key_names_it_and_suggests(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("learning-rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(f)
    assert "learning-rate" in str(info.value) and str(f) in str(info.value)
    with pytest.raises(ConfigError, match="did you mean clients-per-round"):
        resolve_config(None, {"client-per-round": "5"})


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"dataset": "mnist"}, "'dataset' is 'mnist'; valid: fmnist, cifar10"),
        ({"lr": "-1"}, "'lr' must be a finite number > 0"),
        ({"lr": "fast"}, "'lr' must be a float"),
        ({"batch-size": "0"}, "'batch-size' must be a positive integer"),
        ({"num-server-rounds": "2.5"}, "'num-server-rounds' must be a int"),
        ({"momentum": "1.0"}, "'momentum' must be in [0, 1)"),
        ({"clients-per-round": "20", "num-partitions": "10"}, "'clients-per-round' (20)"),
        ({"model": "cnn-cifar"}, "does not fit 'dataset' fmnist"),
        ({"strategy": "krumm"}, "'strategy' is 'krumm'; valid:"),
        ({"federated-eval": "maybe"}, "'federated-eval' must be a bool"),
        ({"run-name": "a/b"}, "'run-name' must be a plain directory name"),
    ],
)
def test_bad_values_name_the_key(overrides: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, overrides)
    assert needle in str(info.value)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, {"lr": "0", "batch-size": "-3"})
    assert len(info.value.problems) == 2


def test_coerce_and_parse_overrides() -> None:
    assert coerce("x", "true", False) is True and coerce("x", 3, 0.5) == 3.0
    assert coerce("x", 42, "") == "42"
    with pytest.raises(ValueError):
        coerce("x", True, 1)  # a bool is not an int
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


CONFIG_FILES = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
PAPER_FILES = [f for f in CONFIG_FILES if f.name.startswith(("fl-wbc-", "invariant-"))]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_shipped_config_and_preset_validates(path: Path) -> None:
    from immunefl.matrix import expand_matrix, is_matrix

    expand = expand_matrix if is_matrix(path) else expand_sweep
    assert expand(path)  # a plain config is a one-point sweep
    for preset in config_presets(path):
        assert expand(path, preset=preset)


def test_paper_experiments_exist_with_cpu_presets_smaller_than_paper_scale() -> None:
    names = {f.stem for f in PAPER_FILES}
    for fig in (
        "fig2",
        "fig3-fmnist-iid",
        "fig3-fmnist-noniid",
        "fig3-cifar-iid",
        "fig3-cifar-noniid",
        "fig4-fmnist",
        "fig5-fmnist",
        "fig6-fmnist",
        "table1-fmnist",
        "fig4-cifar",
        "fig5-cifar",
        "fig6-cifar",
        "table1-cifar",
    ):
        assert f"fl-wbc-{fig}" in names, fig
    for table in ("table1-cifar", "table4-cifar", "table1-fmnist", "table4-fmnist"):
        assert f"invariant-{table}" in names, table
    for f in PAPER_FILES:
        assert "cpu" in config_presets(f), f"{f.name} has no cpu preset"
        full, cpu = expand_sweep(f), expand_sweep(f, preset="cpu")
        work = sum(int(c["num-server-rounds"]) * int(c["clients-per-round"]) for _, c in full)
        cpu_work = sum(int(c["num-server-rounds"]) * int(c["clients-per-round"]) for _, c in cpu)
        assert cpu_work < work / 5, f"{f.name}: cpu preset is not much smaller than paper scale"


def test_invariant_table1_cifar_is_the_papers_setting() -> None:
    points = expand_sweep(PROJECT_ROOT / "configs" / "invariant-table1-cifar.yaml")
    strategies = {c["strategy"] for _, c in points}
    assert strategies == {"fedavg", "krum", "multikrum", "trimmed-mean", "signsgd", "rlr",
                          "dp-fixed", "invariant"}  # fmt: skip
    for _, c in points:
        assert (c["model"], c["num-partitions"], c["clients-per-round"]) == ("resnet18", 100, 20)
        assert c["num-malicious"] == 20 and c["attack"] == "edge-case"
        assert c["attack-mode"] == "continuous" and c["num-server-rounds"] == 300
        if c["strategy"] == "invariant":
            assert (c["invariant-tau"], c["invariant-alpha"]) == (0.2, 0.25)


def test_presets_replace_values_and_unknown_presets_are_named(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text("description: an experiment\nseed: [0, 1, 2]\nnum-server-rounds: 500\n"
                 "presets:\n  cpu: {seed: 0, num-server-rounds: 5}\n")  # fmt: skip
    assert len(expand_sweep(f)) == 3 and is_sweep(f)
    ((point, config),) = expand_sweep(f, preset="cpu")
    assert config["num-server-rounds"] == 5 and config["seed"] == 0 and not is_sweep(f, "cpu")
    assert resolve_config(f, preset="cpu")["num-server-rounds"] == 5
    with pytest.raises(ConfigError, match="no preset 'gpu' \\(available: cpu\\)"):
        expand_sweep(f, preset="gpu")
    f.write_text("presets:\n  cpu: {bogus: 1}\n")
    with pytest.raises(ConfigError, match="bogus"):
        resolve_config(f, preset="cpu")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "bogus-key=1"], "bogus-key"),
        (["--set", "lr=abc"], "'lr'"),
        (["--set", "partitioning=random"], "partitioning"),
    ],
)
def test_cli_rejects_bad_config_before_starting(args: list[str], needle: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Starting" not in out.stdout  # nothing was launched


def test_launcher_imports_neither_torch_nor_numpy() -> None:
    """`immunefl --help`, `deploy`, `report` and the data check start without torch (~2 s)."""
    code = (
        "import sys; import immunefl.cli; from task.datafiles import locate_dataset; "
        "from immunefl.experiments import read_yaml_config; "
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=PROJECT_ROOT, check=True)  # fmt: skip
    assert out.stdout.split() == ["False", "False"]


def test_sweep_expands_cartesian_product_in_file_order(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("client-defense: wbc\nwbc-s: [0.1, 0.4]\nseed: [0, 1, 2]\n")
    points = expand_sweep(f, {"num-server-rounds": "7"})
    assert [p for p, _ in points] == [
        {"wbc-s": s, "seed": seed} for s in (0.1, 0.4) for seed in (0, 1, 2)
    ]
    assert all(c["num-server-rounds"] == 7 and c["client-defense"] == "wbc" for _, c in points)
    assert points[4][1]["wbc-s"] == 0.4 and points[4][1]["seed"] == 1
    with pytest.raises(ConfigError, match="immunefl sweep"):
        resolve_config(f)  # `run` refuses a sweep file


def test_an_override_of_a_sweep_axis_replaces_it_and_never_mislabels_a_point(
    tmp_path: Path,
) -> None:  # fmt: skip
    f = tmp_path / "s.yaml"
    f.write_text("seed: [0, 1, 2]\nvariants:\n  - {strategy: fedavg}\n  - {strategy: median}\n")
    points = expand_sweep(f, {"seed": "1"})  # used to run seed 1 three times, named 0, 1, 2
    assert [p for p, _ in points] == [{"strategy": "fedavg"}, {"strategy": "median"}]
    assert [c["seed"] for _, c in points] == [1, 1]
    for p, c in expand_sweep(f):
        assert c["seed"] == p["seed"] and c["strategy"] == p["strategy"]
    with pytest.raises(ConfigError, match="'strategy' is what the sweep's variants vary"):
        expand_sweep(f, {"strategy": "krum"})


def test_sweep_reports_bad_points_and_unknown_axes(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("lr: [0.1, -1.0]\n")
    with pytest.raises(ConfigError, match=r"\[lr=-1.0\] 'lr' must be a finite number > 0"):
        expand_sweep(f)
    f.write_text("learning-rate: [0.1]\n")
    with pytest.raises(ConfigError, match="unknown key 'learning-rate'"):
        expand_sweep(f)


def test_sweep_variants_vary_keys_together(tmp_path: Path) -> None:
    f = tmp_path / "v.yaml"
    f.write_text(
        "seed: [0, 1]\nvariants:\n  - {strategy: fedavg}\n"
        "  - {strategy: trimmed-mean, trim-beta: 0.2}\n"
    )
    points = expand_sweep(f)
    assert [p for p, _ in points] == [
        {"strategy": "fedavg", "seed": 0}, {"strategy": "fedavg", "seed": 1},
        {"strategy": "trimmed-mean", "trim-beta": 0.2, "seed": 0},
        {"strategy": "trimmed-mean", "trim-beta": 0.2, "seed": 1},
    ]  # fmt: skip
    assert points[2][1]["trim-beta"] == 0.2 and points[0][1]["trim-beta"] == 0.1
    f.write_text("variants:\n  - {strategy: fedavg, bogus: 1}\n")
    with pytest.raises(ConfigError, match="variants: unknown key 'bogus'"):
        expand_sweep(f)


@pytest.mark.parametrize("old", ["cdp-sigma", "ldp-sigma"])
def test_renamed_dp_keys_fail_loudly_naming_the_new_meaning(old: str) -> None:
    with pytest.raises(ConfigError, match=f"'{old}' was renamed to .*-noise-multiplier"):
        resolve_config(None, {old: "0.1"})


def test_immunefl_configs_lists_every_experiment_with_its_presets() -> None:
    from immunefl.cli import list_configs

    text = list_configs(PROJECT_ROOT / "configs")
    for path in (PROJECT_ROOT / "configs").glob("*.yaml"):
        assert f"\n{path.stem}  [" in f"\n{text}", path.stem
    assert "fl-wbc-fig4-fmnist  [" in text and "presets: cpu" in text
    assert "default  [1 run; presets: none]\n    The main job: FedAvg" in text
