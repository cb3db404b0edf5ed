"""Geometry analysis on synthetic concept vectors: exact decomposition, leak-free nested CV, the paper's split rule,
and the model-free rerun from stored outputs."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import geometry as geo


def _synthetic(n: int = 40, d: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    axis = np.zeros(d)
    axis[0] = 1.0
    X = rng.normal(size=(n, d))
    X[:, 0] *= 3  # one dominant direction that also drives detection
    rates = np.clip(0.5 + 0.15 * X[:, 0] + rng.normal(scale=0.05, size=n), 0, 1).round(2)
    refusal = rng.normal(size=d)
    return X, rates, [f"c{i}" for i in range(n)], refusal


def test_projection_plus_residual_reconstructs_each_vector():
    g = torch.Generator().manual_seed(0)
    V, u = torch.randn(7, 576, generator=g) * 5, torch.randn(576, generator=g)
    proj, res = geo.decompose(V, u)
    assert float((proj + res - V).abs().max()) <= 1e-5
    un = u / u.norm()
    assert float((res @ un).abs().max()) <= 1e-4  # the residual has no component along the direction
    p64, r64 = geo.decompose(V.double(), u.double())
    assert torch.equal(p64 + r64, V.double()) or float((p64 + r64 - V.double()).abs().max()) <= 1e-12


def test_nested_cv_never_scores_a_concept_it_trained_on():
    X, y, _, _ = _synthetic()
    res = geo.nested_ridge(X, y)
    tested = sorted(i for _, te in res["folds"] for i in te)
    assert tested == list(range(len(y)))  # every concept scored exactly once
    for tr, te in res["folds"]:
        assert not set(tr) & set(te)
    # a fold's predictions do not move when its own test labels change: they never entered the fit (or centring)
    _, te0 = res["folds"][0]
    y2 = y.copy()
    y2[te0] = 1 - y2[te0]
    res2 = geo.nested_ridge(X, y2)
    assert np.array_equal(np.array(res["pred"])[te0], np.array(res2["pred"])[te0])
    assert res["r2_pooled"] == pytest.approx(R2_POOLED, abs=1e-9)


R2_POOLED = 0.8940306212388488


def test_threshold_rule_and_directions():
    X, y, concepts, ref = _synthetic()
    tau, f1, table = geo.choose_threshold(X, y)
    assert table["n_success"].between(8, 32).all() and table["n_failure"].min() >= 8  # minority >= 20 % of 40
    assert (tau, round(f1, 6)) == (TAU, F1)
    g, dirs = geo.analyse(X, y, concepts, ref)
    assert g.tau == tau and g.n_success == int((y > tau).sum())
    assert g.pc1_meandiff_cos == pytest.approx(PC1_MD, abs=1e-6)
    assert abs(dirs["meandiff"][0]) > 0.9 and g.pc1_meandiff_cos > 0.9  # the planted axis is found
    fixed, _ = geo.analyse(X, y, concepts, ref, tau=0.5)
    assert fixed.tau_source == "fixed" and fixed.n_success == int((y > 0.5).sum())


TAU, F1, PC1_MD = 0.67, 0.857143, 0.9605917718372988


def test_detection_rates_and_model_free_rerun(tmp_path):
    X, y, concepts, ref = _synthetic()
    rows = [
        {"concept": c, "kind": "injection", "forced": False, "layer": 3, "strength": 0.2, "detected": bool(k < r * 4)}
        for c, r in zip(concepts, y)
        for k in range(4)
    ]
    rows += [
        {"concept": concepts[0], "kind": "control", "forced": False, "layer": 3, "strength": 0.2, "detected": True}
    ]
    rates = geo.detection_rates(pd.DataFrame(rows), 3, 0.2)
    assert list(rates.concept) == concepts and rates["n"].eq(4).all()
    V = {c: torch.tensor(X[i], dtype=torch.float32) for i, c in enumerate(concepts)}
    geo.save_inputs(tmp_path / "analysis", V, rates, torch.tensor(ref, dtype=torch.float32), 3)
    t0 = time.process_time()
    g = geo.rerun(tmp_path)
    assert time.process_time() - t0 < 60 and g.n_success + g.n_failure == 40
    # the command line (wall time is dominated by importing torch/sklearn, ~50 s on a machine at load 30)
    out = subprocess.run(
        [sys.executable, "-m", "analysis.geometry", "--run", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("pc1_meandiff_cos=") and " pc1_refusal_cos=" in last


# ~50 s on the embedded model; the pure geometry and the job through `--dry-run` stay in the default suite
@pytest.mark.slow
def test_the_jobs_model_side_step_on_embedded(embedded, tmp_path):
    """jobs.geometry's model-side step (`vectors_and_direction`, one call on a replica): the concept vectors at the
    layer and the refusal direction there, as computed directly."""
    from lab.experiments import refusal
    from lab.protocol.trials import SweepConfig
    from lab.steer.concepts import concept_vectors

    sw, concepts = SweepConfig(), ["Dust", "Trumpets"]
    lists = (refusal.instructions("harmful")[:4], refusal.instructions("harmless")[:4])
    args = (concepts, 12, sw.template, sw.baseline, str(tmp_path), "k")
    vecs, ref = refusal.vectors_and_direction(embedded, *args, lists)
    want, _ = concept_vectors(embedded, concepts, [12], sw.template, sw.baseline, str(tmp_path), "k")
    assert set(vecs) == {("Dust", 12), ("Trumpets", 12)}
    assert all(torch.equal(vecs[k].vector, want[k].vector) for k in want)
    every = refusal.refusal_direction(embedded, *lists, position=-2)  # every layer's: row 12 is this one
    torch.testing.assert_close(ref, every.directions[12], atol=1e-5, rtol=1e-5)
    assert refusal.vectors_and_direction(embedded, *args)[1] is None  # a given direction: nothing computed


def test_the_paper_s_split_over_detection_and_combined_rate():
    """04b_vector_geometry.py (safety-research/introspection-mechanisms 5d5d9b4) `sweep_subspace_parameters`:
    `thresholds = [i / 100 for i in range(1, 100)]` + the median, `metrics = ["detection_rate", "combined_rate"]`
    (04b:665-667), `if balance <= 0.2: continue` (04b:703-704), the first strictly best F1 wins (04b:722-727);
    combined_rate = mean(detected ∧ identified) (04b:446-447)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = np.clip(0.5 + 0.1 * X[:, 1] + 0.15 * rng.normal(size=50), 0, 1).round(2)  # weakly linear in axis 1
    comb = np.clip(0.3 + 0.2 * X[:, 0], 0, 1).round(2)  # strongly linear in axis 0
    metric, tau, f1, table = geo.paper_split(X, y, comb)
    assert (metric, tau, round(f1, 4)) == ("combined_rate", 0.2, 0.9798)
    assert round(table[table.metric == "detection_rate"].f1.max(), 4) == 0.7264
    assert geo.choose_threshold(X, y)[0] == 0.56  # the lab's rule sweeps detection only
    lab = geo.choose_threshold(X, y)[2]
    assert ((lab.n_success == 10) | (lab.n_failure == 10)).any()  # the lab keeps a minority of exactly 20 %
    assert not ((table.n_success == 10) | (table.n_failure == 10)).any()  # the paper needs more than 20 %
    g, _ = geo.analyse(X, y, [f"c{i}" for i in range(50)], None, split="paper", combined=comb)
    assert (g.split_metric, g.tau, g.tau_source, g.n_success) == ("combined_rate", 0.2, "cv_lda_f1_paper", 29)
    assert g.n_success == int((comb > 0.2).sum())  # split on the combined rate, not on detection
    rows = pd.DataFrame(
        [
            {"concept": "a", "kind": "injection", "forced": False, "detected": d, "identified": i}
            for d, i in ((True, True), (True, False), (False, False), (True, None))
        ]
    )
    assert geo.detection_rates(rows).loc[0, ["rate", "combined"]].tolist() == [0.75, 0.25]


def test_the_paper_s_ridge_r2_is_the_mean_of_folds_with_global_centring():
    """04b:964-990: `X = vectors_arr - vectors_arr.mean(axis=0)`, `y = detection_rates - detection_rates.mean()`,
    `KFold(n_splits=5, shuffle=True, random_state=42)`, `RidgeCV(alphas=10 ** np.linspace(-2, 8, 25), cv=3)`,
    `cv_r2 = np.mean(fold_r2)` — recomputed here by hand."""
    import warnings

    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    X, y, concepts, ref = _synthetic()
    xc, yc, fold_r2 = X - X.mean(0), y - y.mean(), []
    for tr, te in KFold(n_splits=5, shuffle=True, random_state=42).split(xc):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = RidgeCV(alphas=10 ** np.linspace(-2, 8, 25), cv=3).fit(xc[tr], yc[tr]).predict(xc[te])
        fold_r2.append(1 - np.sum((yc[te] - p) ** 2) / np.sum((yc[te] - yc[te].mean()) ** 2))
    res = geo.nested_ridge(X, y, centring="global")
    assert res["r2_mean_folds"] == pytest.approx(float(np.mean(fold_r2)), abs=1e-10)
    assert round(res["r2_mean_folds"], 4) == 0.875 and round(res["r2_pooled"], 4) == round(R2_POOLED, 4)
    g, _ = geo.analyse(X, y, concepts, ref, ridge="paper")
    assert g.ridge_method == "paper" and g.ridge_r2 == pytest.approx(res["r2_mean_folds"])
    assert geo.analyse(X, y, concepts, ref)[0].ridge_r2 == pytest.approx(R2_POOLED)  # the lab's default: pooled


def test_a_model_that_never_claims_detection_is_refused_in_one_line():
    """Gemma 3 270M base in the chat format: every rate 0, nothing to split; the one line says why and where to look."""
    from lab.errors import LabError

    X, _, concepts, _ = _synthetic(n=8)
    with pytest.raises(LabError) as err:
        geo.analyse(X, np.zeros(8), concepts, None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("no success/failure split: every concept's detection rate is on one side")
    assert "(rates 0.00..0.00)" in msg and "configs/geometry-demo.yaml says what to run instead" in msg
    # 8 concepts cannot give a CV split (minority >= 5): τ is the median, and the report says so
    g, _ = geo.analyse(X, np.array([0, 0, 0, 0, 0.5, 0.5, 1, 1.0]), concepts, None)
    assert (g.tau, g.tau_source, g.n_success) == (0.25, "median", 4) and np.isnan(g.tau_f1)
