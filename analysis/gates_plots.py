"""Figures for gates and the pathway: inverted V of the top gates, attribution by layer, the pathway diagram."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lab.reporting.plots import plt, save


def inverted_v_plot(
    prof: pd.DataFrame, gates: pd.DataFrame, path: str | os.PathLike, top: int = 8, title: str = ""
) -> Path:
    """Mean activation vs signed steering strength for the `top` gates (each normalised by its unsteered value)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for _, g in gates.head(top).iterrows():
        p = prof[(prof["layer"] == g["layer"]) & (prof["feature"] == g["feature"])]
        s = sorted(prof["strength"].unique())
        a = p.set_index("strength")["mean_act"].reindex(s, fill_value=0.0)
        lab = f"L{int(g['layer'])}/{int(g['feature'])}"
        axes[0].plot(s, a.to_numpy(), marker="o", label=lab)
        axes[1].plot(s, a.to_numpy() / (g["a0"] if g["a0"] > 0 else 1.0), marker="o", label=lab)
    for ax, yl in zip(axes, ("mean activation", "activation / unsteered")):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("steering strength (signed)")
        ax.set_ylabel(yl)
    axes[1].legend(fontsize=7, ncol=2)
    if gates.empty:
        axes[0].text(0.5, 0.5, "no gate candidates", transform=axes[0].transAxes, ha="center")
    return save(fig, path, title or "top gate candidates: activation vs steering strength (inverted V?)")


def attribution_by_layer(attr: pd.DataFrame, gates: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Per layer: total positive (No-promoting) and negative DLA of all features, and of the selected gates."""
    layers = sorted(attr["layer"].unique())
    pos = [float(attr.loc[(attr["layer"] == lay) & (attr["dla"] > 0), "dla"].sum()) for lay in layers]
    neg = [float(attr.loc[(attr["layer"] == lay) & (attr["dla"] < 0), "dla"].sum()) for lay in layers]
    gat = [float(gates.loc[gates["layer"] == lay, "dla"].sum()) for lay in layers]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(layers) + 2), 3.8))
    ax.bar(x - 0.27, pos, 0.27, label="all features, DLA > 0 (→ No)")
    ax.bar(x, neg, 0.27, label="all features, DLA < 0 (→ Yes)")
    ax.bar(x + 0.27, gat, 0.27, label="gate candidates")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [str(v) for v in layers])
    ax.set_xlabel("transcoder layer")
    ax.set_ylabel("Σ DLA to logit(No) − logit(Yes), unsteered")
    ax.legend(fontsize=7)
    return save(fig, path, title or "direct logit attribution by layer")


def pathway_plot(table: pd.DataFrame, inject_layer: int, path: str | os.PathLike, title: str = "") -> Path:
    """Nodes at (layer, stage); edges coloured by sign (red promotes / blue suppresses), width ∝ |attribution|."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    last = int(max([inject_layer, *table["layer_from"], *table["layer_to"]], default=inject_layer)) + 2
    ypos = {"vector": 0.0, "carriers": 1.0, "gates": 2.0, "No": 3.0}

    def node(stage: str, layer: int) -> tuple[float, float]:
        return (last if layer < 0 else layer), ypos[stage]

    edges = {
        "vector→carriers": ("vector", "carriers"),
        "carriers→gates": ("carriers", "gates"),
        "gates→No": ("gates", "No"),
    }
    scale = float(table["attribution"].abs().max()) if len(table) else 1.0
    for _, r in table[table["stage"].isin(list(edges))].iterrows():
        a, b = edges[r["stage"]]
        (x0, y0), (x1, y1) = node(a, int(r["layer_from"])), node(b, int(r["layer_to"]))
        w = 0.5 + 6 * abs(r["attribution"]) / (scale or 1.0)
        color = "tab:red" if r["attribution"] > 0 else "tab:blue"
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "lw": w, "color": color})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{r['attribution']:+.2g}", fontsize=7, ha="center")
    nodes = (
        {("vector", inject_layer)}
        | {(edges[s][0], int(lf)) for s, lf in zip(table["stage"], table["layer_from"]) if s in edges}
        | {(edges[s][1], int(lt)) for s, lt in zip(table["stage"], table["layer_to"]) if s in edges}
    )
    for stage, layer in nodes:
        x, y = node(stage, layer)
        ax.scatter([x], [y], s=250, color="white", edgecolor="black", zorder=3)
        ax.text(
            x,
            y,
            stage if stage in ("vector", "No") else f"{stage[0].upper()}{layer}",
            fontsize=7,
            ha="center",
            va="center",
            zorder=4,
        )
    ax.set_yticks(list(ypos.values()), ["concept vector", "evidence carriers", "gates", "No − Yes logit"])
    ax.set_xlabel("layer")
    ax.set_xlim(inject_layer - 1, last + 1)
    ax.set_ylim(-0.5, 3.5)
    if table.empty:
        ax.text(0.5, 0.5, "no pathway: no carriers or gates selected", transform=ax.transAxes, ha="center")
    return save(fig, path, title or "steering attribution: concept vector → carriers → gates → No (red +, blue −)")


def causal_plot(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Δ(Yes − No score) and Δdetection per intervention with 95 % intervals (gates vs the random control)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [str(c) for c in table["condition"]]
    x = np.arange(len(labels))
    for ax, m, yl in zip(axes, ("d_score", "d_detection"), ("Δ(Yes − No score)", "Δ P(score > 0)")):
        v = table[m].to_numpy(float)
        err = np.vstack([v - table[f"{m}_lo"].to_numpy(float), table[f"{m}_hi"].to_numpy(float) - v])
        ax.bar(x, v, yerr=err, capsize=4, color=["tab:orange" if "gates" in c else "tab:grey" for c in labels])
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
        ax.set_ylabel(yl)
    return save(fig, path, title or "causal tests: ablate gates in steered runs, patch them into unsteered runs")
