"""`immunefl report` on a fixture results directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from immunefl.report import report
from server_app.experiment import attack_summary
from server_app.results import RunRecorder, summarize
from task.schema import load_schema
from tests.conftest import typed_config


def _run(
    root: Path, name: str, seed: int, confs: list[float], delivered: bool = True, **cfg
) -> None:
    config = {**load_schema(), "run-name": name, "seed": seed, "attack": "targeted",
              "adv-rounds": "2", **cfg}  # fmt: skip
    rec = RunRecorder(root / name)
    rec.write_config(config)
    for r, c in enumerate(confs, start=1):
        rec.append_round({"round": r, "adversarial": r == 2, "benign_acc": 0.5 + 0.1 * r,
                          "benign_loss": 1.0, "mis_conf": c, "round_seconds": 1.0,
                          "malicious_aggregated": 5 if r == 2 and delivered else 0})  # fmt: skip
    summary = summarize(rec.rows, 5.0)
    summary.update(attack_summary(rec.rows, typed_config(**config), [2]))
    rec.write_summary(summary)


def test_report_tables(tmp_path: Path) -> None:
    _run(tmp_path, "a0", 0, [0.1, 0.9, 0.8, 0.6, 0.4, 0.3])
    _run(tmp_path, "a1", 1, [0.1, 0.95, 0.9, 0.7, 0.7, 0.6])
    _run(tmp_path, "w0", 0, [0.1, 0.9, 0.2, 0.1, 0.1, 0.1], **{"client-defense": "wbc"})
    text = report([tmp_path])
    assert "| FedAvg | iid | 2 | 1.100 +- 0.000 | mis_conf | 0.550 | 0.450 | 3, >4 |" in text
    assert "| FL-WBC s=0.4 | iid | 1 |" in text and "| 1 |" in text
    assert "| a1 | FedAvg | iid | 1 | 1.100 | 0.950 | 0.900 | 0.700 | 0.600 | 2: >4 |" in text


def test_report_writes_figures_whose_data_are_the_runs(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import load_runs

    _run(tmp_path, "a0", 0, [0.1, 0.9, 0.8, 0.6, 0.4, 0.3])
    _run(tmp_path, "a1", 1, [0.1, 0.95, 0.9, 0.7, 0.7, 0.6])
    _run(tmp_path, "w0", 0, [0.1, 0.9, 0.2, 0.1, 0.1, 0.1], **{"client-defense": "wbc"})
    out = tmp_path / "report"
    text = report([tmp_path], out)
    name = tmp_path.name
    for kind in ("attack", "accuracy", "tradeoff"):
        for ext in ("png", "svg"):
            f = out / f"{name}-{kind}.{ext}"
            assert f.exists() and f.stat().st_size > 1000, f
        assert f"![{kind}]({name}-{kind}.png)" in text
    assert (out / "report.md").read_text() == text

    runs = load_runs([tmp_path])
    fig, data = plots.attack_figure(runs)
    # FedAvg: mean of the two seeds; FL-WBC: its one seed; adversarial round 2 marked on both
    rounds, values = data["curves"]["FedAvg"]
    assert rounds == [1, 2, 3, 4, 5, 6]
    assert values == pytest.approx([0.1, 0.925, 0.85, 0.65, 0.55, 0.45])
    assert data["curves"]["FL-WBC s=0.4"][1] == pytest.approx([0.1, 0.9, 0.2, 0.1, 0.1, 0.1])
    assert data["adversarial"] == {"FedAvg": [2], "FL-WBC s=0.4": [2]}
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels.count("FedAvg") == 1 and labels.count("FL-WBC s=0.4") == 1
    # the circles sit on the curve at the adversarial round
    circles = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "o"]
    assert sorted(float(c.get_ydata()[0]) for c in circles) == pytest.approx([0.9, 0.925])

    _, trade = plots.tradeoff_figure(runs)
    # FedAvg: seed 0 mitigated after 3 rounds, seed 1 never (>4 -> drawn at 5): mean 4, open
    assert trade["FedAvg"] == {"mitigation_rounds": 4.0, "censored": True, "benign_acc": 1.1}
    assert trade["FL-WBC s=0.4"]["mitigation_rounds"] == 1.0
    assert not trade["FL-WBC s=0.4"]["censored"]
    _, acc = plots.accuracy_figure(runs)
    assert acc["FedAvg"][1] == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0, 1.1])


def test_labels_show_the_context_that_varies(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import load_runs

    _run(tmp_path, "i", 0, [0.1, 0.9, 0.1], partitioning="iid")
    _run(tmp_path, "s", 0, [0.1, 0.9, 0.1], partitioning="shard", strategy="trimmed-mean")
    groups = plots.group_runs(load_runs([tmp_path]))
    assert sorted(groups) == ["CTMA beta=0.1 [partitioning=shard]", "FedAvg [partitioning=iid]"]


def test_defense_parameters_never_merge_groups(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import group_table, load_runs

    _run(tmp_path, "ours", 0, [0.1, 0.9, 0.1], strategy="invariant", **{"invariant-alpha": 0.25})
    _run(tmp_path, "mask", 0, [0.1, 0.9, 0.9], strategy="invariant", **{"invariant-alpha": 0.0})
    runs = load_runs([tmp_path])
    assert sorted(plots.group_runs(runs)) == ["invariant tau=0.2 alpha=0.0",
                                              "invariant tau=0.2 alpha=0.25"]  # fmt: skip
    table = group_table(runs)
    assert "| invariant tau=0.2 alpha=0.0 | iid | 1 |" in table
    assert "| invariant tau=0.2 alpha=0.25 | iid | 1 |" in table


def test_fl_wbc_without_noise_is_labelled_as_the_rule_it_runs() -> None:
    from immunefl.plots import defense_label

    base = {**load_schema(), "client-defense": "wbc"}
    assert defense_label({**base, "wbc-s": 0.0}) == "FedAvg (FL-WBC s=0: no noise)"
    assert defense_label({**base, "wbc-s": 0.4}) == "FL-WBC s=0.4"
    median = {**base, "strategy": "median"}
    assert defense_label({**median, "wbc-s": 0.4}) == "CMA (median) + FL-WBC s=0.4"
    assert defense_label({**median, "wbc-s": 0}) == "CMA (median) (FL-WBC s=0: no noise)"


def test_runs_whose_attack_was_not_delivered_are_marked_everywhere(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import load_runs

    _run(tmp_path, "a0", 0, [0.1, 0.1, 0.1, 0.1], delivered=False)
    _run(tmp_path, "a1", 1, [0.1, 0.9, 0.8, 0.6])
    text = report([tmp_path])
    assert "| FedAvg (attack not delivered in 1/2 runs) | iid | 2 |" in text  # group table
    assert "| a0 (attack not delivered in rounds [2]) | FedAvg |" in text  # run table
    assert "| a1 | FedAvg |" in text
    runs = load_runs([tmp_path])
    fig, data = plots.attack_figure(runs)
    assert list(data["curves"]) == ["FedAvg (attack not delivered in 1/2 runs)"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("attack not delivered" in t for t in legend)


def test_every_curve_has_its_own_style_and_coinciding_curves_are_named() -> None:
    from immunefl.plots import curve_styles

    same = ([1, 2, 3], [0.9, 0.5, 0.1])
    curves = {f"c{i}": ([1, 2, 3], [0.1 * i, 0.2, 0.3]) for i in range(12)}
    curves["FedAvg"] = same
    curves["CTMA beta=0.4"] = same
    styles = curve_styles(curves)
    pairs = {(s["color"], s["linestyle"]) for s in styles.values()}
    assert len(pairs) == len(curves)  # no two curves look alike
    assert styles["CTMA beta=0.4"]["label"] == "CTMA beta=0.4 (= FedAvg)"
    assert styles["FedAvg"]["label"] == "FedAvg"


def test_aep_figure_plots_the_attack_effect_per_defense(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import load_runs, write_figures

    for name, seed, aep, defense in (("f0", 0, [0.0, 2.0, 1.8, 1.7], "none"),
                                     ("w0", 0, [0.0, 2.0, 0.9, 0.3], "wbc")):  # fmt: skip
        config = {**load_schema(), "run-name": name, "seed": seed, "attack": "targeted",
                  "adv-rounds": "2", "client-defense": defense}  # fmt: skip
        rec = RunRecorder(tmp_path / name)
        rec.write_config(config)
        for r, a in enumerate(aep, start=1):
            row = {"round": r, "adversarial": r == 2, "benign_acc": 0.5, "benign_loss": 1.0,
                   "mis_conf": 0.1, "aep_norm": a, "round_seconds": 1.0,
                   "malicious_aggregated": 5 * (r == 2)}  # fmt: skip
            rec.append_round(row)
        summary = summarize(rec.rows, 5.0)
        summary.update(attack_summary(rec.rows, typed_config(**config), [2]))
        rec.write_summary(summary)
    runs = load_runs([tmp_path])
    _, data = plots.aep_figure(runs)
    assert data["FL-WBC s=0.4"] == ([1, 2, 3, 4], [0.0, 2.0, 0.9, 0.3])
    assert data["FedAvg"][1][-1] == 1.7
    kinds = [k for k, _ in write_figures(runs, "x", tmp_path / "figs")]
    assert "aep" in kinds and (tmp_path / "figs" / "x-aep.png").exists()


def test_regime_map_puts_each_defense_on_the_local_steps_axis(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import load_runs, write_figures

    # (epochs, batch, steps, defense, mis_conf per round); the attack is in round 2
    cases = [(1, 32, 19, "none", [0.1, 1.0, 0.9, 0.9, 0.8, 0.8, 0.7]),
             (10, 10, 600, "none", [0.1, 1.0, 0.8, 0.6, 0.4, 0.2, 0.1]),
             (1, 32, 19, "wbc", [0.1, 1.0, 0.9, 0.9, 0.8, 0.8, 0.7]),
             (10, 10, 600, "wbc", [0.1, 1.0, 0.3, 0.1, 0.1, 0.1, 0.1])]  # fmt: skip
    for e, b, steps, defense, confs in cases:
        name = f"{defense}-{steps}"
        config = {**load_schema(), "run-name": name, "attack": "targeted", "adv-rounds": "2",
                  "client-defense": defense, "local-epochs": e, "batch-size": b}  # fmt: skip
        rec = RunRecorder(tmp_path / name)
        rec.write_config(config)
        for r, c in enumerate(confs, start=1):
            rec.append_round({"round": r, "adversarial": r == 2, "benign_acc": 0.5,
                              "benign_loss": 1.0, "mis_conf": c, "round_seconds": 1.0,
                              "client.steps": float(steps), "malicious_aggregated": 1})  # fmt: skip
        summary = summarize(rec.rows, 5.0)
        summary.update(attack_summary(rec.rows, typed_config(**config), [2]))
        rec.write_summary(summary)
    runs = load_runs([tmp_path])
    _, data = plots.regime_figure(runs)
    assert data["FL-WBC s=0.4"]["steps"] == [19, 600]
    assert data["FL-WBC s=0.4"]["mitigation"] == [6.0, 1.0]  # >5 drawn at 6; 1 round at 600
    assert data["FedAvg"]["mitigation"] == [6.0, 3.0]
    assert data["FedAvg"]["mis_conf+1"] == [0.9, 0.8]
    assert "regime" in [k for k, _ in write_figures(runs, "x", tmp_path / "figs")]


def _regime_run(
    root: Path,
    defense: str,
    e: int,
    b: int,
    steps: int,
    seed: int,
    confs: list[float],
    aep: list[float] | None = None,
    **extra: object,
) -> None:
    name = f"{defense}-{steps}-s{seed}"
    config = {**load_schema(), "run-name": name, "seed": seed, "attack": "targeted",
              "adv-rounds": "2", "client-defense": defense, "local-epochs": e,
              "batch-size": b, **extra}  # fmt: skip
    rec = RunRecorder(root / name)
    rec.write_config(config)
    for r, c in enumerate(confs, start=1):
        row = {"round": r, "adversarial": r == 2, "benign_acc": 0.5 + 0.1 * seed,
               "benign_loss": 1.0, "mis_conf": c, "round_seconds": 1.0,
               "client.steps": float(steps), "malicious_aggregated": 1}  # fmt: skip
        if aep is not None:
            row["aep_norm"] = aep[r - 1]
        rec.append_round(row)
    summary = summarize(rec.rows, 5.0)
    summary.update(attack_summary(rec.rows, typed_config(**config), [2]))
    rec.write_summary(summary)


def test_regime_table_gives_mean_and_sample_sd_over_seeds_per_step_count(tmp_path: Path) -> None:
    from immunefl import plots
    from immunefl.report import load_runs, regime_table

    # FL-WBC at 600 steps: mitigated after 1 round (seed 0) and 3 rounds (seed 1)
    _regime_run(tmp_path, "wbc", 10, 10, 600, 0, [0.1, 1.0, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1])
    _regime_run(tmp_path, "wbc", 10, 10, 600, 1, [0.1, 1.0, 0.9, 0.8, 0.2, 0.1, 0.1, 0.1])
    # FedAvg at 19 steps: never mitigated in 6 rounds after the attack (counted as 7)
    for seed in (0, 1):
        _regime_run(tmp_path, "none", 1, 32, 19, seed, [0.1, 1.0, 0.9, 0.9, 0.8, 0.8, 0.7, 0.7])
    _regime_run(tmp_path, "wbc", 1, 32, 19, 0, [0.1, 1.0, 0.9, 0.9, 0.8, 0.8, 0.7, 0.7])
    runs = load_runs([tmp_path])
    table = regime_table(runs)
    # mean 2, sample sd sqrt(2) = 1.414 (population sd would be 1.000)
    assert "| FL-WBC s=0.4 | 600 | 2 | 2.000 +- 1.414 (1, 3) | 1.000 +- 0.000 " in table
    assert "| 0.600 +- 0.424 | 0.150 +- 0.071 | 0.100 +- 0.000 | 0.550 +- 0.071 |" in table
    assert "| FedAvg | 19 | 2 | 7.000 +- 0.000 (>6, >6) |" in table
    assert table.index("| FedAvg | 19 ") < table.index("| FL-WBC s=0.4 | 600 ")  # by steps
    _, data = plots.regime_figure(runs)
    assert data["FL-WBC s=0.4"]["mitigation_sd"] == [0.0, pytest.approx(2**0.5)]
    assert "| local steps |" in report([tmp_path])


def test_regime_figure_keeps_each_mean_at_its_own_step_count(tmp_path: Path) -> None:
    """A step count whose runs have no mitigation value is left out of the left panel without
    shifting the later points onto its x."""
    import json

    from immunefl import plots
    from immunefl.report import load_runs

    _regime_run(tmp_path, "wbc", 1, 32, 19, 0, [0.1, 1.0, 0.3, 0.1])
    _regime_run(tmp_path, "wbc", 2, 10, 120, 0, [0.1, 1.0, 0.3, 0.1])
    _regime_run(tmp_path, "wbc", 10, 10, 600, 0, [0.1, 1.0, 0.9, 0.1])
    summary = tmp_path / "wbc-120-s0" / "summary.json"
    data = json.loads(summary.read_text())
    data["mitigation_rounds"] = {}
    summary.write_text(json.dumps(data))
    _, fig_data = plots.regime_figure(load_runs([tmp_path]))
    entry = fig_data["FL-WBC s=0.4"]
    assert entry["mitigation_steps"] == [19, 600]
    assert entry["mitigation"] == [1.0, 2.0]


def test_aep_table_reports_the_decay_after_the_attack(tmp_path: Path) -> None:
    from immunefl.report import aep_table, load_runs

    confs = [0.1, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1]
    _regime_run(tmp_path, "none", 1, 32, 19, 0, confs, aep=[0, 2, 2, 2, 2, 2, 2, 1.8])
    _regime_run(tmp_path, "none", 1, 32, 19, 1, confs, aep=[0, 4, 4, 4, 4, 4, 4, 4.0])
    _regime_run(tmp_path, "wbc", 1, 32, 19, 0, confs, aep=[0, 2, 1, 1, 0.5, 0.5, 0.5, 0.2])
    table = aep_table(load_runs([tmp_path]))
    # FedAvg: at the attack 2 and 4 -> 3 +- 1.414; end / adv 0.9 and 1.0
    assert "| FedAvg | 2 | 3.000 +- 1.414 | 3.000 +- 1.414 " in table
    assert "| 2.900 +- 1.556 | 0.950 +- 0.071 |" in table
    assert "| FL-WBC s=0.4 | 1 | 2.000 +- 0.000 | 1.000 +- 0.000 | 0.500 +- 0.000 " in table
    assert table.rstrip().endswith("| 0.200 +- 0.000 | 0.100 +- 0.000 |")
    assert "| AEP @adv |" in report([tmp_path])


def _continuous(root: Path, name: str, seed: int, asr: list[float], **cfg) -> None:
    config = {**load_schema(), "run-name": name, "seed": seed, "attack": "edge-case",
              "attack-mode": "continuous", **cfg}  # fmt: skip
    rec = RunRecorder(root / name)
    rec.write_config(config)
    for r, a in enumerate(asr, start=1):
        rec.append_round({"round": r, "adversarial": True, "benign_acc": 0.5 + 0.01 * seed,
                          "benign_loss": 1.0, "asr": a, "round_seconds": 1.0,
                          "malicious_aggregated": 2})  # fmt: skip
    summary = summarize(rec.rows, 5.0)
    summary.update(attack_summary(rec.rows, typed_config(**config), list(range(1, len(asr) + 1))))
    rec.write_summary(summary)


def test_continuous_attacks_get_mean_and_sd_of_the_end_and_the_last_rounds(tmp_path: Path) -> None:
    # 12 rounds; the last 10 are rounds 3..12: means 0.22 and 0.44
    _continuous(tmp_path, "s0", 0, [1.0, 1.0] + [0.2] * 9 + [0.4])
    _continuous(tmp_path, "s1", 1, [0.0, 0.0] + [0.4] * 9 + [0.8])
    text = report([tmp_path])
    assert ("| FedAvg | 2 | 0.505 +- 0.007 | 0.600 +- 0.283 | 0.330 +- 0.156 |") in text
    # targeted attacks in chosen rounds get no such table
    _run(tmp_path / "t", "a0", 0, [0.1, 0.9, 0.8])
    assert "mean of the last" not in report([tmp_path / "t"])


def test_report_no_plots_with_out_writes_report_md_only(tmp_path: Path, capsys) -> None:
    from immunefl.cli import main

    runs = tmp_path / "runs"
    _run(runs, "a0", 0, [0.1, 0.9, 0.8, 0.6, 0.4, 0.3])
    out = tmp_path / "out"
    assert main(["report", str(runs), "--no-plots", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == capsys.readouterr().out
    assert not list(out.glob("*.png"))


def test_together_reports_a_control_beside_the_runs_it_controls(tmp_path: Path) -> None:
    """``immunefl report --together``: FL-WBC's runs and the dense-noise control (issue 32),
    kept in two directories, in one regime table with a label each."""
    official, dense = tmp_path / "map", tmp_path / "dense"
    for seed in (0, 1):
        _regime_run(official, "wbc", 10, 10, 600, seed, [0.1, 1.0, 0.3, 0.1, 0.1, 0.1])
        _regime_run(dense, "wbc", 10, 10, 600, seed, [0.1, 1.0, 0.9, 0.2, 0.1, 0.1],
                    **{"wbc-variant": "dense", "wbc-noise-param": "scale"})  # fmt: skip
        _regime_run(official, "wbc", 1, 32, 19, seed, [0.1, 1.0, 0.9, 0.9, 0.8, 0.8])
    apart = report([official, dense], plots=False)
    assert apart.count("| local steps |") == 1  # the dense runs alone have one step count
    text = report([official, dense], tmp_path / "out", plots=True, together=True)
    assert text.startswith("## map+dense")
    assert "| FL-WBC s=0.4 | 600 | 2 | 1.000 +- 0.000 (1, 1) |" in text
    label = "dense Laplace noise s=0.4 (no null-space test)"
    assert f"| {label} | 600 | 2 | 2.000 +- 0.000 (2, 2) |" in text
    assert (tmp_path / "out" / "map+dense-regime.png").is_file()
    with pytest.raises(FileNotFoundError, match="no runs .* under .*typo"):
        report([official, tmp_path / "typo"], together=True)  # never just left out
    twice = report([official, official / "..", official], plots=False, together=True)
    assert "| FL-WBC s=0.4 | 600 | 2 |" in twice  # a root given twice counts once


def test_runs_that_differ_in_the_attacks_modifiers_are_not_merged_as_seeds(tmp_path: Path) -> None:
    from immunefl.plots import group_runs
    from immunefl.report import load_runs

    for budget in ("union", "one-client"):
        for seed in (0, 1):
            _regime_run(tmp_path / budget, "none", 1, 32, 19, seed, [0.1, 1.0, 0.5],
                        **{"attack-collude": True, "collude-budget": budget})  # fmt: skip
    groups = group_runs(load_runs([tmp_path]))
    assert sorted(len(m) for m in groups.values()) == [2, 2]
    assert any("collude-budget=one-client" in label for label in groups)


def test_a_collusion_budget_is_named_only_where_attackers_collude(tmp_path: Path) -> None:
    from immunefl.plots import group_runs
    from immunefl.report import load_runs

    for seed in (0, 1):
        _regime_run(tmp_path / "plain", "none", 1, 32, 19, seed, [0.1, 1.0, 0.5],
                    **{"attack-collude": False, "collude-budget": "union"})  # fmt: skip
        _regime_run(tmp_path / "collude", "none", 1, 32, 19, seed, [0.1, 1.0, 0.5],
                    **{"attack-collude": True, "collude-budget": "one-client"})  # fmt: skip
    groups = group_runs(load_runs([tmp_path]))
    assert sorted(len(m) for m in groups.values()) == [2, 2]
    plain = [label for label in groups if "attack-collude=False" in label]
    assert len(plain) == 1 and "collude-budget" not in plain[0]
    assert any("attack-collude=True, collude-budget=one-client" in label for label in groups)
