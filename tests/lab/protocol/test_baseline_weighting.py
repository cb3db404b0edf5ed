"""The baseline mean as the paper weights it (issue 26, difference 9): its DEFAULT_BASELINE_WORDS has 100 entries with
"Butterflies" twice (src/vector_utils.py:384-446) and the concept vector subtracts the mean over every entry
(vector_utils.py:541-544), so `baseline_words_paper` counts that word twice; `baseline_words` (99) is the default."""

from __future__ import annotations

import torch

from lab.protocol.words import word_list
from lab.steer.concepts import concept_vectors, last_token_activations


def test_the_paper_list_is_the_default_list_with_its_repeat():
    paper, lab = word_list("baseline_words_paper").words, word_list("baseline_words").words
    assert len(paper) == 100 and len(lab) == 99 and list(dict.fromkeys(paper)) == list(lab)
    assert [i for i, w in enumerate(paper) if w == "Butterflies"] == [67, 85]  # vector_utils.py:398, :402
    assert paper[:3] == ("Desks", "Jackets", "Gondolas")


def test_paper_weighting_counts_the_repeated_word_twice(embedded):
    layer = 1  # the forward stops after block 1: three passes over 100 short prompts stay cheap
    paper, _ = concept_vectors(embedded, ["Bread"], [layer], baseline="baseline_words_paper")
    words = list(word_list("baseline_words").words)
    acts = last_token_activations(embedded, [*words, "Bread"], [layer])[layer]
    base, bread = acts[:-1], acts[-1]
    twice = torch.cat([base, base[[words.index("Butterflies")]]])  # the paper's 100 rows
    assert torch.allclose(paper[("Bread", layer)].vector, bread - twice.mean(0), atol=1e-4)
    gap = float((paper[("Bread", layer)].vector - (bread - base.mean(0))).norm())
    assert gap > 1e-3  # the weighting moves the vector away from the default's (99 words once each)
