"""Heatmaps of an attack x defense matrix (PNG + SVG): defenses x attacks for final accuracy
and the attack metric, and, with extra axes, the worst case over the attacks as defense x axis
value (as ByzFL draws f x heterogeneity). Failed and undelivered cells are grey and labelled."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from immunefl.matrix_report import Cell, mean_sd  # noqa: E402


def _grid(rows: list[str], cols: list[str], value, label, title: str, path: Path, cmap: str):  # noqa: ANN001
    data = np.full((len(rows), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in rows]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            data[i, j], text[i][j] = value(r, c), label(r, c)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.0 + 0.55 * len(rows)))
    masked = np.ma.masked_invalid(data)
    cm = plt.get_cmap(cmap).copy()
    cm.set_bad("#cccccc")
    im = ax.imshow(masked, cmap=cm, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            r, g, b, _ = cm(float(data[i, j])) if not np.isnan(data[i, j]) else (0.8, 0.8, 0.8, 1)
            ink = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8, color=ink)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    written = []
    for ext in ("png", "svg"):
        out = path.with_suffix(f".{ext}")
        fig.savefig(out, dpi=130)
        written.append(out)
    plt.close(fig)
    return written[0]


def _label(c: Cell | None, values: list[float]) -> str:
    if c is None:
        return ""
    if c.state != "ok":
        return c.state
    if not values:
        return "-"
    m, sd = mean_sd(values)
    return f"{m:.2f}\n±{sd:.2f}" if len(values) > 1 else f"{m:.2f}"


def heatmaps(cells: list[Cell], out_dir: Path) -> list[tuple[str, Path]]:
    """Write the heatmaps; return (kind, PNG path) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    base = [c for c in cells if c.axes == cells[0].axes]  # the first axis values' plane
    defenses = list(dict.fromkeys(c.defense for c in base))
    attacks = list(dict.fromkeys(c.attack for c in base))
    find = {(c.defense, c.attack): c for c in base}

    def value(pick):  # noqa: ANN001
        def f(d: str, a: str) -> float:
            c = find.get((d, a))
            vals = pick(c) if c is not None and c.state == "ok" else []
            return mean_sd(vals)[0] if vals else math.nan

        return f

    def label(pick):  # noqa: ANN001
        return lambda d, a: _label(find.get((d, a)), pick(find[(d, a)]) if (d, a) in find else [])

    for kind, pick, title, cmap in (
        ("accuracy", lambda c: c.acc, "final benign accuracy", "viridis"),
        ("attack-end", lambda c: c.attack_end, "attack metric at the end (ASR / mis_conf)",
         "magma_r"),
        ("attack-max", lambda c: c.attack_max, "attack metric at its maximum", "magma_r"),
    ):  # fmt: skip
        if kind != "accuracy" and not any(pick(c) for c in base):
            continue
        png = _grid(defenses, attacks, value(pick), label(pick), title,
                    out_dir / f"matrix-{kind}", cmap)  # fmt: skip
        written.append((kind, png))
    axis_keys = [k for k, _ in cells[0].axes]
    for key in axis_keys:
        values = list(dict.fromkeys(dict(c.axes)[key] for c in cells))

        def worst(d: str, v: str, key: str = key) -> float:
            accs = [mean_sd(c.acc)[0] for c in cells if c.defense == d and c.attack != "none"
                    and str(dict(c.axes)[key]) == v and c.state == "ok" and c.acc]  # fmt: skip
            return min(accs) if accs else math.nan

        cols = [str(v) for v in values]
        png = _grid(defenses, cols, worst,
                    lambda d, v, w=worst: "" if math.isnan(w(d, v)) else f"{w(d, v):.2f}",
                    f"worst-case accuracy over the attacks, by {key}",
                    out_dir / f"matrix-worst-by-{key}", "viridis")  # fmt: skip
        written.append((f"worst-by-{key}", png))
    return written
