"""From a stored dose-response run to the gate / carrier / pathway report, and the causal-test summary.

    python -m analysis.gates_report --run <dose-response output dir> [--k 20]
redoes everything below from the stored tables (no model): gates.csv, attribution.csv, carriers.csv,
carrier_counts.csv, pathway.csv, summary.json and the plots inverted_v.png, attribution_by_layer.png, pathway.png
in <run>/report/.

Causal summary (`causal_table`): rows are (concept, trial_number, condition, yes_no). Each intervention is compared
with its reference on the same rows — `ablate:<set>` with `steered`, `patch:<set>` with `unsteered` — as the mean
Δ(Yes − No score) and the Δ of logit-based detection (P(Yes) > P(No), i.e. score > 0), each with a 95 % interval from
a bootstrap over concepts (rows of one concept move together); detection rates themselves get Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import carriers as car, gates as gt, gates_plots as plots

REFERENCE = {"ablate": "steered", "patch": "unsteered"}


def analyse(
    run_dir: str | Path,
    k: int = 20,
    gate_layers: list[int] | None = None,
    rho_min: float = 0.5,
    r_min: float = 0.3,
    generic_frac: float = 0.5,
    detection: pd.Series | None = None,
) -> dict[str, Any]:
    from safetensors.torch import load_file

    run = gt.load_run(run_dir)
    feats, rows, meta = run["features"], run["rows"], run["meta"]
    units = gt.dla_units_for(run)
    attr = gt.attribution_table(feats, rows, units)
    gates = gt.select_gates(feats, rows, units, k, gate_layers)
    layers = [int(x) for x in meta["layers"]]
    norms = {lay: run["readout"][f"mlp_norm_weight.{lay}"] for lay in layers}
    enc = car.effective_encoders(run["transcoders"], norms, car.mid_rms(rows, layers))
    carriers = car.select_carriers(feats, rows, gates, run["transcoders"], enc, detection, rho_min, r_min, generic_frac)
    counts = car.carrier_counts(carriers)
    vectors = load_file(str(Path(run_dir) / "vectors.safetensors"))
    inject = int(meta["config"]["inject_layer"])
    path = car.pathway(vectors, inject, rows, carriers, gates, run["transcoders"], enc)
    prof = gt.profile(feats, rows)
    by_s = rows.groupby("strength").agg(yes_no=("yes_no", "mean"), detected=("yes_no", lambda s: float((s > 0).mean())))
    summary = {
        **gt.gate_summary(gates),
        "n_carriers": int(counts["carriers"].sum()) if len(counts) else 0,
        "n_generic_carriers": int(counts["generic"].sum()) if len(counts) else 0,
        "n_features_seen": len(attr),
        "n_rows": len(rows),
        **{f"yes_no_s{s:g}": float(r["yes_no"]) for s, r in by_s.iterrows()},
        **{f"detected_s{s:g}": float(r["detected"]) for s, r in by_s.iterrows()},
    }
    rep = Path(run_dir) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    tables = {
        "gates": gates,
        "attribution": attr,
        "carriers": carriers[carriers["carrier"]] if len(carriers) else carriers,
        "carrier_counts": counts,
        "pathway": path,
    }
    paths = []
    for name, t in tables.items():
        t.to_csv(rep / f"{name}.csv", index=False)
        paths.append(rep / f"{name}.csv")
    (rep / "summary.json").write_text(json.dumps(summary, indent=1))
    title = f"{meta['model']}: injection at L{inject}"
    paths += [
        rep / "summary.json",
        plots.inverted_v_plot(prof, gates, rep / "inverted_v.png", title=f"{title}: top gates vs strength"),
        plots.attribution_by_layer(attr, gates, rep / "attribution_by_layer.png", title=f"{title}: DLA by layer"),
        plots.pathway_plot(path, inject, rep / "pathway.png"),
    ]
    return {**tables, "profile": prof, "summary": summary, "paths": paths, "meta": meta}


def detection_from(run_dir: str | Path, trials_dir: str | None) -> pd.Series | None:
    """Judged per-concept detection from a concept-injection store, at the run's injection layer (None: none)."""
    if not trials_dir:
        return None
    from lab.run import store

    layer = int(json.loads((Path(run_dir) / "meta.json").read_text())["config"]["inject_layer"])
    det = car.judged_detection(store.read(trials_dir), layer)
    if det.empty:
        from lab.errors import LabError

        raise LabError(f"{trials_dir} has no injected trials at layer {layer}")
    return det


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(c - h), float(c + h)


def _boot(per_concept: pd.DataFrame, col: str, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % interval of Σ col / Σ n over concepts resampled with replacement."""
    rng = np.random.default_rng(seed)
    s, n = per_concept[col].to_numpy(float), per_concept["n"].to_numpy(float)
    idx = rng.integers(0, len(s), size=(n_boot, len(s)))
    stats = s[idx].sum(1) / n[idx].sum(1)
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def causal_table(scores: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per intervention condition: n, reference, detection rates with Wilson intervals, mean Δscore and
    Δdetection with concept-bootstrap intervals."""
    keys = [k for k in ("concept", "strength", "trial_number") if k in scores.columns]
    wide = scores.pivot_table(index=keys, columns="condition", values="yes_no").reset_index()
    out = []
    for cond in [c for c in wide.columns if ":" in str(c)]:
        ref = REFERENCE[cond.split(":")[0]]
        d = pd.DataFrame(
            {
                "concept": wide["concept"],
                "d_score": wide[cond] - wide[ref],
                "d_det": (wide[cond] > 0).astype(float) - (wide[ref] > 0).astype(float),
                "det": (wide[cond] > 0).astype(float),
                "det_ref": (wide[ref] > 0).astype(float),
            }
        )
        per = d.groupby("concept").agg(d_score=("d_score", "sum"), d_det=("d_det", "sum"), n=("d_score", "size"))
        n, k, kr = len(d), int(d["det"].sum()), int(d["det_ref"].sum())
        out.append(
            {
                "condition": cond,
                "reference": ref,
                "n": n,
                "n_concepts": len(per),
                "detection": k / n,
                "detection_lo": wilson(k, n)[0],
                "detection_hi": wilson(k, n)[1],
                "detection_ref": kr / n,
                "detection_ref_lo": wilson(kr, n)[0],
                "detection_ref_hi": wilson(kr, n)[1],
                "d_score": float(d["d_score"].mean()),
                **dict(zip(("d_score_lo", "d_score_hi"), _boot(per, "d_score", n_boot, seed))),
                "d_detection": float(d["d_det"].mean()),
                **dict(zip(("d_detection_lo", "d_detection_hi"), _boot(per, "d_det", n_boot, seed))),
            }
        )
    return pd.DataFrame(out)


def random_set(
    attr: pd.DataFrame, gates: pd.DataFrame, n_features: dict[int, int], seed: int = 0
) -> dict[int, list[int]]:
    """A control set: per layer as many features as gates there, drawn from the features active unsteered that
    are not gates (topped up from the rest of the dictionary when too few are active)."""
    rng = np.random.default_rng(seed)
    out: dict[int, list[int]] = {}
    for lay, g in gates.groupby("layer"):
        taken = set(g["feature"].astype(int))
        active = [int(f) for f in attr.loc[(attr["layer"] == lay) & (attr["a0"] > 0), "feature"] if f not in taken]
        pick = list(rng.permutation(active)[: len(g)])
        rest = [f for f in range(n_features[int(lay)]) if f not in taken and f not in pick]
        pick += list(rng.permutation(rest)[: len(g) - len(pick)])
        out[int(lay)] = sorted(int(f) for f in pick)
    return out


def verdict(summary: dict[str, Any], table: pd.DataFrame, min_effect: float = 0.1) -> list[str]:
    """Plain statements: is there a gate in this model by the shape criterion and by the causal tests? A causal
    effect counts only when its interval excludes 0 *and* it is at least `min_effect` logits (or it moves
    logit-detection with an interval above 0): tiny but consistent shifts of a deterministic readout are not a gate."""

    def row(cond: str) -> pd.Series | None:
        hit = table[table["condition"] == cond] if len(table) else table
        return hit.iloc[0] if len(hit) else None

    def real(g: pd.Series) -> bool:
        sig = g["d_score_lo"] > 0 or g["d_score_hi"] < 0
        return bool((sig and abs(g["d_score"]) >= min_effect) or g["d_detection_lo"] > 0 or g["d_detection_hi"] < 0)

    lines = [
        (
            f"gate candidates: {summary['n_gates']}, of which {summary['n_inverted_v']} have an inverted V "
            f"(unsteered activation above both signs, Spearman < 0 for s ≥ 0 and > 0 for s ≤ 0); their summed "
            f"direct attribution to No − Yes unsteered: {summary.get('total_dla', float('nan')):.3g} logits"
        )
    ]
    for kind in ("patch", "ablate"):
        g, r = row(f"{kind}:gates"), row(f"{kind}:random")
        if g is None:
            continue
        beats = r is not None and (g["d_score_lo"] > r["d_score_hi"] or g["d_score_hi"] < r["d_score_lo"])
        lines.append(
            f"{kind} gates: Δ(Yes−No) {g['d_score']:+.3g} [{g['d_score_lo']:+.3g}, {g['d_score_hi']:+.3g}], "
            f"Δdetection {g['d_detection']:+.3f} [{g['d_detection_lo']:+.3f}, {g['d_detection_hi']:+.3f}]"
            + (
                f"; random set Δ(Yes−No) {r['d_score']:+.3g} [{r['d_score_lo']:+.3g}, {r['d_score_hi']:+.3g}]"
                if r is not None
                else ""
            )
            + (" → an effect" if real(g) else f" → no effect (|Δ| < {min_effect:g} logit or interval spans 0)")
            + (", separated from the random control" if beats else ", not separated from the random control")
        )
    patch = row("patch:gates")
    shows = bool(summary["n_inverted_v"] > 0 and patch is not None and real(patch) and patch["d_score"] > 0)
    lines.append(
        "verdict: this model " + ("shows" if shows else "does NOT show") + " a gate by these criteria "
        f"(inverted-V candidates whose steered activations, patched into unsteered runs, raise Yes − No by "
        f"≥ {min_effect:g} logit with an interval above 0, or raise logit-detection)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    import time

    p = argparse.ArgumentParser(description="Gate / carrier / pathway report from a stored dose-response run")
    p.add_argument("--run", required=True, help="dose-response output directory")
    p.add_argument("--k", type=int, default=20, help="gate candidates")
    p.add_argument("--detection", help="a concept-injection results dir: per-concept judged TPR for the carriers")
    a = p.parse_args(argv)
    t0 = time.time()
    res = analyse(a.run, a.k, detection=detection_from(a.run, a.detection))
    print(res["gates"].head(10).to_string(index=False))
    print(res["carrier_counts"].to_string(index=False))
    print(json.dumps(res["summary"]), f"[{time.time() - t0:.1f} s]")
    causal = Path(a.run) / "causal.parquet"
    if causal.is_file():  # written by jobs.gates: redo its summary and verdict too
        table = causal_table(pd.read_parquet(causal))
        table.to_csv(Path(a.run) / "report" / "causal.csv", index=False)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        print("\n".join(verdict(res["summary"], table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
