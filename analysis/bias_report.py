"""The trained-bias report from stored rates: comparison table, before/after bars, the bias-layer curve, the
verdict text (analysis/bias_guards.py computes them). Pure: no model, no tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHOWN = ("tpr", "fpr", "random_rate", "norm_matched_rate", "introspection")


def write_report(model: str, site: str, n_heldout: int, table: Any, verdicts: dict[str, Any], rep: Path) -> list[Path]:
    """comparison.csv, before_after.png, per_layer.png (when any arm finished) and verdict.txt in `rep`."""
    from lab.reporting import plots

    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "comparison.csv", rep / "before_after.png", rep / "per_layer.png", rep / "verdict.txt"]
    table.to_csv(paths[0], index=False)
    shown = [m for m in SHOWN if m in table and table[m].notna().any()]
    if not shown:  # no arm finished: the table and the verdict say so, there is nothing to plot
        paths = [paths[0], paths[3]]
    else:
        plots.rate_bars(
            table.fillna({f"{m}{s}": 0.0 for m in shown for s in ("", "_lo", "_hi")}),
            "arm",
            paths[1],
            metrics=shown,
            title=f"{model}, held-out: before vs after",
        )
        layer_curve(table, shown, paths[2], f"{model}: bias layer sweep (seeds pooled by mean)")
    lines = [f"{model}: trained bias at {site}, {n_heldout} held-out concepts"]
    for arm, v in verdicts.items():
        lines += [f"== {arm}"] + [f"  {line}" for line in v["lines"]]
    paths[3].write_text("\n".join(lines) + "\n")
    return paths


def layer_curve(table: Any, metrics: list[str], path: Path, title: str) -> Path:
    """Rate after training per bias layer (95 % intervals), the baseline as a dashed line per metric."""
    import matplotlib.pyplot as plt

    from lab.reporting import plots

    base = table[table.arm == "baseline"]
    rows = table[(table.arm != "baseline") & (table.layer != "all")].copy()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if len(rows):
        rows["x"] = rows["layer"].astype(int)
        mean = rows.groupby("x")[[c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")]].mean().reset_index()
        ax.set_xticks(mean.x.tolist())
        for m in metrics:
            line = ax.errorbar(
                mean.x,
                mean[m],
                yerr=[(mean[m] - mean[f"{m}_lo"]).clip(lower=0), (mean[f"{m}_hi"] - mean[m]).clip(lower=0)],
                marker="o",
                capsize=3,
                label=m,
            )
            if len(base) and base[m].notna().all():
                ax.axhline(float(base[m].iloc[0]), ls="--", color=line[0].get_color(), alpha=0.6)
    ax.set_xlabel("bias layer (0-based block; dashed: no bias)")
    ax.set_ylabel("rate on held-out concepts")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return plots.save(fig, path, title)
