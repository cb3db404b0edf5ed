"""Parity with a peer library nobody here wrote (steering-vectors 0.12.2, pinned in the Makefile's test set-up):
the lab's concept vectors equal its mean-aggregated vectors, and its `apply` reproduces the lab's injected greedy
generations token for token (without a KV cache, so its token indices are absolute)."""

from __future__ import annotations

import pytest
import torch

from lab.generate.runner import Runner, VectorBank
from lab.protocol.trials import SweepConfig, expand
from lab.protocol.words import word_list
from lab.steer.concepts import _prompt, concept_vectors

sv = pytest.importorskip("steering_vectors")

LAYER = 12


def _peer_vector(lm, word: str) -> torch.Tensor:
    base = list(dict.fromkeys(word_list("baseline_words").words))
    samples = [(_prompt(lm, "Tell me about {word}", word), _prompt(lm, "Tell me about {word}", b)) for b in base]
    vec = sv.train_steering_vector(
        lm.model, lm.tokenizer, samples, layers=[LAYER], read_token_index=-1, batch_size=16, move_to_cpu=True
    )
    return vec.layer_activations[LAYER].float()


def test_concept_vector_matches_the_peer(embedded):
    ours = concept_vectors(embedded, ["Dust"], [LAYER])[0][("Dust", LAYER)].vector
    theirs = _peer_vector(embedded, "Dust")
    assert float((ours - theirs).abs().max()) < 1e-4  # float reordering in padded batches only
    assert float(torch.nn.functional.cosine_similarity(ours, theirs, dim=0)) > 0.99999


@torch.no_grad()
def test_injected_greedy_generations_match_the_peer(embedded):
    concepts = ("Dust", "Satellites", "Trumpets")
    vectors, typical = concept_vectors(embedded, concepts, [LAYER])
    bank = VectorBank(vectors, typical)
    sweep = SweepConfig(
        concepts=concepts,
        layers=(LAYER,),
        strengths=(0.3,),
        strength_mode="relative",
        trials_per_concept=1,
        controls=(),
        max_new_tokens=16,
    )
    trials = [t for t in expand(sweep, "smollm2-135m", (LAYER,), (0.3,), "relative") if t.kind == "injection"]
    runner = Runner(embedded, bank, batch_size=8)
    ours = runner.run(trials)
    tok = embedded.tokenizer
    for t, row in zip(trials, ours):
        req = runner.request(t)
        steer = sv.SteeringVector({LAYER: bank.vector(t)}, layer_type="decoder_block")
        ids = torch.tensor([req.ids])
        with steer.apply(
            embedded.model, multiplier=req.raw, min_token_index=None, token_indices=slice(req.start, None)
        ):
            out = embedded.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                do_sample=False,
                use_cache=False,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, ids.shape[1] :].tolist()
        n = next((j for j, x in enumerate(new) if x in {tok.eos_token_id, tok.pad_token_id}), len(new))
        assert tok.decode(new[:n], skip_special_tokens=True).strip() == row["response"]
        assert n == row["new_tokens"]
