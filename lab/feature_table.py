"""Per-concept transcoder feature activations under injection (the table the feature regression and gates fit).

`feature_table(lm, concepts, vectors, strengths, layer, transcoders, trial_numbers)`: for each concept, the trial
prompts (standard dialogue, trial numbers given) with s·v added at `resid_post.layer` from the injection start, the
MLP input of every transcoder layer read at the last prompt token, encoded, and averaged over the trial numbers.
Returns a wide table (`concept` + one column `L{layer}_f{index}` per feature active for some concept) and a feature
table: `coverage` (share of concepts where the feature is active), `dla` (decoder row · (mean Yes − mean No
unembedding), final norm ignored), `attribution` (mean over concepts of |activation × dla|) and `score` = coverage ×
attribution (the paper's ranking). Transcoders are anything with `encode` and `w_dec` (`analysis.transcoders`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from lab import interventions as iv
from lab.prompts import inject_start, render
from lab.readouts import NO_VARIANTS, YES_VARIANTS, forward, variant_token_ids


def logit_direction(lm: Any) -> torch.Tensor:
    u = lm.model.get_output_embeddings().weight.detach().float().cpu()
    yes, no = variant_token_ids(lm.tokenizer, YES_VARIANTS), variant_token_ids(lm.tokenizer, NO_VARIANTS)
    return u[yes].mean(0) - u[no].mean(0)


@torch.no_grad()
def feature_table(
    lm: Any,
    concepts: Sequence[str],
    vectors: Mapping[str, torch.Tensor],
    strengths: Mapping[str, float],
    layer: int,
    transcoders: Mapping[int, Any],
    trial_numbers: Sequence[int] = (1,),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    prompts = [inject_start(lm.tokenizer, render(lm, "original", "standard", n)) for n in trial_numbers]
    sites = [f"mlp_in.{L}" for L in transcoders]
    acts: dict[int, list[torch.Tensor]] = {L: [] for L in transcoders}
    for c in concepts:

        def edits(pad: list[int], c: str = c) -> list[Any]:
            starts = [st + p for (_, st), p in zip(prompts, pad)]
            return [iv.Add(f"resid_post.{layer}", vectors[c].expand(len(starts), -1), strengths[c], starts)]

        out = forward(lm, [ids for ids, _ in prompts], edits, sites)
        for L, tc in transcoders.items():
            acts[L].append(tc.encode(out.captured[f"mlp_in.{L}"][:, -1]).mean(0))
    direction = logit_direction(lm)
    cols: dict[str, Any] = {}
    meta = []
    for L, tc in transcoders.items():
        a = torch.stack(acts[L])  # [concepts, n_features]
        dla = tc.w_dec.float() @ direction
        for i in torch.nonzero((a > 0).any(0)).flatten().tolist():
            cols[f"L{L}_f{i}"] = a[:, i].numpy()
            meta.append(
                {
                    "feature": f"L{L}_f{i}",
                    "layer": int(L),
                    "index": i,
                    "dla": float(dla[i]),
                    "coverage": float((a[:, i] > 0).float().mean()),
                    "attribution": float((a[:, i] * dla[i]).abs().mean()),
                }
            )
    feats = pd.concat([pd.DataFrame({"concept": list(concepts)}), pd.DataFrame(cols)], axis=1)
    m = pd.DataFrame(meta, columns=["feature", "layer", "index", "dla", "coverage", "attribution"])
    return feats, m.assign(score=m["coverage"] * m["attribution"])


def detection_rates(df: pd.DataFrame, layer: int, concepts: Sequence[str]) -> dict[str, float]:
    """Per-concept detection rate of a stored sweep's injection trials (free answers) at `layer`."""
    df = df[(df["kind"] == "injection") & ~df["forced"].astype(bool) & (df["layer"] == layer)]
    rates = df.groupby("concept")["detected"].mean().dropna()
    return {c: float(r) for c, r in rates.items() if c in set(concepts)}


def write_vectors(path: Any, concepts: Sequence[str], vectors: torch.Tensor) -> None:
    """One row per concept: `concept` and `v0 … v{d-1}` (the projection baseline's input)."""
    v = vectors.float().numpy()
    pd.DataFrame(v, columns=[f"v{i}" for i in range(v.shape[1])]).assign(concept=list(concepts)).to_parquet(path)
