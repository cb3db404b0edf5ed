"""03c's own rendering of the standard dialogue (issue 26, difference 9): the `standard_03c` dialogue format builds no
system turn and starts injection where 03c_prompt_variants.py does, checked against that code's arithmetic
transcribed on tiny tokenizers (safety-research/introspection-mechanisms@5d5d9b4; file:line in each docstring)."""

from __future__ import annotations

import pytest

from lab.model.loading import LoadedModel, ModelSpec
from lab.protocol.prompts import inject_start, paper_formats, render

GEMMA_CHAT = (  # Gemma 3's template shape: <bos> in the text, no system role
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{% set r = 'model' %}{% else %}"
    "{% set r = m['role'] %}{% endif %}<start_of_turn>{{ r }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _model(gemma: bool) -> LoadedModel:
    """A word-level tokenizer that splits digits (as Gemma's and Qwen's do); Gemma-like ones add <bos>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>"]
    words = ["Trial", ":", "Do", "you", "detect", "Ok", ".", "user", "model", "assistant", "system", "?"]
    vocab = {w: i for i, w in enumerate(specials + words + [str(d) for d in range(10)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    if gemma:
        core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>" if gemma else None
    )
    tok.add_special_tokens({"additional_special_tokens": specials[3:]})
    tok.padding_side = "left"
    tok.chat_template = GEMMA_CHAT if gemma else CHATML
    spec = ModelSpec("tiny", "tiny", 2, 8, 0.0, (1,), (1.0,), "raw", chat_template=True, system_role=not gemma)
    return LoadedModel(model=None, tokenizer=tok, spec=spec, name="tiny")


def _paper_starts(tok, prompts: list[str]) -> list[int]:
    """03c:596-604 and src/model_utils.py:1049-1064, transcribed: one start from the first prompt's prefix tokenized
    with special tokens, applied at that padded position of every left-padded row (no per-row shift); returned in
    each row's own tokens."""
    first = prompts[0]
    trial_pos_in_text = first.find("Trial 1")
    steering_start_pos = len(tok(first[:trial_pos_in_text])["input_ids"]) - 1
    inputs = tok(prompts, padding=True, add_special_tokens=False)
    width = len(inputs["input_ids"][0])
    return [steering_start_pos - (width - sum(mask)) for mask in inputs["attention_mask"]]


@pytest.mark.parametrize("gemma", [True, False])
def test_injection_start_is_03cs(gemma):
    lm = _model(gemma)
    prompts = [render(lm, "original", "standard_03c", n, concept="Dust") for n in range(1, 11)]
    ours = [inject_start(lm.tokenizer, p)[1] for p in prompts]
    assert ours == _paper_starts(lm.tokenizer, [p.text for p in prompts])
    ids = inject_start(lm.tokenizer, prompts[9])[0]
    trial = ids.index(lm.tokenizer.convert_tokens_to_ids("Trial"))  # the "Trial" token of trial 10's prompt
    if gemma:  # the doubled <bos>: trial 10 (no padding) from "Trial" itself, trials 1-9 (one pad) the token before
        assert ours[9] == trial and ours[:9] == [trial - 1] * 9
    else:  # no special token added: trial 10 from the token before "Trial", trials 1-9 one earlier still
        assert ours[9] == trial - 1 and ours[:9] == [trial - 2] * 9
    lab = [inject_start(lm.tokenizer, render(lm, "original", "standard", n, concept="Dust"))[1] for n in (1, 10)]
    assert lab == [trial - 1, trial - 1] or not gemma  # the lab's own format: always the token before "Trial"


def test_no_system_turn_where_03c_builds_none():
    """03c:494-497 adds a system message only `if template.system_prompt`, empty for every variant the paper ran
    (03c:157-237); 03b:361-362 always adds an empty one (the lab's `standard`)."""
    lm = _model(gemma=False)
    assert "<|im_start|>system" not in render(lm, "skeptical", "standard_03c", 3).text
    assert render(lm, "skeptical", "standard", 3).text.startswith("<|im_start|>system\n<|im_end|>")
    assert "standard_03c" not in paper_formats() and paper_formats()[0] == "standard"
