"""Before/after comparisons of rates: the difference of two independent proportions with Newcombe's hybrid score
interval (from the two Wilson intervals; method 10 of Newcombe 1998), a table per metric, and a bar plot."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from lab.reporting.metrics import wilson
from lab.reporting.tables import interval, print_table

METRICS = ("tpr", "fpr", "introspection", "random_rate", "refusal_rate")


def diff_interval(k_after: int, n_after: int, k_before: int, n_before: int) -> tuple[float, float, float]:
    """(p_after − p_before, low, high), 95 %; nan with (−1, 1) when either side has no trials."""
    if n_after == 0 or n_before == 0:
        return float("nan"), -1.0, 1.0
    p1, l1, u1 = wilson(k_after, n_after)
    p2, l2, u2 = wilson(k_before, n_before)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def compare_rates(
    before: Mapping[str, float], after: Mapping[str, float], metrics: Sequence[str] = METRICS
) -> pd.DataFrame:
    """One row per metric present in both summaries (`lab.reporting.metrics.summarize` form: rate, _lo, _hi, n_)."""
    rows = []
    for m in metrics:
        if not before.get(f"n_{m}") or not after.get(f"n_{m}"):
            continue
        nb, na = int(before[f"n_{m}"]), int(after[f"n_{m}"])
        kb, ka = round(before[m] * nb), round(after[m] * na)
        d, lo, hi = diff_interval(ka, na, kb, nb)
        rows.append(
            {
                "metric": m,
                "before": before[m],
                "before_lo": before[f"{m}_lo"],
                "before_hi": before[f"{m}_hi"],
                "n_before": nb,
                "after": after[m],
                "after_lo": after[f"{m}_lo"],
                "after_hi": after[f"{m}_hi"],
                "n_after": na,
                "delta": d,
                "delta_lo": lo,
                "delta_hi": hi,
            }
        )
    return pd.DataFrame(rows)


def rate_entry(k: int, n: int, name: str) -> dict[str, float]:
    """A `summarize`-style entry for a rate measured outside a sweep (e.g. the refusal rate)."""
    p, lo, hi = wilson(k, n)
    return {name: p, f"{name}_lo": lo, f"{name}_hi": hi, f"n_{name}": n}


def print_compare(table: pd.DataFrame, labels: tuple[str, str] = ("before", "after")) -> None:
    columns = [
        ("metric", "{metric}"),
        (labels[0], interval("before", digits=3)),
        (labels[1], interval("after", digits=3)),
    ]
    print_table(table, columns + [("delta [95% CI]", interval("delta", False, 3, True))])


def plot_compare(
    table: pd.DataFrame, path: str | os.PathLike, labels: tuple[str, str] = ("before", "after"), title: str = ""
) -> Path:
    """Grouped bars (before, after) per metric with 95 % intervals."""
    import numpy as np

    from lab.reporting import plots

    fig, ax = plots.plt.subplots(figsize=(1.6 + 1.3 * len(table), 3.6))
    x = np.arange(len(table))
    for j, (side, lab) in enumerate(zip(("before", "after"), labels)):
        vals = table[side].to_numpy()
        err = np.vstack([vals - table[f"{side}_lo"].to_numpy(), table[f"{side}_hi"].to_numpy() - vals])
        ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, yerr=err, capsize=3, label=lab)
    ax.set_xticks(x, list(table["metric"]))
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate (95 % CI)")
    ax.legend(fontsize=8)
    return plots.save(fig, path, title)


def readings(table: pd.DataFrame, before: Mapping[str, float]) -> list[str]:
    """Plain-language lines from the intervals: whether the model refused to begin with, and which deltas exclude 0."""
    out = []
    if before.get("n_refusal_rate") and before["refusal_rate_hi"] < 0.2:
        out.append(
            f"reading: the original model barely refuses ({before['refusal_rate']:.2f} of "
            f"{before['n_refusal_rate']} held-out harmful prompts by the phrase matcher), so there is little "
            "refusal to remove; no effect of abliteration on introspection is claimed from this model"
        )
    for _, r in table.iterrows():
        moved = r["delta_lo"] > 0 or r["delta_hi"] < 0
        out.append(
            f"reading: Δ{r['metric']} {r['delta']:+.3f} [{r['delta_lo']:+.2f},{r['delta_hi']:+.2f}] "
            + ("excludes 0" if moved else "includes 0: no evidence of a change")
        )
    return out
