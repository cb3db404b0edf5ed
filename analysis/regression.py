"""Predict per-concept detection rates from transcoder features, against a 1-D projection baseline.

Inputs (a directory `jobs.feature_regression` writes, or any with the same files):
  features.parquet   one row per concept: `concept`, `detection_rate`, and a column per feature `L{layer}_f{index}`
                     (mean activation at the last prompt token under injection)
  feature_meta.parquet  per feature: `feature`, `layer`, `coverage` (share of concepts where it is active),
                     `attribution` (mean |activation × decoder row · (u_Yes − u_No)| over concepts), `score`
  vectors.parquet    one row per concept: `concept` and the concept vector `v0 … v{d-1}` (for the projection baseline)
  spec.json          `ns`, `alphas`, `layers`, `folds`, `seed`, `n_boot`, `n_perm`
Method (the paper's code): features ranked by coverage × mean |attribution to detection|, the top N kept (N swept);
StandardScaler + ridge at each α, K-fold grouped by concept (no concept in train and test), R² of the pooled
out-of-fold predictions; the best (layer set, N, α) is the headline, with a bootstrap interval over concepts and a
permutation baseline (targets shuffled, same N, α picked from the same grid). Baseline: the concept vectors projected
on the mean-difference direction (concepts above vs below the median rate, computed inside each training fold), same
CV and α grid.
`python -m analysis.regression --run <dir or MLflow run id>` refits from the stored tables (no model, no Ray).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def folds(groups: Sequence[str], k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped K-fold: every row of a group (concept) falls in the same test fold; groups shuffled with `seed`."""
    uniq = np.array(sorted(set(groups)))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    k = min(k, len(uniq))
    fold_of = {g: i % k for i, g in enumerate(uniq)}
    f = np.array([fold_of[g] for g in groups])
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")


def oof_ridge(
    x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], alpha: float, transform: Any = None
) -> np.ndarray:
    """Pooled out-of-fold predictions of StandardScaler + Ridge(alpha). `transform(x, y, train)` may derive the
    design from the training rows only (the projection baseline)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.zeros(len(y))
    for train, test in splits:
        xs = transform(x, y, train) if transform else x
        model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(xs[train], y[train])
        pred[test] = model.predict(xs[test])
    return pred


def mean_diff_projection(v: np.ndarray, y: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Every concept vector projected on μ(above-median rate) − μ(rest), both means over training concepts only."""
    hi = train[y[train] > np.median(y[train])]
    lo = np.setdiff1d(train, hi)
    if len(hi) == 0 or len(lo) == 0:
        return np.zeros((len(v), 1))
    d = v[hi].mean(0) - v[lo].mean(0)
    return (v @ (d / (np.linalg.norm(d) or 1.0)))[:, None]


def bootstrap(y: np.ndarray, pred: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = [r2(y[i], pred[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(n))]
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def permutation_r2(
    x: np.ndarray, y: np.ndarray, splits: list, alphas: Sequence[float], n: int = 20, seed: int = 0
) -> float:
    """Mean R² with the targets shuffled across concepts, α chosen on each shuffle as for the real fit (so the
    selection over the α grid is part of the chance level)."""
    rng = np.random.default_rng(seed)
    return float(
        np.mean(
            [max(r2(yp, oof_ridge(x, yp, splits, a)) for a in alphas) for yp in (rng.permutation(y) for _ in range(n))]
        )
    )


def ranked(meta: pd.DataFrame, layers: Sequence[int] | None) -> list[str]:
    m = meta if layers is None else meta[meta["layer"].isin(list(layers))]
    return m.sort_values(["score", "feature"], ascending=[False, True])["feature"].tolist()


def fit_cell(
    features: pd.DataFrame, meta: pd.DataFrame, layers: Sequence[int] | None, n: int, alpha: float, k: int, seed: int
) -> dict[str, Any]:
    """R² of the top-n features of `layers` (None = all) at one α; one Tune trial of the job."""
    names = ranked(meta, layers)[:n]
    y = features["detection_rate"].to_numpy(float)
    pred = oof_ridge(features[names].to_numpy(float), y, folds(features["concept"].tolist(), k, seed), alpha)
    return {
        "layers": "all" if layers is None else ",".join(map(str, layers)),
        "n": len(names),
        "n_req": n,
        "alpha": alpha,
        "r2": r2(y, pred),
    }


def projection_r2(
    features: pd.DataFrame, vectors: pd.DataFrame, alphas: Sequence[float], k: int, seed: int
) -> tuple[float, float]:
    v = vectors.set_index("concept").loc[features["concept"]].to_numpy(float)
    y = features["detection_rate"].to_numpy(float)
    splits = folds(features["concept"].tolist(), k, seed)
    best = max((r2(y, oof_ridge(v, y, splits, a, mean_diff_projection)), a) for a in alphas)
    return best


def summarize_fits(root: str | Path, cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """The headline from the stored tables: refit every cell (or take `cells`), best by R², its bootstrap interval
    and permutation baseline, and the projection baseline."""
    root = Path(root)
    spec = json.loads((root / "spec.json").read_text())
    features = pd.read_parquet(root / "features.parquet")
    meta = pd.read_parquet(root / "feature_meta.parquet")
    k, seed = int(spec["folds"]), int(spec["seed"])
    if cells is None:
        cells = pd.DataFrame(
            [
                fit_cell(features, meta, lay, n, a, k, seed)
                for lay in layer_sets(spec)
                for n in spec["ns"]
                for a in spec["alphas"]
            ]
        )
    best = cells.sort_values(["r2", "n", "alpha"], ascending=[False, True, True]).iloc[0]
    lay = None if best["layers"] == "all" else [int(x) for x in str(best["layers"]).split(",")]
    names = ranked(meta, lay)[: int(best["n"])]
    x, y = features[names].to_numpy(float), features["detection_rate"].to_numpy(float)
    splits = folds(features["concept"].tolist(), k, seed)
    pred = oof_ridge(x, y, splits, float(best["alpha"]))
    lo, hi = bootstrap(y, pred, int(spec.get("n_boot", 1000)), seed)
    perm = permutation_r2(x, y, splits, spec["alphas"], int(spec.get("n_perm", 20)), seed)
    proj, proj_alpha = projection_r2(features, pd.read_parquet(root / "vectors.parquet"), spec["alphas"], k, seed)
    return {
        "r2_features": float(best["r2"]),
        "r2_features_lo": lo,
        "r2_features_hi": hi,
        "r2_permuted": perm,
        "best_layers": str(best["layers"]),
        "best_n": int(best["n"]),
        "best_alpha": float(best["alpha"]),
        "r2_projection": proj,
        "projection_alpha": proj_alpha,
        "n_concepts": len(y),
        "cells": cells,
    }


def fit_stored(config: dict[str, Any]) -> dict[str, Any]:
    """`fit_cell` on the tables stored under `config["root"]` (the body of one Ray Tune trial)."""
    root = Path(config["root"])
    f, m = pd.read_parquet(root / "features.parquet"), pd.read_parquet(root / "feature_meta.parquet")
    return fit_cell(f, m, config["layers"], config["n"], config["alpha"], config["folds"], config["seed"])


def plot_curve(cells: pd.DataFrame, s: dict[str, Any], path: str | Path) -> Path:
    """Best R² over α against N, one line per layer set, with the projection and permutation baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lab.reporting.plots import save

    curve = cells.groupby(["layers", "n"], as_index=False)["r2"].max()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for lay, g in curve.groupby("layers"):
        ax.plot(g["n"], g["r2"], marker="o", label=f"layers {lay}")
    ax.axhline(s["r2_projection"], color="black", ls="--", lw=1, label="mean-diff projection")
    ax.axhline(s["r2_permuted"], color="grey", ls=":", lw=1, label="permuted targets")
    ax.set_xscale("log")
    ax.set_xlabel("top-N features (coverage × |attribution|)")
    ax.set_ylabel("cross-validated R² (pooled out-of-fold)")
    ax.legend(fontsize=8)
    return save(fig, path, f"best R² {s['r2_features']:.2f} [{s['r2_features_lo']:.2f}, {s['r2_features_hi']:.2f}]")


def layer_sets(spec: dict[str, Any]) -> list[list[int] | None]:
    return [[int(x)] for x in spec["layers"]] + ([None] if len(spec["layers"]) > 1 else [])


def print_fits(s: dict[str, Any]) -> None:
    """The R²-vs-N table, the headline, and last the machine-readable line both the job and the rerun print."""
    curve = s["cells"].groupby(["layers", "n"])["r2"].max().reset_index()
    for r in curve.itertuples():
        print(f"layers {r.layers:<8} N {r.n:>6}  R² {r.r2:+.3f}")
    print(
        f"best: layers {s['best_layers']}, N {s['best_n']}, α {s['best_alpha']:g}: R² {s['r2_features']:.3f} "
        f"[{s['r2_features_lo']:.3f}, {s['r2_features_hi']:.3f}] (permuted targets {s['r2_permuted']:.3f}); "
        f"projection R² {s['r2_projection']:.3f} ({s['n_concepts']} concepts)"
    )
    print(f"r2_features={s['r2_features']:.6f} r2_projection={s['r2_projection']:.6f}")


if __name__ == "__main__":
    import re

    from lab.errors import ArgumentParser, input_folder, one_line_errors

    with one_line_errors():
        p = ArgumentParser(prog="python -m analysis.regression", description="Refit the feature regression (no model)")
        p.add_argument("--run", required=True, help="the job's output_dir, or its MLflow run id")
        run = p.parse_args().run
        if re.fullmatch(r"[0-9a-f]{32}", run):  # an MLflow run id whose `output_dir` param names the folder
            from lab.run.tracking import resolve_source

            run = str(resolve_source(run).directory)
        src = input_folder(run, "spec.json|regression/spec.json", made_by="jobs.feature_regression")
        root = src / "regression" if (src / "regression" / "spec.json").is_file() else src
        input_folder(str(root), "features.parquet", "feature_meta.parquet", made_by="jobs.feature_regression")
        print_fits(summarize_fits(root))
