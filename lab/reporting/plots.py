"""Plots researchers would rather look at than tables (matplotlib, Agg backend, PNG files). Every rate is drawn with
its 95 % interval and the n behind it; titles are wrapped to the figure's width (`clipped_texts` finds any text that
still falls outside it)."""

from __future__ import annotations

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


def rate_heatmaps(
    table: pd.DataFrame, path: str | os.PathLike, metrics: Sequence[str] = ("tpr", "fpr"), title: str = ""
) -> Path:
    """One heatmap per metric over layer × strength, each cell annotated with the rate and its 95 % interval."""
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
        ax.set_xlabel("strength")
        ax.set_ylabel("layer (0-based block)")
        ax.set_title(m.upper())
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path, wrap(title, fig))


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
