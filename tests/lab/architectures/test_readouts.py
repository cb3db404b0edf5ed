"""The architecture matrix, part 2: what the experiments read — concept vectors (lab/steer/concepts.py), batched
last-position logits with and without the shared prefix, the Yes−No and first-token readouts
(lab/steer/readouts.py), and activation patching (lab/experiments/patching.py `PatchWorker`) — on every architecture
class, against one-row HF forward passes (no padding, no shared prefix, no lab hooks: `output_hidden_states` or the
hand-written hooks of tests/lab/architectures/hf_reference.py) and the metrics written out in plain torch."""

from __future__ import annotations

from contextlib import ExitStack
from functools import cache

import pytest
import torch

from lab.experiments.patching import PatchWorker, build_batch
from lab.protocol.prompts import inject_start, render
from lab.protocol.words import word_list
from lab.steer import interventions as iv
from lab.steer.concepts import DEFAULT_TEMPLATE, concept_vectors
from lab.steer.readouts import (
    NO_VARIANTS,
    YES_VARIANTS,
    concept_first_token,
    first_token_logprob,
    forward,
    variant_token_ids,
    yes_no_score,
)
from tests.architectures import ARCHS, HIDDEN, loaded
from tests.lab.architectures import hf_reference as ref

LAYER = 2
CONCEPTS = ["bread", "ocean"]


@cache
def _lm(arch: str):  # the baseline words in the vocabulary: a mean over 99 unknown tokens would be one vector
    return loaded(arch, extra=" ".join(word_list("baseline_words").words))


@torch.no_grad()
def _one_row(arch: str, ids, **kw):
    return _lm(arch).model(input_ids=torch.tensor([list(ids)]), **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_concept_vectors_are_the_mean_difference_of_hf_hidden_states(arch):
    lm = _lm(arch)
    got, typical = concept_vectors(lm, CONCEPTS, [1, LAYER])

    def hidden(word: str) -> tuple[torch.Tensor, ...]:  # HF hidden states of the one-row chat prompt
        text = lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": DEFAULT_TEMPLATE.format(word=word)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return _one_row(arch, ids, output_hidden_states=True).hidden_states

    base = list(dict.fromkeys(word_list("baseline_words").words))
    hs = {w: hidden(w) for w in base + CONCEPTS}
    for layer in (1, LAYER):
        b = torch.stack([hs[w][layer + 1][0, -1] for w in base])
        mean = b.mean(0)
        assert typical[layer] == pytest.approx(float((b - mean).norm(dim=-1).mean()), rel=1e-5)
        for c in CONCEPTS:
            cv = got[(c, layer)]
            torch.testing.assert_close(cv.vector, hs[c][layer + 1][0, -1] - mean, rtol=0, atol=2e-5)
            assert cv.resid_norm == pytest.approx(float(b.norm(dim=-1).mean()), rel=1e-5) and cv.norm > 1e-3


def _trial_rows(arch: str):
    """Two trial prompts that share the chat preamble (trial 1, and trial 2 with the forced prefill: other lengths),
    with their injection starts."""
    lm = _lm(arch)
    a, sa = inject_start(lm.tokenizer, render(lm, "original", "standard", 1))
    b, sb = inject_start(lm.tokenizer, render(lm, "original", "standard", 2, forced=True))
    return [a, b], [sa, sb]


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_readouts_equal_one_row_hf_logits(arch, share_prefix):
    """`forward` (left-padded batch, the injection from each row's start, the shared prefix computed once or not)
    gives each row's one-row HF logits under the same injection by a hand-written hook; the Yes−No and first-token
    readouts are the plain-torch logsumexp / log-softmax of those."""
    lm = _lm(arch)
    rows, starts = _trial_rows(arch)
    assert min(len(r) for r in rows) > 8  # longer than the sliding window of Gemma 3 / OLMo 3
    v = 3.0 * torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(5))
    out = forward(
        lm,
        rows,
        lambda pad: [iv.Add(f"resid_post.{LAYER}", v, 1.0, torch.tensor(starts) + torch.tensor(pad))],
        share_prefix=share_prefix,
    )
    want = []
    for b, (r, s) in enumerate(zip(rows, starts)):
        add = lambda h, pos, b=b, s=s: torch.where((pos >= s)[None, :, None], h + v[b], h)  # noqa: E731
        with ref.edit(lm.model, arch, f"resid_post.{LAYER}", add):
            want.append(_one_row(arch, r).logits[0, -1])
    want = torch.stack(want)
    torch.testing.assert_close(out.logits, want, rtol=0, atol=2e-5)
    with torch.no_grad():
        plain = torch.stack([_one_row(arch, r).logits[0, -1] for r in rows])
    assert float((want - plain).abs().max()) > 1e-3  # the injection reached the logits
    yes, no = variant_token_ids(lm.tokenizer, YES_VARIANTS), variant_token_ids(lm.tokenizer, NO_VARIANTS)
    manual = torch.logsumexp(want[:, yes], -1) - torch.logsumexp(want[:, no], -1)
    torch.testing.assert_close(yes_no_score(out.logits, yes, no), manual, rtol=0, atol=5e-5)
    tok = [concept_first_token(lm.tokenizer, c) for c in CONCEPTS]
    lp = torch.log_softmax(want, -1)[torch.arange(2), torch.tensor(tok)]
    torch.testing.assert_close(first_token_logprob(out.logits, tok), lp, rtol=0, atol=5e-5)


def _hand(arch: str, row, site: str, inject=None, patch=None):
    """One row alone: last-position logits and the site's value, with an injection at resid_post.1 (fn(h, pos))
    and the site replaced by `patch` by hand-written hooks."""
    model = _lm(arch).model
    with ExitStack() as stack:
        rec = stack.enter_context(ref.record(model, arch, [site]))
        if inject is not None:
            stack.enter_context(ref.edit(model, arch, "resid_post.1", inject))
        if patch is not None:
            stack.enter_context(ref.edit(model, arch, site, lambda h, pos: patch))
        logits = _one_row(arch, row).logits[0, -1]
    return logits, rec[site]


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_patching_equals_one_row_hand_patching(arch):
    """Knock-out, knock-in and forced knock-out of attn_out / mlp_out at a later layer: each row's metric equals the
    same patch made by hand on that row alone (clean and steered values recorded by hand-written hooks)."""
    lm = _lm(arch)
    vectors = 3.0 * torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(9))
    b = build_batch(lm, f"{arch}/b0", CONCEPTS, [1, 3], vectors, [1.0, 1.5], 1)
    sites = [f"{c}.{LAYER}" for c in ("attn_out", "mlp_out")]
    yes, no = variant_token_ids(lm.tokenizer, YES_VARIANTS), variant_token_ids(lm.tokenizer, NO_VARIANTS)
    first = [concept_first_token(lm.tokenizer, c) for c in CONCEPTS]
    moved = []
    for site in sites:
        got = PatchWorker(lm).cell(b, LAYER, site.split(".")[0], sites)
        for j in range(2):
            d, s = b.strengths[j] * vectors[j], b.starts[j]

            def inject(h, pos, d=d, s=s):
                return torch.where((pos >= s)[None, :, None], h + d, h)

            clean, clean_h = _hand(arch, b.rows[j], site)
            steered, steered_h = _hand(arch, b.rows[j], site, inject)
            _, forced_clean_h = _hand(arch, b.forced_rows[j], site)
            forced = _hand(arch, b.forced_rows[j], site, inject, forced_clean_h)[0]
            yn = [
                float(torch.logsumexp(lg[yes], -1) - torch.logsumexp(lg[no], -1))
                for lg in (
                    clean,
                    steered,
                    _hand(arch, b.rows[j], site, inject, clean_h)[0],
                    _hand(arch, b.rows[j], site, None, steered_h)[0],
                )
            ]
            want = dict(zip(("clean", "steered", "knock_out", "knock_in"), yn))
            want["forced_knock_out"] = float(torch.log_softmax(forced, -1)[first[j]])
            for k, w in want.items():
                assert got[k][j] == pytest.approx(w, abs=1e-4), (site, j, k)
            moved.append(abs(want["knock_out"] - want["steered"]) + abs(want["knock_in"] - want["clean"]))
    assert max(moved) > 1e-4  # the patches mattered
