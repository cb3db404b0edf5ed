"""What an experiment reads from a forward pass, batched, under per-row interventions.

- `forward`: left-pad token rows, apply interventions built for that padding, return last-position logits (and any
  captured sites). Interventions are given as a function of the per-row left-pad amounts, because positions in the
  padded batch are the unpadded positions shifted by the row's padding.
- `yes_no_score`: logsumexp over the "Yes" token variants − logsumexp over the "No" variants at the answer position
  (the patching metric of the paper's code).
- `first_token_logprob`: log-prob of a word's first token after a prefill (the forced-identification metric).
Generation (text to judge) is `lab.runner.Runner`, which uses the same interventions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lab import interventions as iv
from lab.models import LoadedModel

YES_VARIANTS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_VARIANTS = ("No", " No", "no", " no", "NO", " NO")

EditsFor = Callable[[list[int]], Sequence[Any]]  # per-row left padding -> interventions


@dataclass(frozen=True)
class Forward:
    logits: torch.Tensor  # [B, V] at the last position, float32, CPU
    captured: dict[str, torch.Tensor]  # site -> [B, T, d] (padded layout), float32, CPU
    pad: list[int]


def variant_token_ids(tokenizer: Any, variants: Sequence[str]) -> list[int]:
    """First token of each spelling, deduplicated (several spellings may share one)."""
    ids = [tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in variants]
    return list(dict.fromkeys(ids))


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    width = max(len(r) for r in rows)
    pad = [width - len(r) for r in rows]
    ids = torch.tensor([[pad_id] * p + list(r) for p, r in zip(pad, rows)])
    mask = torch.tensor([[0] * p + [1] * len(r) for p, r in zip(pad, rows)])
    return ids, mask, pad


@torch.no_grad()
def forward(
    lm: LoadedModel, rows: Sequence[Sequence[int]], edits: EditsFor | Sequence[Any] = (), capture: Sequence[str] = ()
) -> Forward:
    """One left-padded forward pass over `rows` with interventions; last-position logits and captured sites."""
    ids, mask, pad = pad_left(rows, lm.tokenizer.pad_token_id)
    ops = list(edits(pad) if callable(edits) else edits)
    dev = lm.device
    with iv.apply(lm.model, ops), iv.capture(lm.model, list(capture)) as acts:
        # the LM head only at the last position (a 49k-token vocabulary costs ~20 % of a 135M model's FLOPs per position)
        out = lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, logits_to_keep=1)
    caught = {s: v[0].float().cpu() for s, v in acts.items()}
    return Forward(out.logits[:, -1, :].float().cpu(), caught, pad)


def yes_no_score(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> torch.Tensor:
    """logsumexp(logits[yes]) − logsumexp(logits[no]) per row; log-softmax is not needed (it cancels)."""
    return torch.logsumexp(logits[:, list(yes_ids)], -1) - torch.logsumexp(logits[:, list(no_ids)], -1)


def first_token_logprob(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """log p(token_ids[b]) under row b's next-token distribution."""
    lp = torch.log_softmax(logits.float(), -1)
    return lp[torch.arange(lp.shape[0]), torch.as_tensor(list(token_ids))]


def concept_first_token(tokenizer: Any, word: str) -> int:
    """The first token of " word" (as it would follow "…about"), the forced-identification target."""
    return int(tokenizer(" " + word, add_special_tokens=False)["input_ids"][0])


def batched(
    lm: LoadedModel,
    rows: Sequence[Sequence[int]],
    edits_for_rows: Callable[[list[int], list[int]], Sequence[Any]],
    batch_size: int = 16,
    capture: Sequence[str] = (),
) -> list[Forward]:
    """`forward` over `rows` in batches of `batch_size`; `edits_for_rows(indices, pad)` builds each batch's edits."""
    out = []
    for b in range(0, len(rows), batch_size):
        idx = list(range(b, min(b + batch_size, len(rows))))
        out.append(forward(lm, [rows[i] for i in idx], lambda pad, idx=idx: edits_for_rows(idx, pad), capture))
    return out
