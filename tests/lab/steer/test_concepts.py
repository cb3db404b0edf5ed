from __future__ import annotations

import pytest
import torch

from lab.errors import LabError
from lab.protocol.words import select_concepts, word_list
from lab.steer.concepts import ConceptVector, concept_vectors, last_token_activations


def test_word_lists_are_versioned_copies_of_the_protocol_data():
    c, b = word_list("concepts"), word_list("baseline_words")
    assert len(c.words) == 500 and c.words[0] == "Dust" and c.words[49] == "Silver"
    assert len(b.words) == 99 and len(c.version) == 12


def test_vector_is_word_minus_baseline_mean_and_cached(embedded, tmp_path, monkeypatch):
    vecs, typical = concept_vectors(embedded, ["Bread"], [3, 8], cache_dir=tmp_path)
    base = list(dict.fromkeys(word_list("baseline_words").words))
    acts = last_token_activations(embedded, ["Bread", *base], [8])[8]
    torch.testing.assert_close(vecs[("Bread", 8)].vector, acts[0] - acts[1:].mean(0), rtol=0, atol=1e-4)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and typical[8] > 0
    import lab.steer.concepts as concepts

    def no_forward(*a, **k):
        raise AssertionError("cache miss")

    monkeypatch.setattr(concepts, "last_token_activations", no_forward)
    again, _ = concept_vectors(embedded, ["Bread"], [3, 8], cache_dir=tmp_path)
    assert torch.equal(again[("Bread", 8)].vector, vecs[("Bread", 8)].vector)


def test_concept_vector_is_a_value(tmp_path):
    a = ConceptVector("A", 3, torch.tensor([3.0, 4.0]), 10.0)
    b = ConceptVector("B", 3, torch.tensor([1.0, 0.0]), 10.0)
    assert a.norm == 5.0 and (2 * a).norm == 10.0 and (a - b).concept == "A-B"
    a.save(tmp_path / "a.safetensors")
    back = ConceptVector.load(tmp_path / "a.safetensors")
    assert back.concept == "A" and back.layer == 3 and torch.equal(back.vector, a.vector) and back.resid_norm == 10.0


def test_concept_selection():
    assert select_concepts("first:3") == ("Dust", "Satellites", "Trumpets")
    assert select_concepts(["Bread"]) == ("Bread",)
    with pytest.raises(LabError, match="at least one"):
        select_concepts([])
    with pytest.raises(LabError, match="duplicate concept 'bread'"):
        select_concepts(["Bread", "bread"])


def test_unknown_layer_is_one_line_error(embedded):
    with pytest.raises(LabError, match=r"layer 30 is out of range for smollm2-135m \(0..29\)"):
        concept_vectors(embedded, ["Bread"], [30])


def test_activation_cache_keys_on_the_loaded_dtype(embedded, tmp_path):
    """Vectors cached from a float32 load are not reused for a bfloat16 load of the same weights (and vice versa)."""
    import dataclasses

    from transformers import LlamaConfig, LlamaForCausalLM

    from lab.steer.concepts import model_dtype

    torch.manual_seed(0)  # a tiny random Llama on the embedded tokenizer: fast, and a real forward pass
    cfg = LlamaConfig(
        vocab_size=len(embedded.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    f32 = dataclasses.replace(embedded, model=LlamaForCausalLM(cfg).eval(), name="tiny")
    b16 = dataclasses.replace(f32, model=LlamaForCausalLM(cfg).eval())
    b16.model.load_state_dict(f32.model.state_dict())
    b16.model.to(torch.bfloat16)
    assert (model_dtype(f32.model), model_dtype(b16.model)) == ("float32", "bfloat16")
    v32, _ = concept_vectors(f32, ["Bread"], [2], cache_dir=tmp_path)
    v16, _ = concept_vectors(b16, ["Bread"], [2], cache_dir=tmp_path)
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("*.safetensors")) == ["bfloat16", "float32"]
    diff = (v32[("Bread", 2)].vector - v16[("Bread", 2)].vector).abs().max().item()
    assert round(diff, 4) == PINNED_BF16_DIFF  # recomputed in bfloat16, not read from the float32 file
    again, _ = concept_vectors(f32, ["Bread"], [2], cache_dir=tmp_path)  # each dtype still hits its own file
    assert torch.equal(again[("Bread", 2)].vector, v32[("Bread", 2)].vector)


PINNED_BF16_DIFF = 0.0002  # max |float32 - bfloat16| of the Bread vector at layer 2 (tiny random Llama, seed 0)
