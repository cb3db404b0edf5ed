"""Plots researchers would rather look at than tables (matplotlib, Agg backend, PNG files). Every rate is drawn with
its 95 % interval and the n behind it; titles are wrapped to the figure's width (`clipped_texts` finds any text that
still falls outside it)."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def save(fig: plt.Figure, path: str | os.PathLike, suptitle: str = "") -> Path:
    """Lay out, write as PNG and close a figure (every plot of the lab ends here)."""
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def wrap(title: str, fig: plt.Figure, fontsize: float = 12) -> str:
    """`title` broken into lines that fit the figure's width (≈ 0.62 em per character, a margin included)."""
    return textwrap.fill(title, max(20, int(fig.get_figwidth() * 72 / (0.62 * fontsize))))


def clipped_texts(fig: plt.Figure) -> list[str]:
    """The visible texts of a laid-out figure that reach outside it (cut off in the PNG)."""
    fig.canvas.draw()
    box, r = fig.bbox, fig.canvas.get_renderer()
    return [
        t.get_text()
        for t in fig.findobj(plt.Text)
        if t.get_visible() and t.get_text().strip()
        for e in [t.get_window_extent(r)]
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1
    ]


def annotate_rate(ax: plt.Axes, j: int, i: int, r: pd.Series, m: str, fontsize: float = 7) -> None:
    """Write `rate [lo,hi]` and its n into heatmap cell (row i, column j)."""
    n = f"\nn={int(r['n_' + m])}" if pd.notna(r.get("n_" + m)) else ""
    ax.text(
        j,
        i,
        f"{r[m]:.2f}\n[{r[m + '_lo']:.2f},{r[m + '_hi']:.2f}]{n}",
        ha="center",
        va="center",
        fontsize=fontsize,
        color="white" if r[m] < 0.6 else "black",
    )


STRENGTH_UNITS = {
    "relative": "strength, relative: ‖s·v‖ / ‖resid‖",
    "raw": "strength, raw: multiplier s of v",
}


def strength_label(mode: str | None) -> str:
    """The strength axis with its unit (`strength_mode` of the trials; several or none: no unit to name)."""
    return STRENGTH_UNITS.get(mode or "", "strength")


def rate_heatmaps(
    table: pd.DataFrame,
    path: str | os.PathLike,
    metrics: Sequence[str] = ("tpr", "fpr"),
    title: str = "",
    strength_mode: str | None = None,
) -> Path:
    """One heatmap per metric over layer × strength, each cell annotated with the rate and its 95 % interval."""
    fig, suptitle = heatmaps_figure(table, metrics, title, strength_mode)
    return save(fig, path, suptitle)


def heatmaps_figure(
    table: pd.DataFrame, metrics: Sequence[str], title: str = "", strength_mode: str | None = None
) -> tuple[plt.Figure, str]:
    """The figure `rate_heatmaps` saves, and its wrapped title."""
    layers = sorted(table["layer"].unique())
    strengths = sorted(table["strength"].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1, 0.8 * len(layers) + 2.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        grid = np.full((len(layers), len(strengths)), np.nan)
        for _, r in table.iterrows():
            grid[layers.index(r["layer"]), strengths.index(r["strength"])] = r[m]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for _, r in table.iterrows():
            i, j = layers.index(r["layer"]), strengths.index(r["strength"])
            if not np.isnan(r[m]):
                annotate_rate(ax, j, i, r, m)
        ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
        ax.set_yticks(range(len(layers)), [str(x) for x in layers])
        ax.set_xlabel(strength_label(strength_mode), fontsize=8)
        ax.set_ylabel("layer (0-based block)")
        ax.set_title(m.upper())
        fig.colorbar(im, ax=ax, fraction=0.046).set_label("share of trials", fontsize=8)
    return fig, wrap(title, fig)


def rate_bars(
    table: pd.DataFrame, label: str, path: str | os.PathLike, metrics: Sequence[str] = ("tpr", "fpr"), title: str = ""
) -> Path:
    """Grouped bars with 95 % interval whiskers and the n behind each, one group per row of `table[label]`."""
    return save(bars_figure(table, label, metrics, title), path)


def bars_figure(table: pd.DataFrame, label: str, metrics: Sequence[str], title: str = "") -> plt.Figure:
    x = np.arange(len(table))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(table) + 2) + 1.8, 3.8))
    for k, m in enumerate(metrics):
        vals = table[m].to_numpy(dtype=float)
        err = np.clip(
            np.vstack([vals - table[f"{m}_lo"].to_numpy(dtype=float), table[f"{m}_hi"].to_numpy(dtype=float) - vals]),
            0,
            None,
        )
        pos = x + (k - (len(metrics) - 1) / 2) * width
        ax.bar(pos, np.nan_to_num(vals), width, yerr=np.nan_to_num(err), capsize=3, label=m.upper())
        ns = table[f"n_{m}"] if f"n_{m}" in table else pd.Series(np.nan, index=table.index)
        for xi, top, n in zip(pos, np.nan_to_num(vals + err[1]), ns):
            if pd.notna(n):
                ax.text(xi, top + 0.02, f"n={int(n)}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, table[label].astype(str), rotation=30, ha="right")
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("rate (95 % Wilson CI)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: never over a bar
    if title:
        ax.set_title(wrap(title, fig))
    fig.tight_layout()
    return fig


matplotlib.use("Agg")


def _ok(x: object) -> bool:
    try:
        return not math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def category_grid(
    table: pd.DataFrame,
    row: str,
    col: str,
    path: str | os.PathLike,
    metrics: Sequence[str] = ("tpr", "fpr"),
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    status: str | None = "status",
    title: str = "",
) -> Path:
    """One heatmap per metric over `row` × `col` (e.g. prompt variant × dialogue format).

    Each cell shows the rate and its interval `[m_lo, m_hi]`; cells whose `status` is not "ok" (e.g. a format that
    cannot apply to the model) are hatched grey and labelled with the status; missing cells stay blank.
    """
    rows = list(rows) if rows is not None else list(dict.fromkeys(table[row]))
    cols = list(cols) if cols is not None else list(dict.fromkeys(table[col]))
    metrics = [m for m in metrics if m in table]
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(1.25 * len(cols) * len(metrics) + 2.2 * len(metrics), 0.55 * len(rows) + 2.4),
        squeeze=False,
    )
    for ax, m in zip(axes[0], metrics):
        grid = np.full((len(rows), len(cols)), np.nan)
        for _, r in table.iterrows():
            if r[row] in rows and r[col] in cols and _ok(r.get(m)):
                grid[rows.index(r[row]), cols.index(r[col])] = r[m]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for _, r in table.iterrows():
            if r[row] not in rows or r[col] not in cols:
                continue
            i, j = rows.index(r[row]), cols.index(r[col])
            st = str(r[status]) if status and status in table.columns else "ok"
            if st != "ok":
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.6"))
                ax.text(j, i, st, ha="center", va="center", fontsize=7, color="0.2")
            elif _ok(r.get(m)):
                annotate_rate(ax, j, i, r, m, 6.5)
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(col.replace("_", " "))
        ax.set_ylabel(row.replace("_", " "))
        ax.set_title(f"{m.upper()} (95 % CI)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path, title)


def tpr_vs_fpr(
    table: pd.DataFrame, label: str, path: str | os.PathLike, title: str = "", x: str = "fpr", y: str = "tpr"
) -> Path:
    """One point per row of `table` (e.g. per training stage) at (FPR, TPR) with both 95 % intervals as error bars.

    The diagonal TPR = FPR is what a model without discrimination (a pure yes/no bias) lands on.
    """
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="TPR = FPR (no discrimination)")
    for k, (_, r) in enumerate(table.iterrows()):
        if not (_ok(r[x]) and _ok(r[y])):
            continue
        xerr = [[r[x] - r[f"{x}_lo"]], [r[f"{x}_hi"] - r[x]]]
        yerr = [[r[y] - r[f"{y}_lo"]], [r[f"{y}_hi"] - r[y]]]
        ax.errorbar(
            [r[x]],
            [r[y]],
            xerr=xerr,
            yerr=yerr,
            fmt="o",
            capsize=3,
            color=f"C{k % 10}",
            label=f"{r[label]} (n={int(r.get(f'n_{y}', 0))}/{int(r.get(f'n_{x}', 0))})",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x.upper()} = P(claim | control)" if x == "fpr" else x)
    ax.set_ylabel(f"{y.upper()} = P(claim | injection)" if y == "tpr" else y)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    return save(fig, path)


def accuracy_intervals(
    table: pd.DataFrame,
    label: str,
    path: str | os.PathLike,
    chance: dict[str, float] | None = None,
    group: str | None = None,
    title: str = "",
) -> Path:
    """Horizontal accuracy bars with 95 % whiskers per row (`accuracy`, `accuracy_lo`, `accuracy_hi`), one panel per
    value of `group` (e.g. probe), with the chance level as a dashed line."""
    groups = list(dict.fromkeys(table[group])) if group else [None]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.6 * len(groups), 0.32 * len(table) / len(groups) + 1.8), squeeze=False
    )
    for ax, g in zip(axes[0], groups):
        sub = table[table[group] == g] if group else table
        y = np.arange(len(sub))
        acc = sub["accuracy"].to_numpy(dtype=float)
        err = np.vstack(
            [acc - sub["accuracy_lo"].to_numpy(dtype=float), sub["accuracy_hi"].to_numpy(dtype=float) - acc]
        )
        ax.errorbar(np.nan_to_num(acc), y, xerr=np.nan_to_num(err), fmt="o", capsize=3)
        if chance and g in chance:
            ax.axvline(chance[g], ls="--", color="0.5", label=f"chance {chance[g]:.2f}")
            ax.legend(fontsize=7)
        ax.set_yticks(y, sub[label].astype(str))
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy (95 % Wilson CI)")
        ax.set_title(str(g) if g is not None else "")
    return save(fig, path, title)
