"""Injection is exact: +strength·v where it should be, exactly 0 elsewhere, on every generated token; hooks go away."""

from __future__ import annotations

import pytest
import torch

from lab.model.loading import decoder_layers
from lab.steer.injection import Injection, capture_blocks, inject


def _ids(batch: int = 3, length: int = 7) -> torch.Tensor:
    return torch.arange(batch * length).reshape(batch, length) % 100 + 1


def test_residual_changes_by_exactly_strength_times_vector(tiny_model):
    layer, d = 2, tiny_model.config.hidden_size
    ids = _ids()
    g = torch.Generator().manual_seed(1)
    vecs = torch.randn(3, d, generator=g)
    strengths = torch.tensor([0.5, 0.0, 3.0])
    starts = torch.tensor([2, 0, 5])
    with torch.no_grad(), capture_blocks(tiny_model, [layer]) as plain:
        tiny_model(ids)
    with (
        torch.no_grad(),
        inject(tiny_model, Injection(layer, vecs, strengths, starts)),
        capture_blocks(tiny_model, [layer]) as steered,
    ):
        tiny_model(ids)
    a, b = plain[layer][0], steered[layer][0]
    diff = b - a
    pos = torch.arange(ids.shape[1])
    mask = pos[None, :] >= starts[:, None]
    delta = strengths[:, None] * vecs
    assert torch.equal(b, torch.where(mask[..., None], a + delta[:, None, :], a))  # bit-exact
    assert torch.equal(diff[~mask], torch.zeros_like(diff[~mask]))  # exactly 0 before the start
    assert torch.equal(diff[1], torch.zeros_like(diff[1]))  # strength 0 row untouched
    for r in (0, 2):
        torch.testing.assert_close(diff[r, mask[r]], delta[r].expand(int(mask[r].sum()), d), rtol=0, atol=1e-5)


def test_every_generated_token_is_steered(tiny_model):
    layer, d = 1, tiny_model.config.hidden_size
    ids = _ids(2, 5)
    vecs = torch.ones(2, d)
    strengths = [2.0, 0.0]
    block = decoder_layers(tiny_model)[layer]
    seen_in, seen_out = [], []
    pre = block.register_forward_hook(lambda m, a, o: seen_in.append(o.clone()))
    try:
        with inject(tiny_model, Injection(layer, vecs, strengths, [3, 3])) as state:
            post = block.register_forward_hook(lambda m, a, o: seen_out.append(o.clone()))
            try:
                tiny_model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=0
                )
            finally:
                post.remove()
    finally:
        pre.remove()
    assert (
        len(seen_in) == 4 and state[f"resid_post.{layer}"] == 5 + 3
    )  # prefill + 3 decode steps (the 4th token needs no pass)
    for step, (a, b) in enumerate(zip(seen_in, seen_out)):
        diff = b - a
        if step == 0:
            assert torch.equal(diff[:, :3], torch.zeros_like(diff[:, :3]))
            diff = diff[:, 3:]
        torch.testing.assert_close(diff[0], torch.full_like(diff[0], 2.0), rtol=0, atol=1e-5)
        assert torch.equal(diff[1], torch.zeros_like(diff[1]))


def test_hooks_removed_even_on_exception(tiny_model):
    block = decoder_layers(tiny_model)[0]
    before = len(block._forward_hooks)
    with pytest.raises(RuntimeError, match="boom"):
        with (
            inject(tiny_model, Injection(0, torch.zeros(tiny_model.config.hidden_size))),
            capture_blocks(tiny_model, [0]),
        ):
            assert len(block._forward_hooks) == before + 2
            raise RuntimeError("boom")
    assert len(block._forward_hooks) == before


def test_batch_mismatch_is_an_error(tiny_model):
    with pytest.raises(RuntimeError, match="set up for 2 rows"):
        with torch.no_grad(), inject(tiny_model, Injection(0, torch.zeros(2, tiny_model.config.hidden_size))):
            tiny_model(_ids(3, 4))
