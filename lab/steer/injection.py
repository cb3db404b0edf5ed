"""Residual-stream shorthands over `lab.steer.interventions`: `inject` (concept injection at `resid_post.L`) and
`capture` of block outputs by layer number. Both are context managers whose hooks are removed in `finally`.

Positions: a hook counts the tokens it has seen, so within one context the absolute position of token t of a call is
`seen + t` — a prefill of T tokens then one token per generation step. Use one `inject` context per `generate` call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from lab.steer import interventions as iv


class _State:
    def __init__(self, seen: iv.Seen, site: str):
        self._seen, self._site = seen, site

    def __getitem__(self, key: str) -> int:
        return self._seen[self._site]


@contextmanager
def inject(
    model: Any,
    layer: int,
    vectors: torch.Tensor,
    strengths: torch.Tensor | Sequence[float] | float = 1.0,
    starts: torch.Tensor | Sequence[int] | int = 0,
    ends: torch.Tensor | Sequence[int] | int | None = None,
    offset: int = 0,
) -> Iterator[Any]:
    """Add `strengths[b] * vectors[b]` to the output of block `layer` for row b at positions `>= starts[b]` (and
    `< ends[b]` when given). `offset` = positions already in a KV cache the first call continues from. Strength 0
    leaves a row bit-identical. Yields the hook's state (`state["seen"]`: tokens processed so far)."""
    site = f"resid_post.{layer}"
    with iv.apply(model, [iv.Add(site, vectors, strengths, starts, ends)], offset=offset) as seen:
        yield _State(seen, site)


@contextmanager
def capture(model: Any, layers: Sequence[int], stop: bool = False) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the output (`resid_post`) of each block in `layers`, one tensor per forward call, detached; `stop`:
    end the forward pass after the deepest of them (`iv.capture`)."""
    with iv.capture(model, [f"resid_post.{layer}" for layer in layers], stop=stop) as acts:
        yield {layer: acts[f"resid_post.{layer}"] for layer in layers}
