"""Figures of the geometry analysis: PCA scatter coloured by detection rate, the cosines, TPR per injected part."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lab.reporting import plots


def pca_scatter(
    scores: np.ndarray,
    rates: Sequence[float],
    concepts: Sequence[str],
    explained: Sequence[float],
    path: str | os.PathLike,
    title: str = "",
    label_top: int = 12,
) -> Path:
    fig, ax = plots.plt.subplots(figsize=(6.2, 4.8))
    s = np.asarray(scores)
    y = s[:, 1] if s.shape[1] > 1 else np.zeros(len(s))
    sc = ax.scatter(s[:, 0], y, c=list(rates), cmap="viridis", vmin=0, vmax=1, s=28, edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label="detection rate")
    order = np.argsort(-np.abs(s[:, 0]))[:label_top]
    for i in order:
        ax.annotate(concepts[i], (s[i, 0], y[i]), fontsize=6, alpha=0.8)
    ax.set_xlabel(f"PC1 ({explained[0]:.1%})")
    ax.set_ylabel(f"PC2 ({explained[1]:.1%})" if len(explained) > 1 else "")
    return plots.save(fig, path, title)


def cosines(values: Mapping[str, float], path: str | os.PathLike, title: str = "") -> Path:
    fig, ax = plots.plt.subplots(figsize=(5.2, 3.2))
    names, vals = list(values), [values[k] for k in values]
    ax.barh(names, vals, color=["tab:blue" if v >= 0 else "tab:red" for v in vals])
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlim(-1, 1)
    for i, v in enumerate(vals):
        ax.text(
            v + (0.03 if v >= 0 else -0.03), i, f"{v:.2f}", va="center", ha="left" if v >= 0 else "right", fontsize=8
        )
    ax.set_xlabel("cosine")
    return plots.save(fig, path, title)


def part_rates(table, path: str | os.PathLike, title: str = "") -> Path:  # type: ignore[no-untyped-def]
    """Bars of TPR with 95 % intervals per injected part (`part`, `tpr`, `tpr_lo`, `tpr_hi` columns)."""
    fig, ax = plots.plt.subplots(figsize=(1.8 + 1.1 * len(table), 3.4))
    x = np.arange(len(table))
    v = table["tpr"].to_numpy()
    ax.bar(x, v, yerr=np.vstack([v - table["tpr_lo"].to_numpy(), table["tpr_hi"].to_numpy() - v]), capsize=3)
    ax.set_xticks(x, list(table["part"]))
    ax.set_ylim(0, 1)
    ax.set_ylabel("TPR (95 % CI)")
    return plots.save(fig, path, title)
