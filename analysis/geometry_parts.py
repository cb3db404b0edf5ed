"""Part injections of the geometry experiment, from stored rows: per part (full vector, its projection on the
mean-difference direction, the residual) the TPR table, the printed lines and the figures. Pure: no model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import geometry_plots as gp
from analysis.geometry import Geometry
from lab.reporting import metrics

PARTS = ("full", "proj", "resid")


def part_table(rows: pd.DataFrame, parts: Sequence[str]) -> pd.DataFrame:
    """Rates per part; a row's part is the suffix of its bank vector key `concept|part`."""
    rows = rows.assign(vector_set=rows.vector.str.rsplit("|", n=1).str[1])
    return pd.DataFrame([{"part": p} | metrics.summarize(rows[rows.vector_set == p]) for p in parts])


def harness_check(rows: pd.DataFrame, stored: pd.DataFrame) -> str:
    """The full vector at its raw multiplier must reproduce the stored sweep's responses."""
    full = rows[rows.vector.str.endswith("|full")]
    both = full.merge(stored, on=["concept", "trial_number"], suffixes=("", "_src"))
    return f"check: full-vector re-injection reproduces {int((both.response == both.response_src).sum())}/{len(both)} stored responses"


def part_lines(table: pd.DataFrame, rel: Mapping[str, float]) -> list[str]:
    return [
        f"part {r['part']:<6} TPR {r['tpr']:.3f} [{r['tpr_lo']:.2f},{r['tpr_hi']:.2f}] n={int(r['n_tpr'])}  "
        f"introspection {r['introspection']:.3f}  mean ‖s·v_part‖/‖resid‖ {rel[r['part']]:.3f}"
        for _, r in table.iterrows()
    ]


def figures(
    g: Geometry, dirs: Mapping[str, np.ndarray], table: pd.DataFrame, concepts: Sequence[str], rep: Path, title: str
) -> list[Path]:
    cos = {
        "PC1·mean-diff": g.pc1_meandiff_cos,
        "PC1·refusal": g.pc1_refusal_cos,
        "mean-diff·refusal": g.meandiff_refusal_cos,
        "ridge·mean-diff": float(np.dot(dirs["ridge"], dirs["meandiff"])),
    }
    return [
        gp.pca_scatter(np.array(g.pc_scores), g.rates, list(concepts), g.explained, rep / "pca.png", title),
        gp.cosines(cos, rep / "cosines.png", title),
        gp.part_rates(table, rep / "parts.png", title),
    ]


def metrics_of(g: Geometry, table: pd.DataFrame) -> dict[str, float]:
    keys = (
        "pc1_meandiff_cos",
        "pc1_refusal_cos",
        "meandiff_refusal_cos",
        "ridge_r2",
        "tau_f1",
        "n_success",
        "n_failure",
    )
    return {k: getattr(g, k) for k in keys} | {f"tpr_{r['part']}": r["tpr"] for _, r in table.iterrows()}
