"""What an experiment reads from a forward pass, batched, under per-row interventions.

- `forward`: left-pad token rows, apply interventions built for that padding, return last-position logits (and any
  captured sites). Interventions are given as a function of the per-row left-pad amounts, because positions in the
  padded batch are the unpadded positions shifted by the row's padding.
- `yes_no_score`: logsumexp over the "Yes" token variants − logsumexp over the "No" variants at the answer position
  (the patching metric of the paper's code).
- `first_token_logprob`: log-prob of a word's first token after a prefill (the forced-identification metric).
Generation (text to judge) is `lab.generate.runner.Runner`, which uses the same interventions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lab.model.loading import LoadedModel, sliding_windows
from lab.steer import interventions as iv

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
    lm: LoadedModel,
    rows: Sequence[Sequence[int]],
    edits: EditsFor | Sequence[Any] = (),
    capture: Sequence[str] = (),
    share_prefix: bool = True,
) -> Forward:
    """One left-padded forward pass over `rows` with interventions; last-position logits and captured sites.

    With `share_prefix` (and nothing captured), the tokens every row starts with are run once, batch 1, and the
    rows' suffixes continue from that cache (pads sit between prefix and suffix, so every suffix position keeps its
    padded-layout index and the edits built for the padding apply unchanged) — when every edit is an `Add` that
    starts after the prefix or a row-independent `Ablate`, and (on a sliding-window model) no row is padded;
    otherwise the plain padded forward runs."""
    ids, mask, pad = pad_left(rows, lm.tokenizer.pad_token_id)
    ops = list(edits(pad) if callable(edits) else edits)
    dev = lm.device
    p = _shared_prefix(rows, ops, pad) if share_prefix and not capture else 0
    if p > 0 and max(pad) > 0 and sliding_windows(lm.model) is not None:  # pads between prefix and suffix sit inside
        p = 0  # a sliding window (it counts cache positions), so rows of different lengths run the plain forward
    if p > 0:
        return Forward(_prefix_forward(lm, rows, ops, p), {}, pad)
    with iv.apply(lm.model, ops), iv.capture(lm.model, list(capture)) as acts:
        # the LM head only at the last position (a 49k-token vocabulary costs ~20 % of a 135M model's FLOPs per position)
        out = lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, logits_to_keep=1)
    caught = {s: v[0].float().cpu() for s, v in acts.items()}
    return Forward(out.logits[:, -1, :].float().cpu(), caught, pad)


def _shared_prefix(rows: Sequence[Sequence[int]], ops: Sequence[Any], pad: list[int]) -> int:
    """Tokens all rows share that no edit touches (0: run the plain forward)."""
    if len(rows) < 2:
        return 0
    from lab.generate.decode import common_prefix

    p = min(common_prefix(rows), min(len(r) for r in rows) - 1)
    for op in ops:
        if isinstance(op, iv.Ablate):
            continue
        if not isinstance(op, iv.Add):
            return 0
        live = op._delta.abs().sum(-1) > 0  # type: ignore[attr-defined]  (strength-0 rows are left untouched)
        start = (op._start - torch.tensor(pad)).expand(live.shape[0])  # type: ignore[attr-defined]
        if bool(live.any()):
            p = min(p, int(start[live].min()))
    return max(p, 0)


def _prefix_forward(lm: LoadedModel, rows: Sequence[Sequence[int]], ops: list[Any], p: int) -> torch.Tensor:
    from transformers import DynamicCache

    from lab.generate.decode import padded, positions_of

    model = lm.model
    ids, mask = padded(rows, p, lm.tokenizer.pad_token_id, lm.device)
    positions = positions_of(mask)
    cache = DynamicCache(config=model.config)
    with iv.apply(model, [op for op in ops if isinstance(op, iv.Ablate)]):
        model(input_ids=ids[:1, :p], cache=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(len(rows))
    with iv.apply(model, ops, offset=p):
        out = model(
            input_ids=ids[:, p:],
            attention_mask=mask,
            position_ids=positions[:, p:],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return out.logits[:, -1, :].float().cpu()


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
