"""Steered vs un-steered batched generation of the same batch: what the per-row injection hooks cost.

    python bench/steering_overhead.py [--rows 32] [--max-new-tokens 48] [--repeats 3]

The same rows (the sweep's prompts: several concepts, two layers, different trial numbers) go through
`lab.generate.decode.decode_batch` twice per repeat, once with the runner's per-row `Add` operators and once without any hook,
both with eviction off, so both run exactly `rows × max_new_tokens` token steps (steering changes when rows stop,
which would otherwise change the work). Before timing, every steered row's greedy tokens must equal the per-trial
loop's (one HF `generate` per trial on its whole prompt with a one-row inject hook). The best of `--repeats` is
kept for each side. Last line: `overhead=<steered / un-steered time>` (target <= 1.3).
"""

from __future__ import annotations

import os
import time

import torch
from common import add_threads, injection_trials

import lab  # noqa: F401
from lab.errors import ArgumentParser, one_line_errors
from lab.generate import decode
from lab.generate.decode import common_prefix
from lab.generate.runner import Runner
from lab.steer.injection import Injection, inject


def main() -> None:
    ap = ArgumentParser(prog="python bench/steering_overhead.py", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    add_threads(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm, bank, trials = injection_trials(a.rows, a.max_new_tokens)
    tok = lm.tokenizer
    runner = Runner(lm, bank, len(trials))
    reqs = [runner.request(t) for t in trials]
    rows = [r.ids for r in reqs]
    prefix = min(common_prefix(rows), min(r.start for r in reqs))
    width = max(len(r) for r in rows)
    steer = runner._steer(reqs, [width - len(r.ids) + r.start for r in reqs])
    stop = {tok.eos_token_id, tok.pad_token_id}

    def gen(steered: bool) -> list[list[int]]:
        return decode.decode_batch(
            lm.model,
            rows,
            prefix,
            a.max_new_tokens,
            stop,
            tok.pad_token_id,
            steer=steer if steered else None,
            evict=False,
        )

    fast = gen(True)
    for t, r, got in zip(trials, reqs, fast):
        x = torch.tensor([r.ids])
        with torch.no_grad(), inject(lm.model, Injection(t.layer, bank.vector(t)[None], [r.raw], [r.start])):
            new = lm.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=a.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0, len(r.ids) :].tolist()
        n = next((j + 1 for j, v in enumerate(new) if v in stop), len(new))
        assert got == new[:n], f"trial {t.trial_id}: batched steered tokens differ from the per-trial loop"
    print(f"rows={len(rows)} max_new_tokens={a.max_new_tokens} prefix={prefix} width={width} threads={a.threads}")
    print(f"steered greedy tokens identical to the per-trial loop for all {len(rows)} rows")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    best = {True: float("inf"), False: float("inf")}
    for _ in range(a.repeats):
        for steered in (False, True):
            t0 = time.perf_counter()
            gen(steered)
            best[steered] = min(best[steered], time.perf_counter() - t0)
    steps = len(rows) * a.max_new_tokens
    print(
        f"un-steered {best[False]:.2f} s ({steps / best[False]:.0f} tok/s), steered {best[True]:.2f} s "
        f"({steps / best[True]:.0f} tok/s); best of {a.repeats}"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"overhead={best[True] / best[False]:.3f}")


if __name__ == "__main__":
    with one_line_errors():
        main()
