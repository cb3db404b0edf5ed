"""Attention over a prompt prefix that every row of a batch shares, read once per step instead of once per row.

In a sweep's decode loop all rows begin with the same ≈ 140-token preamble; SDPA re-reads those cached keys and
values for every row at every step (64 rows × 30 layers × 2 × 140 positions). Here the prefix's scores are one
[kv heads] × [rows × query heads per kv head × queries, head dim] @ [head dim, prefix] matmul against row 0's copy,
the rows' own positions (pads, suffix, generated tokens) a batched matmul as before, and one softmax runs over both
(float32, as HF's eager attention). `shared(model, prefix)` switches a model to it for the duration of a block, where
the model's attention is plain SDPA without soft-capping; otherwise it changes nothing.

Sliding-window layers (`shared(..., windowed=True)`): the caller passes its own per-type masks
(`lab.generate.decode.attention_masks`, which hold each row's window in positions) and keeps every position in its
cache, so a sliding layer here is the same computation with more keys masked: exact whether or not the prefix lies
inside the window (prefix keys outside it get −inf like any masked key; their scores are then computed for nothing,
which never happens where the window is longer than prompt + answer, as Gemma 3's 1024 and 512 are for the
protocol's prompts). Without `windowed`, a sliding model falls back to the model's own attention: HF's sliding masks
count cache columns, pads included, which is not the window when pads sit between prefix and suffix.

Positions `[0, prefix)` of every row's keys and values must be equal (the decode loop broadcasts the prefix's cache
into every row, and eviction keeps rows whole). `tests/lab/generate/test_decode.py` checks the logits against SDPA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "lab_shared_prefix"
_prefix: list[int] = [0]  # the shared length while a `shared` block runs (one decode loop at a time per process)


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """HF attention signature: query [b, q heads, q, d], key/value [b, kv heads, L, d], mask [b, 1, q, L] (bool, True
    = attend) or None; returns [b, q, q heads, d]."""
    p = _prefix[0]
    b, hq, q, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    g = hq // hkv
    scale = d**-0.5 if scaling is None else scaling
    qg = query.reshape(b, hkv, g * q, d)  # query head h = kv head h // g (HF's repeat_kv order)
    qp = qg.transpose(0, 1).reshape(hkv, b * g * q, d)
    s_pre = torch.matmul(qp, key[0, :, :p].transpose(-1, -2)).view(hkv, b, g * q, p).transpose(0, 1)
    s_own = torch.matmul(qg, key[:, :, p:].transpose(-1, -2))
    scores = (torch.cat([s_pre, s_own], -1) * scale).view(b, hkv, g, q, length)
    if attention_mask is not None:
        m = attention_mask[:, :, None, :, :length]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
    probs = torch.softmax(scores, -1, dtype=torch.float32).to(value.dtype).view(b, hkv, g * q, length)
    pp = probs[..., :p].transpose(0, 1).reshape(hkv, b * g * q, p)
    out = torch.matmul(pp, value[0, :, :p]).view(hkv, b, g * q, d).transpose(0, 1)
    out = out + torch.matmul(probs[..., p:], value[:, :, p:])
    return out.reshape(b, hq, q, d).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, shared_prefix_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def supported(model: Any, windowed: bool = False) -> bool:
    """Plain causal SDPA attention, no soft-capping, every layer full or (with `windowed`: the caller's masks hold
    the windows) sliding-window."""
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if cfg is not None else None
    if cfg is None or getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(cfg, "attn_logit_softcapping", None):
        return False
    ok = {"full_attention", "sliding_attention"} if windowed else {"full_attention"}
    if not windowed and (
        getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) is not False
    ):
        return False
    return all(t in ok for t in (getattr(cfg, "layer_types", None) or ["full_attention"]))


@contextmanager
def shared(model: Any, prefix: int, windowed: bool = False) -> Iterator[bool]:
    """Inside the block the model attends to the first `prefix` cached positions once per step (yields whether it
    does); the attention implementation is restored in `finally`. `windowed`: the caller passes its own per-type
    masks (sliding-window layers allowed)."""
    if prefix <= 0 or not supported(model, windowed):
        yield False
        return
    cfg = model.config.get_text_config()  # the language model's (Gemma 3's multimodal wrapper: its text config)
    before = cfg._attn_implementation
    _prefix[0] = prefix
    cfg._attn_implementation = NAME
    try:
        yield True
    finally:
        cfg._attn_implementation = before
        _prefix[0] = 0
