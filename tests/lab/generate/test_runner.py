"""Greedy batched (left-padded, heterogeneous) generation equals one-row-at-a-time generation, token for token."""

from __future__ import annotations

import torch

from lab.generate.runner import Runner, VectorBank
from lab.protocol.prompts import inject_start, render
from lab.steer.concepts import concept_vectors
from lab.steer.injection import Injection, inject
from tests.conftest import dust_sweep, trial


def _trial(concept, layer, strength, kind="injection", n=1, forced=False, mode="relative"):
    return trial(
        model="smollm2-135m", concept=concept, layer=layer, strength=strength, strength_mode=mode, kind=kind,
        trial_number=n, forced=forced, max_new_tokens=12,
    )  # fmt: skip


def test_batched_equals_unbatched(embedded, tmp_path):
    vecs, typical = concept_vectors(embedded, ["Dust", "Trumpets"], [10, 14], cache_dir=tmp_path)
    bank = VectorBank(vecs, typical)
    trials = [
        _trial("Dust", 10, 0.3, n=1),
        _trial("Trumpets", 14, 0.2, n=10),  # longer prompt: different left padding
        _trial("Dust", 10, 0.3, kind="control", n=3),
        _trial("Trumpets", 10, 0.25, kind="random", n=2),
        _trial("Dust", 14, 0.3, n=4, forced=True),  # prefilled: longest prompt
        _trial("Trumpets", 14, 4.0, kind="norm_matched", n=5, mode="raw"),
    ]
    batched = Runner(embedded, bank, batch_size=len(trials)).run(trials)
    single = Runner(embedded, bank, batch_size=1).run(trials)
    assert [r["response"] for r in batched] == [r["response"] for r in single]
    hf = Runner(embedded, bank, batch_size=len(trials), engine="hf").run(trials)  # ZeRO-3's path: HF generate
    assert [r["response"] for r in hf] == [r["response"] for r in batched]
    kept = Runner(embedded, bank, batch_size=len(trials), evict=False, static=False).run(trials)
    assert [(r["response"], r["new_tokens"]) for r in kept] == [(r["response"], r["new_tokens"]) for r in batched]
    assert [r["new_tokens"] for r in batched] == [r["new_tokens"] for r in single]
    plain = Runner(embedded, bank, batch_size=1).run([_trial("Dust", 10, 0.3, kind="control", n=1)])
    assert batched[0]["response"] != plain[0]["response"]  # the injection did something at this strength
    # and both equal a plain HF generate on the whole prompt, one row at a time (no shared-prefix cache)
    tok = embedded.tokenizer
    for t, row in zip(trials, batched):
        ids, start = inject_start(tok, render(embedded, t.prompt_variant, t.dialogue_format, t.trial_number, t.forced))
        x = torch.tensor([ids])
        with (
            torch.no_grad(),
            inject(embedded.model, Injection(t.layer, bank.vector(t)[None], [bank.strengths(t)[0]], [start])),
        ):
            out = embedded.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=t.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, len(ids) :].tolist()
        new = new[: next((j for j, v in enumerate(new) if v == tok.eos_token_id), len(new))]
        assert tok.decode(new, skip_special_tokens=True).strip() == row["response"]


def test_strengths_recorded_in_both_units(embedded, tmp_path):
    vecs, typical = concept_vectors(embedded, ["Dust"], [12], cache_dir=tmp_path)
    bank = VectorBank(vecs, typical)
    cv = vecs[("Dust", 12)]
    raw, rel, norm = bank.strengths(_trial("Dust", 12, 0.2))
    assert abs(rel - 0.2) < 1e-9 and abs(raw - 0.2 * cv.resid_norm / cv.norm) < 1e-9 and norm == cv.norm
    raw, rel, _ = bank.strengths(_trial("Dust", 12, 4.0, mode="raw"))
    assert raw == 4.0 and abs(rel - 4.0 * cv.norm / cv.resid_norm) < 1e-9
    assert bank.strengths(_trial("Dust", 12, 4.0, kind="control")) == (0.0, 0.0, 0.0)
    nm = bank.vector(_trial("Dust", 12, 0.2, kind="norm_matched"))
    assert abs(float(nm.norm()) - cv.norm) < 1e-4 and abs(float(nm @ cv.vector) / cv.norm**2) < 0.3
    sh = bank.vector(_trial("Dust", 12, 0.2, kind="shuffled"))
    assert torch.equal(sh.sort().values, cv.vector.sort().values)


def test_injection_starts_just_before_trial_marker(embedded):
    p = render(embedded, "original", "standard", 7)
    ids, start = inject_start(embedded.tokenizer, p)
    following = embedded.tokenizer.decode(ids[start + 1 :])
    assert following.startswith("Trial 7:")
    assert not embedded.tokenizer.decode(ids[start:]).startswith("Trial")


def test_in_process_sweep_with_a_loaded_model(embedded, tmp_path):
    """`run_sweep(cfg, lm=...)` (used inside Tune trials) stores the same rows the Ray path would."""
    from lab.experiments.concept_injection import run_sweep
    from lab.run import store
    from lab.run.parallel import FanOutConfig

    cfg = dust_sweep(tmp_path, 1, 6, FanOutConfig(num_actors=0, batch_size=4, shard_size=2))
    res = run_sweep(cfg, progress=False, lm=embedded)
    df = store.read(tmp_path / "out")
    assert res["new"] == 3 and len(df) == 3 and len(store.shard_files(tmp_path / "out")) == 2
    assert set(df["kind"]) == {"injection", "control", "random"} and df["judge"].eq("rules").all()
    assert run_sweep(cfg, progress=False, lm=embedded)["skipped"] == 3
