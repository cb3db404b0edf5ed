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
    gates = by.loc[("gates_ablated", str(tmp_path / "gates"))]
    assert (gates["value"], gates["n_value"]) == (-0.2, 40) and "judge" in gates["why"]
    bias = by.loc[("bias_tpr_gain", str(tmp_path / "bias"))]
    assert bias["value"] == pytest.approx(0.5) and "evaluation protocol lab" in bias["note"]
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
