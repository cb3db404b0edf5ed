from __future__ import annotations

import pytest
import torch

from lab.concepts import ConceptVector, concept_vectors, last_token_activations, select_concepts, word_list
from lab.errors import LabError


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
    import lab.concepts as concepts

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
