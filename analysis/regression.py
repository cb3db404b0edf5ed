"""Predict per-concept detection rates from transcoder features, against a 1-D projection baseline.

Inputs (a directory `jobs.feature_regression` writes, or any with the same files):
  features.parquet   one row per concept: `concept`, `detection_rate`, and a column per feature `L{layer}_f{index}`
                     (mean activation at the last prompt token under injection)
  feature_meta.parquet  per feature: `feature`, `layer`, `coverage` (share of concepts where it is active),
                     `attribution` (mean |activation × decoder row · (u_Yes − u_No)| over concepts), `score`
  vectors.parquet    one row per concept: `concept` and the concept vector `v0 … v{d-1}` (for the projection baseline)
  spec.json          `ns`, `alphas`, `layers`, `folds`, `seed`, `n_boot`, `n_perm`, optional `inner_folds` (5) and
                     `procedure` (`lab` | `paper`: which estimate is the printed headline; default `lab`)
Three estimates, all printed (`summarize_fits`), each named for what it is:
- nested (`r2_nested`, the lab's headline): features ranked by coverage × mean |attribution|, StandardScaler + ridge;
  K-fold grouped by concept, and inside each outer training fold an inner grouped CV picks (layer set, N, α), so no
  choice sees the concepts it is scored on; R² of the pooled out-of-fold predictions, a bootstrap interval over
  concepts (of those predictions: selection variability is not in it), and a permutation baseline that repeats the
  whole nested selection on shuffled targets. Baseline: the projection on the mean-difference direction (median
  split, computed inside each training fold), α picked the same nested way.
- best cell (`r2_best_cell`): the (layer set, N, α) with the best pooled R² on the same outer folds it is scored on
  (optimistic; what earlier versions printed as `r2_features`), its permutation baseline (α re-picked, N and layer
  set kept) and the projection baseline at its best α.
- the paper's procedure (`r2_paper`, `paper_procedure`, 04h:1055-1230): KFold(30, random_state 42), α ∈ {1, 10, 100,
  500, 1000, 5000, 10000}, N up to 30000 incl. 4500, all layers pooled, best N × α on the same folds; baseline = the
  projection on the global mean-difference direction.
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
    return _oof_paths(x, y, splits, [alpha], transform)[0]


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


def _design(features: pd.DataFrame, meta: pd.DataFrame, layers: Sequence[int] | None, n: int) -> np.ndarray:
    return features[ranked(meta, layers)[:n]].to_numpy(float)


def candidates(features: pd.DataFrame, meta: pd.DataFrame, spec: dict[str, Any]) -> list[tuple[str, int, np.ndarray]]:
    """(layer set, N, design) for every layer set × N of `spec` (the lab's grid)."""
    out = []
    for lay in layer_sets(spec):
        for n in spec["ns"]:
            label = "all" if lay is None else ",".join(map(str, lay))
            out.append((label, min(int(n), len(ranked(meta, lay))), _design(features, meta, lay, int(n))))
    return out


def ridge_paths(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Predictions [len(alphas), len(x_test)] of StandardScaler + Ridge(α) (with intercept) fitted on the training
    rows, every α from one decomposition (equal to scikit-learn's pipeline up to rounding:
    tests/analysis/test_regression.py): the SVD of the design, or with more features than rows the eigenvectors
    of its Gram matrix (the same predictions, n²p instead of a p-wide SVD: 30000 features fit in seconds)."""
    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)  # StandardScaler leaves constant columns unscaled
    z, zt, yc = (x_train - mu) / sd, (x_test - mu) / sd, y_train - float(y_train.mean())
    if z.shape[1] > z.shape[0]:
        w, u = np.linalg.eigh(z @ z.T)
        kt_u, uty = (zt @ z.T) @ u, u.T @ yc
        return np.stack([kt_u @ (uty / (np.clip(w, 0, None) + a)) for a in alphas]) + float(y_train.mean())
    u, sv, vt = np.linalg.svd(z, full_matrices=False)
    uty, ztv = u.T @ yc, zt @ vt.T
    return np.stack([ztv @ (sv / (sv**2 + a) * uty) for a in alphas]) + float(y_train.mean())


def _oof_paths(
    x: np.ndarray, y: np.ndarray, splits: list, alphas: Sequence[float], transform: Any = None
) -> np.ndarray:
    """Pooled out-of-fold predictions [len(alphas), n] over `splits` (`transform` as in `oof_ridge`)."""
    pred = np.zeros((len(alphas), len(y)))
    for train, test in splits:
        xs = transform(x, y, train) if transform else x
        pred[:, test] = ridge_paths(xs[train], y[train], xs[test], alphas)
    return pred


def _inner(groups: Sequence[str], train: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped folds over the outer training rows only, as indices into the whole table."""
    return [(train[a], train[b]) for a, b in folds([groups[i] for i in train], k, seed)]


def nested_estimate(
    designs: Sequence[tuple[str, int, np.ndarray]],
    y: np.ndarray,
    groups: Sequence[str],
    alphas: Sequence[float],
    k: int,
    inner_k: int,
    seed: int,
) -> tuple[np.ndarray, list[tuple[str, int, float]]]:
    """Out-of-fold predictions where every choice (layer set, N, α) is made inside each outer training fold, by the
    pooled R² of an inner grouped CV over those rows only; returns the predictions and each fold's choice."""
    pred, chosen = np.zeros(len(y)), []
    for train, test in folds(groups, k, seed):
        inner = _inner(groups, train, inner_k, seed + 1)
        best = (-np.inf, 0, 0)
        for c, (_, _, x) in enumerate(designs):
            paths = _oof_paths(x, y, inner, alphas)
            for a in range(len(alphas)):
                score = r2(y[train], paths[a, train])
                if score > best[0]:
                    best = (score, c, a)
        label, n, x = designs[best[1]]
        pred[test] = ridge_paths(x[train], y[train], x[test], [alphas[best[2]]])[0]
        chosen.append((label, n, float(alphas[best[2]])))
    return pred, chosen


def nested_projection(
    v: np.ndarray, y: np.ndarray, groups: Sequence[str], alphas: Sequence[float], k: int, inner_k: int, seed: int
) -> np.ndarray:
    """The projection baseline nested the same way: the direction (median split) from each training fold only,
    α chosen by an inner CV that recomputes the direction on each inner training fold."""
    pred = np.zeros(len(y))
    for train, test in folds(groups, k, seed):
        paths = _oof_paths(v, y, _inner(groups, train, inner_k, seed + 1), alphas, mean_diff_projection)
        a = int(np.argmax([r2(y[train], p[train]) for p in paths]))
        xs = mean_diff_projection(v, y, train)
        pred[test] = ridge_paths(xs[train], y[train], xs[test], [alphas[a]])[0]
    return pred


# the paper's procedure, 04h = experiments/04h_aggregation_analysis.py (safety-research/introspection-mechanisms 5d5d9b4)
PAPER_NS = (10, 20, 50, 100, 200, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000, 8000, 10000)
PAPER_NS += (15000, 20000, 30000)  # 04h:1192-1195
PAPER_ALPHAS = (1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0)  # 04h:1066, 1191
PAPER_FOLDS, PAPER_KFOLD_SEED = 30, 42  # KFold(n_splits=30, shuffle=True, random_state=42), 04h:1065, 1187-1188


def paper_procedure(features: pd.DataFrame, meta: pd.DataFrame, vectors: pd.DataFrame) -> dict[str, Any]:
    """04h:1055-1230 as the paper computes it: every layer's features pooled, zero-variance columns dropped
    (04h:1161-1164), ranked by coverage × mean attribution (04h:1141-1145: both normalised by their maximum, the
    same order as `score`), N over `PAPER_NS` (up to the features available), α over `PAPER_ALPHAS`, one
    KFold(30, shuffle, random_state 42) over concepts, R² of the pooled out-of-fold predictions; the headline is
    the best N × α scored on those same folds (04h:1198-1236: optimistic, selection is not nested). Baseline: each
    concept vector's projection on the global mean-difference direction (success − failure over all concepts,
    split by `analysis.geometry.choose_threshold`, as 04b), one column, the same folds and the best α
    (04h:1100-1107). Also returns the out-of-fold predictions behind both R²s (`paper_pred`,
    `paper_projection_pred`: analysis.scorecard bootstraps them over concepts)."""
    from sklearn.model_selection import KFold

    from analysis.geometry import choose_threshold, meandiff_direction

    y = features["detection_rate"].to_numpy(float)
    cols = ranked(meta, None)
    var = features[cols].var(ddof=0)
    names = [f for f in cols if var[f] > 0]
    splits = list(KFold(min(PAPER_FOLDS, len(y)), shuffle=True, random_state=PAPER_KFOLD_SEED).split(y))
    curve, preds = [], []
    for n in [n for n in PAPER_NS if n <= len(names)] or [len(names)]:
        paths = _oof_paths(features[names[:n]].to_numpy(float), y, splits, PAPER_ALPHAS)
        scores = [r2(y, p) for p in paths]
        a = int(np.argmax(scores))  # the first best α (04h: `if r2 > best`)
        curve.append({"n": n, "alpha": PAPER_ALPHAS[a], "r2": scores[a]})
        preds.append(paths[a])
    best = int(np.argmax([c["r2"] for c in curve]))  # the first N reaching the maximum
    v = vectors.set_index("concept").loc[features["concept"]].to_numpy(float)
    tau, _, _ = choose_threshold(v, y)
    proj = (v @ meandiff_direction(v, y > tau))[:, None]
    ppaths = _oof_paths(proj, y, splits, PAPER_ALPHAS)
    pscores = [r2(y, p) for p in ppaths]
    a = int(np.argmax(pscores))
    return {
        "r2_paper": curve[best]["r2"],
        "paper_n": curve[best]["n"],
        "paper_alpha": curve[best]["alpha"],
        "r2_paper_projection": pscores[a],
        "paper_projection_alpha": PAPER_ALPHAS[a],
        "paper_tau": tau,
        "paper_curve": pd.DataFrame(curve),
        "paper_pred": preds[best],  # the pooled out-of-fold predictions behind r2_paper (for a bootstrap interval)
        "paper_projection_pred": ppaths[a],
    }


HEADLINES = {
    "lab": "r2_nested: nested CV, every choice (layer set, N, α) made inside the training folds",
    "paper": "r2_paper: the paper's procedure (04h), best N × α on the same 30 folds it is scored on (optimistic)",
}


def summarize_fits(root: str | Path, cells: pd.DataFrame | None = None, procedure: str | None = None) -> dict[str, Any]:
    """Every estimate from the stored tables, and which one is the headline (`procedure`: spec.json's, default
    'lab'):
    - `r2_nested` (+ bootstrap interval over concepts of its predictions, `r2_nested_permuted`: the whole nested
      selection repeated on shuffled targets, `r2_projection_nested`): the lab's headline;
    - `r2_best_cell`: the best (layer set, N, α) cell, chosen on the same outer folds it is scored on (optimistic;
      what earlier versions printed as r2_features), with `r2_permuted` (targets shuffled, α re-picked, N and
      layer set kept) and `r2_projection` (the projection baseline's best α, same folds);
    - `r2_paper`, `r2_paper_projection`: `paper_procedure`."""
    root = Path(root)
    spec = json.loads((root / "spec.json").read_text())
    procedure = procedure or spec.get("procedure", "lab")
    if procedure not in HEADLINES:
        from lab.errors import LabError

        raise LabError(f"procedure must be one of {', '.join(HEADLINES)}, got {procedure!r}")
    features = pd.read_parquet(root / "features.parquet")
    meta = pd.read_parquet(root / "feature_meta.parquet")
    vectors = pd.read_parquet(root / "vectors.parquet")
    k, seed = int(spec["folds"]), int(spec["seed"])
    inner_k, n_perm = int(spec.get("inner_folds", 5)), int(spec.get("n_perm", 20))
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
    groups = features["concept"].tolist()
    splits = folds(groups, k, seed)
    pred = oof_ridge(x, y, splits, float(best["alpha"]))
    lo, hi = bootstrap(y, pred, int(spec.get("n_boot", 1000)), seed)
    perm = permutation_r2(x, y, splits, spec["alphas"], n_perm, seed)
    proj, proj_alpha = projection_r2(features, vectors, spec["alphas"], k, seed)
    designs = candidates(features, meta, spec)
    alphas = [float(a) for a in spec["alphas"]]
    npred, chosen = nested_estimate(designs, y, groups, alphas, k, inner_k, seed)
    nlo, nhi = bootstrap(y, npred, int(spec.get("n_boot", 1000)), seed)
    rng = np.random.default_rng(seed)
    nperm = [
        r2(yp, nested_estimate(designs, yp, groups, alphas, k, inner_k, seed)[0])
        for yp in (rng.permutation(y) for _ in range(n_perm))
    ]
    v = vectors.set_index("concept").loc[groups].to_numpy(float)
    out = {
        "procedure": procedure,
        "headline": HEADLINES[procedure],
        "r2_nested": r2(y, npred),
        "r2_nested_lo": nlo,
        "r2_nested_hi": nhi,
        "r2_nested_permuted": float(np.mean(nperm)) if nperm else float("nan"),
        "r2_projection_nested": r2(y, nested_projection(v, y, groups, alphas, k, inner_k, seed)),
        "nested_choices": chosen,
        "r2_best_cell": float(best["r2"]),
        "r2_best_cell_lo": lo,
        "r2_best_cell_hi": hi,
        "r2_permuted": perm,
        "best_layers": str(best["layers"]),
        "best_n": int(best["n"]),
        "best_alpha": float(best["alpha"]),
        "r2_projection": proj,
        "projection_alpha": proj_alpha,
        "n_concepts": len(y),
        "cells": cells,
    }
    return out | paper_procedure(features, meta, vectors)


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
    ax.axhline(s["r2_nested"], color="tab:red", lw=1, label="nested estimate (headline)")
    ax.axhline(s["r2_projection_nested"], color="black", ls="--", lw=1, label="mean-diff projection (nested)")
    ax.axhline(s["r2_nested_permuted"], color="grey", ls=":", lw=1, label="permuted targets (nested)")
    ax.set_xscale("log")
    ax.set_xlabel("top-N features (coverage × |attribution|)")
    ax.set_ylabel("cross-validated R² (pooled out-of-fold)")
    ax.legend(fontsize=8)
    return save(fig, path, f"nested R² {s['r2_nested']:.2f} [{s['r2_nested_lo']:.2f}, {s['r2_nested_hi']:.2f}]")


def fit_grid(root: str | Path, spec: dict[str, Any], folds: int, seed: int) -> list[dict[str, Any]]:
    """One `fit_stored` config per layer set × N × α of a stored table (the fits a job fans out)."""
    return [
        {"root": str(root), "layers": lay, "n": n, "alpha": a, "folds": folds, "seed": seed}
        for lay in layer_sets(spec)
        for n in spec["ns"]
        for a in spec["alphas"]
    ]


def layer_sets(spec: dict[str, Any]) -> list[list[int] | None]:
    """Each layer alone and all pooled; with `single_layers: false` in spec.json only all pooled (as 04h)."""
    if not spec.get("single_layers", True):
        return [None]
    return [[int(x)] for x in spec["layers"]] + ([None] if len(spec["layers"]) > 1 else [])


def print_fits(s: dict[str, Any]) -> None:
    """The R²-vs-N table, every estimate with what it is, the headline, and last the machine-readable line both the
    job and the rerun print."""
    curve = s["cells"].groupby(["layers", "n"])["r2"].max().reset_index()
    for r in curve.itertuples():
        print(f"layers {r.layers:<8} N {r.n:>6}  R² {r.r2:+.3f}")
    print(
        f"nested: R² {s['r2_nested']:.3f} [{s['r2_nested_lo']:.3f}, {s['r2_nested_hi']:.3f}] (whole selection on "
        f"permuted targets {s['r2_nested_permuted']:.3f}); projection R² {s['r2_projection_nested']:.3f}"
    )
    print(
        f"best cell (chosen on its own test folds, optimistic): layers {s['best_layers']}, N {s['best_n']}, "
        f"α {s['best_alpha']:g}: R² {s['r2_best_cell']:.3f} (permuted targets {s['r2_permuted']:.3f}); "
        f"projection R² {s['r2_projection']:.3f}"
    )
    print(
        f"paper's procedure (04h): N {s['paper_n']}, α {s['paper_alpha']:g}: R² {s['r2_paper']:.3f}; projection on "
        f"the global mean-diff direction R² {s['r2_paper_projection']:.3f} ({s['n_concepts']} concepts)"
    )
    print(f"headline = {s['headline']}")
    key = "r2_nested" if s["procedure"] == "lab" else "r2_paper"
    base = "r2_projection_nested" if s["procedure"] == "lab" else "r2_paper_projection"
    print(f"{key}={s[key]:.6f} {base}={s[base]:.6f}")


if __name__ == "__main__":
    import re

    from lab.errors import ArgumentParser, input_folder, one_line_errors

    with one_line_errors():
        p = ArgumentParser(prog="python -m analysis.regression", description="Refit the feature regression (no model)")
        p.add_argument("--run", required=True, help="the job's output_dir, or its MLflow run id")
        p.add_argument(
            "--procedure", choices=sorted(HEADLINES), help="which estimate is the headline; default: spec.json's"
        )
        a = p.parse_args()
        run = a.run
        if re.fullmatch(r"[0-9a-f]{32}", run):  # an MLflow run id whose `output_dir` param names the folder
            from lab.run.tracking import resolve_source

            run = str(resolve_source(run).directory)
        src = input_folder(run, "spec.json|regression/spec.json", made_by="jobs.feature_regression")
        root = src / "regression" if (src / "regression" / "spec.json").is_file() else src
        input_folder(str(root), "features.parquet", "feature_meta.parquet", made_by="jobs.feature_regression")
        print_fits(summarize_fits(root, procedure=a.procedure))
