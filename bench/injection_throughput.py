"""Trials/s of the lab's runner vs one HF `generate` per trial, greedy and sampled, on the same trials.

    python bench/injection_throughput.py [--concepts 16] [--trials-per-concept 3] [--max-new-tokens 48]
                                         [--ray] [--ablations]

One process, one model (the embedded SmolLM2-135M, float32), `--threads` torch threads for both sides:
- naive: one `generate` per trial on its whole prompt with a one-row injection hook (`lab.steer.injection.inject`);
- runner: `lab.generate.runner.Runner.run` on the same trials (the generation phase of a sweep, in process).
Before any speed is printed, every trial's greedy response (text and token count) from the runner must equal the
naive loop's. Sampled decoding (temperature 1, top-k 0, top-p 1) cannot be deduplicated; its tokens differ from
HF's by design (per-trial seeded generators, docs/performance.md), so the check there is that a rerun reproduces
them. `--naive-every K` times the sampled naive loop on every K-th trial only (its trials/s is per-trial work).
The runner is timed before and after each naive loop and the faster run kept (the machine's load moves).
`--ablations` also times the runner with each optimisation switched off; `--ray` times a whole `run_sweep` on one Ray
actor (Ray start, model load, vectors, judge and Parquet included).
Gemma-3-shaped row (`gemma3_ratio=`): the same greedy trials, checked identical the same way, on a random-weight
`Gemma3ForCausalLM` shaped like Gemma 3 270M (18 layers, d 640, 4 query heads over 1 kv head of dim 256, five
sliding layers to one global, scaled embeddings, post-sublayer norms, tied head) with SmolLM2's tokenizer and a
sliding window of `--gemma-window` tokens (64: shorter than every prompt, so every row decodes past its window; the
real 270M's 512 and 27B's 1024 are longer than these prompts). `--no-gemma` leaves it out.
Last line: `ratio=<greedy generation ratio>` (SmolLM2).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace

import torch
from common import add_threads, per_trial

import lab  # noqa: F401
from lab.config import ModelConfig
from lab.errors import ArgumentParser, one_line_errors
from lab.experiments.concept_injection import InjectionConfig, plan, run_sweep
from lab.generate.runner import Runner, VectorBank
from lab.model.loading import LoadedModel, load
from lab.protocol.trials import SweepConfig
from lab.protocol.words import select_concepts
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig
from lab.steer.concepts import concept_vectors

GEMMA_LAYERS = (6, 12)  # a third and two thirds of 18, as 10 and 14 of SmolLM2's 30


def naive(lm, bank, trials) -> tuple[float, list[tuple[str, int]]]:
    """One HF `generate` per trial, the whole prompt, a one-row inject hook; (seconds, (text, new tokens) each)."""
    t0 = time.perf_counter()
    out = [per_trial(lm, bank, t) for t in trials]
    return time.perf_counter() - t0, out


def ours(lm, bank, trials, batch_size, **kw) -> tuple[float, list[tuple[str, int]]]:
    t0 = time.perf_counter()
    rows = Runner(lm, bank, batch_size, **kw).run(trials)
    return time.perf_counter() - t0, [(r["response"], r["new_tokens"]) for r in rows]


def gemma_shaped(lm: LoadedModel, window: int) -> LoadedModel:
    """A random Gemma3ForCausalLM of Gemma 3 270M's shape over `lm`'s tokenizer (norm scales drawn around 1, as trained
    ones are, so no layer is the identity), float32, on `lm`'s device."""
    import transformers as tf

    base = lm.model.config
    n = 18
    cfg = tf.Gemma3TextConfig(
        vocab_size=base.vocab_size,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=n,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=window,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)],
        max_position_embeddings=2048,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=lm.tokenizer.eos_token_id,
        bos_token_id=base.bos_token_id,
    )
    torch.manual_seed(0)
    model = tf.Gemma3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.5)
    spec = replace(lm.spec, name="gemma3-shaped-random", n_layers=n, d_model=640, default_layers=GEMMA_LAYERS)
    return LoadedModel(model.to(lm.device), lm.tokenizer, spec, spec.name)


def check_same(fast, slow, what: str) -> None:
    bad = [i for i, (a, b) in enumerate(zip(fast, slow)) if a != b]
    assert len(fast) == len(slow) and not bad, f"{what}: {len(bad)} of {len(slow)} trials differ, first {bad[:5]}"


def main() -> None:
    ap = ArgumentParser(prog="python bench/injection_throughput.py", description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=16)
    ap.add_argument("--trials-per-concept", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    add_threads(ap)
    ap.add_argument("--naive-every", type=int, default=1, help="sampled naive loop on every K-th trial only")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="model.device for both sides")
    ap.add_argument("--gemma-window", type=int, default=64, help="sliding window of the Gemma-3-shaped row")
    ap.add_argument("--no-gemma", action="store_true", help="leave the Gemma-3-shaped row out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = InjectionConfig(
            model=ModelConfig("smollm2-135m", device=a.device),
            sweep=SweepConfig(
                concepts=f"first:{a.concepts}",
                layers=(10, 14),
                strengths=(0.2,),
                strength_mode="relative",
                trials_per_concept=a.trials_per_concept,
                controls=("random",),
                max_new_tokens=a.max_new_tokens,
                selftest=False,
            ),
            runner=FanOutConfig(
                num_actors=1,
                cpus_per_actor=a.threads,
                gpus_per_actor=1.0 if a.device == "cuda" else 0.0,
                threads=a.threads,
                batch_size=a.batch_size,
            ),
            tracking=TrackingConfig(enabled=False),
            output_dir=f"{tmp}/out",
            cache_dir=f"{tmp}/vectors",
        )
        lm = load(cfg.model)
        p = plan(cfg)
        vecs, typical = concept_vectors(lm, select_concepts(cfg.sweep.concepts), p.layers, cache_dir=f"{tmp}/vec")
        bank = VectorBank(vecs, typical)
        greedy = p.trials
        sampled = [replace(t, temperature=1.0) for t in greedy]  # same ids are fine in one process
        n = len(greedy)
        print(f"trials={n} max_new_tokens={a.max_new_tokens} batch_size={a.batch_size} threads={a.threads}")
        print(f"load average at start: {os.getloadavg()[0]:.2f}")

        t_fast, fast = ours(lm, bank, greedy, a.batch_size)
        t_slow, slow = naive(lm, bank, greedy)
        check_same(fast, slow, "greedy runner vs per-trial loop")
        t_fast = min(t_fast, ours(lm, bank, greedy, a.batch_size)[0])  # before and after the long loop: load moves
        print(f"greedy: every one of {n} responses identical to the per-trial loop")
        print(f"greedy  runner {n / t_fast:6.2f} trials/s ({t_fast:.1f} s)  naive {n / t_slow:5.2f} trials/s")
        if a.ablations:
            for name, kw in {
                "HF generate (previous runner)": {"engine": "hf"},
                "loop, growing cache, no eviction": {"static": False, "evict": False},
                "loop, static cache, no eviction": {"evict": False},
                "loop, prefix attended per row (SDPA)": {"share_attention": False},
                "loop, batch 32": {},
            }.items():
                t_x, x = ours(lm, bank, greedy, 32 if "32" in name else a.batch_size, **kw)
                check_same(x, slow, name)
                print(f"  ablation: {name:34s} {n / t_x:6.2f} trials/s ({t_slow / t_x:.2f}x naive)")

        t_fs, fs = ours(lm, bank, sampled, a.batch_size)
        sub = sampled[:: a.naive_every]
        t_ss, ss = naive(lm, bank, sub)
        t_fs2, fs2 = ours(lm, bank, sampled, a.batch_size)
        check_same(fs2, fs, "sampled rerun")
        t_fs = min(t_fs, t_fs2)
        rate_ss = len(sub) / t_ss
        mean_new = (sum(k for _, k in fs) / n, sum(k for _, k in ss) / len(sub))
        print(
            f"sampled runner {n / t_fs:6.2f} trials/s ({t_fs:.1f} s)  naive {rate_ss:5.2f} trials/s "
            f"({len(sub)} trials timed); mean new tokens {mean_new[0]:.1f} vs {mean_new[1]:.1f}"
        )
        print(f"sampled_ratio={n / t_fs / rate_ss:.2f}")
        if not a.no_gemma:
            lm_g = gemma_shaped(lm, a.gemma_window)
            p_g = plan(replace(cfg, sweep=replace(cfg.sweep, layers=GEMMA_LAYERS)))
            vecs_g, typical_g = concept_vectors(
                lm_g, select_concepts(cfg.sweep.concepts), GEMMA_LAYERS, cache_dir=f"{tmp}/vec-gemma"
            )
            bank_g = VectorBank(vecs_g, typical_g)
            t_gf, gf = ours(lm_g, bank_g, p_g.trials, a.batch_size)
            t_gs, gs = naive(lm_g, bank_g, p_g.trials)
            check_same(gf, gs, "gemma3-shaped greedy runner vs per-trial loop")
            t_gf = min(t_gf, ours(lm_g, bank_g, p_g.trials, a.batch_size)[0])
            ng, lens = len(p_g.trials), [len(Runner(lm_g, bank_g).request(t).ids) for t in p_g.trials]
            print(
                f"gemma3-shaped (random Gemma3ForCausalLM, 18 layers d 640, 5 sliding : 1 global, window "
                f"{a.gemma_window}; prompts {min(lens)}-{max(lens)} tokens + up to {a.max_new_tokens} new): every one "
                f"of {ng} greedy responses identical to the per-trial loop; runner {ng / t_gf:6.2f} trials/s "
                f"({t_gf:.1f} s)  naive {ng / t_gs:5.2f} trials/s"
            )
            print(f"gemma3_ratio={t_gs / t_gf:.2f}")
        if a.ray:
            t0 = time.perf_counter()
            res = run_sweep(replace(cfg, cache_dir=f"{tmp}/vectors-ray"), progress=False)
            t_e2e = time.perf_counter() - t0
            print(
                f"ray sweep (1 actor): generation phase {n / res['generate_s']:.2f} trials/s, end to end "
                f"{t_e2e:.1f} s incl. Ray start, model load, vectors, judge, Parquet; "
                f"ray_ratio={t_slow / res['generate_s']:.2f}"
            )
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"ratio={t_slow / t_fast:.2f}")


if __name__ == "__main__":
    with one_line_errors():
        main()
