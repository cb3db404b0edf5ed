"""The injection-trial prompts under steering, as the feature passes (lab.experiments.features, lab.experiments.feature_table) run and read
them: the prompts with their injection starts, the edits (`add_edit`: s·v added at resid_post.<layer> from each row's
start; `feature_edits`: a feature dictionary's features set to given values), the Yes/No label token ids, and a
dictionary's codes of mlp_in.L at the last prompt token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lab.protocol.prompts import inject_start, render
from lab.steer import interventions as iv
from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS, Forward, variant_token_ids


@dataclass(frozen=True)
class TrialPrompt:
    trial_number: int
    ids: list[int]
    start: int  # injection start (unpadded token index)


def trial_prompts(
    lm: Any, trial_numbers: Sequence[int], variant: str = "original", fmt: str = "standard"
) -> list[TrialPrompt]:
    out = []
    for n in trial_numbers:
        ids, start = inject_start(lm.tokenizer, render(lm, variant, fmt, n))
        out.append(TrialPrompt(n, ids, start))
    return out


def label_ids(lm: Any) -> tuple[list[int], list[int]]:
    return variant_token_ids(lm.tokenizer, YES_VARIANTS), variant_token_ids(lm.tokenizer, NO_VARIANTS)


def add_edit(inject_layer: int, vectors: torch.Tensor, strengths: Sequence[float], starts: Sequence[int]) -> Any:
    """An EditsFor: add strengths[b]·vectors[b] at resid_post.<inject_layer> from each row's (padded) start."""

    def build(pad: list[int]) -> list[Any]:
        return [
            iv.Add(
                f"resid_post.{inject_layer}",
                vectors,
                torch.tensor(list(strengths), dtype=torch.float32),
                [s + p for s, p in zip(starts, pad)],
            )
        ]

    return build


def feature_edits(
    dictionaries: Mapping[int, Any], features: Mapping[int, Sequence[int]], values: Any = 0.0, start: int = 0
) -> list[Any]:
    """EditFeatures per layer setting `features[L]` to `values` (a number, or {L: [B, T, k] tensor})."""
    return [
        iv.EditFeatures(
            f"mlp_out.{lay}",
            dictionaries[lay],
            list(fs),
            values=values[lay] if isinstance(values, Mapping) else values,
            start=start,
        )
        for lay, fs in features.items()
        if len(fs)
    ]


def last_token_codes(dictionary: Any, out: Forward, layer: int) -> torch.Tensor:
    """`dictionary`'s codes [B, n_features] of mlp_in.<layer> (captured in `out`) at the last prompt token."""
    return dictionary.encode(out.captured[f"mlp_in.{layer}"][:, -1])
