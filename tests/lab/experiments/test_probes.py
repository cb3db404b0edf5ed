"""Span injection is exact; the probe job runs end to end on the embedded model and logs to MLflow."""

from __future__ import annotations

import pytest
import torch

from lab.protocol.probe_prompts import label_token_ids
from lab.steer.injection import Injection, capture_blocks, inject


def _block_out(model, layer, ids, spans=()):
    with capture_blocks(model, [layer]) as acts:
        model(input_ids=ids, use_cache=False)
    return acts[layer][0]


def test_inject_span_adds_only_inside_the_span(tiny_model):
    torch.manual_seed(1)
    ids = torch.randint(0, 128, (3, 10))
    layer, d = 1, tiny_model.config.hidden_size
    vecs = torch.randn(3, d)
    strengths, starts, ends = [2.0, 0.0, 0.5], [2, 0, 7], [5, 10, 7]  # row 1: strength 0; row 2: empty span
    with torch.no_grad():
        base = _block_out(tiny_model, layer, ids)
        with inject(tiny_model, Injection(layer, vecs, strengths, starts, ends)) as state:
            with capture_blocks(tiny_model, [layer]) as acts:
                tiny_model(input_ids=ids, use_cache=False)
        steered = acts[layer][0]
    assert state[f"resid_post.{layer}"] == 10
    inside = torch.zeros(3, 10, dtype=torch.bool)
    inside[0, 2:5] = True
    assert torch.equal(steered[~inside], base[~inside])  # bit-for-bit outside the span and for rows 1 and 2
    assert torch.allclose(steered[0, 2:5] - base[0, 2:5], (2.0 * vecs[0]).expand(3, -1), atol=1e-5)
    with torch.no_grad():  # the hook is gone after the context
        assert torch.equal(_block_out(tiny_model, layer, ids), base)


def test_inject_span_counts_positions_across_calls_and_nests(tiny_model):
    torch.manual_seed(2)
    layer, d = 2, tiny_model.config.hidden_size
    a, b = torch.randint(0, 128, (1, 4)), torch.randint(0, 128, (1, 4))
    v = torch.randn(d)
    with torch.no_grad():
        base_a, base_b = _block_out(tiny_model, layer, a), _block_out(tiny_model, layer, b)
        with inject(tiny_model, Injection(layer, v, 1.0, 3, 6)), inject(tiny_model, Injection(layer, v, 0.5, 1, 2)):
            with capture_blocks(tiny_model, [layer]) as acts:
                tiny_model(input_ids=a, use_cache=False)  # positions 0..3
                tiny_model(input_ids=b, use_cache=False)  # positions 4..7
    out_a, out_b = acts[layer]
    expect_a = torch.zeros(4)
    expect_a[1], expect_a[3] = 0.5, 1.0
    expect_b = torch.tensor([1.0, 1.0, 0.0, 0.0])
    for out, base, k in ((out_a, base_a, expect_a), (out_b, base_b, expect_b)):
        assert torch.allclose(out[0] - base[0], k[:, None] * v[None, :], atol=1e-5)
        assert torch.equal(out[0][k == 0], base[0][k == 0])


def test_inject_span_removes_hook_on_error(tiny_model):
    ids = torch.randint(0, 128, (1, 5))
    with torch.no_grad():
        base = _block_out(tiny_model, 0, ids)
        with pytest.raises(ValueError):
            with inject(tiny_model, Injection(0, torch.ones(32), 1.0, 0, 5)):
                raise ValueError("boom")
        assert torch.equal(_block_out(tiny_model, 0, ids), base)


def test_label_tokens_share_a_split_space():
    from tests.training_fixtures import tiny_tokenizer

    tok = tiny_tokenizer(["the thought was in sentence 1 2 3 A B"])
    common, first = label_token_ids(tok, "the thought was in sentence", [" 1", " 2", " 3"])
    assert common == [] and len(set(first)) == 3


def test_probe_job_end_to_end(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from jobs.probes import main

    db = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--config", "configs/probes-demo.yaml", "--set", "concepts=[Dust]", "--set", "repeats=1"]
    args += ["--set", "n_sentences=3", "--set", "weak_fractions=[0.0]", "--set", "kinds=[injection,control,random]"]
    args += ["--output", str(tmp_path / "out"), "--tracking-uri", db, "--quiet"]
    rc = main(args)
    assert rc == 0

    from lab.run import store

    df = store.read(tmp_path / "out")
    assert len(df) == 3 * 3 + 2 * 3  # localisation 3 targets + discrimination 2 targets, × 3 kinds
    assert set(df.chance.round(3)) == {0.333, 0.5}
    assert df.groupby("probe").target.nunique().to_dict() == {"discrimination": 2, "localisation": 3}
    ctl = df[df.kind == "control"]
    assert ctl.groupby("probe").prediction.nunique().max() == 1  # nothing injected: the same answer for every target
    run = MlflowClient(db).search_runs([MlflowClient(db).get_experiment_by_name("probes-demo").experiment_id])[0]
    assert {"localisation/injection/accuracy", "discrimination/random/accuracy_lo"} <= set(run.data.metrics)
    assert (tmp_path / "out" / "report" / "probes.png").is_file()
    capsys.readouterr()
    assert main(args) == 0
    assert "probe trials: 15 on smollm2-135m (0 scored now, 15 already stored)" in capsys.readouterr().out
