"""Plots for grids of runs: rates over two categorical axes (variants × formats) and TPR-vs-FPR per stage.

Matplotlib, Agg backend, PNG files. Every rate is drawn with its 95 % (Wilson) interval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lab.reporting.plots import annotate_rate, save  # noqa: E402


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
