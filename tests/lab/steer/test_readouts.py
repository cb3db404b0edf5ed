"""`readouts.forward` computes the LM head at the last position only; its logits equal the full forward's last row."""

from __future__ import annotations

import torch

from lab.model.loading import LoadedModel, ModelSpec
from lab.steer import interventions as iv
from lab.steer.readouts import forward


class _Tok:
    pad_token_id = 0


def test_last_position_logits_equal_full_forward(tiny_model):
    lm = LoadedModel(tiny_model, _Tok(), ModelSpec("tiny", "tiny", 4, 32, 0.0, (1,)), "tiny")
    rows = [[5, 9, 17, 3], [5, 9, 17, 3, 44, 12], [7]]
    edits = lambda pad: [iv.Add("resid_post.1", torch.ones(3, 32), [1.0, 0.0, 2.0], [p + 1 for p in pad])]  # noqa: E731
    out = forward(lm, rows, edits, capture=["resid_post.2"])
    for b, r in enumerate(rows):
        with (
            torch.no_grad(),
            iv.apply(tiny_model, [iv.Add("resid_post.1", torch.ones(1, 32), [[1.0, 0.0, 2.0][b]], [1])]),
        ):
            full = tiny_model(input_ids=torch.tensor([r]), use_cache=False).logits[0, -1]
        torch.testing.assert_close(out.logits[b], full, rtol=1e-5, atol=1e-5)
    assert out.captured["resid_post.2"].shape == (3, 6, 32)


def test_shared_prefix_forward_equals_padded_forward(tiny_model):
    lm = LoadedModel(tiny_model, _Tok(), ModelSpec("tiny", "tiny", 4, 32, 0.0, (1,)), "tiny")
    pre = [5, 9, 17, 3, 44, 12, 8, 61]
    rows = [pre + [21, 30, 7], pre + [21, 30, 7, 99, 4], pre + [60], pre + [21, 31]]
    v = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))

    def edits(pad):  # row 2 is not injected (strength 0, start 0): it must not stop the prefix from being shared
        starts = [p + s for p, s in zip(pad, [9, 8, 0, 8])]
        return [iv.Add("resid_post.1", v, [1.0, 2.0, 0.0, 0.5], starts), iv.Ablate("mlp_out.2", v[0])]

    from lab.steer.readouts import _shared_prefix, pad_left

    assert _shared_prefix(rows, edits(pad_left(rows, 0)[2]), pad_left(rows, 0)[2]) == 8
    shared = forward(lm, rows, edits)
    plain = forward(lm, rows, edits, share_prefix=False)
    torch.testing.assert_close(shared.logits, plain.logits, rtol=1e-4, atol=1e-4)
    early = lambda pad: [iv.Add("resid_post.1", v, 1.0, [p + 2 for p in pad])]  # noqa: E731  (inside the prefix)
    assert _shared_prefix(rows, early(pad_left(rows, 0)[2]), pad_left(rows, 0)[2]) == 2
    torch.testing.assert_close(
        forward(lm, rows, early).logits, forward(lm, rows, early, share_prefix=False).logits, rtol=1e-4, atol=1e-4
    )
