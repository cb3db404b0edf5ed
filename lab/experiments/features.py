"""Feature reads under steering: the dose-response pass and the gate interventions (ablate / patch / clamp).

A dose-response row is one forward pass of the injection-trial prompt (`lab.protocol.prompts.render`, trial number n) with
`strength_raw × concept vector` added at resid_post.<inject_layer> from the injection start to the end of the prompt.
At the last token it reads each feature dictionary's activations at mlp_in.L (sparse: only non-zero ones kept),
the Yes − No score (`lab.steer.readouts.yes_no_score`), and the RMS of the residual stream the final norm and each
block's pre-MLP norm see (`rms_final`, `rms_mid_<L>`; what `analysis.gates` needs to linearise the norms).
Dictionaries are anything with `encode` and `w_dec` (`analysis.transcoders.Transcoder`); lab imports none of them.
The prompts, edits and label ids are lab/experiments/steered.py's (shared with lab.experiments.feature_table); the norms, lab/model/norms.py's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lab.errors import LabError
from lab.experiments.steered import TrialPrompt, add_edit, feature_edits, label_ids, last_token_codes, trial_prompts
from lab.model.loading import decoder_layers
from lab.model.norms import final_norm, norm_eps, readout_tensors, rms
from lab.steer.readouts import forward, yes_no_score


@dataclass(frozen=True)
class DoseConfig:
    """What a dose-response pass reads: concepts × signed strengths × trial numbers, injected at one layer, read by
    a feature dictionary at each of `layers` (all after the injection layer)."""

    concepts: str | tuple[str, ...] = field(default="first:12", metadata={"help": "as sweep.concepts"})
    inject_layer: int = field(default=12, metadata={"help": "block whose resid_post gets the concept vector"})
    layers: tuple[int, ...] = field(default=(16, 22, 27), metadata={"help": "transcoder layers (> inject_layer)"})
    strengths: tuple[float, ...] = field(
        default=(-0.4, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.4), metadata={"help": "signed; needs 0 (unsteered)"}
    )
    strength_mode: Literal["raw", "relative"] = field(
        default="relative", metadata={"help": "raw: multiplier of v; relative: ‖s·v‖/‖resid‖ at the injection layer"}
    )
    trial_numbers: tuple[int, ...] = field(default=(1, 2, 3), metadata={"help": "n in the trial prompt's 'Trial {n}'"})
    prompt_variant: str = field(default="original", metadata={"help": "trial-prompt variant (lab/data/prompts.yaml)"})
    dialogue_format: str = field(default="standard", metadata={"help": "dialogue format (lab/data/prompts.yaml)"})
    batch_size: int = field(default=16, metadata={"help": "(strength, trial number) rows per forward pass"})

    def __post_init__(self) -> None:
        from lab.steer.concepts import select_concepts

        select_concepts(self.concepts)
        if not self.layers or any(lay <= self.inject_layer for lay in self.layers):
            raise LabError(f"dose.layers must be non-empty and after inject_layer {self.inject_layer}")
        if not self.strengths or any(not math.isfinite(x) for x in self.strengths) or 0.0 not in self.strengths:
            raise LabError("dose.strengths must be finite and include 0 (the unsteered reference)")
        if not self.trial_numbers or self.batch_size < 1:
            raise LabError("dose.trial_numbers must be non-empty and batch_size >= 1")


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
        edits = add_edit(
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
    add = add_edit(inject_layer, vectors, strengths_raw, starts)
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


def _slug(concept: str) -> str:
    return hashlib.sha256(concept.encode()).hexdigest()[:12]


def _write(df: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


FEATURE_COLUMNS = ("concept", "strength", "trial_number", "layer", "feature", "activation")
FEATURE_TYPES = {
    "concept": str,
    "strength": "float64",
    "trial_number": "int64",
    "layer": "int64",
    "feature": "int64",
    "activation": "float32",
}


def fingerprint(dictionary: Any) -> dict[str, Any]:
    """A dictionary's identity (hash of its weights) and its quality figures when it has them."""
    w = torch.cat([dictionary.w_enc.flatten(), dictionary.w_dec.flatten()]).float().contiguous()
    meta = getattr(dictionary, "meta", None) or {}
    return {
        "sha": hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16],
        "n_features": int(dictionary.w_dec.shape[0]),
        **{k: meta[k] for k in ("fve", "l0", "dead_frac") if k in meta},
    }


def run_dose_response(
    lm: Any,
    cfg: DoseConfig,
    vectors: Mapping[str, Any],
    dictionaries: Mapping[int, Any],
    out_dir: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
    on_concept: Callable[[str], None] | None = None,
) -> Path:
    """Write the dose-response tables into `out_dir` (features/, rows/ one Parquet file per concept; meta.json,
    readout.safetensors, vectors.safetensors, transcoders/layer<L>.safetensors). Resumable: a concept whose rows
    file exists is skipped; a directory written under another config is refused. `vectors`: concept →
    `lab.steer.concepts.ConceptVector` at `cfg.inject_layer`."""
    import pandas as pd
    from safetensors.torch import save_file

    from lab.config import to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t, ids = readout_tensors(lm, cfg.layers)
    info = {
        "config": to_dict(cfg),
        "model": lm.name,
        "layers": list(cfg.layers),
        **ids,
        **dict(meta or {}),
        "transcoders": {str(lay): fingerprint(d) for lay, d in dictionaries.items()},
    }
    mpath = out / "meta.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if {k: old.get(k) for k in info} != json.loads(json.dumps(info)):
            raise LabError(f"{out} holds a dose response of another config or model; use another output_dir")
    else:
        save_file(t, str(out / "readout.safetensors"))
        save_file({c: v.vector.float().contiguous() for c, v in vectors.items()}, str(out / "vectors.safetensors"))
        (out / "transcoders").mkdir(exist_ok=True)
        for lay, d in dictionaries.items():
            d.save(out / "transcoders" / f"layer{lay}.safetensors")
        mpath.write_text(json.dumps(info, indent=1))
    prompts = trial_prompts(lm, cfg.trial_numbers, cfg.prompt_variant, cfg.dialogue_format)
    for concept, cv in vectors.items():
        done = out / "rows" / f"{_slug(concept)}.parquet"
        if not done.is_file():
            scale = 1.0 if cfg.strength_mode == "raw" else cv.resid_norm / max(cv.norm, 1e-12)
            feats, rows = dose_rows(
                lm,
                concept,
                cv.vector,
                [(s, s * scale) for s in cfg.strengths],
                prompts,
                cfg.inject_layer,
                dictionaries,
                cfg.batch_size,
            )
            table = pd.DataFrame(feats, columns=list(FEATURE_COLUMNS)).astype(FEATURE_TYPES)
            _write(table, out / "features" / f"{_slug(concept)}.parquet")
            _write(pd.DataFrame(rows), done)
        if on_concept:
            on_concept(concept)
    return out
