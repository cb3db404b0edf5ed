"""Feature regression: grouped folds, chance level on shuffled targets, and the rerun from stored tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import regression as rg
from tests.entry import run_module


def _tables(tmp_path, n_concepts=40, n_feat=30, d=8, seed=0):
    rng = np.random.default_rng(seed)
    concepts = [f"c{i}" for i in range(n_concepts)]
    acts = np.maximum(rng.normal(size=(n_concepts, n_feat)), 0)
    rate = np.clip(0.3 + 0.15 * acts[:, 0] - 0.1 * acts[:, 1] + 0.02 * rng.normal(size=n_concepts), 0, 1)
    names = [f"L{13 + j % 2}_f{j}" for j in range(n_feat)]
    feats = pd.DataFrame(acts, columns=names).assign(concept=concepts, detection_rate=rate)
    meta = pd.DataFrame(
        {
            "feature": names,
            "layer": [13 + j % 2 for j in range(n_feat)],
            "coverage": (acts > 0).mean(0),
            "attribution": np.abs(rng.normal(size=n_feat)),
        }
    )
    meta["score"] = meta["coverage"] * meta["attribution"]
    vec = rng.normal(size=(n_concepts, d)) + rate[:, None] * np.eye(d)[0] * 10
    vectors = pd.DataFrame(vec, columns=[f"v{i}" for i in range(d)]).assign(concept=concepts)
    feats.to_parquet(tmp_path / "features.parquet")
    meta.to_parquet(tmp_path / "feature_meta.parquet")
    vectors.to_parquet(tmp_path / "vectors.parquet")
    spec = {
        "ns": [2, 10, 30],
        "alphas": [1.0, 100.0, 10000.0],
        "layers": [13, 14],
        "folds": 10,
        "seed": 0,
        "n_boot": 200,
        "n_perm": 10,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return feats


def test_grouped_folds_never_split_a_concept():
    groups = [f"c{i % 13}" for i in range(60)]  # several rows per concept
    splits = rg.folds(groups, k=5, seed=3)
    seen_test = []
    for train, test in splits:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        seen_test += [groups[i] for i in test]
    assert sorted(seen_test) == sorted(groups)  # every row is predicted exactly once


def test_permutation_r2_is_near_zero_on_shuffled_targets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 20))
    y = x[:, 0] + 0.1 * rng.normal(size=50)
    splits = rg.folds([f"c{i}" for i in range(50)], k=10, seed=0)
    assert round(rg.r2(y, rg.oof_ridge(x, y, splits, 1.0)), 3) == 0.981
    assert round(rg.permutation_r2(x, y, splits, [1.0, 1e2, 1e4], n=20, seed=0), 3) == -0.032


def test_rerun_reproduces_and_beats_chance(tmp_path, capsys):
    _tables(tmp_path)
    s = rg.summarize_fits(tmp_path)
    assert s["procedure"] == "lab" and s["headline"].startswith("r2_nested: nested CV")
    assert (s["best_layers"], s["best_n"], s["best_alpha"]) == ("all", 30, 1.0)
    assert round(s["r2_best_cell"], 3) == 0.84 and round(s["r2_projection"], 3) == 0.211
    assert round(s["r2_permuted"], 3) == -0.036 and s["r2_best_cell_lo"] > 0.5
    # the nested estimate chooses inside each training fold: here every fold picks the same cell, so it agrees
    assert set(s["nested_choices"]) == {("all", 30, 1.0)} and round(s["r2_nested"], 3) == 0.84
    assert round(s["r2_nested_permuted"], 3) == -0.213 and round(s["r2_projection_nested"], 3) == 0.162
    assert run_module("analysis.regression", "--run", str(tmp_path)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("headline = r2_nested")
    assert lines[-1] == f"r2_nested={s['r2_nested']:.6f} r2_projection_nested={s['r2_projection_nested']:.6f}"
    assert run_module("analysis.regression", "--run", str(tmp_path), "--procedure", "paper") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("headline = r2_paper: the paper's procedure")
    assert lines[-1] == f"r2_paper={s['r2_paper']:.6f} r2_paper_projection={s['r2_paper_projection']:.6f}"


def test_svd_ridge_equals_scikit_learn_pipeline():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 50)), rng.normal(size=30)
    x[:, 3] = 1.0  # a constant column: StandardScaler leaves it unscaled
    paths = rg.ridge_paths(x[:25], y[:25], x[25:], [1.0, 500.0])
    for a, p in zip([1.0, 500.0], paths):
        ref = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x[:25], y[:25]).predict(x[25:])
        assert np.abs(p - ref).max() < 1e-9


def test_the_paper_procedure_and_the_optimism_of_selecting_on_the_test_folds(tmp_path):
    """04h_aggregation_analysis.py (safety-research/introspection-mechanisms 5d5d9b4): `n_folds = 30`,
    `KFold(n_splits=n_folds, shuffle=True, random_state=42)` (04h:1187-1188), `alphas = [1.0, 10.0, 100.0, 500.0,
    1000.0, 5000.0, 10000.0]` (04h:1191; the baseline's at 04h:1066), N from `[10, 20, 50, …, 4500, 5000, …, 30000]`
    kept where `n <= n_max` (04h:1192-1195), best α per N and best N overall on the same folds (04h:1198-1236)."""
    from sklearn.model_selection import KFold

    assert rg.PAPER_ALPHAS == (1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0)
    assert (rg.PAPER_FOLDS, rg.PAPER_KFOLD_SEED) == (30, 42) and 4500 in rg.PAPER_NS and rg.PAPER_NS[-1] == 30000
    assert rg.PAPER_NS[:5] == (10, 20, 50, 100, 200) and len(rg.PAPER_NS) == 21
    feats = _tables(tmp_path)
    s = rg.summarize_fits(tmp_path)
    assert list(s["paper_curve"]["n"]) == [10, 20]  # 30 features: the paper's N values up to 30
    assert (s["paper_n"], s["paper_alpha"]) == (10, 10.0) and round(s["r2_paper"], 4) == 0.2386
    # by hand, as 04h does it: cross_val_predict-style pooled predictions on KFold(30, shuffle, 42)
    names = rg.ranked(pd.read_parquet(tmp_path / "feature_meta.parquet"), None)[:10]
    y = feats["detection_rate"].to_numpy(float)
    kf = list(KFold(30, shuffle=True, random_state=42).split(y))
    assert rg.r2(y, rg.oof_ridge(feats[names].to_numpy(float), y, kf, 10.0)) == pytest.approx(s["r2_paper"], abs=1e-12)
    assert round(s["r2_paper_projection"], 4) == 0.4848 and s["paper_tau"] == 0.27
    # on targets unrelated to the features, choosing the cell on the folds it is scored on is optimistic; the
    # nested estimate is not; the paper's global direction has seen every target, so its projection "predicts" noise
    feats["detection_rate"] = np.random.default_rng(5).uniform(0, 1, len(feats))
    feats.to_parquet(tmp_path / "features.parquet")
    noise = rg.summarize_fits(tmp_path, procedure="paper")
    assert noise["procedure"] == "paper" and noise["headline"].startswith("r2_paper")
    assert round(noise["r2_best_cell"], 4) == -0.0764 and round(noise["r2_nested"], 4) == -1.1901
    assert round(noise["r2_paper_projection"], 4) == 0.1418 and round(noise["r2_projection_nested"], 4) == -0.0537


def test_gemma_scope_preset_loads_and_names_the_paper_transcoders(tmp_path):
    """configs/feature-regression-gemma-3-27b-it.yaml against 04h: DEFAULT_STEERING_LAYER = 37, DEFAULT_TRANSCODER_L0
    = "big", DEFAULT_TRANSCODER_WIDTH = "262k" (04h:46-50), layers steering + 1 … 61 (04h:96-101); the loader reads a
    local Gemma Scope 2 folder per layer and fails in one line when one is missing."""
    import torch

    from jobs.feature_regression import FeatureRegressionConfig
    from lab.config import from_dict, load_yaml
    from lab.errors import LabError
    from lab.experiments.feature_regression import load_gemma_scope
    from lab.steer.transcoder import Transcoder, save_gemma_scope
    from tests.conftest import ROOT

    cfg = from_dict(FeatureRegressionConfig, load_yaml(ROOT / "configs" / "feature-regression-gemma-3-27b-it.yaml"))
    assert (cfg.model.name, cfg.layer, cfg.strength, cfg.strength_mode) == ("gemma-3-27b-it", 37, 4.0, "raw")
    assert cfg.feature_layers == tuple(range(38, 62)) and cfg.gemma_scope_pattern.endswith("width_262k_l0_big_affine")
    assert (cfg.folds, cfg.procedure, tuple(cfg.alphas)) == (30, "paper", rg.PAPER_ALPHAS)
    assert tuple(cfg.ns) == rg.PAPER_NS and not cfg.single_layers
    assert rg.layer_sets({"layers": list(cfg.feature_layers), "single_layers": cfg.single_layers}) == [None]
    g = torch.Generator().manual_seed(0)
    tc = Transcoder(torch.randn(6, 10, generator=g), torch.randn(10, 6, generator=g), torch.zeros(10), torch.zeros(6))
    save_gemma_scope(tc, tmp_path / "layer_38_width_262k_l0_big_affine")
    got = load_gemma_scope(None, [38], tmp_path, cfg.gemma_scope_pattern)
    assert torch.equal(got[38].w_dec, tc.w_dec)
    with pytest.raises(LabError, match="no transcoder for layer 39: .*layer_39_width_262k_l0_big_affine is missing"):
        load_gemma_scope(None, [38, 39], tmp_path, cfg.gemma_scope_pattern)
