"""Feature reads under steering: the injection-trial prompt (`lab.protocol.prompts.render`, trial number n) with a
concept vector added at resid_post.<layer> from the injection start on (`lab.steer.injection.Injection`), read at the
last prompt token by feature dictionaries at mlp_in.L. Dictionaries are anything with `encode` and `w_dec`
(`lab.steer.transcoder.Transcoder`, or any SAE). Three reads, one per experiment that needs one:

- `dose_rows` (lab.experiments.dose_response): per (strength, trial number) the dictionary codes (sparse: only
  non-zero ones kept), the Yes − No score (`lab.steer.readouts.yes_no_score`), P(Yes), P(No) and the RMS of the
  residual stream the final norm and each read block's pre-MLP norm see (`rms_final`, `rms_mid_<L>`; what
  `analysis.gates` needs to linearise the norms, lab/steer/norms.py);
- `gate_effects` (lab.experiments.gates): the Yes − No score steered, unsteered, with a feature set ablated (clamped to
  0 via `EditFeatures`) in the steered run and patched from the steered run into the unsteered one;
- `concept_codes` + `feature_table` (lab.experiments.feature_regression): per concept the codes averaged over the
  trial numbers, and the wide table the regression fits with each feature's `coverage` (share of concepts where it
  is active), `dla` (decoder row · (mean Yes − mean No unembedding), final norm ignored), `attribution` (mean over
  concepts of |activation × dla|) and `score` = coverage × attribution (the paper's ranking).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from lab.protocol.prompts import inject_start, render
from lab.steer import interventions as iv
from lab.steer.injection import Injection
from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS, Forward, forward, variant_token_ids, yes_no_score


@dataclass(frozen=True)
class ConceptTrial:
    """One concept's feature pass (the dose response, the regression's reads): the unit `execute` plans and stores."""

    trial_id: str
    concept: str


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


def injection_edit(layer: int, vectors: torch.Tensor, strengths: Sequence[float], starts: Sequence[int]) -> Any:
    """An EditsFor: raw strengths[b] · vectors[b] added at resid_post.<layer> from each row's (padded) start."""
    raw = torch.tensor(list(strengths), dtype=torch.float32)
    return lambda pad: [Injection(layer, vectors, raw, [s + p for s, p in zip(starts, pad)]).op()]


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


def _before(layer: int) -> str:
    return f"resid_post.{layer - 1}" if layer > 0 else "embed"


@torch.no_grad()
def dose_rows(
    lm: Any,
    concept: str,
    vector: torch.Tensor,
    strengths: Sequence[tuple[float, float]],
    prompts: Sequence[TrialPrompt],
    inject_layer: int,
    dictionaries: Mapping[int, Any],
    batch_size: int = 16,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(feature records, row records) for one concept over (strength, strength_raw) × trial prompts."""
    from lab.model.loading import decoder_layers
    from lab.steer.norms import final_norm, norm_eps, rms

    yes, no = label_ids(lm)
    blocks = decoder_layers(lm.model)
    last = len(blocks) - 1
    fnorm = final_norm(lm.model)
    plan = [(s, raw, p) for s, raw in strengths for p in prompts]
    sites = [f"resid_post.{last}"] + [
        s for lay in dictionaries for s in (f"mlp_in.{lay}", _before(lay), f"attn_out.{lay}")
    ]
    feats: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for b in range(0, len(plan), batch_size):
        chunk = plan[b : b + batch_size]
        edits = injection_edit(
            inject_layer,
            vector.float().expand(len(chunk), -1),
            [raw for _, raw, _ in chunk],
            [p.start for _, _, p in chunk],
        )
        out = forward(lm, [p.ids for _, _, p in chunk], edits, capture=sites)
        score = yes_no_score(out.logits, yes, no)
        lp = torch.log_softmax(out.logits, -1)
        row = [
            {
                "concept": concept,
                "strength": float(s),
                "strength_raw": float(raw),
                "trial_number": p.trial_number,
                "yes_no": float(score[i]),
                "p_yes": float(lp[i, yes].exp().sum()),
                "p_no": float(lp[i, no].exp().sum()),
                "rms_final": float(rms(out.captured[f"resid_post.{last}"][i, -1], norm_eps(fnorm))),
            }
            for i, (s, raw, p) in enumerate(chunk)
        ]
        for lay, d in dictionaries.items():
            mid = out.captured[_before(lay)][:, -1] + out.captured[f"attn_out.{lay}"][:, -1]
            mid_rms = rms(mid, norm_eps(blocks[lay].post_attention_layernorm))
            acts = last_token_codes(d, out, lay)
            for i, (s, _, p) in enumerate(chunk):
                row[i][f"rms_mid_{lay}"] = float(mid_rms[i])
                nz = torch.nonzero(acts[i]).flatten()
                feats.extend(
                    {
                        "concept": concept,
                        "strength": float(s),
                        "trial_number": p.trial_number,
                        "layer": int(lay),
                        "feature": int(f),
                        "activation": float(acts[i, f]),
                    }
                    for f in nz
                )
        rows.extend(row)
    return feats, rows


@torch.no_grad()
def gate_effects(
    lm: Any,
    rows: Sequence[list[int]],
    starts: Sequence[int],
    vectors: torch.Tensor,
    strengths_raw: Sequence[float],
    inject_layer: int,
    dictionaries: Mapping[int, Any],
    sets: Mapping[str, Mapping[int, Sequence[int]]],
) -> dict[str, torch.Tensor]:
    """Yes − No scores [B] of: `steered`, `unsteered`, and per feature set name: `ablate:<name>` (steered, set
    clamped to 0) and `patch:<name>` (unsteered, the set's activations replaced by the steered run's, every
    position). One batch; rows/starts unpadded."""
    yes, no = label_ids(lm)
    add = injection_edit(inject_layer, vectors, strengths_raw, starts)
    layers = sorted({lay for fs in sets.values() for lay, f in fs.items() if len(f)})
    steered = forward(lm, rows, add, capture=[f"mlp_in.{lay}" for lay in layers])
    out = {
        "steered": yes_no_score(steered.logits, yes, no),
        "unsteered": yes_no_score(forward(lm, rows).logits, yes, no),
    }
    for name, fs in sets.items():
        fs = {lay: list(f) for lay, f in fs.items() if len(f)}
        ab = forward(lm, rows, lambda pad, fs=fs: [*add(pad), *feature_edits(dictionaries, fs, 0.0)])
        vals = {lay: dictionaries[lay].encode(steered.captured[f"mlp_in.{lay}"])[..., f] for lay, f in fs.items()}
        pa = forward(lm, rows, lambda pad, fs=fs, vals=vals: feature_edits(dictionaries, fs, vals))
        out[f"ablate:{name}"] = yes_no_score(ab.logits, yes, no)
        out[f"patch:{name}"] = yes_no_score(pa.logits, yes, no)
    return out


def logit_direction(lm: Any) -> torch.Tensor:
    """Mean Yes − mean No unembedding row [d]."""
    u = lm.model.get_output_embeddings().weight.detach().float().cpu()
    yes, no = label_ids(lm)
    return u[yes].mean(0) - u[no].mean(0)


@torch.no_grad()
def concept_codes(
    lm: Any,
    vector: torch.Tensor,
    strength: float,
    layer: int,
    dictionaries: Mapping[int, Any],
    prompts: Sequence[TrialPrompt],
) -> dict[int, torch.Tensor]:
    """{L: codes [n_features]} of one concept: `strength` (raw) × `vector` added at resid_post.<layer> of every
    trial prompt (one batch), mlp_in.L read at the last token, averaged over the prompts."""
    n = len(prompts)
    edits = injection_edit(layer, vector.expand(n, -1), [strength] * n, [p.start for p in prompts])
    out = forward(lm, [p.ids for p in prompts], edits, [f"mlp_in.{L}" for L in dictionaries])
    return {L: last_token_codes(d, out, L).mean(0) for L, d in dictionaries.items()}


def feature_table(
    concepts: Sequence[str], codes: Mapping[int, torch.Tensor], dla: Mapping[int, torch.Tensor]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide table: `concept` + one column `L{layer}_f{index}` per feature active for some concept, feature table:
    feature, layer, index, dla, coverage, attribution, score) from the codes {L: [concepts, n_features]} and each
    layer's direct attribution per unit activation {L: [n_features]}."""
    cols: dict[str, Any] = {}
    meta = []
    for L, a in codes.items():
        for i in torch.nonzero((a > 0).any(0)).flatten().tolist():
            cols[f"L{L}_f{i}"] = a[:, i].numpy()
            meta.append(
                {
                    "feature": f"L{L}_f{i}",
                    "layer": int(L),
                    "index": i,
                    "dla": float(dla[L][i]),
                    "coverage": float((a[:, i] > 0).float().mean()),
                    "attribution": float((a[:, i] * dla[L][i]).abs().mean()),
                }
            )
    feats = pd.concat([pd.DataFrame({"concept": list(concepts)}), pd.DataFrame(cols)], axis=1)
    m = pd.DataFrame(meta, columns=["feature", "layer", "index", "dla", "coverage", "attribution"])
    return feats, m.assign(score=m["coverage"] * m["attribution"])


def detection_by_concept(df: pd.DataFrame, layer: int, concepts: Sequence[str]) -> dict[str, float]:
    """Per-concept detection rate of a stored sweep's injection trials (free answers) at `layer`."""
    df = df[(df["kind"] == "injection") & ~df["forced"].astype(bool) & (df["layer"] == layer)]
    rates = df.groupby("concept")["detected"].mean().dropna()
    return {c: float(r) for c, r in rates.items() if c in set(concepts)}
