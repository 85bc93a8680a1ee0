"""Reports of results directories (``immunefl report DIR ... [--out DIR]``).

Finds every run (a directory with ``summary.json``) under each given directory (one experiment,
e.g. one sweep) and writes, per experiment, the figures of `immunefl.plots` (PNG + SVG) and a
Markdown report: one row per group of runs that differ only in ``seed`` (mean and spread of
benign accuracy, the attack metric after its first adversarial round, each seed's attack
mitigation rounds), then one row per run. Experiments under a continuous attack (every round
adversarial, e.g. a backdoor's ASR) get one more table per group: final accuracy, the attack
metric in the last round and its mean over the last `LAST_ROUNDS` rounds, each mean +- sd over
the seeds (one round's ASR swings with how many attackers were sampled).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from immunefl.plots import (
    defense_label,
    delivery_note,
    group_runs,
    local_steps,
    mitigation_number,
)


def load_runs(roots: Iterable[Path]) -> list[dict[str, Any]]:
    runs = []
    for root in roots:
        for summary_path in sorted(Path(root).rglob("summary.json")):
            run_dir = summary_path.parent
            rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
            runs.append({
                "dir": run_dir,
                "config": json.loads((run_dir / "config.json").read_text()),
                "summary": json.loads(summary_path.read_text()),
                "rows": rows,
            })  # fmt: skip
    return runs


def _metric(run: dict[str, Any]) -> str | None:
    return next((k for k in ("mis_conf", "asr") if k in run["rows"][0]), None)


def _after(run: dict[str, Any], offset: int) -> float | None:
    metric, adv = _metric(run), run["summary"].get("adversarial_rounds") or []
    if metric is None or not adv:
        return None
    by_round = {r["round"]: r[metric] for r in run["rows"]}
    return by_round.get(adv[0] + offset)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def run_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| run | defense | partitioning | seed | final acc | metric @adv | @adv+1 | @adv+3 "
             "| @end | mitigation rounds |", "|" + " --- |" * 10]  # fmt: skip
    for run in runs:
        c, s = run["config"], run["summary"]
        mit = s.get("mitigation_rounds") or {}
        lines.append(
            f"| {c['run-name']}{delivery_note([run])} | {defense_label(c)} | {c['partitioning']} "
            f"| {c['seed']} "
            f"| {_fmt(s['final_benign_acc'])} | {_fmt(_after(run, 0))} | {_fmt(_after(run, 1))} "
            f"| {_fmt(_after(run, 3))} | {_fmt(run['rows'][-1].get(_metric(run) or '', None))} "
            f"| {', '.join(f'{k}: {v}' for k, v in mit.items()) or '-'} |"
        )
    return "\n".join(lines)


def group_table(runs: list[dict[str, Any]]) -> str:
    groups = group_runs(runs)  # the same groups (and labels) as the figures
    lines = ["| defense | partitioning | seeds | final acc (mean +- sd) | metric | @adv+3 (mean) "
             "| @end (mean) | mitigation rounds per seed |", "|" + " --- |" * 8]  # fmt: skip
    for label, members in groups.items():
        c = members[0]["config"]
        accs = [m["summary"]["final_benign_acc"] for m in members]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        after = [x for x in (_after(m, 3) for m in members) if x is not None]
        metric = _metric(members[0])
        end = [m["rows"][-1][metric] for m in members if metric and metric in m["rows"][-1]]
        mits = [next(iter((m["summary"].get("mitigation_rounds") or {"-": "-"}).values()))
                for m in sorted(members, key=lambda m: m["config"]["seed"])]  # fmt: skip
        lines.append(
            f"| {label} | {c['partitioning']} | {len(members)} "
            f"| {statistics.mean(accs):.3f} +- {sd:.3f} "
            f"| {metric or '-'} | {_fmt(statistics.mean(after)) if after else '-'} "
            f"| {_fmt(statistics.mean(end)) if end else '-'} "
            f"| {', '.join(str(x) for x in mits)} |"
        )
    return "\n".join(lines)


LAST_ROUNDS = 10


def _mean_sd(xs: list[float]) -> str:
    """``mean +- sd`` (sample sd over seeds; 0 for one seed).

    >>> _mean_sd([0.5, 0.7])
    '0.600 +- 0.141'
    """
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} +- {sd:.3f}"


def continuous_table(runs: list[dict[str, Any]]) -> str:
    """Per group: final accuracy, the attack metric at the end and averaged over the last
    `LAST_ROUNDS` rounds, each mean +- sd over seeds ("" without an attack metric)."""
    metric = next((m for m in (_metric(r) for r in runs) if m), None)
    if metric is None:
        return ""
    lines = [f"| defense | seeds | final acc (mean +- sd) | {metric} @end (mean +- sd) "
             f"| {metric}, mean of the last {LAST_ROUNDS} rounds (mean +- sd) |",
             "|" + " --- |" * 5]  # fmt: skip
    for label, members in group_runs(runs).items():
        accs = [m["summary"]["final_benign_acc"] for m in members]
        ends = [float(m["rows"][-1][metric]) for m in members if metric in m["rows"][-1]]
        tails = [m["rows"][-LAST_ROUNDS:] for m in members]
        lasts = [statistics.mean(float(r[metric]) for r in t) for t in tails
                 if all(metric in r for r in t)]  # fmt: skip
        lines.append(
            f"| {label}{delivery_note(members)} | {len(members)} | {_mean_sd(accs)} "
            f"| {_mean_sd(ends) if ends else '-'} | {_mean_sd(lasts) if lasts else '-'} |"
        )
    return "\n".join(lines)


def _mitigation_cell(members: list[dict[str, Any]]) -> str:
    """Mean +- sd of the first attack's mitigation rounds over seeds, a never-mitigated run
    (``>N``) counted as N + 1, then each seed's value.

    >>> _mitigation_cell([{"summary": {"mitigation_rounds": {"5": 2}}, "config": {"seed": 0}},
    ...                   {"summary": {"mitigation_rounds": {"5": ">10"}}, "config": {"seed": 1}}])
    '6.500 +- 6.364 (2, >10)'
    """
    raw = [next(iter((m["summary"].get("mitigation_rounds") or {}).values()), None)
           for m in sorted(members, key=lambda m: m["config"]["seed"])]  # fmt: skip
    if None in raw:
        return "-"
    nums = [mitigation_number(v) for v in raw]
    return f"{_mean_sd(nums)} ({', '.join(str(v) for v in raw)})"


def regime_table(runs: list[dict[str, Any]]) -> str:
    """The regime map as a table: per defense and local SGD steps per round, the first attack's
    mitigation rounds and the attack metric at the attack and 1/3/5 rounds after it, and the
    final benign accuracy, each mean +- sd over the seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        key = (defense_label(run["config"]), round(local_steps(run)))
        groups.setdefault(key, []).append(run)
    lines = ["| defense | local steps | seeds | mitigation rounds (per seed) | metric @adv "
             "| @adv+1 | @adv+3 | @adv+5 | final acc |", "|" + " --- |" * 9]  # fmt: skip
    for (label, steps), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for offset in (0, 1, 3, 5):
            vals = [_after(m, offset) for m in members]
            cells.append(_mean_sd([v for v in vals if v is not None]) if None not in vals else "-")
        accs = [m["summary"]["final_benign_acc"] for m in members]
        lines.append(
            f"| {label}{delivery_note(members)} | {steps} | {len(members)} "
            f"| {_mitigation_cell(members)} | {' | '.join(cells)} | {_mean_sd(accs)} |"
        )
    return "\n".join(lines)


def aep_table(runs: list[dict[str, Any]]) -> str:
    """AEP ``||W_t(S) - W_t(S minus M)||`` (FL-WBC Def. 1; runs with ``track-aep``) per group:
    at the first attack, 1/3/5 rounds after it and at the end, mean +- sd over seeds, and the
    end's share of the value at the attack (FL-WBC's claim: it decays with the defense)."""
    lines = ["| defense | seeds | AEP @adv | @adv+1 | @adv+3 | @adv+5 | @end | end / adv |",
             "|" + " --- |" * 8]  # fmt: skip
    for label, members in group_runs(runs).items():
        cols: list[list[float]] = [[], [], [], [], []]
        for m in members:
            adv = (m["summary"].get("adversarial_rounds") or [None])[0]
            by_round = {r["round"]: r["aep_norm"] for r in m["rows"]}
            last = m["rows"][-1]["round"]
            for i, rnd in enumerate((adv, adv + 1, adv + 3, adv + 5, last) if adv else ()):
                if rnd in by_round:
                    cols[i].append(float(by_round[rnd]))
        cells = [_mean_sd(c) if len(c) == len(members) else "-" for c in cols]
        ratio = ([e / a for a, e in zip(cols[0], cols[4], strict=True) if a > 0]
                 if len(cols[0]) == len(cols[4]) == len(members) else [])  # fmt: skip
        lines.append(f"| {label} | {len(members)} | {' | '.join(cells)} "
                     f"| {_mean_sd(ratio) if ratio else '-'} |")  # fmt: skip
    return "\n".join(lines)


def _experiment_name(root: Path) -> str:
    return Path(root).resolve().name


def _description(root: Path) -> str:
    """The sweep's YAML ``description`` when the sweep recorded its config file."""
    sweep = Path(root) / "sweep.json"
    if not sweep.exists():
        return ""
    try:
        import yaml

        path = Path(json.loads(sweep.read_text())["config"])
        return str((yaml.safe_load(path.read_text()) or {}).get("description", "")).strip()
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def experiment_report(root: Path | Sequence[Path], out_dir: Path | None) -> str:
    """Markdown (and, with `out_dir`, figures) for the runs under `root`; a sequence of roots
    is reported as one experiment (a control beside the runs it controls), named after them."""
    roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
    for r in roots:  # each root holds runs: a mistyped one is an error, never just left out
        if not any(Path(r).rglob("summary.json")):
            raise FileNotFoundError(f"no runs (directories with summary.json) under {r}")
    runs, seen = [], set()
    for run in load_runs(roots):  # a root given twice, or inside another, counts once
        key = Path(run["dir"]).resolve()
        if key not in seen:
            seen.add(key)
            runs.append(run)
    name = "+".join(_experiment_name(r) for r in roots)
    parts = [f"## {name}", ""]
    for desc in filter(None, (_description(r) for r in roots)):
        parts += [desc, ""]
    if out_dir is not None:
        for kind, png in write_figures(runs, name, Path(out_dir)):
            parts += [f"![{kind}]({png.name})", ""]
    if all(r["config"].get("attack-mode") == "continuous" for r in runs):
        parts += [continuous_table(runs), ""]
    if len({(r["config"]["local-epochs"], r["config"]["batch-size"]) for r in runs}) > 1:
        try:
            parts += [regime_table(runs), ""]
        except ValueError as e:  # a run without client.steps: say so, draw the rest
            parts += [f"(no regime table: {e})", ""]
    if all("aep_norm" in r["rows"][0] for r in runs):
        parts += [aep_table(runs), ""]
    parts += [group_table(runs), "", run_table(runs), ""]
    return "\n".join(parts)


def write_figures(runs: list[dict[str, Any]], name: str, out_dir: Path) -> list[tuple[str, Path]]:
    """The figures of `runs` (PNG + SVG) in `out_dir`: attack metric per round with adversarial
    rounds marked (when an attack ran), accuracy, trade-off; returns (kind, PNG path)."""
    from immunefl import plots

    figures = [("accuracy", plots.accuracy_figure)]
    if plots.attack_metric(runs):
        figures.insert(0, ("attack", plots.attack_figure))
        figures.append(("tradeoff", plots.tradeoff_figure))
    if runs and all("aep_norm" in r["rows"][0] for r in runs):
        figures.append(("aep", plots.aep_figure))
    if len({(r["config"]["local-epochs"], r["config"]["batch-size"]) for r in runs}) > 1:
        figures.append(("regime", plots.regime_figure))
    written = []
    for kind, make in figures:
        try:
            fig, _ = make(runs, title=f"{name}: {kind}")
        except ValueError:  # e.g. no mitigation rounds to plot (backdoor runs)
            continue
        png, _svg = plots.save(fig, out_dir, f"{name}-{kind}")
        written.append((kind, png))
    return written


def report(
    roots: Iterable[Path], out_dir: Path | None = None, plots: bool = True, together: bool = False
) -> str:
    """The report of every experiment in `roots` (with `together`, of all of them as one);
    report.md (and, with `plots`, the figures) go to `out_dir`."""
    roots = [Path(r) for r in roots]
    if any((r / "matrix.json").exists() for r in roots):  # an attack x defense matrix
        if together:
            raise ValueError("--together compares runs; a matrix directory has its own report")
        from immunefl.matrix_report import matrix_report

        return "\n".join(matrix_report(r, out_dir, plots) for r in roots)
    figures = out_dir if plots else None
    if together:
        text = experiment_report(roots, figures)
    else:
        text = "\n".join(experiment_report(r, figures) for r in roots)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "report.md").write_text(text)
    return text
