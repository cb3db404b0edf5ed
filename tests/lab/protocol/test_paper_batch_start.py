"""The injection start of 03b and 03c in their own batches, on the embedded models' real tokenizers (issue 26,
difference 9): does the no-shift quirk ever move the injected tokens in the paper's runs?

It does. Both scripts steer one concept's injected trials 1-10 in ONE generate call (03c:562-567, 607-618: n_trials 20
= 10 injected + 10 controls, 03c:100; 03b:866-878: DEFAULT_N_TRIALS 10 in batches of DEFAULT_BATCH_SIZE 256,
03b:124, 128), from ONE start computed on the first prompt (03c:596-604; 03b:559-572, 691-695), left-padded
(src/model_utils.py:125, 1053), and the shift for padding never runs (model_utils.py:1056-1064). The prompts differ
only in the trial number, and these tokenizers (like Gemma 3 27B's and Qwen3's) split digits, so "Trial 10" is one
token longer: trials 1-9 carry one pad and are steered from one token earlier in their own text than trial 10.
`standard_03c` and the `*_03b` formats reproduce that; the plain names (the lab's default) start every row at the
token before the one holding "Trial n". safety-research/introspection-mechanisms@5d5d9b4, file:line as cited."""

from __future__ import annotations

import pytest

from lab.protocol.prompts import inject_start, render, tokenizer_model
from tests.conftest import gemma_missing

TRIALS = range(1, 11)


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def lm(request):
    if request.param == "gemma3-270m" and (why := gemma_missing()):
        pytest.skip(why)
    return tokenizer_model(request.param)


def _paper_starts(tok, texts: list[str], specials: bool) -> list[int]:
    """The scripts' arithmetic, transcribed, in each row's own tokens: `steering_start_pos =
    len(tokenizer(first_prompt[:first_prompt.find("Trial 1")])) - 1` (03c:596-604, special tokens added;
    03b:559-572, `add_special_tokens=False`), then `tokenizer(prompts, padding=True, add_special_tokens=False)` with
    padding_side "left" (model_utils.py:125, 1053) and the hook adding from padded position `steering_start_pos` in
    every row (model_utils.py:1024-1028)."""
    first = texts[0]
    start = len(tok(first[: first.find("Trial 1")], add_special_tokens=specials)["input_ids"]) - 1
    side, tok.padding_side = tok.padding_side, "left"
    try:
        batch = tok(texts, padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = side
    width = len(batch["input_ids"][0])
    return [start - (width - sum(mask)) for mask in batch["attention_mask"]]


@pytest.mark.parametrize(
    "fmt, specials", [("standard_03c", True), ("standard_03b", False), ("plain_03b", False), ("story_03b", False)]
)
def test_paper_formats_start_where_the_scripts_steer_their_padded_batch(lm, fmt, specials):
    prompts = [render(lm, "original", fmt, n, concept="Dust") for n in TRIALS]
    tok = lm.tokenizer
    lengths = [len(tok(p.text, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert lengths[:9] == [lengths[0]] * 9 and lengths[9] == lengths[0] + 1  # padding does arise: trial 10 is longer
    ours = [inject_start(tok, p)[1] for p in prompts]
    assert ours == _paper_starts(tok, [p.text for p in prompts], specials)
    assert ours[:9] == [ours[9] - 1] * 9


# the lab's default (`standard`, `plain`) and the paper's (`standard_03b`, `plain_03b`, `standard_03c`) starts of
# trials 1 and 10, with the index of the token holding "Trial" in trial 1's prompt, read off the real tokenizers
PINNED = {
    "smollm2-135m": {
        "standard": (122, 121, 121),
        "standard_03b": (122, 120, 121),
        "standard_03c": (138, 136, 137),
        "plain": (115, 114, 114),
        "plain_03b": (115, 114, 115),  # "User: " alone ends in a space token: s is the " Trial" token itself
    },
    "gemma3-270m": {
        "standard": (115, 114, 114),
        "standard_03b": (115, 113, 114),
        "standard_03c": (115, 114, 115),  # the second <bos> 03c adds: trial 10 from "Trial" itself
        "plain": (110, 109, 109),
        "plain_03b": (110, 109, 110),
    },
}


@pytest.mark.parametrize("fmt", ["standard", "standard_03b", "standard_03c", "plain", "plain_03b"])
def test_starts_on_the_embedded_tokenizers(lm, fmt):
    tok = lm.tokenizer
    first, tenth = (render(lm, "original", fmt, n, concept="Dust") for n in (1, 10))
    offsets = tok(first.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    trial = next(i for i, (_, end) in enumerate(offsets) if end > first.marker_char)
    got = (trial, inject_start(tok, first)[1], inject_start(tok, tenth)[1])
    assert got == PINNED[lm.name][fmt]
    if fmt in ("standard", "plain"):  # the lab's default: the token before the one holding "Trial", every row
        assert got[1] == got[2] == trial - 1
