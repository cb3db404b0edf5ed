"""bench/readme_tables.py's summaries: for every demo config, a small stored output made with the job's own writer
functions (the same calls the job makes after its model work), and the exact "what it printed" string the README
row gets from it. No model runs: the stored rows are built by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "bench" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trial(i: int, kind: str, detected: bool | None, **kw) -> dict:
    """A stored trial row as the runner writes it (sampled: every row its own generation)."""
    return {
        "trial_id": f"t{i}",
        "model": "m",
        "kind": kind,
        "concept": kw.pop("concept", f"c{i % 4}"),
        "layer": 8,
        "strength": 0.2,
        "strength_raw": 0.0 if kind == "control" else 4.0,
        "strength_rel": 0.0 if kind == "control" else 0.2,
        "forced": False,
        "trial_number": 1,
        "sample": i,
        "prompt": "<prompt Trial 1>",
        "max_new_tokens": 24,
        "temperature": 1.0,
        "response": "Yes, I notice something." if detected else "No.",
        "detected": detected,
        "identified": False,
        "coherent": True,
        "parse_error": False,
    } | kw


def _sweep(n_inj: int, k_inj: int, n_ctl: int, k_ctl: int, n_rand: int = 0, k_rand: int = 0, **kw) -> list[dict]:
    rows = [_trial(i, "injection", i < k_inj, **kw) for i in range(n_inj)]
    rows += [_trial(100 + i, "control", i < k_ctl, **kw) for i in range(n_ctl)]
    return rows + [_trial(200 + i, "random", i < k_rand, **kw) for i in range(n_rand)]


def test_every_demo_config_has_a_summary(rt):
    demos = {p.name for p in (ROOT / "configs").glob("*-demo.yaml")} | {"demo.yaml", "demo-greedy.yaml"}
    assert set(rt.SUMMARIES) == demos
    for config in demos:  # nothing stored yet: every summary says so (None), none raises
        assert rt.SUMMARIES[config](Path("/nonexistent"), rt._yaml(config)) is None


def test_concept_injection_rates(rt, tmp_path):
    from lab.run import store

    store.write_shard(tmp_path, _sweep(20, 9, 20, 1, 20, 8))
    assert rt.rates_summary(tmp_path) == (
        "TPR 0.45 [0.26, 0.66] n=20, FPR 0.05 [0.01, 0.24] n=20, random-vector 0.40 [0.22, 0.61], "
        "introspection 0.00 [0.00, 0.16]"
    )


def test_calibrate_dose_bands(rt, tmp_path):
    from lab.experiments import dose

    rows = []
    for layer, good in ((8, (0.05, 0.1)), (12, (0.05, 0.1, 0.2))):
        for s in (0.05, 0.1, 0.2):
            for _ in range(4):
                r = _trial(len(rows), "injection", s == 0.2 and layer == 12, layer=layer, strength=s)
                rows.append(r | {"response": "word " * 30 if s not in good else r["response"], "coherent": None})
                rows.append(_trial(len(rows), "control", False, layer=layer, strength=s))
    table = dose.curve(pd.DataFrame(rows))
    settings = dose.DoseSettings(min_coherence=0.75)
    bands = dose.bands(table, settings)
    (tmp_path / "report").mkdir()
    bands.to_csv(tmp_path / "report" / "dose_bands.csv", index=False)
    (tmp_path / "report" / "recommended.yaml").write_text(dose.snippet(bands, "relative", settings))
    assert rt.dose_summary(tmp_path) == ("coherent band L8 0.05–0.1, L12 0.05–0.2 (relative); detection onset L12 0.2")


def test_abliteration_deltas_and_refusals(rt, tmp_path):
    from analysis import compare
    from lab.reporting import metrics

    before = metrics.summarize(pd.DataFrame(_sweep(40, 20, 40, 0, 40, 18))) | compare.rate_entry(1, 8, "refusal_rate")
    after = metrics.summarize(pd.DataFrame(_sweep(40, 8, 40, 0, 40, 6))) | compare.rate_entry(0, 8, "refusal_rate")
    (tmp_path / "report").mkdir()
    compare.compare_rates(before, after).to_csv(tmp_path / "report" / "compare.csv", index=False)
    for arm, refused in (("original", [True] + [False] * 7), ("abliterated", [False] * 8)):
        pd.DataFrame({"arm": arm, "instruction": "x", "reply": "y", "refused": refused}).to_parquet(
            tmp_path / "report" / f"refusal_check_{arm}.parquet", index=False
        )
    assert rt.abliteration_summary(tmp_path) == (
        "ΔTPR −0.30 [−0.48, −0.09], ΔFPR 0.00 [−0.09, 0.09], Δrandom-vector rate −0.30 [−0.47, −0.10]; "
        "refusals original 1/8, abliterated 0/8"
    )


def test_bidirectional_both_ways(rt, tmp_path):
    from analysis import pairs

    per_pair = pd.DataFrame(
        {
            "group": ["S-S"] * 4 + ["F-F"] * 3,
            "rate_ab": [0.9, 0.8, 0.1, 0.7, 0.1, 0.6, 0.0],
            "rate_ba": [0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.0],
        }
    )
    (tmp_path / "report").mkdir()
    pairs.summarize_pairs(per_pair, 0.5).to_csv(tmp_path / "report" / "summary.csv", index=False)
    assert rt.bidirectional_summary(tmp_path) == (
        "both-ways share F-F 0.33 [0.06, 0.79] (3 pairs), S-S 0.50 [0.15, 0.85] (4 pairs)"
    )


def test_patching_effects(rt, tmp_path):
    from analysis import patching

    rng = np.random.default_rng(0)
    rows = []
    for c in ("a", "b", "c", "d"):
        for layer in (4, 8):
            for comp in ("attn_out", "mlp_out"):
                drop = 0.5 if (layer, comp) == (8, "attn_out") else 0.0
                rows.append(
                    {
                        "concept": c,
                        "trial_number": 1,
                        "patch_layer": layer,
                        "component": comp,
                        "clean": -1.0,
                        "steered": 1.0,
                        "forced_clean": -3.0,
                        "forced_steered": -2.0,
                        "knock_out": 1.0 - drop + 0.05 * rng.normal(),
                        "knock_in": -1.0 + 0.05 * rng.normal(),
                        "forced_knock_out": -2.0 + 0.05 * rng.normal(),
                    }
                )
    patching.report(pd.DataFrame(rows), tmp_path / "report")
    assert rt.patching_summary(tmp_path) == (
        "2 of 12 effects (layer × component × mode) exclude 0; largest: knock out of `attn_out.8` −0.47 [−0.56, −0.39]"
    )


def test_localisation_peak(rt, tmp_path):
    from lab.run import store

    rows = []
    for layer, k in ((2, 6), (6, 2)):
        for i in range(8):
            rows.append(_trial(len(rows), "injection", i < k, layer=layer, concept=f"c{i % 4}"))
            rows.append(
                _trial(len(rows), "injection", None, layer=layer, concept=f"c{i % 4}", forced=True)
                | {"identified": i < (2 if layer == 2 else 5)}
            )
    store.write_shard(tmp_path, rows)
    assert rt.localisation_summary(tmp_path) == (
        "detection per injection layer peaks at layer 2 (0.75 [0.41, 0.93]); forced identification peaks at layer 6"
    )


def test_transcoders_fve(rt, tmp_path):
    rows = [
        {"layer": L, "cached": False, "fve": f, "fve_linear": 0.5, "l0": 30.0} for L, f in ((12, 0.7764), (16, 0.76))
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "transcoders.csv", index=False)  # as jobs.transcoders writes it
    assert rt.transcoders_summary(tmp_path) == "held-out FVE 0.776 / 0.760 at layers 12 / 16"


def test_feature_regression_nested_r2(rt, tmp_path):
    from analysis import regression as rg
    from lab.experiments import feature_regression as fr

    rng = np.random.default_rng(0)
    concepts = [f"c{i}" for i in range(12)]
    codes = {L: np.maximum(rng.normal(size=(12, 6)), 0) for L in (16, 20)}
    rates = {c: float(np.clip(0.3 + 0.2 * codes[16][i, 0], 0, 1)) for i, c in enumerate(concepts)}
    rows = [
        {"concept": c, "vector": rng.normal(size=4).tolist()}
        | {f"codes_L{L}": codes[L][i].tolist() for L in codes}
        | {f"dla_L{L}": np.linspace(1, 2, 6).tolist() for L in codes}
        for i, c in enumerate(concepts)
    ]
    spec = {"ns": [2, 0], "alphas": [1.0, 100.0], "layers": [16, 20], "folds": 3, "seed": 0}
    spec |= {"n_boot": 50, "n_perm": 2, "inner_folds": 2, "model": "m", "injection_layer": 12}
    root = tmp_path / "regression"
    fr.write_tables(root, rates, rows, spec)
    spec = json.loads((root / "spec.json").read_text())
    cells = pd.DataFrame([rg.fit_stored(g) for g in rg.fit_grid(root, spec, 3, 0)])
    cells[["layers", "n", "n_req", "alpha", "r2"]].to_csv(tmp_path / "cells.csv", index=False)
    assert rt.regression_summary(tmp_path, {}) == (
        "nested-CV R² 0.90 [0.79, 0.98] (permuted targets −1.49; projection −0.50), 12 concepts"
    )


def _causal_scores() -> pd.DataFrame:
    rows = []
    for c in ("a", "b", "c", "d"):
        for cond, shift in (("unsteered", 0.0), ("steered", -1.0), ("patch:gates", 0.02), ("patch:random", 0.0)):
            rows.append({"concept": c, "strength": 4.0, "trial_number": 1, "condition": cond, "yes_no": -0.5 + shift})
    return pd.DataFrame(rows)


def test_gates_verdict(rt, tmp_path):
    from analysis.gates_report import causal_table

    rep = tmp_path / "smollm2-135m" / "report"
    rep.mkdir(parents=True)
    summary = {"n_gates": 20, "n_inverted_v": 3, "total_dla": 0.4}
    (rep / "summary.json").write_text(json.dumps(summary, indent=1))  # as analysis.gates_report.gate_report
    causal_table(_causal_scores(), 200, 0).to_csv(rep / "causal.csv", index=False)
    assert rt.gates_summary(tmp_path) == (
        '20 gate candidates (3 inverted V); patched gates Δ(Yes−No) 0.02 [0.02, 0.02]; "this model does NOT show a '
        'gate by these criteria"'
    )


def test_dose_response_counts(rt, tmp_path):
    (tmp_path / "report").mkdir()
    s = {"n_gates": 20, "n_inverted_v": 2, "n_carriers": 5, "n_generic_carriers": 1, "n_features_seen": 812}
    (tmp_path / "report" / "summary.json").write_text(json.dumps(s, indent=1))  # as analysis.gates_report
    assert rt.dose_response_summary(tmp_path) == (
        "812 features seen, 20 gate candidates, 2 with an inverted V, 5 evidence carriers (1 generic)"
    )


def test_robustness_grid(rt, tmp_path):
    from lab.experiments import robustness

    rows, cells = [], {}
    for j, (cell, k_inj, k_ctl, k_rand) in enumerate(
        ((("standard", "chat"), 3, 0, 0), (("terse", "chat"), 0, 0, 1), (("standard", "raw"), 2, 2, 2))
    ):
        part = _sweep(3, k_inj, 3, k_ctl, 3, k_rand)
        part = [r | {"trial_id": f"{j}-{r['trial_id']}"} for r in part]
        cells[cell] = [r["trial_id"] for r in part]
        rows += part
    reasons = {c: None for c in cells} | {("standard", "base"): "no chat template"}
    table = robustness.cell_table(pd.DataFrame(rows), reasons, cells)
    (tmp_path / "report").mkdir()
    table.to_csv(tmp_path / "report" / "cells.csv", index=False)
    assert rt.robustness_summary(tmp_path) == (
        "3 cells (1 skipped): TPR 0.00–1.00, FPR 0.00–0.67 (n = 3 per cell); TPR above the random-vector control in "
        "0 of 3 cells"
    )


def test_probes_accuracy(rt, tmp_path):
    from lab.experiments import probes

    rows = [
        {"probe": p, "kind": kind, "correct": i < k, "chance": ch, "p_target": 0.3, "prediction": i % 2}
        for p, ch, k in (("localisation", 0.25, 10), ("discrimination", 0.5, 9))
        for kind in ("injection", "control")
        for i in range(12)
    ]
    (tmp_path / "report").mkdir()
    probes.summarize_probes(pd.DataFrame(rows), ("probe", "kind")).to_csv(
        tmp_path / "report" / "probes_overall.csv", index=False
    )
    assert rt.probes_summary(tmp_path) == (
        "discrimination 0.75 [0.47, 0.91] n=12, at chance 0.50; localisation 0.83 [0.55, 0.95] n=12, above chance 0.25"
    )


def test_stages_rates(rt, tmp_path):
    from lab.reporting import comparison
    from lab.run.tracking import TrackingConfig

    groups = {"base": pd.DataFrame(_sweep(10, 2, 10, 0)), "random-lora": pd.DataFrame(_sweep(10, 5, 10, 1))}
    comparison.compare(groups, tmp_path, TrackingConfig(enabled=False), {}, "t", label="stage", quiet=True)
    assert rt.stages_summary(tmp_path) == (
        "base: TPR 0.20 [0.06, 0.51], FPR 0.00 [0.00, 0.28]; random-lora: TPR 0.50 [0.24, 0.76], FPR 0.10 [0.02, 0.40]"
    )


def test_steering_vector_verdicts(rt, tmp_path):
    from analysis.bias_guards import comparison
    from lab.reporting import metrics

    rates = {
        "baseline": metrics.summarize(pd.DataFrame(_sweep(20, 4, 20, 0, 20, 4))),
        "L8_s0": metrics.summarize(pd.DataFrame(_sweep(20, 16, 20, 1, 20, 15))),
        "L12_s0": metrics.summarize(pd.DataFrame(_sweep(20, 6, 20, 0, 20, 4))),
    }
    (tmp_path / "report").mkdir()
    comparison(rates, {}).to_csv(tmp_path / "report" / "comparison.csv", index=False)
    assert rt.steering_vector_summary(tmp_path) == (
        "held-out TPR 0.20 [0.08, 0.42] before, best arm L8_s0 0.80 [0.58, 0.92]; of 2 arms 1 gain (intervals "
        "apart), 0 concept-specific, 1 perturbation detectors"
    )


def test_ablation_conditions(rt, tmp_path):
    from training.ablation.ablation_report import pool_seeds

    def rec(variant, seed, k_tpr, k_rand, status="finished"):
        r = {"trial": f"{variant}-{seed}", "variant": variant, "seed": seed, "status": status}
        if status == "finished":
            r |= {"k_tpr": k_tpr, "n_tpr": 20, "k_fpr": 0, "n_fpr": 20, "k_introspection": 0, "n_introspection": 20}
            r |= {"k_random_rate": k_rand, "n_random_rate": 20}
        return r

    records = [rec("base", 0, 4, 4), rec("base", 1, 6, 5), rec("dpo", 0, 18, 2), rec("dpo", 1, 0, 0, "failed")]
    (tmp_path / "report").mkdir()
    pool_seeds(records).to_csv(tmp_path / "report" / "comparison.csv", index=False)
    assert rt.ablations_summary(tmp_path) == (
        "TPR per condition (2 seed(s) pooled): base 0.25 [0.14, 0.40], dpo 0.90 [0.70, 0.97]; TPR above the "
        "random-vector control in 1 of 2 conditions; 1 trial(s) failed"
    )


def _log(db: Path, experiment: str, output_dir: str) -> None:
    from lab.run import tracking

    cfg = tracking.TrackingConfig(uri=f"sqlite:///{db}", experiment=experiment)
    with tracking.run(cfg, {"output_dir": output_dir}, tags={"provenance.git_commit": "1234567abc"}):
        pass


def test_runs_made_in_another_folder_are_found(rt, tmp_path):
    """A job logs its output_dir as configured (relative: the clone it ran in) or absolute (the clone's path): read
    with --results, and with --made-in when the clone's outputs were copied elsewhere."""
    clone, copy = tmp_path / "clone", tmp_path / "copy"
    _log(tmp_path / "mlflow.db", "transcoders-demo", "results/transcoders-demo")
    _log(tmp_path / "mlflow.db", "dose-response-demo", str(clone / "results" / "dose-response-demo"))
    out = copy / "results" / "transcoders-demo"
    assert rt.stored_run(tmp_path / "mlflow.db", "transcoders-demo.yaml", out, copy)["commit"] == "1234567"
    assert rt.stored_run(tmp_path / "mlflow.db", "transcoders-demo.yaml", out, clone) is None
    out = copy / "results" / "dose-response-demo"
    assert rt.stored_run(tmp_path / "mlflow.db", "dose-response-demo.yaml", out, copy) is None
    found = rt.stored_run(tmp_path / "mlflow.db", "dose-response-demo.yaml", out, copy, clone)
    assert found["commit"] == "1234567" and found["wall_s"] > 0


def test_results_alone_reads_that_clones_db(rt, tmp_path):
    """`--results CLONE` reads CLONE/mlflow.db and the outputs under it; the row shows the run's commit and wall_s."""
    out = tmp_path / "results" / "transcoders-demo"
    out.mkdir(parents=True)
    pd.DataFrame([{"layer": 12, "fve": 0.5}]).to_csv(out / "transcoders.csv", index=False)
    _log(tmp_path / "mlflow.db", "transcoders-demo", "results/transcoders-demo")
    readme = tmp_path / "README.md"
    readme.write_text(f"{rt.BEGIN}\n{rt.HEADER}\n| `transcoders-demo.yaml` | 1 s | old | old |\n{rt.END}\n")
    assert rt.main(["--results", str(tmp_path), "--readme", str(readme), "--write"]) == 0
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| `transcoders"))
    assert row.endswith(" | held-out FVE 0.500 at layers 12 | `1234567` |") and row.split(" | ")[1] != "1 s"
