"""The gates' causal test, scored: per concept, strength and trial prompt, the Yes−No logit difference with the
injection alone and with each feature set (gates, a matched random set) ablated (lab.experiments.features.gate_effects)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from lab.experiments.features import DoseConfig, gate_effects
from lab.experiments.steered import trial_prompts


def causal_scores(
    lm: Any,
    d: DoseConfig,
    vectors: Mapping[str, Any],
    tcs: Mapping[int, Any],
    sets: Mapping[str, Mapping[int, list[int]]],
    strengths: Sequence[float],
) -> pd.DataFrame:
    """One row per (concept, strength, trial number, condition) with its `yes_no` score, in batches of d.batch_size."""
    prompts = trial_prompts(lm, d.trial_numbers, d.prompt_variant, d.dialogue_format)
    plan = [(c, s, p) for c in vectors for s in strengths for p in prompts]
    scores = []
    for b in range(0, len(plan), d.batch_size):
        chunk = plan[b : b + d.batch_size]
        raw = [
            s * (1.0 if d.strength_mode == "raw" else vectors[c].resid_norm / max(vectors[c].norm, 1e-12))
            for c, s, _ in chunk
        ]
        ids, starts = [p.ids for *_, p in chunk], [p.start for *_, p in chunk]
        vecs = torch.stack([vectors[c].vector for c, *_ in chunk])
        eff = gate_effects(lm, ids, starts, vecs, raw, d.inject_layer, tcs, sets)
        scores += [
            {"concept": c, "strength": s, "trial_number": p.trial_number, "condition": k, "yes_no": float(v[i])}
            for k, v in eff.items()
            for i, (c, s, p) in enumerate(chunk)
        ]
    return pd.DataFrame(scores)
