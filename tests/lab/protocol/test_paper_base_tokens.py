"""Base-model tokenization as the paper's 03_behavioral_robustness.py does it (issue 26, difference 9): prompts and
concept-vector prompts go through tokenizer.encode(), which adds whatever special tokens the tokenizer adds (03:283,
:312, :829), not 03b's bos_token-in-the-text (03b:509-511, the lab's `plain`). Selected by the `plain_03` format and
the `{encode}` concept template; the defaults are unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from lab.protocol.prompts import encode_specials, inject_start, render
from lab.steer.concepts import DEFAULT_TEMPLATE, PAPER_BASE_TEMPLATE, _prompt
from tests.lab.protocol.test_paper_03c import _model


def _base(eos: bool):
    """A base model's tokenizer (no chat template) whose encode() adds <bos> (and, with `eos`, <|im_end|> after)."""
    from tokenizers import processors

    lm = _model(gemma=True)
    tok = lm.tokenizer
    if eos:
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A <|im_end|>", special_tokens=[("<bos>", 2), ("<|im_end|>", 6)]
        )
    tok.chat_template = None
    return dataclasses.replace(lm, spec=dataclasses.replace(lm.spec, chat_template=False))


@pytest.mark.parametrize("eos", [False, True])
def test_trial_prompt_and_start_are_03s(eos):
    lm = _base(eos)
    tok = lm.tokenizer
    prompt = render(lm, "original", "plain_03", 4)
    bare = render(lm, "original", "plain", 4).text.removeprefix("<bos>")  # the same dialogue text (03:210-221)
    ids, start = inject_start(tok, prompt)
    assert ids == tok.encode(bare)  # 03:829 input_ids = tokenizer.encode(prompt)
    assert start == len(tok.encode(bare[: bare.find("Trial 4")])) - 1  # 03:283, :293 len(encode(prefix)) − 1
    # encode() adding only <bos>: the token before "Trial"; adding an EOS too: "Trial" itself, as 03's arithmetic gives
    assert tok.convert_ids_to_tokens(ids[start + 1 - eos]) == "Trial"


def test_concept_prompt_goes_through_encode():
    lm = _base(eos=False)
    tok = lm.tokenizer
    text = _prompt(lm, PAPER_BASE_TEMPLATE, "Dust")
    assert tok(text, add_special_tokens=False)["input_ids"] == tok.encode("Tell me about Dust")  # 03:312
    assert _prompt(lm, DEFAULT_TEMPLATE, "Dust") == "Tell me about Dust"  # the default: no special token
    assert encode_specials(tok, "Ok") == "<bos>Ok"
