"""The reproduction scorecard: each stored run's numbers beside the paper's headlines, with intervals, and per row
whether the run is comparable (same model, judge instrument, stimuli, n) and if not why.

The paper's numbers are versioned data (`analysis/data/paper_headlines.yaml`, each row naming its source). A run is
a stored output folder; what it measures is read from the files its job wrote (no model, no Ray, no MLflow here):
  trial Parquet at its root   fpr (Wilson interval), fpr_minus_tpr (Newcombe interval), peak_depth (≥ 3 layers; no
                              interval: it is the index of the best layer)
  original/ + abliterated/    tpr_before/after, introspection_before/after (Wilson), fpr_delta (Newcombe)
                              (jobs.abliteration)
  analysis/geometry.json      pc1_meandiff_cos, pc1_refusal_cos (jobs.geometry), with a bootstrap interval from the
                              inputs stored beside it (`geometry_bootstrap`)
  regression/spec.json        r2_features, r2_projection by the paper's procedure (analysis.regression; the nested
                              estimate is shown in the note), with a bootstrap interval (`_regression`)
  report/causal.csv           gates_ablate, gates_patch: Δ logit-based detection with the concept-bootstrap interval
                              analysis.gates_report stored (jobs.gates; a Yes − No logit, never the paper's judged
                              detection, so never comparable on the instrument)
  arms/*/result.json          bias_tpr_gain, bias_fpr, bias_introspection_gain (jobs.steering_vector; the first
                              trained arm against `baseline`; Newcombe, Wilson, Newcombe)
Every row says which interval it has (the `interval` column), or why it has none. The two bootstraps are computed here
from stored outputs, seeded and with a fixed number of resamples (`--resamples`, `--seed`; 1000 and 0 by default):
- geometry: concepts resampled with replacement within the stored success and failure classes (the split at the
  stored τ: τ's cross-validated choice is not re-made, so its variability is not in the interval), PC1 and the
  mean-difference direction recomputed as `analysis.geometry.pca` and `meandiff_direction` define them (PC1 signed
  as the point estimate's: correlating positively with the resample's detection rates; computed through the Gram
  matrix, `_Cosines`), the refusal direction held fixed; 2.5 and 97.5 percentiles. A geometry.json without its
  inputs beside it (vectors.safetensors, rates.csv), or whose inputs do not reproduce its cosines, says "no
  interval" and why.
- regression: concepts resampled with replacement, R² recomputed on the pooled out-of-fold predictions of the
  paper's procedure at its chosen N and α (`analysis.regression.bootstrap`, as the lab's nested estimate's interval).
  This is the sampling spread of the concepts, not the spread over the 30 outer folds (whose R²s are not the pooled
  R² the paper reports, each on ~N/30 concepts); the choice of N and α on those same folds is not redone inside
  a resample, so the paper's selection optimism is not in it either.
Comparable means: the run's model is the paper's, its judge is the paper's instrument (gpt-4.1-mini with the
`paper` prompt), its prompt variants / formats / number of concepts are the paper's, and it has at least the
paper's n where the paper's code fixes n. Anything else says why not, e.g. "not comparable: model, judge".
`python -m analysis.scorecard --run DIR [--run DIR …]` prints the table and logs it to MLflow (only there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lab.reporting.metrics import summarize

HEADLINES_FILE = Path(__file__).resolve().parent / "data" / "paper_headlines.yaml"
PAPER_JUDGE = ("gpt-4.1-mini", "@paper")  # judge_version "openai:gpt-4.1-mini@paper…" (lab/judges/llm.py)
BOOT_RESAMPLES, BOOT_SEED = 1000, 0  # the scorecard's own bootstraps (geometry, regression): resamples and seed
GEOMETRY_MEASURES = ("pc1_meandiff_cos", "pc1_refusal_cos")


def headlines(path: str | Path = HEADLINES_FILE) -> tuple[str, list[dict[str, Any]]]:
    """(version, rows) of the paper's headline numbers."""
    data = yaml.safe_load(Path(path).read_text())
    return str(data["version"]), list(data["rows"])


# ------------------------------------------------------------------------------------------------ reading runs
def _trials(root: Path) -> pd.DataFrame | None:
    from lab.run import store

    return store.read(root) if store.shard_files(root) else None


def _model(name: str) -> str:
    """The registry name behind a trial's `model` key (drops `@dtype` and `+adapter@hash`)."""
    return str(name).split("+", 1)[0].split("@", 1)[0]


def trial_facts(df: pd.DataFrame) -> dict[str, Any]:
    """What a comparison needs to know about a table of trials."""
    facts: dict[str, Any] = {
        "model": sorted({_model(m) for m in df["model"].dropna()}),
        "judge": sorted({str(v) for v in df.get("judge_version", pd.Series(dtype=str)).dropna()}),
        "prompt_variants": sorted(set(df.get("prompt_variant", pd.Series(dtype=str)).dropna())),
        "dialogue_formats": sorted(set(df.get("dialogue_format", pd.Series(dtype=str)).dropna())),
        "concepts": int(df.loc[df.kind == "injection", "concept"].nunique()),
    }
    return facts


def _rate(s: Mapping[str, float], name: str, facts: Mapping[str, Any], n_key: str | None = None) -> dict[str, Any]:
    return {
        "value": s.get(name, math.nan),
        "lo": s.get(f"{name}_lo", math.nan),
        "hi": s.get(f"{name}_hi", math.nan),
        "n": s.get(n_key or f"n_{name}", math.nan),
        "facts": dict(facts),
        "interval": "Wilson",
    }


def _diff(after: Mapping[str, float], before: Mapping[str, float], name: str, facts: Mapping[str, Any]) -> dict:
    """after − before of one rate, with Newcombe's hybrid score interval (analysis.compare)."""
    from analysis.compare import diff_interval

    na, nb = int(after.get(f"n_{name}", 0)), int(before.get(f"n_{name}", 0))
    d, lo, hi = diff_interval(round(after.get(name, 0) * na), na, round(before.get(name, 0) * nb), nb)
    return {"value": d, "lo": lo, "hi": hi, "n": min(na, nb), "facts": dict(facts), "interval": "Newcombe"}


def _relative(after: Mapping[str, float], before: Mapping[str, float], name: str, facts: Mapping[str, Any]) -> dict:
    """(after − before) / before of one rate — the paper's "Change" column for the trained bias vector
    (14:1624-1638: `delta = ((l29 - bl) / bl * 100)`, printed as +75 %) — with Katz's log interval of the ratio
    after / before, minus 1 (no interval when either count is 0; the value is inf when before is 0, as 14 prints)."""
    na, nb = int(after.get(f"n_{name}", 0)), int(before.get(f"n_{name}", 0))
    xa, xb = round(after.get(name, 0) * na), round(before.get(name, 0) * nb)
    out = {"n": min(na, nb), "facts": dict(facts), "interval": "Katz log ratio", "lo": math.nan, "hi": math.nan}
    if not (na and nb):
        return out | {"value": math.nan}
    if xb == 0:
        return out | {"value": math.inf if xa else math.nan, "interval": "none: the baseline count is 0"}
    value = (xa / na) / (xb / nb) - 1
    if xa == 0:
        return out | {"value": value, "interval": "none: the arm's count is 0"}
    se = math.sqrt(1 / xa - 1 / na + 1 / xb - 1 / nb)
    return out | {
        "value": value,
        "lo": (value + 1) * math.exp(-1.96 * se) - 1,
        "hi": (value + 1) * math.exp(1.96 * se) - 1,
    }


def _peak_depth(df: pd.DataFrame, facts: Mapping[str, Any]) -> dict[str, Any] | None:
    from lab.model.loading import spec_for

    inj = df[(df.kind == "injection") & ~df.forced.astype(bool) & df.detected.notna()]
    if inj["layer"].nunique() < 3 or len(facts["model"]) != 1:
        return None
    spec = spec_for(facts["model"][0])
    if spec is None:
        return None
    by = inj.assign(d=inj.detected.astype(bool)).groupby("layer")["d"].mean()
    best = int(by.idxmax())
    facts = dict(facts)
    return {"value": best / spec.n_layers, "lo": math.nan, "hi": math.nan, "n": len(inj), "facts": facts} | {
        "interval": "none: the best layer's depth"
    }


def measures(run: str | Path, resamples: int = BOOT_RESAMPLES, seed: int = BOOT_SEED) -> dict[str, dict[str, Any]]:
    """Every measure this run's stored files give: name → {value, lo, hi, n, facts, interval[, note]}; `resamples`
    and `seed` are those of the bootstraps computed here (geometry, regression)."""
    root, out = Path(run), {}
    df = _trials(root)
    if df is not None and len(df):
        facts, s = trial_facts(df), summarize(df)
        out["fpr"] = _rate(s, "fpr", facts)
        out["fpr_minus_tpr"] = _diff({"d": s["fpr"], "n_d": s["n_fpr"]}, {"d": s["tpr"], "n_d": s["n_tpr"]}, "d", facts)
        if (peak := _peak_depth(df, facts)) is not None:
            out["peak_depth"] = peak
    before, after = _trials(root / "original"), _trials(root / "abliterated")
    if before is not None and after is not None:
        facts, sb, sa = trial_facts(pd.concat([before, after])), summarize(before), summarize(after)
        for name in ("tpr", "introspection"):
            out[f"{name}_before"], out[f"{name}_after"] = _rate(sb, name, facts), _rate(sa, name, facts)
        out["fpr_delta"] = _diff(sa, sb, "fpr", facts)
    out |= _geometry(root, resamples, seed) | _regression(root, resamples, seed) | _gates(root) | _bias(root)
    return out


class _Cosines:
    """cos(PC1, mean-diff) and, with a refusal direction, cos(PC1, refusal) of any multiset of the concepts (row
    indices, repeats allowed), as `analysis.geometry.analyse` defines them: PC1 of the L2-normalised rows, signed so
    the PC1 scores correlate positively with the detection rates; the unit difference of the success and failure
    means of the raw rows (`analysis.geometry.meandiff_direction`). Computed for N³ instead of N²·d work per
    resample (500 concepts × 5376 dimensions through scikit-learn's full SVD: ~20 s per resample on this project's
    shared 2-core box): PC1 ∝ (rows − their mean)ᵀ u with u the top eigenvector of the centred Gram matrix of the
    resampled normalised rows (a sub-matrix of one Gram matrix computed once; LAPACK's exact eigensolver), the
    direction `analysis.geometry.pca`'s SVD finds; the scores are λ·u, so u's correlation with the rates sets the
    sign; sums over a resample's rows are count-weighted sums over the stored rows. tests/analysis/test_scorecard.py
    checks a resample against `pca` and `meandiff_direction` themselves, and `_geometry_interval` checks the whole
    sample against the stored point estimate before it gives an interval."""

    def __init__(self, X: np.ndarray, rates: np.ndarray, success: np.ndarray, refusal: np.ndarray | None):
        from analysis.geometry import unit

        self.X, self.rates, self.success = X, rates, success
        self.Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # as analysis.geometry.pca
        self.K = self.Xn @ self.Xn.T
        self.ref = unit(refusal) if refusal is not None else None

    def __call__(self, i: np.ndarray) -> dict[str, float]:
        import scipy.linalg

        from analysis.geometry import unit

        n, k = len(self.X), self.K[np.ix_(i, i)]
        c = k - k.mean(0) - k.mean(1)[:, None] + k.mean()
        u = scipy.linalg.eigh((c + c.T) / 2, subset_by_index=[len(i) - 1, len(i) - 1])[1][:, 0]
        y = self.rates[i]
        if np.std(y) > 0 and np.corrcoef(u, y)[0, 1] < 0:
            u = -u
        pc1 = unit(self.Xn.T @ np.bincount(i, weights=u - u.mean(), minlength=n))
        s = self.success[i]
        w = np.bincount(i[s], minlength=n) / s.sum() - np.bincount(i[~s], minlength=n) / (~s).sum()
        out = {"pc1_meandiff_cos": float(np.dot(pc1, unit(self.X.T @ w)))}
        return out | ({"pc1_refusal_cos": float(np.dot(pc1, self.ref))} if self.ref is not None else {})


def geometry_bootstrap(
    X: np.ndarray,
    rates: np.ndarray,
    success: np.ndarray,
    refusal: np.ndarray | None,
    resamples: int = BOOT_RESAMPLES,
    seed: int = BOOT_SEED,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals (2.5 and 97.5 percentiles) of the geometry cosines over `resamples` resamples of
    the concepts: drawn with replacement within the success and within the failure class (`success`, the stored
    split: τ is not re-chosen), each resample's PC1 and mean-difference direction recomputed (`_Cosines`), the
    refusal direction fixed."""
    import scipy.linalg  # noqa: F401  (loaded before the limit below, so that its BLAS is limited too)
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    rng, cosines = np.random.default_rng(seed), _Cosines(X, rates, success, refusal)
    s, f = np.flatnonzero(success), np.flatnonzero(~success)
    vals: dict[str, list[float]] = {}
    with threadpool_limits(1):  # N × N eigensolves: one BLAS thread is fastest (12 ms vs 1.5 s at N=500 here)
        for _ in range(resamples):
            for k, v in cosines(np.r_[rng.choice(s, len(s)), rng.choice(f, len(f))]).items():
                vals.setdefault(k, []).append(v)
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in vals.items()}


def _geometry_interval(folder: Path, g: Mapping[str, Any], resamples: int, seed: int) -> tuple[dict, str]:
    """(bootstrap intervals, what they are) from the inputs `analysis.geometry.save_inputs` stored beside
    geometry.json; ({}, why not) where they are missing or do not reproduce the stored cosines."""
    from analysis import geometry as geo

    if not ((folder / geo.VECTORS).is_file() and (folder / geo.RATES_FILE).is_file()):
        return {}, f"no interval: {geo.VECTORS} and {geo.RATES_FILE} not stored beside geometry.json"
    X, rates, ref = geo.load_inputs(folder)
    split_on = "combined" if g.get("split_metric") == "combined_rate" else "rate"
    if list(rates.concept) != list(g["concepts"]) or split_on not in rates.columns:
        return {}, "no interval: the stored inputs are not geometry.json's concepts"
    y, success = rates["rate"].to_numpy(float), rates[split_on].to_numpy(float) > float(g["tau"])
    point = _Cosines(X, y, success, ref)(np.arange(len(y)))  # must be the stored point estimate
    if any(not abs(v - g[k]) <= 1e-6 for k, v in point.items()):
        return {}, "no interval: the stored inputs do not reproduce geometry.json's cosines"
    label = f"bootstrap ×{resamples}: concepts within success/failure (τ fixed), seed {seed}"
    return geometry_bootstrap(X, y, success, ref, resamples, seed), label


def _geometry(root: Path, resamples: int = BOOT_RESAMPLES, seed: int = BOOT_SEED) -> dict[str, dict[str, Any]]:
    path = next((p for p in (root / "analysis" / "geometry.json", root / "geometry.json") if p.is_file()), None)
    if path is None:
        return {}
    g = json.loads(path.read_text())
    src = g.get("extra", {}).get("source")
    facts = trial_facts(_trials(Path(src))) if src and Path(src).is_dir() and _trials(Path(src)) is not None else {}
    facts = dict(facts) | {"model": [g.get("extra", {}).get("model", "unknown")], "concepts": len(g["concepts"])}
    n = len(g["concepts"])
    ci, label = _geometry_interval(path.parent, g, resamples, seed)
    out = {}
    for k in GEOMETRY_MEASURES:
        lo, hi = ci.get(k, (math.nan, math.nan))
        why = label if k in ci or not ci else "no interval: no refusal direction stored"
        out[k] = {"value": g[k], "lo": lo, "hi": hi, "n": n, "facts": facts, "interval": why}
    return out


def _regression(root: Path, resamples: int = BOOT_RESAMPLES, seed: int = BOOT_SEED) -> dict[str, dict[str, Any]]:
    """r2_features and r2_projection by the paper's procedure (04h), each with a 95 % percentile interval over
    `resamples` bootstrap resamples of the concepts of its pooled out-of-fold predictions (N and α as chosen)."""
    from analysis.regression import bootstrap, summarize_fits

    reg = root / "regression" if (root / "regression" / "spec.json").is_file() else root
    if not (reg / "spec.json").is_file() or not (reg / "features.parquet").is_file():
        return {}
    spec = json.loads((reg / "spec.json").read_text())
    s = summarize_fits(reg)
    facts = {"model": [spec.get("model", "unknown")], "concepts": int(s["n_concepts"])}
    note = f"04h's procedure (best N × α on its own folds); nested estimate {s['r2_nested']:.3f}"
    y = pd.read_parquet(reg / "features.parquet")["detection_rate"].to_numpy(float)
    label = f"bootstrap ×{resamples}: concepts of the out-of-fold predictions ({{}} fixed), seed {seed}"
    lo, hi = bootstrap(y, np.asarray(s["paper_pred"]), resamples, seed)
    plo, phi = bootstrap(y, np.asarray(s["paper_projection_pred"]), resamples, seed)
    return {
        "r2_features": {"value": s["r2_paper"], "lo": lo, "hi": hi, "n": s["n_concepts"], "facts": facts}
        | {"note": note + f", N {s['paper_n']}", "interval": label.format("N, α")},
        "r2_projection": {
            "value": s["r2_paper_projection"],
            "lo": plo,
            "hi": phi,
            "n": s["n_concepts"],
            "facts": facts,
            "note": f"global mean-diff projection; nested {s['r2_projection_nested']:.3f}",
            "interval": label.format("α"),
        },
    }


def _gates(root: Path) -> dict[str, dict[str, Any]]:
    tables = sorted(root.glob("report/causal.csv")) + sorted(root.glob("*/report/causal.csv"))
    if not tables:
        return {}
    t = pd.read_csv(tables[0]).set_index("condition")
    meta = tables[0].parent.parent / "meta.json"
    model = json.loads(meta.read_text()).get("model", "unknown") if meta.is_file() else "unknown"
    facts = {"model": [_model(model)], "judge": ["yes-no logit"]}
    out = {}
    for name, cond in (("gates_ablate", "ablate:gates"), ("gates_patch", "patch:gates")):
        if cond in t.index:
            r = t.loc[cond]
            out[name] = {
                "value": float(r["d_detection"]),
                "lo": float(r["d_detection_lo"]),
                "hi": float(r["d_detection_hi"]),
                "n": int(r["n"]),
                "facts": facts,
                "note": "Δ P(Yes) > P(No), points",
                "interval": "bootstrap over concepts (jobs.gates' stored one)",
            }
    return out


def _bias(root: Path) -> dict[str, dict[str, Any]]:
    arms = {p.parent.name: json.loads(p.read_text())["result"] for p in sorted(root.glob("arms/*/result.json"))}
    trained = [a for a in arms if a != "baseline"]
    if "baseline" not in arms or not trained:
        return {}
    base, arm = arms["baseline"], arms[trained[0]]
    facts = {"model": [arm.get("model", "unknown")], "concepts": arm.get("concepts_evaluated", math.nan)}
    note = f"arm {trained[0]}, evaluation protocol {arm.get('evaluation_protocol', 'lab')}"
    return {
        "bias_tpr_gain": _relative(arm, base, "tpr", facts) | {"note": note + ", relative change"},
        "bias_fpr": _rate(arm, "fpr", facts) | {"note": note},
        "bias_introspection_gain": _relative(arm, base, "introspection", facts) | {"note": note + ", relative change"},
    }


# ------------------------------------------------------------------------------------------------ comparing
def why_not(row: Mapping[str, Any], m: Mapping[str, Any]) -> list[str]:
    """The reasons a measured number is not comparable with the paper's row (empty: comparable)."""
    f, why = m.get("facts", {}), []
    if f.get("model") != [row["model"]]:
        why.append("model")
    judges = f.get("judge")
    if row.get("judge") == "paper" and (not judges or any(not all(p in j for p in PAPER_JUDGE) for j in judges)):
        why.append("judge")
    stim = row.get("stimuli") or {}
    for key in ("prompt_variants", "dialogue_formats"):
        if key in stim and f.get(key) is not None and sorted(f[key]) != sorted(stim[key]):
            why.append("stimuli")
            break
    else:
        if "concepts" in stim and f.get("concepts") is not None and f["concepts"] != stim["concepts"]:
            why.append("stimuli")
    if row.get("n") and (m.get("n") is None or not m["n"] == m["n"] or m["n"] < row["n"]):
        why.append("n")
    return why


def scorecard(
    runs: Sequence[str | Path],
    rows: Sequence[Mapping[str, Any]] | None = None,
    resamples: int = BOOT_RESAMPLES,
    seed: int = BOOT_SEED,
) -> pd.DataFrame:
    """One line per (paper row, run that measures it): the paper's number, the run's with its interval (and what
    that interval is) and n, and `comparable` / `why`. Paper rows no run measures appear once with an empty run.
    `resamples` and `seed`: the bootstraps computed here (geometry, regression)."""
    rows = headlines()[1] if rows is None else rows
    got = {str(r): measures(r, resamples, seed) for r in runs}
    out = []
    for row in rows:
        hits = [(run, ms[row["measure"]]) for run, ms in got.items() if row["measure"] in ms]
        base = {
            "key": row["key"],
            "claim": row["claim"],
            "paper": row.get("value"),
            "paper_range": row.get("range"),
            "source": row["source"],
        }
        if not hits:
            out.append(base | {"run": "", "value": math.nan, "comparable": False, "why": "not measured by these runs"})
        for run, m in hits:
            why = why_not(row, m)
            v = m["value"]
            inside = None
            if row.get("range") and v == v:
                inside = row["range"][0] <= v <= row["range"][1]
            elif row.get("value") is not None and m["lo"] == m["lo"]:
                inside = m["lo"] <= row["value"] <= m["hi"]
            out.append(
                base
                | {
                    "run": run,
                    "value": v,
                    "value_lo": m["lo"],
                    "value_hi": m["hi"],
                    "n_value": m["n"],
                    "interval": m.get("interval", ""),
                    "paper_in_interval": inside,
                    "comparable": not why,
                    "why": "comparable" if not why else "not comparable: " + ", ".join(why),
                    "note": m.get("note", ""),
                }
            )
    return pd.DataFrame(out)


def _paper_cell(r: Mapping[str, Any]) -> str:
    if r.get("paper_range"):
        return f"in [{r['paper_range'][0]:g}, {r['paper_range'][1]:g}]"
    return "n/a" if r.get("paper") is None or r["paper"] != r["paper"] else f"{r['paper']:+.3f}"


def _value_cell(r: Mapping[str, Any]) -> str:
    from lab.reporting.tables import interval

    v, lo, n = r.get("value", math.nan), r.get("value_lo", math.nan), r.get("n_value", math.nan)
    if v != v or lo == lo:
        return interval("value", digits=3)(r)
    return f"{v:.3f} (no interval)" + (f" n={int(n)}" if n == n else "")


def print_scorecard(card: pd.DataFrame, version: str = "") -> None:
    from lab.reporting.tables import print_table

    print(f"reproduction scorecard ({version or headlines()[0]}; paper rows: analysis/data/paper_headlines.yaml)")
    cols: list[tuple[str, Any]] = [
        ("row", "{key}"),
        ("paper", _paper_cell),
        ("run", lambda r: Path(str(r["run"])).name or "-"),
        ("run's value [95 %]", _value_cell),
        ("interval", lambda r: str(r.get("interval") or "")),
        ("verdict", "{why}"),
    ]
    print_table(card.fillna({"note": "", "interval": ""}), cols)


def scorecard_metrics(card: pd.DataFrame) -> dict[str, float]:
    """Flat numbers for MLflow: per row and run, the value, its interval (`lo`, `hi`, where it has one) and whether
    it is comparable."""
    out: dict[str, float] = {}
    for i, r in card[card["run"] != ""].iterrows():
        tag = f"{r['key']}/{i}"
        out[f"{tag}/value"] = float(r["value"])
        for end in ("lo", "hi"):
            if (v := float(r.get(f"value_{end}", math.nan))) == v:
                out[f"{tag}/{end}"] = v
        out[f"{tag}/comparable"] = float(bool(r["comparable"]))
    return out


if __name__ == "__main__":
    from lab.errors import ArgumentParser, LabError, input_folder, one_line_errors
    from lab.run.preflight import writable

    with one_line_errors():
        p = ArgumentParser(prog="python -m analysis.scorecard", description="Stored runs beside the paper's headlines")
        p.add_argument("--run", action="append", required=True, help="a stored run's output folder (repeatable)")
        p.add_argument("--out", help="write the table as CSV here (default: none)")
        p.add_argument("--no-mlflow", action="store_true", help="do not log the table to MLflow")
        p.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
        p.add_argument(
            "--resamples", type=int, default=BOOT_RESAMPLES, help="bootstrap resamples (geometry, regression)"
        )
        p.add_argument("--seed", type=int, default=BOOT_SEED, help="the bootstraps' seed (default: 0)")
        a = p.parse_args()
        if a.resamples < 2:
            raise LabError(f"--resamples must be at least 2, got {a.resamples}")
        for run in a.run:
            if not measures(input_folder(run, made_by="a lab job"), 2, a.seed):
                raise LabError(f"--run {run} holds no stored trials or analysis outputs the scorecard reads")
        if a.out:
            writable(Path(a.out).parent, "--out")
        version, _ = headlines()
        card = scorecard(a.run, resamples=a.resamples, seed=a.seed)
        print_scorecard(card, version)
        if a.out:
            card.to_csv(a.out, index=False)
        if not a.no_mlflow:
            from lab.run import tracking

            cfg = tracking.TrackingConfig(uri=a.tracking_uri, experiment="scorecard")
            params = {"headlines": version, "runs": ",".join(a.run), "resamples": a.resamples, "seed": a.seed}
            with tracking.run(cfg, params, {"job": "scorecard"}, "scorecard"):
                tracking.log_metrics(scorecard_metrics(card))
                tracking.log_text(card.to_csv(index=False), "scorecard.csv")
            print("mlflow: logged to experiment 'scorecard'")
