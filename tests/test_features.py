"""The per-concept feature table under injection (what the feature regression and gates fit)."""

from __future__ import annotations

import torch

from analysis.transcoders import Transcoder
from lab.experiments.feature_table import detection_rates, feature_table


def test_feature_table_on_the_embedded_model(embedded):
    g = torch.Generator().manual_seed(0)
    tc = Transcoder(
        torch.randn(576, 16, generator=g) / 24, torch.randn(16, 576, generator=g), torch.zeros(16), torch.zeros(576)
    )
    vec = {c: torch.randn(576, generator=g) for c in ("Dust", "Bread")}
    feats, meta = feature_table(embedded, ["Dust", "Bread"], vec, {"Dust": 4.0, "Bread": 0.0}, 12, {14: tc})
    assert feats["concept"].tolist() == ["Dust", "Bread"]
    assert list(feats.columns[1:]) == meta["feature"].tolist() and all(meta["layer"] == 14)
    from lab.protocol.prompts import inject_start, render
    from lab.steer import interventions as iv

    ids, start = inject_start(embedded.tokenizer, render(embedded, "original", "standard", 1))
    fired = torch.zeros(16, dtype=torch.bool)
    for c, s in (("Dust", 4.0), ("Bread", 0.0)):  # the same reads, by hand: one prompt, one Add, mlp_in at the end
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
    assert detection_rates(df, 12, ["A", "B"]) == {"A": 0.5}
