"""Trials/s of the batched Ray runner vs a naive loop of one HF `generate` per trial, on the same trials.

    python bench/injection_throughput.py [--concepts 8] [--max-new-tokens 32]

Both sides run in one process run. `ratio` (the last line) compares the generation phase: the runner from its first
shard to its last (batched generation on the actor, judging, Parquet writes) against the naive loop of one
`generate` per trial with a one-row injection hook. `end_to_end_ratio` adds each side's fixed costs (Ray start and
actor model load, or model load; concept vectors on both), which dominate small sweeps. Target: ratio >= 5 on the
embedded model on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import torch

import lab  # noqa: F401
from lab.concepts import concept_vectors, select_concepts
from lab.config import ModelConfig
from lab.models import load
from lab.parallel import RunnerConfig
from lab.prompts import inject_start, render
from lab.runner import VectorBank
from lab.steering import inject
from lab.sweep import InjectionConfig, plan, run_sweep
from lab.tracking import TrackingConfig
from lab.trials import SweepConfig


def naive(cfg: InjectionConfig, cache: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.runner.threads)
    lm = load(cfg.model)
    p = plan(cfg)
    vecs, typical = concept_vectors(lm, select_concepts(cfg.sweep.concepts), p.layers, cache_dir=cache)
    bank = VectorBank(vecs, typical)
    t1 = time.perf_counter()
    for t in p.trials:
        ids, start = inject_start(
            lm.tokenizer, render(lm, t.prompt_variant, t.dialogue_format, t.trial_number, t.forced)
        )
        x = torch.tensor([ids])
        raw = bank.strengths(t)[0]
        with torch.no_grad(), inject(lm.model, t.layer, bank.vector(t)[None], [raw], [start]):
            lm.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=t.max_new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, len(p.trials)


def ours(cfg: InjectionConfig) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    res = run_sweep(cfg, progress=False)
    return time.perf_counter() - t0, res["generate_s"], res["new"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = InjectionConfig(
            model=ModelConfig("smollm2-135m"),
            sweep=SweepConfig(
                concepts=f"first:{a.concepts}",
                layers=(10, 14),
                strengths=(0.2,),
                strength_mode="relative",
                trials_per_concept=2,
                controls=("random",),
                max_new_tokens=a.max_new_tokens,
            ),
            runner=RunnerConfig(num_actors=1, cpus_per_actor=2, threads=2, batch_size=a.batch_size, shard_size=64),
            tracking=TrackingConfig(enabled=False),
            output_dir=f"{tmp}/out",
            cache_dir=f"{tmp}/vectors",
        )
        load(cfg.model)  # convert the embedded model once, outside both timings
        t_ours, g_ours, n_ours = ours(cfg)
        t_naive, g_naive, n_naive = naive(replace(cfg, output_dir=f"{tmp}/naive"), f"{tmp}/vectors-naive")
    assert n_ours == n_naive
    n = n_ours
    print(f"trials={n} max_new_tokens={a.max_new_tokens} batch_size={a.batch_size}")
    print(
        f"ray_runner: end to end {t_ours:.1f} s ({n / t_ours:.2f} trials/s), "
        f"generating {g_ours:.1f} s ({n / g_ours:.2f} trials/s)"
    )
    print(
        f"naive_loop: end to end {t_naive:.1f} s ({n / t_naive:.2f} trials/s), "
        f"generating {g_naive:.1f} s ({n / g_naive:.2f} trials/s)"
    )
    print(f"end_to_end_ratio={t_naive / t_ours:.2f} (includes Ray start, model load, concept vectors on both sides)")
    print(f"ratio={g_naive / g_ours:.2f}")


if __name__ == "__main__":
    main()
