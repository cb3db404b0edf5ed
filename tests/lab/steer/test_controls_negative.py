"""The `negative` vector control injects exactly −v (same norm) and is counted like every other control kind."""

from __future__ import annotations

import pandas as pd
import torch

from lab.generate.runner import VectorBank
from lab.protocol.trials import VECTOR_CONTROLS, SweepConfig, expand, make_trial
from lab.reporting import metrics
from lab.reporting.report import CONTROL_RATES
from lab.steer.concepts import ConceptVector
from lab.steer.injection import Injection, capture_blocks, inject


def _trial(kind: str):
    return make_trial(
        model="tiny",
        concept="Dust",
        layer=1,
        strength=4.0,
        strength_mode="raw",
        kind=kind,
        trial_number=1,
        sample=0,
        forced=False,
        prompt_variant="original",
        dialogue_format="standard",
        seed=0,
        max_new_tokens=4,
        temperature=0.0,
    )


def test_negative_trial_injects_exactly_minus_v(tiny_model):
    torch.manual_seed(3)
    v = torch.randn(32)
    bank = VectorBank({("Dust", 1): ConceptVector("Dust", 1, v, resid_norm=5.0)}, {1: 2.0})
    pos, neg = _trial("injection"), _trial("negative")
    assert torch.equal(bank.vector(neg), -v)
    assert bank.strengths(neg) == bank.strengths(pos)  # same raw multiplier, same relative strength, same ‖v‖
    ids = torch.tensor([[1, 5, 9, 17, 33, 2]])
    with torch.no_grad(), capture_blocks(tiny_model, [1]) as plain:
        tiny_model(ids)
    with (
        torch.no_grad(),
        inject(tiny_model, Injection(1, bank.vector(neg)[None], [4.0], [2])),
        capture_blocks(tiny_model, [1]) as out,
    ):
        tiny_model(ids)
    delta = out[1][0] - plain[1][0]
    assert torch.equal(delta[0, :2], torch.zeros(2, 32))
    assert torch.allclose(delta[0, 2:], (-4.0 * v).expand(4, 32), atol=1e-6)


def test_every_control_kind_is_planned_counted_and_reported():
    trials = expand(
        SweepConfig(concepts=("Dust",), trials_per_concept=1, controls=VECTOR_CONTROLS), "tiny", (1,), (4.0,), "raw"
    )
    assert [t.kind for t in trials] == ["injection", "control", "random", "norm_matched", "shuffled", "negative"]
    df = pd.DataFrame(
        [
            t.to_dict() | {"detected": t.kind in ("injection", "negative"), "identified": False, "coherent": True}
            for t in trials
        ]
    )
    out = metrics.summarize(df)
    for kind in VECTOR_CONTROLS:
        assert f"{kind}_rate" in CONTROL_RATES
        assert out[f"n_{kind}_rate"] == 1
    assert out["negative_rate"] == 1.0 and out["shuffled_rate"] == 0.0
