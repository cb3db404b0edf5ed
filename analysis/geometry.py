"""Geometry of concept vectors vs detection (the paper's §4): is detection one "say yes" direction?

From per-concept detection rates (a stored sweep) and the concept vectors at the injection layer:
- success/failure split: success = rate > τ, with τ fixed or chosen as in the paper's code — over τ ∈ {0.01 … 0.99,
  median}, keep splits whose minority class is ≥ 20 % (and ≥ 5 concepts, for 5 folds) and maximise the 5-fold
  stratified cross-validated macro-F1 of an LDA (threshold: midpoint of the two training-class means);
- mean-difference direction μ_success − μ_failure (unit);
- PCA (10 components) of the L2-normalised vectors; PC1 is oriented to correlate positively with detection rate;
  cos(PC1, mean-diff) and cos(PC1, refusal direction);
- ridge from raw vectors to detection rate with nested CV: outer 5-fold KFold, inner `RidgeCV` (3-fold) over
  α ∈ 10^linspace(−2, 8, 25); X and y are centred with the training fold's means only, so no test concept
  leaks into a fit; R² pooled over out-of-fold predictions and per fold;
- `decompose`: each vector = its projection on a direction + the residual (the parts injected separately).
Rerun from stored outputs: `python -m analysis.geometry --run <dir or MLflow run id>` (no model is loaded).

The job's report (`part_table`, `harness_check`, `part_lines`, `figures`, `metrics_of`): per injected part (full
vector, its projection on the mean-difference direction, the residual) the TPR table, the harness check and the
printed lines; the figures (PCA scatter coloured by detection rate, the cosines, TPR per part); the metrics logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lab.errors import LabError
from lab.reporting import metrics, plots

ALPHAS = 10 ** np.linspace(-2, 8, 25)
VECTORS, REFUSAL, RATES_FILE, RESULT = "vectors.safetensors", "refusal.safetensors", "rates.csv", "geometry.json"


def sweep_cell(injections: pd.DataFrame, layer: int | None, strength: float | None) -> tuple[int, float]:
    """The injection layer and strength the geometry reads: the given ones, else the sweep's only one of each."""

    def only(name: str, given: Any) -> Any:
        vals = sorted(set(injections[name]))
        if given is None and len(vals) != 1:
            raise LabError(f"the sweep has {name}s {vals}: set `{name}` to one of them")
        return vals[0] if given is None else given

    return int(only("layer", layer)), float(only("strength", strength))


def detection_rates(df: pd.DataFrame, layer: int | None = None, strength: float | None = None) -> pd.DataFrame:
    """Per concept: injected (unforced) trials with a known verdict, claims and the rate, for one cell or all; with
    an `identified` column also `combined` = P(detected ∧ identified), 04b's `combined_rate` (04b:446-447)."""
    sub = df[(df.kind == "injection") & ~df.forced.astype(bool) & df.detected.notna()]
    if layer is not None:
        sub = sub[sub.layer == layer]
    if strength is not None:
        sub = sub[np.isclose(sub.strength.astype(float), strength)]
    g = sub.assign(detected=sub.detected.astype(bool)).groupby("concept", sort=False)["detected"]
    out = pd.DataFrame({"n": g.size(), "detected": g.sum().astype(int)})
    out["rate"] = out["detected"] / out["n"]
    if "identified" in sub.columns:
        both = sub.detected.astype(bool) & sub.identified.fillna(False).astype(bool)
        out["combined"] = both.groupby(sub.concept, sort=False).mean()
    return out.reset_index()


def lda_cv_f1(X: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 42) -> float:
    """Mean macro-F1 over stratified folds of a 1-D LDA with the training class-mean midpoint as threshold."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    scores = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, labels):
        lda = LinearDiscriminantAnalysis(n_components=1).fit(X[tr], labels[tr])
        p_tr, p_te = lda.transform(X[tr]).ravel(), lda.transform(X[te]).ravel()
        thr = (p_tr[labels[tr] == 1].mean() + p_tr[labels[tr] == 0].mean()) / 2
        scores.append(f1_score(labels[te], (p_te >= thr).astype(int), average="macro"))
    return float(np.mean(scores))


def choose_threshold(
    X: np.ndarray, rates: np.ndarray, min_minority: float = 0.2, folds: int = 5, seed: int = 42
) -> tuple[float, float, pd.DataFrame]:
    """(τ, its CV macro-F1, every candidate split tried). Falls back to the median when no split qualifies."""
    rows, seen = [], {}
    for tau in [*(i / 100 for i in range(1, 100)), float(np.median(rates))]:
        lab = (rates > tau).astype(int)
        n_s = int(lab.sum())
        minority = min(n_s, len(lab) - n_s)
        if minority / len(lab) < min_minority or minority < folds:
            continue
        key = lab.tobytes()
        if key not in seen:
            seen[key] = lda_cv_f1(X, lab, folds, seed)
        rows.append({"tau": tau, "n_success": n_s, "n_failure": len(lab) - n_s, "f1": seen[key]})
    table = pd.DataFrame(rows, columns=["tau", "n_success", "n_failure", "f1"])
    if table.empty:
        return float(np.median(rates)), float("nan"), table
    best = table.sort_values(["f1", "tau"], ascending=[False, True]).iloc[0]
    return float(best["tau"]), float(best["f1"]), table


def paper_split(
    X: np.ndarray, rates: np.ndarray, combined: np.ndarray | None, folds: int = 5, seed: int = 42
) -> tuple[str, float, float, pd.DataFrame]:
    """04b's adaptive split (`sweep_subspace_parameters`, 04b:656-752): for metric in (detection_rate,
    combined_rate) and τ in 0.01 … 0.99 then the median, success = metric > τ; a split needs minority share > 0.2
    (04b:703-704) and ≥ `folds` per class (04b:829-833); its score is the LDA macro-F1 over StratifiedKFold(5,
    shuffle, 42) with the rows ordered success first (04b:812-856); the first strictly best wins. Returns (metric,
    τ, F1, every split tried)."""
    metrics = {"detection_rate": rates} | ({"combined_rate": combined} if combined is not None else {})
    rows, best = [], ("combined_rate", 0.2, -1.0)  # 04b:669-671 defaults when nothing qualifies
    for name, m in metrics.items():
        for tau in [*(i / 100 for i in range(1, 100)), float(np.median(m))]:
            s = m > tau
            n_s = int(s.sum())
            if min(n_s, len(s) - n_s) / len(s) <= 0.2 or min(n_s, len(s) - n_s) < folds:
                continue
            order = np.r_[np.flatnonzero(s), np.flatnonzero(~s)]
            f1 = lda_cv_f1(X[order], s[order].astype(int), folds, seed)
            rows.append({"metric": name, "tau": tau, "n_success": n_s, "n_failure": len(s) - n_s, "f1": f1})
            if f1 > best[2]:
                best = (name, tau, f1)
    return best[0], float(best[1]), float(best[2]), pd.DataFrame(rows)


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def meandiff_direction(X: np.ndarray, success: np.ndarray) -> np.ndarray:
    return unit(X[success].mean(0) - X[~success].mean(0))


def pca(X: np.ndarray, rates: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components [k, d], explained variance ratios [k], scores [N, k]) of the L2-normalised rows; PC1 is signed to
    correlate positively with `rates`."""
    from sklearn.decomposition import PCA

    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    k = min(n, *Xn.shape)
    p = PCA(n_components=k, svd_solver="full").fit(Xn)
    comps, scores = p.components_.copy(), p.transform(Xn)
    if np.std(rates) > 0 and np.corrcoef(scores[:, 0], rates)[0, 1] < 0:
        comps[0], scores[:, 0] = -comps[0], -scores[:, 0]
    return comps, p.explained_variance_ratio_, scores


def nested_ridge(
    X: np.ndarray,
    y: np.ndarray,
    outer: int = 5,
    inner: int = 3,
    alphas: Sequence[float] = ALPHAS,
    seed: int = 42,
    centring: str = "fold",
) -> dict:
    """Out-of-fold predictions of detection rate; each outer fold fits on its training concepts. `centring="fold"`
    (the lab): X and y centred with the training fold's means only; `"global"` (04b:964-966): with the means over
    every concept, before the folds. Returns pooled and per-fold R², chosen alphas and the test index sets (04b
    reports the mean of the fold R²s, `r2_folds`; the lab the pooled one)."""
    import warnings

    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    if centring == "global":
        X, y = X - X.mean(0), y - y.mean()
    pred, folds, r2s, chosen = np.full(len(y), np.nan), [], [], []
    for tr, te in KFold(outer, shuffle=True, random_state=seed).split(X):
        mx, my = (X[tr].mean(0), y[tr].mean()) if centring == "fold" else (0.0, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = RidgeCV(alphas=list(alphas), cv=inner).fit(X[tr] - mx, y[tr] - my)
        pred[te] = m.predict(X[te] - mx) + my
        ss = float(((y[te] - y[te].mean()) ** 2).sum())
        r2s.append(1 - float(((y[te] - pred[te]) ** 2).sum()) / ss if ss > 0 else 0.0)
        chosen.append(float(m.alpha_))
        folds.append((tr.tolist(), te.tolist()))
    ss = float(((y - y.mean()) ** 2).sum())
    pooled = 1 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 0.0
    out = {"r2_pooled": pooled, "r2_folds": r2s, "alphas": chosen, "pred": pred.tolist(), "folds": folds}
    return out | {"r2_mean_folds": float(np.mean(r2s))}


def ridge_direction(X: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS) -> np.ndarray:
    """Unit ridge coefficient vector on all concepts (RidgeCV, 5-fold), signed to correlate positively with y."""
    import warnings

    from sklearn.linear_model import RidgeCV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = RidgeCV(alphas=list(alphas), cv=min(5, len(y))).fit(X - X.mean(0), y - y.mean())
    w = unit(m.coef_)
    return -w if np.std(y) > 0 and np.corrcoef(X @ w, y)[0, 1] < 0 else w


def decompose(vectors: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(projection on the unit direction, residual) per row; projection + residual == vectors."""
    u = direction.to(vectors.dtype) / direction.norm()
    proj = (vectors @ u)[:, None] * u[None, :]
    return proj, vectors - proj


@dataclass
class Geometry:
    concepts: list[str]
    rates: list[float]
    tau: float
    tau_f1: float
    tau_source: str
    n_success: int
    n_failure: int
    explained: list[float]
    pc1_meandiff_cos: float
    pc1_refusal_cos: float
    meandiff_refusal_cos: float
    ridge_r2: float
    ridge_r2_folds: list[float]
    ridge_alphas: list[float]
    meandiff_proj_rate_corr: float
    pc_scores: list[list[float]] = field(repr=False)
    extra: dict = field(default_factory=dict)
    split_metric: str = "detection_rate"  # what τ splits: detection_rate, or combined_rate (split="paper")
    ridge_method: str = "lab"  # lab: pooled R², in-fold centring; paper: mean of fold R², global centring


def analyse(
    X: np.ndarray,
    rates: np.ndarray,
    concepts: Sequence[str],
    refusal: np.ndarray | None,
    tau: float | None = None,
    n_pcs: int = 10,
    seed: int = 42,
    split: str = "detection",
    ridge: str = "lab",
    combined: np.ndarray | None = None,
) -> tuple[Geometry, dict[str, np.ndarray]]:
    """Everything above for one layer; also returns the directions (meandiff, pc1, ridge). `split="paper"` chooses
    τ over detection and combined rate (`paper_split`; `combined` = per-concept P(detected ∧ identified));
    `ridge="paper"` reports the mean fold R² with global centring (04b:964-990) as `ridge_r2`."""
    metric, split_on = "detection_rate", rates
    if tau is None and split == "paper":
        metric, tau, f1, _ = paper_split(X, rates, combined, seed=seed)
        split_on, source = (combined if metric == "combined_rate" else rates), "cv_lda_f1_paper"
    elif tau is None:
        tau, f1, _ = choose_threshold(X, rates, seed=seed)
        source = "cv_lda_f1" if f1 == f1 else "median"  # no split had the minority for CV: the median's
    else:
        f1, source = float("nan"), "fixed"
    success = split_on > tau
    if success.all() or (~success).all():
        from lab.errors import LabError

        raise LabError(
            f"no success/failure split: every concept's detection rate is on one side of τ={tau:.3f} "
            f"(rates {min(rates):.2f}..{max(rates):.2f}): the geometry needs concepts detected at different rates "
            "(a model that never claims detection, e.g. a base model, gives none; configs/geometry-demo.yaml says "
            "what to run instead)"
        )
    md = meandiff_direction(X, success)
    comps, ratios, scores = pca(X, rates, n_pcs)
    rid = nested_ridge(X, rates, seed=seed, centring="global" if ridge == "paper" else "fold")
    ref = unit(refusal) if refusal is not None else None
    cos = lambda a, b: float(np.dot(unit(a), unit(b)))
    g = Geometry(
        list(concepts),
        rates.tolist(),
        float(tau),
        f1,
        source,
        int(success.sum()),
        int((~success).sum()),
        ratios.tolist(),
        cos(comps[0], md),
        cos(comps[0], ref) if ref is not None else float("nan"),
        cos(md, ref) if ref is not None else float("nan"),
        rid["r2_mean_folds"] if ridge == "paper" else rid["r2_pooled"],
        rid["r2_folds"],
        rid["alphas"],
        float(np.corrcoef(X @ md, rates)[0, 1]) if np.std(rates) > 0 else float("nan"),
        scores.tolist(),
        split_metric=metric,
        ridge_method=ridge,
    )
    return g, {"meandiff": md, "pc1": comps[0], "ridge": ridge_direction(X, rates)}


def save_inputs(
    out: str | os.PathLike,
    vectors: dict[str, torch.Tensor],
    rates: pd.DataFrame,
    refusal: torch.Tensor | None,
    layer: int,
) -> Path:
    """What a model-free rerun needs: the vectors, the refusal direction at the layer, the per-concept rates."""
    from safetensors.torch import save_file

    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    save_file({c: v.contiguous().float() for c, v in vectors.items()}, str(o / VECTORS), metadata={"layer": str(layer)})
    if refusal is not None:
        save_file({"direction": refusal.contiguous().float()}, str(o / REFUSAL), metadata={"layer": str(layer)})
    rates.to_csv(o / RATES_FILE, index=False)
    return o


def load_inputs(path: str | os.PathLike) -> tuple[np.ndarray, pd.DataFrame, np.ndarray | None]:
    """(vectors [N, d] in the rates' row order, the rates of concepts with a vector, the refusal direction or None)
    from a directory written by `save_inputs`, in float64 as `analyse` got them in the job."""
    from safetensors.torch import load_file

    o = Path(path)
    vecs = load_file(str(o / VECTORS))
    rates = pd.read_csv(o / RATES_FILE)
    rates = rates[rates.concept.isin(vecs)].reset_index(drop=True)
    X = torch.stack([vecs[c] for c in rates.concept]).double().numpy()
    ref = load_file(str(o / REFUSAL))["direction"].double().numpy() if (o / REFUSAL).is_file() else None
    return X, rates, ref


def rerun(
    path: str | os.PathLike, tau: float | None = None, split: str | None = None, ridge: str | None = None
) -> Geometry:
    """Recompute from a directory written by `save_inputs` (the geometry job's <output_dir>/analysis); `split` and
    `ridge` default to what the stored result used."""
    o = Path(path)
    o = o / "analysis" if (o / "analysis" / VECTORS).is_file() else o
    X, rates, ref = load_inputs(o)
    prev = json.loads((o / RESULT).read_text()) if (o / RESULT).is_file() else {}
    if tau is None:
        tau = prev["tau"] if prev.get("tau_source") == "fixed" else None
    split = split or ("paper" if prev.get("tau_source") == "cv_lda_f1_paper" else "detection")
    ridge = ridge or prev.get("ridge_method", "lab")
    combined = rates["combined"].to_numpy(float) if "combined" in rates.columns else None
    return analyse(
        X, rates["rate"].to_numpy(float), list(rates.concept), ref, tau, split=split, ridge=ridge, combined=combined
    )[0]


def report_lines(g: Geometry) -> list[str]:
    ev = ", ".join(f"{x:.3f}" for x in g.explained[:5])
    return [
        (
            f"concepts: {len(g.concepts)}  success ({g.split_metric} > τ={g.tau:.3f}, {g.tau_source}, CV macro-F1 "
            f"{g.tau_f1:.3f}): {g.n_success}  failure: {g.n_failure}"
        ),
        f"PCA explained variance (first 5): {ev}",
        (
            f"cos(mean-diff, refusal) = {g.meandiff_refusal_cos:.3f}; corr(projection on mean-diff, rate) = "
            f"{g.meandiff_proj_rate_corr:.3f} (in-sample)"
        ),
        f"ridge nested CV: R² {'mean of folds, global centring (04b)' if g.ridge_method == 'paper' else 'pooled'} "
        f"{g.ridge_r2:.3f}, per fold " + " ".join(f"{r:.2f}" for r in g.ridge_r2_folds),
        f"pc1_meandiff_cos={g.pc1_meandiff_cos:.4f} pc1_refusal_cos={g.pc1_refusal_cos:.4f}",
    ]


def write_result(g: Geometry, out: str | os.PathLike) -> Path:
    p = Path(out) / RESULT
    p.write_text(json.dumps(asdict(g), indent=1))
    return p


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
        pca_scatter(np.array(g.pc_scores), g.rates, list(concepts), g.explained, rep / "pca.png", title),
        cosines(cos, rep / "cosines.png", title),
        part_rates(table, rep / "parts.png", title),
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


if __name__ == "__main__":
    import re

    from lab.errors import ArgumentParser, LabError, input_folder, one_line_errors
    from lab.run.tracking import resolve_source

    with one_line_errors():
        ap = ArgumentParser(prog="python -m analysis.geometry", description="Rerun the geometry from stored outputs")
        ap.add_argument("--run", required=True, help="the job's output_dir (or its analysis/ dir), or an MLflow run id")
        ap.add_argument("--tau", type=float, help="a fixed success threshold in [0, 1] (default: as stored / CV)")
        ap.add_argument("--tracking-uri", help="MLflow URI for a run id (default: $MLFLOW_TRACKING_URI or sqlite)")
        ap.add_argument("--split", choices=["detection", "paper"], help="τ over detection rate, or 04b's two metrics")
        ap.add_argument("--ridge", choices=["lab", "paper"], help="pooled R² (lab) or 04b's mean fold R²")
        ns = ap.parse_args()
        if ns.tau is not None and not 0 <= ns.tau <= 1:
            raise LabError(f"--tau is a detection rate in [0, 1], got {ns.tau}")
        run = ns.run
        src = resolve_source(run, ns.tracking_uri).directory if re.fullmatch(r"[0-9a-f]{32}", run) else Path(run)
        need = [f"{f}|analysis/{f}" for f in (VECTORS, RATES_FILE)]
        input_folder(
            str(src), *need, what="--run" if src == Path(run) else f"output_dir of run {run}", made_by="jobs.geometry"
        )
        for line in report_lines(rerun(src, ns.tau, ns.split, ns.ridge)):
            print(line)
