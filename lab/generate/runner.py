"""Batched steered generation for a list of trials, in-process (lab/run/parallel.py fans it out over Ray actors).

Rows in one batch may differ in everything: concept, layer, strength, start position, control or not. One `inject`
hook per distinct layer in the batch carries per-row vectors; rows of other layers get strength 0 there, which
leaves them exactly untouched. Under greedy decoding, identical requests (e.g. the controls of one trial number) are
generated once and shared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lab.errors import LabError
from lab.model.loading import LoadedModel
from lab.protocol.prompts import inject_start, render
from lab.protocol.trials import Trial
from lab.steer.concepts import ConceptVector
from lab.steer.injection import Injection, Strength


@dataclass
class VectorBank:
    """Concept vectors plus per-layer norms; derives the control vectors deterministically."""

    vectors: dict[tuple[str, int], ConceptVector]
    typical_norm: dict[int, float]  # mean ‖baseline word − baseline mean‖ at the layer (the `random` control's norm)

    def resid_norm(self, layer: int) -> float:
        return next(v.resid_norm for (_, lay), v in self.vectors.items() if lay == layer)

    def _cv(self, trial: Trial) -> ConceptVector:
        key = (trial.vector or trial.concept, trial.layer)
        if key not in self.vectors:
            raise LabError(f"no vector '{key[0]}' at layer {key[1]} in the bank (trial {trial.trial_id})")
        return self.vectors[key]

    def vector(self, trial: Trial) -> torch.Tensor:
        cv = self._cv(trial).vector
        if trial.kind in ("injection", "control"):
            return cv
        if trial.kind == "negative":
            return -cv  # exactly −v (sign flip is exact in floating point), same norm
        g = torch.Generator().manual_seed(
            int(
                hashlib.sha256(
                    (
                        f"{trial.seed}|{trial.concept}|{trial.layer}|{trial.kind}|{trial.trial_number}|{trial.sample}"
                        + (f"|{trial.vector}" if trial.vector else "")
                    ).encode()
                ).hexdigest()[:15],
                16,
            )
        )
        if trial.kind == "shuffled":
            return cv[torch.randperm(cv.numel(), generator=g)]
        direction = torch.randn(cv.numel(), generator=g)
        direction = direction / direction.norm()
        return direction * (cv.norm() if trial.kind == "norm_matched" else self.typical_norm[trial.layer])

    def strengths(self, trial: Trial) -> tuple[float, float, float]:
        """(raw multiplier applied, relative strength ‖s·v‖/‖resid‖, ‖v‖) for the vector this trial injects."""
        concept = self._cv(trial)
        resid = concept.resid_norm
        raw = Strength(trial.strength, trial.strength_mode).raw(concept.norm, resid)  # type: ignore[arg-type]
        if trial.kind == "control":
            return 0.0, 0.0, 0.0
        vnorm = float(self.vector(trial).norm())
        return raw, raw * vnorm / resid, vnorm


@dataclass(frozen=True)
class GenerationRequest:
    """One trial made concrete: its rendered prompt, token ids, injection start, and the vector × raw strength it
    injects (None: nothing)."""

    prompt_text: str
    ids: list[int]
    start: int
    layer: int
    vector: torch.Tensor | None
    raw: float


class Runner:
    """`edits` (interventions) apply to every forward pass of every row, the shared prefix included."""

    def __init__(
        self,
        lm: LoadedModel,
        bank: VectorBank,
        batch_size: int = 16,
        edits: Sequence[Any] = (),
        engine: str = "loop",
        evict: bool = True,
        static: bool = True,
        share_attention: bool = True,
    ):
        self.lm, self.bank, self.batch_size, self.edits = lm, bank, batch_size, list(edits)
        self.engine, self.evict, self.static, self.share_attention = engine, evict, static, share_attention

    def request(self, t: Trial) -> GenerationRequest:
        prompt = render(self.lm, t.prompt_variant, t.dialogue_format, t.trial_number, t.forced, concept=t.concept)
        ids, start = inject_start(self.lm.tokenizer, prompt)
        raw = self.bank.strengths(t)[0]
        return GenerationRequest(prompt.text, ids, start, t.layer, self.bank.vector(t) if raw > 0 else None, raw)

    def run(self, trials: Sequence[Trial], on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Generate every trial; returns one row per trial (trial fields + generation fields), in input order."""
        reqs = [self.request(t) for t in trials]
        # under greedy decoding, identical requests give identical outputs: generate each once
        keys = [_dedupe_key(t, r) if t.temperature == 0 else (i,) for i, (t, r) in enumerate(zip(trials, reqs))]
        first: dict[Any, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        # length-bucketed batches: rows of one length need no padding (and no attention mask)
        todo = sorted(
            set(first.values()), key=lambda i: (trials[i].temperature, trials[i].max_new_tokens, len(reqs[i].ids), i)
        )
        texts: dict[int, tuple[str, int]] = {}
        for b in range(0, len(todo), self.batch_size):
            chunk = todo[b : b + self.batch_size]
            groups: dict[tuple[float, int], list[int]] = {}
            for i in chunk:
                groups.setdefault((trials[i].temperature, trials[i].max_new_tokens), []).append(i)
            for (temp, max_new), idx in groups.items():
                outs = self._generate([reqs[i] for i in idx], temp, max_new, [trials[i] for i in idx])
                texts.update(zip(idx, outs))
            if on_batch:
                on_batch(sum(1 for k in keys if first[k] in set(chunk)))
        rows = []
        for i, (t, r) in enumerate(zip(trials, reqs)):
            raw, rel, vnorm = self.bank.strengths(t)
            text, n_new = texts[first[keys[i]]]
            rows.append(
                t.to_dict()
                | {
                    "prompt": r.prompt_text,
                    "inject_start": r.start,
                    "prompt_tokens": len(r.ids),
                    "response": text,
                    "new_tokens": n_new,
                    "strength_raw": raw,
                    "strength_rel": rel,
                    "vector_norm": vnorm,
                    "resid_norm": self.bank.resid_norm(t.layer),
                }
            )
        return rows

    def _generate(
        self, reqs: list[GenerationRequest], temperature: float, max_new: int, trials: list[Trial]
    ) -> list[tuple[str, int]]:
        """One batch. The prompt prefix every row shares and no row steers (the preamble before "Trial {n}") is run
        once; each row's own suffix is left-padded after it (pads masked out), so only the suffixes and the new tokens
        cost a batched forward. `lab.generate.decode` runs it (pre-allocated cache, finished rows evicted) unless the engine is
        'hf' (ZeRO-3 ranks need `generate(synced_gpus=True)`) or the checkpoint's generation config asks for a
        processor that loop lacks."""
        from lab.generate import decode

        tok, model = self.lm.tokenizer, self.lm.model
        shared = decode.common_prefix([r.ids for r in reqs])
        p = min(shared, min(r.start for r in reqs), min(len(r.ids) for r in reqs) - 1)
        width = max(len(r.ids) for r in reqs)
        starts = [width - len(r.ids) + r.start for r in reqs]  # pads sit between prefix and suffix, before any start
        sampling = decode.sampling_for(model, temperature, self.lm.spec.sampling)
        seeds = [_seed(t.trial_id) for t in trials]
        if self.engine == "hf" or sampling is None:
            batch_seed = _seed("|".join(t.trial_id for t in trials))
            steer = self._steer(reqs, starts)
            new = decode.hf_generate(
                self.lm, [r.ids for r in reqs], p, max_new, self.edits, steer, temperature, batch_seed
            )
        else:
            stop = {tok.eos_token_id, tok.pad_token_id, *_eos_ids(model)}
            new = decode.decode_batch(
                model,
                [r.ids for r in reqs],
                p,
                max_new,
                stop,
                tok.pad_token_id,
                self.edits,
                self._steer(reqs, starts),
                sampling,
                seeds,
                evict=self.evict,
                static=self.static,
                share_attention=self.share_attention,
            )
        eos = {tok.eos_token_id, tok.pad_token_id}
        results = []
        for row in new:
            n = next((j for j, x in enumerate(row) if x in eos), len(row))
            results.append((tok.decode(row[:n], skip_special_tokens=True).strip(), n))
        return results

    def _steer(self, reqs: list[GenerationRequest], starts: list[int]) -> Callable[[list[int]], list[Any]]:
        """Per-row `Add` operators (one per injected layer) for any subset of the batch's rows."""
        injections = Injection.per_layer(
            [r.layer for r in reqs], [r.vector for r in reqs], [r.raw for r in reqs], starts, self.lm.spec.d_model
        )

        def ops(rows: list[int]) -> list[Any]:
            idx = torch.tensor(rows)
            return [inj.rows(idx).op() for inj in injections]

        return ops


def _dedupe_key(t: Trial, r: GenerationRequest) -> tuple[Any, ...]:
    vec = None if r.vector is None else (t.kind, t.concept, t.vector, t.layer, t.trial_number, t.sample)
    return (r.prompt_text, t.max_new_tokens, vec, r.raw)


def _seed(trial_id: str) -> int:
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:15], 16)


def _eos_ids(model: Any) -> list[int]:
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    e = getattr(model.config, "eos_token_id", None) if e is None else e
    return [] if e is None else [int(x) for x in (e if isinstance(e, (list, tuple)) else [e])]
