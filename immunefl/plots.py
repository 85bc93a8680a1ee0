"""Figures of finished runs (``immunefl report``), in the style of the papers' figures.

- `attack_figure`: misclassification confidence (targeted) or attack success rate (backdoor)
  per round, one curve per defense (mean over seeds), adversarial rounds marked with black
  circles as in FL-WBC Fig. 2/3/6;
- `tradeoff_figure`: benign accuracy vs attack mitigation rounds, one point per defense and
  parameter (FL-WBC Fig. 4/5); a run whose attack was never mitigated is drawn at N+1 with an
  open marker and labelled ``>N``;
- `accuracy_figure`: benign accuracy per round.

Every figure function returns the Matplotlib figure and the data it drew (``{label: ...}``), so
tests check the series behind a figure rather than pixels.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after selecting the backend
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402

Run = dict[str, Any]
# keys that identify a curve besides the defense; shown in labels only when they vary
CONTEXT_KEYS = ("dataset", "partitioning", "malicious-per-round", "poison-samples", "attack",
                "local-epochs", "batch-size", "attack-collude", "collude-budget",
                "attack-adaptive", "wbc-variant")  # fmt: skip


def defense_label(config: dict[str, Any]) -> str:
    """A short name of the run's defense: server rule and its parameter + client defense."""
    s = str(config["strategy"])
    param = {
        "trimmed-mean": ("beta", "trim-beta"), "invariant": ("tau", "invariant-tau"),
        "cdp": ("z", "cdp-noise-multiplier"), "rlr": ("theta", "rlr-theta"),
        "krum": ("f", "krum-f"), "multikrum": ("f", "krum-f"), "bulyan": ("f", "krum-f"),
        "dp-fixed": ("z", "dp-noise-multiplier"),
    }.get(s)  # fmt: skip
    label = {"median": "CMA (median)", "trimmed-mean": "CTMA", "fedavg": "FedAvg",
             "cdp": "CDP"}.get(s, s)  # fmt: skip
    if param:
        label += f" {param[0]}={config[param[1]]}"
    if s == "invariant":
        label += f" alpha={config['invariant-alpha']}"
    elif s == "multikrum":
        label += f" m={config['multikrum-m']}"
    if config["client-defense"] == "wbc" and float(config["wbc-s"]) == 0.0:
        label += " (FL-WBC s=0: no noise)"  # the regime map's FedAvg: the same local SGD
    elif config["client-defense"] == "wbc" and config.get("wbc-variant") == "dense":
        noise = f"dense Laplace noise s={config['wbc-s']} (no null-space test)"
        label = ("" if s == "fedavg" else label + " + ") + noise
    elif config["client-defense"] == "wbc":
        label = ("" if s == "fedavg" else label + " + ") + f"FL-WBC s={config['wbc-s']}"
    elif config["client-defense"] == "ldp":
        label = ("" if s == "fedavg" else label + " + ") + f"LDP z={config['ldp-noise-multiplier']}"
    return label


def applies(key: str, config: dict[str, Any]) -> bool:
    """Whether a context key means anything for this run (a collusion budget without
    collusion does not; a label would otherwise name a setting the run never used)."""
    if key == "collude-budget":
        return bool(config.get("attack-collude"))
    if key == "wbc-variant":
        return config.get("client-defense") == "wbc"
    return True


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs that differ only in ``seed``, keyed by a label (defense + varying context)."""
    varying = [k for k in CONTEXT_KEYS if len({str(r["config"].get(k)) for r in runs}) > 1]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        c = run["config"]
        shown = [k for k in varying if applies(k, c)]
        extra = ", ".join(f"{k}={c.get(k)}" for k in shown)
        groups.setdefault(defense_label(c) + (f" [{extra}]" if extra else ""), []).append(run)
    return {label + delivery_note(members): members for label, members in groups.items()}


def undelivered(run: Run) -> list[int]:
    """Adversarial rounds of `run` in which no malicious update reached the rule."""
    return list(run["summary"].get("attack_not_delivered_rounds") or [])


def delivery_note(runs: Sequence[Run]) -> str:
    """`` (attack not delivered ...)`` when some adversarial round of some run delivered no
    malicious update: such a curve or row measures no defense there."""
    missed = [r for r in runs if undelivered(r)]
    if not missed:
        return ""
    if len(runs) == 1:
        return f" (attack not delivered in rounds {undelivered(missed[0])})"
    return f" (attack not delivered in {len(missed)}/{len(runs)} runs)"


def attack_metric(runs: Sequence[Run]) -> str | None:
    """``mis_conf`` (targeted) or ``asr`` (backdoor), whichever the runs recorded."""
    for key in ("mis_conf", "asr"):
        if runs and all(key in r["rows"][0] for r in runs):
            return key
    return None


def mean_curve(runs: Sequence[Run], key: str) -> tuple[list[int], list[float]]:
    """Per-round mean of `key` over runs (rounds every run has)."""
    per_round: dict[int, list[float]] = {}
    for run in runs:
        for row in run["rows"]:
            if row.get(key) is not None:
                per_round.setdefault(row["round"], []).append(float(row[key]))
    rounds = sorted(r for r, v in per_round.items() if len(v) == len(runs))
    return rounds, [statistics.fmean(per_round[r]) for r in rounds]


LINESTYLES = ("-", "--", "-.", ":")


def curve_styles(curves: dict[str, tuple[list[int], list[float]]]) -> dict[str, dict[str, Any]]:
    """A distinct (colour, line style) per curve, and legend labels that say when a curve
    coincides with an earlier one (identical values: it would hide under it)."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[tuple[int, ...], tuple[float, ...]], str] = {}
    for i, (label, (rounds, values)) in enumerate(curves.items()):
        key = (tuple(rounds), tuple(round(v, 6) for v in values))
        twin = seen.setdefault(key, label)
        styles[label] = {
            "color": colors[i % len(colors)],
            "linestyle": LINESTYLES[(i // len(colors) + i) % len(LINESTYLES)],
            "label": label if twin == label else f"{label} (= {twin})",
        }
    return styles


def _adversarial(runs: Sequence[Run]) -> list[int]:
    return sorted({r["round"] for run in runs for r in run["rows"] if r.get("adversarial")})


def attack_figure(runs: Sequence[Run], title: str = "") -> tuple[Any, dict[str, Any]]:
    """Attack metric vs round per defense, adversarial rounds as black circles (FL-WBC Fig. 3)."""
    metric = attack_metric(runs)
    if metric is None:
        raise ValueError("the runs recorded no attack metric (mis_conf or asr)")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    data: dict[str, Any] = {"metric": metric, "curves": {}, "adversarial": {}}
    groups = group_runs(runs)
    curves = {label: mean_curve(members, metric) for label, members in groups.items()}
    styles = curve_styles(curves)
    for label, members in groups.items():
        rounds, values = curves[label]
        ax.plot(rounds, values, linewidth=1.8, **styles[label])
        data["curves"][label] = (rounds, values)
        adv = [r for r in _adversarial(members) if r in rounds]
        ys = [values[rounds.index(r)] for r in adv]
        ax.plot(adv, ys, "o", markersize=7, markerfacecolor="none", markeredgecolor="black",
                markeredgewidth=1.5, label="_nolegend_")  # fmt: skip
        data["adversarial"][label] = adv
    threshold = runs[0]["summary"].get("mitigation_threshold")
    if metric == "mis_conf" and threshold is not None:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
        ax.text(ax.get_xlim()[0], threshold, " mitigated below", va="bottom", color="grey",
                fontsize=8)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("communication round")
    ax.set_ylabel("misclassification confidence" if metric == "mis_conf" else
                  "attack success rate")  # fmt: skip
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "Attack effect per round (black circles: adversarial rounds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig, data


def mitigation_number(value: int | str) -> int:
    """One attack's mitigation rounds as a number: ``">N"`` (never mitigated) counts as N + 1.

    >>> mitigation_number(3), mitigation_number(">10")
    (3, 11)
    """
    if isinstance(value, str) and value.startswith(">"):
        return int(value[1:]) + 1
    return int(value)


def _mitigation(run: Run) -> tuple[float | None, bool]:
    """Mean attack mitigation rounds of one run and whether any attack was never mitigated."""
    values = list((run["summary"].get("mitigation_rounds") or {}).values())
    if not values:
        return None, False
    censored = any(isinstance(v, str) and v.startswith(">") for v in values)
    return statistics.fmean(mitigation_number(v) for v in values), censored


def tradeoff_figure(runs: Sequence[Run], title: str = "") -> tuple[Any, dict[str, Any]]:
    """Benign accuracy vs attack mitigation rounds, one point per defense (FL-WBC Fig. 4/5)."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    data: dict[str, Any] = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, members) in enumerate(group_runs(runs).items()):
        color = colors[i % len(colors)]
        mits = [_mitigation(m) for m in members]
        if any(x is None for x, _ in mits):
            continue
        x = statistics.fmean(x for x, _ in mits if x is not None)
        censored = any(c for _, c in mits)
        y = statistics.fmean(float(m["summary"]["final_benign_acc"]) for m in members)
        family = label.split()[0]
        marker = {"FL-WBC": "o", "CDP": "s", "LDP": "^"}.get(family, "D")
        every = all(c for _, c in mits)
        rounds = f">{x - 1:g}" if every else f"{x:g}{'+' if censored else ''}"
        shown = f"{label} ({rounds} rounds, acc {y:.3f})"
        ax.scatter([x], [y], marker=marker, s=60, label=shown, edgecolors=color, linewidths=1.5,
                   facecolors="none" if censored else color)  # fmt: skip
        data[label] = {"mitigation_rounds": x, "censored": censored, "benign_acc": y}
    if not data:
        plt.close(fig)
        raise ValueError("no run has attack mitigation rounds (targeted attack, rounds mode)")
    xs = [d["mitigation_rounds"] for d in data.values()]
    ys = [d["benign_acc"] for d in data.values()]
    ax.set_xlim(0, max(xs) + 1.5)
    ax.set_ylim(max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("attack mitigation rounds (open marker: not mitigated by the end, drawn at N+1)")
    ax.set_ylabel("benign accuracy (final round)")
    ax.set_title(title or "Utility vs robustness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig, data


def _per_round_figure(
    runs: Sequence[Run], key: str, ylabel: str, title: str, legend: str
) -> tuple[Any, dict[str, Any]]:
    """`key` per round, one curve per defense (mean over seeds), adversarial rounds shaded."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    data = {label: mean_curve(members, key) for label, members in group_runs(runs).items()}
    styles = curve_styles(data)
    for label, (rounds, values) in data.items():
        ax.plot(rounds, values, linewidth=1.5, **styles[label])
    for r in _adversarial(runs):
        ax.axvline(r, color="black", alpha=0.15, linewidth=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("communication round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend)
    fig.tight_layout()
    return fig, data


def accuracy_figure(runs: Sequence[Run], title: str = "") -> tuple[Any, dict[str, Any]]:
    """Benign accuracy per round per defense (mean over seeds)."""
    return _per_round_figure(runs, "benign_acc", "benign accuracy",
                             title or "Benign accuracy (shaded: adversarial rounds)",
                             "lower right")  # fmt: skip


def aep_figure(runs: Sequence[Run], title: str = "") -> tuple[Any, dict[str, Any]]:
    """AEP per round, ``||W_t(S) - W_t(S minus M)||`` (FL-WBC Def. 1; runs with ``track-aep``),
    one curve per defense (mean over seeds), adversarial rounds shaded: FL-WBC's claim is that
    it makes this decay after an attack where FedAvg keeps it."""
    if not runs or not all("aep_norm" in r["rows"][0] for r in runs):
        raise ValueError("the runs did not track AEP (track-aep=true)")
    return _per_round_figure(runs, "aep_norm", "AEP  ||W(S) - W(S without M)||",
                             title or "Attack effect on parameters (shaded: adversarial rounds)",
                             "best")  # fmt: skip


def local_steps(run: Run) -> float:
    """Local SGD steps per round of the run's benign clients (``client.steps``, mean)."""
    steps = [r["client.steps"] for r in run["rows"] if r.get("client.steps") is not None]
    if not steps:
        raise ValueError(f"{run['config']['run-name']}: no client.steps recorded")
    return statistics.fmean(steps)


def _metric_after(run: Run, offset: int) -> float | None:
    adv = run["summary"].get("adversarial_rounds") or []
    by_round = {r["round"]: r.get("mis_conf") for r in run["rows"]}
    return by_round.get(adv[0] + offset) if adv else None


def regime_figure(runs: Sequence[Run], title: str = "") -> tuple[Any, dict[str, Any]]:
    """The regime map: attack mitigation rounds and mis_conf 1/3/5 rounds after the attack vs
    local SGD steps per round, one curve per defense; mitigation rounds are mean +- sample sd
    over seeds (a never-mitigated run counts N + 1), mis_conf the mean over seeds."""
    by_defense: dict[str, dict[float, list[Run]]] = {}
    for run in runs:
        steps = round(local_steps(run))
        by_defense.setdefault(defense_label(run["config"]), {}).setdefault(steps, []).append(run)
    if not by_defense or all(len(v) < 2 for v in by_defense.values()):
        raise ValueError("a regime map needs runs at two or more local step counts")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = curve_styles({k: ([0], [float(i)]) for i, k in enumerate(by_defense)})
    data: dict[str, Any] = {}
    for label, points in by_defense.items():
        xs = sorted(points)
        mit = {x: [_mitigation(m)[0] for m in points[x]] for x in xs}
        mx = [x for x in xs if None not in mit[x]]  # step counts where every run has a value
        mean = [statistics.fmean(mit[x]) for x in mx]
        sd = [statistics.stdev(mit[x]) if len(mit[x]) > 1 else 0.0 for x in mx]  # sample sd
        st = styles[label]
        left.errorbar(mx, mean, yerr=sd, marker="o", capsize=3, label=label,
                      color=st["color"], linestyle=st["linestyle"])  # fmt: skip
        entry = {"steps": xs, "mitigation_steps": mx, "mitigation": mean, "mitigation_sd": sd}
        for offset, marker in ((1, "o"), (3, "s"), (5, "^")):
            vals = [[_metric_after(m, offset) for m in points[x]] for x in xs]
            ys = [statistics.fmean(v) if None not in v else float("nan") for v in vals]
            right.plot(xs, ys, marker=marker, color=st["color"], linestyle=st["linestyle"],
                       label=f"{label}, +{offset}")  # fmt: skip
            entry[f"mis_conf+{offset}"] = ys
        data[label] = entry
    all_steps = sorted({x for points in by_defense.values() for x in points})
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(all_steps, [str(x) for x in all_steps])  # the measured step counts
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("local SGD steps per round (E x |D_k| / B)")
        ax.grid(alpha=0.3)
    left.set_ylabel("attack mitigation rounds (> N drawn at N + 1)")
    right.set_ylabel("misclassification confidence after the attack")
    right.set_ylim(-0.02, 1.02)
    left.legend(fontsize=8)
    right.legend(fontsize=7, ncol=2)
    fig.suptitle(title or "Where FL-WBC works: the local-training regime")
    fig.tight_layout()
    return fig, data


def save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Write `fig` as PNG and SVG; close it; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
