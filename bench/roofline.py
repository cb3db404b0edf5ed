"""FLOP/s the runner achieves on the work a trial needs, against a matmul peak measured in the same run (fp32, bf16).

    python bench/roofline.py [--trials 32] [--max-new-tokens 48]

A trial needs: its unique suffix prefilled (the shared prefix is computed once per batch and not counted), one
decode step per generated token after the first (stop token included), the LM head at each of those positions, and
attention over its context at every query position (QK and AV: 4 · heads · head_dim · context per layer). Linear
FLOPs per token are 2 × the decoder blocks' weight count. Achieved = total needed FLOPs / the runner's wall time on
injection trials only (all distinct, so no greedy deduplication helps). Peak = the best of square matmuls and the
decode-shaped [batch × d_model] @ [d_model × d_mlp], in each dtype, measured here. Before timing, fp32 greedy
responses must equal the per-trial loop's for every trial; bf16 (weights and activations, `model.dtype: bfloat16`)
prints how many trials keep fp32's exact response and its speed-up. Last line: `fp32_fraction_of_peak=<x>`.
"""

from __future__ import annotations

import os
import time

import torch
from common import add_threads, injection_trials, per_trial

import lab  # noqa: F401
from lab.config import ModelConfig
from lab.errors import ArgumentParser, one_line_errors
from lab.generate.decode import common_prefix
from lab.generate.runner import Runner
from lab.model.loading import load


def matmul_peak(dtype: torch.dtype, shapes: list[tuple[int, int, int]]) -> float:
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b
        reps = max(3, int(2e10 / (2 * m * k * n)))
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


def flops_needed(lm, rows: list[list[int]], prefix: int, generated: list[int]) -> float:
    cfg = lm.model.config
    block = 2 * sum(m.weight.numel() for m in lm.model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    head = 2 * lm.model.lm_head.weight.numel()
    att = 4 * cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads) * cfg.num_hidden_layers
    total = 0.0
    for ids, g in zip(rows, generated):
        s = len(ids) - prefix
        total += s * block + head + att * sum(range(prefix + 1, len(ids) + 1))  # suffix prefill
        total += (g - 1) * (block + head) + att * sum(range(len(ids) + 1, len(ids) + g))  # decode steps
    return total


def run(lm, bank, trials) -> tuple[float, list[tuple[str, int]]]:
    t0 = time.perf_counter()
    out = Runner(lm, bank, len(trials)).run(trials)
    return time.perf_counter() - t0, [(r["response"], r["new_tokens"]) for r in out]


def main() -> None:
    ap = ArgumentParser(prog="python bench/roofline.py", description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    add_threads(ap)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm, bank, trials = injection_trials(a.trials, a.max_new_tokens)
    _, fast = run(lm, bank, trials)
    for t, got in zip(trials, fast):
        assert got == per_trial(lm, bank, t), f"trial {t.trial_id} differs"
    print(f"fp32 greedy responses identical to the per-trial loop for all {len(trials)} trials")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    runner = Runner(lm, bank, len(trials))
    rows = [runner.request(t).ids for t in trials]
    prefix = min(common_prefix(rows), min(runner.request(t).start for t in trials))
    generated = [n + (n < a.max_new_tokens) for _, n in fast]  # the stop token was computed too
    need = flops_needed(lm, rows, prefix, generated)
    lm16 = load(ModelConfig("smollm2-135m", dtype="bfloat16"))
    d, f = lm.model.config.hidden_size, lm.model.config.intermediate_size
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (len(trials), d, f)]
    secs = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(a.repeats):
        secs["fp32"] = min(secs["fp32"], run(lm, bank, trials)[0])
        t16, half = run(lm16, bank, trials)
        secs["bf16"] = min(secs["bf16"], t16)
    same = sum(x == y for x, y in zip(half, fast))
    peaks = {"fp32": matmul_peak(torch.float32, shapes), "bf16": matmul_peak(torch.bfloat16, shapes)}
    print(f"trials={len(trials)} max_new_tokens={a.max_new_tokens} threads={a.threads} prefix={prefix} (not counted)")
    print(
        f"needed: {need / 1e9:.1f} GFLOP ({need / len(trials) / 1e9:.2f} per trial, {sum(generated)} tokens generated)"
    )
    for k in ("fp32", "bf16"):
        print(
            f"{k}: {secs[k]:.2f} s, achieved {need / secs[k] / 1e9:.1f} GFLOP/s, matmul peak {peaks[k] / 1e9:.1f} GFLOP/s"
            f" -> {need / secs[k] / peaks[k]:.1%} of peak"
        )
    print(
        f"bf16: speed-up {secs['fp32'] / secs['bf16']:.2f}x over fp32; {same}/{len(trials)} responses identical to fp32"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"fp32_fraction_of_peak={need / secs['fp32'] / peaks['fp32']:.3f}")


if __name__ == "__main__":
    with one_line_errors():
        main()
