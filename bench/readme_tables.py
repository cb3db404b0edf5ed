"""Regenerate the README's demo table and results paragraph from stored runs, so every figure there comes from a run
of the code (`python bench/readme_tables.py --write`; `--check` exits 1 when the README is out of date).

Why here: bench/ is where the README's measured figures are made (`make bench`), outside the package rooms, so this
script may read both the stored tables (Parquet, the analyses' JSON through `analysis/`) and MLflow (each run's
`wall_s`, its git commit) — which `analysis/` must not, and `lab/` may not import `analysis/`. It runs no model: it
reads what the demo jobs stored (`<output_dir>` of each configs/*-demo.yaml, the MLflow DB they logged to).

Every demo config (configs/*-demo.yaml, demo.yaml, demo-greedy.yaml) has a summary in SUMMARIES that recomputes
the headline its job prints at its end from what the job stored, through the package's own functions. The runs may
have been made in another clone: `--results CLONE` (its mlflow.db; a run's relative `output_dir` param is read
relative to --results; `--made-in DIR` re-roots absolute ones when CLONE's outputs were copied from DIR).

Per demo config, a row is regenerated only when its stored run is there: the wall time is the run's `wall_s`
(the job's time to its report), "what it printed" is recomputed from the stored outputs, and the commit is the run's
`provenance.git_commit`. A row without a stored run is left as it is, marked with the date it was measured, so the
README never shows a figure as current that no stored run backs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.errors import ArgumentParser, LabError, one_line_errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- readme_tables:demos -->", "<!-- /readme_tables:demos -->"
RESULTS_BEGIN, RESULTS_END = "<!-- readme_tables:results -->", "<!-- /readme_tables:results -->"
HEADER = "| demo config | wall time | what it printed | run |\n| --- | --- | --- | --- |"
STALE = "measured 2026-12-01 on an older commit; not rerun since"


def _yaml(config: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "configs" / config).read_text())


def _f(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def _ci(o: dict[str, Any], k: str) -> str:
    return f"{_f(o[k])} [{_f(o[k + '_lo'])}, {_f(o[k + '_hi'])}]"


def rates_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """concept_injection: the sweep's overall rates with intervals and their n (distinct generations), from its
    Parquet dataset (lab.reporting.metrics.summarize, as the job's report)."""
    from lab.reporting import metrics
    from lab.run import store

    if not store.shard_files(out):
        return None
    o = metrics.summarize(store.read(out))
    parts = [f"TPR {_ci(o, 'tpr')} n={o['n_tpr']}", f"FPR {_ci(o, 'fpr')} n={o['n_fpr']}"]
    if o.get("n_random_rate"):
        parts.append(f"random-vector {_ci(o, 'random_rate')}")
    parts.append(f"introspection {_ci(o, 'introspection')}")
    return ", ".join(parts)


def _stored_json(f: Path) -> Any:
    """The JSON a job stored at `f`, or None when it has not (yet)."""
    return json.loads(f.read_text()) if f.is_file() else None


def geometry_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """geometry: PC1·mean-diff, PC1·refusal and the ridge's nested-CV R², from the stored analysis/geometry.json."""
    if (g := _stored_json(out / "analysis" / "geometry.json")) is None:
        return None
    return (
        f"PC1·mean-diff {_f(g['pc1_meandiff_cos'])}, PC1·refusal {_f(g['pc1_refusal_cos'])}; ridge nested-CV R² "
        f"{_f(g['ridge_r2'])}"
    )


def _csv(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path) if path.is_file() else None


def dose_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """calibrate_dose: the coherent band and the detection onset per layer, from report/dose_bands.csv
    (lab.experiments.dose.bands, as the job printed them in report/recommended.yaml)."""
    import math

    import yaml

    b = _csv(out / "report" / "dose_bands.csv")
    if b is None:
        return None
    rec = out / "report" / "recommended.yaml"
    mode = (yaml.safe_load(rec.read_text()) or {}).get("sweep", {}).get("strength_mode") if rec.is_file() else None

    def band(r: Any) -> str:
        lo, hi = float(r["coherent_lo"]), float(r["coherent_hi"])
        return f"L{int(r['layer'])} " + ("none" if math.isnan(lo) else f"{lo:g}–{hi:g}")

    bands = ", ".join(band(r) for _, r in b.iterrows())
    onsets = [f"L{int(r['layer'])} {float(r['detection_onset']):g}" for _, r in b.iterrows() if _true(r["detects"])]
    onset = f"detection onset {', '.join(onsets)}" if onsets else "no strength lifts TPR's interval above the controls"
    return f"coherent band {bands}" + (f" ({mode})" if mode else "") + f"; {onset}"


def _true(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0")


_RATE_NAMES = {"tpr": "TPR", "fpr": "FPR", "random_rate": "random-vector rate", "introspection": "introspection"}


def abliteration_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """abliteration: Δ of TPR, FPR and the random-vector rate (abliterated − original, Newcombe 95 %) from
    report/compare.csv (analysis.compare.compare_rates), and the refusal check of each arm from its stored replies."""
    import pandas as pd

    t = _csv(out / "report" / "compare.csv")
    if t is None:
        return None
    deltas = [
        f"Δ{_RATE_NAMES[m]} {_f(r['delta'])} [{_f(r['delta_lo'])}, {_f(r['delta_hi'])}]"
        for m in ("tpr", "fpr", "random_rate")
        for _, r in t[t["metric"] == m].iterrows()
    ]
    refused = []
    for arm in ("original", "abliterated"):
        f = out / "report" / f"refusal_check_{arm}.parquet"
        if f.is_file():
            r = pd.read_parquet(f)["refused"]
            refused.append(f"{arm} {int(r.sum())}/{len(r)}")
    return ", ".join(deltas) + (f"; refusals {', '.join(refused)}" if refused else "")


def bidirectional_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """bidirectional: per group, the share of pairs that work both ways (Wilson 95 %), from report/summary.csv
    (analysis.pairs.summarize_pairs)."""
    s = _csv(out / "report" / "summary.csv")
    if s is None:
        return None
    shares = [f"{r['group']} {_ci(r, 'both')} ({int(r['pairs'])} pairs)" for _, r in s.iterrows()]
    return "both-ways share " + ", ".join(shares)


def patching_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """patching: how many of the effects (mode × layer × component, 95 % t-interval over concepts) exclude 0 and
    the largest, from report/patching_effects.csv (analysis.patching.effects)."""
    t = _csv(out / "report" / "patching_effects.csv")
    if t is None or t.empty:
        return None
    apart = t[(t["effect_lo"] > 0) | (t["effect_hi"] < 0)]
    top = t.loc[t["effect"].abs().idxmax()]
    where = f"{str(top['mode']).replace('_', ' ')} of `{top['component']}.{int(top['patch_layer'])}`"
    return (
        f"{len(apart)} of {len(t)} effects (layer × component × mode) exclude 0; largest: {where} {_ci(top, 'effect')}"
    )


def localisation_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """localisation: the layer where detection peaks (Wilson 95 %) and where forced identification peaks, from the
    stored sweep (analysis.localisation.by_layer), as the job prints them."""
    from analysis import localisation
    from lab.run import store

    if not store.shard_files(out):
        return None
    t = localisation.by_layer(store.read(out))
    if t.empty:
        return None
    peak = t.loc[t["detection"].idxmax()]
    return (
        f"detection per injection layer peaks at layer {int(peak['layer'])} ({_ci(peak, 'detection')}); forced "
        f"identification peaks at layer {int(t.loc[t['forced_id'].idxmax(), 'layer'])}"
    )


def transcoders_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """transcoders: held-out FVE per layer, from transcoders.csv (one row per layer, as the job prints them)."""
    t = _csv(out / "transcoders.csv")
    if t is None or t.empty:
        return None
    fve = " / ".join(f"{x:.3f}" for x in t["fve"])
    return f"held-out FVE {fve} at layers {' / '.join(str(int(x)) for x in t['layer'])}"


def regression_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """feature_regression: the headline R² with its bootstrap interval, the same selection on permuted targets and
    the projection baseline, from the stored tables and cells.csv (analysis.regression.summarize_fits, as
    `python -m analysis.regression --run` reprints them)."""
    from analysis import regression

    root, cells = out / "regression", _csv(out / "cells.csv")
    if cells is None or not (root / "spec.json").is_file():
        return None
    s = regression.summarize_fits(root, cells, (cfg or {}).get("procedure"))
    if s["procedure"] == "paper":
        return f"R² {_f(s['r2_paper'])} (paper's procedure; projection {_f(s['r2_paper_projection'])}), {s['n_concepts']} concepts"
    return (
        f"nested-CV R² {_f(s['r2_nested'])} [{_f(s['r2_nested_lo'])}, {_f(s['r2_nested_hi'])}] (permuted targets "
        f"{_f(s['r2_nested_permuted'])}; projection {_f(s['r2_projection_nested'])}), {s['n_concepts']} concepts"
    )


def gates_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """gates: per model, the patched gates' Δ(Yes−No) (concept bootstrap 95 %) and the verdict, recomputed from
    report/summary.json and report/causal.csv (analysis.gates_report.gate_verdict, as the job prints it)."""
    from analysis.gates_report import gate_verdict

    parts = []
    for rep in sorted(p.parent for p in out.glob("*/report/causal.csv")):
        summary, table = json.loads((rep / "summary.json").read_text()), _csv(rep / "causal.csv")
        verdict = gate_verdict(summary, table)[-1]
        shows = "shows" if "model shows" in verdict else "does NOT show"
        patch = table[table["condition"] == "patch:gates"]
        effect = f"patched gates Δ(Yes−No) {_ci(patch.iloc[0], 'd_score')}; " if len(patch) else ""
        label = f"{rep.parent.name}: " if len(list(out.glob("*/report/causal.csv"))) > 1 else ""
        parts.append(
            f"{label}{summary['n_gates']} gate candidates ({summary['n_inverted_v']} inverted V); {effect}"
            f'"this model {shows} a gate by these criteria"'
        )
    return "; ".join(parts) or None


def dose_response_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """dose_response: the gate / carrier counts from report/summary.json (analysis.gates_report.gate_report), as the
    job prints them."""
    if (s := _stored_json(out / "report" / "summary.json")) is None:
        return None
    return (
        f"{s['n_features_seen']} features seen, {s['n_gates']} gate candidates, {s['n_inverted_v']} with an inverted "
        f"V, {s['n_carriers']} evidence carriers ({s['n_generic_carriers']} generic)"
    )


def _span(t: Any, k: str) -> str:
    lo, hi = float(t[k].min()), float(t[k].max())
    return _f(lo) if lo == hi else f"{_f(lo)}–{_f(hi)}"


def _above_control(t: Any, noun: str) -> str:
    """In how many rows TPR's interval lies above a vector control's (lab.reporting.report.interpret_cells' test)."""
    out = []
    for k in ("random_rate", "norm_matched_rate"):
        if k in t and t[f"n_{k}"].fillna(0).gt(0).any():
            with_ctl = t[t[f"n_{k}"].fillna(0) > 0]
            above = int((with_ctl["tpr_lo"] > with_ctl[f"{k}_hi"]).sum())
            ctl = k.removesuffix("_rate").replace("_", "-")
            out.append(f"TPR above the {ctl}-vector control in {above} of {len(with_ctl)} {noun}")
    return "; ".join(out)


def robustness_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """robustness: the cells run and skipped, the range of TPR and FPR over cells with the n per cell, and in how
    many cells TPR is above the random-vector control, from report/cells.csv (lab.experiments.robustness.cell_table)."""
    t = _csv(out / "report" / "cells.csv")
    if t is None:
        return None
    ok = t[t["status"] == "ok"]
    if ok.empty:
        return None
    head = f"{len(ok)} cells" + (f" ({len(t) - len(ok)} skipped)" if len(t) > len(ok) else "")
    lo, hi = int(ok["n_tpr"].min()), int(ok["n_tpr"].max())
    n = f"n = {lo} per cell" if lo == hi else f"n = {lo}–{hi} per cell"
    text = f"{head}: TPR {_span(ok, 'tpr')}, FPR {_span(ok, 'fpr')} ({n})"
    above = _above_control(ok, "cells")
    return text + (f"; {above}" if above else "")


def probes_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """probes: each probe's concept-vector accuracy (Wilson 95 %) against chance, from report/probes_overall.csv
    (lab.experiments.probes.summarize_probes; the verdict as print_summary words it)."""
    t = _csv(out / "report" / "probes_overall.csv")
    if t is None:
        return None
    parts = []
    for _, r in t[t["kind"] == "injection"].iterrows():
        verdict = "above" if r["accuracy_lo"] > r["chance"] else ("below" if r["accuracy_hi"] < r["chance"] else "at")
        parts.append(f"{r['probe']} {_ci(r, 'accuracy')} n={int(r['n'])}, {verdict} chance {_f(r['chance'])}")
    return "; ".join(parts) or None


def stages_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """stages: TPR and FPR per stage (Wilson 95 %), from report/stages.csv (lab.reporting.comparison.compare)."""
    t = _csv(out / "report" / "stages.csv")
    if t is None:
        return None
    return "; ".join(f"{r['stage']}: TPR {_ci(r, 'tpr')}, FPR {_ci(r, 'fpr')}" for _, r in t.iterrows()) or None


def steering_vector_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """steering_vector: held-out TPR before and after (best arm), and how many arms the verdict flags, from
    report/comparison.csv (analysis.bias_guards.comparison: rates and verdict flags per arm)."""
    t = _csv(out / "report" / "comparison.csv")
    if t is None:
        return None
    base, arms = t[t["arm"] == "baseline"], t[(t["arm"] != "baseline") & t["tpr"].notna()]
    if arms.empty:
        return None
    best = arms.loc[arms["tpr"].idxmax()]
    count = lambda flag: int(arms[flag].map(_true).sum())  # noqa: E731
    before = f"held-out TPR {_ci(base.iloc[0], 'tpr')} before, " if len(base) else ""
    return (
        f"{before}best arm {best['arm']} {_ci(best, 'tpr')}; of {len(arms)} arms {count('tpr_gain')} gain (intervals "
        f"apart), {count('concept_specific')} concept-specific, {count('perturbation_detector')} perturbation detectors"
    )


def ablations_summary(out: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """train_ablations: TPR per condition, seeds pooled (Wilson 95 %), from report/comparison.csv
    (training.ablation.ablation_report.pool_seeds), with the failed trials if any."""
    t = _csv(out / "report" / "comparison.csv")
    if t is None:
        return None
    parts = [
        f"{r['condition']} {_ci(r, 'tpr')}" if r["status"] != "failed" else f"{r['condition']} FAILED"
        for _, r in t.iterrows()
    ]
    seeds = int(t["seeds"].max()) if len(t) else 0
    failed = int(t["failed"].sum())
    text = f"TPR per condition ({seeds} seed(s) pooled): " + ", ".join(parts)
    above = _above_control(t[t["status"] != "failed"], "conditions")
    return text + (f"; {above}" if above else "") + (f"; {failed} trial(s) failed" if failed else "")


# every demo config: the function that recomputes what its job printed from its stored outputs
SUMMARIES: dict[str, Callable[[Path, dict[str, Any]], str | None]] = {
    "calibrate-dose-demo.yaml": dose_summary,
    "abliteration-demo.yaml": abliteration_summary,
    "geometry-demo.yaml": geometry_summary,
    "bidirectional-demo.yaml": bidirectional_summary,
    "patching-demo.yaml": patching_summary,
    "localisation-demo.yaml": localisation_summary,
    "transcoders-demo.yaml": transcoders_summary,
    "feature-regression-demo.yaml": regression_summary,
    "gates-demo.yaml": gates_summary,
    "dose-response-demo.yaml": dose_response_summary,
    "robustness-demo.yaml": robustness_summary,
    "probes-demo.yaml": probes_summary,
    "stages-demo.yaml": stages_summary,
    "steering-vector-demo.yaml": steering_vector_summary,
    "ablations-demo.yaml": ablations_summary,
    "demo.yaml": rates_summary,
    "demo-greedy.yaml": rates_summary,
}


def _where(logged: str, results: Path, made_in: Path | None) -> Path:
    """Where a run's `output_dir` param (or `results_dir` tag) points, read from `results`: a relative path is
    relative to the folder the job ran in, i.e. `results`; an absolute one under `made_in` (the clone the runs were
    made in, when its outputs were copied elsewhere) is moved under `results`."""
    p = Path(logged)
    if not p.is_absolute():
        return (results / p).resolve()
    if made_in is not None and p.is_relative_to(made_in.resolve()):
        return (results / p.relative_to(made_in.resolve())).resolve()
    return p.resolve()


def stored_run(db: Path, config: str, out: Path, results: Path | None = None, made_in: Path | None = None) -> Any:
    """The latest finished top-level MLflow run of the config's experiment that wrote `out`: wall_s and commit."""
    import mlflow

    if not db.is_file():
        return None
    client = mlflow.MlflowClient(f"sqlite:///{db.resolve()}")
    exp = client.get_experiment_by_name((_yaml(config).get("tracking") or {}).get("experiment", ""))
    if exp is None:
        return None
    base = results if results is not None else Path.cwd()
    for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]):
        where = r.data.params.get("output_dir") or r.data.tags.get("results_dir")
        top = "mlflow.parentRunId" not in r.data.tags
        if r.info.status == "FINISHED" and top and where and _where(where, base, made_in) == out.resolve():
            return {
                "wall_s": r.data.metrics.get("wall_s"),
                "commit": r.data.tags.get("provenance.git_commit", "")[:7],
                "dirty": r.data.tags.get("provenance.git_dirty") == "true",
            }
    return None


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def row(config: str, results: Path, db: Path, made_in: Path | None = None) -> str | None:
    """The table row for `config` from its stored run, or None when there is none to read."""
    summarize = SUMMARIES.get(config)
    cfg = _yaml(config)
    out = results / cfg["output_dir"]
    text = summarize(out, cfg) if summarize else None
    if text is None:
        return None
    run = stored_run(db, config, out, results, made_in)
    wall = _duration(run["wall_s"]) if run else "—"
    made = f"`{run['commit']}`" + (" (uncommitted changes)" if run["dirty"] else "") if run else "no MLflow run"
    return f"| `{config}` | {wall} | {text} | {made} |"


Source = tuple[Path, Path, Any]  # (results folder, its MLflow DB, the folder its runs were made in)


def render(readme: str, results: Path, db: Path, made_in: Path | None = None, more: Sequence[Source] = ()) -> str:
    """The README with its demo table's rows regenerated where stored runs exist, and the results paragraph. `more`:
    further (results, db, made_in) sources, tried in order for a config the first has no stored run of (demos run in
    different clones)."""
    sources: list[Source] = [(results, db, made_in), *more]
    start, stop = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    rows = [line for line in readme[start:stop].strip().splitlines()[2:] if line.startswith("|")]
    by_config = {re.match(r"\| `([^`]+)`", line)[1]: line for line in rows}
    for config in SUMMARIES:
        by_config.setdefault(config, f"| `{config}` | — | not run yet | — |")
    new_rows = []
    for config, old in by_config.items():
        fresh = next((r for src in sources if (r := row(config, *src)) is not None), None)
        if fresh is None and "| measured " not in old and "not run yet" not in old:
            cells = old.rstrip(" |").split(" | ")
            fresh = " | ".join(cells[:3]) + f" | {STALE} |"
        new_rows.append(fresh or old)
    body = "\n" + HEADER + "\n" + "\n".join(new_rows) + "\n"
    readme = readme[:start] + body + readme[stop:]
    demo = next((src[0] for src in sources if rates_summary(src[0] / _yaml("demo.yaml")["output_dir"])), None)
    if demo is not None and RESULTS_BEGIN in readme:
        a, b = readme.index(RESULTS_BEGIN) + len(RESULTS_BEGIN), readme.index(RESULTS_END)
        readme = readme[:a] + "\n" + results_paragraph(demo) + "\n" + readme[b:]
    return readme


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def results_paragraph(results: Path) -> str:
    """The README's honest reading of `make demo`, from its stored dataset."""
    from lab.reporting import metrics
    from lab.reporting.report import interpret
    from lab.run import store

    o = metrics.summarize(store.read(results / _yaml("demo.yaml")["output_dir"]))
    reading = " ".join(_sentence(line.removeprefix("reading: ")) for line in interpret(o))
    return (
        f"Results on the embedded model (`make demo`: sampled at temperature 1.0, the paper's verbatim stimuli, the "
        f"rule judge): TPR {_ci(o, 'tpr')} (n={o['n_tpr']}), FPR {_ci(o, 'fpr')} (n={o['n_fpr']}), random-vector "
        f"rate {_ci(o, 'random_rate')}, introspection {_ci(o, 'introspection')}. {reading} Every n is the number "
        "of trials behind the rate: each sampled trial is its own generation."
    )


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python bench/readme_tables.py", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--results",
        type=Path,
        action="append",
        help="the folder the configs' output_dir are relative to (default: this checkout); repeatable: demos run in "
        "different clones, each with its own mlflow.db, the first that stored a config's run gives its row",
    )
    ap.add_argument("--db", type=Path, help="the MLflow sqlite DB the demos logged to; default: <results>/mlflow.db")
    ap.add_argument(
        "--made-in",
        type=Path,
        help="the folder the runs were made in, when their outputs now lie under --results (a copied clone): the "
        "runs' absolute output_dir params are read relative to it; default: --results",
    )
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the README in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README differs from the stored runs")
    a = ap.parse_args(argv)
    old = a.readme.read_text()
    results = a.results or [ROOT]
    if len(results) > 1 and (a.db or a.made_in):
        raise LabError("--db and --made-in go with a single --results (each repeated --results uses its own mlflow.db)")
    more = [(r, r / "mlflow.db", None) for r in results[1:]]
    new = render(old, results[0], a.db or results[0] / "mlflow.db", a.made_in, more)
    if a.write:
        a.readme.write_text(new)
    elif a.check:
        if new != old:
            print(f"error: {a.readme} is out of date with the stored runs: python bench/readme_tables.py --write")
            return 1
    else:
        print(new[new.index(BEGIN) : new.index(END) + len(END)])
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
