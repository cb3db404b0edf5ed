"""Plots researchers would rather look at than tables (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
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


def annotate_rate(ax: plt.Axes, j: int, i: int, r: pd.Series, m: str, fontsize: float = 7) -> None:
    """Write `rate [lo,hi]` into heatmap cell (row i, column j)."""
    ax.text(
        j,
        i,
        f"{r[m]:.2f}\n[{r[m + '_lo']:.2f},{r[m + '_hi']:.2f}]",
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
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1, 0.6 * len(layers) + 2.4), squeeze=False)
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
    return save(fig, path, title)


def rate_bars(
    table: pd.DataFrame, label: str, path: str | os.PathLike, metrics: Sequence[str] = ("tpr", "fpr"), title: str = ""
) -> Path:
    """Grouped bars with 95 % interval whiskers, one group per row of `table[label]`."""
    x = np.arange(len(table))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(table) + 2), 3.6))
    for k, m in enumerate(metrics):
        vals = table[m].to_numpy(dtype=float)
        err = np.clip(
            np.vstack([vals - table[f"{m}_lo"].to_numpy(dtype=float), table[f"{m}_hi"].to_numpy(dtype=float) - vals]),
            0,
            None,
        )
        ax.bar(
            x + (k - (len(metrics) - 1) / 2) * width,
            np.nan_to_num(vals),
            width,
            yerr=np.nan_to_num(err),
            capsize=3,
            label=m.upper(),
        )
    ax.set_xticks(x, table[label].astype(str), rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate (95 % Wilson CI)")
    ax.legend()
    if title:
        ax.set_title(title)
    return save(fig, path)
