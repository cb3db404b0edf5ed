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

from lab.experiments.steered import add_edit, label_ids, last_token_codes, trial_prompts
from lab.steer.readouts import forward


def logit_direction(lm: Any) -> torch.Tensor:
    u = lm.model.get_output_embeddings().weight.detach().float().cpu()
    yes, no = label_ids(lm)
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
    prompts = trial_prompts(lm, trial_numbers)
    n = len(prompts)
    sites = [f"mlp_in.{L}" for L in transcoders]
    acts: dict[int, list[torch.Tensor]] = {L: [] for L in transcoders}
    for c in concepts:
        edits = add_edit(layer, vectors[c].expand(n, -1), [strengths[c]] * n, [p.start for p in prompts])
        out = forward(lm, [p.ids for p in prompts], edits, sites)
        for L, tc in transcoders.items():
            acts[L].append(last_token_codes(tc, out, L).mean(0))
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
