"""One bias-training forward pass: the bias as `interventions.Bias` ops (h + v at every position of its site), the
tokenised examples (`encode`: the standard dialogue with the target answer, answer-only labels, the injection start,
layer and raw strength), and `batch_loss`, the answer-only cross-entropy of a batch under its injections and the
bias, optionally running the prompt prefix every row shares once (training/bias/bias_vector.py trains with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lab.generate.decode import common_prefix
from lab.steer import interventions as iv
from lab.steer.injection import Injection, Strength
from training.bias.examples import Example, answer_loss, answer_row, collate, scored_positions


def bias_edits(bias: dict[str, torch.Tensor]) -> list[iv.Bias]:
    return [iv.Bias(site, v) for site, v in bias.items()]


@dataclass(frozen=True)
class Encoded:
    """One tokenised training example: ids, answer-only labels, injection start, layer, raw multiplier, vector."""

    ids: list[int]
    labels: list[int]
    start: int
    layer: int
    raw: float
    vector: torch.Tensor | None


def encode(lm: Any, examples: Sequence[Example], vectors: dict[tuple[str, int], Any], mode: str) -> list[Encoded]:
    """Tokenise examples with the standard dialogue ("original" variant) and their target answers."""
    from lab.protocol.prompts import inject_start, render

    prompts: dict[int, tuple[list[int], int]] = {}
    out = []
    for ex in examples:
        if ex.trial_number not in prompts:
            prompts[ex.trial_number] = inject_start(lm.tokenizer, render(lm, "original", "standard", ex.trial_number))
        ids, start = prompts[ex.trial_number]
        row, labels = answer_row(ids, lm.tokenizer(ex.target, add_special_tokens=False)["input_ids"])
        vec, raw = None, 0.0
        if ex.injected:
            cv = vectors[(ex.concept, ex.layer)]
            vec = cv.vector
            raw = Strength(ex.strength, mode).raw(cv.norm, cv.resid_norm)  # type: ignore[arg-type]
        out.append(Encoded(row, labels, start, ex.layer, raw, vec))
    return out


def batch_loss(
    model: Any, batch: Sequence[Encoded], bias: dict[str, torch.Tensor], pad_id: int, share_prefix: bool = True
) -> torch.Tensor:
    """Answer-only cross-entropy of a batch with its injections and the bias applied (logits only where scored).

    With `share_prefix`, the prompt prefix every row shares before the first injection start (the preamble) is run
    once, with the bias and with gradient, and its KV cache repeated over the batch — the same forward pass and the
    same gradient as the full batch (tests check it), at a fraction of the cost."""
    ids, mask, labels = collate([(e.ids, e.labels) for e in batch], pad_id)
    dev = next(model.parameters()).device
    d = next(v for v in bias.values()).shape[-1]
    steer = Injection.per_layer(
        [e.layer for e in batch], [e.vector for e in batch], [e.raw for e in batch], [e.start for e in batch], d
    )
    ops: list[Any] = [inj.op() for inj in steer] + bias_edits(bias)
    pos = scored_positions(labels)
    p = min(common_prefix([e.ids for e in batch]), min(e.start for e in batch)) if share_prefix else 0
    ids, mask, labels, pos = ids.to(dev), mask.to(dev), labels.to(dev), pos.to(dev)
    kwargs: dict[str, Any] = {"use_cache": False}
    if p > 0:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        with iv.apply(model, bias_edits(bias)):
            model(input_ids=ids[:1, :p], attention_mask=mask[:1, :p], past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(batch))
        kwargs = {"past_key_values": cache, "use_cache": True}
    with iv.apply(model, ops, offset=p):
        logits = model(input_ids=ids[:, p:], attention_mask=mask, logits_to_keep=pos - p, **kwargs).logits
    return answer_loss(logits, labels, pos)
