"""Peak RSS of a 1k-trial vs a 10k-trial sweep: rows are streamed to Parquet shard by shard, never accumulated.

    python bench/memory.py [--small 7] [--large 67] [--max-new-tokens 4]

Each sweep runs `lab.experiments.concept_injection.run_sweep` in process (`runner.num_actors: 0`: plan, concept vectors, batched generation,
rules judge, one Parquet file per shard) in its own subprocess, which reports its own peak RSS (`ru_maxrss`) when it
ends, so neither measurement sees the other's memory. A first, unmeasured 150-trial sweep fills the concept-vector
cache that both measured sweeps then read. The model is a tiny random Llama (2 layers, hidden 64) built from a
config with the embedded model's tokenizer and chat template, so a 10k-trial sweep takes minutes on 2 cores; what
could grow with the trial count (trial lists, pending ids, shards, the judge, the store) is the same code as for
the real model. 50 concepts × {small, large} trial numbers × (injection, control, random) trials. Before the
figure, the first 32 stored responses of the small sweep must equal one HF `generate` per trial with a one-row
inject hook. Last line: `rss_growth=<(peak 10k − peak 1k) / peak 1k>` (target < 0.10).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lab  # noqa: F401
from lab.errors import ArgumentParser, one_line_errors


def sweep_cfg(model_dir: str, trial_numbers: int, max_new: int, out: str, cache: str):
    from lab.config import ModelConfig
    from lab.experiments.concept_injection import InjectionConfig
    from lab.protocol.trials import SweepConfig
    from lab.run.parallel import FanOutConfig
    from lab.run.tracking import TrackingConfig

    return InjectionConfig(
        model=ModelConfig(model_dir),
        sweep=SweepConfig(
            concepts="first:50",
            layers=(1,),
            strengths=(8.0,),
            strength_mode="raw",
            trials_per_concept=trial_numbers,
            max_new_tokens=max_new,
            selftest=False,
        ),
        runner=FanOutConfig(num_actors=0, threads=1, batch_size=64, shard_size=128),
        tracking=TrackingConfig(enabled=False),
        output_dir=out,
        cache_dir=cache,
    )


def child(a: argparse.Namespace) -> None:
    from lab.experiments.concept_injection import run_sweep

    t0 = time.perf_counter()
    res = run_sweep(sweep_cfg(a.model, a.child, a.max_new_tokens, a.out, a.cache), progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"trials": res["new"], "peak_rss_mib": rss / 1024, "seconds": time.perf_counter() - t0}))


def tiny_model(path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lab.model.embedded import ensure_converted

    tok = AutoTokenizer.from_pretrained(str(ensure_converted()))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def check_tokens(model_dir: str, a: argparse.Namespace, out: str, cache: str) -> int:
    from common import per_trial

    from lab.experiments.concept_injection import model_key as key_of, plan
    from lab.generate.runner import VectorBank
    from lab.model.loading import load
    from lab.protocol.words import select_concepts
    from lab.run import store
    from lab.steer.concepts import concept_vectors

    cfg = sweep_cfg(model_dir, a.small, a.max_new_tokens, out, cache)
    lm = load(cfg.model)
    p = plan(cfg)
    vecs, typical = concept_vectors(
        lm, select_concepts(cfg.sweep.concepts), p.layers, cache_dir=cache, model_key=key_of(cfg.model)
    )
    bank = VectorBank(vecs, typical)
    stored = store.read(out).set_index("trial_id")["response"]
    for t in p.trials[:32]:
        want = per_trial(lm, bank, t)[0]
        assert stored[t.trial_id] == want, f"trial {t.trial_id}: stored response differs from the per-trial loop"
    return 32


def main() -> None:
    ap = ArgumentParser(prog="python bench/memory.py", description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=7, help="trial numbers of the small sweep (50 × 3 × 7 = 1050)")
    ap.add_argument("--large", type=int, default=67, help="trial numbers of the large sweep (50 × 3 × 67 = 10050)")
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny-llama"
        tiny_model(model)
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        peaks = {}
        for n in (1, a.small, a.large):  # the first (150 trials) fills the vector cache both measured sweeps reuse
            out, cache = f"{tmp}/out-{n}", f"{tmp}/vectors"
            cmd = [sys.executable, __file__, "--child", str(n), "--model", str(model), "--out", out, "--cache", cache]
            cmd += ["--max-new-tokens", str(a.max_new_tokens)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                sys.exit(f"sweep of {n} trial numbers failed:\n{res.stderr[-3000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            peaks[n] = r["peak_rss_mib"]
            if n == 1:
                continue
            shards = len(list(Path(out).glob("shard-*.parquet")))
            print(
                f"{r['trials']:6d} trials: peak RSS {r['peak_rss_mib']:.1f} MiB, {r['seconds']:.0f} s, {shards} shards"
            )
        checked = check_tokens(str(model), a, f"{tmp}/out-{a.small}", f"{tmp}/vectors")
        print(f"first {checked} stored responses identical to the per-trial loop")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"rss_growth={(peaks[a.large] - peaks[a.small]) / peaks[a.small]:.4f}")


if __name__ == "__main__":
    with one_line_errors():
        main()
