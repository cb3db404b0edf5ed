"""The reproduction scorecard on stored outputs of tiny runs (the embedded model's plans, written with the lab's own
writers): every row of an embedded run is "not comparable: model"; a run made like the paper's is comparable; the
paper's numbers are the data file's, checked against the sources it names."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import scorecard as sc
from lab.config import ModelConfig
from lab.experiments.concept_injection import InjectionConfig, JudgeConfig, plan
from lab.protocol.trials import SweepConfig
from lab.run import store
from tests.entry import run_module


def _sweep(root, model="smollm2-135m", layers=(10, 12, 14), judge="rules:v1", variants=("original",), seed=0):
    """A stored sweep: the real plan of a tiny sweep, answers graded by a fixed rule (detected on every second
    injection at layer 12, one in four elsewhere; one control in eight; identified on every fourth injection)."""
    rows = []
    for v in variants:
        sweep = SweepConfig(
            concepts="first:4", layers=layers, strengths=(4.0,), strength_mode="raw", trials_per_concept=4,
            controls=(), prompt_variant=v, temperature=1.0, selftest=False, seed=seed,
        )  # fmt: skip
        cfg = InjectionConfig(model=ModelConfig(name=model), sweep=sweep, judge=JudgeConfig())
        for i, t in enumerate(plan(cfg).trials):
            hit = (i % 2 == 0) if t.layer == 12 else (i % 4 == 0)
            detected = hit if t.kind == "injection" else (i % 8 == 1)
            rows.append(
                t.to_dict()
                | {"prompt": f"p{i}", "response": "r", "detected": detected, "identified": detected and i % 4 == 0}
                | {"coherent": True, "judge": judge.split(":")[0], "judge_version": judge, "parse_error": False}
            )
    store.write_shard(root, rows)
    return pd.DataFrame(rows)


def test_the_paper_s_numbers_are_the_data_file_s():
    version, rows = sc.headlines()
    by = {r["key"]: r for r in rows}
    assert version == "headlines-v1" and len(rows) == 20
    assert (by["abliteration_tpr_before"]["value"], by["abliteration_tpr_after"]["value"]) == (0.108, 0.638)
    assert (by["abliteration_introspection_before"]["value"], by["abliteration_introspection_after"]["value"]) == (
        0.046,
        0.241,
    )
    assert by["abliteration_fpr_delta"]["value"] == 0.073
    assert (by["geometry_pc1_meandiff"]["value"], by["geometry_pc1_refusal"]["value"]) == (0.97, -0.09)
    assert (by["regression_features"]["value"], by["regression_projection"]["value"]) == (0.62, 0.31)
    assert (by["gates_ablated"]["value"], by["gates_patched"]["value"]) == (-0.294, 0.251)
    assert "not published" in by["gates_ablated"]["code"]
    assert (by["bias_tpr_gain"]["value"], by["bias_fpr"]["value"], by["bias_introspection_gain"]["value"]) == (
        0.75,
        0.0,
        0.55,
    )
    assert by["variants_fpr_gemma"]["value"] == by["variants_fpr_qwen"]["value"] == 0.0
    assert by["detection_peak_depth"]["range"] == [0.33, 0.67]
    assert by["abliteration_tpr_after"]["source"] == "README.md:16; PROTOCOL.md:96"


def test_the_bias_rows_are_14_s_relative_change():
    """The paper's +75 % / +55 % are 14's "Change" column, `((l29 - bl) / bl * 100)` (14:1638, the L29 comparison
    table), not differences in points; a zero baseline prints inf there, as here."""
    src = {r["key"]: r for r in sc.headlines()[1]}
    assert "(L29 − baseline) / baseline" in src["bias_tpr_gain"]["claim"]
    row = sc._relative({"tpr": 0.35, "n_tpr": 100}, {"tpr": 0.2, "n_tpr": 100}, "tpr", {})
    assert row["value"] == pytest.approx(0.75) and row["lo"] < 0.75 < row["hi"]
    assert sc._relative({"tpr": 0.1, "n_tpr": 10}, {"tpr": 0.0, "n_tpr": 10}, "tpr", {})["value"] == math.inf


def test_every_row_of_an_embedded_run_is_not_comparable_on_the_model(tmp_path, capsys):
    from analysis import geometry as geo
    from tests.analysis.test_geometry import _synthetic
    from tests.analysis.test_regression import _tables

    df = _sweep(tmp_path / "sweep")
    _sweep(tmp_path / "ablit" / "original", layers=(12,), seed=1)
    _sweep(tmp_path / "ablit" / "abliterated", layers=(12,), seed=2, judge="rules:v2")
    X, y, concepts, ref = _synthetic()
    g, _ = geo.analyse(X, y, concepts, ref)
    g.extra = {"model": "smollm2-135m", "source": str(tmp_path / "sweep")}
    (tmp_path / "geo" / "analysis").mkdir(parents=True)
    geo.write_result(g, tmp_path / "geo" / "analysis")
    (tmp_path / "reg" / "regression").mkdir(parents=True)
    _tables(tmp_path / "reg" / "regression")
    (tmp_path / "gates" / "report").mkdir(parents=True)
    pd.DataFrame(
        [
            {"condition": c, "n": 40, "d_detection": d, "d_detection_lo": d - 0.1, "d_detection_hi": d + 0.1}
            for c, d in (("ablate:gates", -0.2), ("patch:gates", 0.15), ("ablate:random", 0.0))
        ]
    ).to_csv(tmp_path / "gates" / "report" / "causal.csv", index=False)
    (tmp_path / "gates" / "meta.json").write_text(json.dumps({"model": "smollm2-135m", "layers": [18]}))
    for arm, tpr, fpr, intro in (("baseline", 0.25, 0.0, 0.1), ("L10_seed0", 0.75, 0.05, 0.4)):
        rates = {"tpr": tpr, "n_tpr": 40, "fpr": fpr, "fpr_lo": 0.0, "fpr_hi": 0.1, "n_fpr": 40}
        rates |= {"introspection": intro, "n_introspection": 40, "model": "smollm2-135m", "concepts_evaluated": 8}
        (tmp_path / "bias" / "arms" / arm).mkdir(parents=True)
        store.save_result(tmp_path / "bias" / "arms" / arm / "result.json", {"arm": arm}, rates)
    runs = [tmp_path / d for d in ("sweep", "ablit", "geo", "reg", "gates", "bias")]
    card = sc.scorecard(runs)
    measured = card[card["run"] != ""]
    assert set(measured["key"]) == {r["key"] for r in sc.headlines()[1]}  # every paper row is measured
    assert measured["why"].str.startswith("not comparable: model").all() and not measured["comparable"].any()
    by = measured.set_index(["key", "run"])
    sweep = str(tmp_path / "sweep")
    # the sweep's FPR: 48 controls (4 concepts × 3 layers × 4 trial numbers), detected on i % 8 == 1
    fpr = df[(df.kind == "control")]["detected"]
    row = by.loc[("variants_fpr_gemma", sweep)]
    assert row["value"] == fpr.mean() and row["n_value"] == len(fpr) == 48
    assert row["why"] == "not comparable: model, judge, stimuli, n"  # 1 variant of 7, rules judge, 48 < 3500
    assert by.loc[("dpo_fpr_zero", sweep), "why"] == "not comparable: model, judge"
    assert by.loc[("detection_peak_depth", sweep), "value"] == 12 / 30  # layer 12 of SmolLM2's 30 is best
    inj = df[df.kind == "injection"]
    diff = by.loc[("base_fpr_equals_tpr", sweep)]
    assert diff["value"] == pytest.approx(fpr.mean() - inj["detected"].mean())
    assert diff["value_lo"] < diff["value"] < diff["value_hi"]
    ab = str(tmp_path / "ablit")
    assert by.loc[("abliteration_tpr_before", ab), "n_value"] == 16 and by.loc[("abliteration_fpr_delta", ab), "why"]
    assert by.loc[("geometry_pc1_meandiff", str(tmp_path / "geo")), "value"] == pytest.approx(g.pc1_meandiff_cos)
    reg = by.loc[("regression_features", str(tmp_path / "reg"))]
    assert round(reg["value"], 4) == 0.2386 and "nested estimate 0.840" in reg["note"]
    assert (round(reg["value_lo"], 4), round(reg["value_hi"], 4)) == (-0.213, 0.5231)  # 1000 resamples, seed 0
    geo_row = by.loc[("geometry_pc1_meandiff", str(tmp_path / "geo"))]  # geometry.json alone: no stored inputs
    assert math.isnan(geo_row["value_lo"]) and geo_row["interval"].startswith("no interval: vectors.safetensors")
    assert by.loc[("variants_fpr_gemma", sweep), "interval"] == "Wilson"
    gates = by.loc[("gates_ablated", str(tmp_path / "gates"))]
    assert (gates["value"], gates["n_value"]) == (-0.2, 40) and "judge" in gates["why"]
    bias = by.loc[("bias_tpr_gain", str(tmp_path / "bias"))]
    # 14's "Change" column: (L29 − baseline) / baseline (14:1638), so TPR 0.25 → 0.75 is +200 %, not +50 points;
    # Katz: log(30/40 ÷ 10/40) ± 1.96·√(1/30 − 1/40 + 1/10 − 1/40)
    se = math.sqrt(1 / 30 - 1 / 40 + 1 / 10 - 1 / 40)
    assert bias["value"] == pytest.approx(2.0) and "evaluation protocol lab, relative change" in bias["note"]
    assert (bias["value_lo"], bias["value_hi"]) == pytest.approx(
        (3 * math.exp(-1.96 * se) - 1, 3 * math.exp(1.96 * se) - 1)
    )
    assert bias["interval"] == "Katz log ratio"
    # the command line prints the full table and logs it to MLflow (through lab.run.tracking, only there)
    args = [a for r in runs for a in ("--run", str(r))]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_module("analysis.scorecard", *args, "--tracking-uri", uri, "--out", str(tmp_path / "card.csv")) == 0
    out = capsys.readouterr().out
    assert out.startswith("reproduction scorecard (headlines-v1") and out.count("not comparable: model") == len(card)
    assert "mlflow: logged to experiment 'scorecard'" in out and len(pd.read_csv(tmp_path / "card.csv")) == len(card)
    import mlflow

    mlflow.set_tracking_uri(uri)
    logged = mlflow.search_runs(experiment_names=["scorecard"])
    assert len(logged) == 1 and logged.loc[0, "params.headlines"] == "headlines-v1"
    assert logged.loc[0, "metrics.variants_fpr_gemma/0/comparable"] == 0.0
    assert logged.loc[0, "params.resamples"] == "1000" and logged.loc[0, "params.seed"] == "0"
    i = card.index[(card["key"] == "regression_features") & (card["run"] == str(tmp_path / "reg"))][0]
    assert logged.loc[0, f"metrics.regression_features/{i}/lo"] == pytest.approx(card.loc[i, "value_lo"])
    assert logged.loc[0, f"metrics.regression_features/{i}/hi"] == pytest.approx(card.loc[i, "value_hi"])
    j = card.index[card["key"] == "geometry_pc1_meandiff"][0]
    assert f"metrics.geometry_pc1_meandiff/{j}/lo" not in logged.columns  # no interval, nothing logged for it


def test_a_run_made_like_the_paper_s_is_comparable(tmp_path):
    """Same model name, the paper's judge instrument, the paper's stimuli, and at least the paper's n."""
    variants = ("alternative", "anti_reward", "hints", "original", "skeptical", "structured", "unprompted")
    _sweep(tmp_path / "g", model="gemma-3-27b-it", layers=(37,), judge="openai:gpt-4.1-mini@paper", variants=variants)
    rows = [dict(r) for r in sc.headlines()[1] if r["key"] == "variants_fpr_gemma"]
    card = sc.scorecard([tmp_path / "g"], rows)
    assert card.loc[0, "why"] == "not comparable: stimuli, n"  # 4 concepts and 112 controls, not 50 and 3500
    rows[0] |= {"n": 100, "stimuli": rows[0]["stimuli"] | {"concepts": 4}}
    card = sc.scorecard([tmp_path / "g"], rows)
    assert bool(card.loc[0, "comparable"]) and card.loc[0, "why"] == "comparable"
    assert card.loc[0, "n_value"] == 112 and not math.isnan(card.loc[0, "value_lo"])
    assert sc.scorecard([], rows).loc[0, "why"] == "not measured by these runs"
    assert np.isnan(sc.scorecard([], rows).loc[0, "value"])


@pytest.mark.slow  # ~2 min on the shared 2-core box: a real sweep on the embedded model, then the scorecard
def test_the_scorecard_on_a_real_embedded_sweep(tmp_path, capsys, monkeypatch):
    from jobs.concept_injection import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = ["--config", "configs/test-tiny.yaml", "--output", str(tmp_path / "tiny"), "--set", "runner.num_actors=0"]
    assert main([*args, "--set", "sweep.layers=[8,12,16]"]) == 0
    card = sc.scorecard([tmp_path / "tiny"])
    measured = card[card["run"] != ""]
    assert set(measured["key"]) == {
        "variants_fpr_gemma",
        "variants_fpr_qwen",
        "base_fpr_equals_tpr",
        "sft_fpr_high",
        "dpo_fpr_zero",
        "detection_peak_depth",
    }
    assert measured["why"].str.startswith("not comparable: model, judge").all()
    assert run_module("analysis.scorecard", "--run", str(tmp_path / "tiny"), "--no-mlflow") == 0
    assert capsys.readouterr().out.count("not comparable: model") == len(measured)


def _stored_geometry(folder, X, rates, refusal, tau=None):
    """A geometry output as jobs.geometry stores it: its inputs (`save_inputs`: float32 vectors, rates.csv, the
    refusal direction) and the result computed from them (`write_result`), both in folder/analysis."""
    import torch

    from analysis import geometry as geo

    concepts = [f"c{i}" for i in range(len(X))]
    V = {c: torch.tensor(X[i], dtype=torch.float32) for i, c in enumerate(concepts)}
    ref = None if refusal is None else torch.tensor(refusal, dtype=torch.float32)
    table = pd.DataFrame({"concept": concepts, "rate": rates, "n": 10})
    adir = geo.save_inputs(folder / "analysis", V, table, ref, 12)
    Xs, _, refs = geo.load_inputs(adir)
    g, _ = geo.analyse(Xs, np.asarray(rates, float), concepts, refs, tau)
    g.extra = {"model": "smollm2-135m"}
    geo.write_result(g, adir)
    return g


def test_the_geometry_rows_have_a_bootstrap_interval_over_the_stored_concepts(tmp_path):
    """cos(PC1, mean-diff) and cos(PC1, refusal) of a stored geometry run: 1000 resamples of its 40 concepts (within
    the 13 successes and 27 failures of its τ = 0.67), seed 0; the point estimate lies inside; the same seed gives
    the same interval, `resamples` and `seed` change it; a geometry.json without its inputs has none, and says so."""
    from tests.analysis.test_geometry import _synthetic

    X, y, _, ref = _synthetic()
    g = _stored_geometry(tmp_path / "geo", X, y, ref)
    assert (g.tau, g.n_success, g.n_failure) == (0.67, 13, 27)
    rows = [r for r in sc.headlines()[1] if r["key"].startswith("geometry_")]
    card = sc.scorecard([tmp_path / "geo"], rows).set_index("key")
    md, rf = card.loc["geometry_pc1_meandiff"], card.loc["geometry_pc1_refusal"]
    assert md["value"] == g.pc1_meandiff_cos and rf["value"] == g.pc1_refusal_cos
    assert (round(md["value"], 4), round(md["value_lo"], 4), round(md["value_hi"], 4)) == (0.9606, 0.7569, 0.9762)
    assert (round(rf["value"], 4), round(rf["value_lo"], 4), round(rf["value_hi"], 4)) == (0.2942, 0.0285, 0.4782)
    assert md["value_lo"] <= md["value"] <= md["value_hi"] and rf["value_lo"] <= rf["value"] <= rf["value_hi"]
    assert md["interval"] == "bootstrap ×1000: concepts within success/failure (τ fixed), seed 0"
    assert md["paper_in_interval"] and not rf["paper_in_interval"]  # 0.97 ≤ 0.9762; −0.09 < 0.0285
    again = sc.scorecard([tmp_path / "geo"], rows).set_index("key")
    assert again.loc["geometry_pc1_meandiff", "value_lo"] == md["value_lo"]  # seeded: deterministic
    fewer = sc.scorecard([tmp_path / "geo"], rows, resamples=200, seed=1).set_index("key")
    assert fewer.loc["geometry_pc1_meandiff", "value_lo"] != md["value_lo"]
    assert fewer.loc["geometry_pc1_meandiff", "interval"].startswith("bootstrap ×200:")
    # one resample is what analysis.geometry's own functions give on the concepts it drew (PC1 signed as in `pca`)
    from analysis import geometry as geo

    Xs, stored, refs = geo.load_inputs(tmp_path / "geo" / "analysis")
    ys = stored["rate"].to_numpy(float)
    success = ys > g.tau
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        s, f = np.flatnonzero(success), np.flatnonzero(~success)
        i = np.r_[rng.choice(s, len(s)), rng.choice(f, len(f))]
        pc1 = geo.unit(geo.pca(Xs[i], ys[i], 10)[0][0])
        one = sc.geometry_bootstrap(Xs, ys, success, refs, resamples=1, seed=seed)
        assert one["pc1_meandiff_cos"][0] == pytest.approx(pc1 @ geo.meandiff_direction(Xs[i], success[i]), abs=1e-9)
        assert one["pc1_refusal_cos"][1] == pytest.approx(pc1 @ geo.unit(refs), abs=1e-9)
    metrics = sc.scorecard_metrics(card.reset_index())
    assert (
        metrics["geometry_pc1_meandiff/0/lo"] == md["value_lo"]
        and metrics["geometry_pc1_refusal/1/hi"] == rf["value_hi"]
    )
    # an output with geometry.json alone (no stored vectors / rates): the value, no interval, and why
    (tmp_path / "geo" / "analysis" / "vectors.safetensors").unlink()
    bare = sc.scorecard([tmp_path / "geo"], rows).set_index("key").loc["geometry_pc1_meandiff"]
    assert bare["value"] == g.pc1_meandiff_cos and math.isnan(bare["value_lo"])
    assert bare["interval"] == "no interval: vectors.safetensors and rates.csv not stored beside geometry.json"
    assert bare["paper_in_interval"] is None


def test_a_geometry_whose_cosine_is_one_in_every_resample_has_the_interval_one_one(tmp_path):
    """Every concept vector on one axis (successes +e1, failures −e1, at different lengths): every resample's PC1
    and mean-diff direction are +e1 when PC1 is signed as the point estimate's, so cos(PC1, mean-diff) is 1 in every
    resample and the interval is [1, 1]; cos(PC1, refusal) with refusal = (0.5, 1, 0, 0) is 0.5/√1.25 in every
    resample. A PC1 left with an arbitrary sign would give −1 in some resamples."""
    e1 = np.eye(4)[0]
    lengths = np.array([1.0, 2.0, 3.0, 0.5, 1.5, 2.5, 1.0, 4.0])
    signs = np.array([1, 1, 1, 1, -1, -1, -1, -1])
    X = (signs * lengths)[:, None] * e1
    rates = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.0]
    g = _stored_geometry(tmp_path / "line", X, rates, np.array([0.5, 1.0, 0.0, 0.0]), tau=0.5)
    rows = [r for r in sc.headlines()[1] if r["key"].startswith("geometry_")]
    card = sc.scorecard([tmp_path / "line"], rows, resamples=300).set_index("key")
    md, rf = card.loc["geometry_pc1_meandiff"], card.loc["geometry_pc1_refusal"]
    assert g.pc1_meandiff_cos == pytest.approx(1.0, abs=1e-12)
    assert md["value_lo"] == pytest.approx(1.0, abs=1e-12) and md["value_hi"] == pytest.approx(1.0, abs=1e-12)
    one_value = pytest.approx(0.5 / 1.25**0.5, abs=1e-7)  # float32-stored refusal direction
    assert rf["value_lo"] == one_value and rf["value_hi"] == one_value and rf["value"] == one_value


def test_the_regression_rows_have_a_bootstrap_interval_of_their_out_of_fold_predictions(tmp_path):
    """r2_features (the paper's procedure: N 10, α 10 on KFold(30, shuffle, 42)) and r2_projection: 1000 resamples of
    the 40 concepts of the pooled out-of-fold predictions at the chosen N and α, seed 0 (`regression.bootstrap`),
    rebuilt here by hand from the stored tables; the point estimate lies inside."""
    from sklearn.model_selection import KFold

    from analysis import regression as rg
    from tests.analysis.test_regression import _tables

    (tmp_path / "reg" / "regression").mkdir(parents=True)
    feats = _tables(tmp_path / "reg" / "regression")
    spec = json.loads((tmp_path / "reg" / "regression" / "spec.json").read_text())
    (tmp_path / "reg" / "regression" / "spec.json").write_text(json.dumps(spec | {"ns": [10], "n_perm": 1}))
    rows = [r for r in sc.headlines()[1] if r["key"].startswith("regression_")]
    card = sc.scorecard([tmp_path / "reg"], rows).set_index("key")
    f, p = card.loc["regression_features"], card.loc["regression_projection"]
    assert (round(f["value"], 4), round(f["value_lo"], 4), round(f["value_hi"], 4)) == (0.2386, -0.213, 0.5231)
    assert (round(p["value"], 4), round(p["value_lo"], 4), round(p["value_hi"], 4)) == (0.4848, 0.0506, 0.677)
    assert f["value_lo"] <= f["value"] <= f["value_hi"] and p["value_lo"] <= p["value"] <= p["value_hi"]
    assert f["interval"] == "bootstrap ×1000: concepts of the out-of-fold predictions (N, α fixed), seed 0"
    assert p["interval"].endswith("(α fixed), seed 0")
    assert not f["paper_in_interval"] and p["paper_in_interval"]  # 0.62 > 0.5231; 0.31 in [0.0506, 0.677]
    names = rg.ranked(pd.read_parquet(tmp_path / "reg" / "regression" / "feature_meta.parquet"), None)[:10]
    y = feats["detection_rate"].to_numpy(float)
    kf = list(KFold(30, shuffle=True, random_state=42).split(y))
    pred = rg.oof_ridge(feats[names].to_numpy(float), y, kf, 10.0)
    assert rg.bootstrap(y, pred, 1000, 0) == (f["value_lo"], f["value_hi"])


def test_the_command_line_refuses_fewer_than_two_resamples(tmp_path, capsys):
    assert run_module("analysis.scorecard", "--run", str(tmp_path), "--resamples", "1", "--no-mlflow") == 2
    assert capsys.readouterr().err.strip() == "error: --resamples must be at least 2, got 1"
