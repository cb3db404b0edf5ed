"""From a stored dose-response run to the gate / carrier / pathway report, and the causal-test summary.

    python -m analysis.gates_report --run <dose-response output dir> [--k 20]
redoes everything below from the stored tables (no model): gates.csv, attribution.csv, carriers.csv,
carrier_counts.csv, pathway.csv, summary.json and the plots inverted_v.png, attribution_by_layer.png, pathway.png
in <run>/report/.

Causal summary (`causal_table`): rows are (concept, trial_number, condition, yes_no). Each intervention is compared
with its reference on the same rows — `ablate:<set>` with `steered`, `patch:<set>` with `unsteered` — as the mean
Δ(Yes − No score) and the Δ of logit-based detection (P(Yes) > P(No), i.e. score > 0), each with a 95 % interval from
a bootstrap over concepts (rows of one concept move together); detection rates themselves get Wilson intervals.

Figures: `inverted_v_plot` (the top gates' activation against strength), `attribution_by_layer`, `pathway_plot`
(the pathway diagram) and `causal_plot` (the causal Δ of each set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import gates as gt
from lab.reporting.metrics import wilson
from lab.reporting.plots import plt, save

_REFERENCE = {"ablate": "steered", "patch": "unsteered"}


def gate_report(
    run_dir: str | Path,
    k: int = 20,
    gate_layers: list[int] | None = None,
    rho_min: float = 0.5,
    r_min: float = 0.3,
    generic_frac: float = 0.5,
    detection: pd.Series | None = None,
    dla: str = "lab",
) -> dict[str, Any]:
    from safetensors.torch import load_file

    run = gt.load_run(run_dir)
    feats, rows, meta = run["features"], run["rows"], run["meta"]
    units = gt.dla_units_for(run)
    attr = gt.attribution_table(feats, rows, units)
    if dla == "paper":  # 07's DLA (analysis.gates.paper_dla_table)
        gates = gt.select_gates_paper(run, k, gate_layers)
    else:
        gates = gt.select_gates(feats, rows, units, k, gate_layers)
    layers = [int(x) for x in meta["layers"]]
    norms = {lay: run["readout"][f"mlp_norm_weight.{lay}"] for lay in layers}
    enc = gt.effective_encoders(run["transcoders"], norms, gt.mid_rms(rows, layers))
    carriers = gt.select_carriers(feats, rows, gates, run["transcoders"], enc, detection, rho_min, r_min, generic_frac)
    counts = gt.carrier_counts(carriers)
    vectors = load_file(str(Path(run_dir) / "vectors.safetensors"))
    inject = int(meta["config"]["inject_layer"])
    path = gt.pathway(vectors, inject, rows, carriers, gates, run["transcoders"], enc)
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
        inverted_v_plot(prof, gates, rep / "inverted_v.png", title=f"{title}: top gates vs strength"),
        attribution_by_layer(attr, gates, rep / "attribution_by_layer.png", title=f"{title}: DLA by layer"),
        pathway_plot(path, inject, rep / "pathway.png"),
    ]
    return {**tables, "profile": prof, "summary": summary, "paths": paths, "meta": meta}


def detection_from(run_dir: str | Path, trials_dir: str | None) -> pd.Series | None:
    """Judged per-concept detection from a concept-injection store, at the run's injection layer (None: none)."""
    if not trials_dir:
        return None
    from lab.run import store

    layer = int(json.loads((Path(run_dir) / "meta.json").read_text())["config"]["inject_layer"])
    det = gt.judged_detection(store.read(trials_dir), layer)
    if det.empty:
        from lab.errors import LabError

        raise LabError(f"{trials_dir} has no injected trials at layer {layer}")
    return det


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
        ref = _REFERENCE[cond.split(":")[0]]
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
        _, lo, hi = wilson(k, n)
        _, lo_ref, hi_ref = wilson(kr, n)
        out.append(
            {
                "condition": cond,
                "reference": ref,
                "n": n,
                "n_concepts": len(per),
                "detection": k / n,
                "detection_lo": lo,
                "detection_hi": hi,
                "detection_ref": kr / n,
                "detection_ref_lo": lo_ref,
                "detection_ref_hi": hi_ref,
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


def gate_verdict(summary: dict[str, Any], table: pd.DataFrame, min_effect: float = 0.1) -> list[str]:
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


def inverted_v_plot(
    prof: pd.DataFrame, gates: pd.DataFrame, path: str | os.PathLike, top: int = 8, title: str = ""
) -> Path:
    """Mean activation vs signed steering strength for the `top` gates (each normalised by its unsteered value)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for _, g in gates.head(top).iterrows():
        p = prof[(prof["layer"] == g["layer"]) & (prof["feature"] == g["feature"])]
        s = sorted(prof["strength"].unique())
        a = p.set_index("strength")["mean_act"].reindex(s, fill_value=0.0)
        lab = f"L{int(g['layer'])}/{int(g['feature'])}"
        axes[0].plot(s, a.to_numpy(), marker="o", label=lab)
        axes[1].plot(s, a.to_numpy() / (g["a0"] if g["a0"] > 0 else 1.0), marker="o", label=lab)
    for ax, yl in zip(axes, ("mean activation", "activation / unsteered")):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("steering strength (signed)")
        ax.set_ylabel(yl)
    axes[1].legend(fontsize=7, ncol=2)
    if gates.empty:
        axes[0].text(0.5, 0.5, "no gate candidates", transform=axes[0].transAxes, ha="center")
    return save(fig, path, title or "top gate candidates: activation vs steering strength (inverted V?)")


def attribution_by_layer(attr: pd.DataFrame, gates: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Per layer: total positive (No-promoting) and negative DLA of all features, and of the selected gates."""
    layers = sorted(attr["layer"].unique())
    pos = [float(attr.loc[(attr["layer"] == lay) & (attr["dla"] > 0), "dla"].sum()) for lay in layers]
    neg = [float(attr.loc[(attr["layer"] == lay) & (attr["dla"] < 0), "dla"].sum()) for lay in layers]
    gat = [float(gates.loc[gates["layer"] == lay, "dla"].sum()) for lay in layers]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(layers) + 2), 3.8))
    ax.bar(x - 0.27, pos, 0.27, label="all features, DLA > 0 (→ No)")
    ax.bar(x, neg, 0.27, label="all features, DLA < 0 (→ Yes)")
    ax.bar(x + 0.27, gat, 0.27, label="gate candidates")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [str(v) for v in layers])
    ax.set_xlabel("transcoder layer")
    ax.set_ylabel("Σ DLA to logit(No) − logit(Yes), unsteered")
    ax.legend(fontsize=7)
    return save(fig, path, title or "direct logit attribution by layer")


def pathway_plot(table: pd.DataFrame, inject_layer: int, path: str | os.PathLike, title: str = "") -> Path:
    """Nodes at (layer, stage); edges coloured by sign (red promotes / blue suppresses), width ∝ |attribution|."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    last = int(max([inject_layer, *table["layer_from"], *table["layer_to"]], default=inject_layer)) + 2
    ypos = {"vector": 0.0, "carriers": 1.0, "gates": 2.0, "No": 3.0}

    def node(stage: str, layer: int) -> tuple[float, float]:
        return (last if layer < 0 else layer), ypos[stage]

    edges = {
        "vector→carriers": ("vector", "carriers"),
        "carriers→gates": ("carriers", "gates"),
        "gates→No": ("gates", "No"),
    }
    scale = float(table["attribution"].abs().max()) if len(table) else 1.0
    for _, r in table[table["stage"].isin(list(edges))].iterrows():
        a, b = edges[r["stage"]]
        (x0, y0), (x1, y1) = node(a, int(r["layer_from"])), node(b, int(r["layer_to"]))
        w = 0.5 + 6 * abs(r["attribution"]) / (scale or 1.0)
        color = "tab:red" if r["attribution"] > 0 else "tab:blue"
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "lw": w, "color": color})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{r['attribution']:+.2g}", fontsize=7, ha="center")
    nodes = (
        {("vector", inject_layer)}
        | {(edges[s][0], int(lf)) for s, lf in zip(table["stage"], table["layer_from"]) if s in edges}
        | {(edges[s][1], int(lt)) for s, lt in zip(table["stage"], table["layer_to"]) if s in edges}
    )
    for stage, layer in nodes:
        x, y = node(stage, layer)
        ax.scatter([x], [y], s=250, color="white", edgecolor="black", zorder=3)
        ax.text(
            x,
            y,
            stage if stage in ("vector", "No") else f"{stage[0].upper()}{layer}",
            fontsize=7,
            ha="center",
            va="center",
            zorder=4,
        )
    ax.set_yticks(list(ypos.values()), ["concept vector", "evidence carriers", "gates", "No − Yes logit"])
    ax.set_xlabel("layer")
    ax.set_xlim(inject_layer - 1, last + 1)
    ax.set_ylim(-0.5, 3.5)
    if table.empty:
        ax.text(0.5, 0.5, "no pathway: no carriers or gates selected", transform=ax.transAxes, ha="center")
    return save(fig, path, title or "steering attribution: concept vector → carriers → gates → No (red +, blue −)")


def causal_plot(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Δ(Yes − No score) and Δdetection per intervention with 95 % intervals (gates vs the random control)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [str(c) for c in table["condition"]]
    x = np.arange(len(labels))
    for ax, m, yl in zip(axes, ("d_score", "d_detection"), ("Δ(Yes − No score)", "Δ P(score > 0)")):
        v = table[m].to_numpy(float)
        err = np.vstack([v - table[f"{m}_lo"].to_numpy(float), table[f"{m}_hi"].to_numpy(float) - v])
        ax.bar(x, v, yerr=err, capsize=4, color=["tab:orange" if "gates" in c else "tab:grey" for c in labels])
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
        ax.set_ylabel(yl)
    return save(fig, path, title or "causal tests: ablate gates in steered runs, patch them into unsteered runs")


def main(run_dir: str | Path, k: int = 20, detection: str | None = None) -> dict[str, Any]:
    """The report of a stored dose-response run redone and printed (and, when jobs.gates stored causal.parquet
    there, its causal summary and verdict); returns `gate_report`'s result."""
    import time

    t0 = time.time()
    res = gate_report(run_dir, k, detection=detection_from(run_dir, detection))
    print(res["gates"].head(10).to_string(index=False))
    print(res["carrier_counts"].to_string(index=False))
    print(json.dumps(res["summary"]), f"[{time.time() - t0:.1f} s]")
    causal = Path(run_dir) / "causal.parquet"
    if causal.is_file():
        table = causal_table(pd.read_parquet(causal))
        table.to_csv(Path(run_dir) / "report" / "causal.csv", index=False)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        print("\n".join(gate_verdict(res["summary"], table)))
    return res


if __name__ == "__main__":
    from lab.errors import ArgumentParser, LabError, input_folder, one_line_errors
    from lab.run.preflight import writable

    with one_line_errors():
        p = ArgumentParser(
            prog="python -m analysis.gates_report", description="Gate / carrier / pathway report from a stored run"
        )
        p.add_argument("--run", required=True, help="dose-response output directory")
        p.add_argument("--k", type=int, default=20, help="gate candidates (>= 1)")
        p.add_argument("--detection", help="a concept-injection results dir: per-concept judged TPR for the carriers")
        a = p.parse_args()
        run = input_folder(a.run, "meta.json", "features", "rows", "readout.safetensors", made_by="jobs.dose_response")
        if a.k < 1:
            raise LabError(f"--k must be >= 1, got {a.k}")
        if a.detection:
            input_folder(a.detection, "shard-*.parquet", what="--detection", made_by="jobs.concept_injection")
        writable(run / "report", "report folder")
        main(run, a.k, a.detection)
