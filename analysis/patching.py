"""Patching effects from stored rows (one row per trial × patched layer × component, as `jobs.patching` writes).

Effect of a patch = patched metric − its reference: knock-out − steered, knock-in − clean (Yes−No logsumexp), forced
knock-out − forced steered (log-prob of the concept's first token). Rows are first averaged per concept, then the
mean over concepts gets a 95 % t-interval (n = concepts). `python -m analysis.patching --run <dir>` reprints the table
and redraws the plot from the stored Parquet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lab.reporting import tables
from lab.reporting.tables import interval

REFERENCE = {"knock_out": "steered", "knock_in": "clean", "forced_knock_out": "forced_steered"}


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def effects(df: pd.DataFrame) -> pd.DataFrame:
    """Mean effect per (mode, patch_layer, component) across concepts, with a 95 % t-interval."""
    out = []
    for mode, ref in REFERENCE.items():
        d = df.assign(effect=df[mode] - df[ref])
        per = d.groupby(["patch_layer", "component", "concept"], as_index=False)["effect"].mean()
        for (layer, comp), g in per.groupby(["patch_layer", "component"]):
            e = g["effect"].to_numpy()
            n, m = len(e), float(e.mean())
            half = _t95(n) * float(e.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
            out.append(
                {
                    "mode": mode,
                    "patch_layer": int(layer),
                    "component": comp,
                    "effect": m,
                    "effect_lo": m - half,
                    "effect_hi": m + half,
                    "n_concepts": n,
                }
            )
    return pd.DataFrame(out).sort_values(["mode", "component", "patch_layer"], ignore_index=True)


def injection_effect(df: pd.DataFrame) -> dict[str, float]:
    """How much the injection itself moves each metric (steered − clean), mean over concepts."""
    one = df.drop_duplicates(["concept", "trial_number"])
    return {
        "yes_no_clean": float(one["clean"].mean()),
        "yes_no_steered": float(one["steered"].mean()),
        "forced_logp_clean": float(one["forced_clean"].mean()),
        "forced_logp_steered": float(one["forced_steered"].mean()),
    }


def plot_effects(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lab.reporting.plots import save

    modes = list(REFERENCE)
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 3.6))
    for ax, mode in zip(np.atleast_1d(axes), modes):
        for comp, g in table[table["mode"] == mode].groupby("component"):
            err = [g["effect"] - g["effect_lo"], g["effect_hi"] - g["effect"]]
            ax.errorbar(g["patch_layer"], g["effect"], yerr=err, marker="o", capsize=3, label=comp)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(mode.replace("_", " ") + (" (concept log-prob)" if mode.startswith("forced") else " (Yes−No)"))
        ax.set_xlabel("patched layer")
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("effect (patched − reference)")
    return save(fig, path, title)


def print_effects(table: pd.DataFrame) -> None:
    columns = [("mode", "{mode}"), ("comp", "{component}"), ("layer", "{patch_layer:>}")]
    tables.print_table(
        table, columns + [("effect [95% CI]", interval("effect", False, 3, True)), ("n", "{n_concepts:>}")]
    )


def report(df: pd.DataFrame, out_dir: str | Path, title: str = "") -> tuple[pd.DataFrame, dict[str, float], Path]:
    """Effects table (CSV), plot and printed summary under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, inj = effects(df), injection_effect(df)
    table.to_csv(out / "patching_effects.csv", index=False)
    png = plot_effects(table, out / "patching.png", title)
    print_effects(table)
    print(
        "injection moves Yes−No from {yes_no_clean:+.3f} (clean) to {yes_no_steered:+.3f} (steered); concept "
        "log-prob after the prefill from {forced_logp_clean:.3f} to {forced_logp_steered:.3f}".format(**inj)
    )
    return table, inj, png


def main(run_dir: str | Path) -> Path:
    """The patching report of a stored run redone into <run>/report_rerun; returns the plot."""
    from lab.run.store import read

    root = Path(run_dir)
    _, _, png = report(read(root / "patching" if (root / "patching").is_dir() else root), root / "report_rerun")
    print(f"plot: {png}")
    return png


if __name__ == "__main__":
    from lab.errors import ArgumentParser, input_folder, one_line_errors
    from lab.run.preflight import writable

    with one_line_errors():
        p = ArgumentParser(prog="python -m analysis.patching", description="Patching effects from a stored run")
        p.add_argument("--run", required=True, help="the job's output_dir (holds patching/ Parquet shards)")
        run = input_folder(p.parse_args().run, "patching/shard-*.parquet|shard-*.parquet", made_by="jobs.patching")
        main(writable(run / "report_rerun", "report folder").parent)
