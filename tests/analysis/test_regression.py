"""Feature regression: grouped folds, chance level on shuffled targets, and the rerun from stored tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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
    assert (s["best_layers"], s["best_n"], s["best_alpha"]) == ("all", 30, 1.0)
    assert round(s["r2_features"], 3) == 0.84 and round(s["r2_projection"], 3) == 0.211
    assert round(s["r2_permuted"], 3) == -0.036 and s["r2_features_lo"] > 0.5
    assert run_module("analysis.regression", "--run", str(tmp_path)) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"r2_features={s['r2_features']:.6f} r2_projection={s['r2_projection']:.6f}"
