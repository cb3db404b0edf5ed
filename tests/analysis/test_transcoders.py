"""Transcoders: the Gemma Scope 2 layout round-trips; the trainer fits a known sparse map; the cache is reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lab.errors import LabError
from lab.steer.transcoder import Transcoder, load_transcoder, save_gemma_scope
from training.transcoder.fit import TranscoderConfig, evaluate, fit_transcoder, least_squares
from training.transcoder.train import cache_key, transcoder_for, windows


def _jumprelu(d_in=6, n=10, d_out=5, seed=0) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    return Transcoder(
        torch.randn(d_in, n, generator=g),
        torch.randn(n, d_out, generator=g),
        torch.randn(n, generator=g),
        torch.randn(d_out, generator=g),
        threshold=torch.rand(n, generator=g),
        w_skip=torch.randn(d_in, d_out, generator=g),
        meta={"config": {"width": n, "l0": "big"}},
    )


def test_gemma_scope_layout_round_trip(tmp_path):
    tc = _jumprelu()
    out = save_gemma_scope(tc, tmp_path / "layer_3_width_16k_l0_big_affine")
    from safetensors import safe_open

    with safe_open(str(out / "params.safetensors"), "pt") as f:  # the tensor names Gemma Scope 2 ships
        assert sorted(f.keys()) == ["affine_skip_connection", "b_dec", "b_enc", "threshold", "w_dec", "w_enc"]
    assert json.loads((out / "config.json").read_text()) == {"width": 10, "l0": "big"}
    back = load_transcoder(out)
    for k in ("w_enc", "w_dec", "b_enc", "b_dec", "threshold", "w_skip"):
        assert torch.equal(getattr(back, k), getattr(tc, k)), k
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(back(x), tc(x))
    f = tc.encode(x)  # JumpReLU: a pre-activation at or below its threshold is zero, above it passes unchanged
    pre = tc.pre_acts(x)
    assert torch.equal(f, torch.where(pre > tc.threshold, pre, torch.zeros_like(pre)))
    assert torch.equal(back(x), f @ tc.w_dec + tc.b_dec + x @ tc.w_skip)


def test_gemma_scope_1_npz_names(tmp_path):
    tc = _jumprelu()
    d = tmp_path / "gs1"
    d.mkdir()
    np.savez(
        d / "params.npz",
        W_enc=tc.w_enc.numpy(),
        W_dec=tc.w_dec.numpy(),
        b_enc=tc.b_enc.numpy(),
        b_dec=tc.b_dec.numpy(),
        threshold=tc.threshold.numpy(),
    )
    back = load_transcoder(d)
    assert torch.equal(back.w_enc, tc.w_enc) and torch.equal(back.threshold, tc.threshold) and back.w_skip is None
    np.savez(d / "params.npz", W_enc=tc.w_enc.numpy())
    with pytest.raises(LabError, match="lacks w_dec, b_enc, b_dec"):
        load_transcoder(d)


def _sparse_problem(n_tokens=3000, d=16, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, d, generator=g)
    enc = torch.randn(d, n, generator=g)
    f = torch.relu(x @ enc - 2.5)  # ~1 % of features active per token
    y = f @ torch.randn(n, d, generator=g) + 0.3 * x @ torch.randn(d, d, generator=g)
    return x, y


@pytest.mark.parametrize(
    "init, fve, fve_linear, l0, dead", [("data", 0.863, 0.323, 6.442, 1 / 64), ("random", 0.919, 0.385, 25.826, 0.0)]
)
def test_fit_recovers_a_sparse_map(init, fve, fve_linear, l0, dead):
    torch.manual_seed(0)
    x, y = _sparse_problem()
    cfg = TranscoderConfig(n_features=64, l1=0.001, epochs=4, batch_size=64, lr=1e-2, init=init)
    ev = evaluate(fit_transcoder(x[:2500], y[:2500], cfg), x[2500:], y[2500:])
    # the skip alone explains a third: the sparse part is what the features must carry
    assert (round(ev["fve"], 3), round(ev["fve_linear"], 3), round(ev["l0"], 3)) == (fve, fve_linear, l0)
    assert ev["dead_frac"] == dead and ev["eval_tokens"] == 500


def test_windows_and_config_errors():
    class Tok:
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [len(w) for w in text.split()]}

    w = windows(Tok(), ["a bb ccc", "dddd e"], seq_len=4, max_tokens=100)
    assert w.tolist() == [[1, 2, 3, 0]]  # EOS between texts; the tail shorter than a window is dropped
    with pytest.raises(LabError, match="fewer than one window"):
        windows(Tok(), ["a"], seq_len=4, max_tokens=100)
    with pytest.raises(LabError, match="holdout"):
        TranscoderConfig(holdout=1.0)


def test_transcoder_for_trains_once_then_reads_the_cache(embedded, tmp_path):
    cfg = TranscoderConfig(n_features=64, epochs=1, max_tokens=2000, seq_len=64, sources=("dialogues",), threads=2)
    tc = transcoder_for(embedded, 3, tmp_path, cfg)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and "from_cache" not in tc.meta
    assert tc.meta["eval_tokens"] > 0 and tc.meta["site_in"] == "mlp_in.3"
    again = transcoder_for(embedded, 3, tmp_path, cfg)
    assert again.meta["from_cache"] and torch.equal(again.w_enc, tc.w_enc) and again.meta["fve"] == tc.meta["fve"]
    keys = {
        cache_key("m", 3, cfg, "a"),
        cache_key("m", 4, cfg, "a"),
        cache_key("m", 3, cfg, "b"),
        cache_key("n", 3, cfg, "a"),
        cache_key("m", 3, TranscoderConfig(l1=0.01), "a"),
    }
    assert len(keys) == 5  # model, layer, corpus text and config each change the key


def test_layers_trained_together_share_one_exact_activation_pass(embedded, tmp_path):
    """transcoders_for collects every missing layer in one forward pass: each layer's (mlp_in, mlp_out) rows are
    exactly those a pass for that layer alone collects, and each layer lands in its own cache file. (The fitted
    weights themselves are not bit-reproducible across processes or buffers: the least-squares skip init is
    sensitive to memory layout on a small sample.)"""
    from training.transcoder.corpus import texts
    from training.transcoder.train import collect_activations, transcoders_for

    cfg = TranscoderConfig(n_features=32, epochs=1, max_tokens=1500, seq_len=64, sources=("dialogues",), threads=2)
    ids = windows(embedded.tokenizer, texts(embedded, cfg.sources), cfg.seq_len, cfg.max_tokens)
    both = collect_activations(embedded.model, ids, [5, 3])
    for layer in (3, 5):
        (x, y) = collect_activations(embedded.model, ids, [layer])[layer]
        assert torch.equal(x, both[layer][0]) and torch.equal(y, both[layer][1])
    tcs = transcoders_for(embedded, [5, 3], tmp_path, cfg)
    assert list(tcs) == [5, 3] and tcs[3].meta["collect_shared_by"] == 2 and tcs[3].meta["site_in"] == "mlp_in.3"
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    again = transcoders_for(embedded, [3, 5], tmp_path, cfg)
    assert all(again[k].meta["from_cache"] and torch.equal(again[k].w_enc, tcs[k].w_enc) for k in (3, 5))


def test_the_skip_fit_is_reproducible_on_real_activations(embedded):
    """The skip map's least-squares solve on the embedded model's layer-12 MLP activations: repeated solves agree bit
    for bit (float64; the float32 LAPACK solve did not, and moved the demo's held-out FVE by up to ±0.05 from run to
    run), the residual is orthogonal to the inputs (it is the least-squares solution), and two fits on the same rows
    give the same transcoder."""
    from training.transcoder.corpus import texts
    from training.transcoder.train import collect_activations

    ids = windows(embedded.tokenizer, texts(embedded, ("pydoc",)), 128, 3000)
    x, y = collect_activations(embedded.model, ids, [12], 8)[12]
    xn, yn = x - x.mean(0), y - y.mean(0)
    sols = [least_squares(xn, yn) for _ in range(3)]
    assert all(torch.equal(sols[0], s) for s in sols[1:])
    normal = xn.double().T @ (xn.double() @ sols[0].double() - yn.double())
    assert float(normal.abs().max()) < 1e-6 * float((xn.double().T @ yn.double()).abs().max())
    cfg = TranscoderConfig(n_features=64, epochs=1)
    a, b = fit_transcoder(x, y, cfg), fit_transcoder(x, y, cfg)
    for k in ("w_enc", "w_dec", "b_enc", "b_dec", "w_skip"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_least_squares_on_rank_deficient_inputs_fits_exactly():
    """Two equal input columns (the Gram matrix is singular): still an exact fit of an exact linear map."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    x[:, 3] = x[:, 2]
    y = x @ torch.randn(8, 4, generator=g)
    assert float((x @ least_squares(x, y) - y).abs().max()) < 1e-4
