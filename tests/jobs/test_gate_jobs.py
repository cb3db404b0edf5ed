"""Gate interventions on the embedded model (empty set bit-identical, clamp to own value unchanged) and the
dose-response → gates job end to end on random transcoders (resumable, report rerunnable without the model)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lab.experiments import features
from lab.steer.readouts import forward
from lab.steer.transcoder import Transcoder


def _random_tc(layer: int, d: int = 576, n: int = 256) -> Transcoder:
    g = torch.Generator().manual_seed(layer)
    return Transcoder(
        torch.randn(d, n, generator=g) / d**0.5,
        torch.randn(n, d, generator=g) / 16,
        torch.zeros(n),
        torch.zeros(d),
        threshold=torch.full((n,), 0.15),
    )


@torch.no_grad()
def test_empty_gate_set_is_bit_identical_and_clamp_to_own_value_is_a_no_op(embedded):
    rows = [
        embedded.tokenizer("The cat sat on the mat and looked at")["input_ids"],
        embedded.tokenizer("Trial 1: Do you detect an injected thought?")["input_ids"],
    ]
    tcs = {16: _random_tc(16), 22: _random_tc(22)}
    base = forward(embedded, rows, capture=["mlp_in.16", "mlp_in.22"])
    empty = forward(embedded, rows, lambda pad: features.feature_edits(tcs, {16: [], 22: []}, 0.0))
    assert torch.equal(base.logits, empty.logits)
    feats = {16: [0, 5, 17, 40], 22: [3, 9]}
    own = {lay: tcs[lay].encode(base.captured[f"mlp_in.{lay}"])[..., f] for lay, f in feats.items()}
    assert sum(int((v > 0).sum()) for v in own.values()) == 26  # some of them fire, so the clamp is not vacuous
    same = forward(embedded, rows, lambda pad: features.feature_edits(tcs, feats, own))
    assert float((same.logits - base.logits).abs().max()) < 1e-5
    zero = forward(embedded, rows, lambda pad: features.feature_edits(tcs, feats, 0.0))
    assert float((zero.logits - base.logits).abs().max()) == pytest.approx(0.04192, abs=1e-4)


@pytest.mark.slow
def test_dose_response_and_gates_jobs_end_to_end(tmp_path):
    import yaml

    from jobs import dose_response, gates
    from tests.entry import run_module

    for lay in (16, 22):
        _random_tc(lay).save(tmp_path / f"layer{lay}.safetensors")
    cfg = {
        "model": {"name": "smollm2-135m"},
        "transcoders": {"dir": str(tmp_path)},
        "gates_k": 4,
        "dose": {
            "concepts": "first:2",
            "inject_layer": 12,
            "layers": [16, 22],
            "strengths": [-0.2, 0.0, 0.2],
            "trial_numbers": [1, 2],
        },
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "gates-test"},
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({**cfg, "causal_strengths": [0.2], "n_boot": 200}))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({**cfg, "output_dir": str(tmp_path / "out" / "smollm2-135m")}))
    assert gates.main(["--config", str(tmp_path / "g.yaml"), "--quiet"]) == 0
    out = tmp_path / "out" / "smollm2-135m"
    rows = pd.read_parquet(out / "rows")
    assert len(rows) == 12 and sorted(rows["strength"].unique()) == [-0.2, 0.0, 0.2]
    causal = pd.read_csv(out / "report" / "causal.csv")
    assert causal["condition"].tolist() == ["ablate:gates", "ablate:random", "patch:gates", "patch:random"]
    assert causal["n"].tolist() == [4, 4, 4, 4]
    mtime = (out / "rows").stat().st_mtime
    assert dose_response.main(["--config", str(tmp_path / "d.yaml"), "--quiet"]) == 0  # resumes: nothing to redo
    assert (out / "rows").stat().st_mtime == mtime
    assert run_module("analysis.gates_report", "--run", str(out), "--k", "4") == 0  # no model
    assert pd.read_csv(out / "report" / "gates.csv")["rank"].tolist() == [1, 2, 3, 4]
