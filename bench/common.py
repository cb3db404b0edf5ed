"""What the benchmarks share: the per-trial reference (one HF `generate` per trial) that every fast path is checked
against, the `--threads` option, and a set of distinct injection trials on the embedded model with their vectors."""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

import lab  # noqa: F401
from lab.experiments.concept_injection import InjectionConfig, plan
from lab.generate.runner import VectorBank
from lab.model.loading import load
from lab.protocol.prompts import inject_start, render
from lab.protocol.trials import SweepConfig
from lab.protocol.words import select_concepts
from lab.steer.concepts import concept_vectors
from lab.steer.injection import Injection, inject


def add_threads(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine 2 threads ran 2-6x slower)"
    )


def per_trial(lm: Any, bank: VectorBank, t: Any) -> tuple[str, int]:
    """One HF `generate` on the trial's whole prompt with a one-row inject hook: (response, new tokens)."""
    tok = lm.tokenizer
    ids, start = inject_start(tok, render(lm, t.prompt_variant, t.dialogue_format, t.trial_number, t.forced))
    x = torch.tensor([ids], device=lm.device)
    kw = {"do_sample": True, "temperature": t.temperature, "top_k": 0, "top_p": 1.0} if t.temperature else {}
    kw.setdefault("do_sample", False)
    with torch.no_grad(), inject(lm.model, Injection(t.layer, bank.vector(t)[None], [bank.strengths(t)[0]], [start])):
        new = lm.model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=t.max_new_tokens, pad_token_id=tok.pad_token_id, **kw
        )[0, len(ids) :].tolist()
    n = next((j for j, v in enumerate(new) if v in (tok.eos_token_id, tok.pad_token_id)), len(new))
    return tok.decode(new[:n], skip_special_tokens=True).strip(), n


def injection_trials(n: int, max_new: int) -> tuple[Any, VectorBank, list[Any]]:
    """(model, vector bank, the first `n` injection trials of 8 concepts × layers 10/14 × 4 trial numbers): every
    trial distinct, so no greedy deduplication helps."""
    fields = {"concepts": "first:8", "layers": (10, 14), "strengths": (0.2,), "strength_mode": "relative"}
    sweep = SweepConfig(**fields, trials_per_concept=4, controls=(), max_new_tokens=max_new, selftest=False)
    trials = [t for t in plan(InjectionConfig(sweep=sweep)).trials if t.kind == "injection"][:n]
    lm = load("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp:
        vecs, typical = concept_vectors(lm, select_concepts(sweep.concepts), (10, 14), cache_dir=tmp)
    return lm, VectorBank(vecs, typical), trials
