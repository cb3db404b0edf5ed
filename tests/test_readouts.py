"""`readouts.forward` computes the LM head at the last position only; its logits equal the full forward's last row."""

from __future__ import annotations

import torch

from lab import interventions as iv
from lab.models import LoadedModel, ModelSpec
from lab.readouts import forward


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
