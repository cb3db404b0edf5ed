"""Concept injection, the one way: a `Strength` (value + unit) with the one conversion to a raw multiplier, and an
`Injection` (vectors × raw strengths added to `resid_post` of one block from a start position) that yields the `Add`
operator. Every experiment that injects goes through here; `inject` and `capture` are the context-manager shorthands
by layer number.

    inj = Injection.of(concept_vector, Strength(0.2, "relative"), start=17)   # one row
    with inject(model, inj):                                                    # = apply(model, [inj.op()])
        model.generate(...)

Rows of one batch may inject at different layers: `Injection.per_layer` builds one `Injection` per layer, giving
the rows of other layers (or without a vector) strength 0 there, which leaves them bit-identical.

Positions: a hook counts the tokens it has seen, so within one context the absolute position of token t of a call is
`seen + t` — a prefill of T tokens then one token per generation step. Use one `inject` context per `generate` call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lab.errors import LabError
from lab.model.sites import Site
from lab.steer import interventions as iv

Unit = Literal["raw", "relative"]


@dataclass(frozen=True)
class Strength:
    """How hard to inject. `raw`: the multiplier of the vector (the paper's `strength × v`); `relative`:
    ‖s·v‖/‖resid‖, with ‖resid‖ the mean `resid_post` norm at the layer over the baseline prompts."""

    value: float
    unit: Unit = "raw"

    def __post_init__(self) -> None:
        if self.unit not in ("raw", "relative"):
            raise LabError(f"strength unit must be raw or relative, got '{self.unit}'")

    def raw(self, vector_norm: float, resid_norm: float) -> float:
        """The multiplier of a vector of norm `vector_norm` at a layer whose mean residual norm is `resid_norm` (the
        one relative → raw conversion; a zero vector is guarded, not divided by)."""
        if self.unit == "raw":
            return self.value
        return self.value * resid_norm / max(vector_norm, 1e-12)

    def relative(self, vector_norm: float, resid_norm: float) -> float:
        """‖s·v‖/‖resid‖ of this strength on a vector of norm `vector_norm`."""
        return self.raw(vector_norm, resid_norm) * vector_norm / resid_norm


@dataclass(frozen=True, eq=False)
class Injection:
    """`strengths[b] · vectors[b]` added to `resid_post` of block `layer` for row b at positions `>= starts[b]` (and
    `< ends[b]` when given). One row: a [d] vector and scalars; a batch: [B, d] and per-row sequences."""

    layer: int
    vectors: torch.Tensor  # [d] or [B, d]
    strengths: Any = 1.0  # raw multipliers: float or [B]
    starts: Any = 0  # int or [B]
    ends: Any = None  # None, int or [B]

    @property
    def site(self) -> Site:
        return Site("resid_post", self.layer)

    def op(self) -> iv.Add:
        """The operator `interventions.apply` runs: the one place an injection becomes an `Add`."""
        return iv.Add(self.site, self.vectors, self.strengths, self.starts, self.ends)

    def rows(self, idx: torch.Tensor) -> Injection:
        """The same injection for a subset of the batch's rows (the decode loop evicts finished rows)."""
        pick = lambda x: x if x is None or torch.as_tensor(x).ndim == 0 else torch.as_tensor(x)[idx]
        return Injection(self.layer, self.vectors[idx], pick(self.strengths), pick(self.starts), pick(self.ends))

    @classmethod
    def of(cls, concept: Any, strength: Strength, start: Any = 0, end: Any = None) -> Injection:
        """One concept vector (a `ConceptVector`: `.layer`, `.vector`, `.norm`, `.resid_norm`) at `strength`."""
        return cls(concept.layer, concept.vector, strength.raw(concept.norm, concept.resid_norm), start, end)

    @staticmethod
    def per_layer(
        layers: Sequence[int | None],
        vectors: Sequence[torch.Tensor | None],
        strengths: Sequence[float],
        starts: Sequence[int] | torch.Tensor,
        d_model: int,
        ends: Sequence[int] | torch.Tensor | None = None,
    ) -> list[Injection]:
        """One batched `Injection` per distinct layer for rows that each inject (layer, vector, raw strength, from
        `starts[b]`, before `ends[b]`) or not (vector None): at each layer the other rows get a zero vector and
        strength 0, so they are untouched."""
        out = []
        st, en = torch.as_tensor(starts), None if ends is None else torch.as_tensor(ends)
        for layer in sorted({lay for lay, v in zip(layers, vectors) if v is not None}):
            on = [v is not None and lay == layer for lay, v in zip(layers, vectors)]
            vecs = torch.stack([v if o else torch.zeros(d_model) for v, o in zip(vectors, on)])  # type: ignore[misc]
            raw = torch.tensor([s if o else 0.0 for s, o in zip(strengths, on)])
            out.append(Injection(layer, vecs, raw, st, en))
        return out


@contextmanager
def inject(model: Any, *injections: Injection, offset: int = 0) -> Iterator[iv.Seen]:
    """Apply the injections for the duration of the context (hooks removed in `finally`). `offset` = positions
    already in a KV cache the first call continues from. Strength 0 leaves a row bit-identical. Yields the live
    {site: tokens seen} view."""
    with iv.apply(model, [i.op() for i in injections], offset=offset) as seen:
        yield seen


@contextmanager
def capture_blocks(model: Any, layers: Sequence[int], stop: bool = False) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the output (`resid_post`) of each block in `layers`, one tensor per forward call, detached; `stop`:
    end the forward pass after the deepest of them (`iv.capture`)."""
    with iv.capture(model, [f"resid_post.{layer}" for layer in layers], stop=stop) as acts:
        yield {layer: acts[f"resid_post.{layer}"] for layer in layers}
