"""The per-concept feature table under injection (what the feature regression and gates fit)."""

from __future__ import annotations

import torch

from lab.experiments.features import concept_codes, detection_by_concept, feature_table, logit_direction, trial_prompts
from lab.steer.transcoder import Transcoder


def _tc() -> Transcoder:
    g = torch.Generator().manual_seed(0)
    return Transcoder(
        torch.randn(576, 16, generator=g) / 24, torch.randn(16, 576, generator=g), torch.zeros(16), torch.zeros(576)
    )


def test_feature_table_on_the_embedded_model(embedded):
    tc = _tc()
    g = torch.Generator().manual_seed(1)
    vec = {c: torch.randn(576, generator=g) for c in ("Dust", "Bread")}
    prompts = trial_prompts(embedded, (1,))
    strengths = {"Dust": 4.0, "Bread": 0.0}
    codes = {14: torch.stack([concept_codes(embedded, vec[c], strengths[c], 12, {14: tc}, prompts)[14] for c in vec])}
    feats, meta = feature_table(["Dust", "Bread"], codes, {14: tc.w_dec.float() @ logit_direction(embedded)})
    assert feats["concept"].tolist() == ["Dust", "Bread"]
    assert list(feats.columns[1:]) == meta["feature"].tolist() and all(meta["layer"] == 14)
    from lab.protocol.prompts import inject_start, render
    from lab.steer import interventions as iv

    ids, start = inject_start(embedded.tokenizer, render(embedded, "original", "standard", 1))
    fired = torch.zeros(16, dtype=torch.bool)
    for c, s in strengths.items():  # the same reads, by hand: one prompt, one Add, mlp_in at the end
        with (
            torch.no_grad(),
            iv.apply(embedded.model, [iv.Add("resid_post.12", vec[c], s, start)]),
            iv.capture(embedded.model, ["mlp_in.14"]) as got,
        ):
            embedded.model(torch.tensor([ids]))
        fired |= tc.encode(got["mlp_in.14"][0][0, -1]) > 0
    assert len(meta) == int(fired.sum()) > 0 and set(meta["coverage"]) <= {0.5, 1.0}
    f = meta.iloc[0]
    a = feats[f["feature"]].to_numpy()
    assert abs(f["attribution"] - abs(a * f["dla"]).mean()) < 1e-6 and f["score"] == f["coverage"] * f["attribution"]


def test_regression_tables_through_the_fan_out_match_the_direct_reads(embedded, tmp_path):
    """read_codes (execute: one trial per concept, stored shards, resumable) + write_tables give the table the
    direct reads give, bit for bit; a second call reads the stored shards and runs nothing."""
    import json

    import pandas as pd

    from lab.config import ModelConfig
    from lab.experiments import feature_regression as fr
    from lab.run.parallel import FanOutConfig
    from lab.steer.concepts import concept_vectors
    from lab.steer.injection import Strength

    tc, concepts = _tc(), ["Bread", "Dust"]
    reads = fr.ConceptReads(12, Strength(0.2, "relative"), (14,), (1, 2), str(tmp_path / "vectors"))
    runner = FanOutConfig(num_actors=0)
    args = (ModelConfig(name="smollm2-135m"), runner, concepts, reads, lambda lm, layers: {14: tc}, {"t": 1})
    rows = fr.read_codes(*args, tmp_path / "reads", lm=embedded)
    assert [r["concept"] for r in rows] == concepts
    fr.write_tables(tmp_path / "reg", {"Bread": 0.5, "Dust": 1.0}, rows, {"ns": [0, 3], "folds": 2})
    vecs, _ = concept_vectors(embedded, concepts, [12], cache_dir=str(tmp_path / "vectors"), model_key="smollm2-135m")
    prompts = trial_prompts(embedded, (1, 2))
    direct = []
    for c in concepts:
        cv = vecs[(c, 12)]
        direct.append(concept_codes(embedded, cv.vector, 0.2 * cv.resid_norm / cv.norm, 12, {14: tc}, prompts)[14])
    feats, meta = feature_table(concepts, {14: torch.stack(direct)}, {14: tc.w_dec.float() @ logit_direction(embedded)})
    stored = pd.read_parquet(tmp_path / "reg" / "features.parquet")
    assert stored.drop(columns="detection_rate").equals(feats) and stored["detection_rate"].tolist() == [0.5, 1.0]
    assert pd.read_parquet(tmp_path / "reg" / "feature_meta.parquet").equals(meta)
    v = pd.read_parquet(tmp_path / "reg" / "vectors.parquet")
    assert v["concept"].tolist() == concepts
    want = torch.stack([vecs[(c, 12)].vector for c in concepts])
    assert torch.equal(torch.tensor(v.drop(columns="concept").to_numpy()), want)
    ns = sorted({len(meta), min(3, len(meta))})
    assert json.loads((tmp_path / "reg" / "spec.json").read_text()) == {"ns": ns, "folds": 2}
    shards = sorted((tmp_path / "reads").glob("shard-*.parquet"))
    assert len(shards) == 1 and fr.read_codes(*args, tmp_path / "reads", lm=embedded) == rows
    assert sorted((tmp_path / "reads").glob("shard-*.parquet")) == shards


def test_detection_rates_use_free_injection_trials_at_the_layer():
    import pandas as pd

    df = pd.DataFrame(
        {
            "kind": ["injection"] * 4 + ["control"],
            "forced": [False, False, True, False, False],
            "layer": [12, 12, 12, 10, 12],
            "concept": ["A", "A", "A", "A", "A"],
            "detected": [True, False, True, True, True],
        }
    )
    assert detection_by_concept(df, 12, ["A", "B"]) == {"A": 0.5}


def test_a_sweep_where_no_concept_is_detected_is_refused_before_any_feature_read(tmp_path):
    """Gemma 3 270M base never claims detection: every rate 0 is a constant target (the paper procedure's
    projection baseline crashed in an SVD on it); refused in one line, naming sweep_dir."""
    from types import SimpleNamespace

    import pandas as pd
    import pytest

    from lab.errors import LabError
    from lab.experiments.feature_regression import sweep_rates

    rows = {"trial_id": ["a", "b", "c", "d"], "kind": ["injection"] * 4, "forced": [False] * 4, "layer": [8] * 4}
    df = pd.DataFrame(rows | {"concept": ["A", "A", "B", "B"], "detected": [False] * 4})
    df.to_parquet(tmp_path / "shard-0.parquet", index=False)
    sweep = SimpleNamespace(output_dir=str(tmp_path))
    with pytest.raises(
        LabError, match=r"^every concept's detection rate at layer 8 in .* is 0\.00: nothing to regress"
    ):
        sweep_rates(sweep, 8, ["A", "B"], 2, run=False)
    df.assign(detected=[True, False, False, False]).to_parquet(tmp_path / "shard-0.parquet", index=False)
    assert sweep_rates(sweep, 8, ["A", "B"], 2, run=False) == {"A": 0.5, "B": 0.0}
