"""Activation patching of attention / MLP outputs after the injection layer (the paper's knock-out / knock-in).

For a batch of injection trials (concept c, trial number n, injection layer Li, raw strength s):
- `clean`: the trial prompt, nothing injected; `steered`: s·v_c added at `resid_post.Li` from the injection start on.
- `knock_out` at (L, component): the steered run with `component.L` replaced by the clean run's output, over the whole
  sequence; `knock_in`: the clean run with `component.L` replaced by the steered run's output.
- `forced_knock_out`: the same knock-out with the forced prefill appended ("Yes, I do detect an injected thought
  about"), read as the log-prob of the concept's first token (`forced_steered` / `forced_clean` are its references).
Main metric: Yes−No logsumexp at the answer position (`lab.steer.readouts.yes_no_score`). Patches are
`lab.steer.interventions.Patch` with values captured from the reference run of the same rows and padding, so patching a run
with its own activations changes nothing, bit for bit. `PatchWorker` holds a model and caches the reference runs of
each batch, so one call per (layer, component) does only the patched passes (a Ray actor in `jobs.patching`, or used
in process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lab.steer import interventions as iv
from lab.steer.readouts import NO_VARIANTS, YES_VARIANTS, concept_first_token, pad_left, variant_token_ids

COMPONENTS = ("attn_out", "mlp_out")
MODES = ("knock_out", "knock_in", "forced_knock_out")
FORCED_PREFILL = "Yes, I do detect an injected thought about"
PATCH_VERSION = 1


@dataclass(frozen=True)
class PatchBatch:
    """Rows that share one forward pass: token ids, injection starts, vectors [B, d] and raw strengths [B]."""

    key: str
    concepts: tuple[str, ...]
    trial_numbers: tuple[int, ...]
    rows: tuple[tuple[int, ...], ...]
    forced_rows: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]
    vectors: torch.Tensor
    strengths: tuple[float, ...]
    layer: int  # injection layer


def build_batch(
    lm: Any,
    key: str,
    concepts: list[str],
    trial_numbers: list[int],
    vectors: torch.Tensor,
    strengths: list[float],
    layer: int,
    variant: str = "original",
) -> PatchBatch:
    """Token rows of the trial prompt (and of the forced-prefill prompt) for each (concept, trial number)."""
    from lab.protocol.prompts import inject_start, render

    if len(concepts) != len(trial_numbers):
        raise ValueError("one trial number per concept row")
    rows, forced, starts = [], [], []
    for n in trial_numbers:
        p = render(lm, variant, "standard", n)
        ids, start = inject_start(lm.tokenizer, p)
        rows.append(tuple(ids))
        starts.append(start)
        forced.append(tuple(lm.tokenizer(p.text + FORCED_PREFILL, add_special_tokens=False)["input_ids"]))
    return PatchBatch(
        key,
        tuple(concepts),
        tuple(trial_numbers),
        tuple(rows),
        tuple(forced),
        tuple(starts),
        vectors,
        tuple(strengths),
        layer,
    )


class PatchWorker:
    """A model replica that runs the patched passes of one (layer, component) at a time."""

    def __init__(self, lm: Any, threads: int = 0):
        """`lm`: a `LoadedModel`, or a `ModelConfig` to load (how a Ray actor is built)."""
        if not hasattr(lm, "model"):
            from lab.model import loading

            if threads:
                loading.threads(threads)
            lm = loading.load(lm)
        self.lm = lm
        self.yes = variant_token_ids(lm.tokenizer, YES_VARIANTS)
        self.no = variant_token_ids(lm.tokenizer, NO_VARIANTS)
        self._refs: dict[str, dict[str, Any]] = {}

    @torch.no_grad()
    def _forward(
        self, rows: tuple[tuple[int, ...], ...], b: PatchBatch, steer: bool, patch: list[Any], capture: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids, mask, pad = pad_left(rows, self.lm.tokenizer.pad_token_id)
        ops = list(patch)
        if steer:
            starts = torch.tensor(b.starts) + torch.tensor(pad)
            ops.insert(0, iv.Add(f"resid_post.{b.layer}", b.vectors, torch.tensor(b.strengths), starts))
        dev = self.lm.device
        with iv.apply(self.lm.model, ops), iv.capture(self.lm.model, capture) as acts:
            out = self.lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float().cpu(), {s: v[0] for s, v in acts.items()}

    def _metric(self, logits: torch.Tensor, b: PatchBatch, forced: bool) -> list[float]:
        from lab.steer.readouts import first_token_logprob, yes_no_score

        if forced:
            toks = [concept_first_token(self.lm.tokenizer, c) for c in b.concepts]
            return first_token_logprob(logits, toks).tolist()
        return yes_no_score(logits, self.yes, self.no).tolist()

    def references(self, b: PatchBatch, sites: list[str], forced: bool = True) -> dict[str, Any]:
        """Clean / steered (and forced) runs of a batch with the sites captured; computed once per batch."""
        if b.key not in self._refs:
            self._refs = {b.key: {}}  # keep one batch: a worker walks the cells of one batch at a time
        ref = self._refs[b.key]
        for f in (False, True) if forced else (False,):
            for steer in (False, True):
                name = ("forced_" if f else "") + ("steered" if steer else "clean")
                if name not in ref:
                    logits, acts = self._forward(b.forced_rows if f else b.rows, b, steer, [], sites)
                    ref[name] = (self._metric(logits, b, f), acts)
        return ref

    def cell(self, b: PatchBatch, layer: int, component: str, sites: list[str]) -> dict[str, list[float]]:
        """Metrics of every mode at (layer, component), plus the four references, one value per row."""
        ref = self.references(b, sites)
        site = f"{component}.{layer}"
        out = {k: v[0] for k, v in ref.items()}
        out["knock_out"] = self._metric(
            self._forward(b.rows, b, True, [iv.Patch(site, ref["clean"][1][site])], [])[0], b, False
        )
        out["knock_in"] = self._metric(
            self._forward(b.rows, b, False, [iv.Patch(site, ref["steered"][1][site])], [])[0], b, False
        )
        ko = [iv.Patch(site, ref["forced_clean"][1][site])]
        out["forced_knock_out"] = self._metric(self._forward(b.forced_rows, b, True, ko, [])[0], b, True)
        return out

    def self_patch(self, b: PatchBatch, site: str) -> dict[str, list[float]]:
        """The identity check: steered run patched with its own activations, clean run with its own."""
        ref = self.references(b, [site], forced=False)
        st = self._forward(b.rows, b, True, [iv.Patch(site, ref["steered"][1][site])], [])[0]
        cl = self._forward(b.rows, b, False, [iv.Patch(site, ref["clean"][1][site])], [])[0]
        return {
            "steered": ref["steered"][0],
            "steered_self": self._metric(st, b, False),
            "clean": ref["clean"][0],
            "clean_self": self._metric(cl, b, False),
        }


def rows_of(
    b: PatchBatch, ids: list[str], patch_layer: int, component: str, metrics: dict[str, list[float]], **fields: Any
) -> list[dict[str, Any]]:
    """One stored row per trial of the batch: the trial's fields and every metric of this (layer, component)."""
    return [
        {
            "trial_id": t,
            "concept": b.concepts[j],
            "trial_number": b.trial_numbers[j],
            "layer": b.layer,
            "strength_raw": b.strengths[j],
            "patch_layer": patch_layer,
            "component": component,
            **fields,
            **{k: v[j] for k, v in metrics.items()},
        }
        for j, t in enumerate(ids)
    ]
