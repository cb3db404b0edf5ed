"""Detection vs forced identification per injection layer, from a stored generation sweep.

Per layer: detection rate (claims on injection trials) and forced-identification rate (the prefilled trials that name
the concept), each with a Wilson 95 % interval, and the correlation across concepts of the two per-concept rates
(Pearson r with its n; NaN where a rate does not vary). `python -m analysis.localisation --run <sweep dir>` reprints
the table and redraws the plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lab.reporting import tables
from lab.reporting.metrics import wilson
from lab.reporting.tables import interval


def _rate(s: pd.Series) -> tuple[float, float, float, int]:
    s = s.dropna().astype(bool)
    k, n = int(s.sum()), len(s)
    p, lo, hi = wilson(k, n) if n else (float("nan"),) * 3
    return p, lo, hi, n


def by_layer(df: pd.DataFrame) -> pd.DataFrame:
    """One row per injection layer: detection, forced identification (with intervals) and their correlation."""
    inj = df[df["kind"] == "injection"]
    rows = []
    for layer, g in inj.groupby("layer", sort=True):
        free, forced = g[~g["forced"].astype(bool)], g[g["forced"].astype(bool)]
        det, fid = _rate(free["detected"]), _rate(forced["identified"])
        per = (
            pd.DataFrame(
                {
                    "det": free.groupby("concept")["detected"].mean(),
                    "fid": forced.groupby("concept")["identified"].mean(),
                }
            )
            .dropna()
            .astype(float)
        )
        ok = len(per) > 2 and per["det"].std() > 0 and per["fid"].std() > 0
        r = float(np.corrcoef(per["det"], per["fid"])[0, 1]) if ok else float("nan")
        rows.append(
            {
                "layer": int(layer),
                "detection": det[0],
                "detection_lo": det[1],
                "detection_hi": det[2],
                "n_detection": det[3],
                "forced_id": fid[0],
                "forced_id_lo": fid[1],
                "forced_id_hi": fid[2],
                "n_forced_id": fid[3],
                "corr": r,
                "n_concepts": len(per),
            }
        )
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lab.reporting.plots import save

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m, label in (("detection", "detection rate"), ("forced_id", "forced identification")):
        ax.plot(table["layer"], table[m], marker="o", label=label)
        ax.fill_between(table["layer"], table[f"{m}_lo"], table[f"{m}_hi"], alpha=0.2)
    ax.set_xlabel("injection layer")
    ax.set_ylabel("rate (95 % Wilson)")
    ax.legend(fontsize=8)
    ax2.bar(table["layer"], table["corr"].fillna(0))
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_xlabel("injection layer")
    ax2.set_ylabel("corr. across concepts")
    return save(fig, path, title)


def print_localisation_table(t: pd.DataFrame) -> None:
    columns = [("layer", "{layer:>}"), ("detection [95% CI]", interval("detection"))]
    columns += [("forced ID [95% CI]", interval("forced_id")), ("corr", "{corr:>+.2f}"), ("concepts", "{n_concepts:>}")]
    tables.print_table(t, columns)


def main(run_dir: str | Path) -> pd.DataFrame:
    """The table of a stored sweep printed, its plot redrawn as <run>/report/localisation_rerun.png."""
    from lab.run.store import read

    t = by_layer(read(run_dir))
    print_localisation_table(t)
    out = Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    print(f"plot: {plot(t, out / 'localisation_rerun.png')}")
    return t


if __name__ == "__main__":
    from lab.errors import ArgumentParser, input_folder, one_line_errors
    from lab.run.preflight import writable

    with one_line_errors():
        p = ArgumentParser(prog="python -m analysis.localisation", description="Localisation from a stored sweep")
        p.add_argument("--run", required=True, help="the sweep's output_dir (Parquet shards)")
        run = input_folder(p.parse_args().run, "shard-*.parquet", made_by="jobs.localisation")
        main(writable(run / "report", "report folder").parent)
