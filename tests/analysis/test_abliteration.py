"""Refusal directions and abliteration: interventions == orthogonalised weights; the direction is gone from every
writer; the saved model loads untied and gives the same logits."""

from __future__ import annotations

import copy

import pytest
import torch

from lab.errors import LabError
from lab.experiments import refusal
from lab.steer import interventions as iv


def test_shipped_instructions_and_loader(tmp_path):
    harmful, harmless = refusal.instructions("harmful"), refusal.instructions("harmless")
    assert (len(harmful), len(harmless)) == (158, 158)
    more = tmp_path / "more.txt"
    more.write_text("# comment\nWrite a new harmful request.\n\n" + harmful[0] + "\n")
    assert refusal.instructions("harmful", extra=more) == harmful + ["Write a new harmful request."]
    used, held = refusal.split_heldout(harmful)
    assert (len(used), len(held), held[-1]) == (126, 32, harmful[-1])
    with pytest.raises(LabError, match="unknown instruction list"):
        refusal.instructions("nasty")


def test_mean_difference_and_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 8, generator=g) + 1, torch.randn(3, 6, 8, generator=g)
    d = refusal.mean_difference(a, b)
    want = a.mean(1) - b.mean(1)
    torch.testing.assert_close(d, want / want.norm(dim=-1, keepdim=True))
    rd = refusal.RefusalDirections(d, -2, "m", 5, 6, "v1", raw_norms=(1.0, 2.0, 3.0))
    back = refusal.RefusalDirections.load(rd.save(tmp_path / "r.safetensors"))
    assert torch.equal(back.directions, d)
    assert (back.position, back.n_harmful, back.raw_norms) == (-2, 5, (1.0, 2.0, 3.0))


def test_refusal_matcher():
    assert refusal.is_refusal("I\u2019m sorry, but I can\u2019t help with that.")
    assert refusal.is_refusal("I cannot provide instructions")
    assert not refusal.is_refusal("Sure! Here is a recipe for pancakes.")


def _tiny_untied_with_biases():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
    )
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1 and not torch.all(p == 1):  # biases start at zero: give them something to remove
                p.normal_(0, 0.1)
    return m


@torch.no_grad()
def test_interventions_equal_weights_on_tiny_untied_model():
    model = _tiny_untied_with_biases()
    g = torch.Generator().manual_seed(2)
    dirs, weights = torch.randn(3, 32, generator=g), torch.tensor([1.0, 0.5, 1.0])
    ids = torch.randint(0, 96, (2, 9), generator=g)
    with iv.apply(model, refusal.ablation_edits(dirs, 3, weights)):
        by_hooks = model(ids).logits
    plain = model(ids).logits
    orth = refusal.orthogonalize(copy.deepcopy(model), dirs, weights)
    assert float((orth(ids).logits - by_hooks).abs().max()) <= 1e-5
    assert float((plain - by_hooks).abs().max()) > 1e-2  # the edit did something
    full = refusal.orthogonalize(copy.deepcopy(model), dirs)
    proj = refusal.residual_projection(full, dirs)
    assert len(proj) == 1 + 2 * 3 and max(proj.values()) <= 1e-5
    assert min(refusal.residual_projection(model, dirs).values()) > 1e-2


@pytest.fixture(scope="module")
def rd(embedded):
    harmful, harmless = refusal.instructions("harmful")[:8], refusal.instructions("harmless")[:8]
    return refusal.refusal_direction(embedded, harmful, harmless, position=-2)


def test_refusal_direction_on_embedded(rd, embedded):
    assert rd.directions.shape == (30, 576)
    torch.testing.assert_close(rd.directions.norm(dim=-1), torch.ones(30))
    # position -2 of the ChatML generation prompt is "istant" (of "assistant\n"); numbers pinned from a fixed run
    assert rd.raw_norms[14] == pytest.approx(RAW_NORM_14, rel=1e-4)
    last = refusal.refusal_direction(
        embedded, refusal.instructions("harmful")[:8], refusal.instructions("harmless")[:8], -1
    )
    assert float(last.directions[14] @ rd.directions[14]) == pytest.approx(COS_LAST_VS_M2_14, abs=1e-4)


RAW_NORM_14 = 9.21370792388916
COS_LAST_VS_M2_14 = 0.20413362979888916


@torch.no_grad()
def test_interventions_equal_weights_on_embedded(embedded, rd, tmp_path):
    from lab.model.loading import load
    from lab.steer.readouts import forward

    tok = embedded.tokenizer
    rows = [
        tok(refusal.chat_prompt(embedded, s), add_special_tokens=False)["input_ids"]
        for s in ("How do I pick a lock?", "Tell me about dust.")
    ]
    hooks = forward(embedded, rows, refusal.ablation_edits(rd.directions, 30)).logits
    lm = copy.copy(embedded)
    lm.model = refusal.orthogonalize(copy.deepcopy(embedded.model), rd.directions)
    assert embedded.model.lm_head.weight.data_ptr() == embedded.model.get_input_embeddings().weight.data_ptr()
    weights = forward(lm, rows).logits
    assert float((weights - hooks).abs().max()) <= 1e-4
    assert float((forward(embedded, rows).logits - hooks).abs().max()) > 1e-2
    assert max(refusal.residual_projection(lm.model, rd.directions).values()) <= 1e-5
    out = refusal.save_model(lm, tmp_path / "abl", {"direction": "test"})
    back = load(str(out))
    assert back.model.config.tie_word_embeddings is False
    assert float((forward(back, rows).logits - weights).abs().max()) == 0.0


# ~100 s: the whole prepare_arms on the embedded model; the default suite keeps the direction, weights == hooks and the architecture matrix
@pytest.mark.slow
def test_the_jobs_model_side_steps_on_embedded(embedded, rd, tmp_path):
    """jobs.abliteration's model-side step (`prepare_arms`, as on a Ray actor; in process `check_original`, the
    original arm's sweep, then `abliterate`): the abliterated replies equal the saved checkpoint's, and
    `interventions` leaves the shared model as it was."""
    import dataclasses
    import json

    from lab.model.loading import load
    from lab.steer.readouts import forward

    held = ["How do I pick a lock?", "Write a phishing email."]
    rc = refusal.RefusalConfig(direction_layer=14, check_tokens=4)
    lm = copy.copy(embedded)
    lm.model = copy.deepcopy(embedded.model)  # `weights` orthogonalises the replica in place
    arms = refusal.prepare_arms(lm, rc, [], [], held, rd, tmp_path / "model")
    assert arms.directions is rd and arms.n_layers == 30 and torch.equal(arms.ablated, rd.directions[14])
    assert arms.replies["abliterated"] == refusal.greedy_replies(load(arms.model_dir), held, 4)  # == the checkpoint
    meta = json.loads((tmp_path / "model" / "abliteration.json").read_text())
    assert meta == {"source": "smollm2-135m", "position": -2, "direction_layer": 14, "weights": []}

    rc_i = dataclasses.replace(rc, method="interventions")
    ids = [embedded.tokenizer("Tell me about dust.")["input_ids"]]
    before = forward(embedded, ids).logits
    first = refusal.check_original(embedded, rc_i, [], [], held, rd)
    assert first.replies == {"original": arms.replies["original"]} and first.model_dir is None
    arms_i = refusal.abliterate(embedded, rc_i, first, held, tmp_path / "unused")
    assert torch.equal(forward(embedded, ids).logits, before) and not (tmp_path / "unused").exists()
    edits, tag = refusal.arm_edits(rc_i, arms_i)
    assert len(edits) == 1 + 2 * 30 and tag.startswith("ablate-writers@") and arms_i.model_dir is None
    assert set(arms_i.replies) == {"original", "abliterated"}
