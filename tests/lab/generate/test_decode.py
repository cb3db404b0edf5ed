"""`lab.generate.decode`: the hand-written loop equals one-row HF `generate` under per-row injection, with and without finished
rows evicted; its sampler matches HF's warpers and is seeded per row."""

from __future__ import annotations

import pytest
import torch

from lab.generate import decode
from lab.steer import interventions as iv

PREFIX = [5, 9, 17, 3, 44, 12, 8]
SUFFIXES = [[21, 30, 7], [21, 30, 7, 99, 4], [60], [21, 31, 7, 2]]
ROWS = [PREFIX + s for s in SUFFIXES]
LAYER, D = 1, 32


def _vecs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(len(ROWS), D, generator=g), [2.0, 0.0, 3.0, 1.5], [len(PREFIX) + 1, 0, len(PREFIX), 9]


def _steer(rows):
    """Per-row Adds for the padded layout decode uses (pads between the prefix and each row's suffix)."""
    v, s, st = _vecs()
    width = max(len(r) for r in ROWS)
    starts = torch.tensor([width - len(r) + x for r, x in zip(ROWS, st)])
    return lambda act: [iv.Add(f"resid_post.{LAYER}", v[act], torch.tensor(s)[act], starts[act])]


def _one_row(model, b, max_new, stop):
    v, s, st = _vecs()
    x = torch.tensor([ROWS[b]])
    with torch.no_grad(), iv.apply(model, [iv.Add(f"resid_post.{LAYER}", v[b : b + 1], [s[b]], [st[b]])]):
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )[0, x.shape[1] :].tolist()
    n = next((j + 1 for j, t in enumerate(out) if t in stop), len(out))
    return out[:n]


def _run(model, stop, **kw):
    return decode.decode_batch(model, ROWS, len(PREFIX), 10, stop, 0, steer=_steer(ROWS), **kw)


@pytest.mark.parametrize("static", [True, False])
def test_loop_equals_one_row_generate(tiny_model, static):
    free = _run(tiny_model, set(), static=static)
    assert free == [_one_row(tiny_model, b, 10, set()) for b in range(len(ROWS))]


def test_eviction_keeps_every_row_identical(tiny_model):
    free = _run(tiny_model, set())
    stop = {free[0][2], free[2][4]}  # rows 0 and 2 (at least) stop early, and leave the batch
    kept = _run(tiny_model, stop, evict=False)
    evicted = _run(tiny_model, stop, evict=True)
    assert evicted == kept == [_one_row(tiny_model, b, 10, stop) for b in range(len(ROWS))]
    assert len(evicted[0]) <= 3 and any(len(r) == 10 for r in evicted)  # someone ran on after the eviction


def test_sampling_is_seeded_per_row(tiny_model):
    s = decode.Sampling(1.0)
    batch = _run(tiny_model, set(), sampling=s, seeds=[11, 12, 13, 14])
    assert batch == _run(tiny_model, set(), sampling=s, seeds=[11, 12, 13, 14])
    alone = decode.decode_batch(
        tiny_model,
        ROWS[2:3],
        len(PREFIX),
        10,
        set(),
        0,
        sampling=s,
        seeds=[13],
        steer=lambda act: [iv.Add(f"resid_post.{LAYER}", _vecs()[0][2:3], [3.0], [len(PREFIX)])],
    )
    assert alone[0] == batch[2]  # a row's sample does not depend on its batch
    assert _run(tiny_model, set(), sampling=s, seeds=[1, 2, 3, 4]) != batch


def test_filter_matches_hf_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    x = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    x[0, :3] = 4.0  # ties at the k-th value
    for t, k, p in [(1.0, 0, 1.0), (0.7, 20, 1.0), (1.0, 0, 0.9), (1.3, 64, 0.95), (1.0, 3, 0.5)]:
        want = TemperatureLogitsWarper(t)(None, x.clone())
        want = TopKLogitsWarper(k)(None, want) if k else want
        want = TopPLogitsWarper(p)(None, want) if p < 1 else want
        assert torch.equal(decode.filtered(x, decode.Sampling(t, k, p)), want)


def test_unsupported_generation_config_falls_back(tiny_model):
    gc = tiny_model.generation_config
    assert decode.sampling_for(tiny_model, 0.0, "plain") == decode.Sampling()
    assert decode.sampling_for(tiny_model, 1.0, "generation_config") == decode.Sampling(1.0, 50, 1.0)
    old, gc.repetition_penalty = gc.repetition_penalty, 1.2
    try:
        assert decode.sampling_for(tiny_model, 1.0, "plain") is None
    finally:
        gc.repetition_penalty = old


@torch.no_grad()
def test_shared_prefix_attention_equals_sdpa(tiny_model):
    """The suffix prefill (pads between prefix and suffix) and a decode step give SDPA's logits when the prefix's
    keys/values are read once for the batch (4 query heads over 2 kv heads: grouped-query order matters)."""
    from transformers.cache_utils import DynamicCache

    from lab.generate import prefix_attention

    p, width = len(PREFIX), max(len(r) for r in ROWS)
    ids, mask = decode.padded(ROWS, p, 0, "cpu", extra=1)
    pos = decode.positions_of(mask)

    def run(share: bool):
        cache = DynamicCache(config=tiny_model.config)
        tiny_model(input_ids=ids[:1, :p], cache=cache, use_cache=True)
        cache = decode._buffer_cache(cache, len(ROWS), width + 1, True)
        with prefix_attention.shared(tiny_model, p if share else 0) as on:
            kw = {"cache": cache, "use_cache": True}
            first = tiny_model(input_ids=ids[:, p:], attention_mask=mask[:, :width], position_ids=pos[:, p:width], **kw)
            nxt = first.logits[:, -1].argmax(-1, keepdim=True)
            second = tiny_model(input_ids=nxt, attention_mask=mask, position_ids=pos[:, width:], **kw)
        return on, first.logits, second.logits

    on, a, b = run(True)
    off, a0, b0 = run(False)
    assert (on, off, tiny_model.config._attn_implementation) == (True, False, "sdpa")
    torch.testing.assert_close(a, a0, rtol=0, atol=1e-5)
    torch.testing.assert_close(b, b0, rtol=0, atol=1e-5)
    assert _run(tiny_model, set(), share_attention=True) == _run(tiny_model, set(), share_attention=False)


def test_sampler_draws_the_filtered_distribution():
    """Inverse-CDF draws, one uniform per row: 20k rows of one distribution reproduce its probabilities, and tokens
    that top-k removed are never drawn."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 1.5, 0.2]]).repeat(20_000, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(len(logits))]
    for s in (decode.Sampling(1.0), decode.Sampling(0.7, top_k=3)):
        want = decode.filtered(logits[:1], s).softmax(-1)[0]
        got = torch.bincount(decode._pick(logits, s, gens), minlength=8).double() / len(logits)
        assert float((got - want).abs().max()) < 0.01
        assert bool((got[want == 0] == 0).all()) and int((want > 0).sum()) == (8 if s.top_k == 0 else 3)
