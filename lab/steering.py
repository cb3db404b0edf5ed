"""Residual-stream hooks: `inject` adds per-row steering vectors, `capture` reads block outputs.

Both are context managers whose hooks are removed in `finally`, also when the body raises.

Positions: a hook sees every forward call of its block. It counts the tokens it has seen, so within one context the
absolute position of token t of a call is `seen + t` — a prefill of T tokens then one token per generation step.
Use one `inject` context per `generate` call (or per forward pass).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from lab.models import decoder_layers


def _hidden(output: Any) -> torch.Tensor:
    # transformers 5 decoder layers return a tensor; older ones (and some architectures) a tuple.
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _as_rows(x: torch.Tensor | Sequence[float] | float, batch: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"{name} has {t.shape[0]} rows, expected {batch}")
    return t


@contextmanager
def inject(
    model: Any,
    layer: int,
    vectors: torch.Tensor,
    strengths: torch.Tensor | Sequence[float] | float = 1.0,
    starts: torch.Tensor | Sequence[int] | int = 0,
    ends: torch.Tensor | Sequence[int] | int | None = None,
    offset: int = 0,
) -> Iterator[dict[str, int]]:
    """Add `strengths[b] * vectors[b]` to the output of block `layer` for row b, at positions `>= starts[b]`
    (and `< ends[b]` when `ends` is given: a span, e.g. one sentence of the prompt). `offset` is the number of
    positions already in a KV cache the first call continues from (a shared prompt prefix computed beforehand).

    `vectors` is `[B, d]` (or `[d]`, shared by every row); strength 0 leaves a row exactly untouched, so controls
    ride in the same batch. `starts` are positions in the (left-padded) input; every generated token is steered.
    Yields the hook's state (`{"seen": tokens processed so far}`).
    """
    v = torch.as_tensor(vectors, dtype=torch.float32)
    if v.ndim == 1:
        v = v.unsqueeze(0)
    s = _as_rows(strengths, v.shape[0], "strengths")
    if v.shape[0] == 1 and s.shape[0] > 1:
        v = v.expand(s.shape[0], -1)
    start = _as_rows(starts, v.shape[0], "starts").long()
    end = None if ends is None else _as_rows(ends, v.shape[0], "ends").long()
    delta = s[:, None] * v  # [B, d], computed once in float32
    state = {"seen": offset}
    cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def hook(_module: Any, _args: Any, output: Any) -> Any:
        h = _hidden(output)
        key = (h.device, h.dtype)
        if key not in cache:
            cache[key] = (delta.to(h.device, h.dtype), start.to(h.device), None if end is None else end.to(h.device))
        d, st, en = cache[key]
        b, t = h.shape[0], h.shape[1]
        if b != d.shape[0]:
            raise RuntimeError(f"inject was set up for {d.shape[0]} rows but block {layer} saw a batch of {b}")
        pos = state["seen"] + torch.arange(t, device=h.device)[None, :]
        inside = pos >= st[:, None] if en is None else (pos >= st[:, None]) & (pos < en[:, None])
        mask = inside.unsqueeze(-1)  # [B, T, 1]
        state["seen"] += t
        return _replace(output, torch.where(mask, h + d[:, None, :], h))

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield state
    finally:
        handle.remove()


@contextmanager
def capture(model: Any, layers: Sequence[int]) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the output (`resid_post`) of each block in `layers`, one tensor per forward call, detached."""
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    blocks = decoder_layers(model)
    handles = []

    def make(layer: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            out[layer].append(_hidden(output).detach())
        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make(layer)))
        yield out
    finally:
        for h in handles:
            h.remove()
